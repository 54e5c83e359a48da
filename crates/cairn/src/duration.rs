//! Durations as people write them on the command line: `250ms`, `30s`, `1.5m`, `2h`, `12d`,
//! or a bare number of seconds.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || format!("{text:?}: expected a number with ms, s, m, h or d, such as 10s");
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        _ => return Err(expected()),
    };
    let number: f64 = number.parse().map_err(|_| expected())?;
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| expected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        let check = |text: &str, expected: Option<f64>| {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs_f64()),
                expected,
                "{text}"
            );
        };
        check("10", Some(10.0));
        check("250ms", Some(0.25));
        check("1.5m", Some(90.0));
        check("12d", Some(1_036_800.0));
        check("3w", None);
        check("", None);
    }
}
