//! Fixture rows for `pinch bench` (P4): not used by the running host.

use anyhow::Result;
use pinch_proto::rusqlite::params;

use super::central::Central;

impl Central {
    /// The bench's P4 fixture: `rooms` group conversations on channel
    /// `bench`, each wired to `main` (messaging group `mg-b<i>`, platform id
    /// and name `room<i>`, wiring `w-b<i>`: engage on any text from known
    /// senders, one shared session), and for each a user `bench:u<i>` who is
    /// a member of `main`. One transaction; the central DB must be
    /// bootstrapped (the `main` group exists) and hold none of these ids.
    pub fn seed_bench_rooms(&mut self, rooms: usize) -> Result<()> {
        let t = pinch_proto::time::now();
        let tx = self.conn.transaction()?;
        for i in 0..rooms {
            tx.execute(
                "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at)
                 VALUES (?1, 'bench', ?2, ?2, 1, 'strict', ?3)",
                params![format!("mg-b{i}"), format!("room{i}"), t],
            )?;
            tx.execute(
                "INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope,
                   ignored_message_policy, session_mode, priority, created_at)
                 VALUES (?1, ?2, 'main', 'pattern', '.', 'known', 'drop', 'shared', 0, ?3)",
                params![format!("w-b{i}"), format!("mg-b{i}"), t],
            )?;
            tx.execute(
                "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, 'bench', NULL, ?2)",
                params![format!("bench:u{i}"), t],
            )?;
            tx.execute(
                "INSERT INTO agent_group_members (user_id, agent_group_id, added_by, added_at) VALUES (?1, 'main', 'bench', ?2)",
                params![format!("bench:u{i}"), t],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
