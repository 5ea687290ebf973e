//! Issue 14: the data dir is the owner's alone. A host started with a
//! permissive umask creates nothing other users can read (directories
//! 0700, files and sockets without group/other bits) through a whole
//! message round trip — runner files included — and a tree an older
//! version left open is narrowed on start with one log line, without
//! following a symlink planted in an agent's folder.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use pinch_host::sandbox::Choice;

fn sandbox_name() -> &'static str {
    match any_sandbox() {
        Choice::Docker => "docker",
        Choice::Bwrap => "bwrap",
        _ => "process",
    }
}

/// (path, mode) of everything below `p`, never following a symlink
/// (symlinks themselves are left out: their mode means nothing).
fn modes(p: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        if md.file_type().is_symlink() {
            continue;
        }
        v.push((e.path(), md.permissions().mode() & 0o7777, md.is_dir()));
        if md.is_dir() {
            v.extend(modes(&e.path()));
        }
    }
    v
}

fn assert_private(data: &Path) {
    let root = std::fs::metadata(data).unwrap().permissions().mode() & 0o7777;
    assert_eq!(root, 0o700, "the data dir itself");
    let all = modes(data);
    assert!(all.len() > 10, "a real tree was checked: {all:?}");
    let open: Vec<String> = all
        .iter()
        .filter(|(_, m, dir)| if *dir { *m != 0o700 } else { m & 0o077 != 0 })
        .map(|(p, m, _)| format!("{} {m:o}", p.display()))
        .collect();
    assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
    for sock in ["run/cli.sock", "run/admin.sock"] {
        assert_eq!(
            std::fs::symlink_metadata(data.join(sock))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{sock}"
        );
    }
}

fn log_of(data: &Path) -> String {
    let p = data.with_extension(format!("log-{}", std::process::id()));
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn a_new_data_dir_is_private_whatever_the_umask() {
    // SAFETY: umask has no memory effects; the daemon inherits it.
    unsafe { libc::umask(0o022) };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[runner]\nidle_exit_s = 600\n[host]\nboot_breaker = false\n",
    )
    .unwrap();
    let _host = start_daemon(&data, &cfg, sandbox_name());
    let mut c = Client::connect(&data.join("run/cli.sock"));
    assert_eq!(
        c.ask("hello"),
        vec!["Hello from pinch! You said: hello".to_string()]
    );
    // The runner's own files are there too (its database, its log).
    let sessions = data.join("sessions/main");
    let sdir = std::fs::read_dir(&sessions)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(sdir.join("out/outbound.db").exists());
    assert_private(&data);
    assert!(
        !log_of(&data).contains("readable by other users"),
        "nothing to narrow on a new install"
    );
}

#[test]
fn an_open_tree_is_narrowed_on_start_with_one_log_line_and_symlinks_are_not_followed() {
    // SAFETY: as above.
    unsafe { libc::umask(0o022) };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        "[runner]\nidle_exit_s = 600\n[host]\nboot_breaker = false\n",
    )
    .unwrap();
    // What an older version left: a 0755/0644 tree with conversations in it.
    std::fs::create_dir_all(data.join("groups/main")).unwrap();
    std::fs::create_dir_all(data.join("logs")).unwrap();
    {
        let mut c = pinch_host::db::central::Central::open(&data.join("pinch.db")).unwrap();
        // The daemon's owner is the invoking user.
        c.bootstrap(&pinch_host::config::login()).unwrap();
    }
    std::fs::write(data.join("groups/main/notes.md"), "private notes").unwrap();
    std::fs::write(data.join("logs/host.log"), "old log").unwrap();
    // An agent planted symlinks to things outside the data dir.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("shared.txt"), "public on purpose").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(
        outside.join("shared.txt"),
        data.join("groups/main/link-file"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, data.join("groups/main/link-dir")).unwrap();
    assert_eq!(
        std::fs::metadata(data.join("pinch.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "the test starts from an open tree"
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o755
    );

    let _host = start_daemon(&data, &cfg, sandbox_name());
    let mut c = Client::connect(&data.join("run/cli.sock"));
    assert_eq!(
        c.ask("still mine?"),
        vec!["Hello from pinch! You said: still mine?".to_string()]
    );
    assert_private(&data);
    assert_eq!(
        std::fs::metadata(outside.join("shared.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "a symlink's target is never touched"
    );
    assert_eq!(
        std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let log = log_of(&data);
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("readable by other users"))
            .count(),
        1,
        "{log}"
    );
}
