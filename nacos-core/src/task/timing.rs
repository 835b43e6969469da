//! When a task acts: the beat grid, the first beat's spread and the backoff after a
//! failure.

use std::time::Duration;

use tokio::time::Instant;

/// The first retry delay after a failure; doubled per failure up to the beat interval.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(250);

/// The grid beats are due on: deadlines are rounded up to it, so the engine wakes once for
/// every beat due in the same 20 ms instead of once per beat (what keeps a process beating
/// thousands of instances cheap). Costs at most 20 ms of lateness.
pub(crate) const BEAT_TICK: Duration = Duration::from_millis(20);

/// `at` rounded up to the next [`BEAT_TICK`].
pub(crate) fn on_tick(at: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick = BEAT_TICK.as_nanos();
    let rounded = since.div_ceil(tick) * tick;
    epoch + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// The delay from a registration to its first beat: 50-100 % of the interval, so that a
/// process registering many instances at once does not beat them all in the same instant.
pub(crate) fn first_beat_delay(interval: Duration) -> Duration {
    interval.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// `min(interval, 250 ms * 2^(failures - 1))`, jittered to 50-100 % of that.
pub(crate) fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1 << exp).min(interval);
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_land_on_the_tick_grid() {
        let base = on_tick(Instant::now());
        for ms in [0, 1, 19, 20, 21, 5000] {
            let t = on_tick(base + Duration::from_millis(ms));
            let offset = t - base;
            assert_eq!(offset.as_nanos() % BEAT_TICK.as_nanos(), 0, "{ms} ms");
            assert!(
                offset >= Duration::from_millis(ms)
                    && offset < Duration::from_millis(ms) + BEAT_TICK
            );
        }
    }

    #[test]
    fn retry_delay_grows_and_stays_within_the_interval() {
        let interval = Duration::from_secs(5);
        for failures in 1..40 {
            let d = retry_delay(failures, interval);
            assert!(d <= interval, "{failures}: {d:?}");
        }
        let first = retry_delay(1, interval);
        assert!(first >= Duration::from_millis(125) && first <= FIRST_RETRY);
        assert!(retry_delay(30, interval) >= interval / 2);
    }
}
