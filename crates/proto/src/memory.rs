//! Long-term memory (issue 17): an SQLite FTS5 index of an agent group's
//! past turns and its `MEMORY.md` notes, in `<workspace>/.pinch/memory.db`
//! — the group's own folder, so a group searches only its own history,
//! every session of the group shares it, and `/clear` leaves it alone.
//!
//! The runner holds its own connection to it and, after each turn's
//! commit, indexes the conversation rows beyond the session's high-water
//! mark (`memory_meta` `turns:<session>`, a `conversation` rowid): nothing
//! said is left out (a crash between the two commits is caught up by the
//! next runner), and the turn's own commit never waits for, or fails
//! because of, the memory file, nor for another session's runner writing
//! it (decision 0043). Only the runner reads or writes it; the host never
//! opens it.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::ProtoError;

/// The file, under the agent's workspace.
pub const MEMORY_DB: &str = ".pinch/memory.db";

const SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS memory USING fts5(
  text, role UNINDEXED, at UNINDEXED, session_id UNINDEXED, source UNINDEXED,
  tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS memory_vocab USING fts5vocab(memory, row);
";

/// Opens the group's memory file (creating it and its tables) with the
/// session DBs' settings (`journal_mode=DELETE`, `synchronous=FULL`, a
/// busy timeout), refusing a file that is not a regular one.
pub fn open(path: &Path, busy: std::time::Duration) -> Result<Connection, ProtoError> {
    let conn = crate::open::open_writer(path, busy)?;
    // The file is in the agent's folder: its schema (triggers, views) is
    // not trusted to run functions with side effects.
    conn.pragma_update(None, "trusted_schema", false)
        .map_err(ProtoError::sqlite("preparing the memory index"))?;
    conn.execute_batch(SCHEMA)
        .map_err(ProtoError::sqlite("preparing the memory index"))?;
    Ok(conn)
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
        "INSERT INTO memory (text, role, at, session_id, source) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![text, role, at, session_id, source],
    )
    .map_err(ProtoError::sqlite("indexing memory"))?;
    Ok(())
}

/// Indexes this session's `user` and `assistant` conversation rows (read
/// from `out`, its `outbound.db`) that are past its high-water mark, in one
/// transaction on the memory file; returns how many entries it added. Rows are read in rowid order,
/// at most `batch` at a time (a call catches up that many).
pub fn catch_up(
    out: &Connection,
    mem: &mut Connection,
    session_id: &str,
    batch: usize,
) -> Result<usize, ProtoError> {
    let key = format!("turns:{session_id}");
    let tx = crate::open::write_tx(mem)?;
    let mark: i64 = tx
        .query_row(
            "SELECT value FROM memory_meta WHERE key = ?1",
            [&key],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(ProtoError::sqlite("indexing memory"))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rows: Vec<(i64, String, String, String)> = {
        let mut s = out
            .prepare_cached(
                "SELECT rowid, role, content, created_at FROM conversation
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )
            .map_err(ProtoError::sqlite("reading the conversation"))?;
        let rows = s
            .query_map(params![mark, batch as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(ProtoError::sqlite("reading the conversation"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ProtoError::sqlite("reading the conversation"))?;
        rows
    };
    let Some(last) = rows.last().map(|r| r.0) else {
        return Ok(0);
    };
    let mut added = 0;
    for (_, role, text, at) in rows.iter().filter(|r| r.1 == "user" || r.1 == "assistant") {
        index(&tx, session_id, "turn", role, at, text)?;
        added += 1;
    }
    tx.execute(
        "INSERT INTO memory_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, last.to_string()],
    )
    .map_err(ProtoError::sqlite("indexing memory"))?;
    tx.commit().map_err(ProtoError::sqlite("indexing memory"))?;
    Ok(added)
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
            "SELECT value FROM memory_meta WHERE key = 'notes_hash'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(ProtoError::sqlite("indexing the notes"))?;
    if seen.as_deref() == Some(hash) {
        return Ok(false);
    }
    tx.execute("DELETE FROM memory WHERE source = 'note'", [])
        .map_err(ProtoError::sqlite("indexing the notes"))?;
    for n in notes {
        tx.execute(
            "INSERT INTO memory (text, role, at, session_id, source) VALUES (?1, 'note', ?2, '', 'note')",
            params![n, at],
        )
        .map_err(ProtoError::sqlite("indexing the notes"))?;
    }
    tx.execute(
        "INSERT INTO memory_meta (key, value) VALUES ('notes_hash', ?1)
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

/// The words of what a person typed, lowercased, each quoted for FTS5 (so
/// no word is read as an operator); at most 32.
fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{}\"", w.to_lowercase()))
        .collect()
}

/// The FTS5 queries for what a person typed: first every word (entries
/// holding all of them), then any word, ranked by bm25 (more and rarer
/// words first). `None` when it has no words.
pub fn fts_queries(q: &str) -> Option<(String, String)> {
    let w = words(q);
    (!w.is_empty()).then(|| (w.join(" "), w.join(" OR ")))
}

/// The best `limit` entries for `q`, best first, with a snippet around the
/// matched words: entries with every word, then (when those are fewer than
/// `limit`) entries with some of them. Searching all words first keeps a
/// query with common words fast: the OR query ranks every entry holding
/// any word.
pub fn search(conn: &Connection, q: &str, limit: usize) -> Result<Vec<Hit>, ProtoError> {
    let w = telling_words(conn, words(q))?;
    if w.is_empty() {
        return Ok(Vec::new());
    }
    let (all, any) = (w.join(" "), w.join(" OR "));
    let mut hits = query(conn, &all, limit)?;
    if hits.len() < limit && any != all {
        for (id, h) in query(conn, &any, limit)? {
            if hits.len() < limit && !hits.iter().any(|(seen, _)| *seen == id) {
                hits.push((id, h));
            }
        }
    }
    Ok(hits.into_iter().map(|(_, h)| h).collect())
}

/// Words held by more than this share of the entries say little and make
/// the any-word query rank most of the index ("the", "my", "what").
const COMMON: f64 = 0.05;

/// The words worth searching for: those in at most [`COMMON`] of the
/// entries (the index's own counts; a word it stores stemmed is kept), or
/// the rarest one when every word is common.
fn telling_words(conn: &Connection, words: Vec<String>) -> Result<Vec<String>, ProtoError> {
    let err = ProtoError::sqlite("searching memory");
    let total: i64 = conn
        .query_row("SELECT coalesce(max(rowid), 0) FROM memory", [], |r| {
            r.get(0)
        })
        .map_err(err)?;
    let mut s = conn
        .prepare_cached("SELECT doc FROM memory_vocab WHERE term = ?1")
        .map_err(ProtoError::sqlite("searching memory"))?;
    let mut counted = Vec::with_capacity(words.len());
    for w in words {
        let bare = w.trim_matches('"').to_owned();
        let doc: i64 = s
            .query_row([&bare], |r| r.get(0))
            .optional()
            .map_err(ProtoError::sqlite("searching memory"))?
            .unwrap_or(0);
        counted.push((doc, w));
    }
    let limit = (total as f64 * COMMON).max(50.0) as i64;
    let rarest = counted
        .iter()
        .min_by_key(|(d, _)| *d)
        .map(|(_, w)| w.clone());
    let mut kept: Vec<String> = counted
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .map(|(_, w)| w)
        .collect();
    if kept.is_empty() {
        kept.extend(rarest);
    }
    Ok(kept)
}

fn query(conn: &Connection, fts: &str, limit: usize) -> Result<Vec<(i64, Hit)>, ProtoError> {
    let mut s = conn
        .prepare_cached(
            "SELECT rowid, role, at, session_id, source, snippet(memory, 0, '«', '»', '…', 24)
             FROM memory WHERE memory MATCH ?1 ORDER BY rank LIMIT ?2",
        )
        .map_err(ProtoError::sqlite("searching memory"))?;
    let hits = s
        .query_map(params![fts, limit as i64], |r| {
            Ok((
                r.get(0)?,
                Hit {
                    role: r.get(1)?,
                    at: r.get(2)?,
                    session_id: r.get(3)?,
                    source: r.get(4)?,
                    snippet: r.get(5)?,
                },
            ))
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
        let q = |s: &str| fts_queries(s).map(|(_, any)| any);
        assert_eq!(
            q("landlord's name?").as_deref(),
            Some("\"landlord\" OR \"s\" OR \"name\"")
        );
        assert_eq!(
            q("NOT rent* AND (x)").as_deref(),
            Some("\"not\" OR \"rent\" OR \"and\" OR \"x\"")
        );
        assert_eq!(q("  ?! "), None);
        assert_eq!(
            q("Miete für März").as_deref(),
            Some("\"miete\" OR \"für\" OR \"märz\"")
        );
        assert_eq!(
            fts_queries("rent due").map(|(all, _)| all).as_deref(),
            Some("\"rent\" \"due\"")
        );
    }

    #[test]
    fn turns_and_notes_are_found_ranked_with_their_dates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/memory.db");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut conn = open(&path, std::time::Duration::from_secs(2)).unwrap();
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
        // The notes change: the old ones go.
        let tx = conn.transaction().unwrap();
        assert!(sync_notes(&tx, "h2", &["- the car is blue"], "x").unwrap());
        tx.commit().unwrap();
        assert_eq!(search(&conn, "January", 5).unwrap().len(), 0);
        assert_eq!(search(&conn, "car", 5).unwrap()[0].source, "note");
    }

    #[test]
    fn catch_up_indexes_each_turn_once_past_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let out = Connection::open(dir.path().join("outbound.db")).unwrap();
        out.execute_batch("CREATE TABLE conversation (continuation TEXT, idx INTEGER, role TEXT, content TEXT, created_at TEXT)").unwrap();
        let mut conn = open(
            &dir.path().join("memory.db"),
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        let add = |c: &Connection, idx: i64, role: &str, text: &str| {
            c.execute(
                "INSERT INTO conversation VALUES ('c1', ?1, ?2, ?3, '2026-12-01T00:00:00.000Z')",
                params![idx, role, text],
            )
            .unwrap();
        };
        add(&out, 0, "user", "the boiler is broken");
        add(&out, 1, "step", "{\"tool\": \"shell\"}");
        add(&out, 2, "assistant", "I will call the plumber");
        assert_eq!(
            catch_up(&out, &mut conn, "s1", 1000).unwrap(),
            2,
            "user and assistant, not the step"
        );
        assert_eq!(
            catch_up(&out, &mut conn, "s1", 1000).unwrap(),
            0,
            "nothing twice"
        );
        add(&out, 3, "user", "thanks");
        add(&out, 4, "assistant", "you are welcome");
        assert_eq!(
            catch_up(&out, &mut conn, "s1", 1).unwrap(),
            1,
            "a batch at a time"
        );
        assert_eq!(catch_up(&out, &mut conn, "s1", 1000).unwrap(), 1);
        assert_eq!(search(&conn, "boiler", 5).unwrap().len(), 1);
        assert_eq!(search(&conn, "welcome", 5).unwrap().len(), 1);
        // Another session's mark is its own.
        assert_eq!(catch_up(&out, &mut conn, "s2", 1000).unwrap(), 4);
    }
}
