//! `pinch bench chaos`: R3/R4 as a run anyone can repeat. A real daemon
//! (`pinch host`) under a steady stream of messages; at random moments the
//! runner or the host is killed with SIGKILL (the host is restarted at
//! once). At the end every accepted message must have been answered.
//!
//! Reports: messages sent, accepted, answered, lost (accepted but never
//! answered: must be 0), duplicates split by cause: *redelivered* (the same
//! reply row delivered twice: the host died between handing it to the
//! channel and recording it: the send window) and *re-answered* (the agent
//! answered the same message in two turns). Messages the host never
//! confirmed (it died first) are counted apart: a real platform redelivers
//! those, and they may or may not have been stored. Messages the host
//! refused (it answered `rejected`) are counted apart again, with the
//! reasons.
//!
//! The sender pauses for `--quiet-s` after every five seconds of sending,
//! and the run goes on for one more pause after the last message, so kills
//! also land while nothing is being sent (counted as `kills_in_quiet`).
//!
//! By default the host runs with the boot breaker, crash budget and respawn
//! backoff turned off (the pure R3/R4 property: kills never lose a
//! message). `--defaults` runs the shipped defaults instead, so the figure
//! describes what users run: the bench then waits out the boot breaker, and
//! resumes a quarantined session as the owner would after the notice
//! (counted as `quarantines_resumed`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pinch_channels::cli_socket::{ClientMsg, ServerMsg};
use serde::Serialize;

#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 300)]
    pub messages: usize,
    /// Runner kills (SIGKILL) spread over the run.
    #[arg(long, default_value_t = 30)]
    pub runner_kills: usize,
    /// Host kills (SIGKILL, then restart) spread over the run.
    #[arg(long, default_value_t = 5)]
    pub host_kills: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Sandbox backend for the daemon.
    #[arg(long, default_value = "process")]
    pub sandbox: String,
    /// Seed for the kill schedule (printed, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run the host with the shipped defaults (boot breaker, crash budget,
    /// respawn backoff) instead of with them turned off.
    #[arg(long)]
    pub defaults: bool,
    /// Seconds the sender pauses after every five seconds of sending (and
    /// after the last message); kills land in the pauses too.
    #[arg(long, default_value_t = 2.0)]
    pub quiet_s: f64,
}

/// When message `k` is due, in ms from the start: `gap` apart, with a pause
/// of `quiet` after every `burst` messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    pub(crate) gap_ms: f64,
    pub(crate) burst: usize,
    pub(crate) quiet_ms: f64,
}

impl Schedule {
    pub(crate) fn new(rate: f64, quiet_s: f64) -> Schedule {
        let rate = rate.max(0.1);
        Schedule {
            gap_ms: 1000.0 / rate,
            burst: ((rate * 5.0) as usize).max(1),
            quiet_ms: quiet_s.max(0.0) * 1000.0,
        }
    }

    pub(crate) fn due_ms(&self, k: usize) -> f64 {
        k as f64 * self.gap_ms + (k / self.burst) as f64 * self.quiet_ms
    }

    /// The whole run for `n` messages: the last one's time plus one pause.
    pub(crate) fn span_ms(&self, n: usize) -> u64 {
        (self.due_ms(n.saturating_sub(1)) + self.gap_ms + self.quiet_ms) as u64
    }

    /// Whether `at` falls while nothing is being sent (a pause, or after
    /// the last message).
    pub(crate) fn quiet_at(&self, at: u64, n: usize) -> bool {
        let at = at as f64;
        if at > self.due_ms(n.saturating_sub(1)) + self.gap_ms {
            return true;
        }
        let sending = self.burst as f64 * self.gap_ms;
        let period = sending + self.quiet_ms;
        self.quiet_ms > 0.0 && at % period >= sending
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub sandbox: String,
    pub runner_kills: usize,
    pub host_kills: usize,
    /// The kills the schedule asked for (`--runner-kills`,
    /// `--host-kills`); a runner kill that found no runner is not made.
    pub runner_kills_scheduled: usize,
    pub host_kills_scheduled: usize,
    /// The wait for answers ended at its deadline with messages still
    /// unanswered or unaccounted for (they are counted as lost).
    pub deadline_hit: bool,
    pub sent: usize,
    pub accepted: usize,
    pub unconfirmed: usize,
    pub unconfirmed_answered: usize,
    /// Refused by the host (it answered `rejected`), apart from the above.
    pub rejected: usize,
    /// Each refusal reason and how often it came.
    pub rejected_reasons: std::collections::BTreeMap<String, usize>,
    /// Whether the host ran with the shipped defaults (`--defaults`).
    pub defaults: bool,
    /// Kills that landed while nothing was being sent.
    pub kills_in_quiet: usize,
    /// Quarantined sessions the bench resumed (only with `--defaults`).
    pub quarantines_resumed: usize,
    pub answered: usize,
    pub lost: usize,
    pub duplicates_redelivered: usize,
    pub duplicates_reanswered: usize,
    pub seconds: f64,
}

/// xorshift: a tiny seeded generator for a repeatable kill schedule.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
pub(crate) struct Seen {
    /// token -> accepted by the host
    pub(crate) accepted: HashSet<String>,
    pub(crate) unconfirmed: HashSet<String>,
    /// token -> the host's reason for refusing it
    pub(crate) rejected: HashMap<String, String>,
    /// token -> distinct reply row ids that carried it
    pub(crate) answers: HashMap<String, Vec<String>>,
    /// reply row ids received (to tell redeliveries apart)
    pub(crate) rows: HashMap<String, usize>,
    /// messages written to the socket
    pub(crate) sent: usize,
}

#[allow(clippy::disallowed_methods)] // the chaos run starts and kills real pinch hosts
pub fn run(args: ChaosArgs) -> Result<i32> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            | 1
    });
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(
        &cfg,
        if args.defaults {
            ""
        } else {
            "[host]\nsweep_s = 1\nboot_breaker = false\nretry_base_s = 0.2\ncrash_budget = 100000\nrespawn_delays_s = [0]\n[runner]\nidle_exit_s = 600\n"
        },
    )?;
    // The boot breaker may hold a restarted host back for minutes.
    let back_within = Duration::from_secs(if args.defaults { 1000 } else { 30 });
    let sock = data.join("run/cli.sock");
    // The hosts' stderr (warnings and errors), so a host that exits by
    // itself is reported with its reason instead of waited on.
    let host_log = tmp.path().join("host.log");
    let exe = std::env::current_exe()?;
    let start = |d: &Path| -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&host_log)
            .context("opening the hosts' log")?;
        Command::new(&exe)
            .args(["host", "--data-dir"])
            .arg(d)
            .arg("--config")
            .arg(&cfg)
            .args(["--sandbox", &args.sandbox])
            .env("PINCH_LOG", "warn")
            .env_remove("PINCH_CONFIG")
            .env_remove("PINCH_HOME")
            // The chaos run measures pinch, not a model: always the scripted provider.
            .args(["--provider", "scripted"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting pinch host")
    };
    let host: Arc<Mutex<Child>> = Arc::new(Mutex::new(start(&data)?));
    wait_host(&sock, Duration::from_secs(20), &host, &host_log)?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let sending_done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let schedule = Schedule::new(args.rate, args.quiet_s);
    let client = {
        let (seen, done, sock) = (seen.clone(), sending_done.clone(), sock.clone());
        let n = args.messages;
        std::thread::spawn(move || client_loop(&sock, n, schedule, &seen, &done, back_within))
    };

    // The kill schedule: spread over the sending time and its pauses.
    let mut rng = Rng(seed);
    let span_ms = schedule.span_ms(args.messages);
    let mut in_quiet = 0;
    let mut resumed = 0;
    let mut kills: Vec<(u64, bool)> = (0..args.runner_kills)
        .map(|_| (rng.below(span_ms), false))
        .collect();
    kills.extend((0..args.host_kills).map(|_| (rng.below(span_ms), true)));
    kills.sort();
    let (mut rk, mut hk) = (0, 0);
    for (at, is_host) in kills {
        let now = t0.elapsed().as_millis() as u64;
        if at > now {
            std::thread::sleep(Duration::from_millis(at - now));
        }
        if args.defaults {
            resumed += resume_quarantined(&data);
        }
        // Whether nothing is being sent now (by the clock: with the boot
        // breaker a kill can come later than scheduled).
        let quiet = |t0: Instant| schedule.quiet_at(t0.elapsed().as_millis() as u64, args.messages);
        if is_host {
            // Each kill hits a running host (not one the breaker holds back).
            wait_host(&sock, back_within, &host, &host_log)?;
            in_quiet += usize::from(quiet(t0));
            let mut h = host.lock().unwrap();
            let _ = h.kill();
            let _ = h.wait();
            *h = start(&data)?;
            hk += 1;
        } else if let Some(pid) = runner_pid(&data) {
            // Alternate: the runner process itself (a crash), or its sandbox
            // supervisor (bwrap) when there is one.
            let inner = crate::bench::descendants(pid)
                .into_iter()
                .find(|p| crate::bench::comm(*p).as_deref() == Some("pinch"));
            let target = match inner {
                Some(p) if rk % 2 == 0 => p,
                _ => pid,
            };
            // SAFETY: kill(2) on a pid the host reported as its live runner.
            unsafe {
                libc::kill(target as i32, libc::SIGKILL);
            }
            rk += 1;
            in_quiet += usize::from(quiet(t0));
        }
    }
    // Let everything accepted be answered (retries back off, runners
    // respawn; with the defaults the backoff reaches 120 s).
    let deadline = Instant::now() + Duration::from_secs(if args.defaults { 400 } else { 90 });
    let mut deadline_hit = false;
    loop {
        if args.defaults {
            resumed += resume_quarantined(&data);
        }
        alive(&host, &host_log)?;
        let s = seen.lock().unwrap();
        let pending = s
            .accepted
            .iter()
            .filter(|t| !s.answers.contains_key(*t))
            .count();
        let all_sent = s.sent >= args.messages
            && s.accepted.len() + s.unconfirmed.len() + s.rejected.len() >= s.sent;
        drop(s);
        if pending == 0 && all_sent {
            break;
        }
        if Instant::now() > deadline {
            deadline_hit = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sending_done.store(true, Ordering::SeqCst);
    client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    {
        let mut h = host.lock().unwrap();
        // SAFETY: plain kill(2) of our child.
        unsafe {
            libc::kill(h.id() as i32, libc::SIGTERM);
        }
        let _ = h.wait();
    }
    let s = seen.lock().unwrap();
    let answered = s
        .accepted
        .iter()
        .filter(|t| s.answers.contains_key(*t))
        .count();
    // A reply row seen more than once was redelivered; a message answered by
    // more than one reply row was answered twice.
    let redelivered = s.rows.values().filter(|n| **n > 1).count();
    let reanswered: usize = s
        .answers
        .values()
        .map(|rows| rows.len().saturating_sub(1))
        .sum();
    let report = Report {
        seed,
        sandbox: args.sandbox.clone(),
        runner_kills: rk,
        host_kills: hk,
        runner_kills_scheduled: args.runner_kills,
        host_kills_scheduled: args.host_kills,
        deadline_hit,
        sent: s.sent,
        accepted: s.accepted.len(),
        unconfirmed: s.unconfirmed.len(),
        unconfirmed_answered: s
            .unconfirmed
            .iter()
            .filter(|t| s.answers.contains_key(*t))
            .count(),
        rejected: s.rejected.len(),
        rejected_reasons: s.rejected.values().fold(Default::default(), |mut m, r| {
            *m.entry(r.chars().take(120).collect()).or_default() += 1;
            m
        }),
        defaults: args.defaults,
        kills_in_quiet: in_quiet,
        quarantines_resumed: resumed,
        answered,
        // Accepted and never answered, plus anything written that the host
        // neither confirmed nor refused (it must not vanish silently).
        lost: s.accepted.len() - answered
            + s.sent
                .saturating_sub(s.accepted.len() + s.unconfirmed.len() + s.rejected.len()),
        duplicates_redelivered: redelivered,
        duplicates_reanswered: reanswered,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "pinch bench chaos — {} sandbox, seed {}, {}",
            report.sandbox,
            report.seed,
            if report.defaults {
                "shipped defaults (boot breaker, crash budget, backoff on)"
            } else {
                "boot breaker, crash budget and backoff off (--defaults for the shipped settings)"
            }
        );
        println!(
            "  kills: {} runner ({} scheduled; the rest found no runner), {} host ({} scheduled) (SIGKILL), {} of them while nothing was being sent",
            report.runner_kills,
            report.runner_kills_scheduled,
            report.host_kills,
            report.host_kills_scheduled,
            report.kills_in_quiet
        );
        println!(
            "  messages: {} sent, {} accepted, {} answered, {} LOST",
            report.sent, report.accepted, report.answered, report.lost
        );
        println!(
            "  unconfirmed (host died before accepting): {} ({} of them answered anyway)",
            report.unconfirmed, report.unconfirmed_answered
        );
        println!("  rejected by the host: {}", report.rejected);
        for (why, n) in &report.rejected_reasons {
            println!("    {n} × {why}");
        }
        if report.defaults {
            println!(
                "  quarantined sessions resumed (as the owner would): {}",
                report.quarantines_resumed
            );
        }
        println!(
            "  duplicates: {} redelivered (host killed in the send window), {} re-answered",
            report.duplicates_redelivered, report.duplicates_reanswered
        );
        println!("  took {:.1} s", report.seconds);
        if report.deadline_hit {
            println!(
                "  DEADLINE HIT: the wait for answers ended with messages unanswered or unaccounted for (counted as lost above)"
            );
        }
    }
    Ok(if report.lost == 0 { 0 } else { 1 })
}

/// Fails when the host has exited without being killed by the bench (a
/// crash, or a refusal to start), with the end of the hosts' log: the run
/// cannot go on, and waiting for answers would only hang.
fn alive(host: &Mutex<Child>, log: &Path) -> Result<()> {
    if let Some(status) = host.lock().unwrap().try_wait()? {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the host exited by itself ({status}); the end of its log:\n{}",
            tail.join("\n")
        );
    }
    Ok(())
}

/// [`wait_socket`] for the bench's own host, failing at once if it exits.
fn wait_host(sock: &Path, timeout: Duration, host: &Mutex<Child>, log: &Path) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while UnixStream::connect(sock).is_err() {
        alive(host, log)?;
        if Instant::now() > deadline {
            bail!("the host did not open {} in time", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn wait_socket(sock: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while UnixStream::connect(sock).is_err() {
        if Instant::now() > deadline {
            bail!("the host did not open {} in time", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One admin request over the admin socket; its `data`.
fn admin(data: &Path, command: &str, args: serde_json::Value) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(data.join("run/admin.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = serde_json::json!({"id": 1, "command": command, "args": args});
    writeln!(s, "{req}").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some(v["data"].clone())
}

/// The live runner's pid from the admin socket (any session).
pub(crate) fn runner_pid(data: &Path) -> Option<u32> {
    admin(data, "sessions-list", serde_json::json!({}))?
        .as_array()?
        .iter()
        .find_map(|r| r["runner_pid"].as_u64())
        .map(|p| p as u32)
}

/// Resumes every quarantined session, as the owner does after the notice
/// (`pinch admin sessions resume`); returns how many.
fn resume_quarantined(data: &Path) -> usize {
    let Some(rows) = admin(data, "sessions-list", serde_json::json!({})) else {
        return 0;
    };
    let ids: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !r["quarantined_at"].is_null())
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    ids.iter()
        .filter(|id| admin(data, "sessions-resume", serde_json::json!({"id": id})).is_some())
        .count()
}

struct Link {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

fn connect(sock: &Path, within: Duration) -> Option<Link> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = UnixStream::connect(sock) {
            s.set_read_timeout(Some(Duration::from_millis(50))).ok()?;
            let w = s.try_clone().ok()?;
            return Some(Link {
                r: BufReader::new(s),
                w,
            });
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tokens(text: &str) -> Vec<String> {
    text.trim_start_matches("Hello from pinch! You said: ")
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with("chaos-"))
        .collect()
}

/// Sends `n` messages on `schedule` over a connection it re-opens whenever
/// the host dies (waiting up to `back_within` for it), acking every reply
/// after recording it; keeps reading until `done`.
pub(crate) fn client_loop(
    sock: &Path,
    n: usize,
    schedule: Schedule,
    seen: &Mutex<Seen>,
    done: &AtomicBool,
    back_within: Duration,
) -> Result<()> {
    let mut link = connect(sock, back_within).context("connecting")?;
    let mut next = 0usize;
    let mut awaiting: HashMap<String, String> = HashMap::new(); // client_id -> token
                                                                // Message k is due at start + due_ms(k): an absolute schedule, so the
                                                                // time spent reading between sends does not lower the rate.
    let start = Instant::now();
    let mut line = String::new();
    while !done.load(Ordering::SeqCst) {
        if next < n && start.elapsed().as_secs_f64() * 1000.0 >= schedule.due_ms(next) {
            let token = format!("chaos-{next:05}");
            let m = ClientMsg::Message {
                text: token.clone(),
                client_id: Some(token.clone()),
                key: None,
            };
            let ok = serde_json::to_string(&m)
                .map(|s| s + "\n")
                .ok()
                .is_some_and(|s| link.w.write_all(s.as_bytes()).is_ok());
            if ok {
                awaiting.insert(token.clone(), token);
                seen.lock().unwrap().sent += 1;
                next += 1;
            }
        }
        // A read timeout keeps the partial line in `line`; it is cleared
        // only once a whole line has been handled.
        match link.r.read_line(&mut line) {
            Ok(0) => {
                line.clear();
                // Host died: whatever was not confirmed is unconfirmed.
                let mut s = seen.lock().unwrap();
                for (_, t) in awaiting.drain() {
                    s.unconfirmed.insert(t);
                }
                drop(s);
                match connect(sock, back_within) {
                    Some(l) => link = l,
                    None => bail!("the host did not come back"),
                }
            }
            Ok(_) if !line.ends_with('\n') => {}
            Ok(_) => match serde_json::from_str::<ServerMsg>(std::mem::take(&mut line).trim()) {
                Ok(ServerMsg::Accepted {
                    client_id: Some(c), ..
                }) => {
                    if let Some(t) = awaiting.remove(&c) {
                        seen.lock().unwrap().accepted.insert(t);
                    }
                }
                Ok(ServerMsg::Rejected {
                    client_id: Some(c),
                    error,
                }) => {
                    if let Some(t) = awaiting.remove(&c) {
                        seen.lock().unwrap().rejected.insert(t, error);
                    }
                }
                Ok(ServerMsg::Message { id, text, .. }) => {
                    {
                        let mut s = seen.lock().unwrap();
                        *s.rows.entry(id.clone()).or_default() += 1;
                        for t in tokens(&text) {
                            let v = s.answers.entry(t).or_default();
                            if !v.contains(&id) {
                                v.push(id.clone());
                            }
                        }
                    }
                    let ack =
                        serde_json::to_string(&ClientMsg::Ack { id }).unwrap_or_default() + "\n";
                    let _ = link.w.write_all(ack.as_bytes());
                }
                _ => {}
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                line.clear();
                let mut s = seen.lock().unwrap();
                for (_, t) in awaiting.drain() {
                    s.unconfirmed.insert(t);
                }
                drop(s);
                if let Some(l) = connect(sock, back_within) {
                    link = l;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_pauses_and_kills_can_land_in_the_pauses() {
        // 10/s: bursts of 50 (5 s), then 2 s of quiet.
        let s = Schedule::new(10.0, 2.0);
        assert_eq!(s.burst, 50);
        assert_eq!(s.due_ms(0), 0.0);
        assert_eq!(s.due_ms(49), 4900.0);
        assert_eq!(s.due_ms(50), 7000.0, "the pause after the first burst");
        assert!(!s.quiet_at(1000, 100));
        assert!(s.quiet_at(6000, 100), "inside the first pause");
        assert!(!s.quiet_at(7500, 100));
        // 100 messages: the last is due at 11.9 s; the run lasts one more pause.
        assert_eq!(s.span_ms(100), 14_000);
        assert!(s.quiet_at(13_000, 100), "after the last message");
        let no_pause = Schedule::new(10.0, 0.0);
        assert!(!no_pause.quiet_at(6000, 100));
    }
}
