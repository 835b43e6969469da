//! The end-to-end suite (`xtask::e2e`) against the axum demos, on r-nacos and the official
//! Nacos 2.x and 3.x; authentication on the official servers; the smallest app's exits.

const DEMO: &str = env!("CARGO_BIN_EXE_axum-demo");
const MINIMAL: &str = env!("CARGO_BIN_EXE_axum-demo-minimal");
const OWN_SHUTDOWN: &str = env!("CARGO_BIN_EXE_axum-demo-own-shutdown");
const GATEWAY: &str = env!("CARGO_BIN_EXE_axum-gateway");

xtask::e2e_suite!(DEMO);

mod auth {
    use super::DEMO;
    use xtask::e2e;
    use xtask::official::OfficialVersion;
    use xtask::server::ServerKind;

    const NACOS2: ServerKind = ServerKind::Official(OfficialVersion::V2_3_2);
    const NACOS3: ServerKind = ServerKind::Official(OfficialVersion::V3_1_0);

    #[test]
    fn nacos2_token_renewed() {
        e2e::auth_token_renewed(DEMO, NACOS2);
    }

    #[test]
    fn nacos3_token_renewed() {
        e2e::auth_token_renewed(DEMO, NACOS3);
    }

    #[test]
    fn nacos2_token_renewed_over_grpc() {
        e2e::auth_token_renewed_grpc(DEMO, NACOS2);
    }

    #[test]
    fn nacos3_token_renewed_over_grpc() {
        e2e::auth_token_renewed_grpc(DEMO, NACOS3);
    }

    #[test]
    fn nacos2_no_secret_in_a_trace_log() {
        e2e::auth_secrets_never_logged(DEMO, NACOS2);
    }

    #[test]
    fn nacos3_no_secret_in_a_trace_log() {
        e2e::auth_secrets_never_logged(DEMO, NACOS3);
    }

    #[test]
    fn nacos2_wrong_password_is_one_clear_error() {
        e2e::auth_wrong_password(DEMO, NACOS2);
    }

    #[test]
    fn nacos3_wrong_password_is_one_clear_error() {
        e2e::auth_wrong_password(DEMO, NACOS3);
    }
}

mod minimal {
    use super::MINIMAL;
    use xtask::e2e::{self, Exit};
    use xtask::server::ServerKind;

    #[test]
    fn plain_serve_still_dies_on_sigterm_deregistered() {
        e2e::signal_deregisters_then_exits(
            MINIMAL,
            ServerKind::RNacos,
            "TERM",
            Exit::KilledBySignal,
        );
    }

    #[test]
    fn plain_serve_still_dies_on_sigint_deregistered() {
        e2e::signal_deregisters_then_exits(
            MINIMAL,
            ServerKind::RNacos,
            "INT",
            Exit::KilledBySignal,
        );
    }
}

/// The signal policy: an app's own graceful shutdown is never cut short, a second signal
/// stops at once, and `NACOS_HANDLE_SIGNALS=false` leaves the signals to the app.
mod signals {
    use super::{DEMO, MINIMAL, OWN_SHUTDOWN};
    use std::time::Duration;
    use xtask::e2e::{self, Exit};
    use xtask::server::ServerKind;

    #[test]
    fn own_shutdown_serving_2s_after_sigterm_is_never_killed() {
        e2e::own_shutdown_is_never_killed(OWN_SHUTDOWN, ServerKind::RNacos, Duration::from_secs(2));
    }

    #[test]
    fn own_shutdown_serving_10s_after_sigterm_is_never_killed() {
        e2e::own_shutdown_is_never_killed(
            OWN_SHUTDOWN,
            ServerKind::RNacos,
            Duration::from_secs(10),
        );
    }

    #[test]
    fn a_second_sigterm_stops_at_once() {
        e2e::second_signal_stops_at_once(OWN_SHUTDOWN, ServerKind::RNacos, "TERM");
    }

    #[test]
    fn a_second_sigint_stops_at_once() {
        e2e::second_signal_stops_at_once(OWN_SHUTDOWN, ServerKind::RNacos, "INT");
    }

    #[test]
    fn default_grace_keeps_serving_after_sigterm() {
        e2e::default_grace_serves_while_callers_learn(
            DEMO,
            ServerKind::RNacos,
            "TERM",
            Exit::Clean,
        );
    }

    #[test]
    fn default_grace_keeps_serving_after_sigint() {
        e2e::default_grace_serves_while_callers_learn(DEMO, ServerKind::RNacos, "INT", Exit::Clean);
    }

    #[test]
    fn default_grace_then_plain_serve_dies_on_sigterm() {
        e2e::default_grace_serves_while_callers_learn(
            MINIMAL,
            ServerKind::RNacos,
            "TERM",
            Exit::KilledBySignal,
        );
    }

    #[test]
    fn handle_signals_false_plain_app_dies_at_once() {
        e2e::signals_left_to_the_app(MINIMAL, ServerKind::RNacos, "TERM", Exit::KilledBySignal);
    }

    #[test]
    fn handle_signals_false_shutdown_signal_still_deregisters() {
        e2e::signals_left_to_the_app(DEMO, ServerKind::RNacos, "TERM", Exit::Clean);
    }
}

/// Nacos as users run it in production: a 3-node r-nacos cluster, one node killed.
#[test]
fn rnacos_cluster_one_node_killed() {
    xtask::e2e::cluster_node_killed(DEMO);
}

/// `/metrics` passes `promtool check metrics` and moves with the lifecycle.
/// Nacos as users run it in production: a 3-node official Nacos 2.3.2 cluster, the node
/// holding the connection killed.
#[test]
fn nacos2_cluster_node_holding_the_connection_killed() {
    xtask::e2e::official_cluster_node_loss(DEMO, GATEWAY);
}

#[test]
fn metrics_pass_promtool_and_move() {
    xtask::e2e::metrics_move_with_the_lifecycle(DEMO);
}

/// `/metrics` over gRPC: the connection's series, and a reconnection counted.
#[test]
fn metrics_over_grpc() {
    xtask::e2e::metrics_over_grpc(DEMO);
}

/// No gRPC at + 1000: the HTTP fallback; `NACOS_GRPC_PORT_OFFSET` finds it.
#[test]
fn grpc_port_elsewhere_falls_back_or_is_configured() {
    xtask::e2e::grpc_port_elsewhere(DEMO);
}

#[test]
fn nacos2_grpc_over_tls_and_mutual_tls() {
    xtask::e2e::grpc_over_tls(DEMO, GATEWAY);
}

#[test]
fn auto_on_http_moves_to_grpc_when_its_port_answers() {
    xtask::e2e::auto_moves_to_grpc_when_its_port_answers(DEMO);
}

/// The official server moves the gRPC connection away (`ConnectResetRequest`).
#[test]
fn nacos2_server_reset_moves_the_connection() {
    xtask::e2e::server_reset_moves_the_connection(
        DEMO,
        xtask::server::ServerKind::Official(xtask::official::OfficialVersion::V2_3_2),
    );
}

/// docs/KUBERNETES.md's contract, replayed the way a kubelet deletes a pod.
#[test]
fn kubelet_sigterm_grace_then_sigkill() {
    xtask::e2e::kubelet_sequence(
        DEMO,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(6),
    );
}

/// IPv6: a server on `[::1]`, `NACOS_IP_TYPE=ipv6`, the advertised global IPv6 reachable.
#[test]
fn ipv6_registers_and_serves() {
    xtask::e2e::ipv6_registers_and_serves(DEMO);
}

/// An IPv6-only network namespace: the global IPv6 is found and advertised by itself.
#[test]
fn ipv6_only_namespace_registers_and_serves() {
    xtask::e2e::ipv6_only_namespace(DEMO);
}
