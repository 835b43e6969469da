//! The Nacos configuration center: read a config, follow its changes, publish and remove
//! configs, over the process's gRPC connection to Nacos (the one its registrations and
//! watches use), as the Java client's `ConfigService` does over its own.
//!
//! - **One connection.** A [`ConfigService`] made with the same servers, namespace and
//!   login as the app's registration shares its client, and so its connection (labelled
//!   `module: naming`: the official servers and r-nacos route config requests by their type
//!   on any connection, and only naming needs the label).
//! - **Listening** (the Java client's `ClientWorker`): a watched config is listened to with
//!   `ConfigBatchListenRequest`, carrying the md5 of the content this process has (`""`:
//!   none); the server pushes `ConfigChangeNotifyRequest` (answered every time) when it
//!   changes, and the config is then queried (`ConfigQueryRequest`). After every new
//!   connection every watched config is listened to again (the server forgets listeners
//!   with the connection), and every [`FULL_CHECK`] all of them are checked against the
//!   server whatever was pushed.
//! - **Deleted** configs reach watchers as an item without content (the server answers a
//!   query with error 300).
//! - **Local files**: the last content read is kept as a snapshot
//!   (`NACOS_CONFIG_SNAPSHOT_DIR`) and answers while Nacos does not; an operator's failover
//!   file (`NACOS_CONFIG_FAILOVER_DIR`) replaces the server's content while it is there.
//! - **Over HTTP** when the client has no gRPC connection (`NACOS_API=v1`/`v3`, or no gRPC
//!   port answers): v1 long polling ([`CONFIG_LONG_POLL`]) where the server has v1, else v3
//!   reads every [`CONFIG_V3_POLL`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::client::NamingClient;
use crate::engine::Engine;
use crate::error::{Chain, Error, Result};
use crate::remote::messages::Empty;
use crate::remote::{BoxFuture, Core, Link, Module, lock};
use crate::settings::{Config, ConfigBuilder};

mod http;
mod imports;
mod messages;
#[cfg(any(feature = "config", feature = "figment"))]
mod sources;
mod tree;
mod typed;

pub use http::{CONFIG_LONG_POLL, CONFIG_V3_POLL};
pub use imports::{ConfigImport, ConfigImports, ImportedConfig};
use messages::*;
#[cfg(feature = "figment")]
pub use sources::NacosProvider;
#[cfg(feature = "config")]
pub use sources::NacosSource;
pub use typed::{ConfigFormat, TypedConfig};

/// How often every watched config is checked against the server, pushes or not: 3 min, as
/// the Java client since 2.2.4 (`ClientWorker.ALL_SYNC_INTERNAL`).
pub const FULL_CHECK: Duration = Duration::from_secs(180);

/// How long after a config changed (or was first read) it is listened to again with the
/// new md5, which makes the server say whether it still differs: a node of a cluster, or
/// r-nacos right after a write, may briefly answer with older content (the Java client
/// checks again after a change for the same reason). The configs read until then go with
/// the first one, in the same listen.
const REVERIFY: Duration = Duration::from_secs(1);

/// How often the operator's failover files are looked for (`NACOS_CONFIG_FAILOVER_DIR`),
/// as often as the Java client's loop looks.
const FAILOVER_CHECK: Duration = Duration::from_secs(5);

/// The first wait before a failed listen or query is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A config: namespace, group and data id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigKey {
    /// Namespace id (`public` is Nacos's `""` tenant).
    pub namespace_id: String,
    /// Group name.
    pub group_name: String,
    /// Data id, e.g. `orders.yaml`.
    pub data_id: String,
}

impl ConfigKey {
    /// The `tenant` of the requests: `""` for `public`.
    fn tenant(&self) -> &str {
        if self.namespace_id == "public" {
            ""
        } else {
            &self.namespace_id
        }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace_id, self.group_name, self.data_id
        )
    }
}

/// A config as the server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigItem {
    /// Which config.
    pub key: ConfigKey,
    /// The content; `None` when the config does not exist (never published, or deleted).
    pub content: Option<String>,
    /// The lowercase hex MD5 of the content's UTF-8 bytes, as the server computes it; `""`
    /// when there is no content.
    pub md5: String,
    /// The type the config was published with (`yaml`, `properties`, `json`, `text`, ...),
    /// when the server says.
    pub content_type: Option<String>,
    /// When it was last changed, when the server says.
    pub last_modified: Option<SystemTime>,
    /// Read from the local snapshot (`NACOS_CONFIG_SNAPSHOT_DIR`) because Nacos did not
    /// answer: the content this process (or an earlier run) last read from Nacos.
    pub from_snapshot: bool,
    /// Read from the operator's failover file (`NACOS_CONFIG_FAILOVER_DIR`), which replaces
    /// the server's content while it is there.
    pub from_failover: bool,
}

/// The Nacos configuration center. Cheap to clone.
///
/// ```no_run
/// # async fn run() -> Result<(), nacos_core::Error> {
/// let configs = nacos_core::ConfigService::from_env()?;
/// let mut greeting = configs.watch("greeting.txt");
/// let first = greeting.ready().await;
/// println!("greeting: {:?}", first.content);
/// while greeting.changed().await.is_ok() {
///     println!("now: {:?}", greeting.current().and_then(|c| c.content.clone()));
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConfigService {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: tokio::runtime::Handle,
    namespace_id: String,
    group_name: String,
    center: Arc<Center>,
}

impl fmt::Debug for ConfigService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigService")
            .field("client", &self.inner.center.client)
            .field("namespace_id", &self.inner.namespace_id)
            .field("group_name", &self.inner.group_name)
            .finish_non_exhaustive()
    }
}

impl ConfigService {
    /// The configuration center of the servers the `NACOS_*` variables name, in their
    /// namespace and group (`NACOS_NAMESPACE`, `NACOS_GROUP`), with their login and TLS
    /// settings. `NACOS_SERVICE_NAME` is not needed.
    ///
    /// # Errors
    /// A malformed variable ([`Error::Config`]); the HTTP client cannot be built
    /// ([`Error::HttpClient`]).
    ///
    /// # Panics
    /// When the engine's thread cannot be started.
    pub fn from_env() -> Result<Self> {
        let builder = ConfigBuilder::from_env()?;
        let builder = if builder.has_service_name() {
            builder
        } else {
            builder.service_name("nacos-config")
        };
        Self::new(&builder.build()?)
    }

    /// The configuration center of `config`'s servers, namespace and group, with its login,
    /// TLS and request timeout. Shares the client (and the gRPC connection) of registrations
    /// and discovery made with the same servers, namespace and login.
    ///
    /// # Errors
    /// [`Error::HttpClient`] when the HTTP client cannot be built.
    ///
    /// # Panics
    /// When the engine's thread cannot be started.
    pub fn new(config: &Config) -> Result<Self> {
        let engine = Engine::get();
        let client = engine.client_for(config)?;
        let center = center_for(
            &client,
            &engine.runtime,
            config.config_snapshot_dir().map(Path::to_path_buf),
            config.config_failover_dir().map(Path::to_path_buf),
        );
        Ok(ConfigService {
            inner: Arc::new(Inner {
                runtime: engine.runtime.clone(),
                namespace_id: config.namespace_id().to_owned(),
                group_name: config.config_group_name().to_owned(),
                center,
            }),
        })
    }

    fn key(&self, group_name: &str, data_id: &str) -> ConfigKey {
        ConfigKey {
            namespace_id: self.inner.namespace_id.clone(),
            group_name: group_name.to_owned(),
            data_id: data_id.to_owned(),
        }
    }

    /// Reads `data_id` in the configured group once (`ConfigQueryRequest`); an item without
    /// content when it does not exist.
    ///
    /// # Errors
    /// No connection, or the request failed or was refused (e.g. 403 without the right).
    pub async fn get(&self, data_id: &str) -> Result<ConfigItem> {
        self.get_in(&self.inner.group_name.clone(), data_id).await
    }

    /// [`get`](Self::get) in `group_name`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_in(&self, group_name: &str, data_id: &str) -> Result<ConfigItem> {
        self.inner
            .center
            .query(&self.key(group_name, data_id))
            .await
    }

    /// Publishes `content` as `data_id` in the configured group (`ConfigPublishRequest`),
    /// with its `content_type` when given (`yaml`, `properties`, `json`, `text`, ...). With
    /// `cas_md5` (not blank), only if the server's content still has that md5: official
    /// servers refuse otherwise (r-nacos ignores it; a blank md5 is no condition anywhere).
    ///
    /// # Errors
    /// No connection, the request failed, or the server refused it (empty content, over
    /// its 10 MiB limit, a compare-and-set that failed).
    pub async fn publish(
        &self,
        data_id: &str,
        content: &str,
        content_type: Option<&str>,
        cas_md5: Option<&str>,
    ) -> Result<()> {
        let key = self.key(&self.inner.group_name, data_id);
        self.inner
            .center
            .publish(&key, content, content_type, cas_md5)
            .await
    }

    /// Removes `data_id` from the configured group (`ConfigRemoveRequest`); removing a
    /// config that does not exist succeeds.
    ///
    /// # Errors
    /// No connection, or the request failed or was refused.
    pub async fn remove(&self, data_id: &str) -> Result<()> {
        let key = self.key(&self.inner.group_name, data_id);
        self.inner.center.remove(&key).await
    }

    /// Watches `data_id` in the configured group: its content now and every change the
    /// server pushes, until the last clone of the watch drops.
    pub fn watch(&self, data_id: &str) -> ConfigWatch {
        self.watch_in(&self.inner.group_name.clone(), data_id)
    }

    /// Watches `data_id` in the configured group read as `T` with serde: JSON, YAML
    /// (feature `yaml`), TOML (feature `toml`), Java properties (feature `properties`) or
    /// text, by the type it was published with,
    /// else its extension ([`ConfigFormat::of`]). Content that does not read keeps the last
    /// good value ([`TypedConfig::last_error`] says why, a WARN line and
    /// `nacos_client_config_rejected_total` too); a deleted config reads as `None`.
    pub fn watch_typed<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
        data_id: &str,
    ) -> TypedConfig<T> {
        TypedConfig::new(self.watch(data_id), &self.inner.runtime)
    }

    /// [`watch`](Self::watch) in `group_name`.
    pub fn watch_in(&self, group_name: &str, data_id: &str) -> ConfigWatch {
        let (rx, key) = self.inner.center.listen(self.key(group_name, data_id));
        self.inner.center.wake();
        ConfigWatch {
            rx,
            guard: Arc::new(Watcher {
                center: self.inner.center.clone(),
                key,
            }),
        }
    }
}

/// The configuration center of each client (by the client's address: a center keeps its
/// client alive, so the address is not reused while the center lives).
static CENTERS: Mutex<Vec<(usize, Weak<Center>)>> = Mutex::new(Vec::new());

/// The configuration center on `client`'s connection, made (with its task on `runtime`) if
/// there is none.
fn center_for(
    client: &Arc<NamingClient>,
    runtime: &tokio::runtime::Handle,
    snapshot: Option<PathBuf>,
    failover: Option<PathBuf>,
) -> Arc<Center> {
    let mut centers = lock(&CENTERS);
    let key = Arc::as_ptr(client) as usize;
    if let Some(center) = centers
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, c)| c.upgrade())
    {
        return center;
    }
    centers.retain(|(_, c)| c.strong_count() > 0);
    let center = Center::new(client.clone(), runtime, snapshot, failover);
    centers.push((key, Arc::downgrade(&center)));
    center
}

/// One watched config: the item as the server has it, and its changes. Cheap to clone; the
/// config is listened to while any clone lives.
#[derive(Clone)]
pub struct ConfigWatch {
    rx: watch::Receiver<Option<Arc<ConfigItem>>>,
    guard: Arc<Watcher>,
}

impl fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("key", &self.guard.key)
            .finish_non_exhaustive()
    }
}

impl ConfigWatch {
    /// Which config.
    pub fn key(&self) -> &ConfigKey {
        &self.guard.key
    }

    /// The item as last read; `None` until the first answer.
    pub fn current(&self) -> Option<Arc<ConfigItem>> {
        self.rx.borrow().clone()
    }

    /// Waits for the first answer (the server's content, or none): as long as it takes
    /// (a server that is down is tried again with a growing wait, up to 30 s).
    pub async fn ready(&mut self) -> Arc<ConfigItem> {
        loop {
            if let Ok(item) = self.rx.wait_for(Option::is_some).await {
                if let Some(item) = item.clone() {
                    return item;
                }
            }
            // The sender lives as long as the watch: not reached.
            std::future::pending::<()>().await;
        }
    }

    /// Waits for the next change of the item (content, or its deletion).
    ///
    /// # Errors
    /// Never while the watch lives (the sender lives as long as the listen).
    pub async fn changed(&mut self) -> std::result::Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// A receiver of the item, for `tokio::select!` and the like.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ConfigItem>>> {
        self.rx.clone()
    }

    /// Why the config could not be read lately: its last query failed or was refused (a 403
    /// without the right to its namespace or group), or, before its first answer, there is
    /// no connection to Nacos. `None` once the server answered it. Reads go on being tried
    /// meanwhile.
    pub fn last_error(&self) -> Option<Error> {
        let center = &self.guard.center;
        let own = lock(&center.listens)
            .get(&self.guard.key)
            .and_then(|l| l.error.as_deref().cloned());
        // The center's failure (no connection) concerns this config while it has no answer.
        own.or_else(|| {
            self.rx
                .borrow()
                .is_none()
                .then(|| lock(&center.failure).clone())
                .flatten()
        })
    }
}

/// Ends the listen when the last clone of a watch drops (and keeps the center alive until
/// then).
struct Watcher {
    center: Arc<Center>,
    /// Shared with the center's listen table.
    key: Arc<ConfigKey>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.center.unlisten(&self.key);
    }
}

/// The snapshot thread's queue: a file and the item to write there.
type SnapshotWrites = std::sync::mpsc::Sender<(PathBuf, Arc<ConfigItem>)>;

/// A listened config.
struct Listen {
    tx: watch::Sender<Option<Arc<ConfigItem>>>,
    /// The md5 of the content this process has (`""`: none, or not known yet).
    md5: String,
    watchers: usize,
    /// Whether the server knows of this listen on the current connection.
    listened: bool,
    /// Read (changed, or first answered) since it was last listened to: listened to again
    /// with the new md5 when the center's re-verification time comes (see [`REVERIFY`]).
    reverify: bool,
    /// Why its last query failed; `None` once one succeeded (boxed: rare, and every
    /// listen carries the field).
    error: Option<Box<Error>>,
    /// An operator's failover file replaces the server's content.
    failover: bool,
}

/// What the configuration center keeps on one client's connection, shared with its task.
pub(crate) struct Center {
    client: Arc<NamingClient>,
    /// The client's gRPC connection; `None` without one (HTTP only).
    core: Option<Arc<Core>>,
    /// The listened configs (each key shared with its watches and the queues below: one
    /// copy per config however many refer to it).
    listens: Mutex<HashMap<Arc<ConfigKey>, Listen>>,
    /// Configs the server said changed (pushes, listen answers), to query.
    pending: Mutex<HashSet<Arc<ConfigKey>>>,
    /// Configs no longer watched, to stop listening to.
    dropped: Mutex<Vec<Arc<ConfigKey>>>,
    /// Wakes the task (shared with it, so that it waits without holding the center).
    wake: Arc<tokio::sync::Notify>,
    /// When the configs read since the last round are to be listened to again.
    reverify: Mutex<Option<tokio::time::Instant>>,
    /// Where the last content of each config is kept (`NACOS_CONFIG_SNAPSHOT_DIR`).
    snapshot: Option<PathBuf>,
    /// Where an operator puts configs that replace the server's
    /// (`NACOS_CONFIG_FAILOVER_DIR`).
    failover: Option<PathBuf>,
    /// The snapshot thread's queue, once started (see [`Center::keep`]).
    snapshot_writes: Mutex<Option<SnapshotWrites>>,
    /// Why the last round failed (no connection, a refused listen); `None` once one
    /// succeeded.
    failure: Mutex<Option<Error>>,
    /// Over HTTP (no gRPC connection) at the last request.
    on_http: std::sync::atomic::AtomicBool,
    /// The HTTP API of the configuration center, once found out (see [`http`]).
    http_api: Mutex<Option<crate::settings::ApiVersion>>,
    /// Over HTTP v3, when every listened config is read again; over v1, the earliest next
    /// long poll after one answered at once (see [`http`]).
    http_next_poll: Mutex<Option<tokio::time::Instant>>,
}

impl Drop for Center {
    fn drop(&mut self) {
        // The task ends at its next round.
        self.wake.notify_one();
    }
}

impl Center {
    /// A center on `client`'s connection, with its task on `runtime`.
    pub(crate) fn new(
        client: Arc<NamingClient>,
        runtime: &tokio::runtime::Handle,
        snapshot: Option<PathBuf>,
        failover: Option<PathBuf>,
    ) -> Arc<Self> {
        let core = client.grpc_remote().map(|remote| remote.core().clone());
        let center = Arc::new(Center {
            client,
            core,
            listens: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
            dropped: Mutex::new(Vec::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
            reverify: Mutex::new(None),
            snapshot,
            failover,
            snapshot_writes: Mutex::new(None),
            failure: Mutex::new(None),
            on_http: std::sync::atomic::AtomicBool::new(false),
            http_api: Mutex::new(None),
            http_next_poll: Mutex::new(None),
        });
        if let Some(remote) = center.client.grpc_remote() {
            let module: Weak<dyn Module> = Arc::downgrade(&center) as Weak<dyn Module>;
            remote.add(module);
        }
        runtime.spawn(run(Arc::downgrade(&center), center.wake.clone()));
        center
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    /// Adds a watcher of `key`; its first one makes the config listened to and queried.
    /// Returns the receiver and the key as the center keeps it.
    fn listen(&self, key: ConfigKey) -> (watch::Receiver<Option<Arc<ConfigItem>>>, Arc<ConfigKey>) {
        let mut listens = lock(&self.listens);
        if let Some((kept, listen)) = listens.get_key_value(&key) {
            let kept = kept.clone();
            let rx = listen.tx.subscribe();
            if let Some(listen) = listens.get_mut(&key) {
                listen.watchers += 1;
            }
            return (rx, kept);
        }
        let key = Arc::new(key);
        let (tx, rx) = watch::channel(None);
        listens.insert(
            key.clone(),
            Listen {
                tx,
                md5: String::new(),
                watchers: 1,
                listened: false,
                reverify: false,
                error: None,
                failover: false,
            },
        );
        lock(&self.pending).insert(key.clone());
        (rx, key)
    }

    fn unlisten(&self, key: &Arc<ConfigKey>) {
        let mut listens = lock(&self.listens);
        let last = match listens.get_mut(key) {
            Some(listen) if listen.watchers > 1 => {
                listen.watchers -= 1;
                false
            }
            Some(_) => {
                listens.remove(key);
                true
            }
            None => false,
        };
        drop(listens);
        if last {
            lock(&self.dropped).push(key.clone());
            self.wake();
        }
    }

    /// The connection.
    fn core(&self) -> Result<&Arc<Core>> {
        self.core.as_ref().ok_or(Error::Unsupported(
            "this client has no gRPC connection (NACOS_API=v1 or v3)",
        ))
    }

    /// Whether requests go over the gRPC connection now (`false`: over HTTP), starting it
    /// (`NACOS_API=grpc` routes without starting it) and in `auto` mode finding out first.
    /// When the client settles on HTTP, the gRPC ports are tried again at once (a server
    /// restarting answers HTTP before gRPC), and then at the probe interval.
    async fn over_grpc(&self) -> Result<bool> {
        if let Some(remote) = self.client.grpc_remote() {
            remote.start();
        }
        let grpc = match self.client.config_over_grpc().await {
            Ok(grpc) => grpc && self.core.is_some(),
            // No gRPC port answered: HTTP, if a server answers there.
            Err(grpc_error) => match self.http_api().await {
                Ok(_) => {
                    self.client.settle_on_http(&grpc_error);
                    false
                }
                Err(_) => return Err(grpc_error),
            },
        };
        let was_http = self
            .on_http
            .swap(!grpc, std::sync::atomic::Ordering::Relaxed);
        if !grpc && !was_http {
            if let Some(remote) = self.client.grpc_remote() {
                remote.probe_now();
            }
        }
        Ok(grpc)
    }

    /// The connection, once up.
    async fn link(&self) -> Result<Link> {
        self.core()?.wait_link().await
    }

    /// Queries `key` once; when Nacos does not answer, the snapshot (if any) answers.
    async fn query(&self, key: &ConfigKey) -> Result<ConfigItem> {
        // As the Java client reads: the failover file, then the server, then the snapshot.
        if let Some(item) = self.failover_of(key) {
            return Ok(item);
        }
        let answer = match self.over_grpc().await {
            Ok(true) => match self.link().await {
                Ok(link) => self.query_on(&link, key).await,
                Err(e) => Err(e),
            },
            Ok(false) => match self.http_api().await {
                Ok(api) => self.http_query(api, key).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match answer {
            Ok(item) => {
                self.keep(Arc::new(item.clone()));
                Ok(item)
            }
            Err(e) => match self.snapshot_of(key) {
                Some(item) => {
                    tracing::warn!(config = %key, error = %Chain(&e),
                        "nacos does not answer: the config is read from the local snapshot");
                    Ok(item)
                }
                None => Err(e),
            },
        }
    }

    /// The snapshot file of `key`: `<dir>/<namespace>/<group>/<data id>` (see
    /// [`config_path`]).
    fn snapshot_path(&self, key: &ConfigKey) -> Option<PathBuf> {
        Some(config_path(self.snapshot.as_ref()?, key))
    }

    /// The operator's failover file of `key` as an item, if there is one.
    fn failover_of(&self, key: &ConfigKey) -> Option<ConfigItem> {
        let path = config_path(self.failover.as_ref()?, key);
        let content = std::fs::read_to_string(path).ok()?;
        Some(ConfigItem {
            key: key.clone(),
            md5: md5_hex(&content),
            content: Some(content),
            content_type: None,
            last_modified: None,
            from_snapshot: false,
            from_failover: true,
        })
    }

    /// Hands each listened config's failover file (if any) to its watchers in place of the
    /// server's content; a config whose file went away is read from the server again.
    fn check_failover(&self) {
        if self.failover.is_none() {
            return;
        }
        let keys: Vec<(Arc<ConfigKey>, bool)> = lock(&self.listens)
            .iter()
            .map(|(k, l)| (k.clone(), l.failover))
            .collect();
        for (key, was) in keys {
            match self.failover_of(&key) {
                Some(item) => {
                    let mut listens = lock(&self.listens);
                    let Some(listen) = listens.get_mut(&key) else {
                        continue;
                    };
                    if !was {
                        tracing::warn!(config = %key,
                            "nacos config replaced by the operator's failover file while it is there");
                    }
                    listen.failover = true;
                    let same = listen
                        .tx
                        .borrow()
                        .as_ref()
                        .is_some_and(|c| c.from_failover && c.md5 == item.md5);
                    if !same {
                        listen.tx.send_replace(Some(Arc::new(item)));
                    }
                }
                None if was => {
                    if let Some(listen) = lock(&self.listens).get_mut(&key) {
                        listen.failover = false;
                    }
                    tracing::warn!(config = %key,
                        "the operator's failover file is gone: the nacos config follows the server again");
                    lock(&self.pending).insert(key);
                    self.wake();
                }
                None => {}
            }
        }
    }

    /// Keeps `item` in the snapshot (its content, or no file when it has none), on the
    /// snapshot thread: in order, and with the file writes (and their `fsync`) off the
    /// runtime that also carries the registrations.
    fn keep(&self, item: Arc<ConfigItem>) {
        if item.from_snapshot || item.from_failover {
            return;
        }
        let Some(path) = self.snapshot_path(&item.key) else {
            return;
        };
        let mut writes = lock(&self.snapshot_writes);
        if writes.is_none() {
            let (tx, rx): (SnapshotWrites, _) = std::sync::mpsc::channel();
            // Ends when the center (and so the sender) is gone.
            let spawned = std::thread::Builder::new()
                .name("nacos-config-snapshot".into())
                .spawn(move || {
                    for (path, item) in rx {
                        write_snapshot(&path, &item);
                    }
                });
            match spawned {
                Ok(_) => *writes = Some(tx),
                Err(e) => {
                    tracing::debug!(error = %e, "no snapshot thread: writing in place");
                    drop(writes);
                    write_snapshot(&path, &item);
                    return;
                }
            }
        }
        if let Some(tx) = writes.as_ref() {
            let _ = tx.send((path, item));
        }
    }

    /// The snapshot of `key`, if there is one.
    fn snapshot_of(&self, key: &ConfigKey) -> Option<ConfigItem> {
        let content = std::fs::read_to_string(self.snapshot_path(key)?).ok()?;
        Some(ConfigItem {
            key: key.clone(),
            md5: md5_hex(&content),
            content: Some(content),
            content_type: None,
            last_modified: None,
            from_snapshot: true,
            from_failover: false,
        })
    }

    /// Nacos does not answer: watches without any answer yet get the snapshot.
    fn answer_from_snapshots(&self) {
        let waiting: Vec<Arc<ConfigKey>> = lock(&self.listens)
            .iter()
            .filter(|(_, l)| l.tx.borrow().is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            if let Some(item) = self.snapshot_of(&key) {
                tracing::warn!(config = %key,
                    "nacos does not answer: the config is read from the local snapshot until it does");
                self.deliver(item);
            }
        }
    }

    async fn query_on(&self, link: &Link, key: &ConfigKey) -> Result<ConfigItem> {
        let core = self.core()?;
        let id = core.request_id();
        let body = QueryRequest {
            data_id: &key.data_id,
            group: &key.group_name,
            tenant: key.tenant(),
            tag: "",
            request_id: &id,
            module: "config",
            headers: Empty {},
        };
        match core
            .call_on(link, CONFIG_QUERY, "config_query", &body)
            .await
        {
            Ok((server, answer)) => {
                // The body is the config: an error about it does not show it.
                let answer: QueryAnswer = answer.body(&server).map_err(|e| match e {
                    Error::Protocol { server, source, .. } => Error::Protocol {
                        server,
                        body: "(a config query's answer, not shown)".to_owned(),
                        source,
                    },
                    other => other,
                })?;
                let content = answer.content.filter(|c| !c.is_empty());
                let md5 = match (&content, answer.md5) {
                    (None, _) => String::new(),
                    (Some(_), Some(md5)) if !md5.is_empty() => md5,
                    (Some(content), _) => md5_hex(content),
                };
                Ok(ConfigItem {
                    key: key.clone(),
                    content,
                    md5,
                    content_type: answer.content_type.filter(|t| !t.is_empty()),
                    last_modified: answer
                        .last_modified
                        .and_then(|ms| u64::try_from(ms).ok())
                        .and_then(|ms| {
                            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
                        }),
                    from_snapshot: false,
                    from_failover: false,
                })
            }
            Err(Error::Refused {
                code: NOT_FOUND, ..
            }) => Ok(ConfigItem {
                key: key.clone(),
                content: None,
                md5: String::new(),
                content_type: None,
                last_modified: None,
                from_snapshot: false,
                from_failover: false,
            }),
            Err(e) => Err(e),
        }
    }

    async fn publish(
        &self,
        key: &ConfigKey,
        content: &str,
        content_type: Option<&str>,
        cas_md5: Option<&str>,
    ) -> Result<()> {
        if !self.over_grpc().await? {
            return self.http_publish(key, content, content_type, cas_md5).await;
        }
        let core = self.core()?;
        let id = core.request_id();
        let mut addition_map = std::collections::BTreeMap::new();
        if let Some(content_type) = content_type {
            addition_map.insert("type", content_type);
        }
        let body = PublishRequest {
            data_id: &key.data_id,
            group: &key.group_name,
            tenant: key.tenant(),
            content,
            cas_md5,
            addition_map,
            request_id: &id,
            module: "config",
            headers: Empty {},
        };
        core.call(CONFIG_PUBLISH, "config_publish", &body)
            .await
            .map(drop)
    }

    async fn remove(&self, key: &ConfigKey) -> Result<()> {
        if !self.over_grpc().await? {
            return self.http_remove(key).await;
        }
        let core = self.core()?;
        let id = core.request_id();
        let body = RemoveRequest {
            data_id: &key.data_id,
            group: &key.group_name,
            tenant: key.tenant(),
            tag: "",
            request_id: &id,
            module: "config",
            headers: Empty {},
        };
        core.call(CONFIG_REMOVE, "config_remove", &body)
            .await
            .map(drop)
    }

    /// Listens to (or stops listening to) `keys` on `link` with their md5s; the configs the
    /// server says differ go to the pending queries.
    async fn listen_on(
        &self,
        link: &Link,
        keys: &[(Arc<ConfigKey>, String)],
        listen: bool,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let core = self.core()?;
        let id = core.request_id();
        let body = BatchListenRequest {
            listen,
            config_listen_contexts: keys
                .iter()
                .map(|(key, md5)| ListenContext {
                    data_id: &key.data_id,
                    group: &key.group_name,
                    tenant: key.tenant(),
                    md5,
                })
                .collect(),
            request_id: &id,
            module: "config",
            headers: Empty {},
        };
        let what = if listen {
            "config_listen"
        } else {
            "config_unlisten"
        };
        let (server, answer) = core.call_on(link, CONFIG_BATCH_LISTEN, what, &body).await?;
        if !listen {
            return Ok(());
        }
        let answer: BatchListenAnswer = answer.body(&server)?;
        // `listens` before `pending`, as everywhere.
        let mut listens = lock(&self.listens);
        let mut pending = lock(&self.pending);
        for (key, _) in keys {
            if let Some(l) = listens.get_mut(key) {
                l.listened = true;
            }
        }
        for changed in answer.changed_configs {
            if let Some(key) = self.known(&listens, &changed) {
                pending.insert(key);
            }
        }
        Ok(())
    }

    /// The listened config a server's `changed` names.
    fn known(
        &self,
        listens: &HashMap<Arc<ConfigKey>, Listen>,
        changed: &Changed,
    ) -> Option<Arc<ConfigKey>> {
        let tenant = changed.tenant.as_deref().unwrap_or("");
        // The key itself first (a lookup, not a scan: thousands of configs change at once
        // after a reconnection).
        let direct = ConfigKey {
            namespace_id: if tenant.is_empty() { "public" } else { tenant }.to_owned(),
            group_name: changed.group.clone(),
            data_id: changed.data_id.clone(),
        };
        if let Some((key, _)) = listens.get_key_value(&direct) {
            return Some(key.clone());
        }
        listens
            .keys()
            .find(|k| {
                k.data_id == changed.data_id
                    && k.group_name == changed.group
                    && k.tenant() == tenant
            })
            .cloned()
    }

    /// One round of the task: listens not yet known to the server, the configs to stop
    /// listening to, the pending queries (and, when `full`, a check of every listened
    /// config).
    async fn round(&self, full: bool) -> Result<()> {
        if !self.over_grpc().await? {
            return self.http_round().await;
        }
        let link = self.link().await?;
        let due = {
            let mut at = lock(&self.reverify);
            let due = at.is_some_and(|at| at <= tokio::time::Instant::now());
            if due {
                *at = None;
            }
            due
        };
        if due {
            // Only now, whatever else woke the task since they were read.
            lock(&self.listens)
                .values_mut()
                .filter(|l| l.reverify)
                .for_each(|l| {
                    l.reverify = false;
                    l.listened = false;
                });
        }
        let dropped: Vec<(Arc<ConfigKey>, String)> = std::mem::take(&mut *lock(&self.dropped))
            .into_iter()
            .filter(|k| !lock(&self.listens).contains_key(k))
            .map(|k| (k, String::new()))
            .collect();
        if let Err(e) = self.listen_on(&link, &dropped, false).await {
            tracing::debug!(error = %Chain(&e), "nacos config unlisten failed");
        }
        let to_listen: Vec<(Arc<ConfigKey>, String)> = lock(&self.listens)
            .iter()
            .filter(|(_, l)| full || !l.listened)
            .map(|(k, l)| (k.clone(), l.md5.clone()))
            .collect();
        self.listen_on(&link, &to_listen, true).await?;
        // Taken out before the query: a push that comes meanwhile puts the config back.
        let pending: Vec<Arc<ConfigKey>> = std::mem::take(&mut *lock(&self.pending))
            .into_iter()
            .collect();
        let mut failed = None;
        for key in pending {
            if !lock(&self.listens).contains_key(&key) {
                continue;
            }
            // One config's failure (a 403 for its group) does not hold the others up.
            match self.query_on(&link, &key).await {
                Ok(item) => self.deliver(item),
                Err(e) => {
                    tracing::debug!(config = %key, error = %Chain(&e), "nacos config query failed");
                    if let Some(listen) = lock(&self.listens).get_mut(&key) {
                        listen.error = Some(Box::new(e.clone()));
                    }
                    lock(&self.pending).insert(key);
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Hands `item` to its watchers when it differs from what they have.
    fn deliver(&self, item: ConfigItem) {
        let mut listens = lock(&self.listens);
        let Some(listen) = listens.get_mut(&item.key) else {
            return;
        };
        listen.error = None;
        if listen.failover {
            // The server's content, kept out while the operator's file replaces it; its md5
            // is what the server is listened to with.
            listen.md5.clone_from(&item.md5);
            listen.error = None;
            return;
        }
        let (first, had_local) = {
            let current = listen.tx.borrow();
            (
                current.is_none(),
                current
                    .as_ref()
                    .is_some_and(|c| c.from_snapshot || c.from_failover),
            )
        };
        let replaces_local = had_local && !item.from_snapshot;
        if !first && listen.md5 == item.md5 && !replaces_local {
            return;
        }
        if !first {
            tracing::info!(config = %item.key, md5 = %item.md5,
                deleted = item.content.is_none(), "nacos config changed");
        }
        listen.md5.clone_from(&item.md5);
        listen.error = None;
        // Listened to again with the new md5 a moment later (see [`REVERIFY`]; some servers
        // also drop a listen when its config is deleted).
        listen.reverify = true;
        let item = Arc::new(item);
        listen.tx.send_replace(Some(item.clone()));
        drop(listens);
        self.keep(item);
        lock(&self.reverify).get_or_insert(tokio::time::Instant::now() + REVERIFY);
    }
}

impl Module for Center {
    fn redo<'a>(&'a self, link: &'a Link) -> BoxFuture<'a, (usize, usize)> {
        Box::pin(async move {
            let keys: Vec<(Arc<ConfigKey>, String)> = {
                let mut listens = lock(&self.listens);
                listens.values_mut().for_each(|l| l.listened = false);
                listens
                    .iter()
                    .map(|(k, l)| (k.clone(), l.md5.clone()))
                    .collect()
            };
            match self.listen_on(link, &keys, true).await {
                Ok(()) => {
                    self.wake();
                    (0, keys.len())
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e),
                        "nacos config listen on the new connection failed: trying again");
                    *lock(&self.reverify) = Some(tokio::time::Instant::now());
                    self.wake();
                    (0, 0)
                }
            }
        })
    }

    fn on_request(&self, kind: &str, json: &[u8]) -> Option<bool> {
        if kind != CONFIG_CHANGE_NOTIFY {
            return None;
        }
        let Ok(changed) = serde_json::from_slice::<Changed>(json) else {
            return Some(false);
        };
        let key = {
            let listens = lock(&self.listens);
            self.known(&listens, &changed)
        };
        if let Some(key) = key {
            lock(&self.pending).insert(key);
            self.wake();
        }
        Some(true)
    }
}

/// The task of a center: rounds when woken (a new watch, a push, a new connection), every
/// [`FULL_CHECK`] a full one, and after a failure again with a growing wait.
async fn run(center: Weak<Center>, wake: Arc<tokio::sync::Notify>) {
    let mut next_full = tokio::time::Instant::now() + FULL_CHECK;
    let mut wait = RETRY_FIRST;
    let mut failed = false;
    loop {
        let Some(strong) = center.upgrade() else {
            return;
        };
        strong.check_failover();
        let idle = lock(&strong.listens).is_empty() && lock(&strong.dropped).is_empty();
        let full = tokio::time::Instant::now() >= next_full;
        if idle {
            // Nothing to check: the next full check is a period from now, and nothing to
            // check again.
            next_full = tokio::time::Instant::now() + FULL_CHECK;
            *lock(&strong.reverify) = None;
        }
        if !idle {
            match strong.round(full).await {
                Ok(()) => {
                    *lock(&strong.failure) = None;
                    if full {
                        next_full = tokio::time::Instant::now() + FULL_CHECK;
                    }
                    if failed {
                        tracing::info!("nacos config listening works again");
                    }
                    failed = false;
                    wait = RETRY_FIRST;
                }
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %Chain(&e),
                            "nacos config listen or query failed: trying again");
                    }
                    failed = true;
                    *lock(&strong.failure) = Some(e);
                    strong.answer_from_snapshots();
                }
            }
        }
        let woken = {
            let notified = wake.notified();
            let reverify = *lock(&strong.reverify);
            let failover = strong.failover.is_some();
            drop(strong);
            let mut until = if failed {
                tokio::time::Instant::now() + wait.mul_f64(0.5 + fastrand::f64() * 0.5)
            } else {
                reverify.map_or(next_full, |at| at.min(next_full))
            };
            if failover {
                until = until.min(tokio::time::Instant::now() + FAILOVER_CHECK);
            }
            tokio::select! {
                () = notified => true,
                () = tokio::time::sleep_until(until) => false,
            }
        };
        if failed && !woken {
            // Over HTTP a try costs one request: every 2 s at most, as the Java 1.x
            // client's long polling after a failure.
            let max = match center.upgrade() {
                Some(c) if c.on_http.load(std::sync::atomic::Ordering::Relaxed) => {
                    http::HTTP_RETRY_MAX
                }
                _ => RETRY_MAX,
            };
            wait = (wait * 2).min(max);
        }
    }
}

/// Writes `item` to its snapshot file `path` (none without content), unless the file has
/// that content already. Failures are logged at debug level: the snapshot is a help, not a
/// duty.
fn write_snapshot(path: &Path, item: &ConfigItem) {
    let result = match &item.content {
        Some(content) => {
            if std::fs::read(path).ok().as_deref() == Some(content.as_bytes()) {
                return;
            }
            write_private(path, content.as_bytes())
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    if let Err(e) = result {
        tracing::debug!(config = %item.key, path = %path.display(), error = %e,
            "nacos config snapshot not written");
    }
}

/// `<dir>/<namespace>/<group>/<data id>`, each part with anything but ASCII letters,
/// digits, `-`, `_` and `.` percent-encoded (and a part of dots only too).
fn config_path(dir: &Path, key: &ConfigKey) -> PathBuf {
    let part = |name: &str| {
        let dots_only = name.chars().all(|c| c == '.');
        name.chars()
            .map(|c| {
                if !dots_only && (c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                    c.to_string()
                } else {
                    let mut buf = [0u8; 4];
                    c.encode_utf8(&mut buf)
                        .bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect()
                }
            })
            .collect::<String>()
    };
    dir.join(part(&key.namespace_id))
        .join(part(&key.group_name))
        .join(part(&key.data_id))
}

/// Writes `bytes` to `path` readable by this user only (0600 in a 0700 dir on Unix),
/// through a temporary file renamed over it (a reader never sees half a config).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    // `~` is always percent-encoded in snapshot names: no config's file looks like this.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}~{}-{n}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The lowercase hex MD5 of `content`'s UTF-8 bytes, as Nacos computes it.
pub(crate) fn md5_hex(content: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(content.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_is_lowercase_hex_of_the_utf8_bytes() {
        assert_eq!(md5_hex("hello"), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(md5_hex("héllo").len(), 32);
    }

    #[test]
    fn public_is_the_empty_tenant() {
        let key = |ns: &str| ConfigKey {
            namespace_id: ns.to_owned(),
            group_name: "G".to_owned(),
            data_id: "d".to_owned(),
        };
        assert_eq!(key("public").tenant(), "");
        assert_eq!(key("dev").tenant(), "dev");
    }
}
