//! An app with its own graceful shutdown that keeps serving for a while after the signal,
//! the Kubernetes "keep serving until the load balancers notice" pattern: one
//! `.layer(NacosLayer::from_env()?)`, and its own SIGTERM/SIGINT handler that waits
//! `SHUTDOWN_WAIT` (a duration such as `2s`; default `2s`) while still serving, then lets
//! axum drain and exits 0.
//!
//! With the layer the instance leaves Nacos right after the signal, and the app still
//! serves through its wait and exits 0: the layer does not change what the app does on the
//! signal. Same environment and routes (`/`, `/slow?ms=N`) as `axum-demo`.

use std::time::Duration;

use axum::{Router, extract::Query, routing::get};
use nacos_axum::NacosLayer;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let port: u16 = std::env::var("PORT").map_or(Ok(8080), |p| p.parse())?;
    let wait = match std::env::var("SHUTDOWN_WAIT") {
        Ok(text) => humantime::parse_duration(&text)
            .map_err(|e| format!("invalid SHUTDOWN_WAIT={text:?}: {e}"))?,
        Err(_) => Duration::from_secs(2),
    };

    let app = Router::new()
        .route("/", get(|| async { "hello from axum-demo own-shutdown\n" }))
        .route("/slow", get(slow))
        .layer(NacosLayer::from_env()?);

    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown(wait))
        .await?;
    tracing::info!("drained, exiting");
    Ok(())
}

/// The app's own shutdown trigger: the first SIGTERM or SIGINT, then `wait` more serving.
async fn shutdown(wait: Duration) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        "{name}: serving for {} ms more, then draining",
        wait.as_millis()
    );
    tokio::time::sleep(wait).await;
}

#[derive(serde::Deserialize)]
struct SlowParams {
    ms: u64,
}

async fn slow(Query(params): Query<SlowParams>) -> String {
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    format!("slept {} ms\n", params.ms)
}
