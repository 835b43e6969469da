//! The caller half of the discovery demo: an axum gateway that registers itself (one
//! `.layer()`) and calls another service through Nacos with a load-balanced HTTP client
//! (one `.with(LoadBalancer)`).
//!
//! Environment: the `NACOS_*` variables (its own registration, and where to discover),
//! `PORT` (default 8080; `0` picks a free port) and `TARGET_SERVICE` (default
//! `axum-demo`), the service it calls.
//!
//! Routes:
//! - `GET /call`: calls `http://TARGET_SERVICE/whoami` through Nacos and answers with the
//!   instance's answer (which instance answered);
//! - `GET /instances`: the instances of `TARGET_SERVICE` the gateway knows;
//! - `GET /health`: its own registration status.

use std::io::IsTerminal;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use nacos_axum::NacosLayer;
use nacos_core::{Discovery, LoadBalancer, ServiceWatch};
use tracing_subscriber::EnvFilter;

#[derive(Clone)]
struct Gateway {
    client: reqwest_middleware::ClientWithMiddleware,
    target: String,
    watch: ServiceWatch,
    nacos: NacosLayer,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    if let Err(e) = run().await {
        eprintln!("gateway: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT={raw:?}: expected a port number"))?,
        Err(_) => 8080,
    };
    let target = std::env::var("TARGET_SERVICE").unwrap_or_else(|_| "axum-demo".into());
    let nacos = NacosLayer::from_env()?;
    let discovery = Discovery::from_env()?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(LoadBalancer::new(discovery.clone()).service(&target))
        .build();
    let gateway = Gateway {
        client,
        watch: discovery.watch(&target),
        target,
        nacos: nacos.clone(),
    };

    let app = Router::new()
        .route("/call", get(call))
        .route("/instances", get(instances))
        .route("/health", get(health))
        .with_state(gateway)
        .layer(nacos.clone());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(nacos.shutdown_signal())
        .await?;
    Ok(())
}

/// Calls the target service through Nacos.
async fn call(State(gateway): State<Gateway>) -> (StatusCode, String) {
    let url = format!("http://{}/whoami", gateway.target);
    let answer = async {
        let response = gateway.client.get(&url).send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok::<_, reqwest_middleware::Error>((status, body))
    };
    match answer.await {
        Ok((status, body)) => (
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "call to {} failed", gateway.target);
            (StatusCode::BAD_GATEWAY, format!("call failed: {e}\n"))
        }
    }
}

async fn instances(State(gateway): State<Gateway>) -> Json<serde_json::Value> {
    let instances = gateway.watch.instances();
    let listed: Vec<String> = instances
        .all()
        .iter()
        .map(|i| format!("{}:{} weight {}", i.ip, i.port, i.weight))
        .collect();
    Json(serde_json::json!({
        "service": gateway.target,
        "version": instances.version(),
        "instances": listed,
    }))
}

async fn health(State(gateway): State<Gateway>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "UP", "nacos": gateway.nacos.status().snapshot() }))
}
