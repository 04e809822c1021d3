//! Duration strings as they appear in topology files: `"10s"`, `"250ms"`, `"50us"`,
//! `"1.5s"`, `"inf"`.
//!
//! Durations are kept as `f64` seconds rather than [`std::time::Duration`] because the
//! physics needs infinity ("this memory never decoheres") and does arithmetic such as
//! `e^(−t/T1)` on them anyway.

use thiserror::Error;

/// What is wrong with a duration string.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DurationError {
    /// The string is empty or only whitespace.
    #[error("empty duration")]
    Empty,
    /// A number without a unit, such as `"10"`.
    #[error("missing unit (use ns, us, µs, ms, s, min or h, or \"inf\")")]
    MissingUnit,
    /// A number followed by something that is not a known unit, such as `"10 parsecs"`.
    #[error("unknown unit \"{0}\" (use ns, us, µs, ms, s, min or h)")]
    UnknownUnit(String),
    /// The text is not a number followed by a unit.
    #[error("\"{0}\" is not a number followed by a unit")]
    BadNumber(String),
    /// The number is negative.
    #[error("a duration cannot be negative")]
    Negative,
    /// The number is NaN or infinite; write `"inf"` for an infinite duration.
    #[error("the number must be finite (write \"inf\" for an infinite duration)")]
    NotFinite,
    /// `"inf"` given for a setting that must be finite, such as a latency.
    #[error("\"inf\" is not allowed here; give a finite duration")]
    InfiniteNotAllowed,
}

/// Units accepted after the number, longest first where one is a suffix of another.
const UNITS: &[(&str, f64)] = &[
    ("min", 60.0),
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6), // U+00B5 MICRO SIGN
    ("μs", 1e-6), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1e-3),
    ("s", 1.0),
    ("h", 3600.0),
];

/// Parses a duration string into seconds.
///
/// Accepts a non-negative decimal number followed by a unit (`ns`, `us`, `µs`, `ms`,
/// `s`, `min`, `h`; whitespace between them is allowed), or `"inf"` for
/// [`f64::INFINITY`]. Examples: `"10s"`, `"250ms"`, `"50us"`, `"1.5 s"`, `"inf"`.
pub fn parse_duration_secs(text: &str) -> Result<f64, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.eq_ignore_ascii_case("inf") || text.eq_ignore_ascii_case("infinity") {
        return Ok(f64::INFINITY);
    }
    let parsed = UNITS.iter().find_map(|(unit, scale)| {
        let number = text.strip_suffix(unit)?.trim_end();
        number
            .parse::<f64>()
            .ok()
            .map(|value| (number, value * scale))
    });
    let Some((number, value)) = parsed else {
        return Err(diagnose(text));
    };
    // f64::from_str happily accepts "inf" and "NaN", and a huge number times the unit
    // can overflow, so finiteness and sign are checked after the parse.
    if !value.is_finite() {
        return Err(DurationError::NotFinite);
    }
    if value < 0.0 || (value == 0.0 && number.starts_with('-')) {
        return Err(DurationError::Negative);
    }
    Ok(value)
}

/// Explains why `text` (already known not to be number + known unit) was rejected.
fn diagnose(text: &str) -> DurationError {
    if text.parse::<f64>().is_ok() {
        return DurationError::MissingUnit;
    }
    let unit_start = text
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphabetic())
        .last()
        .map_or(text.len(), |(i, _)| i);
    let (number, unit) = text.split_at(unit_start);
    if !unit.is_empty() && number.trim_end().parse::<f64>().is_ok() {
        DurationError::UnknownUnit(unit.to_owned())
    } else {
        DurationError::BadNumber(text.to_owned())
    }
}

/// Formats seconds for people: `"inf"`, `"10 s"`, `"250 ms"`, `"50 µs"`, `"3 ns"`.
///
/// The output is accepted by [`parse_duration_secs`].
pub fn format_duration_secs(secs: f64) -> String {
    if secs.is_infinite() {
        return "inf".to_owned();
    }
    let (value, unit) = if secs == 0.0 {
        (0.0, "s")
    } else if secs >= 1.0 {
        (secs, "s")
    } else if secs >= 1e-3 {
        (secs * 1e3, "ms")
    } else if secs >= 1e-6 {
        (secs * 1e6, "µs")
    } else {
        (secs * 1e9, "ns")
    };
    format!("{} {unit}", format_number(value))
}

/// Formats a number with at most three decimals and no trailing zeros.
pub(crate) fn format_number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration_secs("10s"), Ok(10.0));
        assert_eq!(parse_duration_secs("250ms"), Ok(0.25));
        assert!((parse_duration_secs("50us").unwrap() - 50e-6).abs() < 1e-15);
        assert!((parse_duration_secs("50µs").unwrap() - 50e-6).abs() < 1e-15);
        assert!((parse_duration_secs("50μs").unwrap() - 50e-6).abs() < 1e-15);
        assert!((parse_duration_secs("7ns").unwrap() - 7e-9).abs() < 1e-18);
        assert_eq!(parse_duration_secs("1.5s"), Ok(1.5));
        assert_eq!(parse_duration_secs(" 1.5 s "), Ok(1.5));
        assert_eq!(parse_duration_secs("2min"), Ok(120.0));
        assert_eq!(parse_duration_secs("1h"), Ok(3600.0));
        assert_eq!(parse_duration_secs("0s"), Ok(0.0));
        assert_eq!(parse_duration_secs("inf"), Ok(f64::INFINITY));
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(parse_duration_secs(""), Err(DurationError::Empty));
        assert_eq!(parse_duration_secs("10"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration_secs("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration_secs("-0s"), Err(DurationError::Negative));
        assert_eq!(parse_duration_secs("infs"), Err(DurationError::NotFinite));
        assert_eq!(parse_duration_secs("NaNs"), Err(DurationError::NotFinite));
        assert_eq!(
            parse_duration_secs("10 parsecs"),
            Err(DurationError::UnknownUnit("parsecs".into()))
        );
        assert!(matches!(
            parse_duration_secs("fast"),
            Err(DurationError::BadNumber(_))
        ));
    }

    #[test]
    fn formatting_round_trips() {
        for secs in [0.0, 10.0, 0.25, 50e-6, 3e-9, 1.5, f64::INFINITY] {
            let text = format_duration_secs(secs);
            let back = parse_duration_secs(&text).unwrap();
            assert!(
                back == secs || (back - secs).abs() <= secs * 1e-9,
                "{secs} -> {text} -> {back}"
            );
        }
        assert_eq!(format_duration_secs(0.25), "250 ms");
        assert_eq!(format_duration_secs(50e-6), "50 µs");
    }
}
