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

impl Limits {
    /// (resource, soft = hard value) pairs; core dumps are always off.
    pub(crate) fn rlimits(&self) -> [(libc::__rlimit_resource_t, u64); 5] {
        [
            (libc::RLIMIT_DATA, self.memory_mb.saturating_mul(1 << 20)),
            (
                libc::RLIMIT_FSIZE,
                self.file_size_mb.saturating_mul(1 << 20),
            ),
            (libc::RLIMIT_CPU, self.cpu_s),
            (libc::RLIMIT_NOFILE, self.open_files),
            (libc::RLIMIT_CORE, 0),
        ]
    }
}
