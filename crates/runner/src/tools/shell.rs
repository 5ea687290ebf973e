//! `shell(command, timeout_s=120)`: `sh -c` in the workspace.
//!
//! The command runs in its own session (`setsid`: its own process group and
//! no controlling terminal), with stdin on `/dev/null` so nothing waits on
//! a terminal (lesson 33). At the timeout the whole group is killed. stdout
//! and stderr are captured together up to [`OUTPUT_CAP`]. While it runs,
//! `container_state` records the tool and its declared timeout so the
//! host's sweep does not take a long command for a stuck runner.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{spec, Args, ToolCtx, ToolError, ToolResult};
use pinch_providers::ToolSpec;

pub const DEFAULT_TIMEOUT_S: u64 = 120;
pub const MAX_TIMEOUT_S: u64 = 3600;
/// Captured output, stdout and stderr together.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// After the shell exits, how long background processes that still hold
/// its output open may keep the capture waiting.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

pub fn specs() -> Vec<ToolSpec> {
    vec![spec(
        "shell",
        "Run a shell command (sh -c) in your workspace folder, inside your sandbox. stdin is empty (nothing can wait \
         for keyboard input); stdout and stderr are returned together, up to 64 KiB, with the exit code. The command \
         and everything it started are killed at the timeout.",
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command line, run with sh -c."},
                "timeout_s": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_S, "default": DEFAULT_TIMEOUT_S,
                              "description": "Seconds before the command is killed."}
            },
            "required": ["command"]
        }),
    )]
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub output: Vec<u8>,
    pub total_bytes: usize,
    pub lingering: bool,
}

pub fn call(ctx: &mut ToolCtx<'_>, m: &Map<String, Value>) -> ToolResult {
    let a = Args { tool: "shell", m };
    let command = a.str("command")?;
    if command.trim().is_empty() {
        return Err(ToolError("shell: `command` is empty".into()));
    }
    let timeout_s = a.opt_u64("timeout_s")?.unwrap_or(DEFAULT_TIMEOUT_S);
    if timeout_s == 0 || timeout_s > MAX_TIMEOUT_S {
        return Err(ToolError(format!(
            "shell: timeout_s must be between 1 and {MAX_TIMEOUT_S} seconds, got {timeout_s}"
        )));
    }
    let workspace = ctx.cfg.paths.workspace_dir.clone();
    ctx.set_tool_in_flight(Some(("shell", timeout_s * 1000)));
    tracing::info!(timeout_s, command = %truncate_chars(command, 200), "shell tool");
    let r = run(command, &workspace, Duration::from_secs(timeout_s));
    ctx.set_tool_in_flight(None);
    let o = r.map_err(|e| ToolError(format!("shell: could not start sh: {e}")))?;
    let (text, failed) = render(&o, timeout_s);
    if failed {
        Err(ToolError(text))
    } else {
        Ok(text)
    }
}

fn render(o: &Outcome, timeout_s: u64) -> (String, bool) {
    let mut s = String::new();
    let failed = if o.timed_out {
        s.push_str(&format!(
            "timed out after {timeout_s} s: the command and its process group were killed\n"
        ));
        true
    } else if let Some(code) = o.exit {
        s.push_str(&format!("exit code: {code}\n"));
        code != 0
    } else {
        s.push_str(&format!("killed by signal {}\n", o.signal.unwrap_or(0)));
        true
    };
    s.push_str(&String::from_utf8_lossy(&o.output));
    if o.total_bytes > o.output.len() {
        s.push_str(&format!(
            "\n[output truncated: {} bytes in all, the first {} shown; redirect to a file and read it in parts]",
            o.total_bytes,
            o.output.len()
        ));
    }
    if o.lingering {
        s.push_str("\n[background processes still hold the output open; what they write later is not captured]");
    }
    (s, failed)
}

/// The runner's egress forwarder (`http://127.0.0.1:PORT`), set once at
/// startup; commands get it as `HTTP(S)_PROXY`. `PINCH_EGRESS_PROXY` in the
/// environment is the fallback (tests of this module).
pub static EGRESS_PROXY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Runs `sh -c command` in `cwd` in a new session; kills the group at
/// `timeout`.
pub fn run(command: &str, cwd: &std::path::Path, timeout: Duration) -> std::io::Result<Outcome> {
    run_with(command, cwd, timeout, OUTPUT_CAP, true)
}

/// [`run`] keeping up to `cap` bytes, of stdout alone unless `with_stderr`
/// (stderr is then discarded).
#[allow(clippy::disallowed_methods)] // the shell tool runs the agent's command inside its own sandbox
pub fn run_with(
    command: &str,
    cwd: &std::path::Path,
    timeout: Duration,
    cap: usize,
    with_stderr: bool,
) -> std::io::Result<Outcome> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if with_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    cmd.env_remove("PINCH_HOST_FD");
    if let Some(p) = EGRESS_PROXY
        .get()
        .cloned()
        .or_else(|| std::env::var("PINCH_EGRESS_PROXY").ok())
    {
        if !p.is_empty() {
            cmd.envs(crate::egress::proxy_vars(&p));
        }
    }
    // SAFETY: setsid is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let buf = Arc::new(Mutex::new((Vec::<u8>::new(), 0usize)));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut readers = 0;
    for r in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        readers += 1;
        let buf = buf.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let mut r = r;
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut g = buf.lock().unwrap_or_else(|p| p.into_inner());
                        let room = cap.saturating_sub(g.0.len());
                        g.0.extend_from_slice(&chunk[..n.min(room)]);
                        g.1 += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let (status_tx, status_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = match status_rx.recv_timeout(timeout) {
        Ok(s) => s?,
        Err(_) => {
            timed_out = true;
            kill_group(pid);
            status_rx
                .recv()
                .map_err(|_| std::io::Error::other("the waiter thread died"))??
        }
    };
    // The readers end when every holder of the pipes is gone; background
    // processes may keep them open, so the wait is bounded.
    let mut ended = 0;
    let deadline = Instant::now()
        + if timed_out {
            Duration::from_secs(2)
        } else {
            DRAIN_GRACE
        };
    while ended < readers {
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => ended += 1,
            Err(_) => break,
        }
    }
    if timed_out {
        // Anything of the group that survived the first kill.
        kill_group(pid);
    }
    let (output, total_bytes) = {
        let g = buf.lock().unwrap_or_else(|p| p.into_inner());
        (g.0.clone(), g.1)
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(Outcome {
        exit: status.code(),
        signal: status.signal(),
        timed_out,
        output,
        total_bytes,
        lingering: ended < readers,
    })
}

fn kill_group(pid: i32) {
    // SAFETY: plain syscall; a negative pid names the process group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

fn truncate_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::*;
    use crate::tools::{call as tool_call, ToolCtx};

    #[test]
    fn runs_in_the_workspace_with_exit_code_and_both_streams() {
        let env = Env::new();
        std::fs::write(env.path("agent/marker.txt"), "x").unwrap();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        let r = tool_call(
            &mut ctx,
            "shell",
            r#"{"command": "ls; echo to-err >&2; exit 3"}"#,
        );
        assert!(r.is_error, "non-zero exit is an error result");
        assert!(r.content.starts_with("exit code: 3\n"), "{}", r.content);
        assert!(r.content.contains("marker.txt"), "{}", r.content);
        assert!(r.content.contains("to-err"), "{}", r.content);
        let r = tool_call(&mut ctx, "shell", r#"{"command": "read x; echo got:$x:"}"#);
        assert_eq!(
            r.content, "exit code: 0\ngot::\n",
            "stdin is empty, not a terminal"
        );
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let env = Env::new();
        let pidfile = env.path("agent/child.pid");
        let o = run(
            "sleep 300 & echo $! > child.pid; wait",
            &env.cfg.paths.workspace_dir,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(o.timed_out);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild (sleep) is gone too: kill(pid, 0) fails, or it is a zombie awaiting its reaper.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            if !alive || zombie {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the background sleep {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn output_is_capped_and_says_so() {
        let env = Env::new();
        let o = run(
            "head -c 200000 /dev/zero | tr '\\0' 'a'",
            &env.cfg.paths.workspace_dir,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(o.output.len(), OUTPUT_CAP);
        assert_eq!(o.total_bytes, 200_000);
        let (text, failed) = render(&o, 30);
        assert!(!failed);
        assert!(
            text.contains("[output truncated: 200000 bytes in all"),
            "{}",
            &text[text.len() - 200..]
        );
    }

    #[test]
    fn bad_arguments_are_error_results() {
        let env = Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &no_stop);
        for (args, want) in [
            ("{}", "`command` is required"),
            (r#"{"command": 5}"#, "must be a string"),
            (
                r#"{"command": "true", "timeout_s": 99999}"#,
                "between 1 and 3600",
            ),
            ("not json", "not valid JSON"),
        ] {
            let r = tool_call(&mut ctx, "shell", args);
            assert!(
                r.is_error && r.content.contains(want),
                "{args}: {}",
                r.content
            );
        }
    }

    #[test]
    fn container_state_shows_the_tool_while_it_runs() {
        let env = Env::new();
        let mut out = env.out();
        let cfg = env.cfg.clone();
        let db = env.cfg.paths.out_dir.join("outbound.db");
        let seen = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let c = pinch_proto::open::open_reader(&db, Duration::from_secs(5)).unwrap();
                let row: (Option<String>, Option<i64>, Option<String>) = c
                    .query_row("SELECT current_tool, tool_declared_timeout_ms, tool_started_at FROM container_state", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .unwrap();
                if row.0.is_some() {
                    return row;
                }
                assert!(
                    Instant::now() < deadline,
                    "the tool never showed in container_state"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let mut ctx = ToolCtx::new(&cfg, &mut out, &no_stop);
        let r = tool_call(
            &mut ctx,
            "shell",
            r#"{"command": "sleep 2", "timeout_s": 77}"#,
        );
        assert!(!r.is_error, "{}", r.content);
        let (tool, timeout, started) = seen.join().unwrap();
        assert_eq!(tool.as_deref(), Some("shell"));
        assert_eq!(timeout, Some(77_000));
        assert!(started.is_some());
        let after: Option<String> = out
            .query_row("SELECT current_tool FROM container_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(after, None, "cleared after the tool");
    }
}
