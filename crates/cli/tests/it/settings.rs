//! Settings that make no sense are refused at start, naming the file, the
//! key, the value and what is allowed (issue 15), by `pinch host` and by
//! `pinch chat` alike, with exit 78 and nothing started.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::PINCH;

/// Runs `pinch <sub> …` with the config; it must exit by itself (a host that
/// accepted the config would run until killed).
fn run(sub: &str, cfg: &std::path::Path, data: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(PINCH)
        .arg(sub)
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(cfg)
        .args(["--sandbox", "process", "--provider", "scripted"])
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("PINCH__HOST__CRASH_BUDGET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut done = None;
    crate::common::wait_for(
        &format!("pinch {sub} to refuse the config"),
        Duration::from_secs(30),
        || {
            done = child.try_wait().unwrap();
            if done.is_none() && data.join("run/cli.sock").exists() {
                let _ = child.kill();
                panic!("pinch {sub} started with a senseless config");
            }
            done.is_some()
        },
    );
    let out = child.wait_with_output().unwrap();
    (
        done.unwrap().code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn host_and_chat_refuse_senseless_settings_naming_file_key_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[host]\ncrash_budget = 0\n[runner]\npoll_idle_s = 0\n[proxy]\negress_allow = \"api.github.com\"\n",
    )
    .unwrap();
    for sub in ["host", "chat"] {
        let data = tmp.path().join(format!("data-{sub}"));
        let (code, stderr) = run(sub, &cfg, &data);
        assert_eq!(code, Some(78), "pinch {sub}: {stderr}");
        for says in [
            format!(
                "{}: host.crash_budget must be at least 1, got 0",
                cfg.display()
            ),
            format!("{}: runner.poll_idle_s = 0 is not allowed", cfg.display()),
            format!(
                "{}: proxy.egress_allow = \"api.github.com\" is a string",
                cfg.display()
            ),
        ] {
            assert!(
                stderr.contains(&says),
                "pinch {sub}: {says:?} missing from {stderr}"
            );
        }
        assert!(
            !data.join("pinch.db").exists(),
            "pinch {sub} created a data dir before refusing"
        );
    }
}
