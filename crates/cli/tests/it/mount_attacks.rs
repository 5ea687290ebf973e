//! Issue 14, break 1: an agent turns links in its own folder into mounts of
//! the host, or reaches the host's sockets. Each test performs the attack
//! the way a prompt-injected agent would — through the `shell` tool of a
//! real runner in a real sandbox (bubblewrap, and Docker when a daemon
//! answers) — then makes the host spawn again and looks for the host from
//! inside.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use pinch_host::sandbox::Choice;

/// The attacker's script: `plant` leaves links where the host used to
/// follow them (the old tools folder, the agent's home, its instructions);
/// `look` reports what the next sandbox shows; `leak` asks the host's
/// sockets for work. `{secret}` and `{made}` are replaced per test.
const SCRIPT: &str = r#"
[[rule]]
contains = "plant"
tool = "shell"
args = { command = "ln -s / .tools; rm -rf .home && ln -s {made} .home; ln -sf {secret} AGENT.md 2>/dev/null; ls -la | grep -c -- '->'" }

[[rule]]
contains = "look"
tool = "shell"
args = { command = "echo TOOLS:; ls /opt/pinch/tools 2>&1 | head -5; echo MD:; head -c 200 /workspace/agent/AGENT.md; echo; echo CMDLINE:; tr '\\0' ' ' < /proc/1/cmdline; echo; echo HOME:; ls -ld .home | cut -c1" }

[[rule]]
after_tool = "*"
reply = "tool said: {tool_result}"
"#;

fn backends() -> Vec<Choice> {
    let mut v = Vec::new();
    if bwrap_or_skip() {
        v.push(Choice::Bwrap);
    }
    if docker_or_skip() {
        v.push(Choice::Docker);
    }
    v
}

#[test]
fn links_planted_in_the_workspace_never_reach_the_host() {
    for choice in backends() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("host-secret.txt");
        std::fs::write(&secret, "HOST-SECRET-42").unwrap();
        let made = tmp.path().join("made-by-the-host");
        let script = SCRIPT
            .replace("{secret}", &secret.to_string_lossy())
            .replace("{made}", &made.to_string_lossy());
        let cfg = with_script(host_config(tmp.path(), choice), &script);
        let data = cfg.data_dir.clone();
        let rt = rt();
        let host = rt.block_on(pinch_host::start(cfg)).unwrap();
        let mut c = Client::connect(&host.cli_socket);

        let planted = c.ask("plant");
        assert!(
            planted.iter().any(|t| t.starts_with("tool said: ")),
            "{choice:?}: {planted:?}"
        );
        let group = data.join("groups/main");
        assert!(
            std::fs::symlink_metadata(group.join(".tools"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{choice:?}: the agent planted .tools"
        );
        assert!(
            std::fs::symlink_metadata(group.join(".home"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{choice:?}: the agent planted .home"
        );

        // The next spawn is where the host used to follow them.
        let s = rt.block_on(host.sessions()).remove(0);
        rt.block_on(host.stop_runner(&s.id));
        wait_for("the runner to stop", Duration::from_secs(30), || {
            rt.block_on(host.sessions())[0].runner_pid.is_none()
        });
        let seen = c.ask("look").join("\n");

        assert!(seen.contains("TOOLS:"), "{choice:?}: {seen}");
        for host_thing in ["pinch.db", "sessions", "etc", "root", "usr"] {
            let tools_part = seen.split("MD:").next().unwrap();
            assert!(
                !tools_part.lines().any(|l| l.trim() == host_thing),
                "{choice:?}: /opt/pinch/tools shows the host's {host_thing}: {seen}"
            );
        }
        assert!(
            !seen.contains("HOST-SECRET-42"),
            "{choice:?}: the host's file reached the agent: {seen}"
        );
        assert!(
            seen.contains("# Instructions"),
            "{choice:?}: the operator's instructions are what the agent sees: {seen}"
        );
        let data_s = data.to_string_lossy();
        assert!(
            !seen.contains(data_s.as_ref()),
            "{choice:?}: a host path in the sandbox's /proc/1/cmdline: {seen}"
        );
        assert!(
            !made.exists(),
            "{choice:?}: the host created a folder through the agent's .home link"
        );
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "HOST-SECRET-42",
            "{choice:?}: the host wrote through a link"
        );
        rt.block_on(host.shutdown()).unwrap();
    }
}

/// The admin and CLI sockets refuse a sandboxed peer even when their
/// folder leaks into a sandbox (here bound in on purpose, as a leaked
/// path would be): the kernel's account of the peer decides, not the path.
#[test]
fn the_hosts_sockets_refuse_a_sandboxed_peer() {
    if !bwrap_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), Choice::Bwrap);
    let data = cfg.data_dir.clone();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let s = pinch_host::session::create_folder(
        &pinch_host::paths::DataDir::new(&data),
        "main",
        "sattack",
    )
    .unwrap();
    let mounts = pinch_host::sandbox::Mounts {
        in_dir: s.in_dir(),
        out_dir: s.out_dir(),
        inbox_dir: s.inbox(),
        outbox_dir: s.outbox(),
        agent_dir: data.join("groups/main"),
        global_dir: data.join("groups/global"),
        extra: vec![pinch_policy::mounts::Granted {
            host: data.join("run"),
            name: "leak".into(),
            read_write: true,
        }],
        data_root: data.clone(),
        ..Default::default()
    };
    std::fs::create_dir_all(data.join("groups/global")).unwrap();
    let bwrap = pinch_host::sandbox::Bwrap::new(pinch_host::sandbox::find_bwrap().unwrap());
    let py = r#"
import socket, sys
for name, line in (("admin.sock", b'{"id":1,"command":"sessions-list","args":{}}\n'), ("cli.sock", b'{"type":"message","id":"x1","text":"from the sandbox"}\n')):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect("/workspace/extra/leak/" + name)
    try:
        s.sendall(line)
    except OSError:
        pass  # the host may have answered and closed already
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except Exception as e:
        got += repr(e).encode()
    print(name, "->", got.decode(errors="replace").strip() or "closed")
"#;
    let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
    let out = bwrap
        .command_with(
            Path::new(PINCH),
            &mounts,
            &env,
            &["/usr/bin/python3", "-c", py],
        )
        .unwrap()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("admin.sock -> ") && text.contains("cli.sock -> "),
        "both sockets were reached by path: {text}"
    );
    assert!(
        text.contains("\"forbidden\""),
        "the admin socket names the refusal: {text}"
    );
    assert!(
        !text.contains("\"ok\":true"),
        "the admin socket served a sandbox: {text}"
    );
    let cli_line = text.lines().find(|l| l.starts_with("cli.sock")).unwrap();
    assert!(
        !cli_line.contains("hello") && !cli_line.contains("accepted"),
        "the CLI socket served a sandbox: {text}"
    );
    // The owner's own process is still served.
    let mut c = Client::connect(&data.join("run/cli.sock"));
    assert!(!c.ask("hello").is_empty());
    rt.block_on(host.shutdown()).unwrap();
}

/// An install from before issue 14 kept approved packages in the
/// workspace's `.tools`: a real folder there moves once to the host-only
/// `tools/<folder>/`; a link there is never followed, moved or bound.
#[test]
fn old_tools_folders_move_out_of_the_workspace_and_links_stay_put() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = host_config(tmp.path(), Choice::Process);
    let data = cfg.data_dir.clone();
    std::fs::create_dir_all(data.join("groups/main/.tools/python")).unwrap();
    std::fs::write(data.join("groups/main/.tools/python/demo.py"), "X = 1\n").unwrap();
    let rt = rt();
    let host = rt.block_on(pinch_host::start(cfg.clone())).unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join("tools/main/python/demo.py")).unwrap(),
        "X = 1\n"
    );
    assert!(
        std::fs::symlink_metadata(data.join("groups/main/.tools")).is_err(),
        "moved, not copied"
    );
    rt.block_on(host.shutdown()).unwrap();

    // An agent's link where the old folder was: left alone at the next start.
    std::fs::remove_dir_all(data.join("tools/main")).unwrap();
    std::os::unix::fs::symlink("/", data.join("groups/main/.tools")).unwrap();
    let host = rt.block_on(pinch_host::start(cfg)).unwrap();
    let mut c = Client::connect(&host.cli_socket);
    assert!(!c.ask("hello").is_empty(), "the group still works");
    rt.block_on(host.shutdown()).unwrap();
    assert!(std::fs::symlink_metadata(data.join("groups/main/.tools"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        std::fs::symlink_metadata(data.join("tools/main")).is_err(),
        "a link is never moved into the host's tools"
    );
}
