//! Wall-clock time for what is stored; everything that waits uses `Instant`.
//!
//! Registration times must survive restarts, so they are unix seconds. Timers
//! (held pushes, backoff, timeouts) use the monotonic clock so that a clock
//! step on a router without an RTC does not fire or starve them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch; 0 if the clock is before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD` (UTC) of a unix time, for human-facing reports.
pub fn format_utc(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => t.date().to_string(),
        Err(_) => format!("@{unix}"),
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a unix time, for listings.
pub fn format_utc_minute(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute()),
        Err(_) => format!("@{unix}"),
    }
}

/// Runs `fut` for at most `limit`; `None` if it did not finish in time.
pub async fn within<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        async_io::Timer::after(limit).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01");
        assert_eq!(super::format_utc(1_795_953_630), "2026-11-29");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29");
        assert_eq!(
            super::format_utc_minute(1_795_953_630),
            "2026-11-29 12:00 UTC"
        );
    }
}
