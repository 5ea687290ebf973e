//! The sandbox, attacked from inside with a shell in exactly the runner's
//! mount table and limits (docs/targets.md S1–S5, issue 8), for every backend
//! available here: bubblewrap always (CI requires it), Docker when its
//! daemon answers (CI starts one and sets PINCH_TEST_REQUIRE_DOCKER=1).

use std::net::TcpListener;
use std::path::Path;

use pinch_host::docker::Docker;
use pinch_host::sandbox::{Bwrap, Limits, Mounts};

/// A secret in the environment every sandbox here is started from.
const HOST_SECRET: &str = "hunter2-host-only-6d1f";

enum Backend {
    Bwrap(Bwrap),
    Docker(Docker),
}

struct Fixture {
    _tmp: tempfile::TempDir,
    mounts: Mounts,
    other_session: std::path::PathBuf,
    backend: Backend,
}

/// The Docker backend with its image built, if a daemon answers here.
fn docker(data: &Path, run: &Path) -> Option<Docker> {
    let required = std::env::var("PINCH_TEST_REQUIRE_DOCKER").as_deref() == Ok("1");
    let found = pinch_host::docker::find_docker().filter(|d| pinch_host::docker::probe(d).is_ok());
    let Some(bin) = found else {
        assert!(
            !required,
            "PINCH_TEST_REQUIRE_DOCKER=1 but no Docker daemon answers: start dockerd"
        );
        eprintln!("note: no Docker daemon here: the docker half of the sandbox suite is skipped");
        return None;
    };
    let mut d = Docker::new(bin, Limits::default());
    d.prepare_image(Path::new(crate::common::PINCH), data, run)
        .expect("building the runner image");
    Some(d)
}

/// One fixture per available backend (bwrap first).
fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let bwrap_ok = crate::common::bwrap_or_skip();
    for kind in ["bwrap", "docker"] {
        if kind == "bwrap" && !bwrap_ok {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let data = pinch_host::paths::DataDir::new(tmp.path().join("data"));
        let s = pinch_host::session::create_folder(&data, "main", "sone").unwrap();
        let other = pinch_host::session::create_folder(&data, "main", "stwo").unwrap();
        let agent = data.group_dir("main");
        let global = data.group_dir("global");
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::create_dir_all(&global).unwrap();
        let models = data.models_dir();
        std::fs::create_dir_all(&models).unwrap();
        std::fs::write(models.join("m.gguf"), b"GGUF model bytes").unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let backend = if kind == "bwrap" {
            Backend::Bwrap(Bwrap::new(pinch_host::sandbox::find_bwrap().unwrap()))
        } else {
            match docker(data.root(), &run) {
                Some(d) => Backend::Docker(d),
                None => continue,
            }
        };
        let mounts = Mounts {
            in_dir: s.in_dir(),
            out_dir: s.out_dir(),
            inbox_dir: s.inbox(),
            outbox_dir: s.outbox(),
            agent_dir: agent,
            global_dir: global,
            proxy_dir: None,
            models_dir: Some(models),
            model_file: None,
            extra: vec![],
            tools_dir: None,
            agent_md: None,
            trust_dir: None,
            data_root: data.root().to_owned(),
        };
        out.push(Fixture {
            _tmp: tmp,
            mounts,
            other_session: other.root().to_owned(),
            backend,
        });
    }
    out
}

impl Fixture {
    fn name(&self) -> &'static str {
        match self.backend {
            Backend::Bwrap(_) => "bwrap",
            Backend::Docker(_) => "docker",
        }
    }

    fn limits(&mut self) -> &mut Limits {
        match &mut self.backend {
            Backend::Bwrap(b) => &mut b.limits,
            Backend::Docker(d) => &mut d.limits,
        }
    }

    /// Builds (without running) the sandbox command: where every bind
    /// source is opened and checked.
    fn build(&self) -> std::io::Result<()> {
        let exe = Path::new(crate::common::PINCH);
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        match &self.backend {
            Backend::Bwrap(b) => b
                .command_with(exe, &self.mounts, &env, &["/bin/true"])
                .map(|_| ()),
            Backend::Docker(d) => d
                .command_with(exe, &self.mounts, &env, &["/bin/true"])
                .map(|_| ()),
        }
    }

    /// Runs `sh -c script` in the sandbox; returns (exit code, stdout+stderr).
    fn sh(&self, script: &str) -> (i32, String) {
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let exe = Path::new(crate::common::PINCH);
        let mut cmd = match &self.backend {
            Backend::Bwrap(b) => b
                .command_with(exe, &self.mounts, &env, &["/bin/sh", "-c", script])
                .unwrap(),
            Backend::Docker(d) => d
                .command_with(exe, &self.mounts, &env, &["/bin/sh", "-c", script])
                .unwrap(),
        };
        // A host key must not leak in: bwrap clears the environment
        // (--clearenv), docker passes only --env. Both are set for real in
        // the environment the sandbox is started from.
        let out = cmd
            .env("API_KEY_IN_HOST_ENV", "sk-test-123")
            .env("SECRET_SHOULD_NOT_LEAK", HOST_SECRET)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

#[test]
fn s1_inbound_db_and_its_directory_are_read_only() {
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        let (code, out) = f.sh("echo x >> /pinch/in/inbound.db");
        assert_ne!(code, 0);
        assert!(out.contains("Read-only file system"), "{out}");
        let (code, out) = f.sh("touch /pinch/in/inbound.db-journal");
        assert_ne!(
            code, 0,
            "no planting a journal the host would roll back: {out}"
        );
        assert!(out.contains("Read-only file system"), "{out}");
        // out/ is writable, and the write lands in the host's folder.
        let (code, out) = f.sh("echo ok > /pinch/out/probe && cat /pinch/out/probe");
        assert_eq!((code, out.trim()), (0, "ok"));
        assert!(f.mounts.out_dir.join("probe").exists());
    }
}

/// SPEC §8.1: the models folder is readable at /opt/pinch/models and
/// nothing in it can be changed, added or removed from inside.
#[test]
fn models_are_readable_and_read_only() {
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        let (code, out) = f.sh("cat /opt/pinch/models/m.gguf");
        assert_eq!((code, out.as_str()), (0, "GGUF model bytes"));
        for attack in [
            "echo x >> /opt/pinch/models/m.gguf",
            "touch /opt/pinch/models/new",
            "rm /opt/pinch/models/m.gguf",
        ] {
            let (code, out) = f.sh(attack);
            assert_ne!(code, 0, "{attack} must fail: {out}");
        }
        assert_eq!(
            std::fs::read(f.mounts.models_dir.as_ref().unwrap().join("m.gguf")).unwrap(),
            b"GGUF model bytes"
        );
    }
}

#[test]
fn s2_no_network_at_all() {
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // perl-base is in every Debian (the seccomp test uses it too): the
        // probe cannot pass by a missing interpreter — it must report a
        // refused connection (or a refused socket).
        let (_, out) = f.sh(&format!(
            "perl -e 'use Socket; socket(my $s, PF_INET, SOCK_STREAM, 0) or die qq(socket: $!\\n); \
             print connect($s, pack_sockaddr_in({port}, inet_aton(q(127.0.0.1)))) ? qq(CONNECTED\\n) : qq(refused: $!\\n)' 2>&1"
        ));
        assert!(
            !out.contains("CONNECTED"),
            "reached the host's loopback: {out}"
        );
        assert!(
            out.contains("refused: ") || out.contains("socket: "),
            "the TCP probe did not run: {out}"
        );
        // UDP: a datagram to the host's loopback never arrives. The host
        // then sends its own (a barrier): the first datagram read must be
        // the host's.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        let (_, out) = f.sh(&format!(
            "perl -e 'use Socket; socket(my $s, PF_INET, SOCK_DGRAM, 0) or die qq(socket: $!\\n); \
             my $r = send($s, q(from-the-sandbox), 0, pack_sockaddr_in({uport}, inet_aton(q(127.0.0.1)))); \
             print defined $r ? qq(sent $r\\n) : qq(not sent: $!\\n)' 2>&1"
        ));
        assert!(
            out.contains("sent ") || out.contains("not sent: ") || out.contains("socket: "),
            "the UDP probe did not run: {out}"
        );
        u.send_to(b"barrier", u.local_addr().unwrap()).unwrap();
        u.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"barrier",
            "a datagram from the sandbox reached the host ({out})"
        );
        let (_, out) = f.sh("cat /proc/net/dev");
        let ifaces: Vec<&str> = out
            .lines()
            .skip(2)
            .map(|l| l.split(':').next().unwrap().trim())
            .collect();
        assert_eq!(ifaces, vec!["lo"], "only a loopback of its own: {out}");
    }
}

#[test]
fn s4_host_paths_and_other_sessions_are_invisible() {
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        for p in ["/root", "/home", "/etc/shadow"] {
            let (code, out) = f.sh(&format!("ls -d {p} 2>&1"));
            assert_ne!(code, 0, "{p} is visible: {out}");
            assert!(out.contains("No such file"), "{p}: {out}");
        }
        let (code, out) = f.sh("ls /pinch");
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("stwo"), "{out}");
        let other = f.other_session.display().to_string();
        let (code, out) = f.sh(&format!("ls {other}"));
        assert_ne!(code, 0, "another session's folder is visible: {out}");
    }
}

#[test]
fn s3_s5_no_capabilities_no_host_environment_own_pid_namespace() {
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        let (code, out) =
            f.sh("grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status; env; echo pid=$$");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
        assert!(out.contains("NoNewPrivs:\t1"), "no_new_privs is set: {out}");
        assert!(
            !out.contains("API_KEY_IN_HOST_ENV") && !out.contains("sk-test-123"),
            "host environment leaked: {out}"
        );
        assert!(
            !out.contains("SECRET_SHOULD_NOT_LEAK") && !out.contains(HOST_SECRET),
            "host environment leaked: {out}"
        );
        // pid namespace: the shell is pid 2 (bwrap's init is 1) and sees only
        // its own few processes, not the host's hundreds.
        let pid: u32 = out
            .lines()
            .find_map(|l| l.strip_prefix("pid="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(pid <= 3, "pid {pid}");
        let (_, out) = f.sh("ls /proc | grep -E '^[0-9]+$' | wc -l");
        let n: usize = out.trim().parse().unwrap();
        assert!(n < 10, "sees {n} processes");
    }
}

/// The effective uid on the `Uid:` line of a `/proc/<pid>/status`.
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
}

/// S3, tried for real: a setuid binary (a copy of `cat` owned by uid 4242,
/// mode 4755 — outside the sandbox it runs as 4242) gains nothing inside:
/// it runs with the caller's uid, no capabilities, no_new_privs set.
/// Needs root to make the file (CI runs as root); skipped with a note
/// otherwise.
#[test]
fn s3_a_setuid_binary_gains_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root: cannot make a setuid binary of another user; skipping");
        return;
    }
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        let suid = f.mounts.agent_dir.join("suidcat");
        std::fs::copy("/bin/cat", &suid).unwrap();
        std::os::unix::fs::chown(&suid, Some(4242), Some(4242)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // The probe works: outside, the bit takes effect (unless the temp
        // folder is mounted nosuid here, in which case it proves nothing).
        let outside = std::process::Command::new(&suid)
            .arg("/proc/self/status")
            .output()
            .unwrap();
        let outside = String::from_utf8_lossy(&outside.stdout).to_string();
        if effective_uid(&outside) != Some(4242) {
            eprintln!(
                "note: setuid bits do not work in {} here: skipping",
                suid.display()
            );
            return;
        }
        let (code, inside) = f.sh("id -u; /workspace/agent/suidcat /proc/self/status");
        assert_eq!(code, 0, "{inside}");
        let caller: u32 = inside.lines().next().unwrap().trim().parse().unwrap();
        assert_eq!(
            effective_uid(&inside),
            Some(caller),
            "the setuid bit changed the uid inside the sandbox: {inside}"
        );
        assert!(inside.contains("CapEff:\t0000000000000000"), "{inside}");
        assert!(inside.contains("NoNewPrivs:\t1"), "{inside}");
    }
}

/// The seccomp filter (issue 8): syscalls an agent never needs fail with
/// EPERM inside the runner's sandbox — tracing, new namespaces (by
/// `unshare` and by `clone` flags), kernel keyrings, eBPF, perf, mounts —
/// while ordinary work (fork, exec, files) goes on. Without the filter,
/// `ptrace(TRACEME)` and `unshare -U` succeed in a bwrap sandbox.
#[test]
fn s5_seccomp_denies_what_an_agent_never_needs() {
    for f in fixtures() {
        eprintln!("backend: {}", f.name());
        let (code, out) = f.sh("grep Seccomp: /proc/self/status; unshare -U true; echo unshare=$?");
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Seccomp:\t2"), "a filter is installed: {out}");
        assert!(
            out.contains("unshare=1") || out.contains("Operation not permitted"),
            "a new user namespace was created: {out}"
        );
        assert!(!out.contains("unshare=0"), "{out}");
        // perl (perl-base, in every Debian) calls them by number.
        let calls: Vec<String> = [
            "ptrace",
            "keyctl",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "mount",
            "setns",
            "init_module",
            "kexec_load",
            "reboot",
        ]
        .iter()
        .map(|n| {
            let nr = pinch_host::seccomp::denied()
                .into_iter()
                .find(|(d, _)| d == n)
                .unwrap()
                .1;
            format!("{n}={nr}")
        })
        .collect();
        let script = format!(
        "perl -e 'for (@ARGV) {{ my ($n, $nr) = split /=/; $! = 0; my $r = syscall($nr, 0, 0, 0, 0, 0); print \"$n $r \", $!+0, \"\\n\" }} \
         $! = 0; my $r = syscall({clone}, 0x10000000 | 17, 0, 0, 0, 0); exit 0 if $r == 0; print \"clone-newuser $r \", $!+0, \"\\n\"' {args}; \
         echo forked-$(echo ok)",
        clone = libc::SYS_clone,
        args = calls.join(" ")
    );
        let (code, out) = f.sh(&script);
        assert_eq!(code, 0, "{out}");
        for line in out.lines().filter(|l| !l.starts_with("forked")) {
            assert!(
                line.ends_with(" -1 1"),
                "not denied with EPERM: {line:?} in {out}"
            );
        }
        assert_eq!(
            out.lines().filter(|l| !l.starts_with("forked")).count(),
            calls.len() + 1,
            "{out}"
        );
        assert!(
            out.contains("forked-ok"),
            "ordinary fork/exec still work: {out}"
        );
    }
}

/// Resource limits (issue 8): private memory, file size, CPU time and open
/// files are capped for the runner and everything it starts; files the
/// agent writes belong to the user who runs pinch.
#[test]
fn resource_limits_hold_and_files_belong_to_the_invoking_user() {
    for mut f in fixtures() {
        eprintln!("backend: {}", f.name());
        let (code, out) = f.sh("cat /proc/self/limits");
        assert_eq!(code, 0, "{out}");
        let limit = |name: &str| -> String {
            out.lines()
                .find(|l| l.starts_with(name))
                .map(|l| {
                    l[name.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .unwrap_or_else(|| panic!("{name}: {out}"))
        };
        let d = pinch_host::sandbox::Limits::default();
        assert_eq!(limit("Max data size"), (d.memory_mb << 20).to_string());
        assert_eq!(limit("Max file size"), (d.file_size_mb << 20).to_string());
        assert_eq!(limit("Max cpu time"), d.cpu_s.to_string());
        assert_eq!(limit("Max open files"), d.open_files.to_string());
        assert_eq!(limit("Max core file size"), "0");
        // Small limits, really enforced.
        *f.limits() = pinch_host::sandbox::Limits {
            memory_mb: 64,
            file_size_mb: 1,
            cpu_s: 60,
            open_files: 64,
            pids: 512,
            cgroup: true,
        };
        let (_, out) = f.sh("head -c 2097152 /dev/zero > /workspace/agent/big; echo rc=$?; stat -c %s /workspace/agent/big");
        assert!(
            out.contains("File too large") || out.contains("rc=1") || out.contains("rc=153"),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l.trim() == "1048576"),
            "the file stops at 1 MiB: {out}"
        );
        let (_, out) =
            f.sh("perl -e '$x = q(a) x (256 * 1024 * 1024); print qq(allocated\\n)'; echo rc=$?");
        assert!(
            !out.contains("allocated"),
            "256 MiB allocated under a 64 MiB cap: {out}"
        );
        let (_, out) = f.sh("perl -e 'my @f; while (open(my $h, q(<), q(/dev/null))) { push @f, $h; last if @f > 1000 } print scalar(@f), qq(\\n)'");
        let opened: usize = out.trim().parse().unwrap_or_else(|_| panic!("{out}"));
        assert!(opened > 0 && opened < 64, "{out}");
        // Ownership: what the agent writes is the invoking user's.
        let (code, out) = f.sh("echo mine > /workspace/agent/owned");
        assert_eq!(code, 0, "{out}");
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(f.mounts.agent_dir.join("owned")).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (unsafe { libc::geteuid() }, unsafe { libc::getegid() })
        );
    }
}

/// A fork bomb stays inside its sandbox (issue 8): the sandbox's cgroup
/// caps its processes (`pids`), so the 200 background sleeps mostly fail
/// to start and the host is untouched. Skipped (loudly) where cgroups are
/// not writable, e.g. an unprivileged user without delegation.
#[test]
fn a_fork_bomb_hits_the_sandboxs_process_cap() {
    for mut f in fixtures() {
        eprintln!("backend: {}", f.name());
        if let Err(e) = pinch_host::cgroup::prepare(
            "probe",
            &pinch_host::sandbox::Limits {
                pids: 8,
                memory_mb: 64,
                ..Default::default()
            },
        )
        .map(|p| pinch_host::cgroup::cleanup(&p.dirs))
        {
            // As root (CI) the cgroup is part of the sandbox: its absence
            // fails, it does not pass; elsewhere (no delegation) it is
            // skipped loudly, and PINCH_TEST_NO_CGROUPS=1 skips it as root.
            let skip_ok = unsafe { libc::geteuid() } != 0
                || std::env::var("PINCH_TEST_NO_CGROUPS").as_deref() == Ok("1");
            assert!(
                skip_ok,
                "cgroups are not usable here ({e}) though running as root: the process cap cannot be \
                 tested (mount a writable cgroup2 at /sys/fs/cgroup, or set PINCH_TEST_NO_CGROUPS=1 to skip)"
            );
            eprintln!("note: cgroups are not usable here ({e}); the process cap is not tested");
            continue;
        }
        f.limits().pids = 24;
        let (code, out) = f.sh("perl -e 'my $n = 0; for (1 .. 200) { my $p = fork(); last unless defined $p; if ($p == 0) { sleep 2; exit 0 } $n++ } print qq(forked $n\\n); 1 while wait() != -1'");
        assert_eq!(code, 0, "{out}");
        let forked: usize = out
            .trim()
            .strip_prefix("forked ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            forked > 0 && forked < 24,
            "{forked} children in a sandbox capped at 24 processes: {out}"
        );
    }
}

/// SPEC §7.8 (lesson 38): extra folders through the owner's allowlist, as
/// the host resolves them at spawn, seen from inside the sandbox. A folder
/// under a read-only root is read-only whatever the request; one under a
/// read-write root is writable and the write lands on the host; a symlink
/// that leads out of the root, a blocked name and pinch's data dir are
/// refused and never appear.
#[test]
fn extra_folders_follow_the_allowlist() {
    for mut f in fixtures() {
        eprintln!("backend: {}", f.name());
        let base = f._tmp.path().to_owned();
        for d in ["shared/docs", "shared/.ssh", "work/site", "outside"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("shared/docs/readme.txt"), "shared words").unwrap();
        std::fs::write(base.join("outside/secret.txt"), "TOPSECRET").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), base.join("shared/escape")).unwrap();
        let allow_file = base.join("config/mount-allowlist.toml");
        std::fs::create_dir_all(allow_file.parent().unwrap()).unwrap();
        std::fs::write(
        &allow_file,
        format!(
            "[[allowed_roots]]\npath = {:?}\nread_write = false\n[[allowed_roots]]\npath = {:?}\nread_write = true\n",
            base.join("shared").display().to_string(),
            base.join("work").display().to_string()
        ),
    )
    .unwrap();
        let allow = pinch_host::mounts::load(&allow_file).unwrap();
        let requests = serde_json::json!([
            {"host": base.join("shared/docs"), "name": "docs", "read_write": true},
            {"host": base.join("work/site"), "name": "site", "read_write": true},
            {"host": base.join("shared/escape"), "name": "escape"},
            {"host": base.join("shared/.ssh"), "name": "keys"},
            {"host": base.join("data"), "name": "data"},
            {"host": base.join("shared/docs"), "name": "../up"},
        ])
        .to_string();
        let protected = vec![
            std::fs::canonicalize(base.join("data")).unwrap(),
            std::fs::canonicalize(base.join("config")).unwrap(),
        ];
        let (granted, refused) = pinch_host::mounts::resolve(Some(&requests), &allow, &protected);
        let names: Vec<(&str, bool)> = granted
            .iter()
            .map(|g| (g.name.as_str(), g.read_write))
            .collect();
        assert_eq!(
            names,
            vec![("docs", false), ("site", true)],
            "refused: {refused:?}"
        );
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert!(
            refused[0].contains("not inside an allowed root"),
            "the symlink is judged by where it leads: {refused:?}"
        );
        assert!(
            refused[1].contains("blocked pattern \".ssh\""),
            "{refused:?}"
        );
        assert!(
            refused[2].contains("not inside") || refused[2].contains("overlaps"),
            "{refused:?}"
        );
        assert!(refused[3].contains("plain name"), "{refused:?}");
        f.mounts.extra = granted;
        let (code, out) = f.sh("ls /workspace/extra; cat /workspace/extra/docs/readme.txt; echo; echo x > /workspace/extra/docs/new 2>&1; echo made > /workspace/extra/site/made.txt && echo wrote");
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], &["docs", "site"], "{out}");
        assert!(out.contains("shared words"), "{out}");
        assert!(
            out.contains("Read-only file system"),
            "docs is read-only: {out}"
        );
        assert!(out.contains("wrote"), "{out}");
        assert_eq!(
            std::fs::read_to_string(base.join("work/site/made.txt")).unwrap(),
            "made\n"
        );
        assert!(!base.join("shared/docs/new").exists());
        let (_, out) = f.sh("cat /workspace/extra/escape/secret.txt /workspace/extra/docs/../../outside/secret.txt 2>&1");
        assert!(!out.contains("TOPSECRET"), "{out}");
    }
}

/// Issue 14, break 1: a bind source swapped for a symlink between two
/// spawns is refused with its name, never followed. Two sources an agent
/// could reach: a read-only extra folder nested in a read-write one (the
/// agent swaps it through the read-write mount, from inside), and a
/// host-only folder (the tools folder) replaced as a compromised agent
/// would have done when it lived in the workspace.
#[test]
fn a_bind_source_swapped_for_a_symlink_is_refused_not_followed() {
    use pinch_policy::mounts::Granted;
    for mut f in fixtures() {
        let name = f.name();
        let data = f.mounts.data_root.clone();
        let home = data.parent().unwrap().join("home");
        std::fs::create_dir_all(home.join("proj/docs")).unwrap();
        std::fs::write(home.join("proj/docs/readme"), "project docs").unwrap();
        let tools = data.join("tools/main");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(tools.join("tool.txt"), "a tool").unwrap();
        f.mounts.extra = vec![
            Granted {
                host: home.join("proj"),
                name: "proj".into(),
                read_write: true,
            },
            Granted {
                host: home.join("proj/docs"),
                name: "docs".into(),
                read_write: false,
            },
        ];
        f.mounts.tools_dir = Some(tools.clone());
        let (code, out) =
            f.sh("cat /workspace/extra/docs/readme; echo; cat /opt/pinch/tools/tool.txt");
        assert_eq!(code, 0, "{name}: {out}");
        assert!(
            out.contains("project docs") && out.contains("a tool"),
            "{name}: {out}"
        );

        // From inside, through the read-write folder.
        let (_, out) =
            f.sh("cd /workspace/extra/proj && mv docs docs.old && ln -s / docs && echo swapped");
        assert!(out.contains("swapped"), "{name}: {out}");
        let e = f
            .build()
            .expect_err("a swapped source must not be mounted")
            .to_string();
        assert!(
            e.contains("/workspace/extra/docs") && e.contains("symbolic link"),
            "{name}: {e}"
        );

        // A host-only source replaced by a link to the host's root.
        f.mounts.extra.clear();
        std::fs::rename(&tools, data.join("tools/main.old")).unwrap();
        std::os::unix::fs::symlink("/", &tools).unwrap();
        let e = f
            .build()
            .expect_err("a linked tools folder must not be mounted")
            .to_string();
        assert!(
            e.contains("/opt/pinch/tools") && e.contains("symbolic link"),
            "{name}: {e}"
        );
    }
}
