//! The Docker backend's lifetime rules (issue 8): a container outlives a
//! SIGKILLed host (no liveness pipe crosses into it), so the next host of
//! the same data dir removes it at start and answers what was pending;
//! the image is built once per binary and labelled with the install.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn containers(install: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=pinch.install={install}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_killed_hosts_containers_are_removed_by_the_next_host() {
    if !docker_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[runner]\nidle_exit_s = 600\n[host]\nboot_breaker = false\n",
    )
    .unwrap();
    let install = pinch_host::docker::install_id(&data);
    let mut host = start_daemon(&data, &cfg, "docker");
    let mut c = Client::connect(&data.join("run/cli.sock"));
    assert_eq!(
        c.ask("hello from docker"),
        vec!["Hello from pinch! You said: hello from docker".to_string()]
    );
    assert_eq!(containers(&install).len(), 1, "the warm runner's container");
    // The container runs the image named by the binary (one image serves
    // every install of that binary: whichever imported it first labelled
    // it, so the label is not this install's when another test was first).
    let out = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=pinch.install={install}"),
            "--format",
            "{{.Image}}",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pinch-runner:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    host.kill().unwrap();
    host.wait().unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        containers(&install).len(),
        1,
        "a container outlives its killed host"
    );
    let _host = start_daemon(&data, &cfg, "docker");
    wait_for(
        "the leftover container removed",
        Duration::from_secs(60),
        || containers(&install).is_empty(),
    );
    let mut c = Client::connect(&data.join("run/cli.sock"));
    assert_eq!(
        c.ask("still there?"),
        vec!["Hello from pinch! You said: still there?".to_string()]
    );
}
