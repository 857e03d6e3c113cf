//! Log lines that a flood could repeat, let through at most once a minute.
//!
//! A full disk, a dead APNs credential or a full push queue can make the
//! same warning fire for every request; on a router whose log lives in RAM
//! that pushes everything else out. A [`LogGate`] lets the first line of a
//! burst through, then one a minute, each saying how many it held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a gated line may appear.
const INTERVAL: Duration = Duration::from_secs(60);

/// One gated kind of log line.
#[derive(Debug, Default)]
pub struct LogGate {
    /// When a line last went through, and how many were held back since.
    state: Mutex<Option<(Instant, u64)>>,
}

impl LogGate {
    /// `Some(held_back)` when this occurrence should be logged (with the
    /// count of occurrences suppressed since the last logged one), else
    /// `None`.
    pub fn pass(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            Some((last, held)) if last.elapsed() < INTERVAL => {
                *held += 1;
                None
            }
            _ => {
                let held = state.map_or(0, |(_, held)| held);
                *state = Some((Instant::now(), 0));
                Some(held)
            }
        }
    }
}

/// " (N more not logged)" for a held-back count, or nothing.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_passes_and_a_burst_is_counted_not_logged() {
        let gate = LogGate::default();
        assert_eq!(gate.pass(), Some(0));
        assert_eq!(gate.pass(), None);
        assert_eq!(gate.pass(), None);
        // A minute later the next one passes and reports the two held back.
        if let Some((last, _)) = gate.state.lock().unwrap().as_mut() {
            *last -= INTERVAL;
        }
        assert_eq!(gate.pass(), Some(2));
        assert_eq!(held_back(2), " (2 more like it not logged)");
        assert_eq!(held_back(0), "");
    }
}
