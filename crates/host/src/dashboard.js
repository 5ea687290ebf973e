// Signed in by the session cookie the login link set (HttpOnly).
async function call(command, args) {
  const r = await fetch("/api/admin", {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({command, args: args || {}})
  });
  const j = await r.json();
  if (!j.ok) throw new Error(command + ": " + (j.error && j.error.message || r.status));
  return j.data;
}
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function table(rows, cols, extra) {
  if (!rows.length) return '<p class="empty">none</p>';
  let h = "<table><tr>" + cols.map(c => "<th>" + esc(c[0]) + "</th>").join("") + (extra ? "<th></th>" : "") + "</tr>";
  for (const r of rows) h += "<tr>" + cols.map(c => "<td>" + c[1](r) + "</td>").join("") + (extra ? "<td>" + extra(r) + "</td>" : "") + "</tr>";
  return h + "</table>";
}
async function refresh() {
  try {
    const h = await call("host-status");
    document.getElementById("host").textContent = "v" + (h.version || "?") + " · sandbox " + (h.sandbox || "?") + " · " + (h.sessions ?? "?") + " sessions";
    const sessions = await call("sessions-list");
    document.getElementById("sessions").innerHTML = table(sessions, [
      ["id", r => esc(r.id)],
      ["agent", r => esc(r.agent_group)],
      ["state", r => r.quarantined_at ? '<span class="q">quarantined</span>' : (r.runner_pid ? '<span class="run">running</span>' : "idle")],
      ["last exit", r => esc(r.last_exit || "")],
      ["quarantine reason", r => esc(r.quarantine_reason || "")],
    ], r => r.quarantined_at ? '<button data-lift="' + esc(r.id) + '">Lift quarantine</button>' : "");
    const pending = (await call("approvals-list")).filter(a => a.status === "pending");
    for (const a of pending) {
      const full = await call("approvals-get", {id: a.id});
      a.options = full.options_json || [];
    }
    document.getElementById("approvals").innerHTML = table(pending, [
      ["id", r => esc(r.id)],
      ["what", r => esc(r.title)],
      ["asked of", r => esc(r.approver || "")],
      ["expires", r => esc(r.expires_at)],
    ], r => r.options.map(o => '<button data-approval="' + esc(r.id) + '" data-value="' + esc(o.value) + '">' + esc(o.label) + "</button>").join(" "));
    const dropped = await call("dropped-messages-list");
    document.getElementById("dropped").innerHTML = table(dropped, [
      ["conversation", r => esc(r.mg || (r.channel_type + ":" + r.platform_id))],
      ["sender", r => esc(r.user || r.sender_name || "")],
      ["agent", r => esc(r.ag || "")],
      ["reason", r => esc(r.reason)],
      ["messages", r => esc(r.message_count)],
      ["last", r => esc(r.last_seen)],
    ]);
    document.getElementById("err").textContent = "";
  } catch (e) { document.getElementById("err").textContent = e.message; }
}
document.addEventListener("click", async ev => {
  const b = ev.target;
  try {
    if (b.dataset.lift) { await call("sessions-resume", {id: b.dataset.lift}); }
    else if (b.dataset.approval) {
      const cmd = b.dataset.value === "reject" || b.dataset.value === "deny" ? "approvals-reject" : "approvals-approve";
      await call(cmd, {id: b.dataset.approval, value: b.dataset.value});
    } else return;
  } catch (e) { document.getElementById("err").textContent = e.message; }
  refresh();
});
refresh();
setInterval(refresh, 5000);
