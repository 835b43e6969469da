//! A server stopped through its `ServerHandle`, without a signal: the instance is gone from
//! Nacos by the time `server.await` returns, although the app still holds a `Nacos` handle
//! and actix's worker threads (which it does not join) hold others. Its own test binary:
//! the process must hold no other listener.

use std::time::Duration;

use actix_web::rt::task::spawn_blocking;
use actix_web::{App, HttpServer, web};
use nacos_actix::{Config, Nacos, RegistrationState};
use xtask::{RNacos, wait_for};

#[actix_web::test]
async fn stopping_the_server_deregisters_before_it_returns() {
    if xtask::skip_without(xtask::server::ServerKind::RNacos) {
        return;
    }
    let server = RNacos::start();
    let service = "actix-stop";
    let config = Config::builder()
        .service_name(service)
        .server_addr(server.addr())
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
    .workers(2)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = http.addrs()[0].port();
    let http = http.run();
    let handle = http.handle();
    let serving = actix_web::rt::spawn(http);

    let server = spawn_blocking(move || {
        let found = wait_for(Duration::from_secs(5), || {
            server
                .instances("public", "DEFAULT_GROUP", service)
                .ok()
                .filter(|hosts| hosts.iter().any(|h| h["port"] == port))
        });
        assert!(found.is_some(), "never registered");
        server
    })
    .await
    .unwrap();

    handle.stop(true).await;
    serving.await.unwrap().unwrap();
    // The server has returned; `nacos` is still alive here.
    let hosts = spawn_blocking(move || {
        server
            .instances("public", "DEFAULT_GROUP", service)
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        hosts.is_empty(),
        "still listed after the server stopped: {hosts:?}"
    );
    assert_eq!(status.snapshot().state, RegistrationState::Deregistered);
    drop(nacos);
}
