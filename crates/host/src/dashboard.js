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
function table(rows, cols, extra, pick) {
  if (!rows.length) return '<p class="empty">none</p>';
  let h = "<table><tr>" + cols.map(c => "<th>" + esc(c[0]) + "</th>").join("") + (extra ? "<th></th>" : "") + "</tr>";
  for (const r of rows) h += (pick ? '<tr class="pick" data-session="' + esc(r.id) + '">' : "<tr>") + cols.map(c => "<td>" + c[1](r) + "</td>").join("") + (extra ? "<td>" + extra(r) + "</td>" : "") + "</tr>";
  return h + "</table>";
}
// Human-readable times: "3 min ago", else the local time.
function ago(at) {
  const t = Date.parse(at);
  if (isNaN(t)) return esc(at || "");
  const s = Math.round((Date.now() - t) / 1000);
  const when = new Date(t).toLocaleString();
  const rel = s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : s < 86400 ? Math.round(s / 3600) + " h ago" : when;
  return '<time title="' + esc(when) + '">' + esc(rel) + "</time>";
}

// A line chart in SVG (no library, no CDN): one polyline per series over
// the sampled intervals, y from 0 to the largest value.
function chart(id, points, series, unit) {
  const el = document.getElementById(id);
  const W = 320, H = 150, L = 34, B = 18, T = 8, R = 8;
  const xs = points.map(p => p.at_ms);
  const vals = series.flatMap(s => points.map(p => s.value(p)).filter(v => v != null));
  const max = Math.max(1, ...vals);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const x = t => L + (x1 > x0 ? (t - x0) / (x1 - x0) : 1) * (W - L - R);
  const y = v => T + (1 - v / max) * (H - T - B);
  let svg = '<svg class="chart" viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + esc(id) + '">';
  for (const f of [0, 0.5, 1]) {
    svg += '<line class="grid" x1="' + L + '" x2="' + (W - R) + '" y1="' + y(max * f) + '" y2="' + y(max * f) + '"/>';
    svg += '<text x="' + (L - 4) + '" y="' + (y(max * f) + 3) + '" text-anchor="end">' + esc(+(max * f).toFixed(max * f < 10 ? 1 : 0)) + "</text>";
  }
  svg += '<line class="axis" x1="' + L + '" x2="' + L + '" y1="' + T + '" y2="' + (H - B) + '"/>';
  svg += '<line class="axis" x1="' + L + '" x2="' + (W - R) + '" y1="' + (H - B) + '" y2="' + (H - B) + '"/>';
  if (points.length) {
    const fmt = t => new Date(t).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    svg += '<text x="' + L + '" y="' + (H - 4) + '">' + esc(fmt(x0)) + '</text><text x="' + (W - R) + '" y="' + (H - 4) + '" text-anchor="end">' + esc(fmt(x1)) + "</text>";
  }
  series.forEach((s, i) => {
    const pts = points.filter(p => s.value(p) != null).map(p => x(p.at_ms).toFixed(1) + "," + y(s.value(p)).toFixed(1));
    if (pts.length) svg += '<polyline class="s' + i + '" data-series="' + esc(s.label) + '" points="' + pts.join(" ") + '"/>';
  });
  svg += "</svg>";
  const last = points[points.length - 1];
  const legend = series.map((s, i) => '<span><i class="s' + i + '"></i>' + esc(s.label) + (last && s.value(last) != null ? ": " + esc(+s.value(last).toFixed(1)) + (unit || "") : "") + "</span>").join("");
  el.innerHTML = points.length ? svg + '<div class="legend">' + legend + "</div>" : '<p class="empty">none yet: the first samples come within a minute</p>';
}

async function charts() {
  const r = await fetch("/api/charts");
  if (!r.ok) throw new Error("charts: " + r.status);
  const points = (await r.json()).points;
  // Counts per interval, shown per minute.
  const perMin = k => p => p.seconds > 0 ? p[k] * 60 / p.seconds : 0;
  chart("chart-traffic", points, [{label: "messages", value: perMin("messages")}, {label: "replies", value: perMin("replies")}], "/min");
  chart("chart-latency", points, [{label: "p50", value: p => p.p50_ms}, {label: "p95", value: p => p.p95_ms}], " ms");
  chart("chart-runners", points, [{label: "spawns", value: perMin("spawns")}, {label: "exits", value: perMin("exits")}, {label: "quarantines", value: perMin("quarantines")}], "/min");
  if (points.length) {
    const mins = Math.round((points[points.length - 1].at_ms - points[0].at_ms + points[0].seconds * 1000) / 60000);
    document.getElementById("span").textContent = "last " + (mins < 1 ? "minute" : mins + " min") + " · latency from the message stored to its reply delivered (bucket bounds)";
  }
}

let shown = null;
async function detail(id) {
  const r = await fetch("/api/session?id=" + encodeURIComponent(id));
  const j = await r.json();
  if (!j.ok) throw new Error("session " + id + ": " + (j.error && j.error.message || r.status));
  const s = j.data.session, d = j.data.detail;
  shown = id;
  document.getElementById("detail-box").hidden = false;
  document.getElementById("detail-id").textContent = id + " · agent " + s.agent_group;
  let h = "<p>state: " + esc(s.quarantined_at ? "quarantined" : s.runner) + " · last active " + ago(s.last_active) + " · runner exits: " + esc(s.exits) + "</p>";
  h += "<h3>Last exit</h3>" + (s.last_exit ? "<p>" + ago(s.last_exit_at) + ": " + esc(s.last_exit) + (s.last_exit_status ? " (" + esc(s.last_exit_status) + ")" : "") + "</p>" : '<p class="empty">none</p>');
  h += "<h3>Last turns</h3>" + table(d.turns, [["when", r => ago(r.at)], ["from", r => esc(r.from)], ["text", r => esc(r.text)]]);
  h += "<h3>Tool calls</h3>" + table(d.tool_calls, [["when", r => ago(r.at)], ["tool", r => esc(r.tool)], ["took", r => r.ms == null ? "" : esc(r.ms < 1000 ? r.ms + " ms" : (r.ms / 1000).toFixed(1) + " s")], ["result", r => r.error ? '<span class="q">error</span>' : "ok"]]);
  h += "<h3>Runner log" + (d.log_file ? " (" + esc(d.log_file) + ")" : "") + "</h3>" + (d.log.length ? "<pre>" + esc(d.log.join("\n")) + "</pre>" : '<p class="empty">none</p>');
  document.getElementById("detail").innerHTML = h;
}
document.getElementById("detail-close").onclick = () => { shown = null; document.getElementById("detail-box").hidden = true; };

async function refresh() {
  try {
    await charts();
    if (shown) await detail(shown);
    const h = await call("host-status");
    document.getElementById("host").textContent = "v" + (h.version || "?") + " · sandbox " + (h.sandbox || "?") + " · " + (h.sessions ?? "?") + " sessions";
    const sessions = await call("sessions-list");
    document.getElementById("sessions").innerHTML = table(sessions, [
      ["id", r => esc(r.id)],
      ["agent", r => esc(r.agent_group)],
      ["state", r => r.quarantined_at ? '<span class="q">quarantined</span>' : (r.runner_pid ? '<span class="run">running</span>' : "idle")],
      ["last active", r => ago(r.last_active)],
      ["last exit", r => esc(r.last_exit || "")],
      ["quarantine reason", r => esc(r.quarantine_reason || "")],
    ], r => r.quarantined_at ? '<button data-lift="' + esc(r.id) + '">Lift quarantine</button>' : "", true);
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
    const au = await fetch("/api/audit");
    if (!au.ok) throw new Error("audit: " + au.status);
    document.getElementById("audit").innerHTML = table((await au.json()).uses, [
      ["when", r => ago(r.at)],
      ["agent", r => esc(r.agent_group)],
      ["secret", r => esc(r.secret)],
      ["request", r => esc(r.method + " " + r.host + r.path)],
      ["status", r => esc(r.status)],
      ["outcome", r => r.outcome === "injected" ? esc(r.outcome) : '<span class="q">' + esc(r.outcome) + "</span>"],
    ]);
    document.getElementById("err").textContent = "";
  } catch (e) { document.getElementById("err").textContent = e.message; }
}
document.addEventListener("click", async ev => {
  const b = ev.target;
  try {
    const row = b.closest && b.closest("tr.pick");
    if (b.tagName !== "BUTTON" && row && row.dataset.session) { await detail(row.dataset.session); return; }
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
