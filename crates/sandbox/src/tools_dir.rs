//! Packages an agent asked for and an admin approved (SPEC §7.6): a
//! per-group tools folder `tools/<folder>/` in the data dir (host-only:
//! never in the agent's workspace, where it could be swapped for a
//! symlink to the host's `/`, issue 14), filled by
//! prefix-capable installers and shown to the agent read-only at
//! `/opt/pinch/tools` (bwrap and Docker; the host path for `process`),
//! with `python/` on `PYTHONPATH` and the installers' `bin` folders on
//! `PATH`.
//!
//! The installer runs on the host side but **in a sandbox of its own**
//! when bwrap works here: network allowed (it must download), the host's
//! `/usr` read-only, and only the tools folder writable — a package's
//! install script cannot touch the data dir or the user's files. Managers:
//! `pip` (`--target python`) and `npm` (`--prefix node`). Anything else is
//! refused with the reason. Names are checked so none can be read as an
//! option.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Longest an installation may take.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Most packages in one request.
pub const MAX_PACKAGES: usize = 20;

/// `PATH` entries and `PYTHONPATH` for a tools folder at `root`.
pub fn env_for(root: &Path) -> (Vec<String>, String) {
    let r = root.to_string_lossy();
    (
        vec![
            format!("{r}/python/bin"),
            format!("{r}/node/node_modules/.bin"),
        ],
        format!("{r}/python"),
    )
}

/// Checks one package spec: a name, optionally with a version constraint
/// (`requests`, `six==1.16.0`, `left-pad@1.3.0`), never an option, a path
/// or a URL.
pub fn check_package(manager: &str, spec: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-=<>!~@/*^".contains(c);
    if spec.is_empty()
        || spec.len() > 100
        || spec.starts_with(['-', '.', '/'])
        || !spec.chars().all(ok_char)
        || spec.contains("..")
        || spec.contains("://")
    {
        return Err(format!("{spec:?} is not a package name (letters, digits, . _ -, and a version like ==1.2 or @1.2)"));
    }
    match manager {
        // npm scopes (@scope/name) use one `/`; pip names never do.
        "pip" if spec.contains(['/', '@']) => Err(format!("{spec:?} is not a pip requirement")),
        "npm"
            if spec.matches('/').count() > 1 || (spec.contains('/') && !spec.starts_with('@')) =>
        {
            Err(format!("{spec:?} is not an npm package"))
        }
        "pip" | "npm" => Ok(()),
        other => Err(format!(
            "the package manager {other:?} cannot install into a folder; use pip or npm"
        )),
    }
}

fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Installs `packages` with `manager` into the group's tools folder
/// `<data_root>/tools/<folder>` (created if missing, opened beneath the data
/// dir with no symlink followed and bound into the installer's sandbox by
/// descriptor). Returns the installer's last lines, or why it failed.
pub fn install(
    data_root: &Path,
    folder: &str,
    manager: &str,
    packages: &[String],
    sandboxed: bool,
) -> Result<String, String> {
    if packages.is_empty() || packages.len() > MAX_PACKAGES {
        return Err(format!("give 1 to {MAX_PACKAGES} packages"));
    }
    for p in packages {
        check_package(manager, p)?;
    }
    let dir = crate::safe_fs::Dir::open_trusted(data_root)
        .and_then(|d| d.create_dir_all(Path::new("tools").join(folder), 0o700))
        .map_err(|e| format!("opening the tools folder: {e}"))?;
    let tools = dir.path().to_owned();
    let tools = tools.as_path();
    // Inside the installer sandbox the folder is at SANDBOX_TOOLS.
    let bwrap = if sandboxed {
        crate::bwrap::find_bwrap()
    } else {
        None
    };
    let at = if bwrap.is_some() {
        PathBuf::from(crate::mounts::SANDBOX_TOOLS)
    } else {
        tools.to_owned()
    };
    let mut argv: Vec<String> = match manager {
        "pip" => {
            let py = ["/usr/bin/python3", "/usr/local/bin/python3"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .ok_or("python3 is not installed on this machine")?;
            let mut a = vec![
                py.to_owned(),
                "-m".into(),
                "pip".into(),
                "install".into(),
                "--no-input".into(),
                "--disable-pip-version-check".into(),
                "--upgrade".into(),
            ];
            a.extend(["--target".into(), format!("{}/python", at.display())]);
            a
        }
        "npm" => {
            let npm = find("npm").ok_or("npm is not installed on this machine")?;
            vec![
                npm.to_string_lossy().into_owned(),
                "install".into(),
                "--no-audit".into(),
                "--no-fund".into(),
                "--prefix".into(),
                format!("{}/node", at.display()),
            ]
        }
        other => {
            return Err(format!(
                "the package manager {other:?} cannot install into a folder; use pip or npm"
            ))
        }
    };
    argv.push("--".into());
    argv.extend(packages.iter().cloned());
    let mut cmd = match &bwrap {
        Some(b) => {
            let mut c = crate::command::new(b);
            c.args([
                "--unshare-user",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
                "--clearenv",
            ]);
            c.args([
                "--tmpfs",
                "/",
                "--ro-bind",
                "/usr",
                "/usr",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
            ]);
            for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
                let host = Path::new("/").join(d);
                match std::fs::symlink_metadata(&host) {
                    Ok(md) if md.file_type().is_symlink() => {
                        if let Ok(t) = std::fs::read_link(&host) {
                            c.arg("--symlink").arg(t).arg(&host);
                        }
                    }
                    Ok(md) if md.is_dir() => {
                        c.arg("--ro-bind").arg(&host).arg(&host);
                    }
                    _ => {}
                }
            }
            // Name resolution and TLS for the download; nothing else of /etc.
            for f in [
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/nsswitch.conf",
                "/etc/ssl",
                "/etc/ca-certificates",
                "/etc/pip.conf",
                "/etc/npmrc",
                "/etc/ld.so.cache",
                "/etc/passwd",
                "/etc/group",
            ] {
                c.args(["--ro-bind-try", f, f]);
            }
            // The folder that was opened, not whatever its path names now.
            c.arg("--bind-fd")
                .arg(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string())
                .arg(crate::mounts::SANDBOX_TOOLS);
            c.args([
                "--setenv",
                "HOME",
                "/tmp",
                "--setenv",
                "PATH",
                "/usr/local/bin:/usr/bin:/bin",
            ]);
            // The installers' own settings (an index mirror, a proxy, CA files).
            for (k, v) in std::env::vars() {
                if k.starts_with("PIP_") && k != "PIP_FIND_LINKS"
                    || k.starts_with("npm_config_")
                    || matches!(
                        k.as_str(),
                        "HTTP_PROXY"
                            | "HTTPS_PROXY"
                            | "NO_PROXY"
                            | "http_proxy"
                            | "https_proxy"
                            | "no_proxy"
                            | "SSL_CERT_FILE"
                    )
                {
                    c.arg("--setenv").arg(k).arg(v);
                }
            }
            c.arg("--chdir").arg("/tmp").arg("--");
            c.args(&argv);
            c
        }
        None => {
            let mut c = crate::command::new(&argv[0]);
            c.args(&argv[1..]);
            c.current_dir(tools);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if bwrap.is_some() {
        use std::os::unix::process::CommandExt;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        // SAFETY: fcntl is async-signal-safe; only this child keeps the fd.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {manager}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(INSTALL_TIMEOUT) {
        Ok(r) => r.map_err(|e| format!("waiting for {manager}: {e}"))?,
        Err(_) => {
            // SAFETY: kill(2) of the installer we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return Err(format!(
                "{manager} did not finish within {} minutes",
                INSTALL_TIMEOUT.as_secs() / 60
            ));
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(6)..].join("\n");
    if out.status.success() {
        Ok(tail)
    } else {
        Err(format!("{manager} failed ({}): {tail}", out.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        for ok in [
            "requests",
            "six==1.16.0",
            "pydantic>=2",
            "left-pad",
            "left-pad@1.3.0",
            "@scope/pkg",
        ] {
            let m = if ok.contains('@') || ok == "left-pad" {
                "npm"
            } else {
                "pip"
            };
            assert!(check_package(m, ok).is_ok(), "{m} {ok}");
        }
        for bad in [
            "--index-url=http://evil",
            "-r",
            "../x",
            "/etc/passwd",
            "git+https://x",
            "a b",
            "x;rm",
            "",
            "http://x/y.whl",
        ] {
            assert!(check_package("pip", bad).is_err(), "{bad}");
        }
        assert!(check_package("pip", "a/b").is_err());
        assert!(check_package("npm", "a/b").is_err() && check_package("npm", "@a/b/c").is_err());
        assert!(check_package("apt", "curl")
            .unwrap_err()
            .contains("use pip or npm"));
    }
}
