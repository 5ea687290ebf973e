//! What a host says at start (issue 15): while the boot breaker holds it
//! back, another `pinch` says so (not "already running"); a data dir whose
//! socket paths cannot be bound is refused at start with the fix.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn pinch_chat_during_the_boot_breaker_wait_says_why_nothing_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "").unwrap();
    // Two unclean boots in the last minute: the third waits 10 s.
    std::fs::create_dir_all(data.join("run")).unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    std::fs::write(
        data.join("run/circuit-breaker.json"),
        format!("[{}, {}]", now - 2000, now - 1000),
    )
    .unwrap();
    let _h = start_daemon(&data, &cfg, "process");
    wait_for("the host to start waiting", Duration::from_secs(10), || {
        data.join("run/boot-wait.json").exists()
    });
    let out = pinch_chat(
        &["--sandbox", "process", "--provider", "scripted"],
        &[("PINCH_HOME", &data), ("PINCH_CONFIG", &cfg)],
        "hello\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is waiting") && err.contains("s more before it starts"),
        "{err}"
    );
    assert!(
        err.contains("3 times in the last hour without a clean exit")
            && err.contains("circuit-breaker.json"),
        "{err}"
    );
    assert!(!err.contains("already running"), "{err}");
}
