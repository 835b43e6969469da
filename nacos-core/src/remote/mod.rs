//! The Nacos 2.x/3.x gRPC connection: one HTTP/2 connection per server set, the way every
//! official client since 2.0 talks to Nacos (the Java client's `RpcClient`/`GrpcClient`).
//! It knows nothing of naming or configuration: those are [`Module`]s on top, which send
//! their state again on every new connection and answer the server requests meant for them.
//!
//! - **One connection is one client.** The server ties the client to its TCP connection:
//!   the bi-stream and the unary calls share one tonic [`Channel`], made anew for every
//!   connection (a channel that reconnected by itself would be a stranger to the server).
//! - **Set-up** (the Java client's order): unary `ServerCheckRequest` (its answer names the
//!   connection), the bi-stream opened with `ConnectionSetupRequest` (labels `source: sdk`
//!   and the owner's, e.g. `module: naming`), then `HealthCheckRequest` until the server
//!   knows the connection. A Nacos 2.3+ server sends its abilities meanwhile
//!   (`SetupAckRequest`), kept on the [`Link`].
//! - **Alive**: a `HealthCheckRequest` after [`HEALTH_CHECK_IDLE`] without a word from the
//!   server (servers drop a connection silent for 20 s). A server that stops answering
//!   for a while (a JVM pause, a stopped process) is waited for, as the Java client waits:
//!   a failed health check is tried again, and only [`HEALTH_CHECK_TRIES`] failures in a
//!   row end the connection; a request that times out fails that request only. The
//!   connection ends at once when its stream ends or the transport fails (the server is
//!   gone), or when the server says it no longer knows it.
//! - **Message size**: up to [`MAX_MESSAGE_SIZE`] (10 MiB) both ways, as the Java client
//!   and the servers allow (tonic's own default is 4 MiB).
//! - **Server requests** on the stream are answered with the same `requestId`:
//!   `ClientDetectionRequest`, `ConnectResetRequest` (then reconnect, to the server it
//!   names if any) and `SetupAckRequest` here; any other kind goes to the modules
//!   ([`Module::on_request`]), and one no module takes is answered with an error.
//! - **Redo**: after every (re)connection, before anything else, each module sends its
//!   state again ([`Module::redo`]). Only then do other requests go out.
//! - **Failover**: servers are tried in turn from a random one; after the n-th round
//!   that failed (every server tried once) a wait of `min(n × 100 ms, 5 s)`, jittered
//!   down to half (the Java client's ramp: 1 s after about 5 s of outage, 5 s after about
//!   two minutes); the first failure of an outage is logged as a warning, the next ones at
//!   debug level, and the recovery once.
//! - **Auth**: the owner's HTTP login ([`Auth`]); the token goes in the `accessToken`
//!   header of every request; an answer refusing it (`errorCode` 403) logs in again and
//!   retries once.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::error::{Chain, Error, Result, excerpt};

pub(crate) mod messages;
pub(crate) mod proto;
#[cfg(feature = "rustls")]
pub(crate) mod tls;

use messages::{
    Ack, CLIENT_DETECTION, CONNECT_RESET, CONNECTION_SETUP, ConnectionSetup, HEALTH_CHECK,
    Internal, NO_RIGHT, Response, SERVER_CHECK, SETUP_ACK, SUCCESS, ServerRequest, UNREGISTERED,
    answer_type,
};
use proto::Payload;

/// Locks `mutex`, also after a panic elsewhere poisoned it (the data stays consistent:
/// every critical section leaves it whole).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A boxed future, for the object-safe [`Module`] and [`Auth`] traits.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a client built on the connection (naming, configuration) does with it.
pub(crate) trait Module: Send + Sync {
    /// Sends this module's state again on `link`, a new connection, before any other
    /// request goes on it (registrations, subscriptions, listens). Returns what it sent
    /// again and what it subscribed again, for the log.
    fn redo<'a>(&'a self, link: &'a Link) -> BoxFuture<'a, (usize, usize)>;
    /// Takes a server request of `kind` (its JSON body); `None` when it is not this
    /// module's, else whether it was understood (the answer says success or error).
    fn on_request(&self, kind: &str, json: &[u8]) -> Option<bool>;
    /// The connection to `server` was lost (its server gone or unreachable, not a reset);
    /// `several` when more than one server is configured.
    fn on_lost(&self, _server: &Arc<str>, _several: bool) {}
}

/// The owner's HTTP side: the login whose token goes with every request, and the
/// configured servers.
pub(crate) trait Auth: Send + Sync {
    /// The access token for the HTTP server `http` (an index of the configured servers):
    /// the current one, or a new login when `stale` was refused; `None` without
    /// credentials.
    fn token<'a>(
        &'a self,
        http: usize,
        stale: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>>>;
    /// The configured (HTTP) port of server `http`.
    fn configured_port(&self, http: usize) -> Option<u16>;
}

/// A health check goes out after this long without an answer or a request from the server.
pub const HEALTH_CHECK_IDLE: Duration = Duration::from_secs(5);

/// How many health checks in a row must fail (each bounded by the request timeout) before
/// the connection is given up: 3, as the Java client's `RpcClient` retries its check. A
/// paused server (JVM GC, `SIGSTOP`) is waited for up to [`HEALTH_CHECK_IDLE`] plus this
/// many request timeouts (5 + 3 × 3 s at the defaults).
pub const HEALTH_CHECK_TRIES: u32 = 3;

/// The largest gRPC message sent or received: 10 MiB, the Java client's and the servers'
/// limit (`nacos.remote.server.grpc.maxinbound.message.size`).
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// The wait after the first failed round of connection attempts (every server tried
/// once); each further round of an outage waits this much longer, up to
/// [`MAX_RECONNECT_WAIT`] (the Java client's `RpcClient` ramp).
const RECONNECT_STEP: Duration = Duration::from_millis(100);

/// The longest wait between two rounds of connection attempts: 5 s, reached after about
/// two minutes of outage (the Java client's).
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// The wait after `round` rounds of an outage failed: `min(round × 100 ms, 5 s)`, jittered
/// down to half of that so that the clients of a restarted server do not come back in
/// step.
fn reconnect_wait(round: u32) -> Duration {
    let wait = (RECONNECT_STEP * round.max(1)).min(MAX_RECONNECT_WAIT);
    wait.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// How often the set-up asks whether the server knows the new connection yet.
const SETUP_POLL: Duration = Duration::from_millis(2);

const REQUEST_PATH: &str = "/Request/request";

const STREAM_PATH: &str = "/BiRequestStream/requestBiStream";

/// A gRPC server: where to connect, and the owner's HTTP server to log in on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Index of the HTTP server (login) in the owner's list.
    pub(crate) http: usize,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "grpc://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "grpc://{}:{}", self.host, self.port)
        }
    }
}

/// The connection as registrations and watches see it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LinkState {
    /// Counts the connections made (and their redo done) so far.
    pub(crate) generation: u64,
    /// Whether a connection is up.
    pub(crate) up: bool,
    /// Counts the rounds (every server tried once) that failed.
    pub(crate) rounds_failed: u64,
    /// Why the last connection ended or the last attempt failed.
    pub(crate) error: Option<Error>,
    /// The server of the connection up (or of the last one), as `grpc://host:port`.
    pub(crate) server: Option<Arc<str>>,
}

/// The connection in use for unary calls.
#[derive(Clone)]
pub(crate) struct Link {
    channel: Channel,
    pub(crate) target: Target,
    pub(crate) generation: u64,
    /// The abilities the server sent after the set-up (`SetupAckRequest`, Nacos 2.3+);
    /// empty from older servers.
    pub(crate) abilities: Arc<HashMap<String, bool>>,
}

impl Link {
    /// Whether the server listed `ability` as supported.
    pub(crate) fn can(&self, ability: &str) -> bool {
        self.abilities.get(ability).copied().unwrap_or(false)
    }
}

/// What the auto mode decided: 0 undecided, 1 gRPC, 2 HTTP.
const UNDECIDED: u8 = 0;

const GRPC: u8 = 1;

const HTTP: u8 = 2;

/// The connection: its task, the auto mode's decision and the request slots. Dropped with
/// its owner: the connection task ends and the connection closes.
pub(crate) struct Remote {
    core: Arc<Core>,
    started: AtomicBool,
    /// On HTTP in auto mode: how often the gRPC ports are tried again (zero: never).
    probe_interval: Duration,
    /// When the next try is due (set once auto settled on HTTP).
    next_probe: Mutex<Option<tokio::time::Instant>>,
    /// Request slots for [`slot`](Self::slot): as many as a semaphore holds.
    slots: Arc<tokio::sync::Semaphore>,
    /// Dropped with the owner: the connection task ends and the connection closes.
    stop: watch::Sender<()>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("servers", &self.core.targets)
            .finish_non_exhaustive()
    }
}

/// What the connection task, the modules and the callers share.
pub(crate) struct Core {
    auth: Weak<dyn Auth>,
    targets: Vec<Target>,
    timeout: Duration,
    /// The set-up's labels besides `source: sdk` (e.g. `module: naming`).
    labels: Vec<(&'static str, &'static str)>,
    state: watch::Sender<LinkState>,
    link: Mutex<Option<Link>>,
    /// A caller saw the connection fail: the generation it saw fail.
    lost: watch::Sender<u64>,
    decided: AtomicU8,
    /// A try of the gRPC ports after auto settled on HTTP found one answering.
    found: AtomicBool,
    /// TLS under the connection (`NACOS_GRPC_TLS`).
    #[cfg(feature = "rustls")]
    tls: Option<tls::Tls>,
    next_request: AtomicU64,
    /// The modules on the connection, in the order they were added (and redo).
    modules: Mutex<Vec<Weak<dyn Module>>>,
}

impl Remote {
    /// A connection to `servers` (host and HTTP port) at `offset` above their ports, logging
    /// in through `auth`, with the set-up `labels`; nothing connects before the first
    /// request.
    pub(crate) fn new(
        auth: Weak<dyn Auth>,
        servers: &[(String, u16)],
        offset: u16,
        timeout: Duration,
        probe_interval: Duration,
        labels: Vec<(&'static str, &'static str)>,
        #[cfg(feature = "rustls")] tls: Option<tls::Tls>,
    ) -> Self {
        let targets = servers
            .iter()
            .enumerate()
            .map(|(http, (host, port))| Target {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: port.saturating_add(offset),
                http,
            })
            .collect();
        Remote {
            core: Arc::new(Core {
                auth,
                targets,
                timeout,
                labels,
                state: watch::Sender::new(LinkState::default()),
                link: Mutex::new(None),
                lost: watch::Sender::new(0),
                decided: AtomicU8::new(UNDECIDED),
                found: AtomicBool::new(false),
                #[cfg(feature = "rustls")]
                tls,
                next_request: AtomicU64::new(fastrand::u64(..1 << 40)),
                modules: Mutex::new(Vec::new()),
            }),
            started: AtomicBool::new(false),
            probe_interval,
            next_probe: Mutex::new(None),
            slots: Arc::new(tokio::sync::Semaphore::new(
                tokio::sync::Semaphore::MAX_PERMITS,
            )),
            stop: watch::Sender::new(()),
        }
    }

    /// What the modules share with the connection task.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Adds a module: from the next connection on, it sends its state again first and
    /// takes its server requests.
    pub(crate) fn add(&self, module: Weak<dyn Module>) {
        lock(&self.core.modules).push(module);
    }

    /// Starts the connection task on the current runtime, once.
    pub(crate) fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.core.clone();
        let stop = self.stop.subscribe();
        tokio::spawn(connection_task(shared, stop));
    }

    /// `Some(true)` once the auto mode settled on gRPC, `Some(false)` on HTTP.
    pub(crate) fn decided(&self) -> Option<bool> {
        match self.core.decided.load(Ordering::Acquire) {
            GRPC => Some(true),
            HTTP => Some(false),
            _ => None,
        }
    }

    /// Settles the auto mode on HTTP: the connection task stops trying.
    pub(crate) fn decide_http(&self) {
        if self
            .core
            .decided
            .compare_exchange(UNDECIDED, HTTP, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.stop.send_replace(());
            *lock(&self.next_probe) = Some(tokio::time::Instant::now() + self.probe_interval);
        }
    }

    /// On HTTP in auto mode: once the probe interval passed, tries the gRPC ports again in
    /// the background; once one answered, settles on gRPC and starts the connection.
    /// Returns whether requests go over gRPC now. Cheap when nothing is due (a lock and a
    /// clock read): called before each beat.
    pub(crate) fn probe_again(&self) -> bool {
        if self.core.found.swap(false, Ordering::AcqRel) {
            self.core.decided.store(GRPC, Ordering::Release);
            self.started.store(false, Ordering::Release);
            self.start();
            tracing::info!(servers = ?self.core.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "nacos gRPC port answers now: moving registrations and watches to one gRPC connection");
            return true;
        }
        if self.decided() != Some(false) || self.probe_interval.is_zero() {
            return self.decided() == Some(true);
        }
        let now = tokio::time::Instant::now();
        {
            let mut next = lock(&self.next_probe);
            match *next {
                Some(at) if now < at => return false,
                _ => *next = Some(now + self.probe_interval.mul_f64(0.75 + fastrand::f64() * 0.5)),
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(probe(Arc::downgrade(&self.core)));
        }
        false
    }

    /// On HTTP in auto mode: tries the gRPC ports now rather than at the next probe
    /// interval (something on the connection is waiting: the configuration center, which
    /// has no HTTP path yet). Callers bound how often they ask.
    pub(crate) fn probe_now(&self) {
        if self.decided() == Some(false) {
            *lock(&self.next_probe) = Some(tokio::time::Instant::now());
            self.probe_again();
        }
    }

    /// Starts connecting and waits for a connection, or for the first round of attempts
    /// (every server once) to fail: bounded by one request timeout per server plus the
    /// longest wait between attempts (a refused port fails at once). Once a round failed,
    /// returns the state at once.
    ///
    /// # Errors
    /// Why the round failed.
    pub(crate) async fn connect_round(&self) -> Result<()> {
        self.start();
        let mut rx = self.core.state.subscribe();
        let seen = rx.borrow().rounds_failed;
        // After a failed round, callers do not wait for the next one: HTTP is tried at once
        // (whichever answers first is used from then on).
        if seen > 0 {
            let state = rx.borrow().clone();
            if !state.up {
                return Err(state.error.unwrap_or(Error::Timeout {
                    operation: "gRPC connection",
                    after: self.core.timeout,
                }));
            }
        }
        let bound = self.core.timeout * self.core.targets.len() as u32 + RECONNECT_STEP;
        let wait = rx.wait_for(|s| s.up || s.rounds_failed > seen);
        let state = match tokio::time::timeout(bound, wait).await {
            Ok(Ok(state)) => state.clone(),
            _ => {
                return Err(Error::Timeout {
                    operation: "gRPC connection",
                    after: bound,
                });
            }
        };
        if state.up {
            if self
                .core
                .decided
                .compare_exchange(UNDECIDED, GRPC, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                tracing::info!(server = %self.current_server().unwrap_or_default(),
                    "nacos server speaks gRPC: using one connection for registrations and watches");
            }
            Ok(())
        } else {
            Err(state.error.unwrap_or(Error::Timeout {
                operation: "gRPC connection",
                after: bound,
            }))
        }
    }

    fn current_server(&self) -> Option<String> {
        lock(&self.core.link).as_ref().map(|l| l.target.to_string())
    }

    /// The server of the connection up, or of the last one (`grpc://host:port`).
    pub(crate) fn server(&self) -> Option<Arc<str>> {
        self.core.state.borrow().server.clone()
    }

    /// The connection's state.
    pub(crate) fn state(&self) -> watch::Receiver<LinkState> {
        self.start();
        self.core.state.subscribe()
    }

    /// A request slot that never waits: over the connection requests are not bounded (a
    /// burst of registrations goes out as one batch).
    pub(crate) fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .try_acquire_owned()
            .expect("the gRPC slots never run out")
    }

    /// Waits until the connection is up (and its redo done), up to the request timeout.
    ///
    /// # Errors
    /// No connection within the request timeout.
    pub(crate) async fn ready(&self) -> Result<()> {
        self.start();
        self.core.wait_link().await.map(drop)
    }
}

impl Core {
    pub(crate) fn request_id(&self) -> String {
        self.next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string()
    }

    /// The connection, when one is up (and its redo done).
    pub(crate) fn link(&self) -> Option<Link> {
        lock(&self.link).clone()
    }

    /// The generation of the last connection made (0: none yet).
    pub(crate) fn generation(&self) -> u64 {
        self.state.borrow().generation
    }

    /// The modules still alive.
    fn modules(&self) -> Vec<Arc<dyn Module>> {
        lock(&self.modules)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// The connection, once it is up (and its redo done), waiting up to the request timeout.
    pub(crate) async fn wait_link(&self) -> Result<Link> {
        if let Some(link) = lock(&self.link).clone() {
            return Ok(link);
        }
        let mut rx = self.state.subscribe();
        let up = tokio::time::timeout(self.timeout, rx.wait_for(|s| s.up)).await;
        if let Some(link) = lock(&self.link).clone() {
            return Ok(link);
        }
        let error = self.state.borrow().error.clone();
        drop(up);
        Err(error.unwrap_or(Error::Timeout {
            operation: "gRPC connection",
            after: self.timeout,
        }))
    }

    /// One request on the connection, with the token; a refused token logs in again and
    /// the request goes once more.
    pub(crate) async fn call<T: Serialize>(
        &self,
        kind: &'static str,
        what: &'static str,
        body: &T,
    ) -> Result<(String, Response)> {
        let link = self.wait_link().await?;
        self.call_on(&link, kind, what, body).await
    }

    pub(crate) async fn call_on<T: Serialize>(
        &self,
        link: &Link,
        kind: &'static str,
        what: &'static str,
        body: &T,
    ) -> Result<(String, Response)> {
        let json = serde_json::to_vec(body).map_err(|e| Error::Protocol {
            server: link.target.to_string(),
            body: String::new(),
            source: Arc::new(e),
        })?;
        let token = self.token(link.target.http, None).await?;
        let started = std::time::Instant::now();
        let result = self.unary(link, kind, &json, token.as_deref()).await;
        crate::metrics::request("grpc", what, started.elapsed());
        match result {
            Err(Error::Refused { code: NO_RIGHT, .. }) if token.is_some() => {
                let token = self.token(link.target.http, token.as_deref()).await?;
                self.unary(link, kind, &json, token.as_deref()).await
            }
            other => other,
        }
        .map(|answer| (link.target.to_string(), answer))
    }

    /// The access token: the current one, or a new login when `stale` was refused.
    async fn token(&self, http: usize, stale: Option<&str>) -> Result<Option<String>> {
        let Some(auth) = self.auth.upgrade() else {
            return Ok(None);
        };
        auth.token(http, stale).await
    }

    /// One unary request on `link`; a transport failure or an "unregistered connection"
    /// answer ends the connection (the task reconnects). A timeout fails the request only:
    /// a paused server is waited for by the health checks, which end the connection when
    /// it does not come back.
    async fn unary(
        &self,
        link: &Link,
        kind: &str,
        json: &[u8],
        token: Option<&str>,
    ) -> Result<Response> {
        let mut headers = HashMap::new();
        if let Some(token) = token {
            headers.insert("accessToken".to_owned(), token.to_owned());
        }
        let timeout = self.timeout + size_allowance(json.len());
        let payload = Payload::new(kind, json.to_vec(), headers);
        let server = link.target.to_string();
        let answer = match unary(&link.channel, payload, timeout).await {
            Ok(answer) => answer,
            Err(e) => {
                if ends_connection(&e) {
                    self.lost.send_replace(link.generation);
                }
                return Err(transport(&server, e));
            }
        };
        let response = parse_response(&server, &answer);
        // The refusal is an `Err` (`resultCode` is not 200 on an `ErrorResponse`).
        if matches!(
            response,
            Err(Error::Refused {
                code: UNREGISTERED,
                ..
            })
        ) {
            self.lost.send_replace(link.generation);
        }
        response
    }
}

/// The time a request of `len` bytes gets beyond the request timeout: 3 s per MB. A large
/// batch takes the server time per instance (r-nacos 0.8.8: up to 0.6 ms for each
/// ~300-byte instance of a 10,000-instance service), and a batch that timed out would end
/// the connection and be sent again, whole, by the redo.
fn size_allowance(len: usize) -> Duration {
    Duration::from_micros(3 * len as u64)
}

/// Why [`unary`] failed.
enum CallError {
    Status(tonic::Status),
    TimedOut(Duration),
}

async fn unary(
    channel: &Channel,
    payload: Payload,
    timeout: Duration,
) -> std::result::Result<Payload, CallError> {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.unary(
            tonic::Request::new(payload),
            PathAndQuery::from_static(REQUEST_PATH),
            ProstCodec::<Payload, Payload>::default(),
        )
        .await
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(CallError::Status(status)),
        Err(_) => Err(CallError::TimedOut(timeout)),
    }
}

/// Whether a failed call means the connection is gone: the transport failed (the server
/// closed it, reset it, or cannot be reached). A timeout does not (the server may be
/// paused; the health checks decide), nor does a status the server or the codec gave for
/// this call alone (a message too large, a bad request).
fn ends_connection(e: &CallError) -> bool {
    match e {
        CallError::TimedOut(_) => false,
        CallError::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
    }
}

/// The error of a request that did not get an answer.
fn transport(server: &str, e: CallError) -> Error {
    match e {
        CallError::TimedOut(after) => Error::Transport {
            server: server.to_owned(),
            what: "timed out",
            source: Arc::new(Error::Timeout {
                operation: "gRPC request",
                after,
            }),
        },
        CallError::Status(status) => Error::Transport {
            server: server.to_owned(),
            what: if status.code() == tonic::Code::Unavailable {
                "cannot connect"
            } else {
                "the exchange failed"
            },
            source: Arc::new(GrpcStatus(status)),
        },
    }
}

/// A gRPC status as an error cause: its code and message (tonic's own `Display` adds the
/// metadata, which may echo request headers).
#[derive(Debug)]
struct GrpcStatus(tonic::Status);

impl fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gRPC status {:?}", self.0.code())?;
        if !self.0.message().is_empty() {
            write!(f, ": {}", excerpt(self.0.message()))?;
        }
        Ok(())
    }
}

impl std::error::Error for GrpcStatus {}

/// Reads an answer: its JSON, and a refusal (`resultCode` other than 200) as
/// [`Error::Refused`] with the `errorCode`.
pub(crate) fn parse_response(server: &str, payload: &Payload) -> Result<Response> {
    let json = payload.json();
    let mut response: Response = serde_json::from_slice(json).map_err(|e| Error::Protocol {
        server: server.to_owned(),
        // The configuration center's answers carry the configs' content (secrets too):
        // named, not shown.
        body: if payload.kind().starts_with("Config") {
            format!("a {} of {} bytes", payload.kind(), json.len())
        } else {
            excerpt(&crate::error::redact_token(&String::from_utf8_lossy(
                &json[..json.len().min(512)],
            )))
        },
        source: if payload.kind().starts_with("Config") {
            Arc::new(std::io::Error::other(crate::error::without_values(
                &e.to_string(),
            )))
        } else {
            Arc::new(e)
        },
    })?;
    if response.result_code != SUCCESS || payload.kind() == "ErrorResponse" {
        return Err(Error::Refused {
            server: server.to_owned(),
            code: response.error_code,
            message: excerpt(response.message.as_deref().unwrap_or(payload.kind())),
        });
    }
    response.json = json.to_vec();
    Ok(response)
}

/// The bi-stream's answer, until its headers arrive.
type PendingStream = Pin<
    Box<
        dyn Future<
                Output = std::result::Result<
                    tonic::Response<tonic::Streaming<Payload>>,
                    tonic::Status,
                >,
            > + Send,
    >,
>;

/// The inbound half of the bi-stream: its answer's headers, then its messages.
enum Inbound {
    Pending(PendingStream),
    Open(Box<tonic::Streaming<Payload>>),
}

impl Inbound {
    /// The next server request; `None` when the server closed the stream. Cancel-safe.
    async fn next(&mut self) -> std::result::Result<Option<Payload>, tonic::Status> {
        loop {
            match self {
                Inbound::Pending(answer) => {
                    let answer = answer.as_mut().await?;
                    *self = Inbound::Open(Box::new(answer.into_inner()));
                }
                Inbound::Open(stream) => return stream.message().await,
            }
        }
    }
}

/// A connection that completed its set-up.
struct Connection {
    link: Link,
    inbound: Inbound,
    outbound: mpsc::Sender<Payload>,
    id: String,
}

/// Why a connection ended.
enum End {
    /// Lost: the stream ended or failed, a health check or a request failed.
    Lost(Error),
    /// The server asked for a reconnection, to this server if it named one.
    Reset(Option<Target>),
}

/// Makes a connection to `target` and sets it up.
async fn connect(shared: &Core, target: &Target, generation: u64) -> Result<Connection> {
    let server = target.to_string();
    let refused = |what: &'static str, e: &(dyn std::error::Error + 'static)| Error::Transport {
        server: server.clone(),
        what,
        source: Arc::new(GrpcStatus(tonic::Status::unavailable(Chain(e).to_string()))),
    };
    let uri = if target.host.contains(':') {
        format!("http://[{}]:{}", target.host, target.port)
    } else {
        format!("http://{}:{}", target.host, target.port)
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| refused("invalid address", &e))?
        .tcp_nodelay(true)
        .connect_timeout(shared.timeout);
    let connecting = async {
        #[cfg(feature = "rustls")]
        if let Some(tls) = &shared.tls {
            let connector = tls::Connector { tls: tls.clone() };
            return endpoint.connect_with_connector(connector).await;
        }
        endpoint.connect().await
    };
    let channel = tokio::time::timeout(shared.timeout, connecting)
        .await
        .map_err(|_| Error::Transport {
            server: server.clone(),
            what: "timed out",
            source: Arc::new(Error::Timeout {
                operation: "gRPC connect",
                after: shared.timeout,
            }),
        })?
        .map_err(|e| refused("cannot connect", &e))?;
    let mut link = Link {
        channel,
        target: target.clone(),
        generation,
        abilities: Arc::default(),
    };
    // 1. ServerCheckRequest: the connection's id.
    let id = shared.request_id();
    let json = serde_json::to_vec(&Internal::new(&id)).unwrap_or_default();
    let check = unary(
        &link.channel,
        Payload::new(SERVER_CHECK, json, HashMap::new()),
        shared.timeout,
    )
    .await
    .map_err(|e| transport(&server, e))?;
    let check = parse_response(&server, &check)?;
    let negotiates = check.support_ability_negotiation;
    let connection_id = check.connection_id.unwrap_or_default();
    // 2. The bi-stream, its first message the set-up.
    let (outbound, rx) = mpsc::channel::<Payload>(64);
    let id = shared.request_id();
    let json = serde_json::to_vec(&ConnectionSetup::new(
        &id,
        crate::addr::app_name(),
        &shared.labels,
    ))
    .unwrap_or_default();
    drop(outbound.try_send(Payload::new(CONNECTION_SETUP, json, HashMap::new())));
    let mut grpc = tonic::client::Grpc::new(link.channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let stream = async move {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        grpc.streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static(STREAM_PATH),
            ProstCodec::<Payload, Payload>::default(),
        )
        .await
    };
    let mut inbound = Inbound::Pending(Box::pin(stream));
    // 3. Health checks until the server knows the connection (the Java client sleeps
    //    100 ms instead). A Nacos 2.3+ server sends its abilities meanwhile.
    let deadline = tokio::time::Instant::now() + shared.timeout;
    let set_up_failed = |early: std::result::Result<Option<Payload>, tonic::Status>| {
        let why = match early {
            Ok(Some(p)) => format!("the server sent {} before the set-up ended", p.kind()),
            Ok(None) => "the server closed the stream".to_owned(),
            Err(status) => GrpcStatus(status).to_string(),
        };
        Error::Transport {
            server: server.clone(),
            what: "the set-up failed",
            source: Arc::new(GrpcStatus(tonic::Status::unavailable(why))),
        }
    };
    let mut abilities: Option<HashMap<String, bool>> = None;
    loop {
        let id = shared.request_id();
        let json = serde_json::to_vec(&Internal::new(&id)).unwrap_or_default();
        let answer = tokio::select! {
            answer = unary(&link.channel, Payload::new(HEALTH_CHECK, json, HashMap::new()), shared.timeout) => answer,
            early = inbound.next() => {
                if let Some(table) = setup_ack(&early) {
                    abilities = Some(table);
                    continue;
                }
                return Err(set_up_failed(early));
            }
        };
        let answer = answer.map_err(|e| transport(&server, e))?;
        match parse_response(&server, &answer) {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(SETUP_POLL).await,
        }
    }
    // The abilities come right after the server took the set-up; without them (an older
    // server, or late) the link has none, and the modules do without.
    if negotiates && abilities.is_none() {
        match tokio::time::timeout_at(deadline, inbound.next()).await {
            Ok(early) => match setup_ack(&early) {
                Some(table) => abilities = Some(table),
                None => return Err(set_up_failed(early)),
            },
            Err(_) => tracing::debug!(server = %server,
                "nacos server sent no abilities during the set-up"),
        }
    }
    link.abilities = Arc::new(abilities.unwrap_or_default());
    Ok(Connection {
        link,
        inbound,
        outbound,
        id: connection_id,
    })
}

/// The abilities of a `SetupAckRequest`; `None` when `message` is something else.
fn setup_ack(
    message: &std::result::Result<Option<Payload>, tonic::Status>,
) -> Option<HashMap<String, bool>> {
    match message {
        Ok(Some(payload)) if payload.kind() == SETUP_ACK => {
            let request: ServerRequest = serde_json::from_slice(payload.json()).unwrap_or_default();
            Some(request.ability_table.unwrap_or_default())
        }
        _ => None,
    }
}

/// One try of every gRPC port (auto mode on HTTP): a full set-up, then the connection is
/// closed; one that answers marks gRPC found.
async fn probe(shared: Weak<Core>) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    for target in &shared.targets {
        match connect(&shared, target, 0).await {
            Ok(connection) => {
                drop(connection);
                shared.found.store(true, Ordering::Release);
                tracing::debug!(server = %target, "nacos gRPC port answers now");
                return;
            }
            Err(e) => {
                tracing::debug!(server = %target, error = %Chain(&e),
                    "nacos gRPC port still does not answer: staying on HTTP");
            }
        }
    }
}

/// The connection task: connect, redo, serve, and again when the connection ends.
async fn connection_task(shared: Arc<Core>, mut stop: watch::Receiver<()>) {
    let n = shared.targets.len();
    let mut next = fastrand::usize(..n.max(1));
    let mut failures = 0u32;
    let mut tried_in_round = 0usize;
    let mut reset_to: Option<Target> = None;
    // Going on from an earlier task's connections (auto mode back on gRPC).
    let mut generation = shared.state.borrow().generation;
    let mut outage_logged = false;
    // A connection the server asked to leave, kept until the next attempt is over so that
    // the answer to its `ConnectResetRequest` goes out (dropped at once, the stream is
    // reset and the queued answer lost).
    let mut retiring: Option<Connection> = None;
    loop {
        if shared.decided.load(Ordering::Acquire) == HTTP {
            return;
        }
        let target = match reset_to.take() {
            Some(target) => target,
            None => {
                let target = shared.targets[next % n].clone();
                next += 1;
                target
            }
        };
        let attempt = tokio::select! {
            _ = stop.changed() => return,
            attempt = connect(&shared, &target, generation + 1) => attempt,
        };
        drop(retiring.take());
        match attempt {
            Ok(mut connection) => {
                generation += 1;
                let redone = tokio::select! {
                    _ = stop.changed() => return,
                    redone = redo(&shared, &connection.link) => redone,
                };
                *lock(&shared.link) = Some(connection.link.clone());
                let server: Arc<str> = Arc::from(target.to_string());
                shared.state.send_modify(|s| {
                    s.generation = generation;
                    s.up = true;
                    s.error = None;
                    s.server = Some(server);
                });
                crate::metrics::connection_up(true);
                if outage_logged || failures > 0 {
                    tracing::info!(server = %target, connection_id = %connection.id, failures,
                        registrations = redone.0, subscriptions = redone.1,
                        "nacos gRPC connection up again: registrations and subscriptions sent again");
                } else {
                    tracing::info!(server = %target, connection_id = %connection.id,
                        "nacos gRPC connection up");
                }
                failures = 0;
                tried_in_round = 0;
                outage_logged = false;
                let end = tokio::select! {
                    _ = stop.changed() => return,
                    end = serve(&shared, &mut connection) => end,
                };
                *lock(&shared.link) = None;
                crate::metrics::connection_up(false);
                let error = match end {
                    End::Lost(error) => {
                        tracing::warn!(server = %target, error = %Chain(&error),
                            "nacos gRPC connection lost: reconnecting");
                        outage_logged = true;
                        let server: Arc<str> = Arc::from(target.to_string());
                        for module in shared.modules() {
                            module.on_lost(&server, n > 1);
                        }
                        error
                    }
                    End::Reset(to) => {
                        tracing::info!(server = %target, to = %to.as_ref().map(ToString::to_string).unwrap_or_default(),
                            "nacos server asked for a reconnection");
                        reset_to = to;
                        retiring = Some(connection);
                        Error::Address("the server asked for a reconnection".to_owned())
                    }
                };
                shared.state.send_modify(|s| {
                    s.up = false;
                    s.error = Some(error);
                });
            }
            Err(error) => {
                failures += 1;
                tried_in_round += 1;
                if !outage_logged {
                    tracing::warn!(server = %target, error = %Chain(&error),
                        "nacos gRPC connection failed (retrying; further failures are logged at debug level)");
                    outage_logged = true;
                } else {
                    tracing::debug!(server = %target, failures, error = %Chain(&error),
                        "nacos gRPC connection failed again");
                }
                let round_done = tried_in_round >= n;
                if round_done {
                    tried_in_round = 0;
                }
                shared.state.send_modify(|s| {
                    s.error = Some(error);
                    if round_done {
                        s.rounds_failed += 1;
                    }
                });
                // The next server at once within a round, a wait after a whole round.
                if round_done {
                    let round = failures.div_ceil(u32::try_from(n).unwrap_or(1).max(1));
                    let wait = reconnect_wait(round);
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Has every module send its state again on a new connection; returns the sums of what
/// they sent again and subscribed again.
async fn redo(shared: &Core, link: &Link) -> (usize, usize) {
    let mut redone = (0, 0);
    for module in shared.modules() {
        let (sent, subscribed) = module.redo(link).await;
        redone.0 += sent;
        redone.1 += subscribed;
    }
    redone
}

/// Serves a connection until it ends: server requests, health checks, and requests that
/// saw it fail.
async fn serve(shared: &Core, connection: &mut Connection) -> End {
    let server = connection.link.target.to_string();
    let generation = connection.link.generation;
    let mut lost = shared.lost.subscribe();
    let mut quiet_since = tokio::time::Instant::now();
    let mut failed_checks = 0u32;
    loop {
        tokio::select! {
            message = connection.inbound.next() => {
                quiet_since = tokio::time::Instant::now();
                failed_checks = 0;
                match message {
                    Ok(Some(request)) => {
                        if let Some(end) = on_server_request(shared, &connection.link, &connection.outbound, &request).await {
                            return end;
                        }
                    }
                    Ok(None) => return End::Lost(Error::Transport {
                        server, what: "the server closed the stream",
                        source: Arc::new(GrpcStatus(tonic::Status::unavailable("end of stream"))),
                    }),
                    Err(status) => return End::Lost(Error::Transport {
                        server, what: "the stream failed", source: Arc::new(GrpcStatus(status)),
                    }),
                }
            }
            _ = tokio::time::sleep_until(quiet_since + HEALTH_CHECK_IDLE) => {
                let id = shared.request_id();
                let json = serde_json::to_vec(&Internal::new(&id)).unwrap_or_default();
                let answer = unary(&connection.link.channel,
                    Payload::new(HEALTH_CHECK, json, HashMap::new()), shared.timeout).await;
                let gone = answer.as_ref().err().is_some_and(ends_connection);
                match answer.map_err(|e| transport(&server, e)).and_then(|a| parse_response(&server, &a)) {
                    Ok(_) => {
                        quiet_since = tokio::time::Instant::now();
                        failed_checks = 0;
                    }
                    Err(e) if gone || matches!(e, Error::Refused { code: UNREGISTERED, .. }) => {
                        return End::Lost(e);
                    }
                    Err(e) => {
                        failed_checks += 1;
                        if failed_checks >= HEALTH_CHECK_TRIES {
                            return End::Lost(e);
                        }
                        tracing::info!(server = %server, failed_checks, error = %Chain(&e),
                            "nacos gRPC health check failed: trying again before giving the connection up");
                        // The next check at once (its own timeout paces the tries).
                        let now = tokio::time::Instant::now();
                        quiet_since = now.checked_sub(HEALTH_CHECK_IDLE).unwrap_or(now);
                    }
                }
            }
            changed = lost.changed() => {
                if changed.is_ok() && *lost.borrow_and_update() == generation {
                    let error = shared.state.borrow().error.clone();
                    return End::Lost(error.unwrap_or(Error::Transport {
                        server, what: "a request on the connection failed",
                        source: Arc::new(GrpcStatus(tonic::Status::unavailable("request failed"))),
                    }));
                }
            }
        }
    }
}

/// Answers one server request; `Some` when the connection is to end.
async fn on_server_request(
    shared: &Core,
    link: &Link,
    outbound: &mpsc::Sender<Payload>,
    request: &Payload,
) -> Option<End> {
    let kind = request.kind().to_owned();
    let parsed: std::result::Result<ServerRequest, _> = serde_json::from_slice(request.json());
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(server = %link.target, kind = %kind, error = %e,
                "nacos server sent a request this client cannot read; ignored");
            ServerRequest::default()
        }
    };
    let mut end = None;
    let mut ok = true;
    match kind.as_str() {
        // Sent without waiting for an answer (the Java client gives none).
        SETUP_ACK => return None,
        CLIENT_DETECTION => {}
        CONNECT_RESET => {
            let port = parsed.server_port.as_ref().and_then(|p| match p {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            });
            let to = match (parsed.server_ip.as_deref(), port) {
                (Some(ip), Some(port)) if !ip.is_empty() => {
                    let offset = link
                        .target
                        .port
                        .wrapping_sub(configured_port(shared, &link.target));
                    u16::try_from(port).ok().map(|port| Target {
                        host: ip.to_owned(),
                        port: port.saturating_add(offset),
                        http: link.target.http,
                    })
                }
                _ => None,
            };
            // Only to a server of the configured list: a reset naming another address
            // (a node behind a load balancer, an address the app was not given) moves the
            // connection to the next configured server instead.
            let to = to.and_then(|to| {
                let known = shared
                    .targets
                    .iter()
                    .find(|t| t.host == to.host && t.port == to.port)
                    .cloned();
                if known.is_none() {
                    tracing::info!(server = %link.target, named = %to,
                        "nacos server asked to reconnect to a server not in NACOS_SERVER_ADDR: reconnecting to the next configured one instead");
                }
                known
            });
            end = Some(End::Reset(to));
        }
        other => {
            let taken = shared
                .modules()
                .iter()
                .find_map(|module| module.on_request(other, request.json()));
            match taken {
                Some(understood) => ok = understood,
                None => {
                    tracing::debug!(server = %link.target, kind = other,
                        "nacos server request not handled by this client");
                    ok = false;
                }
            }
        }
    }
    let request_id = parsed.request_id.unwrap_or_default();
    let ack = Ack {
        result_code: if ok { SUCCESS } else { 500 },
        error_code: 0,
        request_id: &request_id,
        success: ok,
    };
    let json = serde_json::to_vec(&ack).unwrap_or_default();
    let answer_kind = if ok {
        answer_type(&kind)
    } else {
        "ErrorResponse".to_owned()
    };
    drop(
        outbound
            .send(Payload::new(&answer_kind, json, HashMap::new()))
            .await,
    );
    end
}

/// The HTTP port of the configured server `target` came from (the offset is the same for
/// every server).
fn configured_port(shared: &Core, target: &Target) -> u16 {
    shared
        .auth
        .upgrade()
        .and_then(|auth| auth.configured_port(target.http))
        .unwrap_or(target.port)
}

#[cfg(test)]
mod ramp_tests {
    use super::*;

    #[test]
    fn the_reconnect_wait_ramps_up_to_5s() {
        for _ in 0..100 {
            let first = reconnect_wait(1);
            assert!(
                first >= Duration::from_millis(50) && first <= RECONNECT_STEP,
                "{first:?}"
            );
            let tenth = reconnect_wait(10);
            assert!(
                tenth >= Duration::from_millis(500) && tenth <= Duration::from_secs(1),
                "{tenth:?}"
            );
            let late = reconnect_wait(500);
            assert!(
                late >= MAX_RECONNECT_WAIT / 2 && late <= MAX_RECONNECT_WAIT,
                "{late:?}"
            );
        }
        // The outage it takes to reach the longest wait: the sum of the waits before it.
        let ramp: Duration = (1..50).map(|n| RECONNECT_STEP * n).sum();
        assert_eq!(ramp, Duration::from_millis(122_500));
    }
}
