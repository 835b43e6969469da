//! The end-to-end suite (`xtask::e2e`) against the actix demos, on r-nacos and the official
//! Nacos 2.x and 3.x; the `ServerHandle` app's stops.

const DEMO: &str = env!("CARGO_BIN_EXE_actix-demo");
const HANDLE: &str = env!("CARGO_BIN_EXE_actix-demo-handle");

xtask::e2e_suite!(DEMO);

mod handle {
    use super::HANDLE;
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
    fn disabled_signals_still_die_on_sigint_deregistered() {
        e2e::signal_deregisters_then_exits(HANDLE, ServerKind::RNacos, "INT", Exit::KilledBySignal);
    }
}
