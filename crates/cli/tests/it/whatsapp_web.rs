//! WhatsApp Web (a linked device through the Baileys bridge) end to end at
//! the bridge's boundary: the real `pinch host` daemon with `[whatsapp_web]
//! command` pointing at a relay script that connects the bridge's stdio to
//! a fake bridge in this file, which speaks the bridge protocol
//! (`pinch_channels::whatsapp_web::wire`) as `bridge.mjs` does. A message
//! in and the reply out (quoting it), a group needing a mention, files
//! both ways, a reaction, typing, a kill -9 of the host that loses and
//! repeats nothing, a logout (one notice to the owner, doctor naming the
//! fix), the pairing (`pinch channels whatsapp link` drawing the QR code).
//! The real bridge script is syntax-checked with Node; WhatsApp itself is
//! not reachable from here (decision 0055 says what that leaves untested).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::platform::{
    self, daemon, failed_deliveries, rows, wait_found, Platform, Setup, SHARED_RULES, WAIT,
};
use crate::common::*;
use serde_json::{json, Value};

const ME: &str = "4915100000001@s.whatsapp.net";
const ANN: &str = "4915112345678@s.whatsapp.net";
const BOB: &str = "4917612345678@s.whatsapp.net";
const GROUP: &str = "120363041234567890@g.us";

/// The fake bridge: every line pinch wrote to it (with the number of the
/// bridge run it went to), and the current run's stdout.
#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<(usize, Value)>>>,
    out: Arc<Mutex<Option<TcpStream>>>,
    runs: Arc<AtomicUsize>,
    /// Leave `send` unanswered (a send whose answer is lost).
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl Fake {
    /// Listens for bridge runs (each a relay's connection); answers every
    /// command that wants an answer with success.
    fn start() -> (Fake, u16) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let f = Fake::default();
        let g = f.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let run = g.runs.fetch_add(1, Ordering::SeqCst) + 1;
                *g.out.lock().unwrap() = Some(conn.try_clone().unwrap());
                let h = g.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { return };
                        let v: Value = serde_json::from_str(&line).unwrap();
                        let mute = h.silent.load(Ordering::SeqCst) && v["op"] == "send";
                        if !mute && matches!(v["op"].as_str(), Some("send" | "react" | "typing")) {
                            let msg = v["msg_id"].as_str().unwrap_or("").to_owned();
                            h.emit(
                                json!({"ev": "result", "id": v["id"], "ok": true, "msg_id": msg}),
                            );
                        }
                        h.seen.lock().unwrap().push((run, v));
                    }
                });
            }
        });
        (f, port)
    }

    fn emit(&self, v: Value) {
        let mut out = self.out.lock().unwrap();
        let w = out.as_mut().expect("a bridge is running");
        let _ = writeln!(w, "{v}");
    }

    /// The lines pinch wrote with `op`, in order.
    fn ops(&self, op: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["op"] == op)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn wait_op(&self, what: &str, op: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_found(what, || self.ops(op).into_iter().find(|v| pred(v)))
    }

    /// Waits for bridge run `n` to start; says it is connected.
    fn connected(&self, n: usize) -> Value {
        let start = wait_found("the bridge's start line", || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .find(|(r, v)| *r == n && v["op"] == "start")
                .map(|(_, v)| v.clone())
        });
        self.emit(json!({"ev": "connected", "me": ME}));
        start
    }

    fn message(&self, chat: &str, id: &str, sender: &str, text: &str) {
        self.emit(json!({"ev": "message", "chat": chat, "id": id, "sender": sender, "name": "Ann", "text": text}));
    }

    fn acked(&self, id: &str) -> bool {
        self.ops("ack").iter().any(|v| v["msg"] == id)
    }
}

/// The relay pinch runs as its bridge: its stdio to the fake's port.
fn relay(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("relay.sh");
    std::fs::write(&p, "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/$1 || exit 1\ncat <&3 &\ncat >&3\nkill $! 2>/dev/null\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn setup(port: u16, tmp: &Path, linked: bool) -> Setup {
    let script = format!("{SHARED_RULES}\n[[rule]]\nreply = \"hi from the agent\"\n");
    let relay = relay(tmp);
    let s = platform::setup(Platform {
        channel: "whatsapp_web",
        owner: Some(ANN),
        chats: &[
            ("mg-dm", ANN, false, "pattern"),
            ("mg-group", GROUP, true, "mention"),
        ],
        script: &script,
        config: format!(
            "[whatsapp_web]\ncommand = [{:?}, \"{port}\"]\nstall_s = 30\n",
            relay.display().to_string()
        ),
        env: &[],
    });
    if linked {
        let session = s.data.join("channels/whatsapp-web/session");
        std::fs::create_dir_all(&session).unwrap();
        std::fs::write(session.join("creds.json"), "{}").unwrap();
    }
    s
}

fn sends(f: &Fake, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    f.ops("send").into_iter().filter(|v| pred(v)).collect()
}

#[test]
fn whatsapp_web_dm_group_files_reaction_and_typing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, port) = Fake::start();
    let s = setup(port, tmp.path(), true);
    let _d = daemon(&s);
    let start = fake.connected(1);
    assert_eq!(start["link"], false);
    assert_eq!(start["read_receipts"], true);
    let media = PathBuf::from(start["media"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    for d in ["", "session", "media", "spool"] {
        let m = std::fs::metadata(s.data.join("channels/whatsapp-web").join(d)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700, "{d}");
    }

    // A DM: stored, acked after the commit, answered quoting it.
    fake.message(ANN, "3EB0A1", ANN, "hello there");
    let reply = fake.wait_op("the reply", "send", |v| v["quote"] == "3EB0A1");
    assert_eq!(reply["to"], ANN);
    assert_eq!(reply["text"], "hi from the agent");
    assert!(
        reply["msg_id"].as_str().unwrap().starts_with("3EB0"),
        "{reply}"
    );
    assert!(fake.acked("3EB0A1"));
    assert_eq!(rows(&s.data, "3EB0A1"), 1);
    fake.wait_op("typing in the DM", "typing", |v| v["to"] == ANN);

    // A group: without a mention, stored nowhere (but acked); with one,
    // answered in the group.
    fake.message(GROUP, "3EB0G1", BOB, "just chatting");
    wait_for("the group message's ack", WAIT, || fake.acked("3EB0G1"));
    assert_eq!(rows(&s.data, "3EB0G1"), 0);
    fake.emit(json!({"ev": "message", "chat": GROUP, "id": "3EB0G2", "sender": BOB, "text": "@pinch hi", "mentioned": true}));
    let g = fake.wait_op("the group reply", "send", |v| v["quote"] == "3EB0G2");
    assert_eq!(g["to"], GROUP);
    assert!(sends(&fake, |v| v["quote"] == "3EB0G1").is_empty());

    // A reaction on the first message of the DM.
    fake.message(ANN, "3EB0A2", ANN, "react to this");
    let r = fake.wait_op("the reaction", "react", |_| true);
    assert_eq!(
        (r["to"].as_str(), r["msg"].as_str(), r["emoji"].as_str()),
        (Some(ANN), Some("3EB0A1"), Some("👍"))
    );
    fake.wait_op("the answer", "send", |v| v["text"] == "reacted");

    // A file in: the bridge's download in the media folder, read by the
    // agent, removed once stored.
    std::fs::write(media.join("in-0011aabb"), "the secret word is plum").unwrap();
    fake.emit(json!({"ev": "message", "chat": ANN, "id": "3EB0A3", "sender": ANN, "text": "read the attachment please",
        "media": {"file": "in-0011aabb", "name": "notes.txt", "mime": "text/plain", "size": 23}}));
    let said = fake.wait_op("the agent's reading", "send", |v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("the file says:"))
    });
    assert!(
        said["text"]
            .as_str()
            .unwrap()
            .contains("the secret word is plum"),
        "{said}"
    );
    assert!(
        !media.join("in-0011aabb").exists(),
        "the download is removed once stored"
    );
    // A name the network chose never becomes a path.
    fake.emit(
        json!({"ev": "message", "chat": ANN, "id": "3EB0A4", "sender": ANN, "text": "odd",
        "media": {"file": "../../pinch.db", "name": "x", "size": 1}}),
    );
    wait_for("the odd message's ack", WAIT, || fake.acked("3EB0A4"));
    assert!(s.data.join("pinch.db").exists());

    // A file out: copied into the media folder for the bridge, sent with
    // its name and type.
    fake.message(ANN, "3EB0A5", ANN, "send me the report");
    let doc = fake.wait_op("the document", "send", |v| v["file"].is_object());
    assert_eq!(doc["file"]["name"], "report.txt");
    assert_eq!(doc["file"]["mime"], "text/plain");
    let handed = media.join(doc["file"]["file"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&handed).unwrap(), "numbers: 1 2 3");
    assert_eq!(
        std::fs::metadata(&handed).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fake.wait_op("the report's final answer", "send", |v| {
        v["text"] == "report sent"
    });

    assert!(
        failed_deliveries(&s.data).is_empty(),
        "{:?}",
        failed_deliveries(&s.data)
    );
}

#[test]
fn whatsapp_web_a_killed_host_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, port) = Fake::start();
    let s = setup(port, tmp.path(), true);
    let mut d = daemon(&s);
    fake.connected(1);
    fake.message(ANN, "3EB0R1", ANN, "first");
    fake.wait_op("the first reply", "send", |v| v["quote"] == "3EB0R1");
    wait_for("the first ack", WAIT, || fake.acked("3EB0R1"));
    wait_for("the first reply's delivery on record", WAIT, || {
        platform::delivered(&s.data) >= 1
    });
    // The host dies hard; the bridge (its child) sees its stdin close.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let mut d = daemon(&s);
    fake.connected(2);
    // The bridge replays what it holds (a message whose ack may not have
    // reached it) and relays one that came meanwhile.
    fake.message(ANN, "3EB0R1", ANN, "first");
    fake.message(ANN, "3EB0R2", ANN, "second");
    fake.wait_op("the second reply", "send", |v| v["quote"] == "3EB0R2");
    wait_for("both acked in run 2", WAIT, || {
        let seen = fake.seen.lock().unwrap();
        ["3EB0R1", "3EB0R2"].iter().all(|id| {
            seen.iter()
                .any(|(r, v)| *r == 2 && v["op"] == "ack" && v["msg"] == *id)
        })
    });
    assert_eq!(rows(&s.data, "3EB0R1"), 1, "the replay is the same row");
    assert_eq!(rows(&s.data, "3EB0R2"), 1);
    wait_for("the second reply's delivery on record", WAIT, || {
        platform::delivered(&s.data) >= 2
    });
    // Kill again with nothing in flight, then check: one reply each.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let _d = daemon(&s);
    fake.connected(3);
    fake.message(ANN, "3EB0R3", ANN, "third");
    fake.wait_op("the third reply", "send", |v| v["quote"] == "3EB0R3");
    for id in ["3EB0R1", "3EB0R2", "3EB0R3"] {
        assert_eq!(
            sends(&fake, |v| v["quote"] == id).len(),
            1,
            "one reply to {id}"
        );
    }
}

#[test]
fn whatsapp_web_logout_tells_the_owner_once_and_doctor_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, port) = Fake::start();
    let s = setup(port, tmp.path(), true);
    let lines = platform::doctor_lines(&s, "whatsapp_web", "UNUSED", "");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("linked")),
        "{lines:?}"
    );
    let mut d = daemon(&s);
    fake.connected(1);
    fake.emit(json!({"ev": "logged_out", "reason": "WhatsApp closed the session (401)"}));
    let notices = |s: &Setup| -> Vec<String> {
        let c = pinch_host::db::central::Central::open(&s.data.join("pinch.db")).unwrap();
        let mut st = c.conn.prepare("SELECT text FROM host_notices WHERE channel_type = 'cli' AND platform_id = 'local'").unwrap();
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let n = wait_found("the owner's notice", || notices(&s).into_iter().next());
    assert!(
        n.contains("logged pinch's linked device out")
            && n.contains("pinch channels whatsapp link"),
        "{n}"
    );
    assert!(s.data.join("channels/whatsapp-web/logged-out").exists());
    let lines = platform::doctor_lines(&s, "whatsapp_web", "UNUSED", "");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("logged out")
            && l.contains("pinch channels whatsapp link")),
        "{lines:?}"
    );
    // A restart neither starts the bridge nor tells the owner again.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let _d = daemon(&s);
    wait_for("the host to be up", WAIT, || {
        s.log().matches("WhatsApp logged this device out").count() >= 2
    });
    assert_eq!(notices(&s).len(), 1, "one notice");
    assert_eq!(
        fake.runs.load(Ordering::SeqCst),
        1,
        "no bridge without a session"
    );
}

#[test]
fn whatsapp_web_link_draws_the_qr_code_and_keeps_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, port) = Fake::start();
    let s = setup(port, tmp.path(), false);
    let lines = platform::doctor_lines(&s, "whatsapp_web", "UNUSED", "");
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("not linked")
            && l.contains("pinch channels whatsapp link")),
        "{lines:?}"
    );
    std::fs::create_dir_all(s.data.join("channels/whatsapp-web")).unwrap();
    std::fs::write(s.data.join("channels/whatsapp-web/logged-out"), "before").unwrap();
    let child = std::process::Command::new(PINCH)
        .args(["channels", "whatsapp", "link", "--data-dir"])
        .arg(&s.data)
        .arg("--config")
        .arg(&s.cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = wait_found("the link's start line", || {
        fake.ops("start").into_iter().next()
    });
    assert_eq!(start["link"], true);
    fake.emit(
        json!({"ev": "qr", "code": "2@pinch-test-code,abcdefghijklmnop,QRSTUVWXYZ=,0123456789="}),
    );
    // The bridge saves the keys, then says it is connected.
    let session = PathBuf::from(start["session"].as_str().unwrap());
    std::fs::write(session.join("creds.json"), "{\"me\":1}").unwrap();
    fake.emit(json!({"ev": "connected", "me": ME}));
    *fake.out.lock().unwrap() = None;
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("Linked devices"), "{out}");
    assert!(
        out.matches('▀').count() > 50 && out.contains('█'),
        "a QR code drawn: {out}"
    );
    assert!(out.contains(&format!("linked as {ME}")), "{out}");
    let kept = s.data.join("channels/whatsapp-web/session/creds.json");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "{\"me\":1}");
    assert!(
        !s.data.join("channels/whatsapp-web/logged-out").exists(),
        "the logout is cleared"
    );
    let lines = platform::doctor_lines(&s, "whatsapp_web", "UNUSED", "");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok") && l.contains("linked")),
        "{lines:?}"
    );
}

/// The real bridge parses with the Node.js it is meant for (skipped
/// without `node` unless PINCH_TEST_REQUIRE_NODE=1).
#[test]
fn whatsapp_web_the_bridge_script_is_valid_javascript() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bridge.mjs");
    std::fs::write(&p, pinch_channels::whatsapp_web::BRIDGE_JS).unwrap();
    match std::process::Command::new("node")
        .arg("--check")
        .arg(&p)
        .output()
    {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            assert!(
                std::env::var("PINCH_TEST_REQUIRE_NODE").as_deref() != Ok("1"),
                "node is required: {e}"
            );
            eprintln!("skipped: no node ({e})");
        }
    }
}

#[test]
fn whatsapp_web_a_reply_sent_again_after_a_crash_keeps_its_whatsapp_id() {
    // The host is killed between the bridge's send and its answer (the
    // fake holds the answer back): the reply goes again after the
    // restart, with the same WhatsApp message id, which WhatsApp shows
    // once.
    let tmp = tempfile::tempdir().unwrap();
    let (fake, port) = Fake::start();
    fake.silent.store(true, Ordering::SeqCst);
    let s = setup(port, tmp.path(), true);
    let mut d = daemon(&s);
    fake.connected(1);
    fake.message(ANN, "3EB0L1", ANN, "hello");
    fake.wait_op("the first try", "send", |v| v["quote"] == "3EB0L1");
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    fake.silent.store(false, Ordering::SeqCst);
    let _d = daemon(&s);
    fake.connected(2);
    wait_for("the second try", WAIT, || {
        sends(&fake, |v| v["quote"] == "3EB0L1").len() == 2
    });
    let tries = sends(&fake, |v| v["quote"] == "3EB0L1");
    assert_eq!(tries[0]["msg_id"], tries[1]["msg_id"], "{tries:?}");
    assert_eq!(tries[0]["text"], tries[1]["text"]);
    wait_for("the delivery on record", WAIT, || {
        platform::delivered(&s.data) >= 1
    });
}

/// WhatsApp Web's world of the shared channel suite: Ann's chat through
/// the fake bridge. As WhatsApp keeps a message for a linked device until
/// it is acked, the world replays every message not yet acked to each new
/// bridge run (a message sent while pinch is down arrives that way).
struct WebWorld {
    _tmp: tempfile::TempDir,
    fake: Fake,
    s: Setup,
    runs: AtomicUsize,
    said: Mutex<Vec<Value>>,
    media: Mutex<Option<PathBuf>>,
    /// Bytes of the files pinch handed over (read once: the real bridge
    /// removes them after sending).
    sent_files: Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

fn web_world() -> Option<WebWorld> {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, port) = Fake::start();
    let s = setup(port, tmp.path(), true);
    Some(WebWorld {
        _tmp: tmp,
        fake,
        s,
        runs: AtomicUsize::new(0),
        said: Mutex::default(),
        media: Mutex::default(),
        sent_files: Mutex::default(),
    })
}

impl crate::common::suite::World for WebWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let start = self.fake.connected(run);
        *self.media.lock().unwrap() = start["media"].as_str().map(PathBuf::from);
        let unacked: Vec<Value> = self
            .said
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !self.fake.acked(m["id"].as_str().unwrap_or_default()))
            .cloned()
            .collect();
        for m in unacked {
            self.fake.emit(m);
        }
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let n = self.said.lock().unwrap().len();
        let id = format!("3EB0S{n:04}");
        let mut m = json!({"ev": "message", "chat": ANN, "id": id, "sender": ANN, "name": "Ann", "text": text});
        if let Some((name, bytes)) = file {
            // The bridge's download, in the media folder it was given.
            let dir = self.media.lock().unwrap().clone().expect("a bridge ran");
            let f = format!("in-suite{n}");
            std::fs::write(dir.join(&f), bytes).unwrap();
            m["media"] =
                json!({"file": f, "name": name, "mime": "text/plain", "size": bytes.len()});
        }
        self.said.lock().unwrap().push(m.clone());
        // To the running bridge, if one is (else replayed by `ready`).
        if self.fake.out.lock().unwrap().is_some() {
            self.fake.emit(m);
        }
        id
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        let media = self.media.lock().unwrap().clone();
        sends(&self.fake, |v| v["to"] == ANN)
            .into_iter()
            .map(|v| {
                let mut files = Vec::new();
                if let (Some(f), Some(dir)) = (v["file"]["file"].as_str(), &media) {
                    let mut cache = self.sent_files.lock().unwrap();
                    let bytes = cache
                        .entry(f.to_owned())
                        .or_insert_with(|| std::fs::read(dir.join(f)).unwrap_or_default())
                        .clone();
                    let name = v["file"]["name"].as_str().unwrap_or_default().to_owned();
                    files.push((name, bytes));
                }
                crate::common::suite::Reply {
                    text: v["text"].as_str().unwrap_or_default().to_owned(),
                    files,
                }
            })
            .collect()
    }
}

crate::channel_suite!(web_world);
