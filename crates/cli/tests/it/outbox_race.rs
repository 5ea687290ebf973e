//! Issue 14, break 2: the `open_checked` race, performed the way an
//! attacker would. Inside a real bwrap sandbox, the agent's `shell` tool
//! runs a small Python program that keeps exchanging its row folder
//! `outbox/race-<i>` with a symlink to a host folder holding a secret
//! (`renameat2(RENAME_EXCHANGE)`, syscall 316 on x86_64), while the host
//! delivers a row naming `report.txt` in that folder — to the session's own
//! conversation (a fake channel that records the bytes it is given) or, for
//! every tenth row, to another agent (its inbox; 20 rows, the pair limit).
//!
//! The rows are written by the test into `out/outbound.db` with rusqlite,
//! as a compromised runner would (the runner is busy in the racing `shell`
//! call meanwhile); the racing is done by the real process in the sandbox.
//! One row at a time: the test names the row the racer should work on
//! (`outbox/turn`, written from the host), waits for the racer's
//! acknowledgement (`outbox/ack`), writes the row, and waits for the host's
//! verdict in the ledger, so every row is delivered under the race.
//!
//! Asserted: the secret reaches neither the channel nor the other agent's
//! inbox; every row gets a verdict; a refused file or row is told to the
//! agent with the reason. Against the old `open_checked` (canonicalise,
//! then open by path) one run leaked the secret 33 times (2,000 opens).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::{FakeChannel, Sent};
use pinch_channels::{Capabilities, InboundEvent};
use pinch_host::db::central::Central;
use pinch_host::sandbox::Choice;

/// Rows raced (each against a racer working on its folder alone).
const ROWS: usize = 200;
/// Files each row names (each one more open racing the swaps).
const FILES: usize = 10;
const SECRET: &str = "TOPSECRET-host-file-7d1f";

const RACER: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_renameat2, AT_FDCWD, RENAME_EXCHANGE = 316, -100, 2
secret_dir, n = sys.argv[1], int(sys.argv[2])
os.chdir('/workspace/outbox')
def put(name, text):
    with open('.' + name + '.tmp', 'w') as f:
        f.write(text)
    os.rename('.' + name + '.tmp', name)
for i in range(n):
    os.mkdir('race-%d' % i)
    for k in range(10):
        with open('race-%d/report-%d.txt' % (i, k), 'w') as f:
            f.write('benign %d\n' % i)
    os.symlink(secret_dir, '.swap-%d' % i)
put('ready', 'ready')
swaps, failed, cur = 0, 0, -1
deadline = time.time() + 900
while time.time() < deadline:
    try:
        with open('turn') as f:
            t = int(f.read())
    except (OSError, ValueError):
        t = -1
    if t >= n:
        break
    if t != cur:
        cur = t
        put('ack', str(t))
    if cur < 0:
        time.sleep(0.005)
        continue
    a, b = b'race-%d' % cur, b'.swap-%d' % cur
    for _ in range(500):
        if libc.syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0:
            swaps += 1
        else:
            failed += 1
print('racer done: swaps=%d failed=%d' % (swaps, failed))
"#;

fn script(secret_dir: &std::path::Path) -> String {
    format!(
        r#"
[[rule]]
contains = "start racing"
tool = "shell"
args = {{ command = "/usr/bin/python3 racer.py {} {ROWS}", timeout_s = 1200 }}

[[rule]]
after_tool = "shell"
reply = "racer said: {{tool_result}}"

[[rule]]
contains = "race "
reply = "got it"
"#,
        secret_dir.display()
    )
}

fn seed(data: &std::path::Path) {
    std::fs::create_dir_all(data).unwrap();
    let mut c = Central::open(&data.join("pinch.db")).unwrap();
    c.bootstrap("tester").unwrap();
    let x = |sql: &str, p: &[&str]| {
        c.conn
            .execute(sql, pinch_proto::rusqlite::params_from_iter(p.iter()))
            .unwrap();
    };
    x("INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('helper', 'helper', 'helper', 'x')", &[]);
    x(
        "INSERT INTO agent_configs (agent_group_id, updated_at) VALUES ('helper', 'x')",
        &[],
    );
    x("INSERT INTO agent_destinations (agent_group_id, local_name, target_type, target_id, created_at) VALUES ('main', 'helper', 'agent', 'helper', 'x')", &[]);
    x(
        "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
         VALUES ('mg-rich', 'rich', 'c1', 'x', 0, 'public', '2026-01-01T00:00:00.000Z')",
        &[],
    );
    x(
        "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, ignored_message_policy, session_mode, priority, created_at)
         VALUES ('w-rich', 'mg-rich', 'main', 'pattern', '.', 'all', 'drop', 'shared', 0, '2026-01-01T00:00:00.000Z')",
        &[],
    );
}

fn wait_file(path: &std::path::Path, want: &str, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        std::fs::read_to_string(path).is_ok_and(|s| s == want)
    });
}

#[test]
fn racing_the_row_folder_against_delivery_never_delivers_a_host_file() {
    if !bwrap_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The secret: a host folder the agent cannot see, only name.
    let secret_dir = tmp.path().join("host-secret");
    std::fs::create_dir(&secret_dir).unwrap();
    for k in 0..FILES {
        std::fs::write(secret_dir.join(format!("report-{k}.txt")), SECRET).unwrap();
    }
    let mut cfg = with_script(host_config(tmp.path(), Choice::Bwrap), &script(&secret_dir));
    cfg.delivery_poll = Duration::from_millis(20);
    seed(&cfg.data_dir);
    std::fs::create_dir_all(cfg.data_dir.join("groups/main")).unwrap();
    std::fs::write(cfg.data_dir.join("groups/main/racer.py"), RACER).unwrap();
    let chan: Arc<OnceLock<Arc<FakeChannel>>> = Default::default();
    let c2 = chan.clone();
    cfg.extra_channels.push(Arc::new(move |tx| {
        let ch = FakeChannel::new(
            "rich",
            Capabilities {
                files: true,
                max_text: 4000,
                ..Default::default()
            },
            tx,
        );
        c2.set(ch.clone()).ok();
        ch
    }));
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    let rich = chan.get().unwrap().clone();
    let ev = InboundEvent {
        channel_type: "rich".into(),
        platform_id: "c1".into(),
        message_id: "m1".into(),
        sender_id: "ann".into(),
        text: "start racing".into(),
        is_mention: true,
        ..Default::default()
    };
    rt.block_on(rich.send(ev));

    let main_dir = {
        let c = pinch_proto::rusqlite::Connection::open(cfg.data_dir.join("pinch.db")).unwrap();
        let mut id = None;
        wait_for("main's session", Duration::from_secs(30), || {
            id = c
                .query_row(
                    "SELECT id FROM sessions WHERE messaging_group_id = 'mg-rich'",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .ok();
            id.is_some()
        });
        cfg.data_dir.join("sessions/main").join(id.unwrap())
    };
    let outbox = main_dir.join("outbox");
    wait_file(
        &outbox.join("ready"),
        "ready",
        "the racer in the sandbox to set up",
    );

    let verdict = |id: &str| -> Option<(String, Option<String>)> {
        ledger_db(&main_dir)
            .query_row(
                "SELECT status, last_error FROM delivered WHERE message_out_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    };
    let mut a2a_rows = Vec::new();
    let mut channel_rows = Vec::new();
    for i in 0..ROWS {
        std::fs::write(outbox.join(".turn.tmp"), i.to_string()).unwrap();
        std::fs::rename(outbox.join(".turn.tmp"), outbox.join("turn")).unwrap();
        wait_file(
            &outbox.join("ack"),
            &i.to_string(),
            "the racer to work on the next row",
        );
        let id = format!("race-{i}");
        let to_agent = i % 10 == 1;
        let (channel_type, platform_id) = if to_agent {
            ("agent", "helper")
        } else {
            ("rich", "c1")
        };
        {
            let mut o = pinch_proto::open::open_writer(
                &main_dir.join("out/outbound.db"),
                Duration::from_secs(5),
            )
            .unwrap();
            let in_max: i64 = inbound(&main_dir)
                .query_row("SELECT coalesce(max(seq), 0) FROM messages_in", [], |r| {
                    r.get(0)
                })
                .unwrap();
            let tx = pinch_proto::open::write_tx(&mut o).unwrap();
            let row = pinch_proto::rows::NewOutbound {
                id: id.clone(),
                timestamp: pinch_proto::time::now(),
                kind: "chat".into(),
                channel_type: Some(channel_type.into()),
                platform_id: Some(platform_id.into()),
                content: serde_json::json!({"text": format!("race {i}"), "files": (0..FILES).map(|k| format!("report-{k}.txt")).collect::<Vec<_>>()}).to_string(),
                ..Default::default()
            };
            pinch_proto::rows::insert_outbound(&tx, &row, in_max).unwrap();
            tx.commit().unwrap();
        }
        wait_for(
            &format!("the host's verdict on {id}"),
            Duration::from_secs(60),
            || verdict(&id).is_some_and(|(s, _)| s == "delivered" || s == "failed"),
        );
        if to_agent {
            a2a_rows.push(id)
        } else {
            channel_rows.push(id)
        }
    }
    std::fs::write(outbox.join(".turn.tmp"), ROWS.to_string()).unwrap();
    std::fs::rename(outbox.join(".turn.tmp"), outbox.join("turn")).unwrap();
    let done = rt
        .block_on(rich.wait_for(Duration::from_secs(60), |s| {
            s.text().starts_with("racer said:")
        }))
        .expect("the racer's report");
    eprintln!("{}", done.text());
    assert!(
        done.text().contains("racer done: swaps="),
        "{}",
        done.text()
    );

    // The channel: every raced row went out, with the benign file or with
    // a note naming why it was not sent — never the secret.
    let sent = rich.sent();
    let mut leaks = Vec::new();
    let mut untold = Vec::new();
    let (mut with_file, mut refused_files) = (0, 0);
    for id in &channel_rows {
        let Some(Sent::Message { msg, files, .. }) = sent
            .iter()
            .find(|s| matches!(s, Sent::Message { msg, .. } if &msg.id == id))
        else {
            panic!("{id} was not delivered: {:?}", verdict(id));
        };
        for (_, bytes) in files {
            if bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
                leaks.push(format!("{id}: the channel was sent the host's secret"));
            }
        }
        // Each file went out (benign) or is named in a note with the cause.
        let notes = msg.text.matches("not sent:").count();
        let linked = msg
            .text
            .lines()
            .filter(|l| l.starts_with("[file report-") && l.contains("symlink"))
            .count();
        if files.len() + notes != FILES || linked != notes {
            untold.push(format!("{id}: {} files and {}", files.len(), msg.text));
        }
        if notes > 0 {
            refused_files += 1;
        }
        let n = id.trim_start_matches("race-");
        assert!(files
            .iter()
            .all(|(_, b)| b == format!("benign {n}\n").as_bytes()
                || b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())));
        with_file += files.len();
    }
    // The other agent: a delivered row carries the benign file, a refused
    // one failed with the reason.
    let helper_root = cfg.data_dir.join("sessions/helper");
    for p in walk(&helper_root) {
        if p.is_file() && !p.to_string_lossy().contains(".db") {
            let bytes = std::fs::read(&p).unwrap_or_default();
            if bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
                leaks.push(format!(
                    "the secret was copied into the helper's {}",
                    p.display()
                ));
            }
        }
    }
    let (mut a2a_delivered, mut a2a_refused) = (0, 0);
    for id in &a2a_rows {
        match verdict(id) {
            Some((s, _)) if s == "delivered" => a2a_delivered += 1,
            Some((_, e)) => {
                if !e
                    .as_deref()
                    .is_some_and(|e| e.contains("report-") && e.contains("symlink"))
                {
                    untold.push(format!("{id}: {e:?}"));
                }
                a2a_refused += 1;
            }
            None => unreachable!(),
        }
    }
    eprintln!(
        "{ROWS} raced rows of {FILES} files: channel {with_file} files sent, {refused_files} rows with files refused; agent {a2a_delivered} rows delivered, {a2a_refused} refused; {} leaks",
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{} copies of the host's secret left the host ({ROWS} raced rows of {FILES} files):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    assert!(
        untold.is_empty(),
        "refusals that do not name the link:\n{}",
        untold.join("\n")
    );
    // The race was run: some rows met the link (otherwise this proves nothing).
    assert!(
        refused_files + a2a_refused > 0,
        "no row ever met the swapped link: the race did not happen"
    );
    // The agent is told about every refusal (files not sent, rows failed).
    wait_for(
        "the agent to be told of every refusal",
        Duration::from_secs(30),
        || {
            let c = inbound(&main_dir);
            let files: i64 = c.query_row("SELECT count(*) FROM messages_in WHERE id LIKE 'files-not-sent:race-%' AND content LIKE '%symlink%'", [], |r| r.get(0)).unwrap();
            let rows: i64 = c.query_row("SELECT count(*) FROM messages_in WHERE id LIKE 'deliver-failed:race-%' AND content LIKE '%symlink%'", [], |r| r.get(0)).unwrap();
            files == refused_files as i64 && rows == a2a_refused as i64
        },
    );
    rt.block_on(host.shutdown()).unwrap();
}
