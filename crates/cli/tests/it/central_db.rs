//! The central DB `pinch.db` lost or damaged (issue 15): the host refuses to
//! boot as a fresh install beside old session folders, its errors name the
//! file and SQLite's words, and `pinch admin repair` / `restore` bring the
//! old sessions back so a pending message is answered. Real hosts, real
//! files, the real `pinch` binary for the offline commands.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
use pinch_host::sandbox::Choice;

/// A host that answered one message and stopped cleanly; returns the
/// session id it made.
fn used_data_dir(tmp: &Path) -> String {
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp, any_sandbox())))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("hello before the loss").len(), 1);
    let s = rt.block_on(host.sessions()).remove(0);
    drop(c);
    rt.block_on(host.shutdown()).unwrap();
    s.id
}

fn start_err(tmp: &Path) -> String {
    let rt = rt();
    match rt.block_on(pinch_host::start(host_config(tmp, any_sandbox()))) {
        Ok(h) => {
            let sessions = rt.block_on(h.sessions()).len();
            rt.block_on(h.shutdown()).unwrap();
            panic!("the host booted ({sessions} sessions) instead of refusing")
        }
        Err(e) => format!("{e:#}"),
    }
}

fn damage(db: &Path, how: &str) {
    let len = std::fs::metadata(db).unwrap().len();
    match how {
        "deleted" => std::fs::remove_file(db).unwrap(),
        "truncated to 0 bytes" => std::fs::File::create(db).map(drop).unwrap(),
        "truncated mid-file" => std::fs::OpenOptions::new()
            .write(true)
            .open(db)
            .unwrap()
            .set_len(len / 2)
            .unwrap(),
        "corrupt header" => {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
            f.write_all_at(b"this is not sqlite", 0).unwrap();
        }
        "corrupt middle pages" => {
            // The pages of the `sessions` table: the schema still reads, so
            // only a check finds the damage.
            let (page, size): (i64, i64) = {
                let c = pinch_proto::rusqlite::Connection::open(db).unwrap();
                let size = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
                let page = c
                    .query_row(
                        "SELECT rootpage FROM sqlite_master WHERE name = 'sessions'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                (page, size)
            };
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
            f.write_all_at(&vec![0xA5u8; size as usize], ((page - 1) * size) as u64)
                .unwrap();
            let _ = len;
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_lost_or_damaged_central_db_beside_sessions_is_refused_naming_file_and_fix() {
    for how in [
        "deleted",
        "truncated to 0 bytes",
        "truncated mid-file",
        "corrupt header",
        "corrupt middle pages",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let sid = used_data_dir(tmp.path());
        let data = tmp.path().join("data");
        let db = data.join("pinch.db");
        assert!(
            !db.with_extension("db-wal").exists()
                || std::fs::metadata(db.with_extension("db-wal"))
                    .unwrap()
                    .len()
                    == 0,
            "a clean stop leaves everything in the main file"
        );
        damage(&db, how);
        let err = start_err(tmp.path());
        eprintln!("{how}: {err}");
        assert!(
            err.contains(&db.display().to_string()),
            "{how}: names the file: {err}"
        );
        assert!(
            err.contains("admin repair") && err.contains("admin restore"),
            "{how}: names both recoveries: {err}"
        );
        // The clean stop made a backup; the message names it.
        assert!(err.contains("backups/pinch.db."), "{how}: {err}");
        assert!(!err.contains("free space"), "{how}: wrong cause: {err}");
        if how.starts_with("corrupt") || how == "truncated mid-file" {
            assert!(err.contains("SQLite"), "{how}: quotes SQLite: {err}");
        }
        // The old session is untouched and no fresh `main` was made over it.
        assert!(data.join("sessions/main").join(&sid).is_dir());
        if how == "deleted" {
            assert!(!db.exists(), "refusing creates no new pinch.db");
        }
        // Refusing is not an unclean boot: no breaker entry.
        assert!(!data.join("run/circuit-breaker.json").exists(), "{how}");
    }
}

fn pinch_admin(data: &Path, args: &[&str]) -> std::process::Output {
    std::fs::write(data.with_extension("toml"), "").unwrap();
    Command::new(PINCH)
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("PINCH_CONFIG", data.with_extension("toml"))
        // The owner the test hosts run as (`host_config`).
        .env("USER", "tester")
        .output()
        .unwrap()
}

/// A message the host had accepted when it stopped, not yet answered.
fn leave_pending(data: &Path, sid: &str, text: &str) {
    let dir = pinch_host::paths::DataDir::new(data).session("main", sid);
    pinch_host::session::write_inbound(
        &dir,
        &[pinch_proto::rows::NewInbound {
            id: "pending-1".into(),
            kind: "chat".into(),
            timestamp: pinch_proto::time::now(),
            trigger: true,
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            content: serde_json::json!({"text": text, "sender": "tester"}).to_string(),
            ..Default::default()
        }],
        pinch_proto::seq::other_max(&dir.outbound_db(), "messages_out"),
    )
    .unwrap();
}

/// Starts a host and waits for the reply to the pending message.
fn pending_is_answered(tmp: &Path, sid: &str, text: &str) {
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_config(tmp, any_sandbox())))
        .unwrap();
    let ids: Vec<String> = rt
        .block_on(host.sessions())
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![sid.to_owned()], "the old session is back");
    let mut c = Client::connect(&host.cli_socket);
    let reply = loop {
        match c.recv().expect("host closed") {
            ServerMsg::Message { id, text: t, .. } => {
                c.send(&ClientMsg::Ack { id });
                if t.contains(text) {
                    break t;
                }
            }
            _ => continue,
        }
    };
    eprintln!("reply: {reply}");
    // And the conversation goes on in the same session.
    assert_eq!(c.ask("after the repair").len(), 1);
    let ids: Vec<String> = rt
        .block_on(host.sessions())
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec![sid.to_owned()]);
    drop(c);
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn repair_rebuilds_the_sessions_and_a_pending_message_is_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let sid = used_data_dir(tmp.path());
    let data = tmp.path().join("data");
    leave_pending(&data, &sid, "pending across the loss");
    std::fs::remove_file(data.join("pinch.db")).unwrap();
    let err = start_err(tmp.path());
    assert!(err.contains("is missing"), "{err}");
    // The daemon says the same and exits non-zero.
    std::fs::write(data.with_extension("toml"), "").unwrap();
    let out = Command::new(PINCH)
        .args([
            "host",
            "--sandbox",
            "process",
            "--provider",
            "scripted",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--config")
        .arg(data.with_extension("toml"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("pinch.db is missing") && e.contains("admin repair"),
        "{e}"
    );
    assert!(!data.join("pinch.db").exists());

    // Refused while a host holds the lock.
    {
        let _lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data.join("run/host.lock"))
            .unwrap();
        use std::os::unix::io::AsRawFd;
        assert_eq!(
            unsafe { libc::flock(_lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let out = pinch_admin(&data, &["repair"]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(
            e.contains("host stopped") && e.contains("already running"),
            "{e}"
        );
    }

    let out = pinch_admin(&data, &["repair"]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{so}");
    assert!(so.contains(&format!("session {sid} of main")), "{so}");
    pending_is_answered(tmp.path(), &sid, "pending across the loss");
}

#[test]
fn repair_keeps_the_damaged_file_aside_and_restore_puts_a_backup_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let sid = used_data_dir(tmp.path());
    let data = tmp.path().join("data");
    let backups: Vec<_> = std::fs::read_dir(data.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(backups.len(), 1, "a clean stop backs up pinch.db");
    leave_pending(&data, &sid, "pending across the restore");
    damage(&data.join("pinch.db"), "corrupt header");
    let damaged = std::fs::read(data.join("pinch.db")).unwrap();

    let out = pinch_admin(&data, &["restore"]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("restored the central DB from"), "{so}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pinch.db.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        damaged,
        "kept, never deleted"
    );
    pending_is_answered(tmp.path(), &sid, "pending across the restore");
}

#[test]
fn backups_roll_on_a_timer_and_a_restored_one_passes_integrity_check() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut cfg = host_config(tmp.path(), Choice::Process);
    cfg.backup_every = Duration::from_millis(200);
    cfg.backup_keep = 3;
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let dir = tmp.path().join("data/backups");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut first = None;
    wait_for("backups to roll over", Duration::from_secs(30), || {
        let n = names();
        if first.is_none() {
            first = n.first().cloned();
        }
        n.len() == 3 && first.as_ref().is_some_and(|f| !n.contains(f))
    });
    rt.block_on(host.shutdown()).unwrap();
    let newest = dir.join(names().pop().unwrap());
    pinch_host::backup::verify(&newest).unwrap();
    let c = pinch_proto::rusqlite::Connection::open(&newest).unwrap();
    let bootstrapped: i64 = c
        .query_row(
            "SELECT count(*) FROM meta WHERE key = 'bootstrapped'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bootstrapped, 1);
}
