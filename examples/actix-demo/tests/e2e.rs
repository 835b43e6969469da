//! The end-to-end suite (`xtask::e2e`) against the actix demos, on r-nacos and the official
//! Nacos 2.x and 3.x; the `ServerHandle` app's stops.

const DEMO: &str = env!("CARGO_BIN_EXE_actix-demo");
const HANDLE: &str = env!("CARGO_BIN_EXE_actix-demo-handle");

xtask::e2e_suite!(DEMO);

mod handle {
    use super::HANDLE;
    use std::time::Duration;
    use xtask::e2e::{self, Exit};
    use xtask::server::ServerKind;

    #[test]
    fn server_handle_on_sigterm_deregisters_then_drains() {
        e2e::signal_deregisters_then_exits(HANDLE, ServerKind::RNacos, "TERM", Exit::Clean);
        e2e::drains_in_flight_requests(HANDLE, ServerKind::RNacos);
    }

    #[test]
    fn server_handle_stop_without_signal_deregisters() {
        e2e::stop_without_signal_deregisters(HANDLE, ServerKind::RNacos);
    }

    #[test]
    fn own_shutdown_serving_2s_after_sigterm_is_never_killed() {
        e2e::own_shutdown_is_never_killed(HANDLE, ServerKind::RNacos, Duration::from_secs(2));
    }

    #[test]
    fn own_shutdown_serving_10s_after_sigterm_is_never_killed() {
        e2e::own_shutdown_is_never_killed(HANDLE, ServerKind::RNacos, Duration::from_secs(10));
    }

    #[test]
    fn a_second_sigterm_stops_at_once() {
        e2e::second_signal_stops_at_once(HANDLE, ServerKind::RNacos, "TERM");
    }

    #[test]
    fn handle_signals_false_leaves_sigint_to_the_app() {
        e2e::signals_left_to_the_app(HANDLE, ServerKind::RNacos, "INT", Exit::KilledBySignal);
    }

    #[test]
    fn disabled_signals_still_die_on_sigint_deregistered() {
        e2e::signal_deregisters_then_exits(HANDLE, ServerKind::RNacos, "INT", Exit::KilledBySignal);
    }
}

/// `/metrics` passes `promtool check metrics` and moves with the lifecycle.
#[test]
fn metrics_pass_promtool_and_move() {
    xtask::e2e::metrics_move_with_the_lifecycle(DEMO);
}
