"use strict";
// Signed in by the session cookie (HttpOnly: this script never sees a
// credential); the browser sends it with every request to this origin.
const params = new URLSearchParams(location.search);
const user = params.get("user") || "";
const q = (extra) => {
  const p = new URLSearchParams();
  if (user) p.set("user", user);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
};
const log = document.getElementById("log");
const statusEl = document.getElementById("status");
const byId = new Map();
// The live view (decision 0048): drafts by the message they answer, and
// what the agent does per message (its state and since when).
const drafts = new Map();
const working = new Map();
const workingEl = document.getElementById("working");
const workState = document.getElementById("work-state");
const workTime = document.getElementById("work-time");
let ws, retry = 500, counter = 0;

function scroll() { log.scrollTop = log.scrollHeight; }

// A reply's body: the HTML the server rendered from its Markdown and
// sanitised (web/markdown.rs), else the plain text. Code blocks get a copy
// button.
function fill(body, text, html) {
  if (typeof html !== "string") { body.textContent = text; return; }
  body.innerHTML = html;
  for (const pre of body.querySelectorAll("pre")) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = "copy";
    b.onclick = () => {
      const code = pre.querySelector("code") || pre;
      navigator.clipboard.writeText(code.textContent).then(() => { b.textContent = "copied"; }, () => { b.textContent = "copy failed"; });
    };
    pre.appendChild(b);
  }
}

// When a message was sent, in the browser's own zone: `at` is the stored
// UTC time (history), else now (live).
function stamp(el, at) {
  const d = at ? new Date(at) : new Date();
  if (isNaN(d)) return;
  const t = document.createElement("time");
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  t.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  el.appendChild(t);
}

function bubble(from, id, text, files, buttons, html, at) {
  const welcome = document.querySelector(".welcome");
  if (welcome) welcome.remove();
  const el = document.createElement("div");
  el.className = "msg " + from;
  if (id) { el.dataset.id = id; byId.set(id, el); }
  const body = document.createElement(typeof html === "string" ? "div" : "span");
  body.className = "text";
  fill(body, text, html);
  el.appendChild(body);
  if (files && files.length) {
    const box = document.createElement("div");
    box.className = "files";
    for (const f of files) {
      if (typeof f === "string") { const s = document.createElement("div"); s.textContent = "file: " + f; box.appendChild(s); continue; }
      const a = document.createElement("a");
      a.href = f.url;
      a.textContent = "download " + f.name;
      a.setAttribute("download", f.name);
      box.appendChild(a);
    }
    el.appendChild(box);
  }
  if (buttons && buttons.length) {
    const box = document.createElement("div");
    box.className = "buttons";
    for (const b of buttons) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.textContent = b.label;
      btn.dataset.callback = b.callback;
      btn.onclick = () => {
        send({ type: "click", callback: b.callback });
        for (const o of box.querySelectorAll("button")) o.disabled = true;
        btn.classList.add("chosen");
      };
      box.appendChild(btn);
    }
    el.appendChild(box);
  }
  stamp(el, at);
  log.appendChild(el);
  scroll();
  return el;
}

function notice(text) {
  const el = document.createElement("div");
  el.className = "notice";
  el.textContent = text;
  log.appendChild(el);
  scroll();
}

const key = (replyTo) => replyTo || "";

// The conversations list, shown when there are several: each a link to
// its page (`?user=`), the one open marked.
function conversations(m) {
  const nav = document.getElementById("convs");
  nav.textContent = "";
  if (!m.items || m.items.length < 2) { nav.hidden = true; return; }
  nav.hidden = false;
  for (const c of m.items) {
    const a = document.createElement("a");
    a.href = c.platform_id === m.default ? "/" : "/?user=" + encodeURIComponent(c.platform_id);
    a.textContent = c.name || c.platform_id;
    if (c.last_active) a.title = "last active " + new Date(c.last_active).toLocaleString();
    if (c.platform_id === m.current) a.setAttribute("aria-current", "page");
    nav.appendChild(a);
  }
}

// The working bar: the newest turn in flight, its state and elapsed time.
function showWorking() {
  let last = null;
  for (const w of working.values()) last = w;
  if (!last) { workingEl.hidden = true; return; }
  workingEl.hidden = false;
  workState.textContent = last.state;
  const s = Math.max(0, Math.round((Date.now() - last.since_ms) / 1000));
  workTime.textContent = s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s";
}
setInterval(showWorking, 1000);

function dropDraft(replyTo) {
  const el = drafts.get(key(replyTo));
  if (el) { el.remove(); drafts.delete(key(replyTo)); }
}

// Messages answered: a draft sent late (drafts take their own path) for
// one of them is not shown again.
const answered = new Set();

function draft(m) {
  if (answered.has(key(m.reply_to))) return;
  let el = drafts.get(key(m.reply_to));
  if (!el) {
    el = bubble("agent", null, "", [], [], "");
    el.classList.add("draft");
    drafts.set(key(m.reply_to), el);
  }
  fill(el.querySelector(".text"), m.text, m.html);
  scroll();
}

document.getElementById("stop").onclick = () => { send({ type: "stop" }); };

// Up in an empty box edits your last message (decision 0049): the
// correction goes to the agent as such and replaces the message here.
let editing = null;
const editingEl = document.getElementById("editing");
function markEdited(el, text) {
  el.querySelector(".text").textContent = text;
  if (!el.querySelector(".edited")) {
    const s = document.createElement("span"); s.className = "edited"; s.textContent = "(edited)";
    el.insertBefore(s, el.querySelector("time"));
  }
}
function stopEditing() { editing = null; editingEl.hidden = true; }
function startEditing() {
  const mine = [...document.querySelectorAll(".msg.user")].filter(e => (e.dataset.id || "").startsWith("web-"));
  const el = mine[mine.length - 1];
  if (!el) return false;
  editing = el;
  input.value = el.querySelector(".text").textContent;
  editingEl.hidden = false;
  return true;
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(obj)); return true; }
  notice("not connected; try again in a moment");
  return false;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws?" + q());
  ws.onopen = () => { retry = 500; };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    switch (m.type) {
      case "hello":
        statusEl.textContent = "connected as " + m.user;
        document.getElementById("about").textContent = m.about || "";
        if (m.about) document.title = "pinch · " + m.about;
        break;
      case "conversations": conversations(m); break;
      case "working": working.set(key(m.reply_to), m); showWorking(); break;
      case "draft": draft(m); break;
      case "idle": dropDraft(m.reply_to); working.delete(key(m.reply_to)); showWorking(); break;
      case "history":
        log.textContent = ""; byId.clear(); drafts.clear(); working.clear(); showWorking();
        for (const it of m.items) {
          // A correction shows in place of the message it corrects.
          if (it.edit_of && byId.has(it.edit_of)) { markEdited(byId.get(it.edit_of), it.text); continue; }
          const el = bubble(it.from, it.id, it.text, it.files, it.buttons || [], it.html, it.at);
          if (it.held) {
            el.classList.add("handled");
            const h = document.createElement("div");
            h.className = "answer";
            h.textContent = "waiting for the owner's approval";
            el.insertBefore(h, el.querySelector("time"));
          }
          if (it.answer) {
            const a = document.createElement("div");
            a.className = "answer";
            a.textContent = "answered: " + it.answer;
            el.insertBefore(a, el.querySelector("time"));
          }
        }
        if (!m.items.length) {
          const w = document.createElement("div");
          w.className = "notice welcome";
          w.textContent = "No messages yet. Say hello: the agent answers here, and this conversation is kept.";
          log.appendChild(w);
        }
        break;
      case "message": {
        // A reply whose id is one of yours is still a reply (an agent picks
        // its rows' ids); only a repeat of an agent message is skipped.
        const same = byId.get(m.id);
        if (same && same.classList.contains("agent")) break;
        if (m.in_reply_to) answered.add(key(m.in_reply_to));
        dropDraft(m.in_reply_to);
        bubble("agent", same ? null : m.id, m.text, m.files, m.buttons, m.html);
        break;
      }
      case "accepted": {
        const el = byId.get("c-" + m.client_id);
        if (el) { el.classList.remove("pending"); byId.delete("c-" + m.client_id); el.dataset.id = m.id; byId.set(m.id, el); }
        break;
      }
      case "handled": {
        // Answered by the host (/help) or held for an approval: said as
        // information, not as a failure.
        const el = byId.get("c-" + m.client_id);
        if (el) { el.classList.remove("pending"); el.classList.add("handled"); byId.delete("c-" + m.client_id); el.dataset.id = m.id; byId.set(m.id, el); }
        if (m.note) { const n = document.createElement("div"); n.className = "notice handled"; n.textContent = m.note; log.appendChild(n); scroll(); }
        break;
      }
      case "rejected": {
        const el = byId.get("c-" + m.client_id);
        if (el) el.classList.add("failed");
        notice("not delivered: " + (m.reason || "unknown reason"));
        break;
      }
      case "edit": {
        // The agent edits its own messages, never yours.
        const el = byId.get(m.id);
        if (el && el.classList.contains("agent")) {
          fill(el.querySelector(".text"), m.text, m.html);
          if (!el.querySelector(".edited")) { const s = document.createElement("span"); s.className = "edited"; s.textContent = "(edited)"; el.appendChild(s); }
        }
        break;
      }
      case "reaction": {
        const el = byId.get(m.id);
        if (el) {
          let r = el.querySelector(".reactions");
          if (!r) { r = document.createElement("span"); r.className = "reactions"; el.appendChild(r); }
          r.textContent += m.emoji;
        }
        break;
      }
      case "notice": notice(m.text); break;
    }
  };
  ws.onclose = () => {
    statusEl.textContent = "disconnected; reconnecting…";
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

async function uploadAll(files) {
  const out = [];
  for (const f of files) {
    const r = await fetch("/upload?" + q({ name: f.name }), { method: "POST", body: f, headers: { "content-type": f.type || "application/octet-stream" } });
    if (r.ok) out.push({ upload: (await r.json()).upload });
    else if (r.status === 413) out.push({ name: f.name, size: f.size });
    else notice("could not upload " + f.name + ": " + (await r.text()));
  }
  return out;
}

const form = document.getElementById("form");
const input = document.getElementById("text");
const fileInput = document.getElementById("file");
fileInput.onchange = () => {
  document.getElementById("chosen").textContent = Array.from(fileInput.files).map(f => f.name).join(", ");
};
form.onsubmit = async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  const files = Array.from(fileInput.files);
  if (!text && !files.length) return;
  const cid = Date.now().toString(36) + "-" + (counter++).toString(36) + "-" + Math.random().toString(36).slice(2, 8);
  if (editing) {
    const el = editing;
    stopEditing();
    input.value = "";
    if (text === el.querySelector(".text").textContent) return;
    if (send({ type: "message", text, client_id: cid, edit_of: el.dataset.id, attachments: [] })) markEdited(el, text);
    return;
  }
  input.value = "";
  fileInput.value = "";
  document.getElementById("chosen").textContent = "";
  const el = bubble("user", "c-" + cid, text, files.map(f => f.name), []);
  el.classList.add("pending");
  const attachments = await uploadAll(files);
  send({ type: "message", text, client_id: cid, attachments });
};
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  else if (e.key === "ArrowUp" && input.value === "" && !editing) { if (startEditing()) e.preventDefault(); }
  else if (e.key === "Escape" && editing) { stopEditing(); input.value = ""; }
});
connect();
