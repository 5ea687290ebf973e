//! R8 end to end (decision 0037): a real host spawns a real runner whose
//! real `anthropic` provider talks, through the session's credential proxy,
//! to a fake Messages API on loopback (`common/fake_api.rs`) that fails on
//! a script — 429 with and without `retry-after`, 529, 500, 503, a request
//! never answered, a stream cut off — and then answers. What is asserted is
//! what can be observed from outside: the replies the user gets, the
//! requests the fake received (how many, when, with which key), the
//! runner's heartbeat file, and the host's runner (same pid, no exit).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::common::fake_api::{Answer, FakeApi, Seen};
use crate::common::*;
use pinch_host::proxy::{Secret, Upstream};
use pinch_proto::runner_config::ProviderSettings;

const KEY: &str = "sk-ant-r8-only-the-host-7c2e";

/// `provider_retry_base_ms`: the cap of the wait after the k-th failed
/// attempt is `BASE << (k - 1)` (full jitter below it), at most 60 s.
const BASE_MS: u64 = 50;
/// The runner's heartbeat and the host's ceiling on its age: a runner whose
/// heartbeat stopped for longer is killed as stuck.
const HEARTBEAT_MS: u64 = 100;
const CEILING: Duration = Duration::from_millis(1_500);
/// The proxy's `upstream_timeout`: how long a silent upstream is waited
/// for. Longer than the ceiling, so the wait proves the heartbeat goes on.
const SILENCE: Duration = Duration::from_millis(2_500);
/// The `retry-after` of the scripted 429 (seconds): longer than the
/// ceiling too.
const RETRY_AFTER_S: u64 = 2;
/// Slack on every upper bound: scheduling, the proxy, a loaded machine.
const SLACK: Duration = Duration::from_secs(4);

/// A host whose agent runs the `anthropic` provider against `api` through
/// the credential proxy, which alone holds the key.
fn host_against(dir: &Path, api: &FakeApi, tries: Option<u32>) -> pinch_host::HostConfig {
    let mut cfg = host_config(dir, any_sandbox());
    cfg.provider = ProviderSettings {
        kind: "anthropic".into(),
        model: Some("claude-fake".into()),
        ..Default::default()
    };
    cfg.proxy_upstreams = vec![Upstream::new(
        "anthropic",
        api.base_url(),
        Some(("x-api-key".into(), Secret::new(KEY.to_owned()))),
    )];
    cfg.proxy_limits.upstream_timeout = SILENCE;
    cfg.runner.provider_retry_base_ms = BASE_MS;
    if let Some(t) = tries {
        cfg.runner.provider_tries = t;
    }
    cfg.runner.heartbeat_ms = HEARTBEAT_MS;
    cfg.stuck.heartbeat_ceiling = CEILING;
    cfg
}

/// The cap on the wait after the `k`th failed attempt (from 1), as the
/// runner's policy (`agent.rs`, SPEC §5.5) computes it.
fn cap(k: usize) -> Duration {
    Duration::from_millis((BASE_MS << (k - 1)).min(60_000))
}

/// How many distinct heartbeat times newer than the call the runner wrote
/// to `out/heartbeat` before `done()` (waits at most 30 s for it).
fn heartbeats_until(session_dir: &Path, mut done: impl FnMut() -> bool) -> usize {
    let hb = session_dir.join("out/heartbeat");
    let since = SystemTime::now();
    let mut beats = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out watching the heartbeat"
        );
        if let Ok(t) = std::fs::metadata(&hb).and_then(|m| m.modified()) {
            if t > since {
                beats.insert(t);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    beats.len()
}

/// Every request went to the Messages API with the host's key, put there by
/// the proxy; the key is in no runner process's environment and in no
/// runner configuration.
fn assert_key_only_from_the_proxy(seen: &[Seen], data: &Path, runner_pid: u32) {
    for (i, r) in seen.iter().enumerate() {
        assert!(
            r.head.starts_with("POST /v1/messages HTTP/1.1"),
            "request {}: {}",
            i + 1,
            r.head
        );
        assert!(
            r.head.contains(&format!("x-api-key: {KEY}"))
                && r.head.contains("anthropic-version: 2023-06-01"),
            "request {}: the proxy injected the key: {}",
            i + 1,
            r.head
        );
        assert!(r.body.contains("\"model\":\"claude-fake\""), "{}", r.body);
    }
    for pid in process_tree(runner_pid) {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains(KEY),
            "the key is in the environment of runner process {pid}"
        );
    }
    for f in walk(data) {
        if f.file_name().is_some_and(|n| n == "runner.json") {
            assert!(!std::fs::read_to_string(&f).unwrap().contains(KEY));
        }
    }
}

/// The runner's pid (waits for the host to report it).
fn runner_pid(rt: &tokio::runtime::Runtime, host: &pinch_host::HostHandle) -> u32 {
    let mut pid = None;
    wait_for("the runner's pid", Duration::from_secs(10), || {
        pid = rt
            .block_on(host.sessions())
            .first()
            .and_then(|s| s.runner_pid);
        pid.is_some()
    });
    pid.unwrap()
}

/// The claim on `message_id` in the session's `outbound.db`: its status
/// and the runner holding it.
fn claim(session_dir: &Path, message_id: &str) -> (String, String) {
    outbound(session_dir)
        .query_row(
            "SELECT status, runner_id FROM processing_ack WHERE message_id = ?1",
            [message_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

fn runner_exits(data: &Path) -> i64 {
    pinch_proto::rusqlite::Connection::open(data.join("pinch.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM runner_exits", [], |r| r.get(0))
        .unwrap()
}

/// Every kind of failure once, in one turn, then an answer: the user gets
/// that answer and nothing of the cut stream; the fake saw exactly one
/// request per attempt, spaced within the backoff's bounds (at least the
/// `retry-after` asked for, at least the proxy's wait on the silent
/// upstream); the heartbeat went on during the long waits, and the host
/// kept the same runner throughout.
#[test]
fn every_provider_fault_is_retried_within_the_backoff_and_the_user_gets_the_answer() {
    const HALF: &str = "HALF-ANSWER-FROM-A-CUT-STREAM";
    let status = |code, retry_after_s| Answer::Status {
        code,
        retry_after_s,
    };
    let script = vec![
        status(429, None),
        status(429, Some(RETRY_AFTER_S)),
        status(529, None),
        status(500, None),
        status(503, None),
        Answer::Silent,
        Answer::Truncated(HALF.into()),
    ];
    let attempts = script.len() + 1;
    let api = FakeApi::start(script);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_against(
            tmp.path(),
            &api,
            Some(attempts as u32),
        )))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let id = c.say("tell me about retries", "q1");
    api.wait_for_requests(1, Duration::from_secs(30));
    let pid = runner_pid(&rt, &host);
    let dir = rt.block_on(host.sessions()).remove(0).dir;
    let msg = format!("{id}:main");
    let held = claim(&dir, &msg);
    assert_eq!(held.0, "processing", "claimed for the first attempt");

    // The wait the 429's `retry-after` asked for (after request 2).
    api.wait_for_requests(2, Duration::from_secs(30));
    let beats = heartbeats_until(&dir, || api.count() >= 3);
    assert!(
        beats >= 2,
        "the heartbeat went on during the retry-after wait: {beats} beats"
    );
    // The silent upstream (request 6): the proxy waits SILENCE for it.
    api.wait_for_requests(6, Duration::from_secs(60));
    let beats = heartbeats_until(&dir, || api.seen()[5].closed_at.is_some());
    assert!(
        beats >= 2,
        "the heartbeat went on while the upstream was silent: {beats} beats"
    );
    assert_eq!(
        claim(&dir, &msg),
        held,
        "after the long waits the same runner still holds the claim"
    );

    let replies = c.settled_then_barrier(&id);
    assert_eq!(
        replies,
        vec![FakeApi::default_reply(attempts)],
        "one reply, the last attempt's answer; nothing of the cut stream"
    );
    let seen = api.seen();
    assert_eq!(seen.len(), attempts, "one request per attempt, no more");

    // Lower bounds, each measured from an instant that comes before the
    // wait it bounds (the fake read request k before it answered it, and
    // the runner waits only once it has the answer): so they hold however
    // late the fake itself is scheduled. After the 429's `retry-after`:
    let gap = seen[2].at - seen[1].at;
    assert!(
        gap >= Duration::from_secs(RETRY_AFTER_S),
        "attempt 3 came {gap:?} after the 429 that asked for {RETRY_AFTER_S} s"
    );
    // The proxy's wait on the silent request 6 began after request 5 was
    // answered; it gave up (closing the connection) only after SILENCE.
    let silent = seen[5].closed_at.expect("the proxy closed request 6") - seen[4].at;
    assert!(
        silent >= SILENCE,
        "the proxy gave up on the silent upstream {silent:?} after request 5"
    );
    let gap = seen[6].at - seen[4].at;
    assert!(gap >= SILENCE, "attempt 7 came {gap:?} after attempt 5");
    // Upper bounds, generous: the wait after the k-th failure is at most
    // its cap (full jitter below it) or the retry-after, plus what the
    // attempt itself took, plus slack.
    for k in 1..attempts {
        let gap = seen[k].at - seen[k - 1].at;
        let (asked, took) = match &seen[k - 1].answer {
            Answer::Status {
                retry_after_s: Some(s),
                ..
            } => (Duration::from_secs(*s), Duration::ZERO),
            Answer::Silent => (Duration::ZERO, SILENCE),
            _ => (Duration::ZERO, Duration::ZERO),
        };
        let ceiling = asked.max(cap(k)) + took + SLACK;
        assert!(
            gap <= ceiling,
            "attempt {} came {gap:?} after attempt {k}: more than {ceiling:?}",
            k + 1
        );
    }

    // The host never killed or replaced the runner.
    assert_eq!(runner_pid(&rt, &host), pid, "the same runner throughout");
    assert_eq!(host.stats.spawns(), 1);
    assert_eq!(host.stats.exits(), 0);
    assert_eq!(runner_exits(&data), 0);
    assert_key_only_from_the_proxy(&seen, &data, pid);
    rt.block_on(host.shutdown()).unwrap();
}

/// A provider that stays overloaded: the runner tries exactly as often as
/// the policy says (5 by default), then the user gets one reply naming the
/// cause; the runner lives on and the next message is answered by the
/// request after those five.
#[test]
fn a_provider_that_stays_down_is_tried_five_times_and_the_user_is_told_why() {
    let tries = pinch_proto::runner_config::Timings::default().provider_tries as usize;
    assert_eq!(tries, 5, "SPEC §5.5: 5 tries");
    let overloaded = Answer::Status {
        code: 529,
        retry_after_s: None,
    };
    let api = FakeApi::start(vec![overloaded; tries]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_against(tmp.path(), &api, None)))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let id = c.say("are you there?", "q1");
    let replies = c.settled_then_barrier(&id);
    assert_eq!(
        replies.len(),
        1,
        "exactly one line for the failure: {replies:?}"
    );
    assert!(
        replies[0].starts_with("Sorry, I could not answer that: the model provider failed (")
            && replies[0].contains("overloaded")
            && replies[0].contains("HTTP 529"),
        "{replies:?}"
    );
    assert_eq!(api.count(), tries, "{tries} attempts, not more");
    let pid = runner_pid(&rt, &host);
    let s = rt.block_on(host.sessions()).remove(0);
    let status: String = outbound(&s.dir)
        .query_row(
            "SELECT status FROM processing_ack WHERE message_id = ?1",
            [format!("{id}:main")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(
        c.ask("and now?"),
        vec![FakeApi::default_reply(tries + 1)],
        "the same runner answers the next message with the next request"
    );
    assert_eq!(runner_pid(&rt, &host), pid);
    assert_eq!(host.stats.exits(), 0);
    assert_key_only_from_the_proxy(&api.seen(), &data, pid);
    rt.block_on(host.shutdown()).unwrap();
}

/// An upstream that never answers, every time: the proxy gives up on each
/// request after its `upstream_timeout` (not earlier), the runner tries as
/// often as it is told, and the user's one reply says what happened — the
/// model API sent nothing within the proxy's timeout — not a parse error.
#[test]
fn a_silent_upstream_is_given_up_after_the_proxy_timeout_and_the_user_told_so() {
    let api = FakeApi::start(vec![Answer::Silent, Answer::Silent]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = rt();
    let host = rt
        .block_on(pinch_host::start(host_against(tmp.path(), &api, Some(2))))
        .unwrap();
    let mut c = Client::connect(&host.cli_socket);
    // Before anything the proxy waits on: the lower bounds start here.
    let t0 = Instant::now();
    let id = c.say("hello?", "q1");
    api.wait_for_requests(1, Duration::from_secs(30));
    let pid = runner_pid(&rt, &host);
    let replies = c.settled_then_barrier(&id);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].starts_with("Sorry, I could not answer that: the model provider failed (")
            && replies[0].contains("HTTP 504")
            && replies[0].contains("upstream anthropic sent nothing for 2.5 s")
            && replies[0].contains("upstream_timeout_s"),
        "the reply names the cause: {replies:?}"
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "two tries, no more");
    for (k, r) in seen.iter().enumerate() {
        let closed = r.closed_at.expect("the proxy closed the silent request");
        // Each wait began after the one before had ended (strict, from t0);
        // each ended not long after the request arrived (generous).
        let since_t0 = closed - t0;
        let waits = SILENCE * (k as u32 + 1);
        assert!(
            since_t0 >= waits,
            "request {} given up {since_t0:?} after the message: sooner than {waits:?}",
            k + 1
        );
        let waited = closed - r.at;
        assert!(
            waited <= SILENCE + SLACK,
            "request {} given up only after {waited:?}",
            k + 1
        );
    }
    assert_eq!(runner_pid(&rt, &host), pid, "the same runner throughout");
    assert_eq!(host.stats.exits(), 0);
    assert_eq!(runner_exits(&data), 0);
    rt.block_on(host.shutdown()).unwrap();
}

/// A model call longer than the host's claim-stuck tolerance (decision
/// 0040): the upstream is silent for the proxy's whole `upstream_timeout`,
/// then answers the retry. The call is in flight with its bound, so the
/// runner is not killed as stuck half-way (it was: the claim made no
/// progress for `claim_stuck`), and the user gets the answer from the same
/// runner; the host's record of the call names it while it runs.
#[test]
fn a_model_call_longer_than_the_claim_stuck_tolerance_is_waited_for() {
    let api = FakeApi::start(vec![Answer::Silent, Answer::Reply("worth the wait".into())]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cfg = host_against(tmp.path(), &api, Some(2));
    // Shorter than the silent upstream, and no slack hides the difference.
    cfg.stuck.claim_stuck = SILENCE / 2;
    cfg.stuck.tool_slack = Duration::ZERO;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let t0 = Instant::now();
    let id = c.say("think hard", "q1");
    api.wait_for_requests(1, Duration::from_secs(30));
    let pid = runner_pid(&rt, &host);
    let s = rt.block_on(host.sessions()).remove(0);
    let (tool, bound): (Option<String>, Option<i64>) = outbound(&s.dir)
        .query_row(
            "SELECT current_tool, tool_declared_timeout_ms FROM container_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(tool.as_deref(), Some("model"), "the call is in flight");
    assert_eq!(
        bound,
        Some(3 * SILENCE.as_millis() as i64),
        "bounded by the proxy's three waits"
    );
    let replies = c.settled_then_barrier(&id);
    assert_eq!(replies, vec!["worth the wait".to_owned()]);
    assert!(
        t0.elapsed() > SILENCE,
        "the turn outlived the claim-stuck tolerance ({:?})",
        t0.elapsed()
    );
    assert_eq!(api.count(), 2, "the silent request and its retry");
    assert_eq!(runner_pid(&rt, &host), pid, "the same runner throughout");
    assert_eq!(host.stats.exits(), 0, "no runner was killed as stuck");
    assert_eq!(runner_exits(&data), 0);
    let (tool, _): (Option<String>, Option<i64>) = outbound(&s.dir)
        .query_row(
            "SELECT current_tool, tool_declared_timeout_ms FROM container_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(tool, None, "nothing is in flight after the turn");
    rt.block_on(host.shutdown()).unwrap();
}
