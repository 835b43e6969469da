//! Naming over the gRPC connection ([`crate::remote`]): registrations, their redo,
//! subscriptions and the lists the server pushes, the Java client's
//! `NamingGrpcClientProxy`. The connection is labelled `module: naming`, which makes the
//! server keep a naming client for it.
//!
//! - **Redo**: ephemeral instances live with the connection. After every (re)connection,
//!   before anything else, every live registration is sent again (one request per service:
//!   `InstanceRequest`, or `BatchInstanceRequest` when the process holds several instances
//!   of a service, since a connection otherwise keeps one instance per service) and every
//!   subscription is renewed.
//! - **Pushes**: `NotifySubscriberRequest` carries a subscribed service's list; it reaches
//!   the watches of that service in that namespace.
//! - **Persistent instances** (`ephemeral: false`) are the server's to keep: a
//!   `PersistentInstanceRequest` where the server lists `supportPersistentInstanceByGrpc`
//!   in the abilities it sends after the set-up (Nacos 2.3+), HTTP otherwise, as the Java
//!   client decides; no redo.
//! - **Many instances of one service**: the registrations of a burst are gathered into one
//!   `BatchInstanceRequest` (servers take one large batch far faster than many), and a
//!   failed send fails every registration it carried instead of being sent again by each.
//!   How the server takes batches is learnt from its answers: official servers replace the
//!   set and get it whole on every change; r-nacos registers instance by instance and gets
//!   only what changed, and a deregistration by name.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Chain, Error, Result};
use crate::instance::{Instance, InstanceList, ServiceKey};
use crate::remote::messages::{Empty, UNREGISTERED};
use crate::remote::{BoxFuture, Core, Link, LinkState, Module, Remote, lock};

use super::NamingClient;

mod messages;

#[cfg(test)]
use crate::remote::{HEALTH_CHECK_TRIES, MAX_MESSAGE_SIZE};
pub(crate) use messages::ServiceInfo;
use messages::*;

/// How long the other nodes of a Nacos cluster keep their copy of a connection's
/// instances after the node holding it died: `nacos.naming.client.expired.time` (180,000 ms
/// by default, `ConnectionBasedClient.isExpire`) plus the 5 s between the server's expiry
/// checks. An app that deregisters within this time of losing a connection (not a reset)
/// logs a warning that the survivors may still list it.
pub const CLUSTER_COPY_EXPIRY: Duration = Duration::from_secs(185);

/// A registration after the first of its service waits until no other registration of the
/// service came for this long, so that a burst goes out in one request (the first
/// registration of a service goes at once).
const GATHER_QUIET: Duration = Duration::from_millis(20);

/// The longest a registration waits for a burst to end.
const GATHER_MAX: Duration = Duration::from_secs(1);

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

/// Naming over gRPC: the connection, and what naming keeps on it.
pub(crate) struct Grpc {
    remote: Remote,
    shared: Arc<Shared>,
}

impl fmt::Debug for Grpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grpc")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// What naming keeps on the connection, shared with its tasks.
struct Shared {
    remote: Arc<Core>,
    /// Itself, for the tasks it spawns.
    me: Weak<Shared>,
    /// Whether each registered service is watched for instances the server lost
    /// (`NACOS_INSTANCE_CHECK`).
    instance_check: bool,
    registrations: Mutex<HashMap<ServiceKey, ServiceSet>>,
    /// What the connection of this generation showed of its server's batches.
    batches: Mutex<(u64, Batches)>,
    subscriptions: Mutex<HashMap<ServiceKey, Subscription>>,
    /// One lock per service for its subscribe and unsubscribe requests, so that they reach
    /// the server in the order the table changed (an unsubscribe spawned for a dropped
    /// watch never lands after a new watch's subscribe).
    subscription_locks: Mutex<HashMap<ServiceKey, Arc<tokio::sync::Mutex<()>>>>,
    /// A connection that held registrations was lost (not closed) with several servers
    /// configured: its server, and when. See [`Grpc::copies_may_remain`].
    orphaned: Mutex<Option<(Arc<str>, tokio::time::Instant)>>,
}

impl Grpc {
    /// Naming over a connection to `servers` (host and HTTP port) at `offset` above their
    /// ports; nothing connects before the first request.
    pub(crate) fn new(
        owner: Weak<NamingClient>,
        servers: &[(String, u16)],
        offset: u16,
        timeout: Duration,
        probe_interval: Duration,
        instance_check: bool,
        #[cfg(feature = "rustls")] tls: Option<crate::remote::tls::Tls>,
    ) -> Self {
        let auth: Weak<dyn crate::remote::Auth> = owner;
        let remote = Remote::new(
            auth,
            servers,
            offset,
            timeout,
            probe_interval,
            vec![("module", "naming")],
            #[cfg(feature = "rustls")]
            tls,
        );
        let shared = Arc::new_cyclic(|me| Shared {
            remote: remote.core().clone(),
            me: me.clone(),
            instance_check,
            registrations: Mutex::new(HashMap::new()),
            batches: Mutex::new((0, Batches::Unknown)),
            subscriptions: Mutex::new(HashMap::new()),
            subscription_locks: Mutex::new(HashMap::new()),
            orphaned: Mutex::new(None),
        });
        let module: Weak<dyn Module> = Arc::downgrade(&shared) as Weak<dyn Module>;
        remote.add(module);
        Grpc { remote, shared }
    }

    /// Starts the connection task on the current runtime, once.
    pub(crate) fn start(&self) {
        self.remote.start();
    }

    /// The connection, for the other modules on it (the configuration center).
    pub(crate) fn remote(&self) -> &Remote {
        &self.remote
    }

    /// `Some(true)` once the auto mode settled on gRPC, `Some(false)` on HTTP.
    pub(crate) fn decided(&self) -> Option<bool> {
        self.remote.decided()
    }

    /// Settles the auto mode on HTTP: the connection task stops trying.
    pub(crate) fn decide_http(&self) {
        self.remote.decide_http();
    }

    /// See [`Remote::probe_again`].
    pub(crate) fn probe_again(&self) -> bool {
        self.remote.probe_again()
    }

    /// See [`Remote::connect_round`].
    ///
    /// # Errors
    /// Why the round failed.
    pub(crate) async fn connect_round(&self) -> Result<()> {
        self.remote.connect_round().await
    }

    /// The server of the connection up, or of the last one (`grpc://host:port`).
    pub(crate) fn server(&self) -> Option<Arc<str>> {
        self.remote.server()
    }

    /// The connection's state.
    pub(crate) fn state(&self) -> watch::Receiver<LinkState> {
        self.remote.state()
    }

    /// A request slot that never waits (see `NamingClient::admit`).
    pub(crate) fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.remote.slot()
    }

    /// Waits until the connection is up (and its redo done), up to the request timeout.
    ///
    /// # Errors
    /// No connection within the request timeout.
    pub(crate) async fn ready(&self) -> Result<()> {
        self.remote.ready().await
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
            if self.shared.remote.link().is_none() {
                return Ok(());
            }
            let id = self.shared.remote.request_id();
            let body = InstanceRequest::new(key, "deregisterInstance", instance, &id);
            return self
                .shared
                .remote
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
        let Some(link) = self.shared.remote.link() else {
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
            let id = self.shared.remote.request_id();
            let body = BatchInstanceRequest::new(
                key,
                "deregisterInstance",
                gone.iter().map(|g| g.as_ref().into()).collect(),
                &id,
            );
            match Box::pin(
                self.shared
                    .remote
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
        let link = self.shared.remote.wait_link().await?;
        if !link.can(PERSISTENT_BY_GRPC) {
            return Ok(false);
        }
        let id = self.shared.remote.request_id();
        let (kind, what) = if register {
            ("registerInstance", "register")
        } else {
            ("deregisterInstance", "deregister")
        };
        let body = InstanceRequest::new(key, kind, instance, &id);
        self.shared
            .remote
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

impl Module for Shared {
    fn redo<'a>(&'a self, link: &'a Link) -> BoxFuture<'a, (usize, usize)> {
        Box::pin(redo(self, link))
    }

    fn on_request(&self, kind: &str, json: &[u8]) -> Option<bool> {
        if kind != NOTIFY_SUBSCRIBER {
            return None;
        }
        let parsed: NotifySubscriber = match serde_json::from_slice(json) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(kind, error = %e,
                    "nacos server sent a push this client cannot read; ignored");
                return Some(false);
            }
        };
        let Some(info) = parsed.service_info else {
            return Some(false);
        };
        let namespace = parsed.namespace.as_deref();
        let matched = {
            let table = lock(&self.subscriptions);
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
            self.deliver(&key, info.clone());
        }
        Some(true)
    }

    fn on_lost(&self, server: &Arc<str>, several: bool) {
        if several && !lock(&self.registrations).is_empty() {
            *lock(&self.orphaned) = Some((server.clone(), tokio::time::Instant::now()));
        }
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
            let link = shared.remote.wait_link().await?;
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
        let id = self.remote.request_id();
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
        let (server, answer) = self
            .remote
            .call(SERVICE_QUERY, "instance_list", &body)
            .await?;
        let answer: NamingAnswer = answer.body(&server)?;
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
        if self.remote.link().is_none() {
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
        let link = self.remote.wait_link().await?;
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
                    let Ok(link) = shared.remote.wait_link().await else {
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
        let id = self.remote.request_id();
        let body = InstanceRequest::new(key, "deregisterInstance", instance, &id);
        self.remote
            .call_on(link, INSTANCE, "deregister", &body)
            .await
            .map(drop)
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
            self.remote.wait_link().await?;
            let (version, sync) = {
                let table = lock(&self.registrations);
                match table.get(key) {
                    Some(set) => (set.version, set.sync.clone()),
                    None => return Ok(self.remote.generation()),
                }
            };
            let mut synced = sync.lock().await;
            // The connection as it is now: the one waited for may have ended meanwhile
            // (and a new one's redo sent the set).
            let Some(link) = self.remote.link() else {
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
        let id = self.remote.request_id();
        let result = match instances.as_slice() {
            [] => Ok(()),
            [one] if whole => {
                let body = InstanceRequest::new(key, "registerInstance", one, &id);
                self.remote
                    .call_on(link, INSTANCE, "register", &body)
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
                let answer = self
                    .remote
                    .call_on(link, BATCH_INSTANCE, "register", &body)
                    .await;
                let kind = answer.as_ref().ok().and_then(|(server, answer)| {
                    answer
                        .body::<NamingAnswer>(server)
                        .ok()
                        .and_then(|a| a.r#type)
                });
                if answer.is_ok() {
                    match kind.as_deref() {
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
        let id = self.remote.request_id();
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
        let (server, answer) = self.remote.call_on(link, SUBSCRIBE, what, &body).await?;
        let answer: NamingAnswer = answer.body(&server)?;
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

/// Sends every registration and subscription again on a new connection; returns how
/// many services of each were sent.
async fn redo(shared: &Shared, link: &Link) -> (usize, usize) {
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
                tokio::spawn(retry_subscription(shared.me.clone(), key, link.clone()));
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
        let current = shared.remote.link().map(|l| l.generation);
        match current {
            Some(generation) if generation == link.generation => {}
            // Another connection: its redo subscribes.
            Some(_) => return,
            // The redo of this connection still runs: wait; this connection lost: the
            // next one's redo subscribes.
            None if shared.remote.generation() < link.generation => {
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

#[cfg(test)]
mod tests;
