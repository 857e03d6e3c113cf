//! Wall-clock time for what is stored; everything that waits uses `Instant`.
//!
//! Registration times must survive restarts, so they are unix seconds. Timers
//! (held pushes, backoff, timeouts) use the monotonic clock so that a clock
//! step on a router without an RTC does not fire or starve them. Expiry
//! compares stored wall-clock times, so it runs on an [`ExpiryClock`] that
//! follows the wall clock but never leaps ahead of the monotonic one.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Test hook, not a config key: a file holding a signed number of seconds
/// added to the wall clock the daemon sees, re-read on every reading, so a
/// test can step the clock of a running daemon as NTP would (the monotonic
/// clock does not move, as on a real system).
pub const TEST_CLOCK_OFFSET_ENV: &str = "XAPSD_TEST_CLOCK_OFFSET_FILE";

fn test_offset() -> i64 {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(path) =
        FILE.get_or_init(|| std::env::var_os(TEST_CLOCK_OFFSET_ENV).map(PathBuf::from))
    else {
        return 0;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Seconds since the unix epoch; 0 if the clock is before 1970.
pub fn unix_now() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    real.saturating_add_signed(test_offset())
}

/// Wall-clock slack before a step counts as a jump: readings are whole
/// seconds and a sweep may run late.
const JUMP_SLACK: Duration = Duration::from_secs(5);

/// The "now" registrations expire against. It follows the wall clock,
/// backward steps included (registrations then look younger: nothing is
/// lost), but a forward step advances it only by the monotonic time that
/// really passed. A router whose clock NTP moves forward by months must
/// not expire every registration at once; one that boots in 1970 and is
/// then corrected must not either, since its stored times are from before.
#[derive(Debug)]
pub struct ExpiryClock {
    now: u64,
    wall: u64,
    mono: Instant,
}

/// What [`ExpiryClock::advance`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Steady,
    /// The wall clock moved this many seconds more than time passed.
    JumpedForward(u64),
    /// The wall clock moved back this many seconds.
    JumpedBack(u64),
}

impl ExpiryClock {
    pub fn new(wall: u64, mono: Instant) -> ExpiryClock {
        ExpiryClock {
            now: wall,
            wall,
            mono,
        }
    }

    /// The expiry "now" (unix seconds) as of the last readings.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Takes new readings of both clocks.
    pub fn advance(&mut self, wall: u64, mono: Instant) -> Step {
        let passed = mono.saturating_duration_since(self.mono);
        let allowed = (passed + JUMP_SLACK).as_secs();
        let step = if wall >= self.wall {
            let moved = wall - self.wall;
            self.now += moved.min(allowed);
            if moved > allowed {
                Step::JumpedForward(moved - passed.as_secs())
            } else {
                Step::Steady
            }
        } else {
            let back = self.wall - wall;
            self.now = self.now.saturating_sub(back);
            if back > JUMP_SLACK.as_secs() {
                Step::JumpedBack(back)
            } else {
                Step::Steady
            }
        };
        self.wall = wall;
        self.mono = mono;
        step
    }
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
    use super::{ExpiryClock, Step};
    use std::time::{Duration, Instant};

    const DAY: u64 = 86_400;

    #[test]
    fn expiry_time_follows_a_steady_clock() {
        let t0 = Instant::now();
        let mut c = ExpiryClock::new(1_000 * DAY, t0);
        let step = c.advance(1_000 * DAY + 3600, t0 + Duration::from_secs(3600));
        assert_eq!(step, Step::Steady);
        assert_eq!(c.now(), 1_000 * DAY + 3600);
    }

    #[test]
    fn a_forward_jump_counts_only_the_time_that_passed() {
        let t0 = Instant::now();
        let mut c = ExpiryClock::new(1_000 * DAY, t0);
        let step = c.advance(1_060 * DAY, t0 + Duration::from_secs(3600));
        assert_eq!(step, Step::JumpedForward(60 * DAY - 3600));
        assert_eq!(c.now(), 1_000 * DAY + 3600 + 5);
        // Afterwards it advances with the clock again, from where it was.
        c.advance(1_061 * DAY, t0 + Duration::from_secs(3600 + DAY));
        assert_eq!(c.now(), 1_001 * DAY + 3600 + 5);
    }

    #[test]
    fn a_backward_jump_is_followed() {
        let t0 = Instant::now();
        let mut c = ExpiryClock::new(1_000 * DAY, t0);
        let step = c.advance(990 * DAY, t0 + Duration::from_secs(60));
        assert_eq!(step, Step::JumpedBack(10 * DAY));
        assert_eq!(c.now(), 990 * DAY);
    }

    #[test]
    fn a_boot_in_1970_corrected_later_does_not_age_the_store() {
        // The daemon starts with the clock at 1970 + 60 s; NTP sets 2026.
        let t0 = Instant::now();
        let mut c = ExpiryClock::new(60, t0);
        c.advance(1_795_953_630, t0 + Duration::from_secs(120));
        // Anything registered before the reboot (2026) is not "old".
        assert!(c.now() < 1_795_953_630 - 30 * DAY);
    }

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
