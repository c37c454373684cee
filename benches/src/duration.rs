//! Human-friendly durations for command-line flags (`10s`, `500ms`, `2m`,
//! `1.5s`, `250us`) and their compact printing.
//!
//! A unit is always required so that `--duration 10` cannot be silently read
//! as ten milliseconds or ten seconds depending on who wrote the parser.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The input was empty or only whitespace.
    #[error("empty duration (expected e.g. 10s, 500ms, 2m, 250us)")]
    Empty,
    /// The input had no leading number.
    #[error(
        "invalid duration '{0}': expected a number followed by a unit (e.g. 10s, 1.5s, 250us)"
    )]
    InvalidNumber(String),
    /// The number had no unit after it.
    #[error("duration '{0}' has no unit (use ns, us, ms, s, m or h, e.g. 10s)")]
    MissingUnit(String),
    /// The unit was not one of the known ones.
    #[error("unknown unit '{unit}' in duration '{input}' (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// The value was negative, not finite, or too large for a [`Duration`].
    #[error("duration '{0}' is out of range")]
    OutOfRange(String),
}

/// Parses a number followed by a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m`
/// or `h`. The number may be fractional (`1.5s`); whitespace between number
/// and unit is allowed. `0s` is accepted: callers that need a positive
/// duration check that themselves.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(DurationError::InvalidNumber(input.to_owned()));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::InvalidNumber(input.to_owned()))?;
    if unit.is_empty() {
        return Err(DurationError::MissingUnit(input.to_owned()));
    }
    let nanos_per_unit: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(DurationError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    let nanos = (value * nanos_per_unit).round();
    if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
        return Err(DurationError::OutOfRange(input.to_owned()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats a duration compactly with the largest unit that keeps it readable:
/// `10s`, `1.5s`, `500ms`, `250us`, `2m`, `90ns`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let (value, unit) = if nanos == 0 {
        return "0s".to_owned();
    } else if nanos % 60_000_000_000 == 0 {
        (nanos as f64 / 60e9, "m")
    } else if nanos >= 1_000_000_000 {
        (nanos as f64 / 1e9, "s")
    } else if nanos >= 1_000_000 {
        (nanos as f64 / 1e6, "ms")
    } else if nanos >= 1_000 {
        (nanos as f64 / 1e3, "us")
    } else {
        (nanos as f64, "ns")
    };
    let mut text = format!("{value:.3}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("250µs").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("90ns").unwrap(), Duration::from_nanos(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration(" 3 s ").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert!(matches!(
            parse_duration("10x"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_duration("1.2.3s"),
            Err(DurationError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_duration("1e300h"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::OutOfRange(_))
        ));
        let msg = parse_duration("10").unwrap_err().to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.contains("no unit"));
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_micros(250)), "250us");
        assert_eq!(format_duration(Duration::from_nanos(90)), "90ns");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for s in ["10s", "1.5s", "500ms", "250us", "2m"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
