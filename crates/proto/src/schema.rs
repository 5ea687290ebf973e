//! Session DB schemas (SPEC §3.2) as column lists.
//!
//! Each table is declared once, as a list of `(column, declaration)` pairs
//! plus table constraints. The same list creates the table
//! (`CREATE TABLE IF NOT EXISTS`) and, for a file made by an older version,
//! adds any missing column with `ALTER TABLE ADD COLUMN` (lazy migration).
//! Nothing is ever dropped or renamed, so an older reader keeps working on a
//! newer file and a newer reader on an older one.
//!
//! Version matrix (keep this in mind when adding a column):
//! - new writer, old file: the column is added with its default.
//! - old reader, new file: extra columns are ignored (readers name columns).
//! - new reader, old file: readers probe with [`columns`] and default absent
//!   columns instead of failing.
//!
//! Only the writer of a file migrates it: the host `inbound.db`, the runner
//! `outbound.db`.

use std::collections::HashSet;

use rusqlite::Connection;

use crate::ProtoError;

pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
    pub constraints: &'static [&'static str],
}

/// `messages_in`: everything the host hands the agent.
pub const MESSAGES_IN: Table = Table {
    name: "messages_in",
    columns: &[
        ("id", "TEXT PRIMARY KEY"),
        ("seq", "INTEGER NOT NULL UNIQUE CHECK (seq % 2 = 0)"),
        ("kind", "TEXT NOT NULL"),
        ("timestamp", "TEXT NOT NULL"),
        ("status", "TEXT NOT NULL DEFAULT 'pending'"),
        ("process_after", "TEXT"),
        ("recurrence", "TEXT"),
        ("series_id", "TEXT"),
        ("tries", "INTEGER NOT NULL DEFAULT 0"),
        ("trigger", "INTEGER NOT NULL DEFAULT 1"),
        ("platform_id", "TEXT"),
        ("channel_type", "TEXT"),
        ("thread_id", "TEXT"),
        ("content", "TEXT NOT NULL"),
        ("source_session_id", "TEXT"),
        ("on_wake", "INTEGER NOT NULL DEFAULT 0"),
    ],
    constraints: &[],
};

/// `delivered`: the host's delivery ledger for `messages_out` rows.
pub const DELIVERED: Table = Table {
    name: "delivered",
    columns: &[
        ("message_out_id", "TEXT PRIMARY KEY"),
        ("platform_message_id", "TEXT"),
        ("status", "TEXT NOT NULL"),
        ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("last_error", "TEXT"),
        ("updated_at", "TEXT NOT NULL"),
    ],
    constraints: &[],
};

/// `destinations`: projection of the agent group's address book and ACL.
pub const DESTINATIONS: Table = Table {
    name: "destinations",
    columns: &[
        ("name", "TEXT PRIMARY KEY"),
        ("display_name", "TEXT"),
        ("type", "TEXT NOT NULL"),
        ("channel_type", "TEXT"),
        ("platform_id", "TEXT"),
        ("agent_group_id", "TEXT"),
    ],
    constraints: &[],
};

/// `session_routing`: the default reply address (one row, id = 1).
pub const SESSION_ROUTING: Table = Table {
    name: "session_routing",
    columns: &[
        ("id", "INTEGER PRIMARY KEY CHECK (id = 1)"),
        ("channel_type", "TEXT"),
        ("platform_id", "TEXT"),
        ("thread_id", "TEXT"),
    ],
    constraints: &[],
};

/// `session_identity`: which session this file belongs to and which
/// generation of it (one row, id = 1). Written by the host when it makes
/// the file; the generation is also recorded in the central DB, so a file
/// that vanished and came back, or was swapped for another, is noticed
/// (issue 15). Runners do not read it.
pub const SESSION_IDENTITY: Table = Table {
    name: "session_identity",
    columns: &[
        ("id", "INTEGER PRIMARY KEY CHECK (id = 1)"),
        ("session_id", "TEXT NOT NULL"),
        ("generation", "TEXT NOT NULL"),
        ("created_at", "TEXT NOT NULL"),
    ],
    constraints: &[],
};

/// `messages_out`: everything the agent asks the host to do.
pub const MESSAGES_OUT: Table = Table {
    name: "messages_out",
    columns: &[
        ("id", "TEXT PRIMARY KEY"),
        ("seq", "INTEGER NOT NULL UNIQUE CHECK (seq % 2 = 1)"),
        ("in_reply_to", "TEXT"),
        ("timestamp", "TEXT NOT NULL"),
        ("deliver_after", "TEXT"),
        ("kind", "TEXT NOT NULL"),
        ("platform_id", "TEXT"),
        ("channel_type", "TEXT"),
        ("thread_id", "TEXT"),
        ("content", "TEXT NOT NULL"),
    ],
    constraints: &[],
};

/// `processing_ack`: the runner's claims and outcomes, synced by the host.
///
/// `reason` is pinch's one addition to the upstream shape: why a row was
/// acked `failed` (bad JSON, unknown kind, provider gave up), so the host
/// and an operator can tell the user and the log can name it.
pub const PROCESSING_ACK: Table = Table {
    name: "processing_ack",
    columns: &[
        ("message_id", "TEXT PRIMARY KEY"),
        ("status", "TEXT NOT NULL"),
        ("runner_id", "TEXT NOT NULL"),
        ("status_changed", "TEXT NOT NULL"),
        ("reason", "TEXT"),
    ],
    constraints: &[],
};

pub const SESSION_STATE: Table = Table {
    name: "session_state",
    columns: &[
        ("key", "TEXT PRIMARY KEY"),
        ("value", "TEXT"),
        ("updated_at", "TEXT NOT NULL"),
    ],
    constraints: &[],
};

pub const CONTAINER_STATE: Table = Table {
    name: "container_state",
    columns: &[
        ("id", "INTEGER PRIMARY KEY CHECK (id = 1)"),
        ("runner_id", "TEXT"),
        ("current_tool", "TEXT"),
        ("tool_declared_timeout_ms", "INTEGER"),
        ("tool_started_at", "TEXT"),
        ("turn_started_at", "TEXT"),
        ("last_progress_at", "TEXT"),
        ("updated_at", "TEXT"),
    ],
    constraints: &[],
};

pub const CONVERSATION: Table = Table {
    name: "conversation",
    columns: &[
        ("continuation", "TEXT NOT NULL"),
        ("idx", "INTEGER NOT NULL"),
        ("role", "TEXT NOT NULL"),
        ("content", "TEXT NOT NULL"),
        ("tokens", "INTEGER"),
        ("created_at", "TEXT NOT NULL"),
    ],
    constraints: &["PRIMARY KEY (continuation, idx)"],
};

pub const INBOUND_TABLES: &[&Table] = &[
    &MESSAGES_IN,
    &DELIVERED,
    &DESTINATIONS,
    &SESSION_ROUTING,
    &SESSION_IDENTITY,
];
pub const OUTBOUND_TABLES: &[&Table] = &[
    &MESSAGES_OUT,
    &PROCESSING_ACK,
    &SESSION_STATE,
    &CONTAINER_STATE,
    &CONVERSATION,
];

const INBOUND_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS messages_in_pending ON messages_in(status, seq);
";
const OUTBOUND_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS processing_ack_status ON processing_ack(status);
";

impl Table {
    pub fn create_sql(&self) -> String {
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .map(|(n, d)| format!("\"{n}\" {d}"))
            .collect();
        parts.extend(self.constraints.iter().map(|c| c.to_string()));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.name,
            parts.join(", ")
        )
    }
}

/// The column names a table has in this file (empty if it does not exist).
pub fn columns(conn: &Connection, table: &str) -> Result<HashSet<String>, ProtoError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(ProtoError::sqlite("probing columns"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .map_err(ProtoError::sqlite("probing columns"))?
        .collect::<Result<HashSet<_>, _>>()
        .map_err(ProtoError::sqlite("probing columns"))?;
    Ok(names)
}

/// Creates missing tables and adds missing columns. Idempotent.
///
/// `ADD COLUMN` cannot add a PRIMARY KEY or UNIQUE column; those only exist
/// from a table's first version, so every later column is plain with a
/// default, which is the rule for additions.
fn migrate(conn: &Connection, tables: &[&Table], indexes: &str) -> Result<(), ProtoError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(ProtoError::sqlite("begin migration"))?;
    for t in tables {
        tx.execute_batch(&t.create_sql())
            .map_err(ProtoError::sqlite("creating table"))?;
        let have = columns(&tx, t.name)?;
        for (name, decl) in t.columns {
            if !have.contains(*name) {
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN \"{name}\" {decl}",
                    t.name
                ))
                .map_err(ProtoError::sqlite("adding column"))?;
            }
        }
    }
    tx.execute_batch(indexes)
        .map_err(ProtoError::sqlite("creating indexes"))?;
    tx.commit().map_err(ProtoError::sqlite("commit migration"))
}

/// Brings `inbound.db` up to this version's schema. Host only.
pub fn migrate_inbound(conn: &Connection) -> Result<(), ProtoError> {
    migrate(conn, INBOUND_TABLES, INBOUND_INDEXES)
}

/// Brings `outbound.db` up to this version's schema. Runner only.
pub fn migrate_outbound(conn: &Connection) -> Result<(), ProtoError> {
    migrate(conn, OUTBOUND_TABLES, OUTBOUND_INDEXES)
}

/// A select list for `wanted` columns of `table` where absent ones read as
/// NULL, so a newer reader works on an older file.
pub fn select_list(have: &HashSet<String>, wanted: &[&str]) -> String {
    wanted
        .iter()
        .map(|c| {
            if have.contains(*c) {
                format!("\"{c}\"")
            } else {
                format!("NULL AS \"{c}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The salvage copy of a damaged file (host only): inserts `cols` of
/// `table` into the new file, keeping a row it already has.
pub fn salvage_insert_sql(table: &Table, cols: &[&str]) -> String {
    let marks = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT OR IGNORE INTO {} ({}) VALUES ({marks})",
        table.name,
        quoted(cols)
    )
}

/// The salvage read of a damaged file: `rowid` then `cols` of `table`, by
/// rowid forwards, or backwards down to (not including) the rowid `?1`.
pub fn salvage_scan_sql(table: &Table, cols: &[&str], backwards: bool) -> String {
    let list = quoted(cols);
    if backwards {
        format!(
            "SELECT rowid, {list} FROM {} WHERE rowid > ?1 ORDER BY rowid DESC",
            table.name
        )
    } else {
        format!("SELECT rowid, {list} FROM {} ORDER BY rowid", table.name)
    }
}

fn quoted(cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(conn: &Connection) -> Vec<(String, String)> {
        let mut s = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn migrations_are_idempotent() {
        let c = Connection::open_in_memory().unwrap();
        migrate_inbound(&c).unwrap();
        let first = dump(&c);
        migrate_inbound(&c).unwrap();
        assert_eq!(first, dump(&c));
        let c = Connection::open_in_memory().unwrap();
        migrate_outbound(&c).unwrap();
        let first = dump(&c);
        migrate_outbound(&c).unwrap();
        assert_eq!(first, dump(&c));
    }

    #[test]
    fn old_file_gains_missing_columns_and_keeps_rows() {
        let c = Connection::open_in_memory().unwrap();
        // a file from a version before `on_wake` and `source_session_id`
        c.execute_batch(
            "CREATE TABLE messages_in (id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, kind TEXT NOT NULL,
               timestamp TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', process_after TEXT,
               recurrence TEXT, series_id TEXT, tries INTEGER NOT NULL DEFAULT 0,
               trigger INTEGER NOT NULL DEFAULT 1, platform_id TEXT, channel_type TEXT, thread_id TEXT,
               content TEXT NOT NULL);
             INSERT INTO messages_in (id, seq, kind, timestamp, content) VALUES ('a', 2, 'chat', 't', '{}');",
        )
        .unwrap();
        let before = columns(&c, "messages_in").unwrap();
        assert!(!before.contains("on_wake"));
        assert_eq!(
            select_list(&before, &["id", "on_wake"]),
            "\"id\", NULL AS \"on_wake\""
        );
        migrate_inbound(&c).unwrap();
        let after = columns(&c, "messages_in").unwrap();
        assert!(after.contains("on_wake") && after.contains("source_session_id"));
        let on_wake: i64 = c
            .query_row("SELECT on_wake FROM messages_in WHERE id='a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(on_wake, 0);
    }

    #[test]
    fn parity_is_enforced_by_the_schema() {
        let c = Connection::open_in_memory().unwrap();
        migrate_inbound(&c).unwrap();
        migrate_outbound(&c).unwrap();
        assert!(c
            .execute("INSERT INTO messages_in (id, seq, kind, timestamp, content) VALUES ('x', 3, 'chat', 't', '{}')", [])
            .is_err());
        assert!(c
            .execute("INSERT INTO messages_out (id, seq, kind, timestamp, content) VALUES ('x', 4, 'chat', 't', '{}')", [])
            .is_err());
    }
}
