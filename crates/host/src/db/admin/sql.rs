//! The SQL helpers of the admin handlers: savepoints, rows as JSON
//! objects, paged lists and column updates.

use pinch_proto::rusqlite::{
    self, types::Value as Sv, types::ValueRef, Connection, OptionalExtension,
};
use serde_json::{json, Map, Value};

use super::{invalid, Args, R};
use crate::admin::{err, Reply};

/// A savepoint on a shared connection: a transaction of its own at the top
/// level, and nestable, so the main loop can dry-run a command inside its
/// own savepoint and roll everything back. Rolled back unless committed.
pub(super) struct Nested<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Nested<'c> {
    pub(super) fn begin(conn: &'c Connection) -> rusqlite::Result<Nested<'c>> {
        conn.execute_batch("SAVEPOINT admin_op")?;
        Ok(Nested { conn, done: false })
    }

    pub(super) fn commit(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("RELEASE admin_op")
    }
}

impl std::ops::Deref for Nested<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Nested<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .conn
                .execute_batch("ROLLBACK TO admin_op; RELEASE admin_op");
        }
    }
}

pub(super) trait SqlExt<T> {
    /// SQL failure → `handler-error` (a unique violation → `invalid-args`).
    fn sql(self) -> R<T>;
    /// Same, with a unique violation said by `msg` (what already exists).
    fn exists_as(self, msg: &dyn Fn() -> String) -> R<T>;
}

pub(super) fn is_unique(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl<T> SqlExt<T> for rusqlite::Result<T> {
    fn sql(self) -> R<T> {
        self.map_err(|e| {
            if is_unique(&e) {
                invalid(format!("already exists ({e})"))
            } else {
                err("handler-error", e.to_string())
            }
        })
    }
    fn exists_as(self, msg: &dyn Fn() -> String) -> R<T> {
        self.map_err(|e| {
            if is_unique(&e) {
                invalid(msg())
            } else {
                err("handler-error", e.to_string())
            }
        })
    }
}

pub(super) fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

pub(super) fn s(v: &str) -> Sv {
    Sv::Text(v.to_owned())
}

pub(super) fn opt(v: Option<&str>) -> Sv {
    v.map(s).unwrap_or(Sv::Null)
}

/// Every row of a query as JSON objects keyed by column name.
pub(super) fn rows(conn: &Connection, sql: &str, params: &[Sv]) -> R<Vec<Value>> {
    let mut st = conn.prepare(sql).sql()?;
    let names: Vec<String> = st.column_names().into_iter().map(String::from).collect();
    let mut q = st.query(rusqlite::params_from_iter(params.iter())).sql()?;
    let mut out = Vec::new();
    while let Some(r) = q.next().sql()? {
        let mut m = Map::new();
        for (i, n) in names.iter().enumerate() {
            m.insert(n.clone(), to_json(r.get_ref(i).sql()?));
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

pub(super) fn one(conn: &Connection, sql: &str, params: &[Sv]) -> R<Option<Value>> {
    Ok(rows(conn, sql, params)?.into_iter().next())
}

pub(super) fn exists(conn: &Connection, sql: &str, params: &[Sv]) -> R<bool> {
    conn.query_row(sql, rusqlite::params_from_iter(params.iter()), |_| Ok(()))
        .optional()
        .sql()
        .map(|o| o.is_some())
}

pub(super) fn count(conn: &Connection, sql: &str, params: &[Sv]) -> R<i64> {
    conn.query_row(sql, rusqlite::params_from_iter(params.iter()), |r| r.get(0))
        .sql()
}

/// A list query with optional `AND` filters, ordered and paged (`order`
/// breaks `created_at` ties by rowid, i.e. insertion order: timestamps are
/// milliseconds).
pub(super) fn list(
    conn: &Connection,
    a: &Args,
    select: &str,
    filters: &[(&str, Option<Sv>)],
    order: &str,
) -> Reply {
    let (limit, offset) = a.page()?;
    let mut sql = select.to_owned();
    let mut params = Vec::new();
    let mut first = true;
    for (clause, v) in filters {
        if let Some(v) = v {
            sql.push_str(if first { " WHERE " } else { " AND " });
            first = false;
            params.push(v.clone());
            sql.push_str(&clause.replace('?', &format!("?{}", params.len())));
        }
    }
    sql.push_str(&format!(" ORDER BY {order} LIMIT {limit} OFFSET {offset}"));
    Ok(Value::Array(rows(conn, &sql, &params)?))
}

/// `UPDATE table SET col = ?, … WHERE key = ?` from the given changes;
/// returns whether a row matched.
pub(super) fn update(
    conn: &Connection,
    table: &str,
    key_col: &str,
    key: &str,
    changes: &[(&str, Sv)],
) -> R<bool> {
    let sets: Vec<String> = changes
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("{c} = ?{}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE {table} SET {} WHERE {key_col} = ?{}",
        sets.join(", "),
        changes.len() + 1
    );
    let mut params: Vec<Sv> = changes.iter().map(|(_, v)| v.clone()).collect();
    params.push(s(key));
    let n = conn
        .execute(&sql, rusqlite::params_from_iter(params.iter()))
        .sql()?;
    Ok(n > 0)
}

pub(super) fn now() -> String {
    pinch_proto::time::now()
}
