//! The smallest integration: one `.layer()` and a plain `axum::serve(..).await`, without
//! graceful shutdown. On SIGTERM the instance is deregistered and the process then exits
//! as it would have without the layer. Same environment as `axum-demo`.

use axum::{Router, routing::get};
use nacos_axum::NacosLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let port: u16 = std::env::var("PORT").map_or(Ok(8080), |p| p.parse())?;

    let app = Router::new()
        .route("/", get(|| async { "hello from axum-demo minimal\n" }))
        .layer(NacosLayer::from_env()?);

    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
