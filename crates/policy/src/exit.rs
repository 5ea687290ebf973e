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
            Cause::Fatal => "failed with an unexpected error (exit 1)",
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

#[cfg(test)]
mod tests {
    use super::*;

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
