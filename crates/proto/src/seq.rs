//! Seq ownership: one number space, two writers, no shared lock.
//!
//! Inbound and outbound rows share one seq space so the agent can name any
//! message by its seq (prompt `id`, edits, reactions). The host takes even
//! numbers, the runner odd ones, each inside its own write transaction
//! (`BEGIN IMMEDIATE`) and above the maximum of both tables it has seen.
//! Parity alone makes them unique without any cross-process lock; "above the
//! max of both" keeps them roughly in time order.

use rusqlite::Transaction;

use crate::ProtoError;

/// Which side allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The host: even seqs in `messages_in`.
    Host,
    /// The runner: odd seqs in `messages_out`.
    Runner,
}

impl Owner {
    pub fn parity(self) -> i64 {
        match self {
            Owner::Host => 0,
            Owner::Runner => 1,
        }
    }

    /// The smallest number of this owner's parity strictly above `max`.
    pub fn next_above(self, max: i64) -> i64 {
        let mut n = max.max(0) + 1;
        if n.rem_euclid(2) != self.parity() {
            n += 1;
        }
        n
    }

    fn table(self) -> &'static str {
        match self {
            Owner::Host => "messages_in",
            Owner::Runner => "messages_out",
        }
    }
}

/// The largest seq in a session table, 0 when empty.
pub fn max_seq(conn: &rusqlite::Connection, table: &str) -> Result<i64, ProtoError> {
    conn.query_row(
        &format!("SELECT coalesce(max(seq), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )
    .map_err(ProtoError::sqlite("reading max seq"))
}

/// The largest seq in the other side's file, read through a fresh
/// read-only connection; 0 when the file or table does not exist yet.
/// Read it *before* beginning the write transaction: a stale value only
/// loosens ordering, never uniqueness (parity guarantees that).
pub fn other_max(path: &std::path::Path, table: &str) -> i64 {
    let Ok(c) = crate::open::open_reader(path, crate::open::DEFAULT_BUSY_TIMEOUT) else {
        return 0;
    };
    max_seq(&c, table).unwrap_or(0)
}

/// Allocates the next seq for `owner` inside its write transaction.
///
/// `other_max` is the largest seq the caller has read from the other side's
/// table (the host: the last outbound max it read; the runner: the inbound
/// max of its latest poll). Calling it repeatedly in one transaction after
/// each insert yields increasing numbers.
pub fn next(tx: &Transaction<'_>, owner: Owner, other_max: i64) -> Result<i64, ProtoError> {
    let own = max_seq(tx, owner.table())?;
    Ok(owner.next_above(own.max(other_max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn next_above_examples() {
        assert_eq!(Owner::Host.next_above(0), 2);
        assert_eq!(Owner::Host.next_above(2), 4);
        assert_eq!(Owner::Host.next_above(3), 4);
        assert_eq!(Owner::Runner.next_above(0), 1);
        assert_eq!(Owner::Runner.next_above(1), 3);
        assert_eq!(Owner::Runner.next_above(4), 5);
    }

    proptest! {
        #[test]
        fn next_above_is_strictly_greater_with_parity(max in -5i64..1_000_000_000) {
            for o in [Owner::Host, Owner::Runner] {
                let n = o.next_above(max);
                prop_assert!(n > max.max(0));
                prop_assert!(n - max.max(0) <= 2);
                prop_assert_eq!(n.rem_euclid(2), o.parity());
            }
        }
    }
}
