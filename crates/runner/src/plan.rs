//! The batch plan (pure): which pending rows one turn takes, in steps the
//! turn runs in order (`turn.rs`):
//!
//! 1. [`triage`]: the due rows this runner has not taken yet, parsed; rows
//!    it cannot handle are to be failed with a reason; a tool reply some
//!    tool waits for is left to that tool.
//! 2. [`select`]: the policy's batch (`pinch_policy::batch`): the oldest
//!    due trigger with recent context; older context is skipped.
//! 3. (the turn runs the tasks' pre-scripts: an impure step)
//! 4. [`shape`]: without the tasks the pre-scripts finished, with the data
//!    they found; a command heading the batch runs alone.
//!
//! [`follow_ups`] picks the rows that join a running turn at a step
//! boundary (lesson 20).

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use pinch_proto::content::{InContent, SystemIn};
use pinch_proto::rows::InboundRow;
use pinch_proto::time;

use crate::commands::Command;

/// A pending row with its parsed content.
pub(crate) type Row<'a> = (&'a InboundRow, InContent);

/// What one poll's pending rows are to this runner.
#[derive(Debug, Default)]
pub(crate) struct Triage<'a> {
    /// Rows to fail now: (id, reason).
    pub bad: Vec<(String, String)>,
    /// Due rows a turn can take, in the order they were read.
    pub ready: Vec<Row<'a>>,
}

/// Step 1. A row is looked at when it is due, not yet taken by this
/// runner (`acked`), and not an on-wake row past the first poll.
pub(crate) fn triage<'a>(
    pending: &'a [InboundRow],
    acked: &HashSet<String>,
    first_poll: bool,
    now: Timestamp,
    waited_for: &dyn Fn(&SystemIn) -> bool,
) -> Triage<'a> {
    let mut t = Triage::default();
    for row in pending {
        if acked.contains(&row.id)
            || (row.on_wake && !first_poll)
            || !time::is_due(row.process_after.as_deref(), now)
        {
            continue;
        }
        if row
            .process_after
            .as_deref()
            .is_some_and(|p| time::parse(p).is_err())
        {
            tracing::warn!(id = %row.id, process_after = ?row.process_after, "unparseable due time, treating as due now");
        }
        match InContent::parse(&row.kind, &row.content) {
            Err(e) => t.bad.push((
                row.id.clone(),
                format!("content is not valid JSON ({e}); the host must write JSON content"),
            )),
            Ok(InContent::Unknown { kind, .. }) => t.bad.push((
                row.id.clone(),
                format!(
                    "unknown kind {kind:?}: this runner handles chat, task, webhook and system"
                ),
            )),
            Ok(InContent::System(s)) if waited_for(&s) => {} // belongs to a waiting tool
            Ok(c) => t.ready.push((row, c)),
        }
    }
    t
}

/// The policy's batch over the ready rows.
#[derive(Debug)]
pub(crate) struct Selected<'a> {
    /// The policy's decision (seqs), for the log.
    pub batch: pinch_policy::batch::Batch,
    /// The rows taken, in the batch's order.
    pub take: Vec<Row<'a>>,
    /// Older context beyond the batch size: acked as skipped at the claim.
    pub skip_ids: Vec<String>,
}

/// Step 2. `None`: no due trigger, so no turn (context never wakes the
/// agent).
pub(crate) fn select<'a>(ready: &[Row<'a>], batch_size: usize) -> Option<Selected<'a>> {
    let cands: Vec<pinch_policy::batch::Candidate> = ready
        .iter()
        .map(|(r, _)| pinch_policy::batch::Candidate {
            seq: r.seq,
            trigger: r.trigger,
        })
        .collect();
    let batch = pinch_policy::batch::select(&cands, batch_size)?;
    let by_seq = |seq: i64| ready.iter().find(|(r, _)| r.seq == seq);
    let take = batch
        .take
        .iter()
        .filter_map(|s| by_seq(*s).map(|(r, c)| (*r, c.clone())))
        .collect();
    let skip_ids = batch
        .skip
        .iter()
        .filter_map(|s| by_seq(*s))
        .map(|(r, _)| r.id.clone())
        .collect();
    Some(Selected {
        batch,
        take,
        skip_ids,
    })
}

/// What the tasks' pre-scripts decided (SPEC §7.4).
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    /// Tasks whose script found nothing to do: completed without the model.
    pub quiet: Vec<String>,
    /// Data a script handed to its task's prompt, by the task's seq.
    pub data: HashMap<i64, serde_json::Value>,
}

/// The rows one turn runs on.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    pub rows: Vec<Row<'a>>,
    /// The row the turn answers (reply address, `in_reply_to`).
    pub trigger: &'a InboundRow,
    /// A command heading the batch (then the only row): answered without
    /// the model (SPEC §5.2).
    pub command: Option<Command>,
}

impl Batch<'_> {
    pub fn ids(&self) -> Vec<String> {
        self.rows.iter().map(|(r, _)| r.id.clone()).collect()
    }

    /// The user's words in the batch (chat text, task prompts).
    pub fn texts(&self) -> Vec<String> {
        texts(&self.rows)
    }
}

/// The chat texts, task prompts and webhook events (source, event and
/// payload on one line) of some rows.
pub(crate) fn texts(rows: &[Row<'_>]) -> Vec<String> {
    rows.iter()
        .filter_map(|(_, c)| match c {
            InContent::Chat(c) => Some(c.text.clone()),
            InContent::Task(t) => Some(t.prompt.clone()),
            InContent::Webhook(w) => {
                Some(format!("webhook {}: {} {}", w.source, w.event, w.payload))
            }
            _ => None,
        })
        .collect()
}

/// Step 4. `None`: the pre-scripts finished every trigger; the context
/// rows left stay pending for a later turn.
pub(crate) fn shape<'a>(selected: Selected<'a>, scripts: &Scripts) -> Option<Batch<'a>> {
    let mut take = selected.take;
    take.retain(|(r, _)| !scripts.quiet.contains(&r.id));
    if !take.iter().any(|(r, _)| r.trigger) {
        return None;
    }
    let trigger_seq = if take.iter().any(|(r, _)| r.seq == selected.batch.trigger) {
        selected.batch.trigger
    } else {
        take.iter().find(|(r, _)| r.trigger).map(|(r, _)| r.seq)?
    };
    for (r, c) in &mut take {
        if let (InContent::Task(t), Some(d)) = (&mut *c, scripts.data.get(&r.seq)) {
            t.prompt = format!("{}\n\nData from the task's check script: {d}", t.prompt);
        }
    }
    // A command heading a batch runs alone, without the model (SPEC
    // §5.2); what came after it waits for the next turn.
    let command = take.first().and_then(|(r, c)| match c {
        InContent::Chat(ch) if r.seq == trigger_seq => Command::parse(&ch.text),
        _ => None,
    });
    if command.is_some() {
        take.truncate(1);
    }
    let trigger = take.iter().find(|(r, _)| r.seq == trigger_seq)?.0;
    Some(Batch {
        rows: take,
        trigger,
        command,
    })
}

/// Due rows that arrived during a turn, to join it at a step boundary
/// (lesson 20), at most `batch_size`. A command (`/clear`, …) and
/// everything after it wait for the outer loop (lesson 19), as does a task
/// (its pre-script decides first whether the model is called at all,
/// lesson 41); rows this version cannot parse are left for the outer loop
/// to fail; on-wake rows belong to a runner's first poll.
pub(crate) fn follow_ups<'a>(
    pending: &'a [InboundRow],
    taken: &dyn Fn(&str) -> bool,
    now: Timestamp,
    batch_size: usize,
    waited_for: &dyn Fn(&SystemIn) -> bool,
) -> Vec<Row<'a>> {
    let mut out: Vec<Row<'a>> = Vec::new();
    for row in pending {
        if taken(&row.id) || row.on_wake || !time::is_due(row.process_after.as_deref(), now) {
            continue;
        }
        let Ok(c) = InContent::parse(&row.kind, &row.content) else {
            continue;
        };
        match &c {
            InContent::Unknown { .. } => continue,
            InContent::System(s) if waited_for(s) => continue,
            InContent::Chat(ch) if Command::parse(&ch.text).is_some() => break,
            InContent::Task(_) => break,
            _ => {}
        }
        out.push((row, c));
        if out.len() >= batch_size {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T12:00:00Z";

    /// A pending row: `seq`, `kind`, whether it triggers, its content.
    fn row(seq: i64, kind: &str, trigger: bool, content: &str) -> InboundRow {
        InboundRow {
            id: format!("in-{seq}"),
            seq,
            kind: kind.into(),
            timestamp: NOW.into(),
            status: "pending".into(),
            process_after: None,
            recurrence: None,
            series_id: None,
            tries: 0,
            trigger,
            platform_id: Some("local".into()),
            channel_type: Some("cli".into()),
            thread_id: None,
            content: content.into(),
            source_session_id: None,
            on_wake: false,
        }
    }
    fn chat(seq: i64, text: &str) -> InboundRow {
        row(seq, "chat", true, &format!("{{\"text\": {text:?}}}"))
    }
    fn context(seq: i64) -> InboundRow {
        row(seq, "chat", false, "{\"text\": \"ctx\"}")
    }
    fn task(seq: i64, prompt: &str) -> InboundRow {
        row(
            seq,
            "task",
            true,
            &format!("{{\"prompt\": {prompt:?}, \"script\": \"true\"}}"),
        )
    }
    fn reply(seq: i64, question: &str) -> InboundRow {
        row(
            seq,
            "system",
            true,
            &format!("{{\"type\": \"question_response\", \"question_id\": {question:?}, \"value\": \"yes\"}}"),
        )
    }
    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }
    fn nobody_waits(_: &SystemIn) -> bool {
        false
    }
    fn seqs(rows: &[Row<'_>]) -> Vec<i64> {
        rows.iter().map(|(r, _)| r.seq).collect()
    }

    #[test]
    fn triage_table() {
        let mut later = chat(5, "later");
        later.process_after = Some("2026-01-01T13:00:00Z".into());
        let mut garbled_due = chat(6, "due");
        garbled_due.process_after = Some("whenever".into());
        let mut wake = chat(7, "on wake");
        wake.on_wake = true;
        let pending = vec![
            chat(1, "hi"),
            row(2, "chat", true, "{not json"),
            row(3, "carrier-pigeon", true, "{}"),
            chat(4, "already taken"),
            later,
            garbled_due,
            wake,
            reply(8, "q1"),
            reply(9, "q2"),
        ];
        let acked: HashSet<String> = ["in-4".to_owned()].into();
        let waits = |s: &SystemIn| matches!(s, SystemIn::QuestionResponse { question_id, .. } if question_id == "q1");
        // (first poll?, ready seqs, bad ids)
        for (first, ready, bad) in [
            (true, vec![1, 6, 7, 9], vec!["in-2", "in-3"]),
            (false, vec![1, 6, 9], vec!["in-2", "in-3"]),
        ] {
            let t = triage(&pending, &acked, first, now(), &waits);
            assert_eq!(seqs(&t.ready), ready, "first poll {first}");
            assert_eq!(
                t.bad.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
                bad
            );
        }
        let t = triage(&pending, &acked, true, now(), &nobody_waits);
        assert!(t.bad[0].1.contains("not valid JSON"), "{:?}", t.bad);
        assert!(
            t.bad[1].1.contains("unknown kind \"carrier-pigeon\""),
            "{:?}",
            t.bad
        );
        assert_eq!(seqs(&t.ready), [1, 6, 7, 8, 9], "nobody waits for q1");
    }

    #[test]
    fn plan_table() {
        // (pending, batch size, quiet tasks, → taken seqs, skipped ids,
        //  trigger seq, command) — `None` taken: no turn.
        type Case = (
            Vec<InboundRow>,
            usize,
            Vec<&'static str>,
            Option<(Vec<i64>, Vec<&'static str>, i64, Option<Command>)>,
        );
        let cases: Vec<Case> = vec![
            // Context alone never wakes the agent.
            (vec![context(1), context(2)], 10, vec![], None),
            // The oldest trigger with the newest context before it, then later rows.
            (
                vec![
                    context(1),
                    context(2),
                    context(3),
                    chat(4, "a"),
                    chat(5, "b"),
                ],
                3,
                vec![],
                Some((vec![2, 3, 4], vec!["in-1"], 4, None)),
            ),
            (
                vec![chat(1, "a"), context(2), chat(3, "b")],
                10,
                vec![],
                Some((vec![1, 2, 3], vec![], 1, None)),
            ),
            // A command heading the batch runs alone.
            (
                vec![chat(1, "/clear"), chat(2, "after")],
                10,
                vec![],
                Some((vec![1], vec![], 1, Some(Command::Clear))),
            ),
            // A command behind context is not heading the batch.
            (
                vec![context(1), chat(2, "/compact")],
                10,
                vec![],
                Some((vec![1, 2], vec![], 2, None)),
            ),
            // A quiet task: the next trigger answers.
            (
                vec![task(1, "check"), chat(2, "hello")],
                10,
                vec!["in-1"],
                Some((vec![2], vec![], 2, None)),
            ),
            // Every trigger quiet: context stays for later, no turn.
            (vec![task(1, "check"), context(2)], 10, vec!["in-1"], None),
        ];
        for (i, (pending, size, quiet, want)) in cases.iter().enumerate() {
            let ready = triage(pending, &HashSet::new(), true, now(), &nobody_waits).ready;
            let scripts = Scripts {
                quiet: quiet.iter().map(|s| s.to_string()).collect(),
                data: HashMap::new(),
            };
            let got = select(&ready, *size).and_then(|s| {
                let skipped = s.skip_ids.clone();
                shape(s, &scripts).map(|b| (seqs(&b.rows), skipped, b.trigger.seq, b.command))
            });
            let want = want.as_ref().map(|(t, s, tr, c)| {
                (
                    t.clone(),
                    s.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                    *tr,
                    *c,
                )
            });
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn script_data_joins_its_tasks_prompt() {
        let pending = vec![task(1, "check the feed"), task(2, "other")];
        let ready = triage(&pending, &HashSet::new(), true, now(), &nobody_waits).ready;
        let scripts = Scripts {
            quiet: vec![],
            data: [(1, serde_json::json!({"new": 3}))].into(),
        };
        let b = shape(select(&ready, 10).unwrap(), &scripts).unwrap();
        assert_eq!(
            b.texts(),
            [
                "check the feed\n\nData from the task's check script: {\"new\":3}",
                "other"
            ]
        );
        assert_eq!(b.ids(), ["in-1", "in-2"]);
    }

    #[test]
    fn follow_up_table() {
        let mut wake = chat(3, "on wake");
        wake.on_wake = true;
        let pending = vec![
            chat(1, "in the turn"),
            chat(2, "a"),
            wake,
            row(4, "chat", true, "{broken"),
            row(5, "fax", true, "{}"),
            reply(6, "q1"),
            context(7),
            chat(8, "b"),
            chat(9, "/cost"),
            chat(10, "after the command"),
        ];
        let taken = |id: &str| id == "in-1";
        let waits = |s: &SystemIn| matches!(s, SystemIn::QuestionResponse { .. });
        // (batch size, → seqs)
        for (size, want) in [(10, vec![2, 7, 8]), (2, vec![2, 7]), (1, vec![2])] {
            assert_eq!(
                seqs(&follow_ups(&pending, &taken, now(), size, &waits)),
                want,
                "batch size {size}"
            );
        }
        // A task waits for a turn of its own, and so does what follows it.
        let pending = vec![chat(1, "a"), task(2, "t"), chat(3, "b")];
        assert_eq!(
            seqs(&follow_ups(&pending, &|_| false, now(), 10, &nobody_waits)),
            [1]
        );
    }
}
