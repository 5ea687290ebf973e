//! A conversation's history, read from its sessions' DBs (web chat shows it
//! on connect): the chat rows that came in from that address, and the
//! replies the `delivered` ledger says reached it (edits applied). The
//! session DBs are the record of what happened; no second log is kept that
//! could disagree with them.

use std::collections::{HashMap, HashSet};

use pinch_channels::{Address, HistoryButton, HistoryItem};
use pinch_proto::content::{ChatIn, ChatOut, InContent};
use pinch_proto::open::open_reader;
use pinch_proto::rows;

use crate::paths::SessionDir;
use crate::session::BUSY;

/// Questions still waiting, by (session id, outbound row id): the host's
/// question id and the options' labels (their buttons).
pub type Waiting = HashMap<(String, String), (String, Vec<String>)>;

/// The newest `limit` messages to and from `to`, oldest first. A session
/// that cannot be read is skipped with a warning. A question keeps its
/// buttons while it waits (`waiting`), and shows its answer once answered;
/// a message held for an approval (`held`) is listed as held.
pub fn read(
    dirs: &[SessionDir],
    to: &Address,
    limit: usize,
    waiting: &Waiting,
    held: &[(String, String)],
) -> Vec<HistoryItem> {
    let mut items: Vec<HistoryItem> = Vec::new();
    let mut seen_in = HashSet::new();
    // Held for an approval: shown as held (`held` = (since, event JSON)).
    for (at, json) in held {
        if let Ok(ev) = serde_json::from_str::<pinch_channels::InboundEvent>(json) {
            if ev.platform_id == to.platform_id && seen_in.insert(ev.message_id.clone()) {
                items.push(HistoryItem {
                    id: ev.message_id,
                    from: "user".into(),
                    sender: ev.sender_name,
                    text: ev.text,
                    at: at.clone(),
                    held: true,
                    ..Default::default()
                });
            }
        }
    }
    for d in dirs {
        if let Err(e) = read_one(d, to, limit, waiting, &mut items, &mut seen_in) {
            tracing::warn!(session = %d.root().display(), "history: could not read this session: {e:#}");
        }
    }
    items.sort_by(|a, b| a.at.cmp(&b.at));
    let skip = items.len().saturating_sub(limit);
    items.split_off(skip)
}

fn read_one(
    d: &SessionDir,
    to: &Address,
    limit: usize,
    waiting: &Waiting,
    items: &mut Vec<HistoryItem>,
    seen_in: &mut HashSet<String>,
) -> anyhow::Result<()> {
    if !d.inbound_db().exists() {
        return Ok(());
    }
    let inbound = open_reader(&d.inbound_db(), BUSY)?;
    let rows_in =
        pinch_proto::inbound::chat_from(&inbound, &to.channel_type, &to.platform_id, limit as i64)?;
    for (at, content) in rows_in {
        let Ok(InContent::Chat(ChatIn {
            text,
            sender,
            platform_message_id,
            attachments,
            edit_of,
            ..
        })) = InContent::parse("chat", &content)
        else {
            continue;
        };
        let id = platform_message_id.unwrap_or_default();
        // A message that reached several agents is stored once per session.
        if !seen_in.insert(id.clone()) {
            continue;
        }
        items.push(HistoryItem {
            id,
            from: "user".into(),
            sender,
            text,
            at,
            files: attachments.into_iter().map(|a| a.name).collect(),
            edit_of,
            ..Default::default()
        });
    }
    let delivered: HashSet<String> = {
        // The host's ledger file (issue 15); empty before the first delivery.
        let Some(ledger) = crate::ledger::open_read(d.root()) else {
            return Ok(());
        };
        pinch_proto::ledger::delivered_ids(&ledger)?
            .into_iter()
            .collect()
    };
    let routing = rows::routing(&inbound)?;
    if !d.outbound_db().exists() {
        return Ok(());
    }
    let out = pinch_proto::open::open_agent_reader(&d.outbound_db(), BUSY)?;
    let rows_out = pinch_proto::outbound::recent_chat(&out, (limit * 4) as i64)?;
    let mut by_seq: HashMap<i64, usize> = HashMap::new();
    let mut edits = Vec::new();
    let mut mine = Vec::new();
    for pinch_proto::outbound::ChatRow {
        id,
        seq,
        timestamp: at,
        channel_type: ct,
        platform_id: pid,
        content,
    } in rows_out
    {
        if !delivered.contains(&id) {
            continue;
        }
        let ct = ct.or_else(|| routing.as_ref().and_then(|r| r.channel_type.clone()));
        let pid = pid.or_else(|| routing.as_ref().and_then(|r| r.platform_id.clone()));
        if ct.as_deref() != Some(to.channel_type.as_str())
            || pid.as_deref() != Some(to.platform_id.as_str())
        {
            continue;
        }
        let (mut buttons, mut answer) = (Vec::new(), None);
        let (text, files) = match ChatOut::parse(&content) {
            Ok(ChatOut::Text { text, files }) => (text, files),
            Ok(ChatOut::AskQuestion {
                title,
                question,
                options,
                ..
            }) => {
                let sid = session_id(d);
                match waiting.get(&(sid.clone(), id.clone())) {
                    Some((qid, labels)) => {
                        buttons = labels
                            .iter()
                            .enumerate()
                            .map(|(i, l)| HistoryButton {
                                label: l.clone(),
                                callback: format!("q:{qid}:{i}"),
                            })
                            .collect();
                    }
                    None => answer = answer_of(&inbound, &sid, &id, &options),
                }
                (
                    if title.is_empty() {
                        question
                    } else {
                        format!("{title}\n{question}")
                    },
                    Vec::new(),
                )
            }
            Ok(ChatOut::Card { fallback_text, .. }) => (fallback_text, Vec::new()),
            Ok(ChatOut::Edit { seq, text }) => {
                edits.push((seq, text));
                continue;
            }
            _ => continue,
        };
        by_seq.insert(seq, mine.len());
        mine.push(HistoryItem {
            id,
            from: "agent".into(),
            sender: None,
            text,
            at,
            files,
            buttons,
            answer,
            edit_of: None,
            held: false,
        });
    }
    // Rows were read newest first: apply the oldest edit first.
    for (seq, text) in edits.into_iter().rev() {
        if let Some(&i) = by_seq.get(&seq) {
            mine[i].text = text;
        }
    }
    items.extend(mine);
    Ok(())
}

/// The session's id: its folder's name.
fn session_id(d: &SessionDir) -> String {
    d.root()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The label of the option chosen for the question in outbound row
/// `out_id`, from the answer the host wrote (`qr:<session>:<row>`).
fn answer_of(
    inbound: &pinch_proto::rusqlite::Connection,
    session_id: &str,
    out_id: &str,
    options: &[pinch_proto::content::OptionItem],
) -> Option<String> {
    let row = rows::inbound_by_ids(inbound, &[format!("qr:{session_id}:{out_id}")])
        .ok()?
        .into_iter()
        .next()?;
    let Ok(InContent::System(pinch_proto::content::SystemIn::QuestionResponse { value, .. })) =
        InContent::parse(&row.kind, &row.content)
    else {
        return None;
    };
    Some(
        options
            .iter()
            .find(|o| o.value == value)
            .map_or(value, |o| o.label.clone()),
    )
}
