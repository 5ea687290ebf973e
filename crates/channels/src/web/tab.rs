//! One browser tab's websocket: the hello and history frames, the live
//! frames the channel pushes to it, and what the tab sends (messages with
//! their uploads, button clicks).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{random_id, WebChannel, CHANNEL_TYPE, HISTORY};
use crate::{
    Ack, AckOutcome, Address, ChannelEvent, Click, HistoryItem, InboundAttachment, InboundEvent,
    MAX_ATTACHMENT,
};

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Message {
        #[serde(default)]
        text: String,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        attachments: Vec<ClientAttachment>,
        /// Corrects this earlier message of the same user (Up, then Enter).
        #[serde(default)]
        edit_of: Option<String>,
    },
    Click {
        callback: String,
    },
    /// The Stop button: cancel the agent's turn in this conversation.
    Stop,
}

#[derive(Deserialize)]
struct ClientAttachment {
    upload: Option<String>,
    name: Option<String>,
    #[serde(default)]
    size: u64,
}

pub(super) async fn session(ch: Arc<WebChannel>, user: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let slot = Arc::new(super::DraftSlot::default());
    let me = ch.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let about = ch.about.lock().unwrap().clone();
    let hello = serde_json::json!({"type": "hello", "user": user, "about": about}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    // Registered before the history is asked for, so nothing delivered
    // from now on finds no browser (an approval card is sent once: one that
    // found none was lost, issue 16). What was delivered between the two is
    // in the history and queued live; the live copy is skipped below.
    ch.clients
        .lock()
        .unwrap()
        .entry(user.clone())
        .or_default()
        .push((me, tx.clone(), slot.clone()));
    let (reply, got) = tokio::sync::oneshot::channel::<Vec<HistoryItem>>();
    let to = Address {
        channel_type: CHANNEL_TYPE.into(),
        platform_id: user.clone(),
        thread_id: None,
    };
    let items = match ch
        .events
        .send(ChannelEvent::History {
            to,
            limit: HISTORY,
            reply,
        })
        .await
    {
        Ok(()) => tokio::time::timeout(Duration::from_secs(10), got)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut in_history: std::collections::HashSet<String> =
        items.iter().map(|i| i.id.clone()).collect();
    // The agent's replies with their Markdown rendered, as live ones are.
    let shown: Vec<serde_json::Value> = items
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).unwrap_or_default();
            if i.from == "agent" {
                v["html"] = super::markdown::to_html(&i.text).into();
                // The agent's files as the links they were, while kept.
                v["files"] = i
                    .files
                    .iter()
                    .map(|n| match ch.file_url(&i.id, n) {
                        Some(url) => serde_json::json!({"name": n, "url": url}),
                        None => serde_json::json!(n),
                    })
                    .collect();
            }
            v
        })
        .collect();
    let frame = serde_json::json!({"type": "history", "items": shown}).to_string();
    if socket.send(Message::Text(frame.into())).await.is_err() {
        unregister(&ch, &user, me);
        return;
    }
    // A reply is pushed to the tabs before the ledger records it, and the
    // history lists only recorded replies, so every live copy of a history
    // item is already queued here: send what is queued minus those, and
    // later frames go out without being parsed.
    while let Ok(line) = rx.try_recv() {
        if shown_in_history(&line, &mut in_history) {
            continue;
        }
        if socket.send(Message::Text(line.into())).await.is_err() {
            unregister(&ch, &user, me);
            return;
        }
    }
    drop(in_history);
    // The user's other conversations, for the page's list (asked on the
    // side: the tab does not wait for it).
    {
        let (events, tx, current, default) = (
            ch.events.clone(),
            tx.clone(),
            user.clone(),
            ch.default_user.clone(),
        );
        tokio::spawn(async move {
            let (reply, got) = tokio::sync::oneshot::channel();
            let asked = events.send(ChannelEvent::Conversations {
                channel_type: CHANNEL_TYPE.into(),
                reply,
            });
            if asked.await.is_ok() {
                if let Ok(Ok(items)) = tokio::time::timeout(Duration::from_secs(10), got).await {
                    let frame = serde_json::json!({"type": "conversations", "items": items, "current": current, "default": default});
                    let _ = tx.send(frame.to_string());
                }
            }
        });
    }
    let _ = ch
        .events
        .send(ChannelEvent::Available {
            channel_type: CHANNEL_TYPE.into(),
        })
        .await;
    loop {
        tokio::select! {
            m = socket.recv() => {
                let Some(Ok(m)) = m else { break };
                let t = match m {
                    Message::Text(t) => t.to_string(),
                    Message::Binary(b) => crate::http::lossy("web chat: a frame", &b).into_owned(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                match serde_json::from_str::<ClientFrame>(&t) {
                    Ok(f) => {
                        let ch = ch.clone();
                        let user = user.clone();
                        let tx = tx.clone();
                        // Each message waits for its commit on its own, so
                        // the socket keeps reading (and clicks get through).
                        tokio::spawn(async move { handle(&ch, &user, f, &tx).await });
                    }
                    Err(e) => {
                        let _ = tx.send(serde_json::json!({"type": "rejected", "reason": format!("bad frame: {e}")}).to_string());
                    }
                }
            }
            Some(line) = rx.recv() => {
                if socket.send(Message::Text(line.into())).await.is_err() {
                    break;
                }
            }
            _ = slot.ready.notified() => {
                let frame = slot.frame.lock().unwrap().take();
                if let Some(f) = frame {
                    if socket.send(Message::Text(f.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    unregister(&ch, &user, me);
}

/// Takes tab `me` of `user` off the list of connected browsers.
fn unregister(ch: &WebChannel, user: &str, me: u64) {
    let mut clients = ch.clients.lock().unwrap();
    if let Some(tabs) = clients.get_mut(user) {
        tabs.retain(|(id, _, _)| *id != me);
        if tabs.is_empty() {
            clients.remove(user);
        }
    }
}

/// Whether a live frame is a message the tab already got in its history
/// (delivered while the history was read); each id is skipped once.
fn shown_in_history(line: &str, ids: &mut std::collections::HashSet<String>) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    v["type"] == "message" && v["id"].as_str().is_some_and(|id| ids.remove(id))
}

async fn handle(ch: &WebChannel, user: &str, f: ClientFrame, tx: &mpsc::UnboundedSender<String>) {
    match f {
        ClientFrame::Stop => {
            let to = Address {
                channel_type: CHANNEL_TYPE.into(),
                platform_id: user.to_owned(),
                thread_id: None,
            };
            let _ = ch
                .events
                .send(ChannelEvent::Stop {
                    to,
                    sender: format!("{CHANNEL_TYPE}:{user}"),
                })
                .await;
        }
        ClientFrame::Click { callback } => {
            let c = Click {
                channel_type: CHANNEL_TYPE.into(),
                platform_id: user.to_owned(),
                thread_id: None,
                user_id: user.to_owned(),
                callback,
            };
            let _ = ch.events.send(ChannelEvent::Click(c)).await;
        }
        ClientFrame::Message {
            text,
            client_id,
            attachments,
            edit_of,
        } => {
            // Only this user's own messages can be corrected.
            let mine = format!("web-{user}-");
            let edit_of = edit_of.filter(|e| e.starts_with(&mine) && e.len() <= 200);
            let mut files = Vec::new();
            for a in attachments {
                match a.upload {
                    Some(id) => {
                        let mut ups = ch.uploads.lock().unwrap();
                        if let Some(i) = ups
                            .iter()
                            .position(|(u, owner, _)| *u == id && owner == user)
                        {
                            files.push(ups.remove(i).2);
                        }
                    }
                    // Not uploaded (too large): the host notes it in the text.
                    None => files.push(InboundAttachment {
                        name: a.name.unwrap_or_else(|| "file".into()),
                        mime: None,
                        size: a.size.max(MAX_ATTACHMENT + 1),
                        data: None,
                    }),
                }
            }
            let cid: Option<String> = client_id.map(|c| {
                c.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(64)
                    .collect()
            });
            // The client's id makes a resent message the same message.
            let message_id = match cid.as_deref() {
                Some(c) if !c.is_empty() => format!("web-{user}-{c}"),
                _ => format!("web-{}", random_id()),
            };
            let ev = InboundEvent {
                channel_type: CHANNEL_TYPE.into(),
                platform_id: user.to_owned(),
                thread_id: None,
                message_id: message_id.clone(),
                sender_id: user.to_owned(),
                sender_name: Some(user.to_owned()),
                text,
                is_mention: true,
                is_group: false,
                attachments: files,
                webhook: None,
                edit_of,
            };
            let (ack, rx) = Ack::new();
            if ch
                .events
                .send(ChannelEvent::Message(ev, ack))
                .await
                .is_err()
            {
                let _ = tx.send(serde_json::json!({"type": "rejected", "client_id": cid, "reason": "pinch is shutting down"}).to_string());
                return;
            }
            let frame = match rx.await {
                Ok(AckOutcome::Stored { routed, note, .. }) if routed > 0 || note.is_none() => {
                    serde_json::json!({"type": "accepted", "client_id": cid, "id": message_id})
                }
                // Answered by the host or waiting for an approval: shown
                // as what it is, not as a failure.
                Ok(AckOutcome::Stored {
                    note,
                    handled: true,
                    ..
                }) => {
                    serde_json::json!({"type": "handled", "client_id": cid, "id": message_id, "note": note})
                }
                Ok(AckOutcome::Stored { note, .. }) => {
                    serde_json::json!({"type": "rejected", "client_id": cid, "reason": note})
                }
                Ok(AckOutcome::Failed(why)) => {
                    serde_json::json!({"type": "rejected", "client_id": cid, "reason": why})
                }
                Err(_) => {
                    serde_json::json!({"type": "rejected", "client_id": cid, "reason": "the host dropped the message"})
                }
            };
            let _ = tx.send(frame.to_string());
        }
    }
}
