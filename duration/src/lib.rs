//! The one duration grammar of [laptime](https://docs.rs/laptime): `deadline = "200ms"` in
//! `#[laptime::measure]` and every duration of its configuration file (`abandon_after = "10m"`).
//!
//! It is a crate of its own because both sides need it and neither can hold it for the other: a
//! proc-macro crate exports nothing but macros, the macros cannot depend on the library that
//! depends on them, and a source file shared by path would be left out of a published package.
//! It has no dependencies.
//!
//! ```
//! assert_eq!(laptime_duration::parse_nanos("1.5ms"), Ok(1_500_000));
//! assert_eq!(laptime_duration::parse_nanos("2m"), Ok(120_000_000_000));
//! assert!(laptime_duration::parse_nanos("200 ms").is_err());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// What every error message ends with.
const HINT: &str =
    "write a number and a unit (ns, us, µs, ms, s, m, h) with no space, e.g. \"200ms\" or \"1.5s\"";

/// Parses `"200ms"`, `"1.5s"`, `"250us"` / `"250µs"`, `"800ns"`, `"10m"`, `"1h"` into an exact
/// whole number of nanoseconds. Zero is accepted: callers that need a positive duration say so
/// in their own words.
///
/// # Errors
///
/// A message that quotes `text` and says what to change: no unit or an unknown one, no number
/// before the unit, more than one decimal point, a fraction of a nanosecond, or more than
/// `u64::MAX` nanoseconds (about 584 years).
pub fn parse_nanos(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: {HINT}"))?;
    if split == 0 {
        return Err(format!("{text:?} does not start with a number: {HINT}"));
    }
    let (number, unit) = text.split_at(split);
    let unit_ns: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(format!("{text:?} has an unknown unit {unit:?}: {HINT}")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(format!("{text:?} does not start with a number: {HINT}"));
    }
    let too_large = || format!("{text:?} is too large: the longest duration is about 584 years");
    let too_fine = || format!("{text:?} has too many decimals: nanoseconds are the finest unit");
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u128>().map_err(|_| too_large())
    };
    let scale = u32::try_from(fraction.len())
        .ok()
        .and_then(|n| 10u128.checked_pow(n))
        .ok_or_else(too_fine)?;
    let frac_ns = digits(fraction)?
        .checked_mul(unit_ns)
        .ok_or_else(too_fine)?;
    if !frac_ns.is_multiple_of(scale) {
        return Err(format!(
            "{text:?} is not a whole number of nanoseconds: use fewer decimals or a smaller unit"
        ));
    }
    digits(whole)?
        .checked_mul(unit_ns)
        .and_then(|w| w.checked_add(frac_ns / scale))
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::parse_nanos;

    #[test]
    fn durations_are_exact_and_say_what_is_wrong() {
        let ok = [
            ("200ms", 200_000_000),
            ("1.5ms", 1_500_000),
            ("250us", 250_000),
            ("250µs", 250_000),
            ("800ns", 800),
            ("0.25s", 250_000_000),
            ("0.001ms", 1_000),
            ("10m", 600_000_000_000),
            ("1h", 3_600_000_000_000),
            ("0ms", 0),
            (".5s", 500_000_000),
            ("18446744073709551615ns", u64::MAX),
        ];
        for (text, want) in ok {
            assert_eq!(parse_nanos(text), Ok(want), "{text}");
        }
        let bad = [
            ("20 mss", "unknown unit \" mss\""),
            ("200 ms", "unknown unit \" ms\""),
            ("20", "has no unit"),
            ("ms", "does not start with a number"),
            ("1.2.3s", "does not start with a number"),
            ("1..2s", "does not start with a number"),
            ("1.5ns", "not a whole number of nanoseconds"),
            ("18446744073709551616ns", "too large"),
            ("99999999999999999999999999999999999999999h", "too large"),
            (
                "1.00000000000000000000000000000000000000001s",
                "too many decimals",
            ),
            ("-5ms", "does not start with a number"),
            ("", "has no unit"),
        ];
        for (text, want) in bad {
            let e = parse_nanos(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
