//! The end-to-end suite (`xtask::e2e`) against the axum demos and a real r-nacos.

use xtask::e2e::{self, Exit};

const DEMO: &str = env!("CARGO_BIN_EXE_axum-demo");
const MINIMAL: &str = env!("CARGO_BIN_EXE_axum-demo-minimal");

#[test]
fn registers_exact_fields() {
    e2e::registers_exact_fields(DEMO);
}

#[test]
fn registers_bound_port_and_real_ip() {
    e2e::registers_bound_port_and_real_ip(DEMO);
}

#[test]
fn beats_keep_it_healthy() {
    e2e::beats_keep_it_healthy(DEMO);
}

#[test]
fn back_after_nacos_restart() {
    e2e::back_after_nacos_restart(DEMO);
}

#[test]
fn sigterm_deregisters_then_drains() {
    e2e::signal_deregisters_then_exits(DEMO, "TERM", Exit::Clean);
}

#[test]
fn sigint_deregisters_then_drains() {
    e2e::signal_deregisters_then_exits(DEMO, "INT", Exit::Clean);
}

#[test]
fn drains_in_flight_requests() {
    e2e::drains_in_flight_requests(DEMO);
}

#[test]
fn plain_serve_still_dies_on_sigterm_deregistered() {
    e2e::signal_deregisters_then_exits(MINIMAL, "TERM", Exit::KilledBySignal);
}

#[test]
fn plain_serve_still_dies_on_sigint_deregistered() {
    e2e::signal_deregisters_then_exits(MINIMAL, "INT", Exit::KilledBySignal);
}

#[test]
fn nacos_down_at_start() {
    e2e::nacos_down_at_start(DEMO);
}
