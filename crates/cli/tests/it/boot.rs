//! What a host says at start (issue 15): while the boot breaker holds it
//! back, another `pinch` says so (not "already running"); a data dir whose
//! socket paths cannot be bound is refused at start with the fix.

use std::time::Duration;

use crate::common::*;

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

#[test]
fn a_data_dir_too_deep_for_unix_sockets_is_refused_at_start_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // admin.sock and cli.sock fit; a session's proxy socket would not, so
    // before this check the host started, accepted messages, and failed
    // every runner spawn.
    let base = tmp.path().as_os_str().len();
    let pad = "p".repeat(85 - base - "/data".len() - 1);
    let dir = tmp.path().join(pad);
    let cfg = host_config(&dir, pinch_host::sandbox::Choice::Process);
    assert_eq!(cfg.data_dir.as_os_str().len(), 85);
    let rt = rt();
    let err = match rt.block_on(pinch_host::start(cfg)) {
        Ok(h) => {
            rt.block_on(h.shutdown()).unwrap();
            panic!("the host started in a data dir whose proxy socket cannot be bound");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("llm.sock") && err.contains("sun_path") && err.contains("at most 74 bytes"),
        "{err}"
    );
    assert!(
        !dir.join("data").exists(),
        "refused before creating anything"
    );
}
