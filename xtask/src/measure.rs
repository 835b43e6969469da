//! Lifecycle timings of a demo app against a local r-nacos: from "listening" to "visible in
//! Nacos's instance list", and from SIGTERM to "gone from the list" and to "exited".
//!
//! "Listening" is the timestamp of the app's own `listening on` log line (written right
//! after the bind); "visible" and "gone" are the first moments a tight loop of
//! `GET /nacos/v1/ns/instance/list` (one request at a time, about 0.2-0.5 ms each on
//! loopback) sees the change. Both clocks are the same machine's wall clock.

use std::time::{Duration, SystemTime};

use crate::{App, RNacos, wait_for};

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the `listening on` log line to the first list that shows the instance.
    pub to_visible: Duration,
    /// From sending SIGTERM to the first list without the instance.
    pub to_gone: Duration,
    /// From sending SIGTERM to the process's exit being observed.
    pub to_exit: Duration,
}

fn listening_time(output: &str) -> Option<SystemTime> {
    let line = output.lines().find(|l| l.contains("listening on "))?;
    let stamp = line.split_whitespace().next()?;
    humantime::parse_rfc3339(stamp).ok()
}

fn count(agent: &ureq::Agent, url: &str) -> Option<usize> {
    let mut resp = agent.get(url).call().ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let text = resp.body_mut().read_to_string().ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(body["hosts"].as_array().map_or(0, Vec::len))
}

/// Runs `bin` `runs` times against one r-nacos and measures each lifecycle.
///
/// # Errors
/// A run that does not register, deregister or exit in time, with the app's log.
pub fn lifecycle(bin: &str, runs: usize) -> Result<Vec<Sample>, String> {
    let server = RNacos::start();
    let agent = crate::agent(Duration::from_secs(2));
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let service = format!("timing-{run}");
        let url = format!(
            "http://{}/nacos/v1/ns/instance/list?serviceName={service}&groupName=DEFAULT_GROUP&namespaceId=public",
            server.addr()
        );
        let mut app = App::start(
            bin,
            &[
                ("NACOS_SERVER_ADDR", server.addr()),
                ("NACOS_SERVICE_NAME", service.clone()),
                ("PORT", "0".into()),
                ("RUST_LOG", "info".into()),
            ],
        );
        let visible_at = spin_until(Duration::from_secs(10), || {
            (count(&agent, &url)? > 0).then(SystemTime::now)
        })
        .ok_or_else(|| format!("run {run}: never visible:\n{}", app.output()))?;
        let listening_at = wait_for(Duration::from_secs(2), || listening_time(&app.output()))
            .ok_or_else(|| format!("run {run}: no `listening on` line:\n{}", app.output()))?;
        let signalled = SystemTime::now();
        app.signal("TERM");
        let gone_at = spin_until(Duration::from_secs(10), || {
            (count(&agent, &url)? == 0).then(SystemTime::now)
        })
        .ok_or_else(|| format!("run {run}: never gone:\n{}", app.output()))?;
        spin_until(Duration::from_secs(10), || {
            (!app.is_running()).then_some(())
        })
        .ok_or_else(|| format!("run {run}: did not exit:\n{}", app.output()))?;
        let exited_at = SystemTime::now();
        let since = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
        samples.push(Sample {
            to_visible: since(listening_at, visible_at),
            to_gone: since(signalled, gone_at),
            to_exit: since(signalled, exited_at),
        });
    }
    Ok(samples)
}

/// Calls `check` back to back (no pause) until it returns `Some`, or `timeout` passes.
fn spin_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(v) = check() {
            return Some(v);
        }
    }
    None
}

/// The `q` quantile (0.0 to 1.0) of `values`, nearest rank.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Recovery after a Nacos restart: `runs` times, r-nacos is killed while `bin` beats every
/// `NACOS_HEARTBEAT_INTERVAL` (default 5 s), started again 2 s later, and the time from
/// "the server answers again" to "the instance is listed again" is measured.
///
/// # Errors
/// A run whose instance never comes back within 30 s, with the app's log.
pub fn recovery(bin: &str, runs: usize) -> Result<Vec<Duration>, String> {
    let mut server = RNacos::start();
    let agent = crate::agent(Duration::from_secs(2));
    let url = format!(
        "http://{}/nacos/v1/ns/instance/list?serviceName=recovery&groupName=DEFAULT_GROUP&namespaceId=public",
        server.addr()
    );
    let app = App::start(
        bin,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "recovery".into()),
            ("PORT", "0".into()),
            ("RUST_LOG", "info".into()),
        ],
    );
    spin_until(Duration::from_secs(10), || {
        (count(&agent, &url)? > 0).then_some(())
    })
    .ok_or_else(|| format!("never visible:\n{}", app.output()))?;
    let mut out = Vec::with_capacity(runs);
    for run in 0..runs {
        server.stop();
        std::thread::sleep(Duration::from_secs(2));
        server.restart();
        let back = std::time::Instant::now();
        spin_until(Duration::from_secs(30), || {
            (count(&agent, &url)? > 0).then_some(())
        })
        .ok_or_else(|| format!("run {run}: not back:\n{}", app.output()))?;
        out.push(back.elapsed());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_timestamp() {
        let out = "2026-11-21T04:15:33.606258Z  INFO axum_demo: listening on 0.0.0.0:44323\n";
        let t = listening_time(out).unwrap();
        let expected = humantime::parse_rfc3339("2026-11-21T04:15:33.606258Z").unwrap();
        assert_eq!(t, expected);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(5));
        assert_eq!(quantile(&v, 0.9), Duration::from_millis(9));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(10));
    }
}
