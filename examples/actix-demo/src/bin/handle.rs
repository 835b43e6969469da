//! `actix-demo` for an app that stops its server itself: `disable_signals()`, and a task
//! that stops the server through its `ServerHandle` on SIGTERM (tokio's signal listener)
//! or on `POST /shutdown` (an admin endpoint: no signal at all).
//!
//! On SIGTERM the instance is deregistered by the signal listener nacos-core installs; on
//! `POST /shutdown` by the stopped server dropping its `Nacos` handle. Either way it is
//! gone from Nacos before the process exits, and in-flight requests are drained. SIGINT is
//! not handled by this app: the instance is deregistered, then the process dies of SIGINT
//! as it would have without Nacos. Same environment and routes as `actix-demo`.
//!
//! `SHUTDOWN_WAIT` (a duration such as `2s`, default `0s`): how long the app keeps serving
//! after SIGTERM before it stops the server (the Kubernetes "keep serving until the load
//! balancers notice" pattern).

use actix_web::{App, HttpResponse, HttpServer, post, web};
use nacos_actix::Nacos;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

#[actix_web::main]
async fn main() {
    actix_demo::init_tracing();
    if let Err(e) = run().await {
        eprintln!("actix-demo-handle: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = actix_demo::port_from_env()?;
    let wait = match std::env::var("SHUTDOWN_WAIT") {
        Ok(text) => humantime::parse_duration(&text)
            .map_err(|e| format!("invalid SHUTDOWN_WAIT={text:?}: {e}"))?,
        Err(_) => std::time::Duration::ZERO,
    };
    let nacos = Nacos::from_env()?;
    let status = web::Data::new(nacos.status());
    let stop = web::Data::new(Notify::new());
    let mut term = signal(SignalKind::terminate())?;

    let server = HttpServer::new({
        let stop = stop.clone();
        move || {
            App::new()
                .wrap(nacos.clone())
                .app_data(status.clone())
                .app_data(stop.clone())
                .configure(actix_demo::routes)
                .service(shutdown)
        }
    })
    .workers(2)
    .disable_signals()
    .bind(("0.0.0.0", port))?;
    for addr in server.addrs() {
        tracing::info!("listening on {addr}");
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: serving for {} ms more, then stopping the server", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
            () = stop.notified() => tracing::info!("POST /shutdown: stopping the server"),
        }
        handle.stop(true).await;
    });
    server.await?;
    tracing::info!("server stopped, exiting");
    Ok(())
}

/// Stops the server gracefully, as an admin endpoint would.
#[post("/shutdown")]
async fn shutdown(stop: web::Data<Notify>) -> HttpResponse {
    stop.notify_one();
    HttpResponse::Accepted().body("stopping\n")
}
