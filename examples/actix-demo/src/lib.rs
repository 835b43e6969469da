//! What the two actix-demo binaries share: the routes, `PORT` and logging.
//!
//! Routes: `/` (hello), `/echo/{word}`, `/slow?ms=N` (answers after N ms), `/health`
//! (`{"status":"UP","nacos":<status>}`, from the [`StatusHandle`] in the app data) and
//! `/metrics` (the nacos-core metrics in Prometheus's text format).

use std::io::IsTerminal;
use std::time::Duration;

use actix_web::{HttpResponse, Responder, get, web};
use nacos_actix::StatusHandle;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Logs to stdout at `RUST_LOG` (default `info`), with colours only on a terminal, and
/// installs the Prometheus recorder `/metrics` renders.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => drop(METRICS.set(handle)),
        Err(e) => tracing::warn!(error = %e, "no /metrics: cannot install the recorder"),
    }
}

/// The metrics in Prometheus's text format.
#[get("/metrics")]
async fn metrics() -> HttpResponse {
    let body = METRICS.get().map(|h| h.render()).unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// `PORT`, default 8080; `0` picks a free port.
///
/// # Errors
/// When `PORT` is not a port number, naming the value.
pub fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Err(_) => Ok(8080),
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT={raw:?}: expected a port number from 0 to 65535")),
    }
}

/// Registers the demo routes; `/health` needs a `web::Data<StatusHandle>` in the app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(hello)
        .service(echo)
        .service(slow)
        .service(health)
        .service(metrics);
}

#[get("/")]
async fn hello() -> &'static str {
    "hello from actix-demo\n"
}

#[get("/echo/{word}")]
async fn echo(word: web::Path<String>) -> String {
    word.into_inner()
}

#[derive(Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

#[get("/slow")]
async fn slow(params: web::Query<SlowParams>) -> String {
    let ms = params.ms.unwrap_or(1000).min(60_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

#[get("/health")]
async fn health(status: web::Data<StatusHandle>) -> impl Responder {
    let nacos = status.snapshot();
    HttpResponse::Ok().json(serde_json::json!({ "status": "UP", "nacos": nacos }))
}
