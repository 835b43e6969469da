//! A hello-world axum server for the loopback load test (`bench/scripts/overhead.sh`):
//! `PORT=8081 [WITH_NACOS=1 NACOS_*=...] hello-axum`.
//!
//! Serves `GET /` (`Hello, World!`) on `127.0.0.1:PORT` (default 8081). With
//! `WITH_NACOS=1` the router gets `.layer(NacosLayer::from_env()?)`, exactly as the crate
//! docs show, configured by the `NACOS_*` variables, and shuts down through
//! `NacosLayer::shutdown_signal`; with `LAYER=around` too, the layer wraps the whole router
//! instead (`nacos.layer(router.with_state(()))`, no per-route boxing); without
//! `WITH_NACOS=1`, the same app without the layer. Worker threads:
//! tokio's default, one per CPU the process may run on (`taskset` narrows it). Logs go to
//! stderr, `RUST_LOG` (default `info`).

use axum::routing::get;
use axum::{Router, ServiceExt};
use nacos_axum::NacosLayer;
use tower::Layer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = std::env::var("PORT").map_or(Ok(8081), |p| p.parse())?;
    let with_nacos = std::env::var("WITH_NACOS").is_ok_and(|v| v == "1");
    let around = std::env::var("LAYER").is_ok_and(|v| v == "around");

    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!(
        "hello-axum listening on {}, nacos layer: {}",
        listener.local_addr()?,
        match (with_nacos, around) {
            (false, _) => "none",
            (true, false) => "Router::layer",
            (true, true) => "around the Router",
        }
    );
    if with_nacos && around {
        let nacos = NacosLayer::from_env()?;
        // `axum::serve` calls `with_state(())` per connection on a `Router`, not on a wrapped
        // one: done here, or the router turns its handlers into routes on every request.
        let app = nacos.layer(app.with_state::<()>(()));
        axum::serve(
            listener,
            ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .with_graceful_shutdown(nacos.shutdown_signal())
        .await?;
    } else if with_nacos {
        let nacos = NacosLayer::from_env()?;
        axum::serve(listener, app.layer(nacos.clone()))
            .with_graceful_shutdown(nacos.shutdown_signal())
            .await?;
    } else {
        axum::serve(listener, app).await?;
    }
    Ok(())
}
