//! A hello-world actix-web server for the loopback load test (`bench/scripts/overhead.sh`):
//! `PORT=8082 [WITH_NACOS=1 NACOS_*=...] hello-actix`.
//!
//! Serves `GET /` (`Hello, World!`) on `127.0.0.1:PORT` (default 8082). With
//! `WITH_NACOS=1` the app gets `.wrap(nacos.clone())` with `Nacos::from_env()?`, exactly as
//! the crate docs show, configured by the `NACOS_*` variables; without it, the same app
//! without the middleware. Workers: actix's default, one per CPU the process may run on
//! (`taskset` narrows it). Logs go to stderr, `RUST_LOG` (default `info`).

use actix_web::{App, HttpServer, get};
use nacos_actix::Nacos;

#[get("/")]
async fn hello() -> &'static str {
    "Hello, World!"
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = std::env::var("PORT").map_or(Ok(8082), |p| p.parse())?;
    let with_nacos = std::env::var("WITH_NACOS").is_ok_and(|v| v == "1");

    eprintln!("hello-actix on 127.0.0.1:{port}, nacos middleware: {with_nacos}");
    if with_nacos {
        let nacos = Nacos::from_env()?;
        HttpServer::new(move || App::new().wrap(nacos.clone()).service(hello))
            .bind(("127.0.0.1", port))?
            .run()
            .await?;
    } else {
        HttpServer::new(|| App::new().service(hello))
            .bind(("127.0.0.1", port))?
            .run()
            .await?;
    }
    Ok(())
}
