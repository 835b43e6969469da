//! Serving on after the deregistration until the callers stop coming.
//!
//! Callers learn late that an instance left Nacos, and how late depends on the caller:
//! push-fed clients (this crate's watches, a Java nacos-client's `selectInstances`) within
//! about a second; a Spring Cloud LoadBalancer caller only when its own cache of the list
//! expires (`spring.cloud.loadbalancer.cache.ttl`, 35 s by default). An app that stops
//! accepting before its last caller has dropped it fails that caller's requests. The
//! adapters see every request, so instead of one fixed grace for every kind of caller the
//! app serves on while requests keep coming:
//!
//! 1. at least [`LeavePolicy::grace`] (`NACOS_DEREGISTER_GRACE`, 2 s) after the
//!    deregistration was answered;
//! 2. then until no request from a caller has arrived for the quiet window:
//!    [`LeavePolicy::quiet`] (`NACOS_DEREGISTER_QUIET`, 2 s), widened so that a slow
//!    caller's next request is not mistaken for its last: to three times the longest
//!    interval seen between callers' requests since the deregistration, and to twice the
//!    window while only one request has been seen (no interval to go by yet);
//! 3. at most [`LeavePolicy::max`] (`NACOS_DEREGISTER_GRACE_MAX`, 40 s) after the
//!    deregistration.
//!
//! Requests that say nothing of callers do not count: health checks and scrapes, told by
//! their path ([`DEFAULT_PROBE_PATHS`](crate::DEFAULT_PROBE_PATHS), `NACOS_PROBE_PATHS`)
//! or by a prober's `User-Agent` ([`PROBE_USER_AGENTS`]: the kubelet, Prometheus, cloud
//! load balancers, Consul, Envoy, Nacos's own health checker). A kubelet probing `/health` every 10 s therefore never
//! holds the app on its own.
//!
//! Before a signal the adapters pay one relaxed atomic load per request
//! ([`Registration::is_leaving`](crate::Registration::is_leaving)); the counting (and the
//! path and `User-Agent` checks) happens only while the app is leaving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::settings::LeavePolicy;

/// `User-Agent` prefixes of programs that probe or scrape rather than call: the kubelet
/// (`kube-probe/1.31`), Prometheus, AWS and Google Cloud load balancers' health checks,
/// Consul, Envoy's active health checks and Nacos's own HTTP health checker (for
/// persistent instances, `Nacos-Server:v2.3.2`).
pub const PROBE_USER_AGENTS: &[&str] = &[
    "kube-probe/",
    "Prometheus/",
    "ELB-HealthChecker/",
    "GoogleHC/",
    "Consul Health Check",
    "Envoy/HC",
    "Nacos-Server",
];

/// Requests that arrived while the app was leaving, counted by the adapters.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    leaving: AtomicBool,
    callers: AtomicU64,
    probes: AtomicU64,
}

impl Arrivals {
    /// Whether requests are being counted.
    #[inline]
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Starts counting (idempotent).
    pub(crate) fn start(&self) {
        self.leaving.store(true, Ordering::SeqCst);
    }

    /// Counts one request.
    pub(crate) fn note(&self, probe: bool) {
        let counter = if probe { &self.probes } else { &self.callers };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn callers(&self) -> u64 {
        self.callers.load(Ordering::Relaxed)
    }

    fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }
}

/// Whether a request is a health check or a scrape rather than a caller's: its path is
/// one of `probe_paths` (or below one) or its `User-Agent` starts with one of
/// [`PROBE_USER_AGENTS`].
pub fn is_probe<S: AsRef<str>>(probe_paths: &[S], path: &str, user_agent: Option<&[u8]>) -> bool {
    let by_path = probe_paths.iter().any(|p| {
        let p = p.as_ref();
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    by_path
        || user_agent.is_some_and(|ua| {
            PROBE_USER_AGENTS
                .iter()
                .any(|prefix| ua.starts_with(prefix.as_bytes()))
        })
}

/// Why the app stopped serving on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// No caller's request for the quiet window.
    Quiet,
    /// [`LeavePolicy::max`] reached while callers still came.
    Max,
}

/// What the app did while serving on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Served {
    /// From the deregistration's answer to the end.
    pub(crate) after: Duration,
    /// Callers' requests in that time (counted from the signal).
    pub(crate) callers: u64,
    /// Health checks and scrapes in that time.
    pub(crate) probes: u64,
    /// The quiet window in force at the end.
    pub(crate) quiet: Duration,
    pub(crate) left: Left,
}

/// How often the counters are read while serving on.
pub(crate) const TICK: Duration = Duration::from_millis(25);

/// Serves on (waits) from now, the deregistration answered, as `policy` says; `arrivals`
/// is already counting. Runs on tokio's clock.
pub(crate) async fn serve_on(arrivals: &Arrivals, policy: LeavePolicy) -> Served {
    let start = Instant::now();
    let (callers_at_start, probes_at_start) = (arrivals.callers(), arrivals.probes());
    let mut seen = callers_at_start;
    let mut last = start;
    let mut longest = Duration::ZERO;
    let mut seen_changes = 0u32;
    let mut ticks = tokio::time::interval_at(start + TICK, TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (left, quiet) = loop {
        ticks.tick().await;
        let now = Instant::now();
        let callers = arrivals.callers();
        if callers != seen {
            longest = longest.max(now - last);
            last = now;
            seen = callers;
            seen_changes = seen_changes.saturating_add(1);
        }
        let mut quiet = policy.quiet.max(longest * 3);
        if seen_changes == 1 {
            quiet = quiet.max(policy.quiet * 2);
        }
        let elapsed = now - start;
        if elapsed >= policy.max {
            break (Left::Max, quiet);
        }
        if elapsed >= policy.grace && now - last >= quiet {
            break (Left::Quiet, quiet);
        }
    };
    Served {
        after: start.elapsed(),
        callers: arrivals.callers() - callers_at_start.min(arrivals.callers()),
        probes: arrivals.probes() - probes_at_start.min(arrivals.probes()),
        quiet,
        left,
    }
}

/// Logs and reports what serving on did: one line when the app leaves.
pub(crate) fn report(served: &Served, before: (u64, u64)) {
    let callers = before.0 + served.callers;
    let probes = before.1 + served.probes;
    crate::metrics::served_after_deregistration(served.after, callers, probes);
    let secs = served.after.as_secs_f64();
    match served.left {
        Left::Quiet => tracing::info!(
            served_ms = served.after.as_millis() as u64,
            requests = callers,
            probes,
            quiet_ms = served.quiet.as_millis() as u64,
            "leaving: served {secs:.1} s after deregistration, {callers} requests from callers ({probes} health checks); no caller for the quiet window, draining now"
        ),
        Left::Max => tracing::warn!(
            served_ms = served.after.as_millis() as u64,
            requests = callers,
            probes,
            "leaving: served {secs:.1} s after deregistration, {callers} requests from callers ({probes} health checks); callers still came at NACOS_DEREGISTER_GRACE_MAX, draining now (raise it, or shorten the callers' list caches)"
        ),
    }
}

/// What follows a deregistration on a signal (requests are counted since the signal):
/// serve on as `policy` says, then log one line and report the metrics.
pub(crate) async fn after_deregistration(arrivals: &Arrivals, policy: LeavePolicy) {
    if policy.grace.is_zero() {
        tracing::info!("deregistered; draining now (NACOS_DEREGISTER_GRACE=0s)");
        return;
    }
    tracing::info!(
        grace_ms = policy.grace.as_millis() as u64,
        quiet_ms = policy.quiet.as_millis() as u64,
        max_ms = policy.max.as_millis() as u64,
        "deregistered; serving on while callers still come (at least NACOS_DEREGISTER_GRACE, then until none came for NACOS_DEREGISTER_QUIET, at most NACOS_DEREGISTER_GRACE_MAX), then draining (a second signal stops now)"
    );
    let before = (arrivals.callers(), arrivals.probes());
    let served = serve_on(arrivals, policy).await;
    report(&served, before);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DEFAULT_PROBE_PATHS;
    use std::sync::Arc;

    const POLICY: LeavePolicy = LeavePolicy {
        grace: Duration::from_secs(2),
        quiet: Duration::from_secs(2),
        max: Duration::from_secs(40),
    };

    /// Spawns a caller sending a request every `every`, from `first` until `until`
    /// (both after the start).
    fn caller(arrivals: &Arc<Arrivals>, first: Duration, every: Duration, until: Duration) {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            tokio::time::sleep(first).await;
            while start.elapsed() < until {
                arrivals.note(false);
                tokio::time::sleep(every).await;
            }
        });
    }

    fn leaving() -> Arc<Arrivals> {
        let arrivals = Arc::new(Arrivals::default());
        arrivals.start();
        arrivals
    }

    fn near(actual: Duration, expected: Duration) -> bool {
        actual >= expected && actual <= expected + TICK * 2
    }

    #[tokio::test(start_paused = true)]
    async fn no_callers_leaves_after_the_grace() {
        let served = serve_on(&leaving(), POLICY).await;
        assert_eq!(served.left, Left::Quiet);
        assert!(near(served.after, Duration::from_secs(2)), "{served:?}");
        assert_eq!(served.callers, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn push_callers_that_stop_within_a_second_leave_at_the_grace() {
        let arrivals = leaving();
        caller(
            &arrivals,
            Duration::ZERO,
            Duration::from_millis(5),
            Duration::from_millis(600),
        );
        let served = serve_on(&arrivals, POLICY).await;
        assert_eq!(served.left, Left::Quiet);
        assert!(
            near(served.after, Duration::from_millis(2600)),
            "{served:?}"
        );
        assert!(served.callers > 100, "{served:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_caller_holds_the_app_until_it_stops() {
        let arrivals = leaving();
        // A Spring Cloud caller at 200 requests/s whose list cache expires 30 s on.
        caller(
            &arrivals,
            Duration::ZERO,
            Duration::from_millis(5),
            Duration::from_secs(30),
        );
        let served = serve_on(&arrivals, POLICY).await;
        assert_eq!(served.left, Left::Quiet);
        assert!(
            served.after >= Duration::from_secs(32) && served.after < Duration::from_secs(33),
            "{served:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_caller_widens_the_quiet_window() {
        let arrivals = leaving();
        // One request every 1.9 s (a low-rate caller spread over several instances) until
        // 20 s: the 2 s quiet window alone would end it between two of them.
        caller(
            &arrivals,
            Duration::from_millis(100),
            Duration::from_millis(1900),
            Duration::from_secs(20),
        );
        let served = serve_on(&arrivals, POLICY).await;
        assert_eq!(served.left, Left::Quiet);
        assert!(served.after > Duration::from_secs(20), "{served:?}");
        assert!(served.quiet >= Duration::from_millis(5400), "{served:?}");
        assert_eq!(served.callers, 11);
    }

    #[tokio::test(start_paused = true)]
    async fn one_early_request_then_a_long_gap_is_waited_for() {
        let arrivals = leaving();
        // A request 100 ms after the deregistration, the next 3.5 s later: the first
        // interval (100 ms) says nothing of the caller's pace.
        caller(
            &arrivals,
            Duration::from_millis(100),
            Duration::from_millis(3500),
            Duration::from_secs(12),
        );
        let served = serve_on(&arrivals, POLICY).await;
        assert_eq!(served.callers, 4, "{served:?}");
        assert!(served.after > Duration::from_secs(12), "{served:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn callers_that_never_stop_end_at_the_max() {
        let arrivals = leaving();
        caller(
            &arrivals,
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        let served = serve_on(&arrivals, POLICY).await;
        assert_eq!(served.left, Left::Max);
        assert!(near(served.after, Duration::from_secs(40)), "{served:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn probes_do_not_hold_the_app() {
        let arrivals = leaving();
        let probes = arrivals.clone();
        tokio::spawn(async move {
            loop {
                probes.note(true);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let served = serve_on(&arrivals, POLICY).await;
        assert!(near(served.after, Duration::from_secs(2)), "{served:?}");
        assert!(served.probes >= 4, "{served:?}");
    }

    #[test]
    fn probes_are_told_by_path_and_user_agent() {
        let paths = DEFAULT_PROBE_PATHS;
        assert!(is_probe(paths, "/health", None));
        assert!(is_probe(paths, "/actuator/health/liveness", None));
        assert!(is_probe(paths, "/grpc.health.v1.Health/Check", None));
        assert!(!is_probe(paths, "/healthy", None));
        assert!(!is_probe(paths, "/", None));
        assert!(!is_probe(paths, "/api/health-report", None));
        assert!(is_probe(paths, "/", Some(b"kube-probe/1.31")));
        assert!(is_probe(paths, "/", Some(b"Prometheus/2.53.0")));
        assert!(!is_probe(paths, "/", Some(b"Java/17.0.15")));
        assert!(!is_probe(&[] as &[&str], "/health", Some(b"curl/8.5.0")));
    }

    #[test]
    fn the_widest_policy_wins() {
        let a = LeavePolicy {
            grace: Duration::from_secs(1),
            quiet: Duration::from_secs(5),
            max: Duration::from_secs(10),
        };
        assert_eq!(a.widest(POLICY).grace, Duration::from_secs(2));
        assert_eq!(a.widest(POLICY).quiet, Duration::from_secs(5));
        assert_eq!(a.widest(POLICY).max, Duration::from_secs(40));
        assert_eq!(LeavePolicy::NONE.widest(a), a);
    }
}
