//! `pinch service` (issue 8): the unit it renders names this binary and
//! the data dir, and where systemd is not running it says so plainly and
//! writes nothing.

use std::process::Command;

use crate::common::*;

#[test]
fn print_renders_the_unit_and_install_without_systemd_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let data = tmp.path().join("my data");
    let run = |args: &[&str]| {
        let o = Command::new(PINCH)
            .args(["--data-dir", data.to_str().unwrap(), "service"])
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, unit, err) = run(&["print"]);
    assert_eq!(code, 0, "{err}");
    let exe = std::fs::canonicalize(PINCH).unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart={} --data-dir \"{}\" --config ",
            exe.display(),
            data.display()
        )),
        "{unit}"
    );
    assert!(
        unit.contains(" host\n")
            && unit.contains("\nRestartPreventExitStatus=78\n")
            && unit.contains("\nWantedBy=default.target\n"),
        "{unit}"
    );
    if std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("note: systemd runs here; not trying `pinch service install` from a test");
        return;
    }
    let (code, _, err) = run(&["install"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("systemd is not running on this machine")
            && err.contains("nothing was installed"),
        "{err}"
    );
    assert!(!home.join(".config/systemd").exists(), "nothing written");
    let (code, out, _) = run(&["status"]);
    assert_eq!(code, 3, "not installed, not running: {out}");
    assert!(
        out.contains("(not installed)") && out.contains("systemd is not running"),
        "{out}"
    );
}

/// `pinch host --log-json` (issue 8): every line on stderr is one JSON
/// object with a level and a message, for log shippers.
#[test]
fn host_logs_json_lines_with_the_flag() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(PINCH)
        .args([
            "--data-dir",
            tmp.path().join("data").to_str().unwrap(),
            "host",
            "--log-json",
            "--provider",
            "scripted",
            "--sandbox",
            "process",
        ])
        .env_remove("PINCH_LOG_FORMAT")
        .env("PINCH_CONFIG", "/dev/null")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let Some(Ok(l)) = lines.next() else { break };
        seen.push(l);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(!seen.is_empty(), "no log lines");
    for l in &seen {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
}

/// The system unit's `User=` comes from the uid (or sudo's SUDO_UID), not
/// from `$USER`: with `$USER` unset it used to have no `User=` at all and
/// silently ran pinch as root (issue 15).
#[test]
fn the_system_unit_names_its_account_without_user_set() {
    let tmp = tempfile::tempdir().unwrap();
    let print = |envs: &[(&str, &str)]| {
        let mut c = Command::new(PINCH);
        c.args(["--data-dir", tmp.path().to_str().unwrap()])
            .args(["service", "print", "--system"])
            .env_clear()
            .env("HOME", tmp.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let me = pinch_unit_account();
    let (unit, _) = print(&[]);
    assert!(unit.contains(&format!("\nUser={me}\n")), "{unit}");
    if me == "root" {
        // Under sudo the account that ran sudo, whatever $USER says.
        let (unit, _) = print(&[("SUDO_UID", "65534"), ("USER", "root")]);
        let nobody = std::process::Command::new("id")
            .args(["-nu", "65534"])
            .output()
            .unwrap();
        let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_owned();
        assert!(unit.contains(&format!("\nUser={nobody}\n")), "{unit}");
        let (unit, err) = print(&[("USER", "alice")]);
        assert!(unit.contains("\nUser=root\n"), "{unit}");
        assert!(err.contains("runs pinch as root"), "{err}");
    }
}

/// `id -nu`: the real uid's name.
fn pinch_unit_account() -> String {
    let o = std::process::Command::new("id")
        .arg("-nu")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}
