//! What one sandbox, and all of them together, can make the proxy hold:
//! per-connection limits, the slot budget and the refusal-log throttle.

use super::*;

/// What one sandbox (and all of them together) can make the proxy hold.
/// Every connection is bounded in time and memory: the head is read whole
/// within `header_timeout` (at most [`MAX_HEAD`] bytes), bodies are streamed
/// through a fixed buffer (never collected), and a connection silent for
/// longer than its timeout is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections one session's socket accepts at once (`[proxy]
    /// max_connections_per_session`, default 32); more get 503.
    pub per_session: usize,
    /// Open connections all sessions together hold (`[proxy]
    /// max_connections`, default 256), further capped at a quarter of the
    /// host's open-file limit (each connection may hold two descriptors;
    /// the other half stays the host's: databases, listeners, runners).
    pub total: usize,
    /// From accept to the end of the request head (`header_timeout_s`,
    /// default 10 s): a slow or silent client is answered 408 and closed.
    pub header_timeout: Duration,
    /// Silence from the client while the proxy waits for its body or
    /// writes to it (`idle_timeout_s`, default 60 s).
    pub idle_timeout: Duration,
    /// Silence from the upstream (a model thinking before its first token)
    /// and in both directions of an egress tunnel (`upstream_timeout_s`,
    /// default 300 s).
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_session: 32,
            total: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(300),
        }
    }
}

/// The connection budget every session's proxy draws from (one per host).
pub struct Budget {
    pub(super) limits: Limits,
    pub(super) total: Arc<Semaphore>,
    pub(super) total_cap: usize,
    pub(super) nofile: u64,
}

impl Budget {
    /// `nofile`: the host's open-file limit (see [`raise_nofile`]).
    pub fn new(limits: Limits, nofile: u64) -> Budget {
        let total_cap = effective_total(limits.total, nofile);
        tracing::info!(
            per_session = limits.per_session,
            total = total_cap,
            nofile,
            "credential proxy limits: {} connections per session, {total_cap} in all (open-file limit {nofile})",
            limits.per_session
        );
        Budget {
            total: Arc::new(Semaphore::new(total_cap)),
            limits,
            total_cap,
            nofile,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The host-wide cap in force (after the open-file limit).
    pub fn total_cap(&self) -> usize {
        self.total_cap
    }
}

/// The configured total, capped so proxy connections (two descriptors
/// each at most) can use no more than half of the open-file limit.
pub fn effective_total(configured: usize, nofile: u64) -> usize {
    let by_fds = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
    configured.min(by_fds).max(1)
}

/// Raises the soft open-file limit to the hard one (the host needs room
/// for its databases and listeners whatever the sandboxes do); returns the
/// soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            } else {
                tracing::warn!(
                    "cannot raise the open-file limit from {} to {}: {}",
                    r.rlim_cur,
                    r.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    r.rlim_cur
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Full {
    Session(usize),
    Total { cap: usize, nofile: u64 },
}

impl Full {
    pub(super) fn message(&self) -> String {
        match self {
            Full::Session(n) => format!(
                "this sandbox already holds {n} connections to the proxy (the per-session limit, [proxy] max_connections_per_session): close idle connections and retry"
            ),
            Full::Total { cap, nofile } => format!(
                "all sessions together hold {cap} proxy connections (the host-wide limit: [proxy] max_connections, at most a quarter of the open-file limit {nofile}): retry later"
            ),
        }
    }
}

/// Takes a session slot and a host-wide slot, or says which is full.
pub(super) fn admit(
    session: &Arc<Semaphore>,
    budget: &Budget,
) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Full> {
    let s = session
        .clone()
        .try_acquire_owned()
        .map_err(|_| Full::Session(budget.limits.per_session))?;
    let t = budget
        .total
        .clone()
        .try_acquire_owned()
        .map_err(|_| Full::Total {
            cap: budget.total_cap,
            nofile: budget.nofile,
        })?;
    Ok((s, t))
}

/// At most one log line per `every` for a repeated event, with the count
/// of the ones not logged.
pub(super) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(super) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line is due.
    pub(super) fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_cap_leaves_half_the_descriptors_to_the_host() {
        assert_eq!(effective_total(256, 1_048_576), 256);
        assert_eq!(effective_total(256, 1024), 256);
        assert_eq!(effective_total(256, 512), 128);
        assert_eq!(effective_total(256, 2), 1);
        assert!(raise_nofile() >= 64);
    }

    #[test]
    fn slots_per_session_and_in_all() {
        let budget = Budget::new(
            Limits {
                per_session: 2,
                total: 3,
                ..Limits::default()
            },
            1 << 20,
        );
        let (a, b) = (Arc::new(Semaphore::new(2)), Arc::new(Semaphore::new(2)));
        let a1 = admit(&a, &budget).unwrap();
        let _a2 = admit(&a, &budget).unwrap();
        assert_eq!(admit(&a, &budget).unwrap_err(), Full::Session(2));
        let _b1 = admit(&b, &budget).unwrap();
        let full = admit(&b, &budget).unwrap_err();
        assert_eq!(
            full,
            Full::Total {
                cap: 3,
                nofile: 1 << 20
            }
        );
        assert!(
            full.message().contains("max_connections")
                && Full::Session(2)
                    .message()
                    .contains("max_connections_per_session")
        );
        // A refused session slot is not kept; closing frees both slots.
        assert_eq!(b.available_permits(), 1);
        drop(a1);
        assert!(admit(&b, &budget).is_ok());
    }

    #[test]
    fn repeated_refusals_log_once_per_interval() {
        let mut t = Throttle::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(t.note(t0), Some(0));
        assert_eq!(t.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(6)), Some(2));
    }
}
