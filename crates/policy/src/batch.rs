//! Which due rows the runner takes into one turn (SPEC §5.2, lesson 21).
//!
//! T = the oldest due trigger. The batch is T, up to `batch_size - 1` of the
//! newest context rows before T (older context is acked as skipped, and
//! logged), then later due rows in seq order until the batch is full. No due
//! trigger means no turn at all (lesson 17: context never wakes the agent).

/// One due row as the batch decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub seq: i64,
    pub trigger: bool,
}

/// What to do with the due rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Seq of the trigger the turn answers (reply address, `in_reply_to`).
    pub trigger: i64,
    /// Seqs taken into the turn, ascending.
    pub take: Vec<i64>,
    /// Context rows before T that did not fit: acked as skipped.
    pub skip: Vec<i64>,
}

/// Decides the batch. `due` may be in any order; `batch_size` of 0 is read
/// as 1 (a turn always takes its trigger).
pub fn select(due: &[Candidate], batch_size: usize) -> Option<Batch> {
    let size = batch_size.max(1);
    let mut rows: Vec<Candidate> = due.to_vec();
    rows.sort_by_key(|c| c.seq);
    rows.dedup_by_key(|c| c.seq);
    let t_idx = rows.iter().position(|c| c.trigger)?;
    let trigger = rows[t_idx].seq;
    let before = &rows[..t_idx];
    let keep_ctx = before.len().min(size - 1);
    let (skipped, kept) = before.split_at(before.len() - keep_ctx);
    let mut take: Vec<i64> = kept.iter().map(|c| c.seq).collect();
    take.push(trigger);
    for c in &rows[t_idx + 1..] {
        if take.len() >= size {
            break;
        }
        take.push(c.seq);
    }
    Some(Batch {
        trigger,
        take,
        skip: skipped.iter().map(|c| c.seq).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(seq: i64, trigger: bool) -> Candidate {
        Candidate { seq, trigger }
    }

    #[test]
    fn no_trigger_no_turn() {
        assert_eq!(select(&[c(2, false), c(4, false)], 10), None);
        assert_eq!(select(&[], 10), None);
    }

    #[test]
    fn oldest_trigger_first_with_recent_context() {
        let due = [
            c(2, false),
            c(4, false),
            c(6, false),
            c(8, true),
            c(10, true),
            c(12, false),
        ];
        let b = select(&due, 3).unwrap();
        assert_eq!(b.trigger, 8);
        assert_eq!(b.take, vec![4, 6, 8]);
        assert_eq!(b.skip, vec![2]);
        let b = select(&due, 10).unwrap();
        assert_eq!(b.take, vec![2, 4, 6, 8, 10, 12]);
        assert!(b.skip.is_empty());
    }

    #[test]
    fn backlog_is_answered_oldest_first() {
        // 25 queued triggers: each batch starts at the oldest remaining.
        let mut due: Vec<Candidate> = (1..=25).map(|i| c(i * 2, true)).collect();
        let mut order = Vec::new();
        while let Some(b) = select(&due, 10) {
            order.extend(b.take.iter().copied());
            due.retain(|x| !b.take.contains(&x.seq) && !b.skip.contains(&x.seq));
        }
        assert_eq!(order, (1..=25).map(|i| i * 2).collect::<Vec<_>>());
    }

    proptest! {
        #[test]
        fn batch_properties(rows in prop::collection::btree_map(0i64..500, any::<bool>(), 0..40), size in 0usize..15) {
            let due: Vec<Candidate> = rows.iter().map(|(s, t)| c(*s * 2, *t)).collect();
            match select(&due, size) {
                None => prop_assert!(due.iter().all(|c| !c.trigger)),
                Some(b) => {
                    let oldest = due.iter().filter(|c| c.trigger).map(|c| c.seq).min().unwrap();
                    prop_assert_eq!(b.trigger, oldest);
                    prop_assert!(b.take.contains(&oldest));
                    prop_assert!(b.take.len() <= size.max(1));
                    prop_assert!(b.take.windows(2).all(|w| w[0] < w[1]));
                    // skipped rows are all older context, older than every taken row
                    for s in &b.skip {
                        prop_assert!(*s < oldest);
                        prop_assert!(b.take.iter().all(|t| t > s));
                        prop_assert!(!b.take.contains(s));
                    }
                    // rows after T are taken contiguously in order
                    let after: Vec<i64> = due.iter().map(|c| c.seq).filter(|s| *s > oldest).collect();
                    let taken_after: Vec<i64> = b.take.iter().copied().filter(|s| *s > oldest).collect();
                    prop_assert_eq!(&after[..taken_after.len()], &taken_after[..]);
                }
            }
        }
    }
}
