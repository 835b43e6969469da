//! Nacos service registration for Rust web services, without a web framework.
//!
//! `nacos-core` holds what every framework adapter shares: the configuration read from
//! `NACOS_*` environment variables ([`Config`]), the Nacos naming client ([`NamingClient`]:
//! gRPC as Nacos 2.x/3.x clients speak it, with HTTP v3 and v1 as fallbacks) and the
//! registration lifecycle ([`Registration`]): register once the app listens, stay alive
//! (one gRPC connection, or beats over HTTP), register again after a Nacos restart,
//! deregister on SIGTERM/SIGINT and on drop.
//!
//! Apps normally use an adapter (`nacos-axum`'s `NacosLayer`, `nacos-actix`'s `Nacos`);
//! this crate is for adapters and for programs that register something other than a web
//! server.
//!
//! # Example
//!
//! ```
//! use nacos_core::{AddrSource, Config, Registration};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // NACOS_SERVICE_NAME=orders NACOS_SERVER_ADDR=127.0.0.1:8848 in the environment
//! // would do the same as: Config::from_env()?
//! let config = Config::builder()
//!     .service_name("orders")
//!     .server_addr("127.0.0.1:8848")
//! #   .register_enabled(false)
//!     .build()?;
//! let registration = Registration::with_addr_source(config, AddrSource::Reported)?;
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
//! // Registers 0.0.0.0's detected IP and the real port, then beats every 5 s.
//! registration.listening_on(listener.local_addr()?);
//!
//! // ... serve, with registration.shutdown_signal() as the graceful-shutdown trigger ...
//!
//! registration.deregister().await; // or drop it: the last handle deregisters
//! # Ok(()) }
//! ```
//!
//! # Where each step lives
//!
//! | step | module |
//! |---|---|
//! | the settings (`NACOS_*`, builder) | `settings`, `metadata` |
//! | the instance model, beat bodies and answers | `instance` |
//! | the gRPC connection, knowing nothing of naming or configuration: set-up, health checks, failover, server requests, TLS | `remote` (`remote/proto`, `remote/messages`, `remote/tls`) |
//! | the Nacos naming APIs: request sending, API choice, retries | `client` (`client/grpc` for naming on the connection: registrations, their redo, subscriptions and pushes; `client/v1`, `client/v3` for HTTP; `client/auth` for login and the token) |
//! | the configuration center on the connection | `config` |
//! | the app's listener: found, chosen, closed | `listener` |
//! | the advertised IP and port | `addr` |
//! | one registration's life: register, beat, register again, deregister | `task` (`task/mailbox`, `task/timing`) |
//! | the process-wide engine thread and shared tables | `engine` |
//! | SIGTERM/SIGINT | `signals` |
//! | serving on after the deregistration until callers stop coming | `leaving` |
//! | the handle and drop | `registration` |
//! | the health snapshot | `status` |
//! | discovery: watching a service, picking an instance, tower and HTTP adapters | `discovery` (`discovery/instances`, `discovery/tower`, `discovery/load_balancer`) |
//!
//! # Signals
//! The engine listens for SIGTERM and SIGINT from the first registration request on (not
//! with `NACOS_HANDLE_SIGNALS=false`). On the first signal every instance is deregistered,
//! the app serves on while its callers still come ([`LeavePolicy`]: at least
//! `NACOS_DEREGISTER_GRACE`, 2 s, then until no caller's request came for
//! `NACOS_DEREGISTER_QUIET`, 2 s, at most `NACOS_DEREGISTER_GRACE_MAX`, 40 s), then it
//! stops as it would have without this crate:
//! - an app that awaits [`Registration::shutdown_signal`] drains;
//! - an app with its own handler for the signal is left alone, however long it serves;
//! - an app with no handler is ended as the signal's default action ends it, at most
//!   [`EXIT_WAIT`] (500 ms) after serving on, with the same exit status;
//! - where the handlers cannot be read (no `/proc`, off Linux) the app is never ended by
//!   the engine: it keeps serving, deregistered, until a second signal or its own end.
//!
//! A second SIGTERM or SIGINT applies the signal's default action at once.
//!
//! # Discovery
//! The consumer half: [`Discovery`] watches services ([`ServiceWatch`]) and picks an
//! instance (same cluster first, then by weight: [`Instances::pick`]); a watched service is
//! also a `tower::discover::Discover` (feature `tower`) and an HTTP client's load
//! balancer (`LoadBalancer`, feature `reqwest-middleware`). See the `discovery` module's
//! docs on [`Discovery`] for the refresh, and what happens when Nacos blinks.
//!
//! # Configuration center
//! [`ConfigService`] (feature `grpc`) reads configs from Nacos and follows their changes
//! ([`ConfigWatch`]) over the process's gRPC connection, shared with naming. See its docs
//! for how a config is listened to.
//!
//! # Features
//! - `grpc` (default): the Nacos 2.x/3.x gRPC transport (tonic, prost), tried first by
//!   `NACOS_API=auto`, and the configuration center on it; without it the client speaks
//!   HTTP only.
//! - `rustls`: `https://` servers in `NACOS_SERVER_ADDR` (spoken to over HTTP).
//! - `tower`: `ServiceWatch::discover`, a `tower::discover::Discover` for
//!   `tower::balance::p2c::Balance`.
//! - `reqwest-middleware`: `LoadBalancer`, for `reqwest_middleware::ClientBuilder::with`.
//! - `tonic`: `ServiceWatch::feed_tonic_channel`, keeping tonic's
//!   `Channel::balance_channel` in step with a watched service.
//!
//! # Pitfalls
//! - A [`Registration`] with [`AddrSource::Detect`] registers the port of the process's
//!   only listening socket (Linux); a process that listens on several ports needs
//!   `NACOS_PORT` or [`Registration::listening_on`].
//! - An app that installs its own SIGTERM/SIGINT handler later than 5 ms after it starts
//!   listening cannot be seen by the engine: await [`Registration::shutdown_signal`] or
//!   set `NACOS_HANDLE_SIGNALS=false`.
//! - Dropping the last [`Registration`] deregisters, blocking up to the request timeout.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod addr;
mod client;
#[cfg(feature = "grpc")]
mod config;
mod discovery;
mod engine;
mod error;
mod instance;
mod leaving;
mod listener;
mod metadata;
pub mod metrics;
mod registration;
#[cfg(feature = "grpc")]
mod remote;
mod settings;
mod signals;
mod status;
mod task;

#[cfg(test)]
mod hostile_input;

#[cfg(feature = "figment")]
#[cfg_attr(docsrs, doc(cfg(feature = "figment")))]
pub use crate::config::NacosProvider;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use crate::config::NacosSource;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub use crate::config::{
    CONFIG_LONG_POLL, CONFIG_V3_POLL, ConfigFormat, ConfigImport, ConfigImports, ConfigItem,
    ConfigKey, ConfigService, ConfigWatch, FULL_CHECK, ImportedConfig, TypedConfig,
};
pub use addr::{advertised_addr, detect_ip};
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub use client::grpc::{CLUSTER_COPY_EXPIRY, INSTANCE_CHECK_MAX_OTHERS};
pub use client::{LOGIN_RETRY, MAX_IN_FLIGHT, MAX_LOGIN_RETRY, NamingClient, USER_AGENT};
pub use discovery::{DEFAULT_REFRESH, Discovery, EJECT_FOR, EMPTY_HOLD, Instances, ServiceWatch};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use discovery::{DiscoverInstances, InstanceKey};
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use discovery::{LoadBalancer, MAX_TRIES, NoInstance};
pub use error::{Cause, Error, Result};
pub use instance::{BeatInfo, BeatResult, Instance, ServiceKey};
pub use leaving::{PROBE_USER_AGENTS, is_probe};
pub use listener::{ListenerState, listener_state, own_listeners};
pub use metadata::{
    Metadata, PRESERVED_HEART_BEAT_INTERVAL, PRESERVED_HEART_BEAT_TIMEOUT,
    PRESERVED_IP_DELETE_TIMEOUT, PRESERVED_REGISTER_SOURCE, metadata_json,
};
pub use registration::{AddrSource, Registration};
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub use remote::{HEALTH_CHECK_IDLE, HEALTH_CHECK_TRIES, MAX_MESSAGE_SIZE};
pub use settings::{
    ApiVersion, Config, ConfigBuilder, DEFAULT_BEAT_INTERVAL, DEFAULT_DEREGISTER_GRACE,
    DEFAULT_DEREGISTER_GRACE_MAX, DEFAULT_DEREGISTER_QUIET, DEFAULT_GRPC_PORT_OFFSET,
    DEFAULT_GRPC_PROBE_INTERVAL, DEFAULT_PROBE_PATHS, DEFAULT_SERVER_PORT, GrpcTls, IpType,
    LeavePolicy, Secret, ServerAddr,
};
pub use signals::EXIT_WAIT;
pub use status::{RegistrationState, Status, StatusHandle};
