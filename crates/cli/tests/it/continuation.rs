//! The provider conversation (continuation) outlives runners; `/clear`
//! starts a new one; a resume the provider no longer knows resets once, not
//! forever (lessons 13, 14, 19).

use std::time::Duration;

use crate::common::*;
use pinch_host::sandbox::Choice;

fn conv(reply: &str) -> String {
    reply
        .split(':')
        .next()
        .unwrap()
        .trim_start_matches("conv ")
        .to_owned()
}

fn runner_logs(tmp: &std::path::Path) -> String {
    let mut all = String::new();
    for p in walk(&tmp.join("data/logs/runners")) {
        if p.extension().is_some_and(|x| x == "log") {
            all.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    all
}

#[test]
fn continuation_survives_respawn_and_clear_starts_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        "default_reply = \"conv {continuation}: {text}\"\n",
    );
    cfg.runner.idle_exit_ms = 200;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let a = c.ask("a").remove(0);
    wait_for("the idle exit", Duration::from_secs(10), || {
        host.stats.exits() == 1
    });
    let b = c.ask("b").remove(0);
    assert_eq!(host.stats.spawns(), 2, "a new runner answered b");
    assert!(conv(&a).starts_with("c-"), "{a}");
    assert_eq!(
        conv(&a),
        conv(&b),
        "the respawned runner resumed the same conversation"
    );
    assert_eq!(c.ask("/clear"), vec!["Session cleared.".to_string()]);
    let d = c.ask("d").remove(0);
    assert_ne!(conv(&d), conv(&a), "/clear started a new conversation: {d}");
    assert!(d.ends_with(": d"));
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn stale_resume_resets_once_then_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        "default_reply = \"conv {continuation}: {text}\"\nreject_unknown_continuations = true\n",
    );
    cfg.runner.idle_exit_ms = 200;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    let a = c.ask("a").remove(0);
    wait_for("the idle exit", Duration::from_secs(10), || {
        host.stats.exits() == 1
    });
    // The new runner's provider does not know the old conversation.
    let b = c.ask("b");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].ends_with(": b"), "answered after the reset: {b:?}");
    assert_ne!(conv(&b[0]), conv(&a));
    assert_eq!(
        runner_logs(tmp.path())
            .matches("starting a new one, once")
            .count(),
        1
    );
    rt.block_on(host.shutdown()).unwrap();
}

#[test]
fn a_resume_that_keeps_failing_resets_once_not_forever() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        "[[rule]]\ncontains = \"doomed\"\nerror = \"conversation gone\"\nerror_kind = \"session_not_found\"\n",
    );
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("fine").len(), 1);
    let r = c.ask("doomed");
    assert_eq!(r.len(), 1);
    assert!(r[0].starts_with("Sorry, I could not answer that"), "{r:?}");
    assert_eq!(
        runner_logs(tmp.path())
            .matches("starting a new one, once")
            .count(),
        1,
        "one reset, no loop"
    );
    assert_eq!(
        c.ask("still here?"),
        vec!["Hello from pinch! You said: still here?".to_string()]
    );
    rt.block_on(host.shutdown()).unwrap();
}

/// A stateless API is sent the earlier turns of the conversation, across a
/// respawn; `/clear` starts from nothing.
#[test]
fn earlier_turns_are_sent_along_and_clear_forgets_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = with_script(
        host_config(tmp.path(), Choice::Process),
        "default_reply = \"history {history}: {text}\"\n",
    );
    cfg.runner.idle_exit_ms = 200;
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert_eq!(c.ask("a"), vec!["history 0: a".to_string()]);
    assert_eq!(c.ask("b"), vec!["history 2: b".to_string()]);
    wait_for("the idle exit", Duration::from_secs(10), || {
        host.stats.exits() == 1
    });
    assert_eq!(
        c.ask("c"),
        vec!["history 4: c".to_string()],
        "a new runner reads the stored conversation"
    );
    assert_eq!(c.ask("/clear"), vec!["Session cleared.".to_string()]);
    assert_eq!(c.ask("d"), vec!["history 0: d".to_string()]);
    rt.block_on(host.shutdown()).unwrap();
}
