//! `pinch`: the one binary. `pinch chat` (start here), `pinch host` (the
//! daemon), `pinch bench` (the docs/targets.md figures), and the hidden
//! `pinch runner` that sandboxes start. One binary so host and runner can
//! never differ in version.

mod admin;
mod bench;
mod channels;
mod chaos;
mod chat;
mod chat_input;
mod config;
mod doctor;
mod logging;
mod model;
mod qr;
mod recover;
mod secrets;
mod secrets_oauth;
mod service;
mod soak;
mod spinner;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pinch",
    version,
    about = "A personal AI-assistant host: chat channels in, sandboxed agents, replies out."
)]
struct Cli {
    /// Data directory (default: $XDG_DATA_HOME/pinch or ~/.local/share/pinch).
    #[arg(long, global = true, env = "PINCH_HOME")]
    data_dir: Option<PathBuf>,
    /// Configuration file (default: ~/.config/pinch/pinch.toml; absent = defaults).
    #[arg(long, global = true, env = "PINCH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct HostFlags {
    /// Model provider: anthropic, openai, local or scripted (default: see README).
    #[arg(long)]
    provider: Option<String>,
    /// Sandbox backend: auto, bwrap, docker, or process (no isolation, development only).
    #[arg(long)]
    sandbox: Option<String>,
    /// Script file for the scripted provider.
    #[arg(long)]
    script: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with your assistant in the terminal (starts an embedded host if none is running).
    Chat {
        #[command(flatten)]
        flags: HostFlags,
        /// When stdin is not a terminal: seconds to wait for each reply.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Chat in the browser instead: serve web chat (on [http] listen,
        /// default 127.0.0.1:7878) and print its URL with the token.
        #[arg(long)]
        web: bool,
    },
    /// Run the daemon in the foreground.
    Host {
        #[command(flatten)]
        flags: HostFlags,
        /// Log JSON lines (one object per event) instead of text; also PINCH_LOG_FORMAT=json.
        #[arg(long)]
        log_json: bool,
    },
    /// Manage the running host: `pinch admin <resource> <verb> [id] [--key value …]` (`pinch admin --help` lists them).
    Admin(admin::AdminArgs),
    /// The credentials agents may use without seeing them: `pinch secrets add|list|rm|rotate|edit|oauth|audit`.
    Secrets(secrets::SecretsArgs),
    /// Check this machine and configuration; each problem with the command that fixes it.
    Doctor {
        #[command(flatten)]
        flags: HostFlags,
    },
    /// One-time set-up of a channel: `pinch channels signal link`, `pinch channels whatsapp link|install` (link pinch to your account by QR code).
    Channels(channels::ChannelsArgs),
    /// Run pinch as a systemd service: `pinch service install|uninstall|status|print [--system]`.
    Service(service::ServiceArgs),
    /// The offline model: `pinch model fetch` (download SmolLM2), `pinch model path`, `pinch model list`.
    Model(model::ModelArgs),
    /// Measure the docs/targets.md figures on this machine (`pinch bench chaos` for R3/R4).
    Bench(BenchCmd),
    /// Run a session's agent (started by the host inside a sandbox).
    #[command(hide = true, args_conflicts_with_subcommands = true)]
    Runner {
        /// Path to runner.json.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        sub: Option<RunnerSub>,
    },
}

#[derive(Subcommand)]
enum RunnerSub {
    /// Serve the runner's tools over MCP on stdio (for an agent CLI in the sandbox).
    Mcp {
        /// The runner's tool socket (JSON lines, see pinch-mcp's `bridge`).
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCmd {
    #[command(subcommand)]
    sub: Option<BenchSub>,
    #[command(flatten)]
    figures: bench::BenchArgs,
}

#[derive(Subcommand)]
enum BenchSub {
    /// Kill runners and the host with SIGKILL under load; count lost and duplicated messages (R3, R4).
    Chaos(chaos::ChaosArgs),
    /// P8: a long run at a steady rate; RSS and fd drift, lost messages (`--duration 1h --rate 10`).
    Soak(soak::SoakArgs),
    /// P10: the local model's load time, time to first token and tokens/s on this CPU (build with --release).
    P10(bench::P10Args),
}

fn main() -> ExitCode {
    // The data dir and everything pinch writes are the owner's alone (issue 14).
    pinch_host::private::restrict_umask();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Configuration reads variables only from this map (config::Env).
    let env = config::Env::process();
    match cli.command {
        Command::Runner {
            sub: Some(RunnerSub::Mcp { socket }),
            ..
        } => {
            // stdout is the MCP channel: logs go to stderr only.
            logging::init_stderr(false, "PINCH_LOG", "warn");
            exit(runner_mcp(&socket))
        }
        Command::Runner {
            config: Some(config),
            sub: None,
        } => {
            logging::init_stderr(false, "PINCH_LOG", "info");
            ExitCode::from(pinch_runner::run(&config) as u8)
        }
        Command::Runner {
            config: None,
            sub: None,
        } => {
            eprintln!("pinch runner: give --config <runner.json> (or the `mcp` subcommand)");
            ExitCode::from(2)
        }
        Command::Admin(mut args) => {
            // `--data-dir`/`--config` after `admin` are among its words.
            let (data_dir, config) = match args.take_globals() {
                Ok(g) => g,
                Err(msg) => {
                    eprintln!("pinch admin: {msg}");
                    return ExitCode::from(2);
                }
            };
            // Admin needs only the data dir: no provider or model checks.
            let flags = HostFlags {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            };
            let (dir, listen, login) =
                match host_config(data_dir.or(cli.data_dir), config.or(cli.config), &flags) {
                    Ok(c) => (c.data_dir, c.http.map(|h| h.listen), c.login),
                    Err(e) => return exit(Err(e)),
                };
            // The secrets' audit is read from the store (no host needed).
            if let Some(code) = admin::audit_words(&dir, args.words()) {
                return ExitCode::from(code);
            }
            // Offline recovery of pinch.db (issue 15): no host to talk to.
            if recover::is_offline(args.words()) {
                return ExitCode::from(recover::run(dir, &login, args.words()) as u8);
            }
            ExitCode::from(admin::run(&dir, listen, args) as u8)
        }
        Command::Secrets(args) => {
            let flags = HostFlags {
                sandbox: Some("process".into()),
                provider: Some("scripted".into()),
                ..Default::default()
            };
            exit((|| {
                let c = host_config(cli.data_dir, cli.config, &flags)?;
                secrets::run(&c.data_dir, c.secrets_key_file.as_deref(), args).map(|()| 0)
            })())
        }
        Command::Channels(args) => exit(channels::run(cli.data_dir, cli.config, args, &env)),
        Command::Model(args) => exit((|| {
            let file = config::load_file(cli.config.as_deref(), &env)
                .map_err(|e| ConfigError(format!("{e:#}")))?;
            let data_dir = cli
                .data_dir
                .clone()
                .or_else(|| file.data_dir.clone())
                .unwrap_or_else(|| config::default_data_dir(&env));
            let local = config::local_model_path(&data_dir, &file)?;
            model::run(&data_dir, &local, args)
        })()),
        Command::Bench(BenchCmd {
            sub: Some(BenchSub::Chaos(args)),
            ..
        }) => exit(chaos::run(args)),
        Command::Bench(BenchCmd {
            sub: Some(BenchSub::Soak(args)),
            ..
        }) => exit(soak::run(args)),
        Command::Bench(BenchCmd {
            sub: Some(BenchSub::P10(args)),
            ..
        }) => exit((|| {
            let file = config::load_file(cli.config.as_deref(), &env)
                .map_err(|e| ConfigError(format!("{e:#}")))?;
            let data_dir = cli
                .data_dir
                .clone()
                .or_else(|| file.data_dir.clone())
                .unwrap_or_else(|| config::default_data_dir(&env));
            bench::p10(config::local_model_path(&data_dir, &file)?, args)
        })()),
        Command::Bench(BenchCmd { sub: None, figures }) => exit(bench::run(cli.data_dir, figures)),
        Command::Doctor { flags } => {
            let config_path = cli
                .config
                .clone()
                .unwrap_or_else(|| config::default_config_path(&env));
            let data_dir = cli
                .data_dir
                .clone()
                .or_else(|| {
                    config::load_file(cli.config.as_deref(), &env)
                        .ok()
                        .and_then(|f| f.data_dir)
                })
                .unwrap_or_else(|| config::default_data_dir(&env));
            let file = config::load_file(cli.config.as_deref(), &env).ok();
            let channel_envs = file.as_ref().map(config::channel_envs).unwrap_or_default();
            let channel_probes = file
                .as_ref()
                .map(|f| config::channel_probes(f, &data_dir, &env))
                .unwrap_or_default();
            let config =
                host_config(cli.data_dir, cli.config, &flags).map_err(|e| format!("{e:#}"));
            ExitCode::from(doctor::run(doctor::Input {
                config_path,
                data_dir,
                config,
                channel_envs,
                channel_probes,
            }) as u8)
        }
        Command::Service(args) => {
            let config_path = cli
                .config
                .clone()
                .unwrap_or_else(|| config::default_config_path(&env));
            let config_path = std::path::absolute(&config_path).unwrap_or(config_path);
            let data_dir = cli
                .data_dir
                .clone()
                .or_else(|| {
                    config::load_file(cli.config.as_deref(), &env)
                        .ok()
                        .and_then(|f| f.data_dir)
                })
                .unwrap_or_else(|| config::default_data_dir(&env));
            let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
            exit(service::run(args, data_dir, config_path))
        }
        Command::Host { flags, log_json } => {
            if log_json {
                // Runners inherit nothing from the host's environment, so
                // this only reaches the host's own logger.
                std::env::set_var("PINCH_LOG_FORMAT", "json");
            }
            logging::init_stderr(std::io::stderr().is_terminal(), "PINCH_LOG", "info");
            exit(run_host(cli.data_dir, cli.config, flags))
        }
        Command::Chat {
            flags, web: true, ..
        } => exit(run_web_chat(cli.data_dir, cli.config, flags)),
        Command::Chat {
            flags,
            timeout,
            web: false,
        } => exit(run_chat(
            cli.data_dir,
            cli.config,
            flags,
            Duration::from_secs(timeout),
        )),
    }
}

fn exit(r: Result<i32>) -> ExitCode {
    match r {
        Ok(c) => ExitCode::from(c as u8),
        Err(e) => {
            eprintln!("pinch: error: {e:#}");
            let code = if e.downcast_ref::<ConfigError>().is_some() {
                78
            } else {
                1
            };
            ExitCode::from(code)
        }
    }
}

/// `pinch runner mcp`: the MCP bridge (SPEC §5.5, CLI engine). Lists the
/// runner's tools once over its socket, then serves them on stdio, sending
/// each call back to the runner. A call the runner cannot answer (it went
/// away) is a tool error the agent CLI shows its model.
fn runner_mcp(socket: &std::path::Path) -> Result<i32> {
    let mut bridge = pinch_mcp::bridge::BridgeClient::connect(socket)?;
    let (tools, instructions) = bridge.list()?;
    tracing::info!(
        tools = tools.len(),
        "serving the runner's tools over MCP on stdio"
    );
    let handler: pinch_mcp::Handler = Box::new(move |name, args| match bridge.call(name, args) {
        Ok(r) => r,
        Err(e) => (format!("pinch could not run {name}: {e}"), true),
    });
    pinch_mcp::serve_stdio(tools, instructions, handler)?;
    Ok(0)
}

/// A configuration problem (exit 78).
#[derive(Debug)]
struct ConfigError(String);
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

fn host_config(
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    flags: &HostFlags,
) -> Result<pinch_host::HostConfig> {
    // The binary's edge: configuration sees the process environment here.
    let env = config::Env::process();
    let file =
        config::load_file(config.as_deref(), &env).map_err(|e| ConfigError(format!("{e:#}")))?;
    let data_dir = data_dir
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| config::default_data_dir(&env));
    let o = config::Overrides {
        provider: flags.provider.clone(),
        sandbox: flags.sandbox.clone(),
        script: flags.script.clone(),
    };
    config::resolve(data_dir, &file, &o, &env).map_err(|e| ConfigError(format!("{e:#}")).into())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_host(data_dir: Option<PathBuf>, config: Option<PathBuf>, flags: HostFlags) -> Result<i32> {
    let cfg = host_config(data_dir, config, &flags)?;
    let web_chat = cfg.http.as_ref().is_some_and(|h| h.web);
    runtime()?.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Handlers first, so a SIGTERM during boot is a graceful stop too.
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let host = pinch_host::start(cfg).await.map_err(sandbox_hint)?;
        // Where web chat is, and how to sign in (never the token itself:
        // this line may go to a journal others can read).
        if let (true, Some(addr)) = (web_chat, host.http_addr) {
            eprintln!("{}", web_chat_line(addr));
        }
        let stop = host.shutdown_sender();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            stop();
        });
        host.wait().await?;
        Ok(0)
    })
}

/// `pinch host`'s line about web chat: its address and how a browser
/// signs in.
fn web_chat_line(addr: std::net::SocketAddr) -> String {
    format!(
        "pinch: web chat at http://{addr}/ · sign a browser in with the one-time link `pinch admin web-link` prints (or send the token from `pinch admin web-token` as a bearer token)"
    )
}

/// Sandbox selection failures are configuration errors (exit 78).
fn sandbox_hint(e: anyhow::Error) -> anyhow::Error {
    let s = format!("{e:#}");
    if s.contains("bubblewrap") {
        ConfigError(s).into()
    } else {
        e
    }
}

/// `pinch chat --web`: the host with web chat on; prints a one-time login
/// link and runs until Ctrl-C or SIGTERM.
fn run_web_chat(
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    flags: HostFlags,
) -> Result<i32> {
    // [http] listen counts even when the file turns on neither web chat nor a webhook.
    let file_listen = config::load_file(config.as_deref(), &config::Env::process())
        .map_err(|e| ConfigError(format!("{e:#}")))?
        .http
        .listen;
    let mut cfg = host_config(data_dir, config, &flags)?;
    let socket = cfg.data_dir.join("run/cli.sock");
    let listen = match &mut cfg.http {
        Some(h) => {
            h.web = true;
            h.listen
        }
        None => {
            let listen = file_listen
                .as_deref()
                .unwrap_or(pinch_host::config::HttpSettings::DEFAULT_LISTEN);
            let listen: std::net::SocketAddr = listen.parse().map_err(|_| {
                ConfigError(format!(
                    "http.listen {listen:?} is not host:port (e.g. 127.0.0.1:7878)"
                ))
            })?;
            let h = pinch_host::config::HttpSettings::local(listen, true);
            pinch_host::config::check_listen(&h).map_err(|e| ConfigError(e.to_string()))?;
            cfg.http = Some(h);
            listen
        }
    };
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        println!("{}", pinch_host::web_login_url(&cfg.data_dir, listen, "/")?);
        eprintln!(
            "pinch: a host is already running for {}; the one-time link works if its configuration has [web] enabled = true",
            cfg.data_dir.display()
        );
        return Ok(0);
    }
    std::fs::create_dir_all(cfg.data_dir.join("logs"))
        .with_context(|| format!("cannot create the data dir {} (choose a writable location with --data-dir or PINCH_HOME)", cfg.data_dir.display()))?;
    logging::init_file(&cfg.data_dir.join("logs/host.log"))?;
    runtime()?.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let host = pinch_host::start(cfg.clone()).await.map_err(sandbox_hint)?;
        let addr = host.http_addr.unwrap_or(listen);
        // A one-time link: it signs the browser in (a cookie) and is then spent.
        println!("{}", pinch_host::web_login_url(&cfg.data_dir, addr, "/")?);
        eprintln!(
            "pinch: web chat with agent `main` in a {} sandbox · data {} · Ctrl-C to stop",
            host.sandbox.as_str(),
            cfg.data_dir.display()
        );
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        host.shutdown().await?;
        Ok(0)
    })
}

fn run_chat(
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    flags: HostFlags,
    timeout: Duration,
) -> Result<i32> {
    let interactive = std::io::stdin().is_terminal();
    // Piped input is read first; bad UTF-8 is replaced, not refused (chat.rs).
    let (input, input_error) = if interactive {
        (Vec::new(), None)
    } else {
        chat::read_all(std::io::stdin().lock())
    };
    // A running daemon serves the socket: talk to it, with its
    // configuration (no provider of our own needed). Otherwise run an
    // embedded host in this process (same code path as `pinch host`).
    let env = config::Env::process();
    let file =
        config::load_file(config.as_deref(), &env).map_err(|e| ConfigError(format!("{e:#}")))?;
    let dir = data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| config::default_data_dir(&env));
    let running = pinch_host::paths::DataDir::new(&dir).cli_socket();
    // The connection that finds a host is the one chatted on (chat.rs).
    let first = std::os::unix::net::UnixStream::connect(&running).ok();
    let cfg = if first.is_some() {
        if flags.provider.is_some() || flags.sandbox.is_some() || flags.script.is_some() {
            eprintln!(
                "pinch: a host is already running for {}: --provider/--sandbox/--script are ignored (its configuration decides)",
                dir.display()
            );
        }
        None
    } else {
        Some(host_config(data_dir, config, &flags)?)
    };
    let socket = match &cfg {
        Some(c) => c.data_dir.join("run/cli.sock"),
        None => running,
    };
    runtime()?.block_on(async move {
        let embedded = match cfg {
            None => None,
            Some(cfg) => {
                std::fs::create_dir_all(cfg.data_dir.join("logs"))
                    .with_context(|| format!("cannot create the data dir {} (choose a writable location with --data-dir or PINCH_HOME)", cfg.data_dir.display()))?;
                logging::init_file(&cfg.data_dir.join("logs/host.log"))?;
                if cfg.sandbox == pinch_host::sandbox::Choice::Process {
                    eprintln!("pinch: WARNING: --sandbox process runs the agent without any isolation (development only)");
                }
                Some(pinch_host::start(cfg).await.map_err(sandbox_hint)?)
            }
        };
        let code = if interactive {
            // After whom you talk to (the host's greeting says).
            let banner = format!(
                "{} · data {} · Ctrl-D to quit",
                embedded.as_ref().map(|h| format!(" · in a {} sandbox", h.sandbox.as_str())).unwrap_or_default(),
                dir.display()
            );
            chat::interactive(&socket, first, &banner).await
        } else {
            chat::scripted(&socket, first, input, input_error, timeout).await
        };
        if let Some(h) = embedded {
            h.shutdown().await?;
        }
        code
    })
}
