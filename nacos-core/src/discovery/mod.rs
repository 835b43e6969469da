//! The consumer half: find a service's instances in Nacos and pick one.
//!
//! [`Discovery`] watches services ([`ServiceWatch`]): a current snapshot of a service's
//! `healthy && enabled` instances ([`Instances`]) and a notification on every change. It
//! uses the same configuration as a registration (servers, namespace, group, login) and,
//! in the same process, the same connections and login.
//!
//! See [`Discovery`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::client::NamingClient;
use crate::engine::{Engine, lock};
use crate::error::{Chain, Result};
use crate::instance::ServiceKey;
use crate::settings::{Config, ConfigBuilder};

mod instances;
#[cfg(feature = "reqwest-middleware")]
mod load_balancer;
#[cfg(feature = "tower")]
mod tower;

pub use instances::Instances;
#[cfg(feature = "reqwest-middleware")]
pub use load_balancer::{LoadBalancer, MAX_TRIES, NoInstance};
#[cfg(feature = "tower")]
pub use tower::{DiscoverInstances, InstanceKey};

pub use crate::settings::DEFAULT_REFRESH;

/// How long an instance whose connection was refused or reset is left out of picks
/// ([`ServiceWatch::eject`]): 10 s, long enough for the server's push or the next poll to
/// drop an instance that left, short enough for one that only blinked.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// How long an empty list must last before it replaces a non-empty one (10 s: two default
/// beat intervals, the time providers take to register again after a Nacos restart).
pub const EMPTY_HOLD: Duration = Duration::from_secs(10);

/// Watches services' instances in Nacos. Cheap to clone.
///
/// # How a service is watched
/// Over gRPC (the default where the server offers it), the service is subscribed once per
/// process (`SubscribeServiceRequest`) and the server pushes every change
/// (`NotifySubscriberRequest`, acknowledged): a caller learns of a deregistration in about
/// 0.6 s on official servers and 1 s on r-nacos. The subscription is renewed on every new
/// connection. Over HTTP (no push from Nacos 3.x: subscribing needs gRPC there, and v1's
/// UDP push is gone in 3.2), the engine polls: v1 `GET /instance/list` or the v3 client
/// list, chosen per server as a registration chooses (`NACOS_API`), every
/// `NACOS_DISCOVERY_REFRESH` ([`DEFAULT_REFRESH`], 5 s). One subscription or poll per
/// service, however many watchers; it stops once the last [`ServiceWatch`] of the service
/// is dropped.
///
/// The lag is the time a caller may keep calling an instance that has left: a provider
/// that deregisters on SIGTERM should keep serving for longer than its callers' lag
/// (`NACOS_DEREGISTER_GRACE`) so that no call reaches it after it stopped.
///
/// # When Nacos blinks
/// - A failed poll keeps the last good list, is logged once (a warning, then a line when
///   it recovers) and is retried with backoff up to the refresh.
/// - An empty list replacing a non-empty one is only taken once it has lasted
///   [`EMPTY_HOLD`]: a Nacos that restarted lists nothing until the providers register
///   again (within a beat interval), and a caller must not lose every instance meanwhile.
/// - Protect threshold: when too few instances are healthy, the official server lists the
///   unhealthy ones as healthy so that callers spread their load (v1 says so with
///   `reachProtectionThreshold`, logged once and shown by
///   [`Instances::reach_protection_threshold`]; v3 does it silently). A call may then
///   reach an instance that is down: a refused connection is retried on another instance
///   by the HTTP client.
///
/// # Example
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // NACOS_SERVER_ADDR=nacos:8848 (NACOS_SERVICE_NAME is not needed to discover)
/// let discovery = nacos_core::Discovery::from_env()?;
/// let orders = discovery.watch("orders");
/// let instances = orders.ready().await; // the first list, or an empty one after the timeout
/// if let Some(instance) = instances.pick() {
///     println!("calling {}:{}", instance.ip, instance.port);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    client: Arc<NamingClient>,
    namespace_id: String,
    group_name: String,
    cluster: Option<String>,
    refresh: Duration,
    first_wait: Duration,
    watches: Mutex<HashMap<ServiceKey, Weak<Shared>>>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("client", &self.inner.client)
            .field("namespace_id", &self.inner.namespace_id)
            .field("group_name", &self.inner.group_name)
            .field("cluster", &self.inner.cluster)
            .field("refresh", &self.inner.refresh)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery configured by the `NACOS_*` variables: servers, namespace, group, login,
    /// `NACOS_API`, `NACOS_REQUEST_TIMEOUT`, `NACOS_DISCOVERY_REFRESH`, and the preferred
    /// cluster `NACOS_CLUSTER_NAME`. `NACOS_SERVICE_NAME` is not needed.
    ///
    /// # Errors
    /// A malformed variable ([`Error::Config`](crate::Error::Config)); the HTTP client
    /// cannot be built ([`Error::HttpClient`](crate::Error::HttpClient)).
    ///
    /// # Panics
    /// When the engine's thread cannot be started.
    pub fn from_env() -> Result<Self> {
        let builder = ConfigBuilder::from_env()?;
        let builder = if builder.has_service_name() {
            builder
        } else {
            builder.service_name("nacos-discovery")
        };
        Self::new(&builder.build()?)
    }

    /// Discovery with `config`'s servers, namespace, group, login, API, timeouts, refresh
    /// and cluster (the cluster is preferred by [`Instances::pick`]).
    ///
    /// # Errors
    /// [`Error::HttpClient`](crate::Error::HttpClient) when the HTTP client cannot be built.
    ///
    /// # Panics
    /// When the engine's thread cannot be started.
    pub fn new(config: &Config) -> Result<Self> {
        let engine = Engine::get();
        let client = engine.client_for(config)?;
        Ok(Discovery {
            inner: Arc::new(Inner {
                engine,
                client,
                namespace_id: config.namespace_id().to_owned(),
                group_name: config.group_name().to_owned(),
                cluster: Some(config.cluster_name().to_owned()),
                refresh: config.discovery_refresh(),
                first_wait: config.request_timeout(),
                watches: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Watches `service_name` in the configured group and namespace.
    ///
    /// The first poll starts at once; [`ServiceWatch::ready`] waits for its answer.
    pub fn watch(&self, service_name: &str) -> ServiceWatch {
        self.watch_in(&self.inner.group_name, service_name)
    }

    /// Watches `service_name` in `group_name` (the configured namespace).
    pub fn watch_in(&self, group_name: &str, service_name: &str) -> ServiceWatch {
        let key = ServiceKey {
            namespace_id: self.inner.namespace_id.clone(),
            group_name: group_name.to_owned(),
            service_name: service_name.to_owned(),
        };
        let mut watches = lock(&self.inner.watches);
        if let Some(shared) = watches.get(&key).and_then(Weak::upgrade) {
            return ServiceWatch { shared };
        }
        watches.retain(|_, w| w.strong_count() > 0);
        let (tx, _) = watch::channel(Arc::new(Instances::default()));
        let shared = Arc::new(Shared {
            key: key.clone(),
            current: ArcSwap::from_pointee(Instances::default()),
            updates: tx,
            first_wait: self.inner.first_wait,
            ejected: Mutex::new(Vec::new()),
            ejections: std::sync::atomic::AtomicUsize::new(0),
            failure: Mutex::new(None),
        });
        watches.insert(key, Arc::downgrade(&shared));
        drop(watches);
        let poller = Poller {
            shared: Arc::downgrade(&shared),
            client: self.inner.client.clone(),
            key: shared.key.clone(),
            cluster: self.inner.cluster.clone(),
            refresh: self.inner.refresh,
        };
        self.inner.engine.runtime.spawn(poller.run());
        ServiceWatch { shared }
    }
}

/// One watched service: the current [`Instances`] and their changes. Cheap to clone;
/// the service is polled while any clone lives.
#[derive(Clone)]
pub struct ServiceWatch {
    shared: Arc<Shared>,
}

struct Shared {
    key: ServiceKey,
    current: ArcSwap<Instances>,
    updates: watch::Sender<Arc<Instances>>,
    first_wait: Duration,
    /// Instances left out of picks, and until when.
    ejected: Mutex<Vec<(String, u16, tokio::time::Instant)>>,
    /// How many entries `ejected` holds: picks take no lock while it is 0.
    ejections: std::sync::atomic::AtomicUsize,
    /// Why the last list or subscription failed, while it does.
    failure: Mutex<Option<crate::Error>>,
}

impl fmt::Debug for ServiceWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("ServiceWatch")
            .field("service", &self.shared.key)
            .field("instances", &current.len())
            .field("version", &current.version())
            .finish()
    }
}

impl ServiceWatch {
    /// The service watched.
    pub fn service(&self) -> &ServiceKey {
        &self.shared.key
    }

    /// The current snapshot: lock-free, a few nanoseconds; empty (version 0) until the
    /// first answer.
    pub fn instances(&self) -> Arc<Instances> {
        self.shared.current.load_full()
    }

    /// Picks an instance from the current snapshot (see [`Instances::pick`]) without
    /// taking a reference count: what a load balancer calls per request. Instances
    /// [ejected](Self::eject) are left out while another one can be picked (when every
    /// instance is ejected, one of them is picked all the same: better a try than none).
    pub fn pick_with<T>(&self, f: impl FnOnce(Option<&crate::Instance>) -> T) -> T {
        self.pick_avoiding(|_| false, f)
    }

    /// As [`pick_with`](Self::pick_with), never an instance for which `is_avoided` holds
    /// (e.g. the ones a request already tried); `None` when no other instance is left.
    pub fn pick_avoiding<T>(
        &self,
        is_avoided: impl Fn(&crate::Instance) -> bool,
        f: impl FnOnce(Option<&crate::Instance>) -> T,
    ) -> T {
        let current = self.shared.current.load();
        if self
            .shared
            .ejections
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return f(current.pick_avoiding(is_avoided));
        }
        let now = tokio::time::Instant::now();
        let ejected = {
            let mut ejected = lock(&self.shared.ejected);
            ejected.retain(|(_, _, until)| *until > now);
            self.shared
                .ejections
                .store(ejected.len(), std::sync::atomic::Ordering::Relaxed);
            ejected.clone()
        };
        let is_ejected = |i: &crate::Instance| {
            ejected
                .iter()
                .any(|(ip, port, _)| *ip == i.ip && *port == i.port)
        };
        match current.pick_avoiding(|i| is_avoided(i) || is_ejected(i)) {
            Some(instance) => f(Some(instance)),
            None => f(current.pick_avoiding(is_avoided)),
        }
    }

    /// Leaves the instance at `ip:port` out of picks for [`EJECT_FOR`] (outlier ejection,
    /// as Envoy does): what a caller does when a connection to it was refused or reset.
    /// The list drops it when it left; if it only blinked, it is picked again afterwards.
    pub fn eject(&self, ip: &str, port: u16) {
        let until = tokio::time::Instant::now() + EJECT_FOR;
        let mut ejected = lock(&self.shared.ejected);
        match ejected.iter_mut().find(|(i, p, _)| i == ip && *p == port) {
            Some(entry) => entry.2 = until,
            None => ejected.push((ip.to_owned(), port, until)),
        }
        self.shared
            .ejections
            .store(ejected.len(), std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(service = %self.shared.key.service_name, instance = %format_args!("{ip}:{port}"),
            "instance left out of picks for 10 s");
    }

    /// Why no instance can be picked, in words: the service is unknown or empty, every
    /// instance is unhealthy, disabled, of weight 0 or ejected, or Nacos cannot be reached
    /// (with the cause). `None` while an instance can be picked.
    pub fn why_none(&self) -> Option<String> {
        if self.pick_with(|i| i.is_some()) {
            return None;
        }
        let current = self.instances();
        if let Some(err) = lock(&self.shared.failure).as_ref() {
            if current.is_empty() {
                return Some(format!("nacos unreachable: {}", Chain(err)));
            }
        }
        Some(if current.version() == 0 {
            "no list from nacos yet".to_owned()
        } else if current.listed() == 0 {
            "nacos lists no instance of it (unknown or empty service)".to_owned()
        } else if current.is_empty() {
            format!(
                "all {} listed instances are unhealthy or disabled",
                current.listed()
            )
        } else {
            format!("all {} healthy instances have weight 0", current.len())
        })
    }

    /// The first list: resolves at once when it is there, else when it arrives, or
    /// after the request timeout (`NACOS_REQUEST_TIMEOUT`) with whatever is known then.
    ///
    /// # Cancellation safety
    /// Cancel-safe: it only waits.
    pub async fn ready(&self) -> Arc<Instances> {
        let mut rx = self.shared.updates.subscribe();
        let wait = rx.wait_for(|i| i.version() > 0);
        drop(tokio::time::timeout(self.shared.first_wait, wait).await);
        self.instances()
    }

    /// A receiver that sees every new snapshot (`changed().await`, then `borrow()`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Instances>> {
        self.shared.updates.subscribe()
    }

    /// The snapshots as a stream: the current one first (once the first answer came),
    /// then each change.
    pub fn updates(&self) -> tokio_stream::wrappers::WatchStream<Arc<Instances>> {
        tokio_stream::wrappers::WatchStream::new(self.subscribe())
    }
}

/// The watch loop of one service (on the engine's runtime): pushed lists over gRPC, polls
/// over HTTP.
struct Poller {
    shared: Weak<Shared>,
    client: Arc<NamingClient>,
    key: ServiceKey,
    cluster: Option<String>,
    refresh: Duration,
}

/// What a watch loop keeps between two lists.
#[derive(Default)]
struct Track {
    version: u64,
    failures: u32,
    empty_since: Option<tokio::time::Instant>,
    protection_logged: bool,
}

impl Poller {
    async fn run(self) {
        let mut track = Track::default();
        loop {
            if self.shared.strong_count() == 0 {
                tracing::debug!(service = %self.key.service_name, "no watcher left: watching stops");
                return;
            }
            #[cfg(feature = "grpc")]
            if self.client.uses_grpc() != Some(false) {
                match self.client.subscribe(&self.key).await {
                    Ok(Some(subscription)) => {
                        self.follow(subscription, &mut track).await;
                        return;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        let delay = self.failed(&mut track, &err);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            let answer = self.client.service_instances(&self.key).await;
            let delay = match answer {
                Ok(list) => {
                    self.apply(&mut track, list);
                    self.refresh
                }
                Err(err) => self.failed(&mut track, &err),
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Follows the lists the server pushes until the last watcher is gone (checked every
    /// refresh, when a held empty list is also looked at again).
    #[cfg(feature = "grpc")]
    async fn follow(&self, mut subscription: crate::client::grpc::Subscribed, track: &mut Track) {
        // The list already there (another watch of the same service may have subscribed
        // first), then each push.
        let mut last = subscription.rx.borrow_and_update().clone();
        let mut fresh = last.is_some();
        loop {
            if let (true, Some(info)) = (fresh, &last) {
                self.apply(
                    track,
                    crate::instance::InstanceList {
                        hosts: info.hosts.clone(),
                        reach_protection_threshold: info.reach_protection_threshold,
                    },
                );
            }
            fresh = tokio::select! {
                changed = subscription.rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                () = tokio::time::sleep(self.refresh) => false,
            };
            if self.shared.strong_count() == 0 {
                tracing::debug!(service = %self.key.service_name, "no watcher left: unsubscribing");
                return;
            }
            if fresh {
                last = subscription.rx.borrow_and_update().clone();
            } else {
                // A refresh tick: a held empty list is looked at again.
                fresh = true;
            }
        }
    }

    /// A failed list or subscription: logged once, the last list kept; returns the wait
    /// before the next try.
    fn failed(&self, track: &mut Track, err: &crate::Error) -> Duration {
        track.failures += 1;
        if let Some(shared) = self.shared.upgrade() {
            *lock(&shared.failure) = Some(err.clone());
        }
        crate::metrics::discovery_refresh_failure(&self.key.grouped_service_name());
        let had = self
            .shared
            .upgrade()
            .map_or(0, |shared| shared.current.load().len());
        if track.failures == 1 {
            tracing::warn!(service = %self.key.service_name, error = %Chain(err),
                instances = had, "nacos instance list failed: keeping the last list");
        } else {
            tracing::debug!(service = %self.key.service_name, failures = track.failures,
                error = %Chain(err), "nacos instance list failed again");
        }
        crate::task::timing::retry_delay(track.failures, self.refresh)
    }

    /// Takes a list: publishes it when it changed, except an empty list replacing a
    /// non-empty one before [`EMPTY_HOLD`].
    fn apply(&self, track: &mut Track, list: crate::instance::InstanceList) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if track.failures > 0 {
            tracing::info!(service = %self.key.service_name, failures = track.failures,
                "nacos instance list recovered");
            *lock(&shared.failure) = None;
        }
        track.failures = 0;
        if list.reach_protection_threshold != track.protection_logged {
            track.protection_logged = list.reach_protection_threshold;
            if track.protection_logged {
                tracing::warn!(service = %self.key.service_name,
                    "nacos says the service is below its protect threshold: unhealthy instances are listed as healthy");
            }
        }
        let fresh = Instances::new(
            list.hosts,
            self.cluster.as_deref(),
            track.version + 1,
            list.reach_protection_threshold,
        );
        let had = shared.current.load().len();
        let hold = fresh.is_empty() && had > 0 && {
            let since = *track
                .empty_since
                .get_or_insert_with(tokio::time::Instant::now);
            since.elapsed() < EMPTY_HOLD
        };
        if !fresh.is_empty() {
            track.empty_since = None;
        }
        let changed = {
            let current = shared.current.load();
            track.version == 0
                || current.all() != fresh.all()
                || current.reach_protection_threshold() != fresh.reach_protection_threshold()
        };
        if hold {
            tracing::debug!(service = %self.key.service_name, instances = had,
                "nacos lists no instance: keeping the last list for now");
        } else if changed {
            track.version += 1;
            tracing::debug!(service = %self.key.service_name, instances = fresh.len(),
                version = track.version, "instances changed");
            crate::metrics::discovery_instances(&self.key.grouped_service_name(), fresh.len());
            let fresh = Arc::new(fresh);
            shared.current.store(fresh.clone());
            shared.updates.send_replace(fresh);
        }
    }
}
