//! Register an actix-web app with Nacos through one `.wrap()`.
//!
//! Build a [`Nacos`] once with [`Nacos::from_env()`](Nacos::from_env), give a clone to
//! each worker's `App` with `.wrap(nacos.clone())`, set a few `NACOS_*` variables, serve
//! as usual. Once the server listens, its instance is registered (once per process,
//! however many workers) with the real port and a reachable IP, kept alive with beats,
//! registered again after a Nacos restart, and deregistered on SIGTERM/SIGINT or when the
//! server stops. The middleware adds nothing to a request but a pointer copy: it forwards
//! readiness and returns the inner service's future unchanged.
//!
//! # Example
//!
//! ```no_run
//! use actix_web::{App, HttpServer, get};
//! use nacos_actix::Nacos;
//!
//! #[get("/")]
//! async fn hello() -> &'static str {
//!     "hello"
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // NACOS_SERVICE_NAME=orders NACOS_SERVER_ADDR=127.0.0.1:8848
//!     let nacos = Nacos::from_env()?; // reads and checks NACOS_*; no network yet
//!     HttpServer::new(move || App::new().wrap(nacos.clone()).service(hello))
//!         .bind(("0.0.0.0", 8080))?
//!         .run() // registered once listening
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! To keep serving while callers learn that the instance left (`NACOS_DEREGISTER_GRACE`,
//! 2 s by default), let the middleware trigger actix's graceful stop, so the order is
//! "deregister, grace, stop accepting, drain". With actix's own signal handling, actix
//! stops accepting at the signal itself and the grace cannot apply:
//!
//! ```no_run
//! # use actix_web::{App, HttpServer};
//! # use nacos_actix::Nacos;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let nacos = Nacos::from_env()?;
//! let server = HttpServer::new({
//!     let nacos = nacos.clone();
//!     move || App::new().wrap(nacos.clone())
//! })
//! .shutdown_signal(nacos.shutdown_signal()) // replaces actix's own SIGTERM/SIGINT handling
//! .bind(("0.0.0.0", 0))?;
//! for addr in server.addrs() {
//!     nacos.listening_on(addr); // optional: exact address, no detection
//! }
//! server.run().await?;
//! # Ok(()) }
//! ```
//!
//! # Try it without a Nacos
//! With registration switched off (`NACOS_REGISTER_ENABLED=false`, or the builder) the
//! middleware is inert and the app works as without it:
//!
//! ```
//! use actix_web::{App, test, web};
//! use nacos_actix::{Config, Nacos};
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder()
//!     .service_name("orders")
//!     .register_enabled(false)
//!     .build()?;
//! let nacos = Nacos::new(config)?;
//! let app = test::init_service(
//!     App::new()
//!         .wrap(nacos.clone())
//!         .route("/", web::get().to(|| async { "hello" })),
//! )
//! .await;
//! let response = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
//! assert!(response.status().is_success());
//! # Ok(()) }
//! ```
//!
//! # How the middleware knows the server is listening
//! `HttpServer::bind` opens the listening socket before any worker builds its `App`, and the
//! middleware never sees it. So [`Nacos::from_env`] starts one registration that watches the
//! process's own listening TCP sockets (Linux `/proc`) and registers as soon as one appears,
//! with its port (`PORT=0` works). [`Nacos::listening_on`] gives the address explicitly instead
//! (needed off Linux). `new_transform`, which actix runs once per worker, only hands each
//! worker a clone.
//!
//! # Shutdown
//! - actix's own signal handling (the default): on SIGTERM (graceful) or SIGINT (forced)
//!   actix closes its listener at once and stops; nacos-core's signal listener deregisters
//!   the instance meanwhile and, actix having its own handlers, leaves actix to finish as
//!   it would have without Nacos: SIGTERM still drains in-flight requests, the exit status
//!   is the same. See [`nacos_core`'s signal section](nacos_core#signals).
//! - `HttpServer::shutdown_signal(nacos.shutdown_signal())`: deregister first, wait
//!   `NACOS_DEREGISTER_GRACE`, then a graceful stop, on SIGTERM and SIGINT alike.
//! - `disable_signals()` and a stop through a `ServerHandle`: when the stopped server drops
//!   its factory, the `Nacos` clone in it notices that the app no longer listens and
//!   deregisters before `server.await` returns (see [`Nacos`]'s "Drop"). actix does not
//!   join its worker threads, so the last handle's own drop could otherwise happen on a
//!   thread the process does not wait for.
//!
//! # Features
//! None: HTTPS to Nacos is `nacos-core`'s `rustls` feature.
//!
//! # Pitfalls
//! - Build the `Nacos` once, outside the `HttpServer::new` closure, and clone it inside:
//!   the closure runs once per worker, and each `from_env()` is its own registration.
//! - A process listening on several ports (a second `bind`, an admin or metrics server)
//!   must set `NACOS_PORT` or call [`Nacos::bound`].
//! - One `Nacos` serves one server run: once the server has stopped listening, dropping a
//!   clone deregisters for good.
//! - Use actix-server 2.9.1 or later: earlier versions can drop an in-flight request on a
//!   graceful stop, with or without Nacos (a worker could exit as soon as the accept thread
//!   did, before its stop command arrived; actix/actix-net#945). Cargo's MSRV-aware
//!   resolver picks 2.6 for a project whose `rust-version` is below 1.88.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod middleware;

pub use middleware::{Nacos, NacosMiddleware};
pub use nacos_core::{Config, Error, RegistrationState, Status, StatusHandle};
