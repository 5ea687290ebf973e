//! Issue 15, breaks 3 and 4: a session's own files gone, swapped or
//! damaged on disk. The host notices, says so once, never sends an old
//! reply again (its delivery ledger lives outside the session files), and
//! the session answers the next message. Real host, real runners, real
//! SQLite files with real damage.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use pinch_channels::fake::Sent;
use pinch_channels::AckOutcome;

const WAIT: Duration = Duration::from_secs(40);

fn reply_to(text: &str) -> impl Fn(&Sent) -> bool + '_ {
    move |s| matches!(s, Sent::Message { msg, .. } if msg.text.contains(text))
}

fn notice(words: &str) -> impl Fn(&Sent) -> bool + '_ {
    move |s| matches!(s, Sent::Notice { text, .. } if text.contains(words))
}

/// The one session folder of `main`.
fn session_dir(data: &std::path::Path) -> PathBuf {
    let main = data.join("sessions").join("main");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&main)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

struct Run {
    rt: tokio::runtime::Runtime,
    host: Option<pinch_host::HostHandle>,
    chat: std::sync::Arc<pinch_channels::fake::FakeChannel>,
}

impl Run {
    fn start(tmp: &std::path::Path) -> Run {
        Run::start_with(tmp, |_| {})
    }

    fn start_with(tmp: &std::path::Path, tune: impl FnOnce(&mut pinch_host::HostConfig)) -> Run {
        // PINCH_TEST_LOG=debug shows the host's log while debugging a test.
        if let Ok(f) = std::env::var("PINCH_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(f))
                .with_test_writer()
                .try_init();
        }
        let mut cfg = host_config(tmp, any_sandbox());
        tune(&mut cfg);
        let cell = fake_chat(&mut cfg);
        let rt = rt();
        let host = rt.block_on(pinch_host::start(cfg)).unwrap();
        let chat = cell.get().unwrap().clone();
        Run {
            rt,
            host: Some(host),
            chat,
        }
    }

    fn say(&self, id: &str, text: &str) {
        let out = self.rt.block_on(self.chat.send(fake_chat_msg(id, text)));
        assert!(
            matches!(out, AckOutcome::Stored { routed: 1, .. }),
            "{out:?}"
        );
    }

    fn wait(&self, what: &str, pred: impl Fn(&Sent) -> bool) -> Sent {
        self.rt
            .block_on(self.chat.wait_for(WAIT, pred))
            .unwrap_or_else(|| {
                panic!(
                    "timed out waiting for {what}; sent: {:#?}",
                    self.chat.sent()
                )
            })
    }

    fn count(&self, pred: impl Fn(&Sent) -> bool) -> usize {
        self.chat.sent().iter().filter(|s| pred(s)).count()
    }

    /// Waits for the (echo) reply to `text`.
    fn answered(&self, text: &str) {
        let said = format!("You said: {text}");
        self.wait(&format!("the reply to {text:?}"), reply_to(&said));
    }

    /// The user says `text` (message `id`) and gets its reply.
    fn ask(&self, id: &str, text: &str) {
        self.say(id, text);
        self.answered(text);
    }

    /// The first question answered; returns the session's folder.
    fn first_question_answered(&self, data: &std::path::Path) -> PathBuf {
        self.ask("m1", "first question");
        session_dir(data)
    }

    /// How many replies to `text` went out.
    fn replies_to(&self, text: &str) -> usize {
        self.count(reply_to(&format!("You said: {text}")))
    }

    /// The reply to `text` was never sent (again) on this run.
    fn assert_not_resent(&self, text: &str) {
        assert_eq!(
            self.replies_to(text),
            0,
            "the old reply was sent again: {:#?}",
            self.chat.sent()
        );
    }

    /// Exactly `n` notices with `words` went out on this run.
    fn assert_notices(&self, words: &str, n: usize) {
        assert_eq!(self.count(notice(words)), n, "{:#?}", self.chat.sent());
    }

    /// Waits until no runner is alive (it went idle).
    fn wait_idle(&self) {
        let host = self.host.as_ref().unwrap();
        wait_for("the runner to go idle", WAIT, || {
            self.rt
                .block_on(host.sessions())
                .iter()
                .all(|s| s.runner_pid.is_none())
        });
    }

    fn stop(mut self) {
        let h = self.host.take().unwrap();
        self.rt.block_on(h.shutdown()).unwrap();
    }
}

/// The host ran once (the first question answered) and stopped; returns
/// the session's folder.
fn answered_once_and_stopped(tmp: &std::path::Path) -> PathBuf {
    let first = Run::start(tmp);
    let dir = first.first_question_answered(&tmp.join("data"));
    first.stop();
    dir
}

/// Told once: a third start answers with no notice about `words` and
/// sends none of the old replies again.
fn a_third_start_is_quiet(tmp: &std::path::Path, words: &str) {
    let third = Run::start(tmp);
    third.ask("m3", "third question");
    third.assert_notices(words, 0);
    third.assert_not_resent("first question");
    third.assert_not_resent("second question");
    third.stop();
}

/// The files in `dir` whose names contain `pattern` (kept aside).
fn kept_aside(dir: &std::path::Path, pattern: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(pattern))
        .collect()
}

/// The notice `told` says `words`.
fn assert_says(told: &Sent, words: &str) {
    assert!(told.text().contains(words), "{}", told.text());
}

/// Deleted while the host is stopped: the next start notices, tells the
/// conversation once, does not send the old reply again, and answers.
#[test]
fn inbound_db_deleted_while_stopped_is_reported_and_no_old_reply_is_resent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = answered_once_and_stopped(tmp.path());
    std::fs::remove_file(dir.join("in/inbound.db")).unwrap();

    let second = Run::start(tmp.path());
    let told = second.wait("the notice", notice("was deleted"));
    assert_says(&told, "inbound.db");
    second.ask("m2", "second question");
    second.assert_not_resent("first question");
    second.assert_notices("was deleted", 1);
    second.stop();
    // Told once: a third start finds the file the host made.
    a_third_start_is_quiet(tmp.path(), "message store");
}

/// Review of issue 15: the delivery ledger itself deleted while the host
/// is stopped. It is not made anew empty (every old reply would go out
/// again): the next start rebuilds it, treating the replies already written
/// as delivered, tells the conversation once, and answers the next message.
#[test]
fn delivered_db_deleted_while_stopped_sends_no_old_reply_and_tells_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = answered_once_and_stopped(tmp.path());
    for f in ["delivered.db", "delivered.db-wal", "delivered.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }

    let second = Run::start(tmp.path());
    let told = second.wait("the notice", notice("delivery record"));
    assert!(
        told.text().contains("delivered.db") && told.text().contains("You said: first question"),
        "{}",
        told.text()
    );
    second.ask("m2", "second question");
    second.assert_not_resent("first question");
    second.assert_notices("delivery record", 1);
    second.stop();
    // Told once: the rebuilt ledger is found as it was left.
    a_third_start_is_quiet(tmp.path(), "delivery record");
}

/// Review of issue 15: a damaged delivery ledger (garbage over the file)
/// is moved aside and rebuilt, the conversation told once; no old reply
/// goes out again and the session answers.
#[test]
fn a_damaged_delivered_db_is_rebuilt_and_no_old_reply_is_resent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = answered_once_and_stopped(tmp.path());
    let _ = std::fs::remove_file(dir.join("delivered.db-wal"));
    let _ = std::fs::remove_file(dir.join("delivered.db-shm"));
    std::fs::write(dir.join("delivered.db"), vec![0xa5u8; 8192]).unwrap();

    let second = Run::start(tmp.path());
    let told = second.wait("the notice", notice("delivery record"));
    assert_says(&told, "damaged");
    let kept = kept_aside(&dir, "delivered.db.corrupt-");
    assert_eq!(kept.len(), 1, "the damaged ledger is kept aside: {kept:?}");
    second.ask("m2", "second question");
    second.assert_not_resent("first question");
    second.assert_notices("delivery record", 1);
    second.stop();
}

/// Deleted while the host runs: the next message notices it, the
/// conversation is told once, and the message is answered.
#[test]
fn inbound_db_deleted_while_running_is_reported_and_the_next_message_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start(tmp.path());
    let dir = run.first_question_answered(&tmp.path().join("data"));
    std::fs::remove_file(dir.join("in/inbound.db")).unwrap();
    run.say("m2", "second question");
    run.wait("the notice", notice("was deleted"));
    run.answered("second question");
    assert_eq!(run.replies_to("first question"), 1);
    run.assert_notices("was deleted", 1);
    run.stop();
}

/// Waits until the host has written everything it will about the answered
/// messages (acks synced back: nothing pending), so no write of its own
/// lands after the damage and undoes it.
fn quiet(dir: &std::path::Path) {
    wait_for("the acks to be synced", WAIT, || {
        pinch_proto::open::open_reader(&dir.join("in/inbound.db"), Duration::from_secs(2))
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM messages_in WHERE status = 'pending'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .ok()
            })
            == Some(0)
    });
}

/// Overwrites one page of a real SQLite file in place with garbage.
fn damage_page(db: &std::path::Path, table: &str) {
    let c = pinch_proto::rusqlite::Connection::open(db).unwrap();
    let (root, page_size): (i64, i64) = (
        c.query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap(),
        c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap(),
    );
    drop(c);
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
        .unwrap();
    f.write_all(&vec![0xa5; page_size as usize]).unwrap();
    f.sync_all().unwrap();
}

/// A real damaged page in the host's own inbound.db: the runner exits 75,
/// the host finds its file corrupt, recovers what it can into a fresh
/// file, keeps the damaged one beside it, tells the conversation once,
/// and the session answers again.
#[test]
fn a_damaged_page_in_inbound_db_is_recovered_reported_and_the_session_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start(tmp.path());
    let dir = run.first_question_answered(&tmp.path().join("data"));
    quiet(&dir);
    damage_page(&dir.join("in/inbound.db"), "messages_in");
    // The next message cannot be written into the damaged file: the host
    // checks it, recovers it, and stores the message in the new one.
    run.say("m2", "second question");
    let told = run.wait("the damage notice", notice("damaged on disk"));
    let kept = kept_aside(&dir.join("in"), "inbound.db.corrupt-");
    assert_eq!(kept.len(), 1, "the damaged file is kept aside: {kept:?}");
    assert_says(&told, &kept[0].to_string_lossy());
    run.answered("second question");
    run.assert_notices("damaged on disk", 1);
    assert_eq!(run.replies_to("first question"), 1);
    run.stop();
}

/// The case: a damaged page the runner's poll reads (the pending
/// index). The runner's streak exits 75; the host checks its own copy,
/// finds it corrupt (not a torn view), recovers it, tells the
/// conversation once, and the next message is answered.
#[test]
fn runner_exit_75_on_a_damaged_host_file_leads_to_recovery_not_a_stall() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start(tmp.path());
    let dir = run.first_question_answered(&tmp.path().join("data"));
    quiet(&dir);
    damage_page(&dir.join("in/inbound.db"), "messages_in_pending");
    let told = run.wait("the damage notice", notice("damaged on disk"));
    assert_says(&told, "inbound.db.corrupt-");
    run.ask("m2", "second question");
    run.assert_notices("damaged on disk", 1);
    assert_eq!(run.replies_to("first question"), 1);
    run.stop();
}

/// No runner alive (it went idle) when the host's file is damaged: the
/// sweep's check for due work fails as corrupt, and that alone leads to the
/// check and the recovery — no message, no runner needed.
#[test]
fn a_damaged_file_with_no_runner_alive_is_found_by_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start_with(tmp.path(), |cfg| {
        cfg.runner.idle_exit_ms = 300;
        cfg.sweep_interval = Duration::from_millis(300);
    });
    let dir = run.first_question_answered(&tmp.path().join("data"));
    quiet(&dir);
    run.wait_idle();
    damage_page(&dir.join("in/inbound.db"), "messages_in_pending");
    let told = run.wait("the damage notice", notice("damaged on disk"));
    assert_says(&told, "inbound.db.corrupt-");
    run.ask("m2", "second question");
    run.assert_notices("damaged on disk", 1);
    run.stop();
}

/// `mkfifo`, as the agent runs it in its own `out/` folder.
fn mkfifo(at: &std::path::Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", at.display());
}

/// The compromised runner moves its `outbound.db` away, puts a FIFO in its
/// place (and one as its journal) and exits. Every open of the FIFO
/// (SQLite opens without O_NONBLOCK) would block the opener for ever:
/// the host's sweep, its exit checks and delivery must refuse it instead.
/// The session fails as the agent's fault and is quarantined with a
/// notice naming the file; the host keeps answering.
#[test]
fn a_fifo_in_place_of_outbound_db_is_refused_and_never_hangs_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start_with(tmp.path(), |cfg| {
        cfg.runner.idle_exit_ms = 300;
        cfg.sweep_interval = Duration::from_millis(300);
        cfg.budget.budget = 2;
        cfg.budget.delays = vec![Duration::ZERO];
    });
    let dir = run.first_question_answered(&tmp.path().join("data"));
    quiet(&dir);
    run.wait_idle();
    let host = run.host.as_ref().unwrap();
    let out = dir.join("out");
    std::fs::rename(out.join("outbound.db"), out.join("moved.db")).unwrap();
    mkfifo(&out.join("outbound.db"));
    run.say("m2", "second question");
    let told = run.wait("the quarantine notice", notice("unavailable"));
    assert_says(&told, "outbound.db is a FIFO");
    // The main loop still answers.
    assert!(!run.rt.block_on(host.sessions()).is_empty());
    // A FIFO journal beside a regular file is refused the same way.
    std::fs::remove_file(out.join("outbound.db")).unwrap();
    std::fs::rename(out.join("moved.db"), out.join("outbound.db")).unwrap();
    mkfifo(&out.join("outbound.db-journal"));
    run.say("m3", "third question");
    wait_for("a second quarantine notice", WAIT, || {
        run.count(notice("outbound.db-journal is a FIFO")) >= 1
    });
    assert!(!run.rt.block_on(host.sessions()).is_empty());
    run.stop();
}

/// The agent fills its `outbound.db` (a history table, which the host
/// copies on recovery) with many rows and damages a page among them; its
/// runner dies. The host's check and row-by-row recovery of that file runs
/// off the main loop: while it runs, the host answers (its admin view),
/// and afterwards the damage is reported once and the file rebuilt.
#[test]
fn the_recovery_of_a_large_damaged_outbound_db_does_not_block_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::start_with(tmp.path(), |cfg| {
        cfg.runner.idle_exit_ms = 600_000;
    });
    let dir = run.first_question_answered(&tmp.path().join("data"));
    quiet(&dir);
    let out = dir.join("out/outbound.db");
    {
        let mut c = pinch_proto::open::open_writer(&out, Duration::from_secs(5)).unwrap();
        let tx = pinch_proto::open::write_tx(&mut c).unwrap();
        {
            let mut st = tx
                .prepare("INSERT INTO conversation (continuation, idx, role, content, created_at) VALUES ('flood', ?1, 'user', ?2, 'x')")
                .unwrap();
            for i in 0..400_000i64 {
                st.execute(pinch_proto::rusqlite::params![i, format!("flood-{i:06}-")])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    // A page in the middle of the flood, overwritten with garbage.
    {
        let mut bytes = std::fs::read(&out).unwrap();
        let at = bytes
            .windows(13)
            .position(|w| w == b"flood-200000-")
            .expect("the row on disk");
        let page = at / 4096;
        bytes[page * 4096..(page + 1) * 4096].fill(0xa5);
        std::fs::write(&out, &bytes).unwrap();
    }
    let host = run.host.as_ref().unwrap();
    let pid = run.rt.block_on(host.sessions())[0]
        .runner_pid
        .expect("a live runner");
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let building = || {
        std::fs::read_dir(dir.join("out"))
            .unwrap()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".outbound.db.new-")
            })
    };
    wait_for("the recovery to start", WAIT, building);
    // The main loop answers while the recovery is still building the file.
    let sessions = run.rt.block_on(host.sessions());
    assert_eq!(sessions.len(), 1);
    assert!(building(), "the host answered only after the recovery");
    let told = run.wait("the damage notice", notice("reply store"));
    assert_says(&told, "outbound.db.corrupt-");
    run.assert_notices("reply store", 1);
    // Only the rows on the damaged page are lost.
    let kept: i64 = pinch_proto::open::open_reader(&out, Duration::from_secs(5))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM conversation WHERE continuation = 'flood'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((399_000..400_000).contains(&kept), "{kept} rows recovered");
    run.ask("m2", "second question");
    run.stop();
}

/// A real index of the host's `inbound.db` whose keys no longer match its
/// table (same number of entries: `quick_check` says ok). The host
/// stopped before it had synced the runner's last "completed": after the
/// next start, that update fails "malformed" on the index. The host runs
/// the full `integrity_check`, finds the damage, rebuilds the file
/// (indexes with it), tells the conversation once, and the session
/// answers; before, every pass failed and nobody was told.
#[test]
fn a_damaged_index_in_inbound_db_is_found_recovered_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Run::start(tmp.path());
    let dir = first.first_question_answered(&tmp.path().join("data"));
    quiet(&dir);
    first.stop();

    let db = dir.join("in/inbound.db");
    {
        use pinch_proto::rusqlite::Connection;
        // The runner's "completed" not yet synced back.
        Connection::open(&db)
            .unwrap()
            .execute("UPDATE messages_in SET status = 'pending'", [])
            .unwrap();
        Connection::open(dir.join("out/outbound.db"))
            .unwrap()
            .execute(
                "INSERT OR REPLACE INTO processing_ack (message_id, status, runner_id, status_changed) \
                 VALUES ('m1:main', 'completed', 'r-old', strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                [],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let set_sql = |sql: &str| {
            let c = Connection::open(&db).unwrap();
            c.execute_batch("PRAGMA writable_schema = ON").unwrap();
            c.execute(
                "UPDATE sqlite_master SET sql = ?1 WHERE name = 'messages_in_pending'",
                [sql],
            )
            .unwrap();
        };
        set_sql("CREATE INDEX messages_in_pending ON messages_in(status || 'x', seq)");
        Connection::open(&db)
            .unwrap()
            .execute_batch("REINDEX messages_in_pending")
            .unwrap();
        set_sql("CREATE INDEX messages_in_pending ON messages_in(status, seq)");
        let ok: String = Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "the damage passes quick_check");
    }

    let second = Run::start(tmp.path());
    second.say("m2", "second question");
    let told = second.wait("the damage notice", notice("damaged on disk"));
    assert_says(&told, "integrity_check");
    assert_says(&told, "inbound.db.corrupt-");
    second.answered("second question");
    second.assert_notices("damaged on disk", 1);
    second.assert_not_resent("first question");
    second.stop();
}
