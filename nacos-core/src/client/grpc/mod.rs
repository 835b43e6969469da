//! The Nacos 2.x/3.x gRPC transport: one HTTP/2 connection per server set, the way every
//! official client since 2.0 talks to Nacos (the Java client's `RpcClient`/`GrpcClient`).
//!
//! - **One connection is one client.** The server ties the client to its TCP connection:
//!   the bi-stream and the unary calls share one tonic [`Channel`], made anew for every
//!   connection (a channel that reconnected by itself would be a stranger to the server).
//! - **Set-up** (the Java client's order): unary `ServerCheckRequest` (its answer names the
//!   connection), the bi-stream opened with `ConnectionSetupRequest` (labels `source: sdk`,
//!   `module: naming`), then `HealthCheckRequest` until the server knows the connection.
//! - **Alive**: a `HealthCheckRequest` after [`HEALTH_CHECK_IDLE`] without a word from the
//!   server (servers drop a connection silent for 20 s). A server that stops answering
//!   for a while (a JVM pause, a stopped process) is waited for, as the Java client waits:
//!   a failed health check is tried again, and only [`HEALTH_CHECK_TRIES`] failures in a
//!   row end the connection; a request that times out fails that request only. The
//!   connection ends at once when its stream ends or the transport fails (the server is
//!   gone), or when the server says it no longer knows it.
//! - **Message size**: up to [`MAX_MESSAGE_SIZE`] (10 MiB) both ways, as the Java client
//!   and the servers allow (tonic's own default is 4 MiB): a watched service's pushed list
//!   of thousands of instances fits.
//! - **Server requests** on the stream are answered with the same `requestId`:
//!   `NotifySubscriberRequest` (the pushed list of a subscribed service),
//!   `ClientDetectionRequest`, `ConnectResetRequest` (then reconnect, to the server it
//!   names if any) and `SetupAckRequest`.
//! - **Redo**: ephemeral instances live with the connection. After every (re)connection,
//!   before anything else, every live registration is sent again (one request per service:
//!   `InstanceRequest`, or `BatchInstanceRequest` when the process holds several instances
//!   of a service, since a connection otherwise keeps one instance per service) and every
//!   subscription is renewed. Only then do other requests go out.
//! - **Persistent instances** (`ephemeral: false`) are the server's to keep: a
//!   `PersistentInstanceRequest` where the server lists `supportPersistentInstanceByGrpc`
//!   in the abilities it sends after the set-up (`SetupAckRequest`, Nacos 2.3+, asked for by
//!   an `abilityTable` in the set-up), HTTP otherwise, as the Java client decides; no redo.
//! - **Many instances of one service**: the registrations of a burst are gathered into one
//!   `BatchInstanceRequest` (servers take one large batch far faster than many), and a
//!   failed send fails every registration it carried instead of being sent again by each.
//!   How the server takes batches is learnt from its answers: official servers replace the
//!   set and get it whole on every change; r-nacos registers instance by instance and gets
//!   only what changed, and a deregistration by name.
//! - **Failover**: servers are tried in turn from a random one; after the n-th round
//!   that failed (every server tried once) a wait of `min(n × 100 ms, 5 s)`, jittered
//!   down to half (the Java client's ramp: 1 s after about 5 s of outage, 5 s after about
//!   two minutes); the first failure of an outage is logged as a warning, the next ones at
//!   debug level, and the recovery once.
//! - **Auth**: the HTTP login of [`NamingClient`]; the token goes in the `accessToken`
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
use crate::instance::{Instance, InstanceList, ServiceKey};

use super::NamingClient;

mod messages;
mod proto;
#[cfg(feature = "rustls")]
pub(crate) mod tls;

/// Locks `mutex`, taking the data of a poisoned one as it is (the tables hold plain data
/// that a panic cannot leave half-written).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) use messages::ServiceInfo;
use messages::*;
use proto::Payload;

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

/// How long the other nodes of a Nacos cluster keep their copy of a connection's
/// instances after the node holding it died: `nacos.naming.client.expired.time` (180,000 ms
/// by default, `ConnectionBasedClient.isExpire`) plus the 5 s between the server's expiry
/// checks. An app that deregisters within this time of losing a connection (not a reset)
/// logs a warning that the survivors may still list it.
pub const CLUSTER_COPY_EXPIRY: Duration = Duration::from_secs(185);

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

/// A registration after the first of its service waits until no other registration of the
/// service came for this long, so that a burst goes out in one request (the first
/// registration of a service goes at once).
const GATHER_QUIET: Duration = Duration::from_millis(20);
/// The longest a registration waits for a burst to end.
const GATHER_MAX: Duration = Duration::from_secs(1);

/// How often the set-up asks whether the server knows the new connection yet.
const SETUP_POLL: Duration = Duration::from_millis(2);

const REQUEST_PATH: &str = "/Request/request";
const STREAM_PATH: &str = "/BiRequestStream/requestBiStream";

/// A gRPC server: where to connect, and the HTTP server of [`NamingClient`] to log in on.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    host: String,
    port: u16,
    /// Index of the HTTP server (login) in the client's list.
    http: usize,
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
struct Link {
    channel: Channel,
    target: Target,
    generation: u64,
    /// The server said it takes `PersistentInstanceRequest` (its `SetupAckRequest`,
    /// Nacos 2.3+); persistent instances go over HTTP otherwise, as the Java client sends
    /// them.
    persistent_by_grpc: bool,
}

/// Where an instance is: `ip`, `port`, `cluster`.
type InstanceAt = (String, u16, String);

fn at(instance: &Instance) -> InstanceAt {
    (
        instance.ip.clone(),
        instance.port,
        instance.cluster_name.clone(),
    )
}

/// The instances of one service this process holds on the connection.
#[derive(Default)]
struct ServiceSet {
    /// Each instance with the `version` that added or changed it.
    instances: HashMap<InstanceAt, (Arc<Instance>, u64)>,
    /// Bumped on every change of `instances`.
    version: u64,
    /// Held while anything about the set is sent to the server.
    sync: Arc<tokio::sync::Mutex<Synced>>,
    /// Instances out of `instances` that may still be on the server: the next
    /// deregistration to hold the sync lock takes them all off at once.
    gone: Vec<Arc<Instance>>,
    /// The outcome of the last redo for this service.
    redo_error: Option<Error>,
    /// Held while the set exists: its own-service watch ([`watch_own`]) ends when it drops.
    watched: Option<watch::Sender<()>>,
}

/// What the server has of a [`ServiceSet`], as far as this process knows.
#[derive(Default)]
struct Synced {
    /// The last `version` of the set the server took.
    version: u64,
    /// The last send that failed (cleared by the next one that succeeds): registrations
    /// it covered get its error instead of sending the set once each.
    failed: Option<Failed>,
}

struct Failed {
    /// The set's `version` that was sent.
    version: u64,
    /// The connection it was sent on.
    generation: u64,
    error: Error,
}

/// How the server takes a `BatchInstanceRequest`, learnt from its answers on one
/// connection: the `type` of a batch registration's answer (official servers answer
/// `batchRegisterInstance`, r-nacos `registerInstance`), and whether a batch deregistration
/// is taken or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Batches {
    /// Not known yet: whole sets are sent, which every server takes.
    Unknown,
    /// The official servers: `batchRegisterInstance` makes the listed instances the
    /// connection's whole set for the service, and a batch of type `deregisterInstance` is
    /// refused ("Unsupported request type"). A change sends the whole set.
    Replace,
    /// r-nacos: every instance of a batch is registered, or with type `deregisterInstance`
    /// deregistered, on its own, and the others stay. A change sends only what changed.
    PerInstance,
}

/// One subscribed service: the pushed lists and how many watchers share them.
struct Subscription {
    tx: watch::Sender<Option<Arc<ServiceInfo>>>,
    watchers: usize,
}

/// What the auto mode decided: 0 undecided, 1 gRPC, 2 HTTP.
const UNDECIDED: u8 = 0;
const GRPC: u8 = 1;
const HTTP: u8 = 2;

pub(crate) struct Grpc {
    shared: Arc<Shared>,
    started: AtomicBool,
    /// On HTTP in auto mode: how often the gRPC ports are tried again (zero: never).
    probe_interval: Duration,
    /// When the next try is due (set once auto settled on HTTP).
    next_probe: Mutex<Option<tokio::time::Instant>>,
    /// Request slots for [`slot`](Self::slot): as many as a semaphore holds.
    slots: Arc<tokio::sync::Semaphore>,
    /// Dropped with the client: the connection task ends and the connection closes.
    stop: watch::Sender<()>,
}

impl fmt::Debug for Grpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grpc")
            .field("servers", &self.shared.targets)
            .finish_non_exhaustive()
    }
}

struct Shared {
    owner: Weak<NamingClient>,
    targets: Vec<Target>,
    timeout: Duration,
    state: watch::Sender<LinkState>,
    link: Mutex<Option<Link>>,
    /// A caller saw the connection fail: the generation it saw fail.
    lost: watch::Sender<u64>,
    decided: AtomicU8,
    /// A try of the gRPC ports after auto settled on HTTP found one answering.
    found: AtomicBool,
    /// Whether each registered service is watched for instances the server lost
    /// (`NACOS_INSTANCE_CHECK`).
    instance_check: bool,
    /// TLS under the connection (`NACOS_GRPC_TLS`).
    #[cfg(feature = "rustls")]
    tls: Option<tls::Tls>,
    registrations: Mutex<HashMap<ServiceKey, ServiceSet>>,
    /// What the connection of this generation showed of its server's batches.
    batches: Mutex<(u64, Batches)>,
    subscriptions: Mutex<HashMap<ServiceKey, Subscription>>,
    /// One lock per service for its subscribe and unsubscribe requests, so that they reach
    /// the server in the order the table changed (an unsubscribe spawned for a dropped
    /// watch never lands after a new watch's subscribe).
    subscription_locks: Mutex<HashMap<ServiceKey, Arc<tokio::sync::Mutex<()>>>>,
    next_request: AtomicU64,
    /// A connection that held registrations was lost (not closed) with several servers
    /// configured: its server, and when. See [`Grpc::copies_may_remain`].
    orphaned: Mutex<Option<(Arc<str>, tokio::time::Instant)>>,
}

impl Grpc {
    /// A transport for `servers` (host and HTTP port) at `offset` above their ports; nothing
    /// connects before the first request.
    pub(crate) fn new(
        owner: Weak<NamingClient>,
        servers: &[(String, u16)],
        offset: u16,
        timeout: Duration,
        probe_interval: Duration,
        instance_check: bool,
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
        Grpc {
            shared: Arc::new(Shared {
                owner,
                targets,
                timeout,
                state: watch::Sender::new(LinkState::default()),
                link: Mutex::new(None),
                lost: watch::Sender::new(0),
                decided: AtomicU8::new(UNDECIDED),
                found: AtomicBool::new(false),
                instance_check,
                #[cfg(feature = "rustls")]
                tls,
                registrations: Mutex::new(HashMap::new()),
                batches: Mutex::new((0, Batches::Unknown)),
                subscriptions: Mutex::new(HashMap::new()),
                subscription_locks: Mutex::new(HashMap::new()),
                next_request: AtomicU64::new(fastrand::u64(..1 << 40)),
                orphaned: Mutex::new(None),
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

    /// Starts the connection task on the current runtime, once.
    pub(crate) fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.shared.clone();
        let stop = self.stop.subscribe();
        tokio::spawn(connection_task(shared, stop));
    }

    /// `Some(true)` once the auto mode settled on gRPC, `Some(false)` on HTTP.
    pub(crate) fn decided(&self) -> Option<bool> {
        match self.shared.decided.load(Ordering::Acquire) {
            GRPC => Some(true),
            HTTP => Some(false),
            _ => None,
        }
    }

    /// Settles the auto mode on HTTP: the connection task stops trying.
    pub(crate) fn decide_http(&self) {
        if self
            .shared
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
        if self.shared.found.swap(false, Ordering::AcqRel) {
            self.shared.decided.store(GRPC, Ordering::Release);
            self.started.store(false, Ordering::Release);
            self.start();
            tracing::info!(servers = ?self.shared.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
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
            runtime.spawn(probe(Arc::downgrade(&self.shared)));
        }
        false
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
        let mut rx = self.shared.state.subscribe();
        let seen = rx.borrow().rounds_failed;
        // After a failed round, callers do not wait for the next one: HTTP is tried at once
        // (whichever answers first is used from then on).
        if seen > 0 {
            let state = rx.borrow().clone();
            if !state.up {
                return Err(state.error.unwrap_or(Error::Timeout {
                    operation: "gRPC connection",
                    after: self.shared.timeout,
                }));
            }
        }
        let bound = self.shared.timeout * self.shared.targets.len() as u32 + RECONNECT_STEP;
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
                .shared
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
        lock(&self.shared.link)
            .as_ref()
            .map(|l| l.target.to_string())
    }

    /// When a connection that held registrations was lost (its server gone or unreachable,
    /// not a reset) less than [`CLUSTER_COPY_EXPIRY`] ago and several servers are
    /// configured: that server, how long ago, and how much of [`CLUSTER_COPY_EXPIRY`] is
    /// left. If it was a node of a cluster that died,
    /// the other nodes list the instances it held until their copies expire, whatever the
    /// client does (a deregistration reaches the client's current connection only).
    pub(crate) fn copies_may_remain(&self) -> Option<(Arc<str>, Duration, Duration)> {
        let orphaned = lock(&self.shared.orphaned);
        let (server, at) = orphaned.as_ref()?;
        let ago = at.elapsed();
        (ago < CLUSTER_COPY_EXPIRY).then(|| (server.clone(), ago, CLUSTER_COPY_EXPIRY - ago))
    }

    /// The server of the connection up, or of the last one (`grpc://host:port`).
    pub(crate) fn server(&self) -> Option<Arc<str>> {
        self.shared.state.borrow().server.clone()
    }

    /// The connection's state.
    pub(crate) fn state(&self) -> watch::Receiver<LinkState> {
        self.start();
        self.shared.state.subscribe()
    }

    /// A request slot that never waits (see `NamingClient::admit`).
    pub(crate) fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .try_acquire_owned()
            .expect("the gRPC slots never run out")
    }

    /// Registers `instance` on the connection (and in the redo table, which shares it).
    pub(crate) async fn register(&self, key: &ServiceKey, instance: &Arc<Instance>) -> Result<u64> {
        self.start();
        {
            let mut table = lock(&self.shared.registrations);
            let set = table.entry(key.clone()).or_default();
            if set.watched.is_none() && self.shared.instance_check {
                let (held, stop) = watch::channel(());
                set.watched = Some(held);
                tokio::spawn(watch_own(Arc::downgrade(&self.shared), key.clone(), stop));
            }
            set.version += 1;
            let version = set.version;
            set.instances
                .insert(at(instance), (instance.clone(), version));
        }
        self.shared.sync(key, true).await
    }

    /// Deregisters `instance`: out of the redo table, and off the server.
    ///
    /// The last instance of a service goes with an `InstanceRequest` (`deregisterInstance`).
    /// One of several goes in a `BatchInstanceRequest` of type `deregisterInstance` naming
    /// it alone, which r-nacos takes; the official servers refuse that type, and then (and
    /// from then on, on that connection) the rest of the set is sent instead, which replaces
    /// the set there. Either way under the set's sync lock, so that a send of the set that
    /// still holds the instance cannot land after its deregistration.
    pub(crate) async fn deregister(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        let held = {
            let mut table = lock(&self.shared.registrations);
            table.get_mut(key).and_then(|set| {
                let (removed, _) = set.instances.remove(&at(instance))?;
                set.version += 1;
                set.gone.push(removed);
                Some((set.version, set.sync.clone()))
            })
        };
        let Some((version, sync)) = held else {
            // Not one of this connection's: asked for all the same, by name.
            if lock(&self.shared.link).is_none() {
                return Ok(());
            }
            let id = self.shared.request_id();
            let body = InstanceRequest::new(key, "deregisterInstance", instance, &id);
            return self
                .shared
                .call(INSTANCE, "deregister", &body)
                .await
                .map(drop);
        };
        let result = self.deregister_from(key, instance, version, &sync).await;
        // An emptied set leaves the table once its deregistration went out (a registration
        // of the service meanwhile waited for it on the sync lock, and keeps the set).
        let mut table = lock(&self.shared.registrations);
        if table
            .get(key)
            .is_some_and(|set| set.instances.is_empty() && set.version == version)
        {
            table.remove(key);
        }
        result
    }

    /// The server side of [`deregister`](Self::deregister): `version` is the set's version
    /// without `instance`. Whichever deregistration holds the sync lock first takes off
    /// every instance gone by then (a SIGTERM deregisters them all at once).
    async fn deregister_from(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        version: u64,
        sync: &tokio::sync::Mutex<Synced>,
    ) -> Result<()> {
        let mut synced = sync.lock().await;
        let here = at(instance);
        let (gone, left) = {
            let mut table = lock(&self.shared.registrations);
            match table.get_mut(key) {
                Some(set) if set.gone.iter().any(|g| at(g) == here) => {
                    (std::mem::take(&mut set.gone), set.instances.len())
                }
                // An earlier deregistration took it off with its own.
                _ => return Ok(()),
            }
        };
        // Without a connection the server dropped the instances with it, and the next
        // connection's redo sends the set without them.
        let Some(link) = lock(&self.shared.link).clone() else {
            return Ok(());
        };
        let batches = self.shared.batches(&link);
        if left > 0 && batches == Batches::Replace && synced.version >= version {
            // A whole set sent since the removal replaced the set without it.
            return Ok(());
        }
        if left == 0 && (gone.len() == 1 || batches == Batches::Replace) {
            // The last of the service: official servers forget the connection's whole set
            // for the service with it.
            return self.shared.deregister_by_name(&link, key, instance).await;
        }
        if batches != Batches::Replace {
            let id = self.shared.request_id();
            let body = BatchInstanceRequest::new(
                key,
                "deregisterInstance",
                gone.iter().map(|g| g.as_ref().into()).collect(),
                &id,
            );
            match Box::pin(
                self.shared
                    .call_on(&link, BATCH_INSTANCE, "deregister", &body),
            )
            .await
            {
                Ok(_) => {
                    self.shared.learn(&link, Batches::PerInstance);
                    // Nothing added since the last send: the server's set is ours.
                    if let Some(set) = lock(&self.shared.registrations).get(key) {
                        if set.instances.values().all(|(_, v)| *v <= synced.version) {
                            synced.version = set.version;
                        }
                    }
                    return Ok(());
                }
                Err(Error::Refused { code, .. }) if code != UNREGISTERED => {
                    tracing::debug!(server = %link.target,
                        "the server refuses batch deregistrations: the rest of the set replaces the set instead");
                    self.shared.learn(&link, Batches::Replace);
                }
                Err(e) => return Err(e),
            }
        }
        if left == 0 {
            return self.shared.deregister_by_name(&link, key, instance).await;
        }
        Box::pin(self.shared.send_set(&link, key, &mut synced, true))
            .await
            .map(drop)
    }

    /// Waits until the connection is up (and its redo done), up to the request timeout.
    ///
    /// # Errors
    /// No connection within the request timeout.
    pub(crate) async fn ready(&self) -> Result<()> {
        self.start();
        self.shared.wait_link().await.map(drop)
    }

    /// Registers (`register`) or deregisters a persistent instance with a
    /// `PersistentInstanceRequest` when the server takes one over gRPC; `false` when it
    /// does not (the caller goes over HTTP). The server keeps the instance: it is no part
    /// of the connection or of its redo.
    ///
    /// # Errors
    /// No connection within the request timeout, or the request failed or was refused.
    pub(crate) async fn persistent(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        register: bool,
    ) -> Result<bool> {
        self.start();
        let link = self.shared.wait_link().await?;
        if !link.persistent_by_grpc {
            return Ok(false);
        }
        let id = self.shared.request_id();
        let (kind, what) = if register {
            ("registerInstance", "register")
        } else {
            ("deregisterInstance", "deregister")
        };
        let body = InstanceRequest::new(key, kind, instance, &id);
        self.shared
            .call_on(&link, PERSISTENT_INSTANCE, what, &body)
            .await?;
        Ok(true)
    }

    /// The outcome of the last redo of `key`'s registrations.
    pub(crate) fn redo_error(&self, key: &ServiceKey) -> Option<Error> {
        lock(&self.shared.registrations)
            .get(key)
            .and_then(|s| s.redo_error.clone())
    }

    /// Subscribes to `key`: the answer's list first, then every list the server pushes.
    ///
    /// # Errors
    /// The subscription's request failed (the caller retries).
    pub(crate) async fn subscribe(&self, key: &ServiceKey) -> Result<Subscribed> {
        self.start();
        subscribe(&self.shared, key).await
    }

    /// Lists `key`'s instances (`ServiceQueryRequest`).
    pub(crate) async fn query(&self, key: &ServiceKey, healthy_only: bool) -> Result<InstanceList> {
        self.start();
        self.shared.query(key, healthy_only).await
    }
}

/// Subscribes to `key` on `shared`'s connection: the answer's list first, then every list
/// the server pushes.
///
/// # Errors
/// The subscription's request failed (the caller retries).
async fn subscribe(shared: &Arc<Shared>, key: &ServiceKey) -> Result<Subscribed> {
    {
        let (rx, first) = {
            let mut table = lock(&shared.subscriptions);
            match table.get_mut(key) {
                Some(sub) => {
                    sub.watchers += 1;
                    (sub.tx.subscribe(), false)
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    table.insert(key.clone(), Subscription { tx, watchers: 1 });
                    (rx, true)
                }
            }
        };
        let subscribed = Subscribed {
            rx,
            key: key.clone(),
            shared: Arc::downgrade(shared),
        };
        if first {
            // On failure the guard drops and takes the entry with it. The connection
            // first: the lock is never held while waiting for it (its redo takes the lock).
            let link = shared.wait_link().await?;
            let key_lock = shared.subscription_lock(key);
            let _order = key_lock.lock().await;
            // The connection's redo came first and subscribed the entry: done.
            let listed = lock(&shared.subscriptions)
                .get(key)
                .is_some_and(|sub| sub.tx.borrow().is_some());
            if !listed {
                shared.subscribe_on(&link, key, true).await?;
            }
        }
        Ok(subscribed)
    }
}

impl Shared {
    /// Lists `key`'s instances (`ServiceQueryRequest`).
    async fn query(&self, key: &ServiceKey, healthy_only: bool) -> Result<InstanceList> {
        let id = self.request_id();
        let body = QueryRequest {
            namespace: &key.namespace_id,
            service_name: &key.service_name,
            group_name: &key.group_name,
            cluster: "",
            healthy_only,
            udp_port: 0,
            request_id: &id,
            module: "naming",
            headers: Empty {},
        };
        let (_, answer) = self.call(SERVICE_QUERY, "instance_list", &body).await?;
        let info = answer.service_info.unwrap_or_default();
        Ok(InstanceList {
            hosts: info.hosts,
            reach_protection_threshold: info.reach_protection_threshold,
        })
    }

    /// How many of this process's enabled instances of `key` `hosts` lacks, counted only
    /// while the server should have them all: the connection up and every change of the
    /// set sent and taken (0 otherwise: a send in flight or failed is seen to by its
    /// sender or the redo).
    fn lost(&self, key: &ServiceKey, hosts: &[Instance]) -> usize {
        if lock(&self.link).is_none() {
            return 0;
        }
        let table = lock(&self.registrations);
        let Some(set) = table.get(key) else {
            return 0;
        };
        let Ok(synced) = set.sync.try_lock() else {
            return 0;
        };
        if synced.version < set.version || synced.failed.is_some() {
            return 0;
        }
        let listed: std::collections::HashSet<(&str, u16, &str)> = hosts
            .iter()
            .map(|h| (h.ip.as_str(), h.port, h.cluster_name.as_str()))
            .collect();
        set.instances
            .values()
            .filter(|(i, _)| i.enabled)
            .filter(|(i, _)| !listed.contains(&(i.ip.as_str(), i.port, i.cluster_name.as_str())))
            .count()
    }

    /// How many instances of `key` this process holds.
    fn own(&self, key: &ServiceKey) -> usize {
        lock(&self.registrations)
            .get(key)
            .map_or(0, |set| set.instances.len())
    }

    /// Sends `key`'s whole set again on the current connection.
    async fn send_again(&self, key: &ServiceKey) -> Result<usize> {
        let link = self.wait_link().await?;
        let sync = match lock(&self.registrations).get(key) {
            Some(set) => set.sync.clone(),
            None => return Ok(0),
        };
        let mut synced = sync.lock().await;
        self.send_set(&link, key, &mut synced, true).await
    }
}

/// A subscription to a service's pushed lists; dropping the last one of a service
/// unsubscribes.
pub(crate) struct Subscribed {
    pub(crate) rx: watch::Receiver<Option<Arc<ServiceInfo>>>,
    key: ServiceKey,
    shared: Weak<Shared>,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let last = {
            let mut table = lock(&shared.subscriptions);
            match table.get_mut(&self.key) {
                Some(sub) if sub.watchers > 1 => {
                    sub.watchers -= 1;
                    false
                }
                Some(_) => {
                    table.remove(&self.key);
                    true
                }
                None => false,
            }
        };
        if last {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let key = self.key.clone();
                runtime.spawn(async move {
                    // The connection first: the lock is never held while waiting for it
                    // (its redo takes the lock).
                    let Ok(link) = shared.wait_link().await else {
                        return;
                    };
                    let key_lock = shared.subscription_lock(&key);
                    let _order = key_lock.lock().await;
                    // Not when a new watcher subscribed again meanwhile.
                    if !lock(&shared.subscriptions).contains_key(&key) {
                        drop(shared.subscribe_on(&link, &key, false).await);
                    }
                });
            }
        }
    }
}

impl Shared {
    /// Deregisters `instance` with an `InstanceRequest` (official servers drop the
    /// connection's whole set for the service with it).
    async fn deregister_by_name(
        &self,
        link: &Link,
        key: &ServiceKey,
        instance: &Instance,
    ) -> Result<()> {
        let id = self.request_id();
        let body = InstanceRequest::new(key, "deregisterInstance", instance, &id);
        self.call_on(link, INSTANCE, "deregister", &body)
            .await
            .map(drop)
    }

    fn request_id(&self) -> String {
        self.next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string()
    }

    /// Sends `key`'s set of instances unless a newer send already covered this version;
    /// returns the connection's generation.
    ///
    /// Registrations of one service share the set's sync lock: the one holding it sends
    /// every instance added so far, and those waiting behind it find their instance sent
    /// (or the send that held it failed: they get its error and retry on their own
    /// schedule, rather than each sending the set again).
    async fn sync(&self, key: &ServiceKey, gather: bool) -> Result<u64> {
        loop {
            self.wait_link().await?;
            let (version, sync) = {
                let table = lock(&self.registrations);
                match table.get(key) {
                    Some(set) => (set.version, set.sync.clone()),
                    None => return Ok(self.state.borrow().generation),
                }
            };
            let mut synced = sync.lock().await;
            // The connection as it is now: the one waited for may have ended meanwhile
            // (and a new one's redo sent the set).
            let Some(link) = lock(&self.link).clone() else {
                continue;
            };
            if synced.version >= version {
                return Ok(link.generation);
            }
            if let Some(failed) = &synced.failed {
                if failed.version >= version && failed.generation == link.generation {
                    return Err(failed.error.clone());
                }
            }
            if gather && synced.version > 0 {
                // A registration after the first send: gather the rest of a burst (a
                // sidecar registering its backends) into one request. Servers take one
                // large batch much faster than several (r-nacos 0.8.8: 10,000 instances in
                // one batch in 0.7 s, in batches of 1, 5,326 and 4,674 in 4.4 s).
                let deadline = tokio::time::Instant::now() + GATHER_MAX;
                let mut seen = version;
                loop {
                    tokio::time::sleep(GATHER_QUIET).await;
                    let now = lock(&self.registrations)
                        .get(key)
                        .map_or(seen, |s| s.version);
                    if now == seen || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    seen = now;
                }
            }
            let whole = self.batches(&link) != Batches::PerInstance;
            // Boxed: every registration of a burst waits in this function, and the request
            // is sent by one of them at a time.
            let sent = Box::pin(self.send_set(&link, key, &mut synced, whole)).await;
            return sent.map(|_| link.generation);
        }
    }

    /// What the connection `link` showed of its server's batches.
    fn batches(&self, link: &Link) -> Batches {
        let (generation, batches) = *lock(&self.batches);
        if generation == link.generation {
            batches
        } else {
            Batches::Unknown
        }
    }

    fn learn(&self, link: &Link, batches: Batches) {
        *lock(&self.batches) = (link.generation, batches);
    }

    /// Sends `key`'s set on `link` (the caller holds its sync lock, `synced`): the whole
    /// set when `whole` (one `InstanceRequest` for a single instance, else a
    /// `BatchInstanceRequest`), else the instances added or changed since the last
    /// accepted send, in a `BatchInstanceRequest` (for [`Batches::PerInstance`] servers).
    /// Returns how many instances were sent.
    async fn send_set(
        &self,
        link: &Link,
        key: &ServiceKey,
        synced: &mut Synced,
        whole: bool,
    ) -> Result<usize> {
        let (version, instances) = {
            let table = lock(&self.registrations);
            let Some(set) = table.get(key) else {
                return Ok(0);
            };
            let since = if whole { 0 } else { synced.version };
            let changed = set
                .instances
                .values()
                .filter(|(_, changed)| *changed > since)
                .map(|(instance, _)| instance.clone())
                .collect::<Vec<_>>();
            (set.version, changed)
        };
        let id = self.request_id();
        let result = match instances.as_slice() {
            [] => Ok(()),
            [one] if whole => {
                let body = InstanceRequest::new(key, "registerInstance", one, &id);
                self.call_on(link, INSTANCE, "register", &body)
                    .await
                    .map(drop)
            }
            many => {
                let body = BatchInstanceRequest::new(
                    key,
                    "batchRegisterInstance",
                    many.iter().map(|i| i.as_ref().into()).collect(),
                    &id,
                );
                let answer = self.call_on(link, BATCH_INSTANCE, "register", &body).await;
                if let Ok((_, answer)) = &answer {
                    match answer.r#type.as_deref() {
                        Some("batchRegisterInstance") => self.learn(link, Batches::Replace),
                        Some("registerInstance") if self.batches(link) == Batches::Unknown => {
                            self.learn(link, Batches::PerInstance);
                        }
                        _ => {}
                    }
                }
                answer.map(drop)
            }
        };
        match &result {
            Ok(()) => {
                synced.version = version;
                synced.failed = None;
            }
            Err(error) => {
                synced.failed = Some(Failed {
                    version,
                    generation: link.generation,
                    error: error.clone(),
                });
            }
        }
        result.map(|()| instances.len())
    }

    /// The lock ordering `key`'s subscribe and unsubscribe requests.
    fn subscription_lock(&self, key: &ServiceKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.subscription_locks);
        locks.retain(|k, l| Arc::strong_count(l) > 1 || k == key);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Subscribes to (or unsubscribes from) `key` on `link`; a subscription's answer is
    /// handed to its watchers.
    async fn subscribe_on(&self, link: &Link, key: &ServiceKey, subscribe: bool) -> Result<()> {
        let id = self.request_id();
        let body = SubscribeRequest {
            namespace: &key.namespace_id,
            service_name: &key.service_name,
            group_name: &key.group_name,
            subscribe,
            clusters: "",
            request_id: &id,
            module: "naming",
            headers: Empty {},
        };
        let what = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        let (_, answer) = self.call_on(link, SUBSCRIBE, what, &body).await?;
        if subscribe {
            // A service nobody registered is an answer too: an empty list.
            self.deliver(key, answer.service_info.unwrap_or_default());
        }
        Ok(())
    }

    /// Hands a list to `key`'s watchers.
    fn deliver(&self, key: &ServiceKey, info: ServiceInfo) {
        if let Some(sub) = lock(&self.subscriptions).get(key) {
            sub.tx.send_replace(Some(Arc::new(info)));
        }
    }

    /// The connection, once it is up (and its redo done), waiting up to the request timeout.
    async fn wait_link(&self) -> Result<Link> {
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
    async fn call<T: Serialize>(
        &self,
        kind: &'static str,
        what: &'static str,
        body: &T,
    ) -> Result<(String, Response)> {
        let link = self.wait_link().await?;
        self.call_on(&link, kind, what, body).await
    }

    async fn call_on<T: Serialize>(
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
        let Some(owner) = self.owner.upgrade() else {
            return Ok(None);
        };
        owner.grpc_token(http, stale).await
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
fn parse_response(server: &str, payload: &Payload) -> Result<Response> {
    let json = payload.json();
    let response: Response = serde_json::from_slice(json).map_err(|e| Error::Protocol {
        server: server.to_owned(),
        body: excerpt(&crate::client::auth::redact_token(
            &String::from_utf8_lossy(&json[..json.len().min(512)]),
        )),
        source: Arc::new(e),
    })?;
    if response.result_code != SUCCESS || payload.kind() == "ErrorResponse" {
        return Err(Error::Refused {
            server: server.to_owned(),
            code: response.error_code,
            message: excerpt(response.message.as_deref().unwrap_or(payload.kind())),
        });
    }
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
async fn connect(shared: &Shared, target: &Target, generation: u64) -> Result<Connection> {
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
        persistent_by_grpc: false,
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
    let json =
        serde_json::to_vec(&ConnectionSetup::new(&id, crate::addr::app_name())).unwrap_or_default();
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
    // server, or late) persistent instances go over HTTP.
    if negotiates && abilities.is_none() {
        match tokio::time::timeout_at(deadline, inbound.next()).await {
            Ok(early) => match setup_ack(&early) {
                Some(table) => abilities = Some(table),
                None => return Err(set_up_failed(early)),
            },
            Err(_) => tracing::debug!(server = %server,
                "nacos server sent no abilities during the set-up: persistent instances go over HTTP"),
        }
    }
    link.persistent_by_grpc = abilities
        .as_ref()
        .and_then(|table| table.get(PERSISTENT_BY_GRPC).copied())
        .unwrap_or(false);
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

/// The most instances of other processes a service may list for this process to keep
/// watching it for lost instances of its own: every change of a watched service pushes its
/// whole list to every watching process, so a fleet of thousands of instances of one
/// service, each watching it, would cost the servers a list per instance per change.
pub const INSTANCE_CHECK_MAX_OTHERS: usize = 1_000;

/// How long a pushed list that lacks some of this process's instances is given before the
/// server is asked again: a list computed before a registration landed may arrive after
/// its answer.
const LOST_CONFIRM: Duration = Duration::from_secs(1);

/// Watches `key`, a service this process registers instances of, until `stop`'s sender
/// (held by the service's set) drops: when the server's list lacks some of them while it
/// should have them all (an operator deleted one, a server lost it), and a query a moment
/// later confirms it, the set is sent again. If they are still not listed after that (an
/// instance disabled in the console is left out of the lists), it is logged once and left
/// as it is until they are listed again. Subscribing shares the service's subscription
/// with the app's own watches of it. A service listing more than
/// [`INSTANCE_CHECK_MAX_OTHERS`] instances of other processes is not watched (logged once).
async fn watch_own(shared: Weak<Shared>, key: ServiceKey, mut stop: watch::Receiver<()>) {
    let mut wait = SUBSCRIBE_RETRY_FIRST;
    let mut subscription = loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let subscribed = tokio::select! {
            _ = stop.changed() => return,
            subscribed = subscribe(&strong, &key) => subscribed,
        };
        drop(strong);
        match subscribed {
            Ok(subscription) => break subscription,
            Err(e) => {
                tracing::debug!(service = %key.service_name, error = %Chain(&e),
                    "nacos subscription to this process's own service failed: trying again");
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(wait.mul_f64(0.5 + fastrand::f64() * 0.5)) => {}
                }
                wait = (wait * 2).min(SUBSCRIBE_RETRY_MAX);
            }
        }
    };
    // Whether the set was sent again for the current absence; and whether the watch
    // stopped acting on it, until the instances are listed again.
    let mut sent_again = false;
    let mut resting = false;
    loop {
        let Some(info) = subscription.rx.borrow_and_update().clone() else {
            tokio::select! {
                _ = stop.changed() => return,
                changed = subscription.rx.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let others = info.hosts.len().saturating_sub(strong.own(&key));
        if others > INSTANCE_CHECK_MAX_OTHERS {
            tracing::info!(service = %key.service_name, others, max = INSTANCE_CHECK_MAX_OTHERS,
                "nacos service lists too many instances of other processes to watch it for lost instances of this one (each change would push the whole list to every instance): not watched");
            return;
        }
        let lost = strong.lost(&key, &info.hosts);
        drop(strong);
        if lost == 0 {
            if resting {
                tracing::info!(service = %key.service_name,
                    "nacos lists this process's instances again");
            }
            sent_again = false;
            resting = false;
        } else if !resting {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(LOST_CONFIRM) => {}
            }
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let lost = match strong.query(&key, false).await {
                Ok(list) => strong.lost(&key, &list.hosts),
                Err(_) => 0,
            };
            if lost > 0 && sent_again {
                tracing::info!(service = %key.service_name, lost,
                    "nacos still does not list some of this process's instances after they were registered again (disabled in the console?): leaving them as they are until they are listed again");
                resting = true;
            } else if lost > 0 {
                tracing::warn!(service = %key.service_name, lost,
                    "nacos no longer lists some of this process's instances (deleted by an operator, or lost by the server): registering them again");
                match strong.send_again(&key).await {
                    Ok(sent) => {
                        for _ in 0..sent {
                            crate::metrics::reregistration("lost");
                        }
                    }
                    Err(e) => tracing::warn!(service = %key.service_name, error = %Chain(&e),
                        "nacos registration of lost instances failed; trying again at the next list"),
                }
                sent_again = true;
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = subscription.rx.changed() => if changed.is_err() { return },
        }
    }
}

/// One try of every gRPC port (auto mode on HTTP): a full set-up, then the connection is
/// closed; one that answers marks gRPC found.
async fn probe(shared: Weak<Shared>) {
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
async fn connection_task(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
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
                        if n > 1 && !lock(&shared.registrations).is_empty() {
                            *lock(&shared.orphaned) =
                                Some((Arc::from(target.to_string()), tokio::time::Instant::now()));
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

/// Sends every registration and subscription again on a new connection; returns how
/// many services of each were sent.
async fn redo(shared: &Arc<Shared>, link: &Link) -> (usize, usize) {
    let services: Vec<(ServiceKey, Arc<tokio::sync::Mutex<Synced>>)> = lock(&shared.registrations)
        .iter()
        .map(|(k, s)| (k.clone(), s.sync.clone()))
        .collect();
    let mut registered = 0;
    for (key, sync) in &services {
        let mut synced = sync.lock().await;
        let result = shared.send_set(link, key, &mut synced, true).await;
        match &result {
            Ok(sent) => {
                registered += 1;
                for _ in 0..*sent {
                    crate::metrics::reregistration("reconnect");
                }
            }
            Err(e) => {
                tracing::warn!(service = %key.service_name, error = %Chain(e),
                    "nacos registration on the new connection failed");
            }
        }
        if let Some(set) = lock(&shared.registrations).get_mut(key) {
            set.redo_error = result.err();
        }
    }
    let subscriptions: Vec<ServiceKey> = lock(&shared.subscriptions).keys().cloned().collect();
    let mut subscribed = 0;
    for key in subscriptions {
        let key_lock = shared.subscription_lock(&key);
        let order = key_lock.lock().await;
        if !lock(&shared.subscriptions).contains_key(&key) {
            continue;
        }
        match shared.subscribe_on(link, &key, true).await {
            Ok(()) => subscribed += 1,
            Err(e) => {
                tracing::warn!(service = %key.service_name, error = %Chain(&e),
                    "nacos subscription on the new connection failed: trying again");
                drop(order);
                tokio::spawn(retry_subscription(
                    Arc::downgrade(shared),
                    key,
                    link.clone(),
                ));
            }
        }
    }
    (registered, subscribed)
}

/// The first wait before a subscription that failed on a connection is sent again; it
/// doubles up to [`SUBSCRIBE_RETRY_MAX`].
const SUBSCRIBE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a failed subscription.
const SUBSCRIBE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Sends `key`'s subscription on `link` again, with a growing wait, until it holds, the
/// service is no longer watched, or the connection is replaced (whose redo subscribes it).
async fn retry_subscription(shared: Weak<Shared>, key: ServiceKey, link: Link) {
    let mut wait = SUBSCRIBE_RETRY_FIRST;
    for attempt in 1u32.. {
        tokio::time::sleep(wait.mul_f64(0.5 + fastrand::f64() * 0.5)).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let current = lock(&shared.link).as_ref().map(|l| l.generation);
        match current {
            Some(generation) if generation == link.generation => {}
            // Another connection: its redo subscribes.
            Some(_) => return,
            // The redo of this connection still runs: wait; this connection lost: the
            // next one's redo subscribes.
            None if shared.state.borrow().generation < link.generation => {
                wait = wait.min(SUBSCRIBE_RETRY_FIRST);
                continue;
            }
            None => return,
        }
        let key_lock = shared.subscription_lock(&key);
        let _order = key_lock.lock().await;
        if !lock(&shared.subscriptions).contains_key(&key) {
            return;
        }
        match shared.subscribe_on(&link, &key, true).await {
            Ok(()) => {
                tracing::info!(service = %key.service_name, attempt,
                    "nacos subscription holds again");
                return;
            }
            Err(e) => {
                tracing::debug!(service = %key.service_name, attempt, error = %Chain(&e),
                    "nacos subscription failed again");
            }
        }
        wait = (wait * 2).min(SUBSCRIBE_RETRY_MAX);
    }
}

/// Serves a connection until it ends: server requests, health checks, and requests that
/// saw it fail.
async fn serve(shared: &Shared, connection: &mut Connection) -> End {
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
    shared: &Shared,
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
        NOTIFY_SUBSCRIBER => match &parsed.service_info {
            Some(info) => {
                let namespace = parsed.namespace.as_deref();
                let matched = {
                    let table = lock(&shared.subscriptions);
                    table
                        .iter()
                        .filter(|(key, _)| {
                            info.key(&key.namespace_id).is_some_and(|k| k == **key)
                                && namespace.is_none_or(|ns| ns == key.namespace_id)
                        })
                        .map(|(key, _)| key.clone())
                        .collect::<Vec<_>>()
                };
                for key in matched {
                    shared.deliver(&key, info.clone());
                }
            }
            None => ok = false,
        },
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
            tracing::debug!(server = %link.target, kind = other,
                "nacos server request not handled by this client");
            ok = false;
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
fn configured_port(shared: &Shared, target: &Target) -> u16 {
    shared
        .owner
        .upgrade()
        .and_then(|owner| owner.servers().get(target.http).map(|s| s.port()))
        .unwrap_or(target.port)
}

#[cfg(test)]
mod tests;

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
