//! The process-wide engine: the `nacos-registrar` thread and runtime every registration's
//! task runs on, and the tables registrations share (clients, service keys, the
//! `service#ip#port` claims, the live registrations).
//!
//! The engine runs on its own thread with its own single-threaded tokio runtime, as the Java
//! client runs its own `beat.sender` executor: it outlives the app's runtime, so a
//! deregistration still goes out while that runtime shuts down. Handles talk to it through
//! mailboxes and never block, except the last [`Registration`](crate::Registration)'s
//! `Drop`, which waits (bounded by the request timeout) for the deregistration to finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::client::NamingClient;
use crate::error::Result;
use crate::instance::ServiceKey;
use crate::settings::LeavePolicy;
use crate::settings::{ApiVersion, Config, Secret, ServerAddr};
use crate::signals::{Registrations, Signals};
use crate::status::StatusHandle;
use crate::task::{Command, Done, Mailbox, TaskEvents};

/// Extra time a waiter gives the engine beyond the request timeout to answer.
pub(crate) const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// A live registration, as the engine sees it.
pub(crate) struct Entry {
    pub(crate) commands: Arc<Mailbox>,
    pub(crate) status: StatusHandle,
    pub(crate) leave: LeavePolicy,
    pub(crate) timeout: Duration,
}

/// What makes two registrations able to share one [`NamingClient`] (and its connections).
/// The namespace is part of it, as the Java client keeps one `NamingService` (and one gRPC
/// connection) per namespace: a pushed list names its service and group but not its
/// namespace, so watches of one service in two namespaces need two connections.
#[derive(PartialEq, Eq, Hash)]
struct ClientKey {
    servers: Vec<ServerAddr>,
    namespace_id: String,
    context_path: String,
    username: Option<String>,
    password: Option<Secret>,
    api: ApiVersion,
    grpc_port_offset: u16,
    request_timeout: Duration,
}

impl ClientKey {
    fn of(config: &Config) -> Self {
        ClientKey {
            servers: config.server_addrs().to_vec(),
            namespace_id: config.namespace_id().to_owned(),
            context_path: config.context_path().to_owned(),
            username: config.username().map(str::to_owned),
            password: config.password().cloned(),
            api: config.api(),
            grpc_port_offset: config.grpc_port_offset(),
            request_timeout: config.request_timeout(),
        }
    }
}

pub(crate) struct Engine {
    pub(crate) runtime: tokio::runtime::Handle,
    clients: Mutex<HashMap<ClientKey, Weak<NamingClient>>>,
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    keys: Mutex<HashMap<String, u64>>,
    service_keys: Mutex<HashMap<ServiceKey, Weak<ServiceKey>>>,
    /// SIGTERM/SIGINT handling (see the `signals` module).
    pub(crate) signals: Signals,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();

/// The value `table` shares under `key` while any holder keeps it alive, or a new one
/// from `make`; entries nobody holds any more are dropped when a new one is made.
fn shared<K: Eq + std::hash::Hash, V>(
    table: &Mutex<HashMap<K, Weak<V>>>,
    key: K,
    make: impl FnOnce(&K) -> Result<Arc<V>>,
) -> Result<Arc<V>> {
    let mut table = lock(table);
    if let Some(value) = table.get(&key).and_then(Weak::upgrade) {
        return Ok(value);
    }
    table.retain(|_, weak| weak.strong_count() > 0);
    let value = make(&key)?;
    table.insert(key, Arc::downgrade(&value));
    Ok(value)
}

/// Locks `mutex`, taking the data of a poisoned one as it is (every table holds plain
/// data that a panic cannot leave half-written).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// The engine, started on first use.
    ///
    /// # Panics
    /// When the OS refuses the engine's thread or its runtime cannot start.
    pub(crate) fn get() -> Arc<Engine> {
        ENGINE
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("nacos-registrar".into())
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .thread_name("nacos-registrar")
                            .build()
                            .expect("the nacos-registrar runtime cannot start");
                        drop(tx.send(runtime.handle().clone()));
                        runtime.block_on(std::future::pending::<()>());
                    })
                    .expect("the nacos-registrar thread cannot start");
                let runtime = rx.recv().expect("the nacos-registrar runtime cannot start");
                crate::metrics::describe();
                Arc::new(Engine::on(runtime))
            })
            .clone()
    }

    /// An engine whose tasks run on `runtime`.
    pub(crate) fn on(runtime: tokio::runtime::Handle) -> Engine {
        Engine {
            runtime,
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            entries: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            service_keys: Mutex::new(HashMap::new()),
            signals: Signals::default(),
        }
    }

    /// The client for `config`'s servers, namespace and credentials, shared by every
    /// registration and watch that talks to the same cluster the same way (one connection,
    /// one login).
    pub(crate) fn client_for(&self, config: &Config) -> Result<Arc<NamingClient>> {
        shared(&self.clients, ClientKey::of(config), |_| {
            NamingClient::new(config)
        })
    }

    /// The key of `config`'s service, one `Arc` for every registration of the same
    /// service (a sidecar registers many instances of a few services).
    pub(crate) fn service_key(&self, config: &Config) -> Result<Arc<ServiceKey>> {
        shared(&self.service_keys, ServiceKey::from(config), |key| {
            Ok(Arc::new(key.clone()))
        })
    }

    /// A new registration id and its entry.
    pub(crate) fn add(&self, entry: Entry) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.entries).insert(id, entry);
        id
    }

    /// How many registrations are live.
    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Deregisters every registration and waits for them (bounded by the largest request
    /// timeout plus [`ANSWER_MARGIN`]); returns the widest leave policy and the bound
    /// addresses.
    pub(crate) async fn deregister_all(&self) -> (LeavePolicy, Vec<SocketAddr>) {
        let mut waits = Vec::new();
        let mut leave = LeavePolicy::NONE;
        let mut limit = Duration::ZERO;
        let mut bound = Vec::new();
        for entry in lock(&self.entries).values() {
            let (tx, rx) = oneshot::channel();
            if entry
                .commands
                .send(Command::Deregister(Done::Async(tx)))
                .is_ok()
            {
                waits.push(rx);
            }
            leave = leave.widest(entry.leave);
            limit = limit.max(entry.timeout);
            bound.extend(entry.status.snapshot().bound);
        }
        let all = async {
            for rx in waits {
                drop(rx.await);
            }
        };
        drop(tokio::time::timeout(limit + ANSWER_MARGIN, all).await);
        (leave, bound)
    }
}

impl Registrations for Engine {
    fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn deregister_all(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = (LeavePolicy, Vec<SocketAddr>)> + Send + '_>> {
        Box::pin(Engine::deregister_all(self))
    }
}

impl TaskEvents for Engine {
    fn claim(&self, key: String, id: u64) {
        let old = lock(&self.keys).insert(key, id);
        if let Some(old) = old.filter(|old| *old != id) {
            if let Some(entry) = lock(&self.entries).get(&old) {
                drop(entry.commands.send(Command::Replaced));
            }
        }
    }

    fn unclaim(&self, key: &str, id: u64) {
        let mut keys = lock(&self.keys);
        if keys.get(key) == Some(&id) {
            keys.remove(key);
        }
    }

    fn release(&self, id: u64) {
        lock(&self.entries).remove(&id);
    }

    fn registering(self: Arc<Self>, handle_signals: bool) {
        if handle_signals {
            self.signals.arm(&self);
        }
    }
}
