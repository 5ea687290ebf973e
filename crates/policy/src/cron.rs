//! The shape of a cron expression an agent asks for (SPEC §7.4).
//!
//! Only the shape is checked here, so a bad recurrence is refused with a
//! clear error when the agent asks, not when the scheduler first meets it:
//! five fields (minute hour day-of-month month day-of-week), each `*`, a
//! number, a range `a-b`, a list `a,b`, a step `*/n` or `a-b/n`, with numbers
//! in the field's range; month and weekday names (`jan`, `mon`) are allowed.
//!
//! [`Schedule`] evaluates one: the next slot after a given instant, in a
//! given IANA zone, in civil (wall-clock) time. Each civil slot runs once:
//! a slot in a spring-forward gap runs at the first instant after the gap
//! (02:30 → 03:30); a slot in a fall-back fold runs once, at its earlier
//! instant. Day of month and day of week combine as in cron: when both are
//! restricted, either matching is enough.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Checks a 5-field cron expression; the error names the field and says
/// what is expected.
pub fn check_shape(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "recurrence {expr:?} has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week, e.g. \"0 9 * * mon-fri\"",
            fields.len()
        ));
    }
    for (i, f) in fields.iter().enumerate() {
        let (name, lo, hi) = FIELDS[i];
        for item in f.split(',') {
            check_item(item, i, lo, hi).map_err(|why| {
                format!("recurrence {expr:?}: the {name} field {f:?} is invalid: {why}")
            })?;
        }
    }
    Ok(())
}

fn value(s: &str, field: usize, lo: u32, hi: u32) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let named = match field {
        3 => MONTHS
            .iter()
            .position(|m| *m == lower)
            .map(|p| p as u32 + 1),
        4 => DAYS.iter().position(|d| *d == lower).map(|p| p as u32),
        _ => None,
    };
    let v = match named {
        Some(v) => v,
        None => s
            .parse::<u32>()
            .map_err(|_| format!("{s:?} is not a number"))?,
    };
    if v < lo || v > hi {
        return Err(format!("{v} is outside {lo}-{hi}"));
    }
    Ok(v)
}

fn check_item(item: &str, field: usize, lo: u32, hi: u32) -> Result<(), String> {
    if item.is_empty() {
        return Err("an empty list item".into());
    }
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(s) = step {
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => {}
            _ => return Err(format!("step {s:?} must be a positive number")),
        }
    }
    if range == "*" {
        return Ok(());
    }
    match range.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (value(a, field, lo, hi)?, value(b, field, lo, hi)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
        }
        None => {
            value(range, field, lo, hi)?;
        }
    }
    Ok(())
}

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6 (Sunday = 0; 7 folded into 0).
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Years searched ahead for a next slot (`0 0 29 2 *` needs up to 8).
const SEARCH_YEARS: i16 = 9;

impl Schedule {
    /// Parses a 5-field expression (errors as [`check_shape`]).
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        check_shape(expr)?;
        let f: Vec<&str> = expr.split_whitespace().collect();
        let bits = |i: usize| -> u64 {
            let (_, lo, hi) = FIELDS[i];
            let mut b = 0u64;
            for item in f[i].split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, s)) => (r, s.parse::<u32>().unwrap_or(1)),
                    None => (item, 1),
                };
                let (a, z) = if range == "*" {
                    (lo, hi)
                } else {
                    match range.split_once('-') {
                        Some((a, z)) => (
                            value(a, i, lo, hi).unwrap_or(lo),
                            value(z, i, lo, hi).unwrap_or(hi),
                        ),
                        // `a/n` runs from a to the end of the field
                        None if item.contains('/') => (value(range, i, lo, hi).unwrap_or(lo), hi),
                        None => {
                            let v = value(range, i, lo, hi).unwrap_or(lo);
                            (v, v)
                        }
                    }
                };
                let mut v = a;
                while v <= z {
                    b |= 1 << v;
                    v += step;
                }
            }
            b
        };
        let weekdays = bits(4);
        Ok(Schedule {
            minutes: bits(0),
            hours: bits(1) as u32,
            days: bits(2) as u32,
            months: bits(3) as u16,
            weekdays: ((weekdays | (weekdays >> 7)) & 0x7f) as u8,
            days_restricted: f[2] != "*",
            weekdays_restricted: f[4] != "*",
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first slot strictly after `after`, in `tz`; `None` if there is
    /// none within the search horizon (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned_datetime(tz.clone()).datetime();
        // Civil minute after the instant's own minute.
        let start = DateTime::from_parts(
            local.date(),
            Time::constant(local.hour(), local.minute(), 0, 0),
        )
        .checked_add(1.minute())
        .ok()?;
        let mut day = start.date();
        let last = day.checked_add((SEARCH_YEARS as i32 * 366).days()).ok()?;
        while day <= last {
            if self.day_matches(day) {
                for h in 0..24u8 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60u8 {
                        if self.minutes & (1 << m) == 0 {
                            continue;
                        }
                        let dt = DateTime::from_parts(day, Time::constant(h as i8, m as i8, 0, 0));
                        if dt < start {
                            continue;
                        }
                        // Gap → after it; fold → the earlier instant.
                        let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
                        if ts > after {
                            return Some(ts);
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The slot to run after the one scheduled at `scheduled` finished,
    /// at `now` (SPEC §7.4): the next slot computed from the scheduled time
    /// (not from now); if slots were missed meanwhile, only the latest of
    /// them runs. Returns (slot, number of missed slots skipped).
    pub fn next_slot(
        &self,
        scheduled: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Option<(Timestamp, u32)> {
        let mut slot = self.next_after(scheduled, tz)?;
        let mut skipped = 0;
        while slot <= now {
            match self.next_after(slot, tz) {
                Some(n) if n <= now => {
                    slot = n;
                    skipped += 1;
                    if skipped > 100_000 {
                        break;
                    }
                }
                _ => break,
            }
        }
        Some((slot, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str, zone: &str) -> String {
        let tz = TimeZone::get(zone).unwrap();
        let t = Schedule::parse(expr)
            .unwrap()
            .next_after(at(after), &tz)
            .unwrap();
        t.to_zoned_datetime(tz)
            .strftime("%Y-%m-%dT%H:%M%:z")
            .to_string()
    }

    #[test]
    fn next_slots_in_plain_time() {
        for (expr, after, zone, want) in [
            (
                "0 9 * * *",
                "2026-03-02T08:00:00Z",
                "UTC",
                "2026-03-02T09:00+00:00",
            ),
            (
                "0 9 * * *",
                "2026-03-02T09:00:00Z",
                "UTC",
                "2026-03-03T09:00+00:00",
            ),
            (
                "*/15 * * * *",
                "2026-03-02T09:07:30Z",
                "UTC",
                "2026-03-02T09:15+00:00",
            ),
            (
                "0 9 * * mon-fri",
                "2026-03-06T10:00:00Z",
                "UTC",
                "2026-03-09T09:00+00:00",
            ), // Fri → Mon
            (
                "30 6 1 jan *",
                "2026-03-01T00:00:00Z",
                "UTC",
                "2027-01-01T06:30+00:00",
            ),
            (
                "0 0 29 2 *",
                "2026-03-01T00:00:00Z",
                "UTC",
                "2028-02-29T00:00+00:00",
            ),
            (
                "0 12 13 * fri",
                "2026-03-01T00:00:00Z",
                "UTC",
                "2026-03-06T12:00+00:00",
            ), // dom OR dow
            (
                "0 0 * * 7",
                "2026-03-02T00:00:00Z",
                "UTC",
                "2026-03-08T00:00+00:00",
            ), // 7 = Sunday
            (
                "5/20 * * * *",
                "2026-03-02T09:26:00Z",
                "UTC",
                "2026-03-02T09:45+00:00",
            ),
            (
                "0 9 * * *",
                "2026-03-02T07:00:00Z",
                "Europe/Madrid",
                "2026-03-02T09:00+01:00",
            ),
        ] {
            assert_eq!(
                next(expr, after, zone),
                want,
                "{expr} after {after} in {zone}"
            );
        }
        assert_eq!(
            Schedule::parse("0 0 31 2 *")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    /// DST in two zones: the spring-forward gap and the fall-back fold.
    #[test]
    fn dst_transitions_in_two_zones() {
        // Madrid: 2026-03-29 02:00 → 03:00; 2026-10-25 03:00 → 02:00.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", "Europe/Madrid"),
            "2026-03-29T03:30+02:00",
            "a slot in the gap runs after it"
        );
        assert_eq!(
            next("30 2 * * *", "2026-03-29T01:30:00Z", "Europe/Madrid"),
            "2026-03-30T02:30+02:00"
        );
        assert_eq!(
            next("0 9 * * *", "2026-03-28T08:00:00Z", "Europe/Madrid"),
            "2026-03-29T09:00+02:00",
            "wall-clock time holds across DST"
        );
        assert_eq!(
            next("30 2 * * *", "2026-10-24T12:00:00Z", "Europe/Madrid"),
            "2026-10-25T02:30+02:00",
            "the fold's earlier instant"
        );
        assert_eq!(
            next("30 2 * * *", "2026-10-25T00:30:00Z", "Europe/Madrid"),
            "2026-10-26T02:30+01:00",
            "and only once"
        );
        // New York: 2026-03-08 02:00 → 03:00; 2026-11-01 02:00 → 01:00.
        assert_eq!(
            next("15 2 * * *", "2026-03-07T12:00:00Z", "America/New_York"),
            "2026-03-08T03:15-04:00"
        );
        assert_eq!(
            next("30 1 * * *", "2026-10-31T12:00:00Z", "America/New_York"),
            "2026-11-01T01:30-04:00"
        );
        assert_eq!(
            next("30 1 * * *", "2026-11-01T05:30:00Z", "America/New_York"),
            "2026-11-02T01:30-05:00"
        );
        assert_eq!(
            next("0 9 * * *", "2026-11-01T00:00:00Z", "America/New_York"),
            "2026-11-01T09:00-05:00"
        );
    }

    #[test]
    fn next_slot_counts_from_the_scheduled_time_and_runs_the_latest_missed_once() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let tz = TimeZone::UTC;
        // Finished late (10:40) a run scheduled for 10:00: next is 11:00, not 11:40.
        assert_eq!(
            s.next_slot(at("2026-03-02T10:00:00Z"), at("2026-03-02T10:40:00Z"), &tz),
            Some((at("2026-03-02T11:00:00Z"), 0))
        );
        // Down from 10:00 to 14:20: 11, 12, 13, 14 missed; 14:00 runs, 3 skipped.
        assert_eq!(
            s.next_slot(at("2026-03-02T10:00:00Z"), at("2026-03-02T14:20:00Z"), &tz),
            Some((at("2026-03-02T14:00:00Z"), 3))
        );
    }

    proptest! {
        #[test]
        fn next_is_after_and_matches(expr in prop::sample::select(vec!["*/7 * * * *", "0 9 * * mon-fri", "15 2 * * *", "0 0 1 * *", "30 1 * * sun"]),
                                     secs in 1_700_000_000i64..1_900_000_000i64,
                                     zone in prop::sample::select(vec!["UTC", "Europe/Madrid", "America/New_York", "Australia/Lord_Howe"])) {
            let tz = TimeZone::get(zone).unwrap();
            let after = Timestamp::from_second(secs).unwrap();
            let s = Schedule::parse(expr).unwrap();
            let n = s.next_after(after, &tz).unwrap();
            prop_assert!(n > after);
            // Strictly increasing and never the same civil slot twice.
            let m = s.next_after(n, &tz).unwrap();
            prop_assert!(m > n);
            prop_assert!(m.to_zoned_datetime(tz.clone()).datetime() != n.to_zoned_datetime(tz.clone()).datetime());
        }
    }

    #[test]
    fn good_shapes() {
        for e in [
            "* * * * *",
            "0 9 * * mon-fri",
            "*/15 8-18 * * 1,3,5",
            "30 6 1 jan *",
            "0 0 * * 7",
            "5-10/2 * * * *",
        ] {
            check_shape(e).unwrap_or_else(|why| panic!("{e}: {why}"));
        }
    }

    #[test]
    fn bad_shapes_name_the_field() {
        for (e, word) in [
            ("* * * *", "4 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * funday", "day of week"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("1,,2 * * * *", "empty"),
            ("every day", "2 fields"),
        ] {
            let why = check_shape(e).expect_err(e);
            assert!(why.contains(word), "{e}: {why}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "[0-9a-z*/,\\- ]{0,30}") {
            let _ = check_shape(&s);
        }
    }
}
