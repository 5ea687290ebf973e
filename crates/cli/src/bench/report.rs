//! The report: the machine, the table and the JSON.

use super::memory::mib;
use super::*;

// ---------------------------------------------------------------------------
// The report

pub(super) struct Machine {
    when: String,
    kernel: String,
    cpus: usize,
    cpu_model: String,
    build: &'static str,
    sandboxes: Vec<&'static str>,
}

impl Machine {
    pub(super) fn describe(sandboxes: &[Kind]) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            when: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            sandboxes: sandboxes.iter().map(|k| k.as_str()).collect(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub(super) fn print_table(m: &Machine, rows: &[Row]) {
    println!(
        "pinch bench · {} · pinch {} ({} build) · Linux {} · {} CPUs ({}) · scripted provider",
        m.when,
        env!("CARGO_PKG_VERSION"),
        m.build,
        m.kernel,
        m.cpus,
        m.cpu_model
    );
    if m.build == "debug" {
        println!(
            "note: a debug build; quote numbers from a release build (`cargo build --release`)"
        );
    }
    println!();
    let header = [
        "fig",
        "sandbox",
        "measures",
        "n",
        "median",
        "p95",
        "baseline",
        "baseline median",
        "baseline p95",
        "ratio",
        "target",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let (n, median, p95) = match &r.measured {
            Measured::Latency(s) => (s.n.to_string(), ms(s.median), ms(s.p95)),
            Measured::Memory(mem) => ("1".into(), mib(mem.rss_kb), "—".into()),
            Measured::Throughput { n, per_s } => {
                (n.to_string(), format!("{per_s:.0}/s"), "—".into())
            }
        };
        let (bw, bm, bp) = match &r.baseline {
            Some(Baseline {
                what,
                per_s: Some(b),
                ..
            }) => (what.clone(), format!("{b:.0}/s"), "—".into()),
            Some(b) => (b.what.clone(), ms(b.summary.median), ms(b.summary.p95)),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let ratio = r.ratio().map_or_else(|| "—".into(), |x| format!("{x:.2}×"));
        cells.push(vec![
            r.fig.id().into(),
            r.sandbox.as_str().into(),
            r.fig.label().into(),
            n,
            median,
            p95,
            bw,
            bm,
            bp,
            ratio,
            r.fig.target(r.sandbox).into(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Numbers right-aligned, text left-aligned.
    let right = |c: usize| matches!(c, 3 | 4 | 5 | 7 | 8 | 9);
    let mut out = std::io::stdout().lock();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = " ".repeat(widths[c] - s.chars().count());
                if right(c) {
                    format!("{pad}{s}")
                } else {
                    format!("{s}{pad}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out);
    let mut seen = HashSet::new();
    for r in rows {
        if seen.insert(r.fig) {
            let _ = writeln!(out, "{}  {}", r.fig.id(), r.fig.measures());
            if let Some(b) = &r.baseline {
                let _ = writeln!(out, "    baseline: {}", baseline_meaning(r.fig, &b.what));
            }
        }
        for note in &r.notes {
            let _ = writeln!(out, "    {} ({}): {note}", r.fig.id(), r.sandbox.as_str());
        }
    }
    let _ = writeln!(out, "Latencies: median = p50 and p95 by nearest rank over n runs; ratio = median / baseline median.");
    let _ = writeln!(
        out,
        "Throughput (P4): messages per second in the median column; ratio = rate / baseline rate."
    );
}

fn baseline_meaning(fig: Fig, what: &str) -> String {
    match fig {
        Fig::P1 => "one SQLite commit of such a row into an inbound.db of its own, plus a fresh read-only connection reading it back".into(),
        Fig::P2 => "P1 on the same host (the claim is the part of a reply the runner loop owns)".into(),
        Fig::P3 => format!("{what}: spawning and reaping the bare sandbox, same flags as docs/targets.md"),
        Fig::P4 => "the same number of one-row commits (the messages_in insert alone) into 100 inbound.db files with the protocol's pragmas, connections kept open, one thread".into(),
        _ => what.into(),
    }
}

pub(super) fn report_json(m: &Machine, rows: &[Row]) -> serde_json::Value {
    use serde_json::json;
    let summary = |s: &Summary| json!({"n": s.n, "median_ms": s.median.as_secs_f64() * 1e3, "p95_ms": s.p95.as_secs_f64() * 1e3});
    let figures: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "figure": r.fig.id(),
                "sandbox": r.sandbox.as_str(),
                "measures": r.fig.measures(),
                "target": r.fig.target(r.sandbox),
                "notes": r.notes,
            });
            match &r.measured {
                Measured::Latency(s) => v["latency"] = summary(s),
                Measured::Throughput { n, per_s } => {
                    v["throughput"] = json!({"n": n, "per_second": per_s})
                }
                Measured::Memory(mem) => {
                    v["memory"] = json!({
                        "rss_mib": mem.rss_kb as f64 / 1024.0,
                        "hwm_mib": mem.hwm_kb as f64 / 1024.0,
                        "rss_anon_mib": mem.anon_kb as f64 / 1024.0,
                        "rss_file_mib": mem.file_kb as f64 / 1024.0,
                        "threads": mem.threads,
                    })
                }
            }
            if let Some(Baseline {
                what,
                per_s: Some(b),
                ..
            }) = &r.baseline
            {
                v["baseline"] = json!({"per_second": b, "what": baseline_meaning(r.fig, what)});
            } else if let Some(b) = &r.baseline {
                let mut bv = summary(&b.summary);
                bv["what"] = json!(baseline_meaning(r.fig, &b.what));
                v["baseline"] = bv;
            }
            if let Some(x) = r.ratio() {
                v["ratio"] = json!(x);
            }
            v
        })
        .collect();
    json!({
        "machine": {
            "date": m.when,
            "pinch_version": env!("CARGO_PKG_VERSION"),
            "build": m.build,
            "kernel": m.kernel,
            "cpus": m.cpus,
            "cpu_model": m.cpu_model,
            "sandboxes": m.sandboxes,
            "provider": "scripted",
        },
        "figures": figures,
    })
}
