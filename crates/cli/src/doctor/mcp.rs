//! Doctor's MCP checks: each configured server's command as the sandbox
//! would find it. The bwrap sandbox shows this machine's `/usr`, `/bin`,
//! `/sbin` and `/lib*` read-only and nothing else of it, so a program that
//! exists here can still be missing there: a Python under pyenv, a tool
//! under `~/.local` or `/opt`, or a `/usr/local/bin` link (pipx, uv) into
//! a home directory. A script's interpreter (`#!`) must be visible too.

use std::path::{Path, PathBuf};

use pinch_host::sandbox::Choice;

use super::{fail, ok, warn, Check};

/// What the bwrap sandbox shows of this machine.
const SHOWN: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Where a bare command is looked up inside (after approved packages).
const SANDBOX_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

const HIDDEN_FIX: &str = "install it system-wide (apt, or pip/npm/uv into /usr/local with its interpreter under /usr), \
     copy it into the agent's folder and use /workspace/agent/…, or let the agent ask for it with install_packages";

/// Where a command is, seen from inside the sandbox.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Visible at this path.
    Visible(PathBuf),
    /// It exists here (this path, after links) but the sandbox does not show it.
    Hidden(PathBuf),
    /// Shown, but not in the sandbox's `PATH`: only its full path finds it.
    OffPath(PathBuf),
    Missing,
}

struct View<'a> {
    shown: &'a [&'a Path],
    path: &'a [&'a Path],
    /// This machine's own `PATH`, to say where a hidden program is.
    host_path: &'a [PathBuf],
}

impl View<'_> {
    fn shows(&self, p: &Path) -> bool {
        self.shown.iter().any(|d| p.starts_with(d))
    }

    /// A path as the sandbox sees it: shown, and where its links lead too.
    fn check_path(&self, p: &Path) -> Found {
        if !p.is_file() {
            return Found::Missing;
        }
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if self.shows(p) && self.shows(&real) {
            Found::Visible(p.to_path_buf())
        } else {
            Found::Hidden(real)
        }
    }

    fn locate(&self, cmd: &str) -> Found {
        if cmd.contains('/') {
            return self.check_path(Path::new(cmd));
        }
        for d in self.path {
            if let f @ Found::Visible(_) = self.check_path(&d.join(cmd)) {
                return f;
            }
        }
        let elsewhere = self
            .path
            .iter()
            .map(|d| d.to_path_buf())
            .chain(self.host_path.iter().cloned())
            .map(|d| d.join(cmd))
            .find(|p| p.is_file());
        match elsewhere.map(|p| self.check_path(&p)) {
            Some(Found::Visible(p)) => Found::OffPath(p),
            Some(found) => found,
            None => Found::Missing,
        }
    }

    /// The interpreter a script names on its `#!` line, if any, located.
    fn interpreter(&self, script: &Path) -> Option<(String, Found)> {
        use std::io::Read;
        let mut head = [0u8; 256];
        let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
        let line = head[..n].strip_prefix(b"#!")?;
        let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next()?).into_owned();
        let mut words = line.split_whitespace();
        let prog = words.next()?.to_owned();
        if prog.ends_with("/env") {
            let named = words.find(|w| !w.starts_with('-'))?.to_owned();
            let found = self.locate(&named);
            return Some((named, found));
        }
        let found = self.check_path(Path::new(&prog));
        Some((prog, found))
    }
}

/// What a program is for, in the check's words: its area, how it is
/// named ("MCP server x", "the agent CLI") and the setting that fixes it.
struct Subject<'a> {
    area: &'static str,
    who: &'a str,
    setting: &'a str,
}

pub(super) fn checks(cfg: &pinch_host::HostConfig) -> Vec<Check> {
    let host_path: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    cfg.mcp_servers
        .iter()
        .map(|e| {
            let who = format!("MCP server {}", e.server.name);
            let setting = format!("[mcp.servers.{}] command", e.server.name);
            let s = Subject {
                area: "mcp",
                who: &who,
                setting: &setting,
            };
            with_view(&host_path, |view| {
                server_check(&s, &e.server.command, cfg.sandbox, view)
            })
        })
        .collect()
}

/// The agent CLI's command (`[provider.cli] command`) as its sandbox
/// finds it: a program under `~/.nvm` or `~/.local` is invisible there.
pub(super) fn agent_cli_check(cmd: &str, sandbox: Choice) -> Check {
    let host_path: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    let s = Subject {
        area: "provider",
        who: "the agent CLI",
        setting: "[provider.cli] command",
    };
    with_view(&host_path, |view| server_check(&s, cmd, sandbox, view))
}

fn with_view<T>(host_path: &[PathBuf], f: impl FnOnce(&View<'_>) -> T) -> T {
    let shown: Vec<&Path> = SHOWN.iter().map(Path::new).collect();
    let path: Vec<&Path> = SANDBOX_PATH.iter().map(Path::new).collect();
    f(&View {
        shown: &shown,
        path: &path,
        host_path,
    })
}

fn server_check(s: &Subject<'_>, cmd: &str, sandbox: Choice, view: &View<'_>) -> Check {
    let (area, who) = (s.area, s.who);
    if cmd.starts_with("/workspace/") {
        return ok(
            area,
            format!("{who}: {cmd} is in an agent's folders; the runner checks it when it starts"),
        );
    }
    match sandbox {
        Choice::Docker => {
            return warn(
                area,
                format!("{who}: {cmd} runs inside the Docker image, which doctor does not look into"),
                "make sure the image has it (pinch admin groups config-set … --packages, or your own image)",
            )
        }
        // The process backend sees the whole machine.
        Choice::Process => {
            let all: [&Path; 1] = [Path::new("/")];
            let v = View { shown: &all, ..*view };
            return verdict(s, cmd, &v);
        }
        Choice::Bwrap | Choice::Auto => {}
    }
    verdict(s, cmd, view)
}

fn verdict(s: &Subject<'_>, cmd: &str, view: &View<'_>) -> Check {
    let (area, who, setting) = (s.area, s.who, s.setting);
    match view.locate(cmd) {
        Found::Missing => fail(
            area,
            format!("{who}: {cmd} is not installed (not a file, and not in the sandbox's PATH /usr/local/bin:/usr/bin:/bin)"),
            format!("install it, or fix {setting}"),
        ),
        Found::Hidden(at) => fail(
            area,
            format!(
                "{who}: {cmd} is {}, which the sandbox does not see (it shows only /usr, /bin, /sbin and /lib of this machine): \
                 a Python under pyenv, or a program under ~/.local or /opt, is invisible to it",
                at.display()
            ),
            HIDDEN_FIX,
        ),
        Found::OffPath(at) => fail(
            area,
            format!(
                "{who}: {cmd} is {}, which the sandbox shows but does not find by name (its PATH is /usr/local/bin:/usr/bin:/bin)",
                at.display()
            ),
            format!("set {setting} = \"{}\"", at.display()),
        ),
        Found::Visible(at) => match view.interpreter(&at) {
            Some((interp, Found::Hidden(real))) => fail(
                area,
                format!(
                    "{who}: {} starts with #!{interp}, and that interpreter is {}, which the sandbox does not see",
                    at.display(),
                    real.display()
                ),
                HIDDEN_FIX,
            ),
            Some((interp, Found::Missing | Found::OffPath(_))) => fail(
                area,
                format!("{who}: {} starts with #!{interp}, which is not installed", at.display()),
                format!("install {interp}, or fix {setting}"),
            ),
            _ => ok(area, format!("{who}: {} (visible in the sandbox)", at.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(p: &Path, body: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A made-up machine: `sys/` is what the sandbox shows, `home/` is not.
    #[test]
    fn commands_are_judged_as_the_sandbox_sees_them() {
        let t = tempfile::tempdir().unwrap();
        let (sys, home) = (t.path().join("sys"), t.path().join("home"));
        let bin = sys.join("bin");
        exe(
            &bin.join("good-server"),
            &format!("#!{}/py/python3\n", sys.display()),
        );
        exe(&sys.join("py/python3"), "\x7fELF");
        exe(&home.join(".pyenv/versions/3.12/bin/python3"), "\x7fELF");
        exe(&home.join(".pyenv/shims/mcp-server-fetch"), "#!/bin/sh\n");
        exe(
            &bin.join("uses-pyenv"),
            &format!("#!{}/.pyenv/versions/3.12/bin/python3\n", home.display()),
        );
        exe(&bin.join("uses-env"), "#!/usr/bin/env -S python3 -u\n");
        std::os::unix::fs::symlink(
            home.join(".pyenv/shims/mcp-server-fetch"),
            bin.join("pipx-link"),
        )
        .unwrap();
        let shown = [sys.as_path()];
        let host_path = vec![home.join(".pyenv/shims"), sys.join("py")];
        let path = [bin.as_path()];
        let view = View {
            shown: &shown,
            path: &path,
            host_path: &host_path,
        };
        let subject = Subject {
            area: "mcp",
            who: "MCP server s",
            setting: "[mcp.servers.s] command",
        };
        let check = |cmd: &str| verdict(&subject, cmd, &view);
        let good = check("good-server");
        assert_eq!(good.level, super::super::Level::Ok, "{good:?}");
        let pyenv = check("mcp-server-fetch");
        assert!(
            pyenv.level == super::super::Level::Fail && pyenv.what.contains("pyenv"),
            "{pyenv:?}"
        );
        let linked = check("pipx-link");
        assert!(
            linked.what.contains(".pyenv/shims/mcp-server-fetch")
                && linked.what.contains("does not see"),
            "{linked:?}"
        );
        let interp = check(&bin.join("uses-pyenv").to_string_lossy());
        assert!(
            interp.what.contains("interpreter") && interp.what.contains(".pyenv/versions"),
            "{interp:?}"
        );
        // `env python3` looks the name up in the sandbox's PATH only.
        let via_env = check("uses-env");
        assert!(
            via_env.level == super::super::Level::Fail && via_env.what.contains("#!python3"),
            "{via_env:?}"
        );
        let off_path = check("python3");
        assert!(
            off_path.what.contains("does not find by name"),
            "{off_path:?}"
        );
        assert!(off_path.fix.unwrap().contains("sys/py/python3"));
        let missing = check("no-such-server");
        assert!(missing.what.contains("not installed"), "{missing:?}");
        assert!(missing.fix.unwrap().contains("[mcp.servers.s] command"));
        let inside = server_check(&subject, "/workspace/agent/srv", Choice::Bwrap, &view);
        assert_eq!(inside.level, super::super::Level::Ok);
        let docker = server_check(&subject, "srv", Choice::Docker, &view);
        assert_eq!(docker.level, super::super::Level::Warn);
    }

    #[test]
    fn the_agent_cli_is_looked_for_as_its_sandbox_sees_it() {
        let c = agent_cli_check("sh", Choice::Bwrap);
        assert!(
            c.area == "provider"
                && c.what.contains("the agent CLI: ")
                && c.what.contains("(visible in the sandbox)"),
            "{c:?}"
        );
        let c = agent_cli_check("no-such-agent-cli-x", Choice::Bwrap);
        assert!(
            c.what.contains("not installed")
                && c.fix
                    .as_deref()
                    .is_some_and(|f| f.contains("[provider.cli] command")),
            "{c:?}"
        );
    }
}
