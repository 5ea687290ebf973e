//! What a runner's exit means (SPEC §5.8) and how the host reacts.

/// sysexits values the runner uses.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FATAL: i32 = 1;
pub const EXIT_TEMPFAIL: i32 = 75;
pub const EXIT_CONFIG: i32 = 78;

/// The `runner_exits.cause` vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Idle,
    Fatal,
    Transient,
    Config,
    Killed,
    Shutdown,
    SpawnFailed,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Idle => "idle",
            Cause::Fatal => "fatal",
            Cause::Transient => "transient",
            Cause::Config => "config",
            Cause::Killed => "killed",
            Cause::Shutdown => "shutdown",
            Cause::SpawnFailed => "spawn_failed",
        }
    }

    /// Whether the exit counts against the crash budget.
    pub fn is_abnormal(self) -> bool {
        !matches!(self, Cause::Idle | Cause::Shutdown)
    }

    /// A sentence for logs and `runner_exits.detail` when no log line says more.
    pub fn meaning(self) -> &'static str {
        match self {
            Cause::Idle => "exited cleanly (idle or asked to stop)",
            Cause::Fatal => "failed with an unexpected error",
            Cause::Transient => {
                "asked for a fresh sandbox (exit 75: corrupt view or persistent poll failure)"
            }
            Cause::Config => {
                "rejected its configuration (exit 78); fix runner.json or the provider settings"
            }
            Cause::Killed => "was killed by a signal",
            Cause::Shutdown => "stopped because the host is shutting down",
            Cause::SpawnFailed => "could not be started",
        }
    }
}

/// Classifies an exit from its code or signal. `shutting_down` marks exits
/// the host caused itself.
pub fn classify(code: Option<i32>, signal: Option<i32>, shutting_down: bool) -> Cause {
    if shutting_down {
        return Cause::Shutdown;
    }
    match (code, signal) {
        (Some(EXIT_OK), _) => Cause::Idle,
        (Some(EXIT_TEMPFAIL), _) => Cause::Transient,
        (Some(EXIT_CONFIG), _) => Cause::Config,
        (Some(_), _) => Cause::Fatal,
        (None, Some(_)) => Cause::Killed,
        (None, None) => Cause::Fatal,
    }
}

/// The status as the runner itself ended. bwrap and `docker run` report a
/// child killed by signal n as their own exit code 128 + n (bwrap's
/// monitor propagates it that way; docker follows the shell convention),
/// so behind such a `wrapper` an exit code 129..=192 is that signal. The
/// runner never exits with those codes itself (it uses 0, 1, 75, 78 and
/// Rust's 101 on a panic).
pub fn unwrap_status(
    code: Option<i32>,
    signal: Option<i32>,
    wrapper: bool,
) -> (Option<i32>, Option<i32>) {
    match (code, signal) {
        (Some(c), None) if wrapper && (129..=192).contains(&c) => (None, Some(c - 128)),
        other => other,
    }
}

/// The name of a Linux signal (`SIGKILL`), or `signal N` for others.
pub fn signal_name(sig: i32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .map(|n| (*n).to_owned())
        .unwrap_or_else(|| format!("signal {sig}"))
}

/// How the runner ended, in words: `killed by SIGKILL`, `exit code 1`.
pub fn describe(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by {}", signal_name(s)),
        (None, None) => "unknown exit status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapper_reports_a_signal_as_128_plus_n() {
        assert_eq!(unwrap_status(Some(137), None, true), (None, Some(9)));
        assert_eq!(unwrap_status(Some(143), None, true), (None, Some(15)));
        // the runner's own codes, and no wrapper: as they are
        for c in [0, 1, 75, 78, 101, 128, 193] {
            assert_eq!(unwrap_status(Some(c), None, true), (Some(c), None));
        }
        assert_eq!(unwrap_status(Some(137), None, false), (Some(137), None));
        assert_eq!(unwrap_status(None, Some(9), true), (None, Some(9)));
    }

    #[test]
    fn descriptions_name_the_signal_or_code() {
        assert_eq!(describe(None, Some(9)), "killed by SIGKILL");
        assert_eq!(describe(None, Some(15)), "killed by SIGTERM");
        assert_eq!(describe(None, Some(64)), "killed by signal 64");
        assert_eq!(describe(Some(3), None), "exit code 3");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(signal_name(-1), "signal -1");
        assert_eq!(signal_name(31), "SIGSYS");
    }

    #[test]
    fn classification_table() {
        let table = [
            (Some(0), None, false, Cause::Idle),
            (Some(1), None, false, Cause::Fatal),
            (Some(75), None, false, Cause::Transient),
            (Some(78), None, false, Cause::Config),
            (Some(101), None, false, Cause::Fatal),
            (None, Some(9), false, Cause::Killed),
            (None, Some(15), true, Cause::Shutdown),
            (Some(1), None, true, Cause::Shutdown),
        ];
        for (code, sig, sd, want) in table {
            assert_eq!(classify(code, sig, sd), want, "{code:?} {sig:?} {sd}");
        }
        assert!(!Cause::Idle.is_abnormal());
        assert!(Cause::Transient.is_abnormal());
    }
}
