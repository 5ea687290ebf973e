//! The closed set of events the main loop handles, one at a time.
//!
//! It lives beside the main loop, not inside it: the tasks that post events
//! (`delivery/`, runner and disk watches, timers, the admin socket, the
//! embedder's `HostHandle`) name this vocabulary without importing the loop,
//! so `delivery` and `main_loop` do not import each other.

use pinch_channels::ChannelEvent;

/// What the main loop handles, one at a time: the only way anything reaches
/// the central DB or a session's runner state.
pub(crate) enum Event {
    Channel(ChannelEvent),
    /// A secret's use waits for the owner's approval (decision 0050).
    SecretUse(crate::proxy::UseAsk),
    /// A host notice to store and send (from a delivery task).
    Notice {
        to: pinch_channels::Address,
        text: String,
    },
    /// A stored host notice's send finished (`notices.rs`).
    NoticeSent {
        notice: crate::db::notices::StoredNotice,
        result: Result<(), pinch_channels::DeliverError>,
    },
    RunnerExited {
        session_id: String,
        runner_id: String,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Wake(String),
    /// A read of this session's inbound.db failed as corrupt (delivery, a
    /// wake): the deep check (issue 15).
    SessionDbFault(String),
    /// A delivery task rebuilt the session's lost or damaged delivery
    /// ledger: the notice for its conversation (decision 0026).
    LedgerRebuilt(String, String),
    /// The check of a session's `outbound.db` after an abnormal exit, run
    /// off the main loop (the file is the agent's: its size and shape are
    /// attacker input), is done (`session_db.rs`).
    OutboundChecked {
        session_id: String,
        result: Result<Option<crate::session_check::Recovery>, String>,
    },
    /// Wake this session at this time (epoch ms): a task falls due.
    WakeAt(String, i64),
    /// A live runner's stuck deadline (spawn grace, heartbeat ceiling,
    /// claim) may have passed: check it now (issue 15; the sweep checks too).
    StuckCheck {
        session_id: String,
        runner_id: String,
    },
    /// The stop grace of a runner ran out: kill it if it is still that runner.
    StopDeadline {
        session_id: String,
        runner_id: String,
    },
    Control(crate::Control),
    Admin(
        crate::admin::Request,
        tokio::sync::oneshot::Sender<crate::admin::Reply>,
    ),
    /// A delivery task is about to send a question's buttons; it waits for
    /// the reply so a click can never arrive before the record exists.
    QuestionAsked(
        crate::db::central::PendingQuestion,
        tokio::sync::oneshot::Sender<bool>,
    ),
    /// An approval card is about to go to this approver's DM: record where,
    /// before it is sent (same reason as `QuestionAsked`).
    ApprovalAddressed {
        approval_id: String,
        approver: String,
        channel_type: String,
        platform_id: String,
        opened: bool,
        done: tokio::sync::oneshot::Sender<bool>,
    },
    /// A `system` row an agent wrote (admin request, task action, …); the
    /// reply says whether it was handled (Err: why not, told to the agent).
    AgentAction {
        session_id: String,
        out_id: String,
        content: String,
        done: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// A chat row an agent addressed to another agent; the reply is the
    /// delivery's record (Ok: the target session) or why it was refused.
    AgentMessage {
        session_id: String,
        row: pinch_proto::rows::OutboundRow,
        done: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// A delivery task refused an outbound row whose address the session
    /// is not granted (issue 14): counted in the drop audit. `claimed` is
    /// the row's address as the runner wrote it, bounded.
    AddressRefused {
        session_id: String,
        agent_group: String,
        claimed: String,
    },
    /// Approved packages finished installing (or failed).
    ToolsInstalled {
        approval: Box<crate::db::permissions::Approval>,
        result: Result<String, String>,
    },
    /// No approver could be reached for this card.
    ApprovalUndeliverable {
        approval_id: String,
        why: String,
    },
    /// The card reached its approver.
    ApprovalCardSent {
        approval_id: String,
        channel_type: String,
    },
    /// Nobody was connected on the approver's channel (web chat with no tab
    /// open): the card waits at this address until the channel is back.
    ApprovalCardWaits {
        approval_id: String,
        approver: String,
        channel_type: String,
        platform_id: String,
        /// After the first send: try the channel once more at once.
        try_again: bool,
    },
    /// A session's writable folders were measured (`runner_id`: by the
    /// watch of that live runner, which reports only when over quota).
    DiskChecked {
        session_id: String,
        runner_id: Option<String>,
        usage: crate::quota::Usage,
    },
    Shutdown,
}
