//! A runner's resource limits (SPEC §8; issue 8).

/// Per-process resource limits every bwrap runner (and whatever it starts)
/// gets as rlimits, inherited across fork and exec (SPEC §8; issue 8).
/// Memory is `RLIMIT_DATA` (private writable memory: heap, anonymous
/// mappings), not `RLIMIT_AS`, which breaks runtimes that reserve large
/// address ranges they never touch (V8, Go); files mapped read-only, like a
/// local model, do not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Private writable memory per process, MiB.
    pub memory_mb: u64,
    /// Largest file a process may write, MiB (`EFBIG` beyond).
    pub file_size_mb: u64,
    /// CPU seconds per process (SIGXCPU, then SIGKILL a second later).
    pub cpu_s: u64,
    /// Open files per process.
    pub open_files: u64,
    /// Processes and threads in the whole sandbox (cgroup `pids.max`; the
    /// sandbox's total memory is capped at `memory_mb` the same way).
    pub pids: u64,
    /// Put each sandbox in cgroups of its own for `pids` and the total
    /// memory. Joining costs ~7 ms per cgroup v1 hierarchy on each cold
    /// start (the kernel's migration lock); `false` keeps the rlimits only.
    pub cgroup: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 4096,
            file_size_mb: 1024,
            cpu_s: 4 * 3600,
            open_files: 4096,
            pids: 512,
            cgroup: true,
        }
    }
}

/// One numeric limit: its `[sandbox]` key (and so its
/// `PINCH__SANDBOX__<KEY>` variable), the smallest value a runner can start
/// with and why, and how it is read from and written into [`Limits`].
/// `pinch`'s configuration reads every row here, so a new limit is added in
/// this file (and, when it is a cgroup cap, in `cgroup.rs`) and nowhere else.
pub struct Setting {
    pub key: &'static str,
    pub floor: u64,
    pub why: &'static str,
    pub get: fn(&Limits) -> u64,
    pub set: fn(&mut Limits, u64),
}

const STOPS: &str = "0 would stop every runner";

/// Every numeric limit, in the order problems are reported.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "memory_mb",
        floor: 1,
        why: STOPS,
        get: |l| l.memory_mb,
        set: |l, v| l.memory_mb = v,
    },
    Setting {
        key: "file_size_mb",
        floor: 1,
        why: STOPS,
        get: |l| l.file_size_mb,
        set: |l, v| l.file_size_mb = v,
    },
    Setting {
        key: "cpu_s",
        floor: 1,
        why: STOPS,
        get: |l| l.cpu_s,
        set: |l, v| l.cpu_s = v,
    },
    Setting {
        key: "open_files",
        floor: 64,
        why: "fewer open files than that and the runner cannot start",
        get: |l| l.open_files,
        set: |l, v| l.open_files = v,
    },
    Setting {
        key: "pids",
        floor: 16,
        why: "fewer processes than that and the runner cannot start",
        get: |l| l.pids,
        set: |l, v| l.pids = v,
    },
];

/// One rlimit: the resource, its name for `docker run --ulimit`, and the
/// value (soft = hard).
pub(crate) struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub docker: &'static str,
    pub value: u64,
}

impl Limits {
    /// The rlimits every process in the sandbox gets; core dumps are
    /// always off. bwrap sets them before exec, Docker passes them as
    /// `--ulimit`.
    pub(crate) fn rlimits(&self) -> [Rlimit; 5] {
        let r = |resource, docker, value| Rlimit {
            resource,
            docker,
            value,
        };
        [
            r(
                libc::RLIMIT_DATA,
                "data",
                self.memory_mb.saturating_mul(1 << 20),
            ),
            r(
                libc::RLIMIT_FSIZE,
                "fsize",
                self.file_size_mb.saturating_mul(1 << 20),
            ),
            r(libc::RLIMIT_CPU, "cpu", self.cpu_s),
            r(libc::RLIMIT_NOFILE, "nofile", self.open_files),
            r(libc::RLIMIT_CORE, "core", 0),
        ]
    }

    /// `docker run` arguments for these limits: the container's memory and
    /// pids caps (Docker's own cgroup) and every rlimit.
    pub(crate) fn docker_args(&self) -> Vec<String> {
        let mut a = vec![
            "--memory".to_owned(),
            format!("{}m", self.memory_mb),
            "--memory-swap".to_owned(),
            format!("{}m", self.memory_mb),
            "--pids-limit".to_owned(),
            self.pids.to_string(),
        ];
        for r in self.rlimits() {
            a.push("--ulimit".to_owned());
            a.push(format!("{}={1}:{1}", r.docker, r.value));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_reads_and_writes_its_own_field() {
        for (i, s) in SETTINGS.iter().enumerate() {
            let mut l = Limits::default();
            (s.set)(&mut l, 1_000_000 + i as u64);
            assert_eq!((s.get)(&l), 1_000_000 + i as u64, "{}", s.key);
            for other in SETTINGS.iter().filter(|o| o.key != s.key) {
                assert_eq!(
                    (other.get)(&l),
                    (other.get)(&Limits::default()),
                    "{} wrote {}",
                    s.key,
                    other.key
                );
            }
            assert!(
                (s.get)(&Limits::default()) >= s.floor,
                "{}'s default is under its floor",
                s.key
            );
        }
    }

    #[test]
    fn docker_gets_the_same_rlimits_as_bwrap() {
        let l = Limits::default();
        let a = l.docker_args();
        for r in l.rlimits() {
            let want = format!("{}={}:{}", r.docker, r.value, r.value);
            assert!(
                a.windows(2).any(|w| w[0] == "--ulimit" && w[1] == want),
                "{want} missing from {a:?}"
            );
        }
        assert!(a.windows(2).any(|w| w == ["--pids-limit", "512"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["--memory", "4096m"]), "{a:?}");
    }
}
