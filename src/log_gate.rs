//! Rate-limited logging: at most one line per second for a recurring event, carrying how many
//! times it happened since the previous line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Admits one log line per second; counts the events in between.
pub struct LogGate {
    state: Mutex<Option<(Instant, u64)>>,
}

impl Default for LogGate {
    fn default() -> Self {
        Self::new()
    }
}

impl LogGate {
    /// A gate that has logged nothing yet.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }

    /// Records one event; `Some(count)` when a line may be written now, `count` being the events
    /// since the previous line, this one included.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            Some((last, count)) if now.duration_since(*last) < Duration::from_secs(1) => {
                *count += 1;
                None
            }
            Some((last, count)) => {
                let n = *count + 1;
                *last = now;
                *count = 0;
                Some(n)
            }
            None => {
                *state = Some((now, 0));
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_line_with_its_count() {
        let gate = LogGate::new();
        let t0 = Instant::now();
        assert_eq!(gate.admit_at(t0), Some(1));
        for i in 1..2000 {
            assert_eq!(gate.admit_at(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(gate.admit_at(t0 + Duration::from_millis(1001)), Some(2000));
        assert_eq!(gate.admit_at(t0 + Duration::from_millis(1002)), None);
    }
}
