//! A server stopped without a signal: dropping the router (the last handle) deregisters
//! the instance before the drop returns.

use std::time::Duration;

use axum::{Router, routing::get};
use nacos_axum::{Config, NacosLayer, RegistrationState};
use xtask::{RNacos, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_router_deregisters() {
    if xtask::skip_without(xtask::server::ServerKind::RNacos) {
        return;
    }
    let server = RNacos::start();
    let service = "axum-drop";
    let config = Config::builder()
        .service_name(service)
        .server_addr(server.addr())
        .build()
        .unwrap();
    let nacos = NacosLayer::new(config).unwrap();
    let status = nacos.status();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    nacos.listening_on(addr);
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(nacos);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { drop(stopped.await) })
            .await
    });
    let server = tokio::task::spawn_blocking(move || {
        let found = wait_for(Duration::from_secs(5), || {
            server
                .instances("public", "DEFAULT_GROUP", service)
                .ok()
                .filter(|hosts| hosts.iter().any(|h| h["port"] == addr.port()))
        });
        assert!(found.is_some(), "never registered");
        server
    })
    .await
    .unwrap();

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    // `serve` has returned and dropped the router: the instance must already be gone.
    let hosts = tokio::task::spawn_blocking(move || {
        server
            .instances("public", "DEFAULT_GROUP", service)
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        hosts.is_empty(),
        "still listed after the router was dropped: {hosts:?}"
    );
    assert_eq!(status.snapshot().state, RegistrationState::Deregistered);
}
