//! Lesson 5/6: a writer killed mid-transaction leaves a hot journal in its
//! directory. A read-only opener cannot roll it back (upstream's host got
//! BUSY for hours); `recovery_open` (read-write open, trivial read, close)
//! rolls it back, after which fresh read-only readers work and the file is
//! intact without the torn transaction.
#![allow(clippy::disallowed_methods)] // tests run the pinch binary and tools directly

use std::process::Command;
use std::time::Duration;

use pinch_proto::open::{open_reader, open_writer, recovery_open, write_tx};
use pinch_proto::rows::{insert_outbound, NewOutbound};
use pinch_proto::schema::migrate_outbound;

const BUSY: Duration = Duration::from_secs(2);

fn row(i: usize) -> NewOutbound {
    NewOutbound {
        id: format!("o{i}"),
        timestamp: pinch_proto::time::now(),
        kind: "chat".into(),
        content: format!("{{\"text\":\"{}\"}}", "x".repeat(2000)),
        ..Default::default()
    }
}

/// The child: commits 10 rows, then dies (abort, like SIGKILL) in the middle
/// of a big second transaction.
#[test]
fn hot_journal_child() {
    let Ok(path) = std::env::var("PINCH_HOT_JOURNAL_DB") else {
        return;
    };
    let mut c = open_writer(path.as_ref(), BUSY).unwrap();
    migrate_outbound(&c).unwrap();
    let tx = write_tx(&mut c).unwrap();
    for i in 0..10 {
        insert_outbound(&tx, &row(i), 0).unwrap();
    }
    tx.commit().unwrap();
    let tx = write_tx(&mut c).unwrap();
    for i in 10..2000 {
        insert_outbound(&tx, &row(i), 0).unwrap();
    }
    // Force pages out so the database file itself is modified mid-transaction.
    tx.execute_batch("PRAGMA cache_size = 1").unwrap();
    for i in 2000..2100 {
        insert_outbound(&tx, &row(i), 0).unwrap();
    }
    std::process::abort();
}

#[test]
fn writer_killed_mid_transaction_is_rolled_back_by_recovery_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbound.db");
    let st = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hot_journal_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PINCH_HOT_JOURNAL_DB", &db)
        .status()
        .unwrap();
    assert!(!st.success(), "the child must die mid-transaction");
    let journal = dir.path().join("outbound.db-journal");
    assert!(journal.exists(), "a hot journal was left behind");
    // A read-only reader cannot use the file while the journal is hot.
    let r = open_reader(&db, BUSY).unwrap();
    let err = r
        .query_row("SELECT count(*) FROM messages_out", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert!(
        !pinch_proto::is_corruption(&err),
        "a hot journal is not corruption: {err}"
    );
    drop(r);
    recovery_open(&db, BUSY).unwrap();
    assert!(
        !journal.exists() || std::fs::metadata(&journal).unwrap().len() == 0,
        "rolled back"
    );
    let r = open_reader(&db, BUSY).unwrap();
    let n: i64 = r
        .query_row("SELECT count(*) FROM messages_out", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        n, 10,
        "the committed rows survive, the torn transaction is gone"
    );
    let ok: String = r.query_row("PRAGMA quick_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}
