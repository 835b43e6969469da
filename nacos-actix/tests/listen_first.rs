//! The middleware alone registers only once the server listens, with the bound port, once
//! for all workers. Its own test binary: the process must hold no other listener.

use std::time::{Duration, Instant, SystemTime};

use actix_web::rt::task::spawn_blocking;
use actix_web::{App, HttpServer, web};
use nacos_actix::{Config, Nacos};
use xtask::{RNacos, get_text, wait_for};

#[actix_web::test]
async fn registers_once_after_the_port_accepts_connections() {
    if xtask::skip_without(xtask::server::ServerKind::RNacos) {
        return;
    }
    let server = RNacos::start();
    let service = "actix-listen-first";
    let config = Config::builder()
        .service_name(service)
        .server_addr(server.addr())
        .build()
        .unwrap();
    let nacos = Nacos::new(config).unwrap();
    let status = nacos.status();

    // Nothing listens: nothing may be registered.
    let quiet_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet_until {
        let hosts = server
            .instances("public", "DEFAULT_GROUP", service)
            .unwrap();
        assert!(hosts.is_empty(), "registered before listening: {hosts:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.snapshot().registrations, 0);

    let http = HttpServer::new(move || {
        App::new()
            .wrap(nacos.clone())
            .route("/", web::get().to(|| async { "hi" }))
    })
    .workers(3)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let bound_at = SystemTime::now();
    let port = http.addrs()[0].port();
    let http = http.run();
    let handle = http.handle();
    let serving = actix_web::rt::spawn(http);

    let (host, answer) = spawn_blocking(move || {
        let host = wait_for(Duration::from_secs(5), || {
            server
                .instances("public", "DEFAULT_GROUP", service)
                .ok()
                .and_then(|hosts| hosts.into_iter().find(|h| h["port"] == port))
        });
        let answer = get_text(&format!("http://127.0.0.1:{port}/"));
        // A few requests, so more than one worker has built its middleware.
        for _ in 0..5 {
            drop(get_text(&format!("http://127.0.0.1:{port}/")));
        }
        (host, answer)
    })
    .await
    .unwrap();
    let host = host.expect("registered once listening");
    let ip: std::net::IpAddr = host["ip"].as_str().unwrap().parse().unwrap();
    assert!(
        !ip.is_loopback(),
        "a loopback bind advertises the detected IP, got {ip}"
    );
    assert_eq!(answer, Ok((200, "hi".to_owned())));
    // The server lists the instance as it takes the request; the status follows its
    // answer a moment later.
    let deadline = Instant::now() + Duration::from_secs(3);
    let snapshot = loop {
        let snapshot = status.snapshot();
        if snapshot.registered_since.is_some() {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "listed, but never registered");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        snapshot.registered_since.expect("registered") >= bound_at,
        "registered before the bind"
    );
    assert_eq!(snapshot.registrations, 1, "{snapshot:?}");

    handle.stop(true).await;
    serving.await.unwrap().unwrap();
}
