//! The CLI engine (SPEC §5.5): an external agent CLI (Claude Code, Codex,
//! or any program that reads a prompt on stdin and prints its answer) runs
//! in the sandbox as the turn's "provider".
//!
//! Per turn: a private directory (mode 0700) under `$TMPDIR` (tmpfs `/tmp`
//! in bwrap) holds the tool socket, an MCP config naming
//! `pinch runner mcp --socket <sock>` as the server `pinch`, and the system
//! prompt. A [`BridgeServer`] on that socket answers the CLI's tool calls;
//! its threads do not run tools themselves (the [`ToolCtx`] holds the
//! runner's only `outbound.db` writer): each call travels as a message to
//! the turn thread, which serves calls while it waits for the CLI to exit.
//!
//! The CLI runs in the workspace, in its own session (process group), with
//! `PR_SET_PDEATHSIG`; at the turn's timeout or a stop request the whole
//! group is killed. Its environment points the Anthropic and OpenAI SDK
//! variables at the runner's egress forwarder (`http://127.0.0.1:PORT`,
//! which relays to the credential proxy) with a placeholder key the proxy
//! replaces. Its stdout, trimmed, is the turn's final text; each line is
//! progress. While it runs `container_state.current_tool` is `cli:<command>`
//! with the turn's timeout, so the host's sweep widens its tolerance.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pinch_mcp::bridge::BridgeServer;
use pinch_proto::runner_config::{CliEngineSettings, CLI_DEFAULT_TIMEOUT_S};
use pinch_providers::{
    Capabilities, ErrorKind, Event, Provider, ProviderError, TurnRequest, TurnResult,
};

use crate::tools::{self, ToolCtx};

mod invocation;
pub use invocation::{
    environment, invocation, mcp_config_json, Files, Flavor, Invocation, PLACEHOLDER_KEY,
};

/// Captured stdout (the answer) beyond this is cut, with a note.
const STDOUT_CAP: usize = 1024 * 1024;
/// The tail of stderr quoted in an error.
const STDERR_TAIL: usize = 2048;
/// How often the turn thread looks at the clock and the stop request.
const TICK: Duration = Duration::from_millis(200);
/// Exit codes of the CLI taken as transient (the turn is tried again):
/// 75 is `EX_TEMPFAIL`.
const TRANSIENT_EXITS: [i32; 1] = [75];

/// The provider slot of a runner whose engine is a CLI: it answers
/// `capabilities` (tools are offered, over MCP) and `name`; turns run
/// through [`run`] from the runner's turn, which owns the tool context.
pub struct CliEngine {
    pub settings: CliEngineSettings,
}

impl Provider for CliEngine {
    fn name(&self) -> &str {
        "cli"
    }

    fn capabilities(&self) -> Capabilities {
        // A CLI that resumes its own session manages its own context: the
        // runner's history is not sent, so nothing to compact (window 0 =
        // no threshold). Others get the history as text, trimmed to a
        // window by the runner when it grows.
        let context_window = if Flavor::of(&self.settings).resumes() {
            0
        } else {
            200_000
        };
        // The CLI reads the inbox itself (the prompt names each file).
        Capabilities {
            tools: true,
            streaming: false,
            context_window,
            vision: false,
        }
    }

    /// Only reached by calls outside a turn's agent loop (a compaction
    /// summary): the CLI engine has none, the CLI keeps its own context.
    fn turn(
        &mut self,
        _req: &TurnRequest,
        _sink: &mut dyn FnMut(Event),
    ) -> Result<TurnResult, ProviderError> {
        Err(err(
            ErrorKind::Other,
            false,
            "the CLI engine cannot make a separate summary call (the agent CLI manages its own context); \
             older messages are left out of the text history instead"
                .into(),
        ))
    }
}

fn err(kind: ErrorKind, retryable: bool, message: String) -> ProviderError {
    ProviderError {
        message,
        retryable,
        kind,
        retry_after: None,
    }
}

/// What the turn thread hears while the CLI runs.
enum Msg {
    Tool {
        name: String,
        args: String,
        reply: mpsc::Sender<(String, bool)>,
    },
    Line(String),
    StdoutClosed,
    Exited(std::io::Result<ExitStatus>),
}

/// Removes the per-turn directory when the turn ends.
struct TurnDir(PathBuf);

impl Drop for TurnDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one turn of the CLI: serves its tool calls with `ctx` until it
/// exits, records progress for each line it prints (via `progress`), and
/// returns its stdout as the answer.
#[allow(clippy::disallowed_methods)] // the runner starts the agent CLI inside its own sandbox
pub fn run(
    s: &CliEngineSettings,
    model: Option<&str>,
    req: &TurnRequest,
    ctx: &mut ToolCtx<'_>,
    egress: Option<&str>,
    progress: &mut dyn FnMut(&mut ToolCtx<'_>),
) -> Result<TurnResult, ProviderError> {
    let timeout = Duration::from_secs(s.timeout_s.unwrap_or(CLI_DEFAULT_TIMEOUT_S));
    let internal = |what: &str, e: std::io::Error| {
        err(ErrorKind::Other, false, format!("cli engine: {what}: {e}"))
    };
    let dir = std::env::temp_dir().join(format!(
        "pinch-cli-{}",
        pinch_proto::runner_config::random_hex(6)
    ));
    std::fs::create_dir(&dir).map_err(|e| internal(&format!("creating {}", dir.display()), e))?;
    let dir = TurnDir(dir);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| internal("restricting the turn directory", e))?;
    let pinch = std::env::current_exe().map_err(|e| internal("finding the pinch executable", e))?;
    let files = Files {
        mcp_config: dir.0.join("mcp.json"),
        mcp_socket: dir.0.join("tools.sock"),
        system_prompt_file: dir.0.join("system.md"),
        pinch,
    };
    std::fs::write(
        &files.mcp_config,
        mcp_config_json(&files.pinch, &files.mcp_socket),
    )
    .map_err(|e| internal("writing the MCP config", e))?;
    std::fs::write(&files.system_prompt_file, &req.system)
        .map_err(|e| internal("writing the system prompt", e))?;

    let (tx, rx) = mpsc::channel::<Msg>();
    let tool_tx = tx.clone();
    let handler: pinch_mcp::Handler = Box::new(move |name, args| {
        let (reply, answer) = mpsc::channel();
        if tool_tx
            .send(Msg::Tool {
                name: name.to_owned(),
                args: args.to_owned(),
                reply,
            })
            .is_err()
        {
            return ("the pinch turn this call belongs to has ended".into(), true);
        }
        answer
            .recv()
            .unwrap_or_else(|_| ("the pinch turn ended before the tool ran".into(), true))
    });
    let _bridge = BridgeServer::start(&files.mcp_socket, req.tools.clone(), None, handler)
        .map_err(|e| {
            err(
                ErrorKind::Other,
                false,
                format!("cli engine: starting the tool bridge: {e}"),
            )
        })?;

    let inv = invocation(s, model, req, &files);
    let mut cmd = Command::new(&inv.program);
    cmd.args(&inv.args)
        .current_dir(&ctx.cfg.paths.workspace_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("PINCH_HOST_FD")
        .envs(environment(s, egress, &files));
    // SAFETY: setsid and prctl are async-signal-safe and touch no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        err(
            ErrorKind::Other,
            false,
            format!(
                "could not start the agent CLI {:?}: {e} (provider.cli.command must name a program visible inside the \
                 sandbox: /usr is the host's, read-only; the agent's folder is /workspace/agent)",
                inv.program
            ),
        )
    })?;
    let pid = child.id() as i32;
    let label = format!(
        "cli:{}",
        Path::new(&inv.program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    tracing::info!(command = %inv.program, pid, timeout_s = timeout.as_secs(), "agent CLI started");

    if let Some(mut stdin) = child.stdin.take() {
        let text = inv.stdin;
        std::thread::spawn(move || {
            // A CLI that exits without reading all of it is its business.
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx
                            .send(Msg::Line(String::from_utf8_lossy(&line).into_owned()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(Msg::StdoutClosed);
        });
    }
    let stderr_tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    if let Some(mut err_pipe) = child.stderr.take() {
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.extend_from_slice(&chunk[..n]);
                let excess = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..excess);
            }
        });
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Msg::Exited(child.wait()));
        });
    }
    drop(tx);

    let started = Instant::now();
    let remaining_ms =
        |started: Instant| timeout.saturating_sub(started.elapsed()).as_millis() as u64;
    ctx.set_tool_in_flight(Some((&label, remaining_ms(started))));
    let mut stdout = String::new();
    let mut cut = false;
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut stdout_closed = false;
    let mut killed: Option<&'static str> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut tools_run = 0u32;
    loop {
        if status.is_some()
            && (stdout_closed || drain_deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        match rx.recv_timeout(TICK) {
            Ok(Msg::Tool { name, args, reply }) => {
                let t0 = Instant::now();
                let out = tools::call(ctx, &name, &args);
                tools_run += 1;
                tracing::info!(tool = %name, is_error = out.is_error, ms = t0.elapsed().as_millis() as u64, "tool call from the agent CLI");
                let _ = reply.send((out.content, out.is_error));
                // A tool (shell, ask_user_question) clears the in-flight
                // record when it ends; the CLI is still running.
                if status.is_none() {
                    ctx.set_tool_in_flight(Some((&label, remaining_ms(started))));
                }
            }
            Ok(Msg::Line(l)) => {
                tracing::debug!(line = %l.trim_end(), "agent CLI output");
                if stdout.len() + l.len() <= STDOUT_CAP {
                    stdout.push_str(&l);
                } else {
                    cut = true;
                }
                progress(ctx);
            }
            Ok(Msg::StdoutClosed) => stdout_closed = true,
            Ok(Msg::Exited(s)) => {
                status = Some(s);
                // Background children may hold stdout open: bounded wait.
                drain_deadline = Some(Instant::now() + Duration::from_secs(2));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if status.is_none() && killed.is_none() {
            if started.elapsed() >= timeout {
                killed = Some("timeout");
            } else if (ctx.should_stop)() {
                killed = Some("stop");
            }
            if let Some(why) = killed {
                tracing::warn!(why, pid, "killing the agent CLI's process group");
                kill_group(pid);
            }
        }
    }
    // Whatever the CLI left behind (its MCP server, background commands).
    kill_group(pid);
    ctx.set_tool_in_flight(None);
    let tail = String::from_utf8_lossy(&stderr_tail.lock().unwrap_or_else(|p| p.into_inner()))
        .trim()
        .to_owned();
    tracing::info!(
        tools = tools_run,
        ms = started.elapsed().as_millis() as u64,
        "agent CLI finished"
    );
    match killed {
        Some("timeout") => {
            return Err(err(
                ErrorKind::Timeout,
                false,
                format!("the agent CLI ran longer than {} s (provider.cli.timeout_s); it and its processes were killed", timeout.as_secs()),
            ))
        }
        Some(_) => return Err(err(ErrorKind::Other, false, "the turn was stopped while the agent CLI ran; it was killed".into())),
        None => {}
    }
    let status = match status {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(internal("waiting for the agent CLI", e)),
        None => {
            return Err(err(
                ErrorKind::Other,
                false,
                "cli engine: lost track of the agent CLI".into(),
            ))
        }
    };
    if status.success() {
        let mut text = stdout.trim().to_owned();
        if cut {
            text.push_str(&format!("\n[answer cut at {STDOUT_CAP} bytes]"));
        }
        return Ok(TurnResult {
            text,
            ..Default::default()
        });
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown status".into(),
    };
    let retryable = status.code().is_some_and(|c| TRANSIENT_EXITS.contains(&c));
    let detail = if tail.is_empty() {
        stdout
            .trim()
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    } else {
        tail
    };
    Err(err(
        if retryable {
            ErrorKind::Server
        } else {
            ErrorKind::Other
        },
        retryable,
        format!(
            "the agent CLI {:?} failed with {how}: {detail}",
            inv.program
        ),
    ))
}

impl crate::Runner {
    /// A turn of the CLI engine, with the runner's retry policy for
    /// transient failures (exit 75). Tool rows the CLI's calls write commit
    /// at once, as in the agent loop; the answer goes through the output
    /// convention like any provider's.
    pub(crate) fn cli_turn(
        &mut self,
        req: &TurnRequest,
        turn: &crate::turn::TurnState,
    ) -> Result<TurnResult, ProviderError> {
        let Some(settings) = self.cfg.provider.cli.clone() else {
            return Err(err(
                ErrorKind::Other,
                false,
                "provider.kind is \"cli\" but provider.cli is missing".into(),
            ));
        };
        let model = self.cfg.provider.model.clone();
        let egress = tools::shell::EGRESS_PROXY.get().cloned();
        let tries = self.cfg.timings.provider_tries.max(1);
        let base = self.cfg.timings.provider_retry_base_ms.max(1);
        let stop_file = self.cfg.paths.in_dir.join(pinch_proto::layout::STOP);
        let rid = self.cfg.runner_id.clone();
        let should_stop = move || {
            crate::signals::stop_requested()
                || std::fs::read_to_string(&stop_file).is_ok_and(|s| s.trim() == rid)
        };
        let mut attempt = 1;
        loop {
            let mut ctx = ToolCtx::new(&self.cfg, &mut self.out, &should_stop);
            ctx.memory = Some(self.memory.as_mut().map_err(|e| e.as_str()));
            ctx.destinations = turn.destinations.clone();
            ctx.origin = turn.origin.clone();
            ctx.in_reply_to = Some(turn.in_reply_to.clone());
            ctx.in_max = turn.in_max;
            ctx.counter = self.tool_counter;
            let mut last = Instant::now();
            let mut progress = |ctx: &mut ToolCtx<'_>| {
                if last.elapsed() >= crate::PROGRESS_EVERY {
                    last = Instant::now();
                    let now_s = pinch_proto::time::now();
                    if let Err(e) =
                        pinch_proto::progress::touch(ctx.out, &ctx.cfg.runner_id, &now_s)
                    {
                        tracing::warn!("could not record turn progress: {e}");
                    }
                }
            };
            let r = run(
                &settings,
                model.as_deref(),
                req,
                &mut ctx,
                egress.as_deref(),
                &mut progress,
            );
            self.tool_counter = ctx.counter;
            let acked = std::mem::take(&mut ctx.acked);
            drop(ctx);
            self.acked.extend(acked);
            match r {
                Err(e) if e.retryable && attempt < tries && !should_stop() => {
                    let wait = crate::retry_wait(attempt, base, &e);
                    tracing::warn!(
                        attempt,
                        of = tries,
                        wait_ms = wait.as_millis() as u64,
                        "agent CLI failed, retrying: {e}"
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

fn kill_group(pid: i32) {
    // SAFETY: plain syscall; a negative pid names the process group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::invocation::tests::req;
    use super::*;

    fn sh(script: &str, timeout_s: u64) -> CliEngineSettings {
        CliEngineSettings {
            command: "sh".into(),
            args: Some(vec!["-c".into(), script.into()]),
            timeout_s: Some(timeout_s),
            ..Default::default()
        }
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn stdout_is_the_answer_and_stdin_the_prompt() {
        let env = crate::tools::testing::Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &crate::tools::testing::no_stop);
        let s = sh("pwd; test -f \"$PINCH_MCP_CONFIG\" && test -S \"$PINCH_MCP_SOCKET\" && echo files-ok; cat", 30);
        let r = run(&s, None, &req(true), &mut ctx, None, &mut |_| {}).unwrap();
        let ws = env.cfg.paths.workspace_dir.canonicalize().unwrap();
        assert!(
            r.text.starts_with(&format!("{}\nfiles-ok\n", ws.display())),
            "{}",
            r.text
        );
        assert!(r.text.ends_with("PROMPT"), "{}", r.text);
        assert!(r.tool_calls.is_empty());
    }

    #[test]
    fn a_failing_cli_is_an_error_with_its_stderr_and_75_is_retryable() {
        let env = crate::tools::testing::Env::new();
        let mut out = env.out();
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &crate::tools::testing::no_stop);
        let e = run(
            &sh("echo 'no credits left' >&2; exit 2", 30),
            None,
            &req(true),
            &mut ctx,
            None,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            !e.retryable
                && e.message.contains("exit code 2")
                && e.message.contains("no credits left"),
            "{e}"
        );
        let e = run(
            &sh("exit 75", 30),
            None,
            &req(true),
            &mut ctx,
            None,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.retryable, "{e}");
        let e = run(
            &CliEngineSettings {
                command: "/nonexistent/agent".into(),
                ..Default::default()
            },
            None,
            &req(true),
            &mut ctx,
            None,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("could not start the agent CLI \"/nonexistent/agent\"")
                && e.message.contains("inside the sandbox"),
            "{e}"
        );
    }

    #[test]
    fn timeout_kills_the_whole_group_and_the_tool_record_is_cleared() {
        let env = crate::tools::testing::Env::new();
        let mut out = env.out();
        let pidfile = env.path("bg.pid");
        {
            let mut ctx = ToolCtx::new(&env.cfg, &mut out, &crate::tools::testing::no_stop);
            let script = format!(
                "sleep 300 & echo $! > {}; echo working; sleep 300",
                pidfile.display()
            );
            let e = run(
                &sh(&script, 1),
                None,
                &req(true),
                &mut ctx,
                None,
                &mut |_| {},
            )
            .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
            assert!(e.message.contains("longer than 1 s"), "{e}");
        }
        let bg: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed with the group (it may linger as a zombie of init briefly).
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(bg)
            && !std::fs::read_to_string(format!("/proc/{bg}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
        {
            assert!(
                Instant::now() < deadline,
                "background child {bg} survived the group kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let tool: Option<String> = out
            .query_row("SELECT current_tool FROM container_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tool, None);
    }

    #[test]
    fn a_stop_request_kills_it() {
        let env = crate::tools::testing::Env::new();
        let mut out = env.out();
        let asked = std::cell::Cell::new(0u32);
        // Asked to stop on the third look.
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() >= 3
        };
        let mut ctx = ToolCtx::new(&env.cfg, &mut out, &stop);
        let e = run(
            &sh("sleep 300", 600),
            None,
            &req(true),
            &mut ctx,
            None,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.message.contains("stopped"), "{e}");
    }
}
