//! `pinch service install|uninstall|status|print [--system]`: pinch as a
//! systemd service (issue 8). A user unit by default
//! (`~/.config/systemd/user/pinch.service`, `systemctl --user`), or a
//! system unit with `--system` (`/etc/systemd/system/pinch.service`,
//! running as the invoking user: the real uid's account, or under sudo the
//! account that ran sudo — never `$USER`, which may be unset or wrong).
//!
//! The unit restarts pinch on failure but not on exit 78 (a configuration
//! error would only loop), logs to the journal, asks for cgroup delegation
//! (so each sandbox gets its own process and memory cap), and reads model
//! keys from an optional `pinch.env` beside `pinch.toml` (mode 0600 is the
//! owner's job; keys never go into the unit). Where systemd is not running,
//! it says so and changes nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: Action,
    /// A system-wide unit (/etc/systemd/system) instead of a user unit.
    #[arg(long, global = true)]
    pub system: bool,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the unit, enable it and start pinch now.
    Install,
    /// Stop and disable pinch, remove the unit.
    Uninstall,
    /// Whether the service is installed and running.
    Status,
    /// Print the unit `install` would write.
    Print,
}

pub struct Unit {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub system: bool,
    /// For a system unit: the account it runs as (always written).
    pub user: Option<String>,
}

/// The account a system unit runs as: the real uid's name (getpwuid), or
/// under `sudo` the invoking account's (`SUDO_UID`, set by sudo, which only
/// root can fake). `$USER` is not consulted: it may be unset or stale.
pub fn run_as() -> Result<String> {
    // SAFETY: getuid cannot fail.
    let mut uid = unsafe { libc::getuid() };
    if uid == 0 {
        if let Some(u) = std::env::var("SUDO_UID")
            .ok()
            .and_then(|v| v.parse::<libc::uid_t>().ok())
        {
            uid = u;
        }
    }
    user_name(uid)
}

/// The account name of `uid` from the password database.
pub fn user_name(uid: libc::uid_t) -> Result<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; `out` points into `pw` or is null.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        bail!("uid {uid} has no entry in the password database (getpwuid): the system unit needs an account to run as; create one, or install a user unit (without --system)");
    }
    // SAFETY: pw_name is a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Ok(name.to_string_lossy().into_owned())
}

impl Unit {
    pub fn render(&self) -> String {
        let env_file = self.config.with_file_name("pinch.env");
        let mut s = String::new();
        s.push_str("# Written by `pinch service install`; `pinch service uninstall` removes it.\n");
        s.push_str("[Unit]\nDescription=pinch, a personal AI-assistant host\n");
        s.push_str(
            "After=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\n",
        );
        if self.system {
            let u = self.user.as_deref().unwrap_or("root");
            if u == "root" {
                s.push_str(
                    "# Runs as root: to run as another account, install from it with sudo.\n",
                );
            }
            s.push_str(&format!("User={u}\n"));
        }
        s.push_str(&format!(
            "ExecStart={} --data-dir {} --config {} host\n",
            quote(&self.exe),
            quote(&self.data_dir),
            quote(&self.config)
        ));
        s.push_str(&format!("EnvironmentFile=-{}\n", quote(&env_file)));
        s.push_str("Environment=PINCH_LOG=info\n");
        s.push_str("Restart=on-failure\nRestartSec=2\n");
        s.push_str("# 78: a configuration error; restarting would only loop.\nRestartPreventExitStatus=78\n");
        s.push_str(
            "# pinch stops its runners gracefully on SIGTERM.\nKillMode=mixed\nTimeoutStopSec=30\n",
        );
        s.push_str("# Lets pinch give each sandbox its own cgroup (process and memory caps).\nDelegate=yes\n");
        s.push_str(&self.hardening());
        s.push_str("StandardOutput=journal\nStandardError=journal\n\n[Install]\n");
        s.push_str(if self.system {
            "WantedBy=multi-user.target\n"
        } else {
            "WantedBy=default.target\n"
        });
        s
    }
}

impl Unit {
    /// The sandboxing options that leave bubblewrap working (decision
    /// 0028): nothing that sets or implies NoNewPrivileges (a setuid bwrap
    /// needs it off), nothing that restricts namespaces or capabilities, no
    /// read-only cgroup tree (Delegate=yes), and in a user unit nothing that
    /// needs a mount namespace (systemd builds it in a user namespace, where
    /// a setuid bwrap has no privilege).
    fn hardening(&self) -> String {
        let mut s = String::from(
            "# Hardening that leaves bubblewrap working (see docs/decisions/0028).\n\
             UMask=0077\nLimitCORE=0\n",
        );
        if self.system {
            s.push_str("ProtectSystem=full\nPrivateTmp=yes\nRemoveIPC=yes\n");
            s.push_str(&format!("ReadWritePaths=-{}\n", quote(&self.data_dir)));
        }
        s
    }
}

/// systemd's quoting for a path in ExecStart and friends.
fn quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.into_owned()
    }
}

pub fn unit_path(system: bool) -> PathBuf {
    if system {
        return PathBuf::from("/etc/systemd/system/pinch.service");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("systemd/user/pinch.service")
}

/// Whether systemd is the running init (its runtime folder exists) and
/// `systemctl` is on PATH.
fn systemd_running() -> Result<PathBuf, String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err("systemd is not running on this machine (no /run/systemd/system)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("systemctl"))
        .find(|p| p.is_file())
        .ok_or_else(|| "systemctl is not on PATH".into())
}

#[allow(clippy::disallowed_methods)] // the service commands run systemctl/launchctl for the owner
fn systemctl(bin: &Path, system: bool, args: &[&str]) -> Result<()> {
    let mut c = Command::new(bin);
    if !system {
        c.arg("--user");
    }
    let st = c
        .args(args)
        .status()
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))?;
    if !st.success() {
        bail!(
            "`systemctl {}{}` failed ({st})",
            if system { "" } else { "--user " },
            args.join(" ")
        );
    }
    Ok(())
}

#[allow(clippy::disallowed_methods)] // the service commands run systemctl/launchctl for the owner
pub fn run(a: ServiceArgs, data_dir: PathBuf, config: PathBuf) -> Result<i32> {
    let exe = std::env::current_exe().context("finding the pinch executable")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let user = if a.system { Some(run_as()?) } else { None };
    if user.as_deref() == Some("root") {
        eprintln!("pinch service: the system unit runs pinch as root (you are root and not under sudo); install it with sudo from the account that should run pinch to avoid that");
    }
    // Under sudo the default paths are root's, which the account cannot use.
    if let (Some(u), Some(home)) = (&user, std::env::var_os("HOME")) {
        let home = PathBuf::from(home);
        let theirs = |p: &Path| !p.starts_with(&home) || home == Path::new("/");
        if u != "root" && unsafe { libc::getuid() } == 0 && !(theirs(&data_dir) && theirs(&config))
        {
            let msg = format!(
                "the system unit would run as {u}, but the data dir {} or the config {} is in root's home ({}), which {u} cannot use: \
                 give paths {u} owns, e.g. sudo pinch --data-dir ~{u}/.local/share/pinch --config ~{u}/.config/pinch/pinch.toml service install --system",
                data_dir.display(),
                config.display(),
                home.display()
            );
            if a.action == Action::Install {
                bail!("{msg}");
            }
            eprintln!("pinch service: warning: {msg}");
        }
    }
    let unit = Unit {
        exe,
        data_dir,
        config,
        system: a.system,
        user,
    };
    let path = unit_path(a.system);
    match a.action {
        Action::Print => {
            print!("{}", unit.render());
            Ok(0)
        }
        Action::Install => {
            let bin = match systemd_running() {
                Ok(b) => b,
                Err(why) => {
                    eprintln!(
                        "pinch service: {why}: nothing was installed.\n\
                         Run `pinch host` under your init system or process supervisor instead \
                         (restart it on failure, but not on exit code 78); `pinch service print` shows the systemd unit for reference."
                    );
                    return Ok(1);
                }
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, unit.render())
                .with_context(|| format!("writing {}", path.display()))?;
            systemctl(&bin, a.system, &["daemon-reload"])?;
            systemctl(&bin, a.system, &["enable", "--now", "pinch.service"])?;
            println!(
                "installed {} and started pinch; logs: journalctl {}-u pinch -f",
                path.display(),
                if a.system { "" } else { "--user " }
            );
            if !a.system {
                println!(
                    "to keep it running after you log out: loginctl enable-linger {}",
                    std::env::var("USER").unwrap_or_default()
                );
            }
            Ok(0)
        }
        Action::Uninstall => {
            let bin = match systemd_running() {
                Ok(b) => b,
                Err(why) => {
                    eprintln!("pinch service: {why}: there is no service to remove.");
                    return Ok(1);
                }
            };
            if !path.exists() {
                eprintln!(
                    "pinch service: {} does not exist: not installed.",
                    path.display()
                );
                return Ok(1);
            }
            // Disabling a unit that is not running is fine; go on to remove it.
            let _ = systemctl(&bin, a.system, &["disable", "--now", "pinch.service"]);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            systemctl(&bin, a.system, &["daemon-reload"])?;
            println!("stopped pinch and removed {}", path.display());
            Ok(0)
        }
        Action::Status => {
            let installed = path.exists();
            let answering =
                std::os::unix::net::UnixStream::connect(unit.data_dir.join("run/admin.sock"))
                    .is_ok();
            println!(
                "unit: {}",
                if installed {
                    format!("{} (installed)", path.display())
                } else {
                    format!("{} (not installed)", path.display())
                }
            );
            println!(
                "host: {}",
                if answering {
                    "running and answering on this data dir"
                } else {
                    "not running on this data dir"
                }
            );
            match systemd_running() {
                Ok(bin) if installed => {
                    let mut c = Command::new(bin);
                    if !a.system {
                        c.arg("--user");
                    }
                    let st = c
                        .args(["status", "--no-pager", "pinch.service"])
                        .status()
                        .context("running systemctl status")?;
                    Ok(if st.success() { 0 } else { 3 })
                }
                Ok(_) => Ok(3),
                Err(why) => {
                    println!("systemd: {why}");
                    Ok(if answering { 0 } else { 3 })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_comes_from_the_uid_not_from_user() {
        assert_eq!(user_name(0).unwrap(), "root");
        let e = user_name(4_000_000_000).unwrap_err().to_string();
        assert!(
            e.contains("uid 4000000000") && e.contains("getpwuid"),
            "{e}"
        );
    }

    #[test]
    fn the_user_unit() {
        let u = Unit {
            exe: "/usr/local/bin/pinch".into(),
            data_dir: "/home/me/.local/share/pinch".into(),
            config: "/home/me/.config/pinch/pinch.toml".into(),
            system: false,
            user: Some("me".into()),
        };
        let s = u.render();
        assert!(s.contains("\nExecStart=/usr/local/bin/pinch --data-dir /home/me/.local/share/pinch --config /home/me/.config/pinch/pinch.toml host\n"), "{s}");
        assert!(
            s.contains("\nRestart=on-failure\n") && s.contains("\nRestartPreventExitStatus=78\n")
        );
        assert!(s.contains("\nEnvironmentFile=-/home/me/.config/pinch/pinch.env\n"));
        assert!(s.contains("\nDelegate=yes\n") && s.contains("\nStandardOutput=journal\n"));
        assert!(s.contains("\nWantedBy=default.target\n"));
        assert!(!s.contains("User="), "a user unit runs as its user already");
        assert!(s.contains("\nUMask=0077\n"), "{s}");
        assert!(
            !s.contains("ProtectSystem") && !s.contains("PrivateTmp"),
            "a user unit's mount namespace would sit in a user namespace: {s}"
        );
        assert!(!s.to_lowercase().contains("api_key"), "no keys in the unit");
    }

    #[test]
    fn the_system_unit_runs_as_the_user_and_paths_with_spaces_are_quoted() {
        let u = Unit {
            exe: "/opt/my tools/pinch".into(),
            data_dir: "/srv/pinch".into(),
            config: "/etc/pinch/pinch.toml".into(),
            system: true,
            user: Some("alice".into()),
        };
        let s = u.render();
        assert!(s.contains("\nUser=alice\n"));
        assert!(
            s.contains(
                "\nProtectSystem=full\nPrivateTmp=yes\nRemoveIPC=yes\nReadWritePaths=-/srv/pinch\n"
            ) && s.contains("\nUMask=0077\n"),
            "{s}"
        );
        for breaks_bwrap in [
            "NoNewPrivileges",
            "RestrictNamespaces",
            "SystemCallFilter",
            "CapabilityBoundingSet",
            "PrivateDevices",
            "ProtectKernel",
            "ProtectControlGroups",
            "PrivateUsers",
            "RestrictSUIDSGID",
        ] {
            assert!(!s.contains(breaks_bwrap), "{breaks_bwrap}: {s}");
        }
        let nobody = Unit { user: None, ..u };
        assert!(
            nobody.render().contains("\nUser=root\n"),
            "a system unit always says whom it runs as"
        );
        assert!(
            s.contains("ExecStart=\"/opt/my tools/pinch\" --data-dir /srv/pinch"),
            "{s}"
        );
        assert!(s.contains("\nWantedBy=multi-user.target\n"));
        assert_eq!(
            unit_path(true),
            PathBuf::from("/etc/systemd/system/pinch.service")
        );
    }
}
