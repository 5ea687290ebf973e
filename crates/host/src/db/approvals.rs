//! Central-DB rows of approval cards (SPEC §7.1, §7.2) and of the sender
//! and channel requests that point at them.

use anyhow::{Context, Result};
use pinch_proto::rusqlite::{params, OptionalExtension};

use super::central::{now, Central};

/// A card waiting for a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Approval {
    pub approval_id: String,
    pub session_id: Option<String>,
    pub agent_group_id: Option<String>,
    pub request_id: Option<String>,
    pub action: String,
    pub payload: serde_json::Value,
    pub title: String,
    /// `[{label, value}]`.
    pub options: Vec<ApprovalOption>,
    pub approver_user_id: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub status: String,
    pub expires_at: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalOption {
    pub label: String,
    pub value: String,
}
impl Central {
    pub fn insert_approval(&self, a: &Approval) -> Result<()> {
        self.conn.execute(
            "INSERT INTO pending_approvals (approval_id, session_id, agent_group_id, request_id, action, payload, title, options_json,
               approver_user_id, channel_type, platform_id, status, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', ?12, ?13)",
            params![
                a.approval_id,
                a.session_id,
                a.agent_group_id,
                a.request_id,
                a.action,
                a.payload.to_string(),
                a.title,
                serde_json::to_string(&a.options)?,
                a.approver_user_id,
                a.channel_type,
                a.platform_id,
                a.expires_at,
                now()
            ],
        )?;
        Ok(())
    }

    fn approval_row(
        r: &pinch_proto::rusqlite::Row<'_>,
    ) -> pinch_proto::rusqlite::Result<(Approval, String, String)> {
        Ok((
            Approval {
                approval_id: r.get(0)?,
                session_id: r.get(1)?,
                agent_group_id: r.get(2)?,
                request_id: r.get(3)?,
                action: r.get(4)?,
                payload: serde_json::Value::Null,
                title: r.get(6)?,
                options: Vec::new(),
                approver_user_id: r.get(8)?,
                channel_type: r.get(9)?,
                platform_id: r.get(10)?,
                status: r.get(11)?,
                expires_at: r.get(12)?,
            },
            r.get(5)?,
            r.get(7)?,
        ))
    }

    const APPROVAL_COLS: &'static str =
        "approval_id, session_id, agent_group_id, request_id, action, payload, title, options_json,
        approver_user_id, channel_type, platform_id, status, expires_at";

    fn finish_approval(raw: (Approval, String, String)) -> Result<Approval> {
        let (mut a, payload, options) = raw;
        a.payload = serde_json::from_str(&payload)
            .with_context(|| format!("approval {} has an unreadable payload", a.approval_id))?;
        a.options = serde_json::from_str(&options)
            .with_context(|| format!("approval {} has unreadable options", a.approval_id))?;
        Ok(a)
    }

    pub fn approval(&self, id: &str) -> Result<Option<Approval>> {
        let raw = self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM pending_approvals WHERE approval_id = ?1",
                    Self::APPROVAL_COLS
                ),
                [id],
                Self::approval_row,
            )
            .optional()?;
        raw.map(Self::finish_approval).transpose()
    }

    /// Pending, unexpired approvals whose card went to this conversation
    /// (numbered answers on channels without buttons).
    pub fn open_approvals_in(
        &self,
        channel_type: &str,
        platform_id: &str,
        now: &str,
    ) -> Result<Vec<Approval>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {} FROM pending_approvals WHERE status = 'pending' AND channel_type = ?1 AND platform_id = ?2 AND expires_at > ?3
             ORDER BY created_at DESC, rowid DESC",
            Self::APPROVAL_COLS
        ))?;
        let raws = s
            .query_map(params![channel_type, platform_id, now], Self::approval_row)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(Self::finish_approval).collect()
    }

    /// Unexpired questions asked in this conversation and thread:
    /// (question id, number of options).
    pub fn open_questions_in(
        &self,
        channel_type: &str,
        platform_id: &str,
        thread_id: Option<&str>,
        now: &str,
    ) -> Result<Vec<(String, usize)>> {
        let mut s = self.conn.prepare(
            "SELECT question_id, options_json FROM pending_questions WHERE channel_type = ?1 AND platform_id = ?2
               AND coalesce(thread_id, '') = coalesce(?3, '') AND expires_at > ?4
             ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows = s
            .query_map(params![channel_type, platform_id, thread_id, now], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(id, opts)| {
                (
                    id,
                    serde_json::from_str::<Vec<serde_json::Value>>(&opts).map_or(0, |v| v.len()),
                )
            })
            .collect())
    }

    /// The questions still waiting in a conversation, by the outbound row
    /// that asked them: (host question id, the options' labels).
    pub fn waiting_questions(
        &self,
        channel_type: &str,
        platform_id: &str,
        now: &str,
    ) -> Result<crate::history::Waiting> {
        let mut s = self.conn.prepare(
            "SELECT session_id, message_out_id, question_id, options_json FROM pending_questions
              WHERE channel_type = ?1 AND platform_id = ?2 AND expires_at > ?3",
        )?;
        let rows = s
            .query_map(params![channel_type, platform_id, now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(sid, out, qid, opts)| {
                let labels = serde_json::from_str::<Vec<serde_json::Value>>(&opts)
                    .unwrap_or_default()
                    .iter()
                    .map(|o| o["label"].as_str().unwrap_or_default().to_owned())
                    .collect();
                ((sid, out), (qid, labels))
            })
            .collect())
    }

    /// A pending approval an agent already asked for with this request id.
    pub fn approval_for_request(
        &self,
        session_id: &str,
        request_id: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT approval_id FROM pending_approvals WHERE session_id = ?1 AND request_id = ?2",
                params![session_id, request_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Where an approval's card went (set just before it is sent).
    pub fn address_approval(
        &self,
        id: &str,
        approver: &str,
        channel_type: &str,
        platform_id: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE pending_approvals SET approver_user_id = ?2, channel_type = ?3, platform_id = ?4 WHERE approval_id = ?1",
            params![id, approver, channel_type, platform_id],
        )?;
        Ok(())
    }

    /// The card of `id` reached its approver.
    pub fn approval_card_sent(&self, id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE pending_approvals SET card_sent_at = ?2 WHERE approval_id = ?1",
            params![id, now()],
        )?;
        Ok(())
    }

    /// Pending, unexpired approvals addressed to a conversation on
    /// `channel_type` whose card has not reached it yet (nobody was
    /// connected), oldest first.
    pub fn unsent_approval_cards(&self, channel_type: &str, now: &str) -> Result<Vec<Approval>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {} FROM pending_approvals WHERE status = 'pending' AND card_sent_at IS NULL
               AND channel_type = ?1 AND platform_id IS NOT NULL AND expires_at > ?2
             ORDER BY created_at, rowid",
            Self::APPROVAL_COLS
        ))?;
        let raws = s
            .query_map(params![channel_type, now], Self::approval_row)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(Self::finish_approval).collect()
    }

    /// Moves a pending approval to its outcome; false if it was no longer
    /// pending (decided twice, or expired meanwhile).
    pub fn decide_approval(
        &self,
        id: &str,
        status: &str,
        by: &str,
        result: Option<&serde_json::Value>,
    ) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE pending_approvals SET status = ?2, decided_by = ?3, decided_at = ?4, result = ?5
             WHERE approval_id = ?1 AND status = 'pending'",
            params![id, status, by, now(), result.map(|r| r.to_string())],
        )?;
        Ok(n > 0)
    }

    /// Pending approvals past their expiry at `now`.
    pub fn expired_approvals(&self, now: &str) -> Result<Vec<Approval>> {
        let mut s = self.conn.prepare(&format!(
            "SELECT {} FROM pending_approvals WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at",
            Self::APPROVAL_COLS
        ))?;
        let raws = s
            .query_map([now], Self::approval_row)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(Self::finish_approval).collect()
    }

    /// The sender request of (mg, sender), if one was made: (approval id).
    pub fn sender_request(&self, mg_id: &str, sender: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT r.approval_id FROM pending_sender_approvals r JOIN pending_approvals a ON a.approval_id = r.approval_id
                 WHERE r.messaging_group_id = ?1 AND r.sender_identity = ?2 AND a.status IN ('pending', 'rejected')",
                params![mg_id, sender],
                |r| r.get(0),
            )
            .optional()?)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert_sender_request(
        &self,
        mg_id: &str,
        ag_id: &str,
        sender: &str,
        sender_name: Option<&str>,
        event: &str,
        approver: &str,
        approval_id: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO pending_sender_approvals (id, messaging_group_id, agent_group_id, sender_identity, sender_name, original_event,
               approver_user_id, approval_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![format!("sa-{approval_id}"), mg_id, ag_id, sender, sender_name, event, approver, approval_id, now()],
        )?;
        Ok(())
    }

    /// The message held by a sender request (`sender`) or a registration
    /// request (`!sender`), as stored (JSON), if the request exists.
    /// The messages of a conversation held for a pending approval (of
    /// their sender or of the conversation): (held since, the event JSON).
    pub fn held_in(&self, mg_id: &str) -> Result<Vec<(String, String)>> {
        let mut st = self.conn.prepare(
            "SELECT r.created_at, r.original_event FROM pending_sender_approvals r
               JOIN pending_approvals a ON a.approval_id = r.approval_id
              WHERE r.messaging_group_id = ?1 AND a.status = 'pending'
             UNION ALL
             SELECT r.created_at, r.original_event FROM pending_channel_approvals r
               JOIN pending_approvals a ON a.approval_id = r.approval_id
              WHERE r.messaging_group_id = ?1 AND a.status = 'pending'",
        )?;
        let rows = st.query_map([mg_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn held_event(&self, sender: bool, approval_id: &str) -> Result<Option<String>> {
        let sql = if sender {
            "SELECT original_event FROM pending_sender_approvals WHERE approval_id = ?1"
        } else {
            "SELECT original_event FROM pending_channel_approvals WHERE approval_id = ?1"
        };
        Ok(self
            .conn
            .query_row(sql, [approval_id], |r| r.get(0))
            .optional()?)
    }

    pub fn delete_sender_request(&self, approval_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM pending_sender_approvals WHERE approval_id = ?1",
            [approval_id],
        )?;
        Ok(())
    }

    pub fn channel_request(&self, mg_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT r.approval_id FROM pending_channel_approvals r JOIN pending_approvals a ON a.approval_id = r.approval_id
                 WHERE r.messaging_group_id = ?1 AND a.status = 'pending'",
                [mg_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn insert_channel_request(
        &self,
        mg_id: &str,
        event: &str,
        approver: &str,
        approval_id: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO pending_channel_approvals (messaging_group_id, agent_group_id, original_event, approver_user_id, approval_id, created_at)
             VALUES (?1, NULL, ?2, ?3, ?4, ?5)",
            params![mg_id, event, approver, approval_id, now()],
        )?;
        Ok(())
    }

    pub fn delete_channel_request(&self, approval_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM pending_channel_approvals WHERE approval_id = ?1",
            [approval_id],
        )?;
        Ok(())
    }

    /// Registration waiting for the new agent's name, typed by the approver
    /// in this conversation: (mg id, approver, original event).
    pub fn awaiting_name(
        &self,
        channel_type: &str,
        platform_id: &str,
    ) -> Result<Option<(String, String, String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT messaging_group_id, approver_user_id, original_event, approval_id FROM pending_channel_approvals
                 WHERE awaiting_name_channel = ?1 AND awaiting_name_platform_id = ?2 ORDER BY created_at DESC LIMIT 1",
                params![channel_type, platform_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
    }

    pub fn set_awaiting_name(
        &self,
        approval_id: &str,
        channel_type: &str,
        platform_id: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE pending_channel_approvals SET awaiting_name_channel = ?2, awaiting_name_platform_id = ?3 WHERE approval_id = ?1",
            params![approval_id, channel_type, platform_id],
        )?;
        Ok(())
    }
}
