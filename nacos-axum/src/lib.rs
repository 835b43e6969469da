//! Register an axum app (or any tower stack) with Nacos through one `.layer()`.
//!
//! Add [`NacosLayer::from_env()`](NacosLayer::from_env) to the router, set a few `NACOS_*`
//! variables, serve as usual. Once the app listens, its instance is registered with the
//! real port and a reachable IP, kept alive with beats, registered again after a Nacos
//! restart, and deregistered on SIGTERM/SIGINT before the app stops serving, or when the
//! router is dropped. The layer adds one reference-count increment and decrement to a
//! request (axum clones a route's service per request): its service forwards `poll_ready`
//! and `call` and returns the inner future unchanged, measured at +13 to +18 ns per
//! request (docs/BENCHMARKS.md).
//!
//! # Example
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use nacos_axum::NacosLayer;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // NACOS_SERVICE_NAME=orders NACOS_SERVER_ADDR=127.0.0.1:8848
//!     let app = Router::new()
//!         .route("/", get(|| async { "hello" }))
//!         .layer(NacosLayer::from_env()?);
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! With graceful shutdown, let the layer trigger it, so that the instance leaves Nacos
//! (and `NACOS_DEREGISTER_GRACE` passes) before axum stops accepting:
//!
//! ```no_run
//! # use axum::{routing::get, Router};
//! # use nacos_axum::NacosLayer;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let nacos = NacosLayer::from_env()?;
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(nacos.clone());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
//! nacos.listening_on(listener.local_addr()?); // optional: exact address, no detection
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(nacos.shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # How the layer knows the app is listening
//! A tower layer never sees the listener, so [`NacosLayer`] watches the process's own
//! listening TCP sockets (Linux `/proc`) and registers as soon as one appears, with its
//! port. [`NacosLayer::listening_on`] gives the address explicitly instead (needed off
//! Linux).
//!
//! # Try it without a Nacos
//! With registration switched off (`NACOS_REGISTER_ENABLED=false`, or the builder) the
//! layer is inert and the app works as without it:
//!
//! ```
//! use axum::{body::Body, http::Request, routing::get, Router};
//! use nacos_axum::{Config, NacosLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder()
//!     .service_name("orders")
//!     .register_enabled(false)
//!     .build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(NacosLayer::new(config)?);
//! let response = app.oneshot(Request::get("/").body(Body::empty())?).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```
//!
//! # Cost per request
//! `Router::layer` with *any* layer, even one that does nothing, costs axum about 90-140 ns
//! per request: it boxes every route again. On a hot path, give the layer to the same
//! `.layer(ServiceBuilder::new()...)` call as the app's other layers, or wrap the whole
//! router (`tower::Layer::layer(&nacos, router)` served with
//! `axum::ServiceExt::into_make_service`), which adds about 13 ns in all.
//!
//! # Features
//! None: HTTPS to Nacos is `nacos-core`'s `rustls` feature; discovery's optional parts
//! (`tower`, `reqwest-middleware`, `tonic`) are `nacos-core` features too.
//!
//! # Pitfalls
//! - Build the layer once and clone it: each `from_env()` is its own registration.
//! - A process listening on several ports (an admin or metrics port) must set `NACOS_PORT`
//!   or call [`NacosLayer::listening_on`].
//! - Signals: see [`nacos_core`'s signal section](nacos_core#signals). An app without
//!   graceful shutdown still exits on SIGTERM, after deregistering; an app with its own
//!   signal handler still drains, however long it keeps serving, but only
//!   [`NacosLayer::shutdown_signal`] orders "deregister, then drain".
//!   `NACOS_HANDLE_SIGNALS=false` leaves the signals to the app.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod layer;
mod service;

pub use layer::NacosLayer;
pub use nacos_core::{Config, Error, RegistrationState, Status, StatusHandle};
pub use service::NacosService;
