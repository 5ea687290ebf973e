//! `pinch doctor`: what this machine and configuration lack, each problem
//! with the command that fixes it (issue 8). Read-only: it changes
//! nothing, starts no host, and shows no secret's value (it checks only
//! whether each is set, and that the store's sealed values open). Exit 0 when nothing fails (warnings allowed), 1 otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pinch_host::sandbox;

mod mcp;
mod secrets;
mod web;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Check {
    pub level: Level,
    pub area: &'static str,
    pub what: String,
    pub fix: Option<String>,
}

fn ok(area: &'static str, what: impl Into<String>) -> Check {
    Check {
        level: Level::Ok,
        area,
        what: what.into(),
        fix: None,
    }
}
fn warn(area: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        area,
        what: what.into(),
        fix: Some(fix.into()),
    }
}
fn fail(area: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        area,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

/// What doctor needs to know: the resolved configuration, or why the
/// configuration does not resolve.
pub struct Input {
    pub config_path: PathBuf,
    /// Where the data dir is (known even when the rest does not resolve).
    pub data_dir: PathBuf,
    pub config: Result<pinch_host::HostConfig, String>,
    /// The configured chat platforms' secret variables.
    pub channel_envs: Vec<pinch_channels::kind::SecretEnv>,
    /// The live checks of the channels that have one (email: log in).
    pub channel_probes: Vec<(&'static str, Result<String, String>)>,
}

pub fn run(input: Input) -> i32 {
    let checks = checks(&input);
    let mut fails = 0;
    let mut warns = 0;
    println!("pinch doctor ({})", env!("CARGO_PKG_VERSION"));
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => {
                warns += 1;
                "warn"
            }
            Level::Fail => {
                fails += 1;
                "FAIL"
            }
        };
        match &c.fix {
            Some(f) => println!(
                "  {tag}  {:<9} {}\n                  fix: {f}",
                c.area, c.what
            ),
            None => println!("  {tag}  {:<9} {}", c.area, c.what),
        }
    }
    match (fails, warns) {
        (0, 0) => println!("everything pinch needs is here."),
        (0, w) => println!("{w} warning{}; pinch will run.", if w == 1 { "" } else { "s" }),
        (f, w) => println!("{f} problem{} and {w} warning{}: fix the problems above, then run `pinch doctor` again.", if f == 1 { "" } else { "s" }, if w == 1 { "" } else { "s" }),
    }
    if fails > 0 {
        1
    } else {
        0
    }
}

pub fn checks(input: &Input) -> Vec<Check> {
    let mut out = channel_checks(&input.channel_envs);
    for (section, r) in &input.channel_probes {
        out.push(match r {
            Ok(what) => ok("channels", format!("[{section}] {what}")),
            Err(e) => fail(
                "channels",
                format!("[{section}] {e}"),
                format!("check the [{section}] settings in pinch.toml and the secrets in their variables (the line above names the step that failed), then run `pinch doctor` again"),
            ),
        });
    }
    let cfg = match &input.config {
        Ok(c) => {
            out.push(ok(
                "config",
                if input.config_path.exists() {
                    format!("{} reads cleanly", input.config_path.display())
                } else {
                    format!("no {} (defaults)", input.config_path.display())
                },
            ));
            c
        }
        Err(e) if e.contains("no model to talk to") => {
            out.push(fail(
                "provider",
                "no model is configured: no ANTHROPIC_API_KEY, no OPENAI_BASE_URL/OPENAI_API_KEY, no offline model",
                "pinch model fetch   (the small offline model, 98 MB), or export ANTHROPIC_API_KEY=…",
            ));
            out.extend(sandbox_checks(sandbox::Choice::Auto));
            out.extend(kernel_checks());
            out.extend(data_dir_checks(&input.data_dir));
            return out;
        }
        Err(e) => {
            out.push(fail(
                "config",
                format!("the configuration does not resolve: {e}"),
                format!(
                    "edit {} (or the flags/environment named above)",
                    input.config_path.display()
                ),
            ));
            // Machine checks still help.
            out.extend(sandbox_checks(sandbox::Choice::Auto));
            out.extend(kernel_checks());
            out.extend(data_dir_checks(&input.data_dir));
            return out;
        }
    };
    out.extend(sandbox_checks(cfg.sandbox));
    out.extend(kernel_checks());
    out.extend(data_dir_checks(&cfg.data_dir));
    out.extend(provider_checks(cfg));
    out.extend(mount_checks(cfg));
    out.extend(mcp::checks(cfg));
    out.extend(web::checks(cfg));
    out.extend(secrets::checks(cfg));
    out.extend(host_checks(&cfg.data_dir));
    out
}

/// Each configured platform's token variable is set (its value is never
/// read into the output).
fn channel_checks(envs: &[pinch_channels::kind::SecretEnv]) -> Vec<Check> {
    envs.iter()
        .map(|e| {
            let (section, key, var) = (e.section, e.key, &e.var);
            let set = std::env::var_os(var).is_some_and(|v| !v.to_string_lossy().trim().is_empty());
            if set {
                ok("channels", format!("[{section}] {key}: {var} is set"))
            } else {
                fail("channels", format!("[{section}] {key}: {var} is not set, so the {section} channel cannot start"), format!("export {var}=… ({}), e.g. in pinch.env for the service", e.hint))
            }
        })
        .collect()
}

fn sandbox_checks(choice: sandbox::Choice) -> Vec<Check> {
    let mut out = Vec::new();
    if choice == sandbox::Choice::Process {
        out.push(warn(
            "sandbox",
            "configured as `process`: agents run WITHOUT isolation",
            "set [sandbox] backend = \"bwrap\" (or remove it) once bubblewrap works",
        ));
    }
    match pinch_host::docker::find_docker() {
        Some(d) => match pinch_host::docker::probe(&d) {
            Ok(()) => out.push(ok(
                "sandbox",
                format!(
                    "docker answers ({}): `--sandbox docker` is available",
                    d.display()
                ),
            )),
            Err(e) if choice == sandbox::Choice::Docker => out.push(fail(
                "sandbox",
                e,
                "sudo systemctl start docker (or `sudo dockerd &`)",
            )),
            Err(_) => {}
        },
        None if choice == sandbox::Choice::Docker => {
            out.push(fail(
                "sandbox",
                "docker is configured but not installed",
                "sudo apt-get install -y docker.io",
            ));
        }
        None => {}
    }
    match sandbox::find_bwrap() {
        None => out.push(
            if matches!(choice, sandbox::Choice::Process | sandbox::Choice::Docker) {
                warn(
                    "sandbox",
                    "bubblewrap (bwrap) is not installed",
                    "sudo apt-get install -y bubblewrap",
                )
            } else {
                fail(
                    "sandbox",
                    "bubblewrap (bwrap) is not installed; pinch will not start agents without it",
                    "sudo apt-get install -y bubblewrap",
                )
            },
        ),
        Some(b) => match sandbox::probe_bwrap(&b) {
            Ok(()) => out.push(ok("sandbox", format!("bubblewrap works ({})", b.display()))),
            Err(e) => out.push(fail(
                "sandbox",
                format!("bubblewrap is installed but cannot make a sandbox: {e}"),
                userns_fix(),
            )),
        },
    }
    out
}

/// The usual reason bwrap fails: unprivileged user namespaces are off.
fn userns_fix() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts user namespaces: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or install an AppArmor profile for bwrap)".into();
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "sudo sysctl -w kernel.unprivileged_userns_clone=1".into();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "sudo sysctl -w user.max_user_namespaces=15000".into();
    }
    "enable unprivileged user namespaces for your user, or run pinch as root".into()
}

fn kernel_checks() -> Vec<Check> {
    let mut out = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status.lines().any(|l| l.starts_with("Seccomp:")) {
        out.push(ok("kernel", "seccomp filters are supported"));
    } else {
        out.push(fail(
            "kernel",
            "this kernel has no seccomp: sandboxes would run without their syscall filter",
            "use a kernel built with CONFIG_SECCOMP_FILTER (every distribution kernel is)",
        ));
    }
    match pinch_host::cgroup::prepare(&format!("doctor-{}", std::process::id()), &pinch_host::sandbox::Limits { pids: 64, memory_mb: 64, ..Default::default() }) {
        Ok(p) => {
            pinch_host::cgroup::cleanup(&p.dirs);
            out.push(ok("kernel", "cgroups are writable: each sandbox gets a process and memory cap"));
        }
        Err(e) => out.push(warn(
            "kernel",
            format!("cgroups are not writable here ({e}): sandboxes get rlimits but no process/memory cap for the whole sandbox"),
            "run pinch as a systemd service (`pinch service install`, which asks for Delegate=yes) or as root",
        )),
    }
    out
}

fn data_dir_checks(dir: &Path) -> Vec<Check> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    // The folder, or the nearest existing parent (where it will be made).
    let mut probe = dir.to_owned();
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p.to_owned(),
            None => break,
        }
    }
    match std::fs::metadata(dir) {
        Ok(md) => {
            let me = unsafe { libc::geteuid() };
            if md.uid() != me {
                out.push(fail(
                    "data",
                    format!(
                        "{} belongs to uid {}, not to you (uid {me})",
                        dir.display(),
                        md.uid()
                    ),
                    format!("sudo chown -R {me} {}", dir.display()),
                ));
            } else if md.mode() & 0o077 != 0 {
                out.push(warn(
                    "data",
                    format!(
                        "{} is readable by others (mode {:o}): it holds your conversations",
                        dir.display(),
                        md.mode() & 0o777
                    ),
                    format!("chmod 700 {}", dir.display()),
                ));
            } else {
                out.push(ok(
                    "data",
                    format!("{} is yours and private", dir.display()),
                ));
            }
        }
        Err(_) => out.push(ok(
            "data",
            format!(
                "{} does not exist yet; it is created on first start",
                dir.display()
            ),
        )),
    }
    let c = std::ffi::CString::new(probe.to_string_lossy().as_bytes()).unwrap_or_default();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and an out-pointer to a zeroed struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let mib = free >> 20;
        if mib < 512 {
            out.push(fail("data", format!("only {mib} MiB free on the data dir's filesystem; SQLite commits will start failing"), "free space on that filesystem, or move the data dir with --data-dir / PINCH_HOME"));
        } else if mib < 2048 {
            out.push(warn(
                "data",
                format!("{mib} MiB free on the data dir's filesystem"),
                "free some space; pinch needs room for sessions, logs and models",
            ));
        } else {
            out.push(ok(
                "data",
                format!("{:.1} GiB free", free as f64 / (1u64 << 30) as f64),
            ));
        }
    }
    out
}

/// Whether `url`'s host and port accept a TCP connection within 3 s.
fn reachable(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let default_port = if url.starts_with("https://") { 443 } else { 80 };
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

fn provider_checks(cfg: &pinch_host::HostConfig) -> Vec<Check> {
    let mut out = Vec::new();
    let kind = cfg.provider.kind.as_str();
    match kind {
        "scripted" => out.push(warn("provider", "the scripted provider only replays scripts (tests, demos)", "configure a model: set ANTHROPIC_API_KEY, or OPENAI_BASE_URL (+ OPENAI_API_KEY), or run `pinch model fetch` for the offline model")),
        "local" => match cfg.provider.model.as_deref() {
            Some(m) if Path::new(m).is_file() => out.push(ok("provider", format!("local model {m}"))),
            Some(m) => out.push(fail("provider", format!("the local model file {m} is missing"), "pinch model fetch")),
            None => out.push(fail("provider", "provider `local` has no model file", "pinch model fetch")),
        },
        _ => {}
    }
    for up in &cfg.proxy_upstreams {
        let used = up.name == kind || (kind == "cli");
        if !used {
            continue;
        }
        let var = if up.name == "openai" {
            "OPENAI_API_KEY"
        } else {
            "ANTHROPIC_API_KEY"
        };
        let local = up.base_url.contains("://127.")
            || up.base_url.contains("://localhost")
            || up.base_url.contains("://[::1]");
        if up.auth.is_none() && !local {
            out.push(fail("provider", format!("{} is configured ({}) but {var} is not set", up.name, up.base_url), format!("export {var}=… in the environment pinch runs in (never in a file in the data dir)")));
        } else if up.auth.is_some() {
            out.push(ok("provider", format!("{var} is set (value not shown)")));
        }
        match reachable(&up.base_url) {
            Ok(()) => out.push(ok(
                "provider",
                format!("{} answers at {}", up.name, up.base_url),
            )),
            Err(e) => out.push(fail(
                "provider",
                format!("{} at {} is not reachable: {e}", up.name, up.base_url),
                format!(
                    "start the model server, or fix provider.{}.base_url",
                    up.name
                ),
            )),
        }
    }
    if kind == "cli" {
        if let Some(cli) = cfg.provider.cli.as_ref() {
            // As its sandbox finds it (a `claude` under ~/.nvm is invisible
            // there; npm -g on Debian puts it in /usr/bin, which works).
            out.push(mcp::agent_cli_check(&cli.command, cfg.sandbox));
            // SAFETY: geteuid cannot fail.
            let euid = unsafe { libc::geteuid() };
            out.extend(claude_as_root(cli, euid, cfg.sandbox));
        }
    }
    out
}

/// Claude Code refuses bypass-permissions mode as root unless `IS_SANDBOX=1`
/// says it runs in a sandbox; the runner sets that for the `claude` flavor.
/// As root, doctor says so, and fails when the operator's `env` undoes it.
fn claude_as_root(
    cli: &pinch_proto::runner_config::CliEngineSettings,
    euid: u32,
    sandbox: sandbox::Choice,
) -> Option<Check> {
    if cli.flavor.as_deref() != Some("claude") || euid != 0 {
        return None;
    }
    if cli.env.get("IS_SANDBOX").is_some_and(|v| v != "1") {
        return Some(fail(
            "provider",
            "pinch runs as root and [provider.cli] env sets IS_SANDBOX to something other than 1: Claude Code will refuse to run (\"--dangerously-skip-permissions cannot be used with root/sudo privileges\")",
            "remove IS_SANDBOX from [provider.cli] env, or run pinch as an ordinary user",
        ));
    }
    let why = if sandbox == sandbox::Choice::Process {
        "with --sandbox process there is no sandbox at all: Claude Code runs as root on this machine with every permission"
    } else {
        "Claude Code refuses bypass-permissions mode as root, so pinch tells it it is sandboxed (IS_SANDBOX=1); it runs as root inside the sandbox"
    };
    Some(warn(
        "provider",
        format!("pinch runs as root with the claude flavor: {why}"),
        "run pinch as an ordinary user (e.g. `sudo pinch service install --system` from that user's account)",
    ))
}

fn mount_checks(cfg: &pinch_host::HostConfig) -> Vec<Check> {
    let Some(path) = &cfg.mount_allowlist else {
        return vec![];
    };
    if !path.exists() {
        return vec![ok(
            "mounts",
            format!("no {} (agents get no extra folders)", path.display()),
        )];
    }
    match pinch_host::mounts::load(path) {
        Ok(a) => vec![ok(
            "mounts",
            format!(
                "{} allows {} folder root{}",
                path.display(),
                a.roots.len(),
                if a.roots.len() == 1 { "" } else { "s" }
            ),
        )],
        Err(e) => vec![fail(
            "mounts",
            format!("{e:#}"),
            format!("fix or remove {}", path.display()),
        )],
    }
}

fn host_checks(data_dir: &Path) -> Vec<Check> {
    let sock = data_dir.join("run/admin.sock");
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        vec![ok("host", "a pinch host is running on this data dir")]
    } else {
        vec![ok("host", "no host is running on this data dir (`pinch chat` starts one, `pinch service install` keeps one running)")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_proto::runner_config::CliEngineSettings;

    fn claude() -> CliEngineSettings {
        CliEngineSettings {
            command: "claude".into(),
            flavor: Some("claude".into()),
            ..Default::default()
        }
    }

    #[test]
    fn claude_as_root_is_a_warning_naming_the_cause() {
        assert!(claude_as_root(&claude(), 1000, sandbox::Choice::Bwrap).is_none());
        let generic = CliEngineSettings {
            command: "x".into(),
            ..Default::default()
        };
        assert!(claude_as_root(&generic, 0, sandbox::Choice::Bwrap).is_none());
        let c = claude_as_root(&claude(), 0, sandbox::Choice::Bwrap).unwrap();
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.what.contains("root") && c.what.contains("IS_SANDBOX=1"),
            "{c:?}"
        );
        let c = claude_as_root(&claude(), 0, sandbox::Choice::Process).unwrap();
        assert!(c.what.contains("no sandbox at all"), "{c:?}");
        let mut undone = claude();
        undone.env.insert("IS_SANDBOX".into(), "0".into());
        let c = claude_as_root(&undone, 0, sandbox::Choice::Bwrap).unwrap();
        assert_eq!(c.level, Level::Fail, "{c:?}");
    }
}
