//! The shape of a cron expression an agent asks for (SPEC §7.4).
//!
//! Only the shape is checked here, so a bad recurrence is refused with a
//! clear error when the agent asks, not when the scheduler first meets it:
//! five fields (minute hour day-of-month month day-of-week), each `*`, a
//! number, a range `a-b`, a list `a,b`, a step `*/n` or `a-b/n`, with numbers
//! in the field's range; month and weekday names (`jan`, `mon`) are allowed.

const FIELDS: [(&str, u32, u32); 5] = [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)];
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
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
            check_item(item, i, lo, hi).map_err(|why| format!("recurrence {expr:?}: the {name} field {f:?} is invalid: {why}"))?;
        }
    }
    Ok(())
}

fn value(s: &str, field: usize, lo: u32, hi: u32) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let named = match field {
        3 => MONTHS.iter().position(|m| *m == lower).map(|p| p as u32 + 1),
        4 => DAYS.iter().position(|d| *d == lower).map(|p| p as u32),
        _ => None,
    };
    let v = match named {
        Some(v) => v,
        None => s.parse::<u32>().map_err(|_| format!("{s:?} is not a number"))?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn good_shapes() {
        for e in ["* * * * *", "0 9 * * mon-fri", "*/15 8-18 * * 1,3,5", "30 6 1 jan *", "0 0 * * 7", "5-10/2 * * * *"] {
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
