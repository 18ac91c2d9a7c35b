//! `fresh_within = "10m"`: durations as a number and unit, combined (`"1h30m"`).

/// Parses `"90s"`, `"10m"`, `"2h"`, `"1d"`, `"1h30m"` into whole seconds (at least one).
pub(crate) fn parse_seconds(text: &str) -> Result<u64, String> {
    const HELP: &str = "use whole numbers with units s, m, h or d, e.g. \"10m\" or \"1h30m\"";
    if text.is_empty() {
        return Err(format!("empty duration; {HELP}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            other => return Err(format!("unexpected `{other}` in duration `{text}`; {HELP}")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("a unit without a number in duration `{text}`; {HELP}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "a number without a unit in duration `{text}`; {HELP}"
        ));
    }
    if total == 0 {
        return Err(format!(
            "duration `{text}` is zero; nothing would ever be fresh"
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("90s"), Ok(90));
        assert_eq!(parse_seconds("10m"), Ok(600));
        assert_eq!(parse_seconds("1h30m"), Ok(5400));
        assert_eq!(parse_seconds("1d"), Ok(86_400));
        for bad in ["", "10", "m", "10x", "1.5h", "0s", "-1m", "10 m"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod proptests {
    //! `PROPTEST_CASES=100000 cargo test -p iamport-macros --lib` runs these longer.
    use proptest::prelude::*;

    use super::parse_seconds;

    proptest! {
        /// Any sequence of number+unit parts sums exactly (or is refused as too long, or as
        /// zero); the parser never panics on any text.
        #[test]
        fn parts_sum_exactly(parts in prop::collection::vec((0u64..100_000, prop::sample::select(vec!['s', 'm', 'h', 'd'])), 1..5), raw in any::<String>()) {
            let text: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let unit = |u: char| match u { 's' => 1u128, 'm' => 60, 'h' => 3600, _ => 86_400 };
            let total: u128 = parts.iter().map(|(n, u)| u128::from(*n) * unit(*u)).sum();
            match parse_seconds(&text) {
                Ok(seconds) => prop_assert_eq!(u128::from(seconds), total),
                Err(_) => prop_assert!(total == 0 || total > u128::from(u64::MAX)),
            }
            let _ = parse_seconds(&raw);
        }
    }
}
