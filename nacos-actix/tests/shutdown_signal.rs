//! `HttpServer::shutdown_signal(nacos.shutdown_signal())`: on SIGTERM the instance leaves
//! Nacos first, the server keeps accepting during `NACOS_DEREGISTER_GRACE`, then stops.
//! Its own test binary: it sends SIGTERM to itself.

use std::time::{Duration, Instant};

use actix_web::rt::task::spawn_blocking;
use actix_web::{App, HttpServer, web};
use nacos_actix::{Config, Nacos, RegistrationState};
use xtask::{RNacos, get_text, wait_for};

const GRACE: Duration = Duration::from_millis(1500);

#[actix_web::test]
async fn sigterm_deregisters_then_serves_through_the_grace_then_stops() {
    if xtask::skip_without(xtask::server::ServerKind::RNacos) {
        return;
    }
    let server = RNacos::start();
    let service = "actix-shutdown-signal";
    let config = Config::builder()
        .service_name(service)
        .server_addr(server.addr())
        .deregister_grace(GRACE)
        .build()
        .unwrap();
    let nacos = Nacos::new(config).unwrap();
    let status = nacos.status();
    let http = HttpServer::new({
        let nacos = nacos.clone();
        move || {
            App::new()
                .wrap(nacos.clone())
                .route("/", web::get().to(|| async { "hi" }))
        }
    })
    .workers(1)
    .shutdown_signal(nacos.shutdown_signal())
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = http.addrs()[0].port();
    let serving = actix_web::rt::spawn(http.run());

    let (signalled, during_grace) = spawn_blocking(move || {
        let listed = wait_for(Duration::from_secs(5), || {
            server
                .instances("public", "DEFAULT_GROUP", service)
                .ok()
                .filter(|hosts| hosts.iter().any(|h| h["port"] == port))
        });
        assert!(listed.is_some(), "never registered");
        let signalled = Instant::now();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let gone = wait_for(Duration::from_millis(500), || {
            server
                .instances("public", "DEFAULT_GROUP", service)
                .ok()
                .filter(|hosts| hosts.is_empty())
        });
        assert!(gone.is_some(), "still listed 500 ms after SIGTERM");
        // Deregistered, inside the grace: a new connection is still served.
        let during_grace = get_text(&format!("http://127.0.0.1:{port}/"));
        assert!(signalled.elapsed() < GRACE, "too slow to check the grace");
        (signalled, during_grace)
    })
    .await
    .unwrap();
    assert_eq!(during_grace, Ok((200, "hi".to_owned())));

    actix_web::rt::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops after the grace")
        .unwrap()
        .unwrap();
    let stopped_after = signalled.elapsed();
    assert!(
        stopped_after >= GRACE,
        "stopped {stopped_after:?} after SIGTERM, before the grace ended"
    );
    assert_eq!(status.snapshot().state, RegistrationState::Deregistered);
}
