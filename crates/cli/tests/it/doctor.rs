//! `pinch doctor` (issue 8) as a user runs it: on a fresh machine it lists
//! exactly what is missing, each with its fix; on a working setup it
//! passes; a configured model server that does not answer is named.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs `pinch doctor` with a clean environment: HOME (and so the default
/// config and data dirs) under `home`, PATH as given, no model keys.
fn doctor(home: &Path, path: &str, extra_env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut c = Command::new(PINCH);
    c.arg("doctor")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", path);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn fails(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.trim_start().starts_with("FAIL"))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn a_fresh_machine_gets_exactly_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let (code, out) = doctor(&tmp.path().join("home"), bin.to_str().unwrap(), &[], &[]);
    assert_eq!(code, 1, "{out}");
    let f = fails(&out);
    assert_eq!(f.len(), 2, "exactly two problems: {out}");
    assert!(
        f.iter()
            .any(|l| l.contains("bubblewrap (bwrap) is not installed")),
        "{out}"
    );
    assert!(
        f.iter().any(|l| l.contains("no model is configured")),
        "{out}"
    );
    assert!(
        out.contains("fix: sudo apt-get install -y bubblewrap"),
        "{out}"
    );
    assert!(out.contains("fix: pinch model fetch"), "{out}");
    assert!(
        out.contains("does not exist yet; it is created on first start"),
        "{out}"
    );
    assert!(out.contains("2 problems"), "{out}");
}

#[test]
fn a_working_setup_passes_and_a_silent_model_server_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let data = home.join(".local/share/pinch");
    std::fs::create_dir_all(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let bwrap_ok = pinch_host::sandbox::select(pinch_host::sandbox::Choice::Bwrap).is_ok();
    let sandbox = if bwrap_ok { "bwrap" } else { "process" };
    let (code, out) = doctor(
        &home,
        &path,
        &[],
        &["--provider", "scripted", "--sandbox", sandbox],
    );
    assert_eq!(fails(&out), Vec::<String>::new(), "{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("fix: chmod 700"),
        "a data dir others can read is a warning: {out}"
    );
    assert!(
        out.contains("scripted provider only replays scripts"),
        "{out}"
    );
    // A model server that is configured but not there.
    let (code, out) = doctor(
        &home,
        &path,
        &[("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")],
        &["--provider", "openai", "--sandbox", sandbox],
    );
    assert_eq!(code, 1, "{out}");
    let f = fails(&out);
    assert_eq!(f.len(), 1, "{out}");
    assert!(
        f[0].contains("openai at http://127.0.0.1:1/v1 is not reachable"),
        "{out}"
    );
    assert!(
        out.contains("fix: start the model server, or fix provider.openai.base_url"),
        "{out}"
    );
}

#[test]
fn each_configured_channel_token_is_checked_without_showing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".config/pinch")).unwrap();
    std::fs::write(
        home.join(".config/pinch/pinch.toml"),
        "[telegram]\n[slack]\nbot_token_env = \"MY_SLACK_BOT\"\n",
    )
    .unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let secret = "123456:VERY-secret-telegram-token";
    let (code, out) = doctor(
        &home,
        &path,
        &[
            ("TELEGRAM_BOT_TOKEN", secret),
            ("MY_SLACK_BOT", "xoxb-also-secret"),
        ],
        &["--provider", "scripted"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[telegram] token_env: TELEGRAM_BOT_TOKEN is set"),
        "{out}"
    );
    assert!(
        out.contains("[slack] bot_token_env: MY_SLACK_BOT is set"),
        "{out}"
    );
    let f = fails(&out);
    assert!(
        f.iter()
            .any(|l| l.contains("[slack] app_token_env: SLACK_APP_TOKEN is not set")),
        "{out}"
    );
    assert!(
        out.contains("fix: export SLACK_APP_TOKEN=… (the app-level token xapp-…"),
        "{out}"
    );
    assert!(
        !out.contains("VERY-secret") && !out.contains("also-secret"),
        "a token value was shown: {out}"
    );
}

/// `[provider.cli]` with flavor `claude` and a bare `command = "claude"`:
/// doctor looks for it as the sandbox would. One on this machine's PATH
/// but outside what the sandbox shows (here a temp dir; in life ~/.nvm) is
/// named as invisible there; as root, doctor warns that Claude Code runs as
/// root, told by pinch that it is sandboxed (issue 15).
#[test]
fn a_bare_claude_is_found_and_root_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(home.join(".config/pinch")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("claude"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        home.join(".config/pinch/pinch.toml"),
        "[provider]\ndefault = \"cli\"\n[provider.cli]\ncommand = \"claude\"\nflavor = \"claude\"\n",
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (_, out) = doctor(&home, &path, &[("ANTHROPIC_API_KEY", "x")], &[]);
    assert!(
        out.contains(&format!(
            "the agent CLI: claude is {}, which the sandbox does not see",
            bin.join("claude").display()
        )) && out.contains("fix: install it system-wide"),
        "{out}"
    );
    let root_warning = out
        .lines()
        .any(|l| l.contains("warn") && l.contains("pinch runs as root with the claude flavor"));
    assert_eq!(root_warning, unsafe { libc::geteuid() } == 0, "{out}");
}

/// An MCP server installed under a home directory (a pyenv Python's
/// script) exists on the machine but not in the sandbox: doctor says so;
/// one found in /bin passes.
#[test]
fn an_mcp_server_the_sandbox_cannot_see_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let shims = home.join(".pyenv/shims");
    std::fs::create_dir_all(&shims).unwrap();
    let fetch = shims.join("mcp-server-fetch");
    std::fs::write(&fetch, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fetch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[mcp.servers.fetch]\ncommand = \"mcp-server-fetch\"\n\n[mcp.servers.cat]\ncommand = \"cat\"\n",
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, out) = doctor(
        &home,
        &path,
        &[("PINCH_CONFIG", cfg.to_str().unwrap())],
        &["--provider", "scripted", "--sandbox", "bwrap"],
    );
    assert_eq!(code, 1, "{out}");
    let f: Vec<String> = fails(&out)
        .into_iter()
        .filter(|l| l.contains("MCP"))
        .collect();
    assert_eq!(f.len(), 1, "{out}");
    assert!(
        f[0].contains("MCP server fetch: mcp-server-fetch is")
            && f[0].contains(".pyenv/shims/mcp-server-fetch, which the sandbox does not see")
            && f[0].contains("a Python under pyenv"),
        "{out}"
    );
    assert!(
        out.contains("MCP server cat: /usr/bin/cat (visible in the sandbox)")
            || out.contains("MCP server cat: /bin/cat (visible in the sandbox)"),
        "{out}"
    );
}
