//! Long-term memory (issue 17): an SQLite FTS5 index of an agent group's
//! past turns and its `MEMORY.md` notes, in `<workspace>/.pinch/memory.db`
//! — the group's own folder, so a group searches only its own history,
//! every session of the group shares it, and `/clear` leaves it alone.
//!
//! The runner attaches it to its `outbound.db` connection as `memory`, so
//! a turn's rows are indexed in the same transaction as the conversation
//! rows (SQLite commits attached DBs atomically with a super-journal).
//! Only the runner reads or writes it; the host never opens it.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::ProtoError;

/// The file, under the agent's workspace.
pub const MEMORY_DB: &str = ".pinch/memory.db";

const SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS memory.memory USING fts5(
  text, role UNINDEXED, at UNINDEXED, session_id UNINDEXED, source UNINDEXED,
  tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS memory.memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Attaches the group's memory file to `conn` as `memory` (creating it and
/// its tables), refusing a file that is not a regular one.
pub fn attach(conn: &Connection, path: &Path) -> Result<(), ProtoError> {
    crate::open::ensure_regular(path)?;
    let p = path.to_string_lossy();
    conn.execute("ATTACH DATABASE ?1 AS memory", [p.as_ref()])
        .map_err(ProtoError::sqlite("attaching the memory index"))?;
    let r = conn
        .pragma_update(Some("memory"), "journal_mode", "DELETE")
        .and_then(|_| conn.pragma_update(Some("memory"), "synchronous", "FULL"))
        .and_then(|_| conn.execute_batch(SCHEMA));
    if let Err(e) = r {
        let _ = conn.execute("DETACH DATABASE memory", []);
        return Err(ProtoError::sqlite("preparing the memory index")(e));
    }
    Ok(())
}

/// Whether `conn` has the memory index attached.
pub fn attached(conn: &Connection) -> bool {
    conn.query_row(
        "SELECT 1 FROM pragma_database_list WHERE name = 'memory'",
        [],
        |_| Ok(()),
    )
    .optional()
    .ok()
    .flatten()
    .is_some()
}

pub fn detach(conn: &Connection) {
    let _ = conn.execute("DETACH DATABASE memory", []);
}

/// Indexes one entry (a turn's `user` or `assistant` text, or a `note`).
pub fn index(
    tx: &Transaction<'_>,
    session_id: &str,
    source: &str,
    role: &str,
    at: &str,
    text: &str,
) -> Result<(), ProtoError> {
    tx.execute(
        "INSERT INTO memory.memory (text, role, at, session_id, source) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![text, role, at, session_id, source],
    )
    .map_err(ProtoError::sqlite("indexing memory"))?;
    Ok(())
}

/// How many entries a session has in the index.
pub fn count_session(conn: &Connection, session_id: &str) -> Result<i64, ProtoError> {
    conn.query_row(
        "SELECT count(*) FROM memory.memory WHERE session_id = ?1",
        [session_id],
        |r| r.get(0),
    )
    .map_err(ProtoError::sqlite("reading the memory index"))
}

/// Every `user` and `assistant` row of this session's conversations, for
/// indexing a session that has none yet (turns from before memory existed).
pub fn unindexed_turns(conn: &Connection) -> Result<Vec<(String, String, String)>, ProtoError> {
    let mut s = conn
        .prepare("SELECT role, content, created_at FROM conversation WHERE role IN ('user', 'assistant') ORDER BY continuation, idx")
        .map_err(ProtoError::sqlite("reading the conversation"))?;
    let rows = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(ProtoError::sqlite("reading the conversation"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("reading the conversation"))?;
    Ok(rows)
}

/// Replaces the indexed notes with `notes` (one entry per paragraph) when
/// `hash` differs from the one recorded; returns whether it did.
pub fn sync_notes(
    tx: &Transaction<'_>,
    hash: &str,
    notes: &[&str],
    at: &str,
) -> Result<bool, ProtoError> {
    let err = ProtoError::sqlite("indexing the notes");
    let seen: Option<String> = tx
        .query_row(
            "SELECT value FROM memory.memory_meta WHERE key = 'notes_hash'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(ProtoError::sqlite("indexing the notes"))?;
    if seen.as_deref() == Some(hash) {
        return Ok(false);
    }
    tx.execute("DELETE FROM memory.memory WHERE source = 'note'", [])
        .map_err(ProtoError::sqlite("indexing the notes"))?;
    for n in notes {
        tx.execute(
            "INSERT INTO memory.memory (text, role, at, session_id, source) VALUES (?1, 'note', ?2, '', 'note')",
            params![n, at],
        )
        .map_err(ProtoError::sqlite("indexing the notes"))?;
    }
    tx.execute(
        "INSERT INTO memory.memory_meta (key, value) VALUES ('notes_hash', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [hash],
    )
    .map_err(err)?;
    Ok(true)
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub role: String,
    pub at: String,
    pub session_id: String,
    pub source: String,
    pub snippet: String,
}

/// The FTS5 query for what a person typed: its words, each quoted (so no
/// word is read as an operator), any of them matching; bm25 ranks the
/// entries with more and rarer words first. `None` when it has no words.
pub fn fts_query(q: &str) -> Option<String> {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{}\"", w.to_lowercase()))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

/// The best `limit` entries for `q`, best first, with a snippet around the
/// matched words.
pub fn search(conn: &Connection, q: &str, limit: usize) -> Result<Vec<Hit>, ProtoError> {
    let Some(query) = fts_query(q) else {
        return Ok(Vec::new());
    };
    let mut s = conn
        .prepare_cached(
            "SELECT role, at, session_id, source, snippet(memory, 0, '«', '»', '…', 24)
             FROM memory.memory WHERE memory MATCH ?1 ORDER BY rank LIMIT ?2",
        )
        .map_err(ProtoError::sqlite("searching memory"))?;
    let hits = s
        .query_map(params![query, limit as i64], |r| {
            Ok(Hit {
                role: r.get(0)?,
                at: r.get(1)?,
                session_id: r.get(2)?,
                source: r.get(3)?,
                snippet: r.get(4)?,
            })
        })
        .map_err(ProtoError::sqlite("searching memory"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProtoError::sqlite("searching memory"))?;
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_words_never_operators() {
        assert_eq!(
            fts_query("landlord's name?").as_deref(),
            Some("\"landlord\" OR \"s\" OR \"name\"")
        );
        assert_eq!(
            fts_query("NOT rent* AND (x)").as_deref(),
            Some("\"not\" OR \"rent\" OR \"and\" OR \"x\"")
        );
        assert_eq!(fts_query("  ?! "), None);
        assert_eq!(
            fts_query("Miete für März").as_deref(),
            Some("\"miete\" OR \"für\" OR \"märz\"")
        );
    }

    #[test]
    fn turns_and_notes_are_found_ranked_with_their_dates() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("outbound.db")).unwrap();
        conn.execute_batch("CREATE TABLE conversation (continuation TEXT, idx INTEGER, role TEXT, content TEXT, created_at TEXT)").unwrap();
        let path = dir.path().join("m/memory.db");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        attach(&conn, &path).unwrap();
        assert!(attached(&conn));
        let tx = conn.transaction().unwrap();
        index(
            &tx,
            "s1",
            "turn",
            "user",
            "2026-11-02T10:00:00.000Z",
            "My landlord is called Okafor and the rent is due on the third",
        )
        .unwrap();
        index(
            &tx,
            "s1",
            "turn",
            "assistant",
            "2026-11-02T10:00:01.000Z",
            "Noted.",
        )
        .unwrap();
        index(
            &tx,
            "s2",
            "turn",
            "user",
            "2026-11-20T10:00:00.000Z",
            "The plumber comes on Friday",
        )
        .unwrap();
        assert!(sync_notes(
            &tx,
            "h1",
            &["- 2026-11-03: rent goes up in January"],
            "2026-11-03T00:00:00.000Z"
        )
        .unwrap());
        assert!(
            !sync_notes(&tx, "h1", &["ignored"], "x").unwrap(),
            "same hash, no work"
        );
        tx.commit().unwrap();
        let hits = search(&conn, "what did I say about my landlord?", 5).unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].session_id, "s1");
        assert_eq!(hits[0].at, "2026-11-02T10:00:00.000Z");
        assert!(
            hits[0].snippet.contains("«landlord»"),
            "{}",
            hits[0].snippet
        );
        let hits = search(&conn, "rent", 5).unwrap();
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert!(hits.iter().any(|h| h.source == "note"));
        // Stemming: "plumbers" finds "plumber".
        assert_eq!(search(&conn, "plumbers", 5).unwrap().len(), 1);
        assert_eq!(count_session(&conn, "s1").unwrap(), 2);
        // The notes change: the old ones go.
        let tx = conn.transaction().unwrap();
        assert!(sync_notes(&tx, "h2", &["- the car is blue"], "x").unwrap());
        tx.commit().unwrap();
        assert_eq!(search(&conn, "January", 5).unwrap().len(), 0);
        assert_eq!(search(&conn, "car", 5).unwrap()[0].source, "note");
    }
}
