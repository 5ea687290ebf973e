//! `pinch bench soak` (TARGETS P8): a real `pinch host` daemon fed a steady
//! stream of CLI messages (default 10/s) for a long time (default 1 h),
//! sampling the host's RSS and open fds (and the runner's RSS) every
//! `--sample-s`. Reports the drift from the end of the warm-up (10 % of the
//! run, at most 5 minutes) to the end, and checks that every message was
//! answered (lost = 0). Exit 1 if anything was lost or the host died.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::chaos::{client_loop, runner_pid, wait_socket, Seen};

#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    /// How long to send: e.g. 1h, 20m, 90s.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60)]
    pub sample_s: u64,
    /// Sandbox backend for the daemon.
    #[arg(long, default_value = "bwrap")]
    pub sandbox: String,
    /// Also print every sample.
    #[arg(long)]
    pub verbose: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 1h, 20m or 90s"))?;
    let secs = match unit {
        "h" => n * 3600.0,
        "m" | "min" => n * 60.0,
        "s" | "" => n,
        _ => return Err(format!("unknown unit in {s:?}: use h, m or s")),
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    host_rss_kb: u64,
    host_fds: usize,
    runner_rss_kb: Option<u64>,
    answered: usize,
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The `pinch` runner process under whatever the host spawned.
fn runner_rss(data: &Path) -> Option<u64> {
    let pid = runner_pid(data)?;
    let inner = crate::bench::descendants(pid)
        .into_iter()
        .find(|p| crate::bench::comm(*p).as_deref() == Some("pinch"))
        .unwrap_or(pid);
    rss_kb(inner)
}

fn mib(kb: i64) -> String {
    format!("{:+.2} MiB", kb as f64 / 1024.0)
}

#[allow(clippy::disallowed_methods)] // the soak run starts a real pinch host
pub fn run(args: SoakArgs) -> Result<i32> {
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pinch.toml");
    std::fs::write(&cfg, "[runner]\nidle_exit_s = 3600\n")?;
    let log = tmp.path().join("host.log");
    let exe = std::env::current_exe()?;
    let mut host: Child = Command::new(&exe)
        .args(["host", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .args(["--sandbox", &args.sandbox, "--provider", "scripted"])
        .env("PINCH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting pinch host")?;
    let sock = data.join("run/cli.sock");
    if let Err(e) = wait_socket(&sock, Duration::from_secs(30)) {
        let _ = host.kill();
        bail!(
            "{e:#}; host log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let n = (args.duration.as_secs_f64() * args.rate).round() as usize;
    eprintln!(
        "pinch bench soak: {n} messages at {}/s over {:.0} s into one session ({} sandbox), sampling every {} s…",
        args.rate,
        args.duration.as_secs_f64(),
        args.sandbox,
        args.sample_s
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (seen, done, sock) = (seen.clone(), done.clone(), sock.clone());
        let rate = args.rate;
        // A steady stream (no pauses); the host is not killed here.
        let schedule = crate::chaos::Schedule::new(rate, 0.0);
        std::thread::spawn(move || {
            client_loop(&sock, n, schedule, &seen, &done, Duration::from_secs(30))
        })
    };
    let t0 = Instant::now();
    let pid = host.id();
    let answered = |s: &Seen| {
        s.accepted
            .iter()
            .filter(|t| s.answers.contains_key(*t))
            .count()
    };
    let mut samples = Vec::new();
    let take = |samples: &mut Vec<Sample>| -> Result<()> {
        let s = Sample {
            at: t0.elapsed(),
            host_rss_kb: rss_kb(pid).context("the host is gone")?,
            host_fds: fds(pid),
            runner_rss_kb: runner_rss(&data),
            answered: answered(&seen.lock().unwrap()),
        };
        if args.verbose {
            eprintln!(
                "  t={:>5.0}s host {} kB, {} fds; runner {} kB; answered {}",
                s.at.as_secs_f64(),
                s.host_rss_kb,
                s.host_fds,
                s.runner_rss_kb.map(|k| k.to_string()).unwrap_or("-".into()),
                s.answered
            );
        }
        samples.push(s);
        Ok(())
    };
    take(&mut samples)?;
    let mut next = Duration::from_secs(args.sample_s);
    let mut died = None;
    while t0.elapsed() < args.duration {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(st) = host.try_wait()? {
            died = Some(st);
            break;
        }
        if t0.elapsed() >= next {
            take(&mut samples)?;
            next += Duration::from_secs(args.sample_s);
        }
    }
    // Let the last messages be answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while died.is_none() && Instant::now() < deadline {
        let s = seen.lock().unwrap();
        if s.sent >= n
            && answered(&s) >= s.accepted.len()
            && s.accepted.len() + s.unconfirmed.len() >= s.sent
        {
            break;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(200));
    }
    if died.is_none() {
        take(&mut samples)?;
    }
    done.store(true, Ordering::SeqCst);
    client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = host.wait();
    let s = seen.lock().unwrap();
    let ans = answered(&s);
    let lost = s.accepted.len() - ans
        + s.sent
            .saturating_sub(s.accepted.len() + s.unconfirmed.len());
    let reanswered: usize = s.answers.values().map(|r| r.len().saturating_sub(1)).sum();
    let warm = (args.duration / 10).min(Duration::from_secs(300));
    let base = samples
        .iter()
        .find(|x| x.at >= warm)
        .or(samples.last())
        .copied()
        .context("no samples")?;
    let end = *samples.last().context("no samples")?;
    let after: Vec<&Sample> = samples.iter().filter(|x| x.at >= base.at).collect();
    let max_rss = after.iter().map(|x| x.host_rss_kb).max().unwrap_or(0);
    let (min_fd, max_fd) = (
        after.iter().map(|x| x.host_fds).min().unwrap_or(0),
        after.iter().map(|x| x.host_fds).max().unwrap_or(0),
    );
    println!(
        "pinch bench soak (P8) — {} sandbox, {:.0} s at {}/s, {} samples",
        args.sandbox,
        t0.elapsed().as_secs_f64(),
        args.rate,
        samples.len()
    );
    println!(
        "  messages: {} sent, {} accepted, {} answered, {lost} LOST, {reanswered} answered twice",
        s.sent,
        s.accepted.len(),
        ans
    );
    println!(
        "  host RSS: {} kB at start, {} kB after warm-up ({:.0} s), {} kB at the end: drift {} (max after warm-up {} kB)",
        samples[0].host_rss_kb,
        base.host_rss_kb,
        base.at.as_secs_f64(),
        end.host_rss_kb,
        mib(end.host_rss_kb as i64 - base.host_rss_kb as i64),
        max_rss
    );
    println!(
        "  host fds: {} after warm-up, {} at the end (range {min_fd}–{max_fd} after warm-up)",
        base.host_fds, end.host_fds
    );
    if let (Some(a), Some(b)) = (base.runner_rss_kb, end.runner_rss_kb) {
        println!(
            "  runner RSS: {a} kB after warm-up, {b} kB at the end: drift {}",
            mib(b as i64 - a as i64)
        );
    }
    if let Some(st) = died {
        println!("  THE HOST DIED ({st}); its log: {}", log.display());
        std::mem::forget(tmp);
        return Ok(1);
    }
    Ok(if lost == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("20m").unwrap(), Duration::from_secs(1200));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(
            parse_duration("1d").is_err()
                && parse_duration("x").is_err()
                && parse_duration("0s").is_err()
        );
    }
}
