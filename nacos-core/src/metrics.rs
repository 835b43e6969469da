//! What the engine reports through the [`metrics`] facade: no exporter is chosen for the
//! app, and without an installed recorder every call is a no-op.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `nacos_client_registrations` | gauge | `state` (`waiting_for_listener`, `registering`, `registered`, `deregistered`, `replaced`, `disabled`) | registration handles alive, by lifecycle state |
//! | `nacos_client_beats_total` | counter | `outcome` (`ok`, `not_found`, `failed`) | beats and renewals sent |
//! | `nacos_client_registrations_total` | counter | `outcome` (`ok`, `failed`) | registration requests (the first and every one again) |
//! | `nacos_client_reregistrations_total` | counter | `reason` (`20404`, `21003`, `failure`) | registrations sent again: the server forgot the instance (v1 20404, v3 21003), or after failed requests (a server that was down may have restarted) |
//! | `nacos_client_deregistrations_total` | counter | `outcome` (`ok`, `failed`) | deregistration requests |
//! | `nacos_client_request_duration_seconds` | histogram | `api` (`v1`, `v3`), `operation` (`register`, `deregister`, `beat`, `instance_list`) | one HTTP request to a server, answered or not |
//! | `nacos_client_logins_total` | counter | `outcome` (`ok`, `refused`, `failed`) | logins |
//! | `nacos_client_discovery_instances` | gauge | `service` (`group@@service`) | instances a watched service lists (`healthy && enabled`) |
//! | `nacos_client_discovery_refresh_failures_total` | counter | `service` | failed polls of a watched service |
//! | `nacos_client_served_after_deregistration_seconds` | gauge | | how long the app served on after its deregistration on a signal (set once, when it drains) |
//! | `nacos_client_requests_after_deregistration_total` | counter | `kind` (`caller`, `probe`) | requests that arrived from the signal until the app drained: callers' and health checks or scrapes |
//!
//! Names and labels follow Prometheus conventions (`_total` counters, `_seconds` units).
//! Their help texts are given to the recorder when the engine starts (the first
//! registration or discovery): install the recorder before that.

use std::time::Duration;

/// Gives every metric its help text and unit (once, when the engine starts).
pub(crate) fn describe() {
    use metrics::Unit;
    metrics::describe_gauge!(
        "nacos_client_registrations",
        "Nacos registration handles alive, by lifecycle state."
    );
    metrics::describe_counter!(
        "nacos_client_beats_total",
        "Beats (v1) and renewals (v3) sent to Nacos, by outcome."
    );
    metrics::describe_counter!(
        "nacos_client_registrations_total",
        "Registration requests sent to Nacos, by outcome."
    );
    metrics::describe_counter!(
        "nacos_client_reregistrations_total",
        "Registrations sent again: the server forgot the instance (20404, 21003), after failures, or on a new gRPC connection (reconnect)."
    );
    metrics::describe_counter!(
        "nacos_client_deregistrations_total",
        "Deregistration requests sent to Nacos, by outcome."
    );
    metrics::describe_histogram!(
        "nacos_client_request_duration_seconds",
        Unit::Seconds,
        "Duration of one request to a Nacos server, by API (v1, v3, grpc) and operation."
    );
    metrics::describe_gauge!(
        "nacos_client_grpc_connection_up",
        "1 while the gRPC connection to Nacos is up (its registrations and subscriptions sent), else 0."
    );
    metrics::describe_counter!(
        "nacos_client_grpc_connections_total",
        "gRPC connections made to Nacos (the first one and every reconnection)."
    );
    metrics::describe_counter!("nacos_client_logins_total", "Logins to Nacos, by outcome.");
    metrics::describe_gauge!(
        "nacos_client_discovery_instances",
        "Instances a watched service lists (healthy and enabled)."
    );
    metrics::describe_counter!(
        "nacos_client_discovery_refresh_failures_total",
        "Failed polls of a watched service."
    );
    metrics::describe_gauge!(
        "nacos_client_served_after_deregistration_seconds",
        Unit::Seconds,
        "How long the app served on after its deregistration on a signal, before it drained."
    );
    metrics::describe_counter!(
        "nacos_client_requests_after_deregistration_total",
        "Requests that arrived from the signal until the app drained, by kind (caller, probe)."
    );
    metrics::describe_counter!(
        "nacos_client_config_rejected_total",
        "Config contents that did not read into the app's type (the last good value kept)."
    );
}

pub(crate) fn served_after_deregistration(after: Duration, callers: u64, probes: u64) {
    metrics::gauge!("nacos_client_served_after_deregistration_seconds").set(after.as_secs_f64());
    metrics::counter!("nacos_client_requests_after_deregistration_total", "kind" => "caller")
        .increment(callers);
    metrics::counter!("nacos_client_requests_after_deregistration_total", "kind" => "probe")
        .increment(probes);
}

/// The gRPC connection went up (`true`) or down.
#[cfg(feature = "grpc")]
pub(crate) fn connection_up(up: bool) {
    metrics::gauge!("nacos_client_grpc_connection_up").set(if up { 1.0 } else { 0.0 });
    if up {
        metrics::counter!("nacos_client_grpc_connections_total").increment(1);
    }
}

/// A handle entered the state labelled `state` (`+1`) or left it (`-1`).
pub(crate) fn registration_state(state: &'static str, delta: f64) {
    metrics::gauge!("nacos_client_registrations", "state" => state).increment(delta);
}

pub(crate) fn beat(outcome: &'static str) {
    metrics::counter!("nacos_client_beats_total", "outcome" => outcome).increment(1);
}

pub(crate) fn registration(outcome: &'static str) {
    metrics::counter!("nacos_client_registrations_total", "outcome" => outcome).increment(1);
}

pub(crate) fn reregistration(reason: &'static str) {
    metrics::counter!("nacos_client_reregistrations_total", "reason" => reason).increment(1);
}

pub(crate) fn deregistration(outcome: &'static str) {
    metrics::counter!("nacos_client_deregistrations_total", "outcome" => outcome).increment(1);
}

pub(crate) fn request(api: &'static str, operation: &'static str, took: Duration) {
    metrics::histogram!("nacos_client_request_duration_seconds", "api" => api, "operation" => operation)
        .record(took.as_secs_f64());
}

pub(crate) fn login(outcome: &'static str) {
    metrics::counter!("nacos_client_logins_total", "outcome" => outcome).increment(1);
}

pub(crate) fn discovery_instances(service: &str, count: usize) {
    metrics::gauge!("nacos_client_discovery_instances", "service" => service.to_owned())
        .set(count as f64);
}

pub(crate) fn discovery_refresh_failure(service: &str) {
    metrics::counter!("nacos_client_discovery_refresh_failures_total", "service" => service.to_owned())
        .increment(1);
}

/// A config's new content did not read into the app's type (the last good value is kept).
#[cfg(feature = "grpc")]
pub(crate) fn config_rejected() {
    metrics::counter!("nacos_client_config_rejected_total").increment(1);
}
