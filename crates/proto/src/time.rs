//! Time in session DBs: one stored format, one comparison rule.
//!
//! Stored: UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`, always 24 bytes, so string order
//! is time order and SQL can compare with `<=` against a `now` parameter in
//! the same format. SQL never calls `datetime('now')`: the caller's clock is
//! the only clock, which makes time injectable in tests.
//!
//! Parsing is lenient because rows may come from older writers or humans:
//! RFC 3339 with any offset, SQLite's `YYYY-MM-DD HH:MM:SS[.fff]`, and
//! zone-less ISO strings, which are read as **UTC** (never local time).

use jiff::{civil, tz::TimeZone, Timestamp};

use crate::ProtoError;

/// Width of every stored timestamp.
pub const STORED_LEN: usize = 24;

/// Formats an instant in the stored format (millisecond precision, truncated).
pub fn format(ts: Timestamp) -> String {
    let dt = TimeZone::UTC.to_datetime(ts);
    let ms = dt.subsec_nanosecond() / 1_000_000;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        ms
    )
}

/// The current instant in the stored format.
pub fn now() -> String {
    format(Timestamp::now())
}

/// Parses any accepted form into an instant.
pub fn parse(s: &str) -> Result<Timestamp, ProtoError> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    // Zone-less: SQLite's "YYYY-MM-DD HH:MM:SS" or ISO without offset. UTC.
    if let Ok(dt) = t.replacen(' ', "T", 1).parse::<civil::DateTime>() {
        if let Ok(ts) = TimeZone::UTC.to_timestamp(dt) {
            return Ok(ts);
        }
    }
    Err(ProtoError::Time(s.to_owned()))
}

/// Normalises any accepted form into the stored format.
pub fn normalize(s: &str) -> Result<String, ProtoError> {
    parse(s).map(format)
}

/// Whether a row with this `process_after` is due at `now`.
///
/// `None` is due. An unparseable time is due now (the caller logs it): a row
/// that can never become due would be a silent loss.
pub fn is_due(process_after: Option<&str>, now: Timestamp) -> bool {
    match process_after {
        None => true,
        Some(s) => match parse(s) {
            Ok(ts) => ts <= now,
            Err(_) => true,
        },
    }
}

/// Milliseconds between two stored timestamps (`b - a`), if both parse.
pub fn millis_between(a: &str, b: &str) -> Option<i64> {
    let a = parse(a).ok()?;
    let b = parse(b).ok()?;
    Some((b.as_millisecond()) - (a.as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_width_utc() {
        let ts: Timestamp = "2026-11-27T21:14:05.123456Z".parse().unwrap();
        assert_eq!(format(ts), "2026-11-27T21:14:05.123Z");
        assert_eq!(format(ts).len(), STORED_LEN);
        let ts: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(format(ts), "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn accepted_inputs() {
        let want = "2026-11-27T20:14:05.000Z";
        assert_eq!(normalize("2026-11-27T21:14:05+01:00").unwrap(), want);
        assert_eq!(normalize("2026-11-27 20:14:05").unwrap(), want);
        // zone-less is UTC, never local
        assert_eq!(normalize("2026-11-27T20:14:05").unwrap(), want);
        assert_eq!(
            normalize("2026-11-27 20:14:05.250").unwrap(),
            "2026-11-27T20:14:05.250Z"
        );
        assert!(normalize("yesterday").is_err());
    }

    #[test]
    fn unparseable_due_time_is_due() {
        let now: Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        assert!(is_due(None, now));
        assert!(is_due(Some("garbage"), now));
        assert!(is_due(Some("2026-11-27T19:59:59.999Z"), now));
        assert!(!is_due(Some("2026-11-27T20:00:00.001Z"), now));
    }

    proptest! {
        /// String order of the stored format is time order, and parsing
        /// round-trips at millisecond precision.
        #[test]
        fn string_order_is_time_order(a in 0i64..4_102_444_800_000, b in 0i64..4_102_444_800_000) {
            let ta = Timestamp::from_millisecond(a).unwrap();
            let tb = Timestamp::from_millisecond(b).unwrap();
            let (sa, sb) = (format(ta), format(tb));
            prop_assert_eq!(sa.len(), STORED_LEN);
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
            prop_assert_eq!(parse(&sa).unwrap(), ta);
        }

        /// Any offset renders to the same stored instant.
        #[test]
        fn offsets_normalise(ms in 0i64..4_102_444_800_000, off_h in -12i8..=14) {
            let ts = Timestamp::from_millisecond(ms).unwrap();
            let off = jiff::tz::Offset::from_hours(off_h).unwrap();
            let s = ts.display_with_offset(off).to_string();
            prop_assert_eq!(normalize(&s).unwrap(), format(ts));
        }
    }
}
