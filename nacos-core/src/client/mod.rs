//! The Nacos naming HTTP APIs: register, deregister, beat, instance list, login.
//!
//! [`NamingClient`] speaks one of two APIs per server, chosen by `NACOS_API`
//! ([`ApiVersion`]); the requests and answers of each live in their own module:
//! - `v1` (`{context}/v1/ns/...`): Nacos 1.x, 2.x, 3.0, 3.1 and r-nacos;
//! - `v3` (`{context}/v3/client/ns/...`): Nacos 3.x;
//! - **auto** (the default): the first request to each server goes to v3; a 404 or 410
//!   there means the server speaks v1 only, and the request is sent again on v1. The
//!   answer is remembered per server and logged once.
//!
//! Login and the token live in `auth` ([`LOGIN_RETRY`], [`MAX_LOGIN_RETRY`]).
//!
//! Mirrors the Java 1.x client's `NamingProxy`: every request starts at a random server and
//! tries each server once; with a single server it tries up to 3 times. Transport failures,
//! HTTP 5xx and 403 are tried again; a 400 is not. Every request carries `User-Agent`,
//! `Client-Version`, `Request-Module: Naming` and a fresh `RequestId`, and is bounded by
//! the configured request timeout.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderValue;

use crate::error::{Error, Result, excerpt};
use crate::instance::{BeatInfo, BeatResult, Instance, ServiceKey};
use crate::settings::{ApiVersion, Config, ServerAddr};

pub(crate) mod auth;
#[cfg(feature = "grpc")]
pub(crate) mod grpc;
pub(crate) mod v1;
pub(crate) mod v3;

use auth::Auth;
pub use auth::{LOGIN_RETRY, MAX_LOGIN_RETRY};

/// The `User-Agent` this crate sends: its name and version.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

const SINGLE_SERVER_TRIES: usize = 3;

/// At most this many of the beat engine's requests (registrations, beats,
/// deregistrations) through one client are on the wire at once, and so at most this many
/// connections per server: a process registering thousands of instances sends its beats
/// through a bounded pool instead of opening a connection per instance. The engine waits
/// for a slot before it builds a request ([`NamingClient`]'s own methods, called
/// directly, are not limited).
///
/// Each connection costs about 26 KB (hyper's read and write buffers and request queue).
/// 16 requests in flight carry 3,200 beats per second (16,000 instances beating every 5 s)
/// as long as the server answers within 5 ms; a slower server makes beats queue here, not
/// fail.
pub const MAX_IN_FLIGHT: usize = 16;

/// A client of the naming API (v1 or v3) of one Nacos cluster.
///
/// Cheap to share behind an `Arc`; all methods take `&self`.
pub struct NamingClient {
    http: reqwest::Client,
    /// The beat engine's [`MAX_IN_FLIGHT`] slots (see [`NamingClient::admit`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    servers: Vec<Server>,
    mode: ApiVersion,
    context_path: String,
    request_timeout: Duration,
    auth: Option<Auth>,
    /// The gRPC transport, unless the API is forced to HTTP.
    #[cfg(feature = "grpc")]
    grpc: Option<grpc::Grpc>,
}

/// How a registered instance is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// By beats (HTTP v1) or renewals (HTTP v3).
    Beats,
    /// By the gRPC connection: the instance lives as long as it, and is sent again on
    /// every new connection. The number is the connection's generation.
    #[cfg_attr(
        not(feature = "grpc"),
        expect(
            dead_code,
            reason = "only the gRPC transport keeps instances by connection"
        )
    )]
    Connection(u64),
    /// By the server: a persistent instance (`ephemeral: false`), health-checked by the
    /// server and kept until it is deregistered; no beats (as the Java client sends none
    /// for one).
    Server,
}

/// The state of the connection keeping an instance, as a task last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The connection's generation (see [`Kept::Connection`]).
    pub(crate) generation: u64,
    /// Whether it was up.
    pub(crate) up: bool,
}

/// How the connection keeping an instance changed.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "grpc"),
    expect(
        dead_code,
        reason = "only the gRPC transport keeps instances by connection"
    )
)]
pub(crate) enum ConnectionChange {
    /// It was lost; the transport reconnects.
    Down(Error),
    /// A new connection is up and the instance was sent on it (or failed to be).
    Redone {
        generation: u64,
        error: Option<Error>,
    },
}

/// Which transport a request takes.
enum Route {
    #[cfg(feature = "grpc")]
    Grpc,
    Http,
    /// gRPC could not connect and HTTP has not answered yet (`auto`): HTTP, and if it
    /// answers, HTTP from then on.
    #[cfg(feature = "grpc")]
    Probe(Error),
}

impl fmt::Debug for NamingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("NamingClient");
        d.field("servers", &self.servers)
            .field("api", &self.mode)
            .field("context_path", &self.context_path)
            .field("request_timeout", &self.request_timeout)
            .field("username", &self.auth.as_ref().map(|a| &a.username));
        #[cfg(feature = "grpc")]
        d.field("grpc", &self.grpc);
        d.finish_non_exhaustive()
    }
}

/// A server and what is known of the API it speaks.
struct Server {
    addr: ServerAddr,
    /// 0: unknown, 1: v1, 3: v3.
    api: AtomicU8,
    /// `{server}{context}{path}` for each of [`PATHS`], parsed once.
    urls: Vec<reqwest::Url>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

impl Server {
    fn new(addr: &ServerAddr, context_path: &str) -> Result<Self> {
        let urls = PATHS
            .iter()
            .map(|path| {
                reqwest::Url::parse(&format!("{addr}{context_path}{path}")).map_err(|e| {
                    Error::config(
                        "NACOS_CONTEXT_PATH",
                        context_path,
                        format!("a path that makes a valid URL with {addr} ({e})"),
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(Server {
            addr: addr.clone(),
            api: AtomicU8::new(0),
            urls,
        })
    }

    /// The URL of `path`, one of [`PATHS`].
    fn url(&self, path: &str) -> reqwest::Url {
        let i = PATHS.iter().position(|p| *p == path).unwrap_or(0);
        self.urls[i].clone()
    }

    /// The API the server is known to speak: `V1`, `V3`, or `None` while unknown.
    fn api(&self) -> Option<ApiVersion> {
        match self.api.load(Ordering::Relaxed) {
            1 => Some(ApiVersion::V1),
            3 => Some(ApiVersion::V3),
            _ => None,
        }
    }

    fn learn(&self, api: ApiVersion, why: &str) {
        let code = match api {
            ApiVersion::V1 => 1,
            _ => 3,
        };
        if self.api.swap(code, Ordering::Relaxed) != code {
            tracing::info!(server = %self.addr, api = %api, "nacos server speaks the {api} API ({why})");
        }
    }
}

/// A request before it is sent: method, path below the context path, query and form.
struct Call {
    method: Method,
    path: &'static str,
    /// Percent-encoded, without the `?`.
    query: String,
    form: Option<Vec<(&'static str, String)>>,
}

/// One naming operation, whichever API carries it.
#[derive(Clone, Copy)]
enum Op<'a> {
    Register(&'a ServiceKey, &'a Instance),
    Deregister(&'a ServiceKey, &'a Instance),
    Beat(&'a ServiceKey, &'a Instance, Option<&'a BeatInfo>),
    List(&'a ServiceKey, bool),
}

impl Op<'_> {
    fn what(&self) -> &'static str {
        match self {
            Op::Register(..) => "register",
            Op::Deregister(..) => "deregister",
            Op::Beat(..) => "beat",
            Op::List(..) => "instance_list",
        }
    }

    fn call(&self, api: ApiVersion) -> Call {
        match api {
            ApiVersion::V1 => v1::call(*self),
            _ => v3::call(*self),
        }
    }
}

/// Every naming path, parsed into a URL once per server.
const PATHS: [&str; 8] = [
    v1::INSTANCE,
    v1::BEAT,
    v1::LIST,
    v3::INSTANCE,
    v3::LIST,
    CONFIGS_V1,
    CONFIGS_LISTENER_V1,
    CONFIG_V3,
];

/// The configuration center's v1 API: a config (`GET`, `POST`, `DELETE`).
pub(crate) const CONFIGS_V1: &str = "/v1/cs/configs";
/// The configuration center's v1 long polling.
pub(crate) const CONFIGS_LISTENER_V1: &str = "/v1/cs/configs/listener";
/// The configuration center's v3 client API (3.x): a config (`GET`).
pub(crate) const CONFIG_V3: &str = "/v3/client/cs/config";

/// An HTTP request of the configuration center ([`NamingClient::config_http`]).
#[cfg(feature = "grpc")]
pub(crate) struct ConfigHttp<'a> {
    pub(crate) method: reqwest::Method,
    /// One of [`CONFIGS_V1`], [`CONFIGS_LISTENER_V1`], [`CONFIG_V3`].
    pub(crate) path: &'static str,
    pub(crate) query: Vec<(&'a str, &'a str)>,
    pub(crate) form: Option<Vec<(&'a str, &'a str)>>,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) timeout: Duration,
}

/// A server's answer to a [`ConfigHttp`], whatever its status.
#[cfg(feature = "grpc")]
pub(crate) struct HttpAnswer {
    pub(crate) server: String,
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

/// A query string, percent-encoded as it is built.
pub(crate) struct Query(String);

impl Default for Query {
    fn default() -> Self {
        Query(String::with_capacity(160))
    }
}

impl Query {
    #[must_use]
    pub(crate) fn pair(mut self, key: &str, value: &str) -> Self {
        url::form_urlencoded::Serializer::for_suffix(&mut self.0, 0).append_pair(key, value);
        self
    }

    #[must_use]
    pub(crate) fn details(self, instance: &Instance) -> Self {
        self.pair("weight", &instance.weight.to_string())
            .pair("enabled", if instance.enabled { "true" } else { "false" })
            .pair("healthy", if instance.healthy { "true" } else { "false" })
            .pair(
                "metadata",
                &crate::metadata::metadata_json(&instance.metadata),
            )
    }
}

impl Call {
    fn new(method: Method, path: &'static str, query: Query) -> Self {
        Call {
            method,
            path,
            query: query.0,
            form: None,
        }
    }
}

/// A fresh random (v4) UUID for the `RequestId` header. Drawn from `fastrand`, not the
/// operating system: it identifies a request in the server's logs and guards nothing, and
/// a `getrandom` system call per beat is measurable at thousands of instances.
fn request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

impl NamingClient {
    /// A client for the servers of `config`. Nothing connects before the first request.
    ///
    /// With the `grpc` feature (default) and `NACOS_API` `auto` or `grpc`, requests go over
    /// one gRPC connection (see the `grpc` module docs); `auto` falls back to HTTP when no
    /// server's gRPC port answers but HTTP does. The connection is TLS when
    /// [`Config::grpc_tls`] says so (by default with `https://` servers; feature `rustls`).
    ///
    /// # Errors
    /// [`Error::HttpClient`] when the HTTP client cannot be built (no TLS backend);
    /// [`Error::Config`] naming `NACOS_CONTEXT_PATH` when a server's URL cannot be made,
    /// `NACOS_API` when `grpc` is asked for without the `grpc` feature, `NACOS_GRPC_TLS`
    /// when TLS is asked for without the `rustls` feature, or the `NACOS_TLS_*` variable
    /// whose file cannot be read or holds no usable certificate or key.
    pub fn new(config: &Config) -> Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .no_proxy()
            .connect_timeout(config.request_timeout())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_IN_FLIGHT);
        #[cfg(feature = "rustls")]
        let http = match config.grpc_tls() {
            Some(tls) => https_settings(http, tls)?,
            None => http,
        };
        let http = http.build().map_err(|e| Error::HttpClient {
            source: Arc::new(e.without_url()),
        })?;
        let servers: Vec<Server> = config
            .server_addrs()
            .iter()
            .map(|addr| Server::new(addr, config.context_path()))
            .collect::<Result<_>>()?;
        let grpc_wanted = match config.api() {
            ApiVersion::Grpc => {
                if !cfg!(feature = "grpc") {
                    return Err(Error::config(
                        "NACOS_API",
                        "grpc",
                        "auto, v3 or v1 (this build has no `grpc` feature)",
                    ));
                }
                true
            }
            ApiVersion::Auto => true,
            _ => false,
        };
        // TLS under gRPC: its files are read now, so that a wrong path is an error at
        // start, not a connection that never comes up.
        #[cfg(all(feature = "grpc", feature = "rustls"))]
        let grpc_tls = match config.grpc_tls() {
            Some(settings) if grpc_wanted => Some(crate::remote::tls::tls(settings)?),
            _ => None,
        };
        #[cfg(not(feature = "rustls"))]
        if grpc_wanted && cfg!(feature = "grpc") && config.grpc_tls().is_some() {
            return Err(Error::config(
                "NACOS_GRPC_TLS",
                "true",
                "false, or a build with the `rustls` feature (gRPC over TLS needs it)",
            ));
        }
        #[cfg(not(feature = "grpc"))]
        let _ = grpc_wanted;
        #[cfg(feature = "grpc")]
        let grpc_servers: Vec<(String, u16)> = servers
            .iter()
            .map(|s| (s.addr.host().to_owned(), s.addr.port()))
            .collect();
        // gRPC over TLS with plain `http://` servers: `auto` never falls back to HTTP, which
        // would carry the same data unencrypted (a wrong CA must fail, not downgrade).
        let plain_http = servers.iter().any(|s| s.addr.scheme() == "http");
        let mode = match config.api() {
            ApiVersion::Auto if grpc_wanted && plain_http && config.grpc_tls().is_some() => {
                ApiVersion::Grpc
            }
            other => other,
        };
        if mode == ApiVersion::Grpc
            && plain_http
            && config.grpc_tls().is_some()
            && config.username().is_some()
        {
            tracing::warn!(
                "gRPC goes over TLS but the login goes over plain HTTP (NACOS_SERVER_ADDR names http:// servers): name them https:// to encrypt it too"
            );
        }
        let (mode, context_path, request_timeout) = (
            mode,
            config.context_path().to_owned(),
            config.request_timeout(),
        );
        #[cfg(feature = "grpc")]
        let offset = config.grpc_port_offset();
        // A forced gRPC never settles on HTTP: nothing to probe for.
        #[cfg(feature = "grpc")]
        let probe_interval = config.grpc_probe_interval();
        #[cfg(feature = "grpc")]
        let instance_check = config.instance_check();
        let auth = match (config.username(), config.password()) {
            (Some(username), Some(password)) => Some(Auth::new(username, password)),
            _ => None,
        };
        Ok(Arc::new_cyclic(|_me| NamingClient {
            http,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            servers,
            mode,
            context_path,
            request_timeout,
            auth,
            #[cfg(feature = "grpc")]
            grpc: grpc_wanted.then(|| {
                grpc::Grpc::new(
                    _me.clone(),
                    &grpc_servers,
                    offset,
                    request_timeout,
                    probe_interval,
                    instance_check,
                    #[cfg(feature = "rustls")]
                    grpc_tls,
                )
            }),
        }))
    }

    /// Waits for one of the [`MAX_IN_FLIGHT`] slots of the beat engine's requests and
    /// holds it until the permit is dropped. The engine takes it before it builds a
    /// request, so thousands of registrations waiting for a slow server wait as a few
    /// words each, not as thousands of built requests.
    pub(crate) async fn admit(&self) -> tokio::sync::OwnedSemaphorePermit {
        // Over gRPC every request shares one connection and a service's registrations go
        // out together as one batch: no pool to bound, and bounding would split the batch.
        #[cfg(feature = "grpc")]
        if let Some(grpc) = &self.grpc {
            if self.uses_grpc().is_none() {
                // Find out first (the first round of gRPC connections), so that the
                // first burst of registrations is not held to the HTTP bound.
                drop(self.route().await);
            }
            if self.uses_grpc() == Some(true) {
                return grpc.slot();
            }
        }
        self.in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed")
    }

    /// The servers this client talks to.
    pub fn servers(&self) -> Vec<ServerAddr> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// The API `server` (an entry of [`servers`](Self::servers)) is known to speak
    /// ([`ApiVersion::V1`] or [`ApiVersion::V3`]): `None` until the first answer in
    /// `auto` mode.
    pub fn api_of(&self, server: &ServerAddr) -> Option<ApiVersion> {
        self.servers
            .iter()
            .find(|s| &s.addr == server)
            .and_then(Server::api)
    }

    /// The API requests go over: `"grpc"`, or the HTTP API (`"v3"`, `"v1"`) the first
    /// server known to speak one speaks; `None` while not found out yet.
    pub(crate) fn api_in_use(&self) -> Option<&'static str> {
        match self.mode {
            ApiVersion::V1 => return Some("v1"),
            ApiVersion::V3 => return Some("v3"),
            _ => {}
        }
        match self.uses_grpc() {
            Some(true) => Some("grpc"),
            None => None,
            Some(false) => self
                .servers
                .iter()
                .find_map(Server::api)
                .map(|api| match api {
                    ApiVersion::V1 => "v1",
                    _ => "v3",
                }),
        }
    }

    /// Whether requests go over gRPC: `Some(true)` once settled on it, `Some(false)` on
    /// HTTP, `None` while `auto` has not found out yet.
    pub fn uses_grpc(&self) -> Option<bool> {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = &self.grpc {
            return match self.mode {
                ApiVersion::Grpc => Some(true),
                _ => grpc.decided(),
            };
        }
        Some(false)
    }

    /// The transport of the next request (finding it out in `auto` mode: a gRPC
    /// connection first, bounded by the request timeout per server).
    async fn route(&self) -> Route {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = &self.grpc {
            if self.mode == ApiVersion::Grpc {
                return Route::Grpc;
            }
            return match grpc.decided() {
                Some(true) => Route::Grpc,
                Some(false) if grpc.probe_again() => Route::Grpc,
                Some(false) => Route::Http,
                None => match grpc.connect_round().await {
                    Ok(()) => Route::Grpc,
                    Err(e) => Route::Probe(e),
                },
            };
        }
        Route::Http
    }

    /// Whether instances registered over HTTP are to move to the gRPC connection: `auto`
    /// settled on HTTP (no gRPC port answered) and a later try found one
    /// (`NACOS_GRPC_PROBE_INTERVAL`). Makes that try when it is due; cheap otherwise.
    pub(crate) fn grpc_found(&self) -> bool {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = &self.grpc {
            return match grpc.decided() {
                Some(false) => grpc.probe_again(),
                Some(true) => true,
                None => false,
            };
        }
        false
    }

    /// Moves an instance registered over HTTP (kept by beats) to the gRPC connection: its
    /// HTTP registration is taken off first (the official servers keep it apart from the
    /// connection's and would list both until its beats time out; r-nacos would take the
    /// gRPC one off with it if it came second), then it is registered on the connection
    /// at once, within the servers' push delay, so callers see no change.
    ///
    /// # Errors
    /// As [`register`](Self::register) over gRPC (the task registers again).
    pub(crate) async fn move_to_grpc(
        &self,
        key: &ServiceKey,
        instance: &Arc<Instance>,
    ) -> Result<Kept> {
        // The connection first, so that the instance is off the list no longer than a
        // request takes.
        #[cfg(feature = "grpc")]
        if let Some(grpc) = &self.grpc {
            grpc.ready().await?;
        }
        let off = self
            .call(Op::Deregister(key, instance))
            .await
            .and_then(|(server, api, body)| expect_ok(&server, api, &body));
        if let Err(e) = off {
            tracing::debug!(service = %key.service_name, error = %crate::error::Chain(&e),
                "nacos HTTP deregistration before moving to gRPC failed: the server drops it when its beats stop");
        }
        self.register_kept(key, instance).await
    }

    /// Starts the gRPC connection (when requests may go over gRPC and it has not started),
    /// so that its set-up overlaps the app's start: a registration is made before the app
    /// listens. Needs a tokio runtime; does nothing over HTTP.
    pub(crate) fn prepare(&self) {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = &self.grpc {
            if grpc.decided() != Some(false) {
                grpc.start();
            }
        }
    }

    /// Sends over the chosen transport; a probing HTTP request that gets an answer settles
    /// `auto` on HTTP.
    async fn routed<T, G, H>(&self, grpc: impl FnOnce() -> G, http: impl FnOnce() -> H) -> Result<T>
    where
        G: Future<Output = Result<T>>,
        H: Future<Output = Result<T>>,
    {
        #[cfg(not(feature = "grpc"))]
        let _ = grpc;
        match self.route().await {
            #[cfg(feature = "grpc")]
            Route::Grpc => grpc().await,
            Route::Http => http().await,
            #[cfg(feature = "grpc")]
            Route::Probe(grpc_error) => {
                let result = http().await;
                // A 5xx is no answer to settle on: a server starting up (or behind a
                // proxy whose upstream is down) answers HTTP 5xx before its gRPC port is
                // ready; gRPC is tried again on the next request.
                let answered = !matches!(
                    result,
                    Err(Error::Transport { .. } | Error::Timeout { .. })
                        | Err(Error::Status { status: 500.., .. })
                );
                if answered {
                    self.settle_on_http(&grpc_error);
                }
                result
            }
        }
    }

    /// The access token for the gRPC transport, logging in on the HTTP server `http` (an
    /// index of [`servers`](Self::servers)) when there is none, or again when `stale` was
    /// refused.
    #[cfg(feature = "grpc")]
    pub(crate) async fn grpc_token(
        &self,
        http: usize,
        stale: Option<&str>,
    ) -> Result<Option<String>> {
        let Some(server) = self.servers.get(http).or_else(|| self.servers.first()) else {
            return Ok(None);
        };
        match stale {
            Some(stale) => self.relogin(server, Some(stale)).await,
            None => self.token(server).await,
        }
    }

    /// The gRPC connection, for the modules besides naming on it (the configuration
    /// center); `None` without one (`NACOS_API=v1`/`v3`).
    #[cfg(feature = "grpc")]
    pub(crate) fn grpc_remote(&self) -> Option<&crate::remote::Remote> {
        self.grpc.as_ref().map(grpc::Grpc::remote)
    }

    /// Whether the configuration center goes over the gRPC connection (`Ok(true)`) or HTTP
    /// (`Ok(false)`: `NACOS_API=v1`/`v3`, or `auto` found no gRPC port), trying the gRPC
    /// ports first in `auto` mode as the first naming request does; `Err` with the gRPC
    /// error when they did not answer and nothing was settled yet: the caller tries HTTP
    /// and, when a server answers, calls [`settle_on_http`](Self::settle_on_http).
    #[cfg(feature = "grpc")]
    pub(crate) async fn config_over_grpc(&self) -> Result<bool> {
        match self.route().await {
            Route::Grpc => Ok(true),
            Route::Http => Ok(false),
            Route::Probe(e) => Err(e),
        }
    }

    /// `auto` mode: no gRPC port answered (`grpc_error`) but HTTP did: HTTP from now on
    /// (gRPC tried again at the probe interval).
    #[cfg(feature = "grpc")]
    pub(crate) fn settle_on_http(&self, grpc_error: &Error) {
        if let Some(grpc) = &self.grpc {
            if grpc.decided().is_none() {
                tracing::info!(servers = ?self.servers, grpc_error = %crate::error::Chain(grpc_error),
                    "nacos gRPC port does not answer but HTTP does: using HTTP");
                grpc.decide_http();
            }
        }
    }

    /// The HTTP API the servers are asked to speak: `V1`, `V3`, or `Auto`/`Grpc` to find
    /// out.
    #[cfg(feature = "grpc")]
    pub(crate) fn http_mode(&self) -> ApiVersion {
        self.mode
    }

    /// The timeout of one HTTP request (`NACOS_REQUEST_TIMEOUT`).
    #[cfg(feature = "grpc")]
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends `request` to the servers in turn until one answers (any status): with the
    /// login token, and after a 403 once more with a new login. A server that cannot be
    /// reached is followed by the next one.
    ///
    /// # Errors
    /// [`Error::Transport`] when no server answered; a refused login.
    #[cfg(feature = "grpc")]
    pub(crate) async fn config_http(&self, request: &ConfigHttp<'_>) -> Result<HttpAnswer> {
        let n = self.servers.len();
        let tries = if n == 1 { SINGLE_SERVER_TRIES } else { n };
        let start = fastrand::usize(..n);
        let mut attempt = 0;
        loop {
            let server = &self.servers[(start + attempt) % n];
            attempt += 1;
            let result = async {
                let token = self.token(server).await?;
                let answer = self.send_config(server, request, token.as_deref()).await?;
                if answer.status == 403 && self.auth.is_some() {
                    let token = self.relogin(server, token.as_deref()).await?;
                    return self.send_config(server, request, token.as_deref()).await;
                }
                Ok(answer)
            }
            .await;
            match result {
                Err(e) if attempt < tries && e.is_retryable() => {
                    tracing::debug!(server = %server.addr, error = %crate::error::Chain(&e),
                        "nacos config request failed");
                }
                other => return other,
            }
        }
    }

    #[cfg(feature = "grpc")]
    async fn send_config(
        &self,
        server: &Server,
        request: &ConfigHttp<'_>,
        token: Option<&str>,
    ) -> Result<HttpAnswer> {
        let mut url = server.url(request.path);
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in &request.query {
                query.append_pair(k, v);
            }
            if let Some(token) = token {
                query.append_pair("accessToken", token);
            }
        }
        let mut req = self
            .http
            .request(request.method.clone(), url)
            .timeout(request.timeout)
            .header("Client-Version", HeaderValue::from_static(USER_AGENT))
            .header("Request-Module", HeaderValue::from_static("Config"))
            .header("RequestId", request_id());
        for (name, value) in &request.headers {
            req = req.header(*name, value);
        }
        if let Some(form) = &request.form {
            req = req.form(form);
        }
        let server_name = server.addr.to_string();
        let resp = req.send().await.map_err(|e| transport(&server_name, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(|e| transport(&server_name, e))?;
        Ok(HttpAnswer {
            server: server_name,
            status,
            headers,
            body,
        })
    }

    /// The configured (HTTP) port of server `http` (an index of
    /// [`servers`](Self::servers)).
    #[cfg(feature = "grpc")]
    pub(crate) fn configured_port(&self, http: usize) -> Option<u16> {
        self.servers.get(http).map(|s| s.addr.port())
    }

    /// Resolves when a gRPC connection comes up after this call (the first one, or a new
    /// one after an outage); never over HTTP.
    pub(crate) async fn connected(&self) {
        #[cfg(feature = "grpc")]
        if let (Some(grpc), None | Some(true)) = (&self.grpc, self.uses_grpc()) {
            let mut rx = grpc.state();
            rx.borrow_and_update();
            loop {
                if rx.changed().await.is_err() {
                    break;
                }
                if rx.borrow_and_update().up {
                    return;
                }
            }
        }
        std::future::pending().await
    }

    /// Waits until the connection keeping `key`'s instances is no longer as `seen`; never
    /// resolves when instances are kept by beats.
    pub(crate) async fn connection_change(&self, key: &ServiceKey, seen: Seen) -> ConnectionChange {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = self.grpc() {
            let mut rx = grpc.state();
            let state = rx
                .wait_for(|s| s.generation != seen.generation || s.up != seen.up)
                .await
                .map(|state| state.clone());
            let Ok(state) = state else {
                return std::future::pending().await;
            };
            return if state.up {
                ConnectionChange::Redone {
                    generation: state.generation,
                    error: grpc.redo_error(key),
                }
            } else {
                ConnectionChange::Down(state.error.unwrap_or(Error::Timeout {
                    operation: "gRPC connection",
                    after: self.request_timeout,
                }))
            };
        }
        let _ = (key, seen);
        std::future::pending().await
    }

    /// Subscribes to `key` when requests go over gRPC (`None` over HTTP: poll instead).
    ///
    /// # Errors
    /// The subscription was refused or could not be sent.
    #[cfg(feature = "grpc")]
    pub(crate) async fn subscribe(&self, key: &ServiceKey) -> Result<Option<grpc::Subscribed>> {
        match self.route().await {
            Route::Grpc => match &self.grpc {
                Some(grpc) => grpc.subscribe(key).await.map(Some),
                None => Ok(None),
            },
            Route::Http => Ok(None),
            Route::Probe(_) => Ok(None),
        }
    }

    /// Over gRPC, the server of the connection keeping the instances (`grpc://host:port`);
    /// `None` over HTTP, where each request may go to another server.
    pub(crate) fn grpc_server(&self) -> Option<Arc<str>> {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = self.grpc() {
            return grpc.server();
        }
        None
    }

    /// See `Grpc::copies_may_remain`; `None` over HTTP.
    pub(crate) fn copies_may_remain(
        &self,
    ) -> Option<(Arc<str>, std::time::Duration, std::time::Duration)> {
        #[cfg(feature = "grpc")]
        if let Some(grpc) = self.grpc() {
            return grpc.copies_may_remain();
        }
        None
    }

    /// The gRPC connection's state, when requests go over gRPC.
    #[cfg(feature = "grpc")]
    pub(crate) fn grpc(&self) -> Option<&grpc::Grpc> {
        match self.uses_grpc() {
            Some(true) => self.grpc.as_ref(),
            _ => None,
        }
    }

    /// Registers `instance`: over gRPC (`InstanceRequest`, or `BatchInstanceRequest` with
    /// the process's other instances of the service), v1 `POST /v1/ns/instance` or v3 `POST
    /// /v3/client/ns/instance`.
    ///
    /// # Errors
    /// The last server's error when every try failed; [`Error::Refused`] when a server
    /// refuses it.
    ///
    /// # Cancellation safety
    /// Dropping the future abandons the request; the server may or may not have applied it.
    pub async fn register(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        self.register_kept(key, &Arc::new(instance.clone()))
            .await
            .map(drop)
    }

    /// [`register`](Self::register), saying how the instance is kept alive; over gRPC the
    /// connection's redo table shares `instance`.
    pub(crate) async fn register_kept(
        &self,
        key: &ServiceKey,
        instance: &Arc<Instance>,
    ) -> Result<Kept> {
        if !instance.ephemeral {
            // Boxed, as the HTTP route below: a burst of registrations waiting on the
            // connection does not carry room for an HTTP exchange each.
            return Box::pin(self.persistent(key, instance, true))
                .await
                .map(|()| Kept::Server);
        }
        self.routed(
            || async {
                #[cfg(feature = "grpc")]
                if let Some(grpc) = &self.grpc {
                    return grpc.register(key, instance).await.map(Kept::Connection);
                }
                unreachable!("the gRPC route needs the gRPC transport")
            },
            // Boxed: a registration waiting its turn on the gRPC connection (a burst of
            // them, all at once) does not carry room for an HTTP exchange.
            || {
                Box::pin(async {
                    let (server, api, body) = self.call(Op::Register(key, instance)).await?;
                    expect_ok(&server, api, &body).map(|()| Kept::Beats)
                })
            },
        )
        .await
    }

    /// Registers or deregisters a persistent instance: a gRPC `PersistentInstanceRequest`
    /// where the connection's server takes one (Nacos 2.3+ says so in its abilities), HTTP
    /// otherwise (`ephemeral=false`), the Java client's choice
    /// (`NamingClientProxyDelegate`).
    async fn persistent(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        register: bool,
    ) -> Result<()> {
        #[cfg(feature = "grpc")]
        if let (Some(grpc), Route::Grpc) = (&self.grpc, self.route().await) {
            if grpc.persistent(key, instance, register).await? {
                return Ok(());
            }
        }
        let op = if register {
            Op::Register(key, instance)
        } else {
            Op::Deregister(key, instance)
        };
        let (server, api, body) = self.call(op).await?;
        expect_ok(&server, api, &body)
    }

    /// Deregisters `instance` (v1 `DELETE /v1/ns/instance`, v3 `DELETE
    /// /v3/client/ns/instance`). Unknown instances answer success too.
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub async fn deregister(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        if !instance.ephemeral {
            return Box::pin(self.persistent(key, instance, false)).await;
        }
        self.routed(
            || async {
                #[cfg(feature = "grpc")]
                if let Some(grpc) = &self.grpc {
                    return grpc.deregister(key, instance).await;
                }
                unreachable!("the gRPC route needs the gRPC transport")
            },
            || async {
                let (server, api, body) = self.call(Op::Deregister(key, instance)).await?;
                expect_ok(&server, api, &body)
            },
        )
        .await
    }

    /// Sends one beat. v1: `PUT /v1/ns/instance/beat`, with the [`BeatInfo`] body when
    /// `beat` is given, a light beat otherwise. v3: the register call with
    /// `heartBeat=true` (no body, no `clientBeatInterval`; code 21003 becomes a
    /// [`BeatResult`] whose [`is_not_found`](BeatResult::is_not_found) is true).
    ///
    /// # Errors
    /// The last server's error when every try failed; [`Error::Protocol`] when the answer is
    /// not the JSON a beat gets; [`Error::Refused`] for another v3 code.
    pub async fn beat(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        beat: Option<&BeatInfo>,
    ) -> Result<BeatResult> {
        let (server, api, body) = self.call(Op::Beat(key, instance, beat)).await?;
        match api {
            ApiVersion::V1 => v1::beat_result(&server, &body),
            _ => v3::beat_result(&server, &body),
        }
    }

    /// Lists the instances of a service (v1 `GET /v1/ns/instance/list`, v3 `GET
    /// /v3/client/ns/instance/list`), unhealthy ones included unless `healthy_only`.
    /// Nacos 3.1's v3 list shows only the `DEFAULT` cluster (its form defaults the cluster);
    /// its v1 list shows all.
    ///
    /// # Errors
    /// The last server's error when every try failed; [`Error::Protocol`] for a body that
    /// is not an instance list; [`Error::Refused`] for a v3 code other than 0.
    pub async fn instance_list(
        &self,
        key: &ServiceKey,
        healthy_only: bool,
    ) -> Result<Vec<Instance>> {
        self.routed(
            || async {
                #[cfg(feature = "grpc")]
                if let Some(grpc) = &self.grpc {
                    let list = grpc.query(key, healthy_only).await?;
                    return Ok(list
                        .hosts
                        .into_iter()
                        .filter(|i| !healthy_only || i.healthy)
                        .collect());
                }
                unreachable!("the gRPC route needs the gRPC transport")
            },
            || async {
                let (server, api, body) = self.call(Op::List(key, healthy_only)).await?;
                match api {
                    ApiVersion::V1 => v1::instance_list(&server, &body),
                    _ => v3::instance_list(&server, &body, healthy_only),
                }
            },
        )
        .await
    }

    /// Every instance of a service, unhealthy and disabled ones included, and whether the
    /// server said the service is below its protect threshold (v1 only). A service the
    /// server does not know is empty.
    ///
    /// # Errors
    /// As [`instance_list`](Self::instance_list).
    pub(crate) async fn service_instances(
        &self,
        key: &ServiceKey,
    ) -> Result<crate::instance::InstanceList> {
        self.routed(
            || async {
                #[cfg(feature = "grpc")]
                if let Some(grpc) = &self.grpc {
                    return grpc.query(key, false).await;
                }
                unreachable!("the gRPC route needs the gRPC transport")
            },
            || self.service_instances_http(key),
        )
        .await
    }

    async fn service_instances_http(
        &self,
        key: &ServiceKey,
    ) -> Result<crate::instance::InstanceList> {
        let (server, api, body) = match self.call(Op::List(key, false)).await {
            Err(Error::Refused {
                code: v3::RESOURCE_NOT_FOUND,
                ..
            }) => {
                return Ok(crate::instance::InstanceList::default());
            }
            other => other?,
        };
        match api {
            ApiVersion::V1 => v1::service_list(&server, &body),
            _ => v3::instance_list(&server, &body, false).map(|hosts| {
                crate::instance::InstanceList {
                    hosts,
                    reach_protection_threshold: false,
                }
            }),
        }
    }

    /// Tries the servers as the module docs say; returns the answering server, the API
    /// it answered on and the body.
    async fn call(&self, op: Op<'_>) -> Result<(String, ApiVersion, String)> {
        let n = self.servers.len();
        let tries = if n == 1 { SINGLE_SERVER_TRIES } else { n };
        let start = fastrand::usize(..n);
        let mut attempt = 0;
        loop {
            let server = &self.servers[(start + attempt) % n];
            attempt += 1;
            match self.call_server(server, op).await {
                Ok((api, body)) => return Ok((server.addr.to_string(), api, body)),
                Err(e) if attempt < tries && e.is_retryable() => {
                    tracing::debug!(server = %server.addr, what = op.what(),
                        error = %crate::error::Chain(&e), "nacos request failed");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One server, on the API it speaks (finding it out in `auto` mode).
    async fn call_server(&self, server: &Server, op: Op<'_>) -> Result<(ApiVersion, String)> {
        let known = match self.mode {
            ApiVersion::Auto | ApiVersion::Grpc => server.api(),
            mode => Some(mode),
        };
        // A failed login says nothing about the naming API: it ends here.
        let token = self.token(server).await?;
        let api = known.unwrap_or(ApiVersion::V3);
        let started = std::time::Instant::now();
        let result = self.send_authed(server, &op.call(api), token).await;
        crate::metrics::request(api_label(api), op.what(), started.elapsed());
        if known.is_some() {
            return result.map(|body| (api, body));
        }
        match result {
            Err(Error::Status {
                status: status @ (404 | 410),
                ..
            }) => {
                server.learn(
                    ApiVersion::V1,
                    &format!("the v3 API answered HTTP {status}"),
                );
                let token = self.token(server).await?;
                let started = std::time::Instant::now();
                let result = self
                    .send_authed(server, &op.call(ApiVersion::V1), token)
                    .await;
                crate::metrics::request("v1", op.what(), started.elapsed());
                result.map(|body| (ApiVersion::V1, body))
            }
            Err(e @ (Error::Transport { .. } | Error::Login { .. })) => Err(e),
            other => {
                server.learn(ApiVersion::V3, "the v3 API answered");
                other.map(|body| (ApiVersion::V3, body))
            }
        }
    }

    /// One request with `token`, with one new login and retry after a 403.
    async fn send_authed(
        &self,
        server: &Server,
        call: &Call,
        token: Option<String>,
    ) -> Result<String> {
        match self.send(server, call, token.as_deref()).await {
            Err(Error::Status { status: 403, .. }) if self.auth.is_some() => {
                let token = self.relogin(server, token.as_deref()).await?;
                self.send(server, call, token.as_deref()).await
            }
            other => other,
        }
    }

    async fn send(&self, server: &Server, call: &Call, token: Option<&str>) -> Result<String> {
        let mut url = server.url(call.path);
        match token {
            Some(token) => {
                let mut query = call.query.clone();
                url::form_urlencoded::Serializer::for_suffix(&mut query, 0)
                    .append_pair("accessToken", token);
                url.set_query(Some(&query));
            }
            None => url.set_query(Some(&call.query)),
        }
        let mut req = self
            .http
            .request(call.method.clone(), url)
            .timeout(self.request_timeout)
            .header("Client-Version", HeaderValue::from_static(USER_AGENT))
            .header("Request-Module", HeaderValue::from_static("Naming"))
            .header("RequestId", request_id());
        if let Some(form) = &call.form {
            req = req.form(form);
        }
        let server_name = server.addr.to_string();
        let resp = req.send().await.map_err(|e| transport(&server_name, e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| transport(&server_name, e))?;
        if status == 200 {
            Ok(body)
        } else {
            Err(Error::Status {
                server: server_name,
                status,
                body: excerpt(&body),
            })
        }
    }
}

/// The `api` label of a request's metrics.
/// The TLS settings applied to HTTPS too (`https://` servers): the same CA file (in place
/// of the system's roots), client certificate and trust-all as the gRPC connection.
#[cfg(feature = "rustls")]
fn https_settings(
    mut http: reqwest::ClientBuilder,
    tls: &crate::settings::GrpcTls,
) -> Result<reqwest::ClientBuilder> {
    let read = |variable: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            Error::config(
                variable,
                path.display(),
                format!("a readable PEM file: {e}"),
            )
        })
    };
    if let Some(ca) = &tls.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read("NACOS_TLS_CA_FILE", ca)?)
            .map_err(|e| {
                Error::config(
                    "NACOS_TLS_CA_FILE",
                    ca.display(),
                    format!("PEM certificates: {}", crate::error::Chain(&e)),
                )
            })?;
        if certs.is_empty() {
            return Err(Error::config(
                "NACOS_TLS_CA_FILE",
                ca.display(),
                "a PEM file of certificates: no certificate in it",
            ));
        }
        http = http.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read("NACOS_TLS_CERT_FILE", cert)?;
        pem.extend(read("NACOS_TLS_KEY_FILE", key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            Error::config(
                "NACOS_TLS_KEY_FILE",
                key.display(),
                format!(
                    "the PEM private key of NACOS_TLS_CERT_FILE: {}",
                    crate::error::Chain(&e)
                ),
            )
        })?;
        http = http.identity(identity);
    }
    if tls.trust_all {
        http = http.tls_danger_accept_invalid_certs(true);
    }
    Ok(http)
}

fn api_label(api: ApiVersion) -> &'static str {
    match api {
        ApiVersion::V1 => "v1",
        _ => "v3",
    }
}

/// `ok` (v1) or a v3 envelope with code 0.
fn expect_ok(server: &str, api: ApiVersion, body: &str) -> Result<()> {
    match api {
        ApiVersion::V1 => Ok(()),
        _ => v3::expect_ok(server, body),
    }
}

pub(crate) fn list_query(key: &ServiceKey, healthy_only: bool) -> Query {
    Query::default()
        .pair("namespaceId", &key.namespace_id)
        .pair("serviceName", &key.service_name)
        .pair("groupName", &key.group_name)
        .pair("healthyOnly", if healthy_only { "true" } else { "false" })
}

pub(crate) fn instance_query(key: &ServiceKey, instance: &Instance) -> Query {
    Query::default()
        .pair("namespaceId", &key.namespace_id)
        .pair("serviceName", &key.service_name)
        .pair("groupName", &key.group_name)
        .pair("clusterName", &instance.cluster_name)
        .pair("ip", &instance.ip)
        .pair("port", &instance.port.to_string())
        .pair(
            "ephemeral",
            if instance.ephemeral { "true" } else { "false" },
        )
}

/// A transport error for `server`, keeping reqwest's error (its URL, which holds the
/// access token, removed) as the cause.
fn transport(server: &str, err: reqwest::Error) -> Error {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else if err.is_body() || err.is_decode() {
        "the answer was cut off"
    } else {
        "the exchange failed"
    };
    Error::Transport {
        server: server.to_owned(),
        what,
        source: Arc::new(err.without_url()),
    }
}

#[cfg(feature = "grpc")]
impl crate::remote::Auth for NamingClient {
    fn token<'a>(
        &'a self,
        http: usize,
        stale: Option<&'a str>,
    ) -> crate::remote::BoxFuture<'a, Result<Option<String>>> {
        Box::pin(self.grpc_token(http, stale))
    }

    fn configured_port(&self, http: usize) -> Option<u16> {
        NamingClient::configured_port(self, http)
    }
}
