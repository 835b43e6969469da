//! A small actix-web app that registers itself with Nacos, configured only by environment:
//! the `NACOS_*` variables and `PORT` (default 8080; `0` picks a free port).
//!
//! Routes: `/` (hello), `/echo/{word}`, `/slow?ms=N` (answers after N ms) and `/health`
//! (the registration status as JSON). Two workers, one registration. actix-web keeps its
//! own signal handling: on SIGTERM (graceful stop) or SIGINT (forced stop) the instance is
//! deregistered while actix stops accepting, then actix stops as it does without Nacos
//! (SIGTERM drains in-flight requests) and the process exits with status 0.

use actix_web::{App, HttpServer, web};
use nacos_actix::Nacos;

#[actix_web::main]
async fn main() {
    actix_demo::init_tracing();
    if let Err(e) = run().await {
        eprintln!("actix-demo: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = actix_demo::port_from_env()?;
    let nacos = Nacos::from_env()?;
    let status = web::Data::new(nacos.status());

    let server = HttpServer::new(move || {
        App::new()
            .wrap(nacos.clone())
            .app_data(status.clone())
            .configure(actix_demo::routes)
    })
    .workers(2)
    .bind(("0.0.0.0", port))?;
    for addr in server.addrs() {
        tracing::info!("listening on {addr}");
    }
    server.run().await?;
    tracing::info!("drained, exiting");
    Ok(())
}
