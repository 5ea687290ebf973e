//! A token bucket: at most `per_minute` takes in any minute on average,
//! with bursts up to `per_minute` (what limits an agent group's
//! `web_fetch` calls, decision 0042). Time is a parameter (milliseconds).

#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    per_minute: u32,
    tokens: f64,
    last_ms: i64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_minute: u32, now_ms: i64) -> Bucket {
        Bucket {
            per_minute,
            tokens: f64::from(per_minute),
            last_ms: now_ms,
        }
    }

    /// Takes one token, or says how many milliseconds until one is there.
    pub fn take(&mut self, now_ms: i64) -> Result<(), u64> {
        let cap = f64::from(self.per_minute);
        if self.per_minute == 0 {
            return Err(60_000);
        }
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * cap / 60_000.0).min(cap);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) * 60_000.0 / cap).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Bucket::new(30, 0);
        for i in 0..30 {
            assert_eq!(b.take(0), Ok(()), "take {i}");
        }
        assert_eq!(b.take(0), Err(2000), "one token every 2 s");
        assert_eq!(b.take(1999), Err(1));
        assert_eq!(b.take(2000), Ok(()));
        assert!(b.take(2000).is_err());
        // A quiet minute refills the bucket, never beyond its size.
        for _ in 0..30 {
            assert_eq!(b.take(200_000), Ok(()));
        }
        assert!(b.take(200_000).is_err());
    }

    #[test]
    fn a_clock_going_back_refills_nothing_and_zero_refuses() {
        let mut b = Bucket::new(1, 10_000);
        assert_eq!(b.take(10_000), Ok(()));
        assert!(b.take(5_000).is_err());
        assert!(b.take(10_000).is_err());
        assert_eq!(Bucket::new(0, 0).take(0), Err(60_000));
    }

    /// Over any window, takes never exceed the burst plus the rate.
    #[test]
    fn takes_stay_within_the_rate() {
        let mut b = Bucket::new(12, 0);
        let mut ok = 0;
        for t in (0..600_000).step_by(97) {
            if b.take(t).is_ok() {
                ok += 1;
            }
        }
        // 12 at once + 12 per minute over 10 minutes (+1 for rounding).
        assert!((120..=133).contains(&ok), "{ok}");
    }
}
