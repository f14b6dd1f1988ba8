//! Durations on the command line: `5m`, `90s`, `1m30s`, `500ms`.

use std::time::Duration;

/// Parses a duration such as `5m`, `90s` or `1m30s`. A bare number is refused: `--settle 60`
/// could mean seconds or minutes, and a soak that silently waits an hour is worse than an
/// error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{trimmed:?} has no unit: write {trimmed}s or {trimmed}m"
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|error| format!("invalid duration {text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_seconds_and_their_mix_parse() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_number_without_unit_or_garbage_is_refused() {
        let no_unit = parse_duration("60").unwrap_err();
        assert!(no_unit.contains("no unit"), "{no_unit}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
