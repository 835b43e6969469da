//! Nacos service registration for Rust web services, without a web framework.
//!
//! `nacos-core` holds what every framework adapter shares: the configuration read from
//! `NACOS_*` environment variables ([`Config`]), the Nacos v1 naming API client
//! ([`NamingClient`]), the beat engine (the Java client's `BeatReactor`, see [`beat`]) and
//! the registrar lifecycle ([`Registration`]): register once the app listens, beat, register
//! again after a Nacos restart, deregister on SIGTERM/SIGINT and on drop.
//!
//! Apps normally use an adapter (`nacos-axum`'s `NacosLayer`); this crate is for adapters
//! and for programs that register something other than a web server.
//!
//! # Example
//!
//! ```no_run
//! use nacos_core::{AddrSource, Config, Registration};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // NACOS_SERVICE_NAME=orders NACOS_SERVER_ADDR=127.0.0.1:8848 in the environment
//! let config = Config::from_env()?;
//! let registration = Registration::with_addr_source(config, AddrSource::Adapter)?;
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
//! // Registers 0.0.0.0's detected IP and the real port, then beats every 5 s.
//! registration.bound(listener.local_addr()?);
//!
//! // ... serve ...
//!
//! // Wait for SIGTERM/SIGINT: the instance is deregistered before this resolves.
//! registration.shutdown_signal().await;
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `rustls`: `https://` servers in `NACOS_SERVER_ADDR`.
//!
//! # Pitfalls
//! - A [`Registration`] with [`AddrSource::Detect`] registers the port of the process's
//!   only listening socket; a process that listens on several ports needs `NACOS_PORT`.
//! - The engine listens for SIGTERM and SIGINT once a registration exists (see
//!   [`registrar`] for how it keeps the app's own behaviour on those signals).
//! - Dropping the last [`Registration`] deregisters, blocking up to the request timeout.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod beat;
pub mod client;
pub mod config;
mod error;
pub mod instance;
pub mod registrar;
mod status;

pub use client::NamingClient;
pub use config::{ApiVersion, Config, ConfigBuilder, Secret, ServerAddr};
pub use error::{Error, Result};
pub use instance::{BeatInfo, BeatResult, Instance, Metadata, ServiceKey};
pub use registrar::{AddrSource, Registration};
pub use status::{RegistrationState, Status, StatusHandle};
