//! P14: `search_memory` over a group's index of 100,000 stored turns
//! (issue 17, decision 0043), against a plain `LIKE` scan of the same
//! texts in the same run.

use pinch_proto::memory;

use super::*;

/// Turns stored in the index.
const TURNS: usize = 100_000;

/// A deterministic xorshift, so every run measures the same texts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A word index skewed like language: low indices are common.
    fn word(&mut self, vocab: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((u * u * u) * vocab as f64) as usize
    }
}

/// 5,000 made-up words of two to four syllables.
fn vocabulary() -> Vec<String> {
    const SYL: [&str; 24] = [
        "ka", "lo", "mi", "ren", "ta", "vo", "shi", "ne", "dra", "pol", "um", "ez", "sa", "gri",
        "tho", "bel", "an", "ko", "ri", "fen", "do", "mar", "il", "us",
    ];
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    (0..5_000)
        .map(|_| {
            let n = 2 + (r.next() % 3) as usize;
            (0..n).map(|_| SYL[(r.next() % 24) as usize]).collect()
        })
        .collect()
}

fn sentence(r: &mut Rng, vocab: &[String], words: usize) -> String {
    (0..words)
        .map(|_| vocab[r.word(vocab.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Bench {
    pub(super) fn recall(&self) -> Result<Row> {
        let n = self.n(200);
        eprintln!("pinch bench: P14 ({TURNS} turns, {n} searches)…");
        let dir = self.temp_dir("recall")?;
        let vocab = vocabulary();
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let mut mem = memory::open(&dir.path().join("memory.db"), BUSY)?;
        let plain = Connection::open(dir.path().join("plain.db"))?;
        plain.execute_batch("CREATE TABLE turns (text TEXT NOT NULL)")?;
        let built = Instant::now();
        {
            let tx = write_tx(&mut mem)?;
            let ptx = plain.unchecked_transaction()?;
            for i in 0..TURNS {
                let words = 8 + (r.next() % 40) as usize;
                let text = sentence(&mut r, &vocab, words);
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                memory::index(
                    &tx,
                    "bench-session",
                    "turn",
                    role,
                    "2026-12-01T00:00:00.000Z",
                    &text,
                )?;
                ptx.execute("INSERT INTO turns (text) VALUES (?1)", [&text])?;
            }
            tx.commit()?;
            ptx.commit()?;
        }
        let build_s = built.elapsed().as_secs_f64();
        let queries: Vec<String> = (0..n).map(|_| sentence(&mut r, &vocab, 3)).collect();
        let mut fts = Vec::with_capacity(n);
        let mut hits = 0usize;
        for q in &queries {
            let t0 = Instant::now();
            hits += memory::search(&mem, q, 5)?.len();
            fts.push(t0.elapsed());
        }
        let mut scan = Vec::with_capacity(n);
        // Without an index, finding the best turns means reading them all.
        let mut stmt = plain.prepare("SELECT count(*) FROM turns WHERE text LIKE ?1")?;
        for q in &queries {
            let first = q.split(' ').next().unwrap_or_default();
            let t0 = Instant::now();
            let n: i64 = stmt.query_row([format!("%{first}%")], |r| r.get(0))?;
            std::hint::black_box(n);
            scan.push(t0.elapsed());
        }
        let size = std::fs::metadata(dir.path().join("memory.db"))?.len();
        Ok(Row {
            fig: Fig::P14,
            sandbox: Kind::Process,
            measured: Measured::Latency(Summary::of(fts)),
            baseline: Some(Baseline {
                what: "LIKE scan of every turn".into(),
                summary: Summary::of(scan),
                per_s: None,
            }),
            notes: vec![format!(
                "index of {TURNS} turns: {:.1} MB, built in {build_s:.1} s; {hits} results for {n} three-word queries",
                size as f64 / 1e6
            )],
        })
    }
}
