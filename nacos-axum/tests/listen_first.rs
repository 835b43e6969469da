//! The layer alone (no other call) registers only once the app listens, with the bound
//! port. Its own test binary: the process must hold no other listener.

use std::time::{Duration, Instant, SystemTime};

use axum::{Router, routing::get};
use nacos_axum::{Config, NacosLayer};
use xtask::{RNacos, get_text, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn registers_only_after_the_port_accepts_connections() {
    if xtask::skip_without(xtask::server::ServerKind::RNacos) {
        return;
    }
    let server = RNacos::start();
    let service = "axum-listen-first";
    let config = Config::builder()
        .service_name(service)
        .server_addr(server.addr())
        .build()
        .unwrap();
    let nacos = NacosLayer::new(config).unwrap();
    let status = nacos.status();
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(nacos);

    // Nothing listens: nothing may be registered.
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet_until {
        let hosts = server
            .instances("public", "DEFAULT_GROUP", service)
            .unwrap();
        assert!(hosts.is_empty(), "registered before listening: {hosts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.snapshot().registrations, 0);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bound_at = SystemTime::now();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let host = tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(5), || {
            server
                .instances("public", "DEFAULT_GROUP", service)
                .ok()
                .and_then(|hosts| hosts.into_iter().find(|h| h["port"] == port))
        })
    })
    .await
    .unwrap()
    .expect("registered once listening");
    let ip: std::net::IpAddr = host["ip"].as_str().unwrap().parse().unwrap();
    assert!(
        !ip.is_loopback(),
        "a loopback bind advertises the detected IP, got {ip}"
    );
    // The server lists the instance as it takes the request; the status follows its
    // answer a moment later.
    let deadline = Instant::now() + Duration::from_secs(3);
    let since = loop {
        if let Some(since) = status.snapshot().registered_since {
            break since;
        }
        assert!(Instant::now() < deadline, "listed, but never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(since >= bound_at, "registered before the bind");

    let (code, body) = tokio::task::spawn_blocking(move || {
        get_text(&format!("http://127.0.0.1:{port}/")).unwrap()
    })
    .await
    .unwrap();
    assert_eq!((code, body.as_str()), (200, "hi"));
}
