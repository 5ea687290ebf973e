//! The pause after a failed delivery pass: growing, and each distinct
//! error logged once (issue 15).

use std::time::Duration;

/// Failed passes of one session: logged once per distinct error (not on
/// every retry), retried after a growing pause (1 s doubling to 60 s), and
/// a recovery is logged too (issue 15).
#[derive(Default)]
pub(super) struct Failing {
    count: u32,
    last: Option<String>,
}

impl Failing {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);

    pub(super) fn failed(&mut self, session_id: &str, e: &anyhow::Error) -> Option<Duration> {
        let msg = format!("{e:#}");
        self.count += 1;
        let wait = Duration::from_secs(1u64 << (self.count - 1).min(6)).min(Self::MAX_BACKOFF);
        if self.last.as_deref() != Some(msg.as_str()) {
            tracing::warn!(session_id, retry_in_s = wait.as_secs(), "delivery pass failed; retrying with a growing pause, logged again only if the error changes: {msg}");
            self.last = Some(msg);
        } else {
            tracing::debug!(
                session_id,
                failures = self.count,
                "delivery pass failed again: {msg}"
            );
        }
        Some(wait)
    }

    pub(super) fn ok(&mut self, session_id: &str) -> Option<Duration> {
        if self.count > 0 {
            tracing::info!(
                session_id,
                failures = self.count,
                "delivery passes work again"
            );
        }
        *self = Failing::default();
        None
    }

    #[cfg(test)]
    fn pauses(errors: &[&str]) -> (Vec<u64>, u32) {
        let mut f = Failing::default();
        let mut logged = 0;
        let mut out = Vec::new();
        for e in errors {
            let before = f.last.clone();
            out.push(f.failed("s", &anyhow::anyhow!("{e}")).unwrap().as_secs());
            logged += (f.last != before) as u32;
        }
        (out, logged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same error repeated is logged once and retried after a growing
    /// pause (not every second); a new error is logged again.
    #[test]
    fn a_failing_pass_backs_off_and_logs_each_error_once() {
        let same = ["disk image is malformed"; 9];
        let (pauses, logged) = Failing::pauses(&same);
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(logged, 1);
        let (_, logged) = Failing::pauses(&["a", "a", "b", "b", "a"]);
        assert_eq!(logged, 3);
    }
}
