//! The one duration formatter, used by the progress view, the CLI tables and notifications.

use std::time::Duration;

/// A duration in milliseconds as `850ms`, `12.3s`, `4m05s` or `2h03m` (negative as 0).
pub(crate) fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A [`Duration`] in the same form as [`duration_ms`].
pub(crate) fn duration(d: Duration) -> String {
    duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An optional duration in milliseconds; `-` when unknown.
pub(crate) fn duration_opt(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), duration_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_has_its_form() {
        assert_eq!(duration_ms(-5), "0ms");
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_340), "12.3s");
        assert_eq!(duration_ms(245_000), "4m05s");
        assert_eq!(duration_ms(7_380_000), "2h03m");
        assert_eq!(duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration_opt(None), "-");
    }
}
