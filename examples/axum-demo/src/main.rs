//! A small axum app that registers itself with Nacos, configured only by environment:
//! the `NACOS_*` variables, `PORT` (default 8080; `0` picks a free port) and `BIND_ADDR`
//! (default `0.0.0.0`; `::` listens on IPv6 too).
//!
//! Routes: `/` (hello), `/echo/{word}`, `/slow?ms=N` (answers after N ms), `/whoami` (the
//! service and advertised `ip:port`), `/metrics` (the nacos-core metrics in Prometheus's
//! text format), `/health` (the registration status as JSON) and `/greeting` (the content
//! of the Nacos config `GREETING_DATA_ID` names, as Nacos has it now: changed in Nacos, the
//! answer changes without a restart) and `/settings` (the app's settings loaded from the
//! configs `NACOS_CONFIG_IMPORT`, `NACOS_CONFIG_SHARED_CONFIGS` and
//! `NACOS_CONFIG_EXTENSION_CONFIGS` name, merged and followed, with the md5 of each config
//! and why the last change was not taken, if it was not; a required config that does not
//! exist stops the start with an error naming it). SIGTERM or SIGINT deregisters the
//! instance, then the server drains in-flight requests and exits.

use std::io::IsTerminal;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use nacos_axum::{NacosLayer, StatusHandle};
use nacos_core::{ConfigImports, ConfigService, ImportedConfig};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    if let Err(e) = run().await {
        eprintln!("axum-demo: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = port_from_env()?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let nacos = NacosLayer::from_env()?;
    // GREETING_DATA_ID: a config to follow (over the same connection as the registration).
    let greeting = match std::env::var("GREETING_DATA_ID") {
        Ok(data_id) => Some(ConfigService::from_env()?.watch(data_id.trim())),
        Err(_) => None,
    };
    // NACOS_CONFIG_IMPORT and friends: the app's settings, loaded before it listens.
    let imports = ConfigImports::from_env()?;
    let settings: Option<ImportedConfig<DemoSettings>> = if imports.is_empty() {
        None
    } else {
        Some(ConfigService::from_env()?.import(imports).await?)
    };

    let app = Router::new()
        .route("/", get(|| async { "hello from axum-demo\n" }))
        .route(
            "/echo/{word}",
            get(|Path(word): Path<String>| async move { word }),
        )
        .route(
            "/greeting",
            get(move || {
                let now = greeting
                    .as_ref()
                    .and_then(nacos_core::ConfigWatch::current)
                    .and_then(|item| item.content.clone());
                async move { now.unwrap_or_else(|| "no greeting in Nacos\n".to_owned()) }
            }),
        )
        .route(
            "/settings",
            get(move || {
                let body = settings.as_ref().map(settings_json);
                async move { Json(body.unwrap_or(serde_json::Value::Null)) }
            }),
        )
        .route("/slow", get(slow))
        .route("/health", get(health))
        .route("/whoami", get(whoami))
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        )
        .with_state(nacos.status())
        .layer(nacos.clone());

    // BIND_ADDR: the IP to bind, `0.0.0.0` by default; `::` for IPv6 (and IPv4).
    let bind: std::net::IpAddr = match std::env::var("BIND_ADDR") {
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|_| format!("invalid BIND_ADDR={raw:?}: expected an IP address"))?,
        Err(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    let listener = tokio::net::TcpListener::bind((bind, port)).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(nacos.shutdown_signal())
        .await?;
    tracing::info!("drained, exiting");
    Ok(())
}

fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Err(_) => Ok(8080),
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT={raw:?}: expected a port number from 0 to 65535")),
    }
}

/// What the demo reads from its imported configs (numbers read as numbers whatever the
/// format). Only these keys are shown by `/settings`: other keys of the configs (secrets
/// among them) are not read.
#[derive(Deserialize, Serialize)]
struct DemoSettings {
    greeting: Option<String>,
    max_items: Option<u32>,
    db: Option<DemoDb>,
}

#[derive(Deserialize, Serialize)]
struct DemoDb {
    url: Option<String>,
    pool: Option<u32>,
}

fn settings_json(settings: &ImportedConfig<DemoSettings>) -> serde_json::Value {
    let items: Vec<serde_json::Value> = settings
        .items()
        .into_iter()
        .map(|(import, item)| {
            serde_json::json!({
                "import": import.to_string(),
                "md5": item.as_ref().map(|i| i.md5.clone()),
                "from_snapshot": item.as_ref().is_some_and(|i| i.from_snapshot),
            })
        })
        .collect();
    serde_json::json!({
        "value": &*settings.current(),
        "items": items,
        "last_error": settings.last_error().map(|e| e.to_string()),
    })
}

#[derive(Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(Query(params): Query<SlowParams>) -> String {
    let ms = params.ms.unwrap_or(1000).min(60_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

async fn health(State(status): State<StatusHandle>) -> Json<serde_json::Value> {
    let nacos = status.snapshot();
    Json(serde_json::json!({ "status": "UP", "nacos": nacos }))
}

/// `SERVICE IP:PORT`: which instance answered (what the discovery demo shows).
async fn whoami(State(status): State<StatusHandle>) -> String {
    let status = status.snapshot();
    format!(
        "{} {}\n",
        status.service_name,
        status.instance.unwrap_or_default()
    )
}
