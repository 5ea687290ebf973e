//! The live view (issue 18, decision 0048) through a real host, runner and
//! sandbox, seen from the CLI socket as `pinch chat` sees it: the working
//! state, the reply streamed before its final row exists, a runner killed
//! mid-stream (exactly one final reply), Stop, and a hostile runner's
//! pieces refused.

use std::time::{Duration, Instant};

use pinch_channels::cli_socket::{ClientMsg, ServerMsg};

use crate::common::*;

const STORY: &str = "once upon a time there was a tiny crab who lived in a shell";

fn story_script(stream_ms: u64) -> String {
    format!(
        "[[rule]]\ncontains = \"story\"\nreply = \"{STORY}\"\nstream_ms = {stream_ms}\n\n\
         [[rule]]\ncontains = \"slow\"\nreply = \"slow: {{text}}\"\ndelay_ms = 60000\n"
    )
}

/// A host with the story script (its reply streamed `stream_ms` apart),
/// retries without a pause, and a CLI client.
fn start(
    tmp: &std::path::Path,
    stream_ms: u64,
) -> (tokio::runtime::Runtime, pinch_host::HostHandle, Client) {
    let mut cfg = with_script(host_config(tmp, any_sandbox()), &story_script(stream_ms));
    cfg.retry_base = Duration::ZERO;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let c = Client::connect(&host.cli_socket);
    (rt, host, c)
}

/// Frames of any kind until `f` says stop (or `within` passes: a panic).
fn frames_until(
    c: &mut Client,
    within: Duration,
    mut f: impl FnMut(&ServerMsg) -> bool,
) -> Vec<ServerMsg> {
    let until = Instant::now() + within;
    // What `say` set aside while it waited for the acceptance.
    let mut got = std::mem::take(&mut c.live);
    if got.iter().any(&mut f) {
        return got;
    }
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; got {got:#?}");
        let Some(m) = c.recv_any_within(left) else {
            continue;
        };
        if let ServerMsg::Message { id, .. } = &m {
            c.send(&ClientMsg::Ack { id: id.clone() });
        }
        let stop = f(&m);
        got.push(m);
        if stop {
            return got;
        }
    }
}

/// The drafts' text as a client puts it together (a piece at 0 starts over).
fn assembled(frames: &[ServerMsg], reply_to: &str) -> String {
    let mut text = String::new();
    for f in frames {
        if let ServerMsg::Draft {
            reply_to: Some(r),
            at,
            text: t,
        } = f
        {
            if r == reply_to {
                if *at == 0 {
                    text.clear();
                }
                assert_eq!(*at, text.len(), "pieces arrive in order");
                text.push_str(t);
            }
        }
    }
    text
}

fn finals(frames: &[ServerMsg]) -> Vec<String> {
    message_texts(frames)
}

fn reply_rows(dir: &std::path::Path, in_id: &str) -> i64 {
    let Ok(c) =
        pinch_proto::open::open_reader(&dir.join("out/outbound.db"), Duration::from_secs(5))
    else {
        return 0;
    };
    c.query_row(
        "SELECT COUNT(*) FROM messages_out WHERE in_reply_to = ?1",
        [in_id],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[test]
fn the_reply_streams_before_its_final_row_and_arrives_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, host, mut c) = start(tmp.path(), 120);
    let id = c.say("tell me a story", "s1");
    let dir = rt.block_on(host.sessions()).pop().unwrap().dir;
    let in_id = format!("{id}:main");
    let mut first_draft_rows = None;
    let frames = frames_until(&mut c, Duration::from_secs(60), |m| {
        if let (ServerMsg::Draft { .. }, None) = (m, first_draft_rows) {
            // The model is still writing: no reply row exists yet.
            first_draft_rows = Some(reply_rows(&dir, &in_id));
        }
        matches!(m, ServerMsg::Idle { reply_to: Some(r) } if *r == id)
    });
    assert_eq!(
        first_draft_rows,
        Some(0),
        "text was shown before the final row: {frames:#?}"
    );
    let working: Vec<&str> = frames
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Working {
                reply_to: Some(r),
                state,
                ..
            } if *r == id => Some(state.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        working.contains(&"thinking"),
        "the model call was shown: {working:?}"
    );
    let drafts = frames
        .iter()
        .filter(|m| matches!(m, ServerMsg::Draft { .. }))
        .count();
    assert!(drafts >= 3, "streamed in pieces, got {drafts}");
    assert_eq!(assembled(&frames, &id), STORY);
    let pos = |f: &dyn Fn(&ServerMsg) -> bool| frames.iter().position(f).unwrap();
    let last_draft = frames
        .iter()
        .rposition(|m| matches!(m, ServerMsg::Draft { .. }))
        .unwrap();
    let message = pos(&|m| matches!(m, ServerMsg::Message { .. }));
    assert!(last_draft < message, "drafts come before the reply");
    assert_eq!(finals(&frames), vec![STORY.to_owned()]);
    // Nothing more: no second reply.
    let rest = c.until_barrier();
    assert!(finals(&rest).is_empty(), "{rest:#?}");
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn a_runner_killed_mid_stream_leaves_exactly_one_final_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, host, mut c) = start(tmp.path(), 150);
    let id = c.say("a story please", "k1");
    let mut frames = frames_until(
        &mut c,
        Duration::from_secs(60),
        |m| matches!(m, ServerMsg::Draft { text, .. } if !text.is_empty()),
    );
    let pid = runner_process(&rt, &host, 1);
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    // The draft is dropped, the message tried again by a new runner, and
    // its reply arrives once.
    frames.extend(frames_until(
        &mut c,
        Duration::from_secs(60),
        |m| matches!(m, ServerMsg::Settled { ids, .. } if ids.contains(&id)),
    ));
    let idle = frames
        .iter()
        .position(|m| matches!(m, ServerMsg::Idle { reply_to: Some(r) } if *r == id))
        .expect("the cut-off draft was dropped");
    let restart = frames
        .iter()
        .skip(idle)
        .position(|m| matches!(m, ServerMsg::Draft { at: 0, .. }));
    assert!(restart.is_some(), "the retry streamed again: {frames:#?}");
    assert!(host.stats.spawns() >= 2);
    frames.extend(c.until_barrier());
    assert_eq!(finals(&frames), vec![STORY.to_owned()], "{frames:#?}");
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn stop_cancels_the_turn_and_it_is_not_tried_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, host, mut c) = start(tmp.path(), 0);
    let id = c.say("slow thoughts", "t1");
    frames_until(
        &mut c,
        Duration::from_secs(60),
        |m| matches!(m, ServerMsg::Working { reply_to: Some(r), .. } if *r == id),
    );
    let started = Instant::now();
    c.send(&ClientMsg::Stop);
    let (mut told, mut idle) = (false, false);
    let frames = frames_until(&mut c, Duration::from_secs(30), |m| {
        told |= matches!(m, ServerMsg::Notice { text } if text.starts_with("Stopped"));
        idle |= matches!(m, ServerMsg::Idle { reply_to: Some(r) } if *r == id);
        told && idle
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped at once, not after the 60 s call"
    );
    assert!(
        !frames
            .iter()
            .any(|m| matches!(m, ServerMsg::Message { .. })),
        "{frames:#?}"
    );
    let dir = rt.block_on(host.sessions()).pop().unwrap().dir;
    let status: String = inbound(&dir)
        .query_row(
            "SELECT status FROM messages_in WHERE id = ?1",
            [format!("{id}:main")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "cancelled");
    // The next message is answered by a new runner; the stopped one is
    // not tried again, and the stop cost no crash budget.
    let texts = c.ask("a story now");
    assert_eq!(texts, vec![STORY.to_owned()]);
    let rest = c.until_barrier();
    assert!(
        !message_texts(&rest).iter().any(|t| t.contains("slow")),
        "{rest:#?}"
    );
    assert!(notice_texts(&rest).iter().all(|t| !t.contains("quarantin")));
    // Nothing in flight: Stop says so.
    c.send(&ClientMsg::Stop);
    let n = frames_until(&mut c, Duration::from_secs(30), |m| {
        matches!(m, ServerMsg::Notice { .. })
    });
    assert!(notice_texts(&n)[0].starts_with("Nothing to stop"), "{n:#?}");
    rt.block_on(host.shutdown()).unwrap();
}

/// A hostile runner streams to a message that is not its turn's: refused
/// by the host's records, nothing reaches the conversation.
#[test]
fn pieces_for_messages_not_in_flight_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, host, mut c) = start(tmp.path(), 0);
    let id = c.say("a story", "h1");
    c.until_settled(&id);
    let s = rt.block_on(host.sessions()).pop().unwrap();
    let sock = host.data_dir.join("run/proxy").join(&s.id).join("llm.sock");
    let post = |reply_to: &str| {
        let body = serde_json::json!({"reply_to": reply_to, "at": 0, "text": "FORGED"}).to_string();
        post_to_proxy(&sock, "/_pinch/stream", &body)
    };
    // Unknown, and finished (its turn is over).
    let unknown = post("cli-nope:main");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    wait_for("the turn's status synced", Duration::from_secs(10), || {
        inbound(&s.dir)
            .query_row(
                "SELECT status FROM messages_in WHERE id = ?1",
                [format!("{id}:main")],
                |r| r.get::<_, String>(0),
            )
            .is_ok_and(|st| st == "completed")
    });
    let done = post(&format!("{id}:main"));
    assert!(
        done.starts_with("HTTP/1.1 404") || done.starts_with("HTTP/1.1 409"),
        "{done}"
    );
    let bad = post_to_proxy(&sock, "/_pinch/stream", "{not json");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    c.until_barrier();
    assert!(
        !c.live
            .iter()
            .any(|m| matches!(m, ServerMsg::Draft { text, .. } if text.contains("FORGED"))),
        "{:#?}",
        c.live
    );
    rt.block_on(host.shutdown()).unwrap();
}
