//! P7 (a runner's memory) and the `/proc` readers it, `pinch chaos` and
//! `pinch soak` use.

use super::harness::{with_warm_host, WarmHost};
use super::*;

// ---------------------------------------------------------------------------
// P7

impl Bench {
    pub(super) async fn p7(&self, kind: Kind) -> Result<Row> {
        eprintln!("pinch bench: P7 with {}…", kind.as_str());
        let (mem, mut notes) = with_warm_host(self, "p7", kind, async |h: &mut WarmHost| {
            tokio::time::sleep(P7_IDLE).await;
            let pid = h
                .info()
                .await?
                .runner_pid
                .context("the warm session has no runner")?;
            runner_mem(kind, pid)
        })
        .await?;
        notes.insert(0, mem.detail());
        Ok(Row {
            fig: Fig::P7,
            sandbox: kind,
            measured: Measured::Memory(mem),
            baseline: None,
            notes,
        })
    }
}

/// The runner's memory; for bwrap also what its supervisor processes use.
/// `pid` is what the host spawned (the runner itself, or the outer bwrap).
pub(super) fn runner_mem(kind: Kind, pid: u32) -> Result<(ProcMem, Vec<String>)> {
    match kind {
        Kind::Process => Ok((ProcMem::read(pid)?, vec![])),
        Kind::Docker => bail!("the runner's memory is measured for bwrap and process only (a container's processes are not children of the host)"),
        Kind::Bwrap => {
            let tree = descendants(pid);
            let runner = *tree
                .iter()
                .find(|p| comm(**p).as_deref() == Some("pinch"))
                .with_context(|| format!("no `pinch` process under bwrap (pid {pid})"))?;
            let helpers: Vec<u32> = std::iter::once(pid).chain(tree).filter(|p| *p != runner).collect();
            let helper_kb: u64 = helpers.iter().filter_map(|p| ProcMem::read(*p).ok()).map(|m| m.rss_kb).sum();
            let note = format!("plus {} bwrap supervisor process(es): {} RSS", helpers.len(), mib(helper_kb));
            Ok((ProcMem::read(runner)?, vec![note]))
        }
    }
}

// ---------------------------------------------------------------------------
// /proc

/// Memory figures of a process from `/proc/<pid>/status`, in kB.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProcMem {
    pub(super) rss_kb: u64,
    pub(super) hwm_kb: u64,
    pub(super) anon_kb: u64,
    pub(super) file_kb: u64,
    pub(super) threads: u64,
}

impl ProcMem {
    pub(super) fn read(pid: u32) -> Result<ProcMem> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let mut m = ProcMem::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || {
                value
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match key {
                "VmRSS" => m.rss_kb = number(),
                "VmHWM" => m.hwm_kb = number(),
                "RssAnon" => m.anon_kb = number(),
                "RssFile" => m.file_kb = number(),
                "Threads" => m.threads = number(),
                _ => {}
            }
        }
        if m.rss_kb == 0 {
            bail!("{path} has no VmRSS (is the process a zombie?)");
        }
        Ok(m)
    }

    pub(super) fn detail(&self) -> String {
        format!(
            "VmHWM {}; RssAnon {}, RssFile {}; {} threads",
            mib(self.hwm_kb),
            mib(self.anon_kb),
            mib(self.file_kb),
            self.threads
        )
    }
}

pub(super) fn mib(kb: u64) -> String {
    format!("{:.2} MiB", kb as f64 / 1024.0)
}

pub(crate) fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process below `root`, breadth first.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(c);
            queue.push_back(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_self_is_our_parent() {
        assert_eq!(
            parent(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert!(descendants(std::os::unix::process::parent_id()).contains(&std::process::id()));
    }
}
