//! Host notices that outlive a missing listener (issue 15, break 5).
//!
//! A host notice (a quarantine, a message set aside, a command's answer) is
//! not an agent reply, so it never goes through `outbound.db`; but like an
//! outbound row it must not be lost when nobody is there to read it (no
//! `pinch chat` open, a platform down, the host restarting). Each one is
//! written to `host_notices` in the central DB before it is sent and
//! deleted once its channel took it. Unsent notices go out again, oldest
//! first, when the channel reports a client (`Available`), at boot, and at
//! every sweep. A channel that refuses one for good (`Permanent`) has it
//! dropped with an ERROR log naming the text.

use anyhow::Result;
use pinch_proto::rusqlite::params;

use crate::db::central::{now, Central};

/// A notice waiting for its channel to take it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredNotice {
    pub id: i64,
    pub channel_type: String,
    pub platform_id: String,
    pub thread_id: Option<String>,
    pub text: String,
}

impl Central {
    /// Stores a notice before it is sent; returns its id.
    pub fn insert_notice(
        &self,
        channel_type: &str,
        platform_id: &str,
        thread_id: Option<&str>,
        text: &str,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO host_notices (channel_type, platform_id, thread_id, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![channel_type, platform_id, thread_id, text, now()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Unsent notices, oldest first; of one channel type, or of all.
    pub fn unsent_notices(&self, channel_type: Option<&str>) -> Result<Vec<StoredNotice>> {
        let mut s = self.conn.prepare(
            "SELECT id, channel_type, platform_id, thread_id, text FROM host_notices
             WHERE ?1 IS NULL OR channel_type = ?1 ORDER BY id",
        )?;
        let rows = s
            .query_map([channel_type], |r| {
                Ok(StoredNotice {
                    id: r.get(0)?,
                    channel_type: r.get(1)?,
                    platform_id: r.get(2)?,
                    thread_id: r.get(3)?,
                    text: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The channel took it (or refused it for good): forget it.
    pub fn notice_done(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM host_notices WHERE id = ?1", [id])?;
        Ok(())
    }

    /// A try that may work later: count it, keep the notice.
    pub fn notice_attempt_failed(&self, id: i64, error: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE host_notices SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_kept_in_order_until_done_and_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pinch.db");
        let c = Central::open(&path).unwrap();
        let a = c.insert_notice("cli", "local", None, "first").unwrap();
        let b = c
            .insert_notice("telegram", "42", Some("t"), "second")
            .unwrap();
        let _ = c.insert_notice("cli", "local", None, "third").unwrap();
        c.notice_attempt_failed(a, "unavailable: nobody").unwrap();
        drop(c);
        let c = Central::open(&path).unwrap();
        let cli: Vec<String> = c
            .unsent_notices(Some("cli"))
            .unwrap()
            .into_iter()
            .map(|n| n.text)
            .collect();
        assert_eq!(cli, ["first", "third"]);
        assert_eq!(c.unsent_notices(None).unwrap().len(), 3);
        c.notice_done(a).unwrap();
        c.notice_done(b).unwrap();
        let left = c.unsent_notices(None).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].text, "third");
    }
}
