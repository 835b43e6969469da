//! The registrar: the process-wide engine, the [`Registration`] handle and signal handling.
//!
//! The engine runs on its own thread (`nacos-registrar`) with its own single-threaded tokio
//! runtime, as the Java client runs its own `beat.sender` executor: it outlives the app's
//! runtime, so deregistration still works while that runtime shuts down. Handles talk to it
//! through channels and never block, except [`Registration`]'s `Drop`, which waits (bounded
//! by the request timeout) for the deregistration to finish.
//!
//! # Signals
//! The first registration installs a SIGTERM and SIGINT listener. On either signal every
//! registration is deregistered, then `NACOS_DEREGISTER_GRACE` passes, then:
//! - if the app awaits [`Registration::shutdown_signal`] (its graceful-shutdown trigger),
//!   that future resolves and the app drains as usual;
//! - otherwise the app's listening socket is watched for up to [`EXIT_WAIT`]: an app with
//!   its own graceful shutdown closes it and exits by itself; an app that would have died
//!   on the signal is ended the way the signal's default action ends it (same exit status).
//!
//! So installing the listener does not change what the app does on the signal, and the
//! instance leaves Nacos before the app stops serving.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::addr::own_listeners;
use crate::beat::{BeatTask, Claims, Command, Done, Mailbox};
use crate::client::NamingClient;
use crate::config::Config;
use crate::error::Result;
use crate::instance::ServiceKey;
use crate::status::{RegistrationState, StatusHandle};

/// How long, after deregistering on a signal, the engine waits for an app that did not
/// ask for [`Registration::shutdown_signal`] to close its listener before it applies the
/// signal's default action.
pub const EXIT_WAIT: Duration = Duration::from_millis(500);

/// Extra time `Drop` waits beyond the request timeout for the engine to answer.
const DROP_MARGIN: Duration = Duration::from_millis(500);

/// The shutdown progress the engine publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Running,
    /// A signal arrived; every registration is deregistered and the grace has passed.
    Drain,
}

struct Entry {
    commands: Arc<Mailbox>,
    status: StatusHandle,
    grace: Duration,
    timeout: Duration,
}

/// What makes two registrations able to share one [`NamingClient`] (and its connections).
#[derive(PartialEq, Eq, Hash)]
struct ClientKey {
    servers: Vec<crate::config::ServerAddr>,
    context_path: String,
    username: Option<String>,
    password: Option<crate::config::Secret>,
    api: crate::config::ApiVersion,
    request_timeout: Duration,
}

impl ClientKey {
    fn of(config: &Config) -> Self {
        ClientKey {
            servers: config.server_addrs().to_vec(),
            context_path: config.context_path().to_owned(),
            username: config.username().map(str::to_owned),
            password: config.password().cloned(),
            api: config.api(),
            request_timeout: config.request_timeout(),
        }
    }
}

struct Engine {
    runtime: tokio::runtime::Handle,
    clients: Mutex<HashMap<ClientKey, Weak<NamingClient>>>,
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    keys: Mutex<HashMap<String, u64>>,
    service_keys: Mutex<HashMap<ServiceKey, Weak<ServiceKey>>>,
    signals: Once,
    app_drains: AtomicBool,
    shutdown: watch::Sender<Shutdown>,
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
    make: impl FnOnce(&K) -> Result<V>,
) -> Result<Arc<V>> {
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = table.get(&key).and_then(Weak::upgrade) {
        return Ok(value);
    }
    table.retain(|_, weak| weak.strong_count() > 0);
    let value = Arc::new(make(&key)?);
    table.insert(key, Arc::downgrade(&value));
    Ok(value)
}

impl Engine {
    fn get() -> Arc<Engine> {
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
                Arc::new(Engine {
                    runtime,
                    clients: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(1),
                    entries: Mutex::new(HashMap::new()),
                    keys: Mutex::new(HashMap::new()),
                    service_keys: Mutex::new(HashMap::new()),
                    signals: Once::new(),
                    app_drains: AtomicBool::new(false),
                    shutdown: watch::channel(Shutdown::Running).0,
                })
            })
            .clone()
    }

    /// The client for `config`'s servers and credentials, shared by every registration
    /// that talks to the same cluster the same way (one connection pool, one login).
    fn client_for(&self, config: &Config) -> Result<Arc<NamingClient>> {
        shared(&self.clients, ClientKey::of(config), |_| {
            NamingClient::new(config)
        })
    }

    /// The key of `config`'s service, one `Arc` for every registration of the same
    /// service (a sidecar registers many instances of a few services).
    fn service_key(&self, config: &Config) -> Result<Arc<ServiceKey>> {
        shared(&self.service_keys, ServiceKey::from(config), |key| {
            Ok(key.clone())
        })
    }

    fn install_signals(self: &Arc<Self>) {
        #[cfg(unix)]
        self.signals.call_once(|| {
            use tokio::signal::unix::{signal, SignalKind};
            // Registered here, synchronously, so no signal slips between this call and the
            // first registration.
            let _guard = self.runtime.enter();
            let (term, int) = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => (term, int),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT: the instance will not be deregistered on a signal");
                    return;
                }
            };
            let engine = self.clone();
            self.runtime.spawn(engine.on_signals(term, int));
        });
    }

    #[cfg(unix)]
    async fn on_signals(
        self: Arc<Self>,
        mut term: tokio::signal::unix::Signal,
        mut int: tokio::signal::unix::Signal,
    ) {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let (signo, name) = tokio::select! {
            _ = term.recv() => (SIGTERM, "SIGTERM"),
            _ = int.recv() => (SIGINT, "SIGINT"),
        };
        let started = std::time::Instant::now();
        let count = self.entries.lock().unwrap_or_else(|e| e.into_inner()).len();
        tracing::info!(
            signal = name,
            registrations = count,
            "deregistering from nacos before shutdown"
        );
        let (grace, bound) = self.deregister_all().await;
        if !grace.is_zero() {
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "waiting NACOS_DEREGISTER_GRACE before draining"
            );
            tokio::time::sleep(grace).await;
        }
        self.shutdown.send_replace(Shutdown::Drain);
        if self.app_drains.load(Ordering::SeqCst) {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "app drains on its own"
            );
            return;
        }
        // Nobody asked us to trigger a drain: wait for the app to close its listener (its
        // own graceful shutdown), else do what the signal would have done.
        let deadline = tokio::time::Instant::now() + EXIT_WAIT;
        let mut misses = 0;
        loop {
            // Closed = gone from /proc twice in a row and refusing a connection: a table
            // read while other sockets come and go can skip an entry once.
            if still_listening(&bound) {
                misses = 0;
            } else {
                misses += 1;
                if misses >= 2 && refuses_connections(&bound).await {
                    tracing::debug!("the app closed its listener: it shuts down on its own");
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(signal = name, "exiting as the signal's default action does");
        if let Err(e) = signal_hook::low_level::emulate_default_handler(signo) {
            tracing::error!(error = %e, "cannot apply the signal's default action");
        }
    }

    /// Deregisters every registration; returns the largest grace and the bound addresses.
    async fn deregister_all(&self) -> (Duration, Vec<SocketAddr>) {
        let mut waits = Vec::new();
        let mut grace = Duration::ZERO;
        let mut limit = Duration::ZERO;
        let mut bound = Vec::new();
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries.values() {
                let (tx, rx) = oneshot::channel();
                if entry
                    .commands
                    .send(Command::Deregister(Done::Async(tx)))
                    .is_ok()
                {
                    waits.push(rx);
                }
                grace = grace.max(entry.grace);
                limit = limit.max(entry.timeout);
                bound.extend(entry.status.snapshot().bound);
            }
        }
        let all = async {
            for rx in waits {
                drop(rx.await);
            }
        };
        drop(tokio::time::timeout(limit + DROP_MARGIN, all).await);
        (grace, bound)
    }
}

impl Claims for Engine {
    fn claim(&self, key: String, id: u64) {
        let old = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, id);
        if let Some(old) = old.filter(|old| *old != id) {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get(&old) {
                drop(entry.commands.send(Command::Replaced));
            }
        }
    }

    fn unclaim(&self, key: &str, id: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.get(key) == Some(&id) {
            keys.remove(key);
        }
    }

    fn release(&self, id: u64) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// How a [`Registration`] learns where the app listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrSource {
    /// Watch the process's own listening sockets (Linux) and register once one appears;
    /// [`Registration::bound`] still takes precedence. What a bare `.layer()` uses.
    Detect,
    /// Wait for [`Registration::bound`]: the framework adapter reports the bound address.
    Adapter,
}

/// One instance's registration with Nacos: the handle every adapter holds.
///
/// Created by [`Registration::new`]; cheap to clone (an `Arc`). The instance is registered
/// once the app listens, kept alive with beats, registered again when the server forgets
/// it, and deregistered on SIGTERM/SIGINT (see the module docs), on
/// [`deregister`](Registration::deregister), or when the last clone is dropped.
///
/// Dropping the last clone blocks the dropping thread until the deregistration finished or
/// the request timeout (plus 500 ms) passed, so an app whose `main` returns does not leave
/// a ghost instance behind. That holds when the last clone goes on a thread the process
/// waits for (the main thread, a runtime shutting down); a clone dropped on a detached
/// thread as `main` returns may be cut short by the exit: call
/// [`deregister_blocking`](Registration::deregister_blocking) on a thread that is waited for.
#[derive(Debug, Clone)]
#[must_use = "dropping the last Registration deregisters the instance"]
pub struct Registration {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: u64,
    engine: Option<Arc<Engine>>,
    commands: Option<Arc<Mailbox>>,
    status: StatusHandle,
    timeout: Duration,
}

impl Registration {
    /// Starts the registration `config` describes, finding the bound address by itself
    /// ([`AddrSource::Detect`]).
    ///
    /// With `NACOS_REGISTER_ENABLED=false` nothing starts: the handle is inert and its
    /// status says [`RegistrationState::Disabled`].
    ///
    /// # Errors
    /// [`Error::Transport`](crate::Error::Transport) when the HTTP client cannot be built.
    ///
    /// # Panics
    /// When the engine's thread or runtime cannot be started (the OS refuses a thread).
    pub fn new(config: Config) -> Result<Self> {
        Self::with_addr_source(config, AddrSource::Detect)
    }

    /// As [`new`](Self::new), choosing how the bound address is learnt.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub fn with_addr_source(config: Config, source: AddrSource) -> Result<Self> {
        if !config.register_enabled() {
            let key = Arc::new(ServiceKey::from(&config));
            let status = StatusHandle::new(RegistrationState::Disabled, key);
            tracing::info!(service = %config.service_name(), "nacos registration is disabled (NACOS_REGISTER_ENABLED=false)");
            return Ok(Registration {
                inner: Arc::new(Inner {
                    id: 0,
                    engine: None,
                    commands: None,
                    status,
                    timeout: config.request_timeout(),
                }),
            });
        }
        let engine = Engine::get();
        let client = engine.client_for(&config)?;
        let key = engine.service_key(&config)?;
        let status = StatusHandle::new(RegistrationState::Disabled, key.clone());
        engine.install_signals();
        let id = engine.next_id.fetch_add(1, Ordering::Relaxed);
        let tx = Arc::new(Mailbox::default());
        let rx = tx.clone();
        status.update(|s| s.state = RegistrationState::WaitingForListener);
        let timeout = config.request_timeout();
        engine
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Entry {
                    commands: tx.clone(),
                    status: status.clone(),
                    grace: config.deregister_grace(),
                    timeout,
                },
            );
        let task = BeatTask {
            id,
            config: Arc::new(config),
            key,
            client,
            status: status.clone(),
            detect_listener: source == AddrSource::Detect,
            claims: engine.clone(),
        };
        engine.runtime.spawn(task.run(rx));
        Ok(Registration {
            inner: Arc::new(Inner {
                id,
                engine: Some(engine),
                commands: Some(tx),
                status,
                timeout,
            }),
        })
    }

    /// Tells the registration where the app listens (the framework's bound address).
    /// A wildcard or loopback IP is replaced by the detected one; `NACOS_IP`/`NACOS_PORT`
    /// win over it. Calling it again with another address moves the instance.
    pub fn bound(&self, addr: SocketAddr) {
        if let Some(tx) = &self.inner.commands {
            drop(tx.send(Command::Bound(addr)));
        }
    }

    /// The registration's status, for a health endpoint.
    pub fn status(&self) -> StatusHandle {
        self.inner.status.clone()
    }

    /// Whether registration is switched on (`NACOS_REGISTER_ENABLED`).
    pub fn is_enabled(&self) -> bool {
        self.inner.commands.is_some()
    }

    /// Deregisters now and stops beating; later calls, signals and drops do nothing more.
    /// Resolves when the server answered or the request timeout passed.
    ///
    /// # Cancellation safety
    /// Dropping the future does not cancel the deregistration.
    pub async fn deregister(&self) {
        let Some(tx) = &self.inner.commands else {
            return;
        };
        let (done, rx) = oneshot::channel();
        if tx.send(Command::Deregister(Done::Async(done))).is_ok() {
            drop(tokio::time::timeout(self.inner.timeout + DROP_MARGIN, rx).await);
        }
    }

    /// Deregisters now, blocking the calling thread until the server answered or the
    /// request timeout (plus 500 ms) passed: what dropping the last handle does, callable
    /// on any handle (e.g. from a framework's shutdown hook on a thread the process waits
    /// for). Later calls, signals and drops do nothing more.
    pub fn deregister_blocking(&self) {
        if let Some(tx) = &self.inner.commands {
            deregister_and_wait(tx, self.inner.timeout);
        }
    }

    /// A future for an app's graceful-shutdown trigger (axum's `with_graceful_shutdown`):
    /// resolves after SIGTERM or SIGINT once every instance is deregistered and
    /// `NACOS_DEREGISTER_GRACE` has passed. Asking for it tells the engine the app drains by
    /// itself, so the signal's default action is not applied.
    ///
    /// With registration disabled it resolves on SIGTERM or SIGINT directly.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let engine = self.inner.engine.clone();
        let mut rx = engine.as_ref().map(|engine| {
            engine.app_drains.store(true, Ordering::SeqCst);
            engine.shutdown.subscribe()
        });
        async move {
            match rx.as_mut() {
                Some(rx) => drop(rx.wait_for(|s| *s == Shutdown::Drain).await),
                None => wait_for_signal().await,
            }
        }
    }
}

/// Whether the app still listens: on one of the registered ports, or (none registered
/// yet) on any port. Without `/proc` it is assumed to.
fn still_listening(bound: &[SocketAddr]) -> bool {
    match own_listeners() {
        Some(listeners) if bound.is_empty() => !listeners.is_empty(),
        Some(listeners) => bound
            .iter()
            .any(|b| listeners.iter().any(|l| l.port() == b.port())),
        None => true,
    }
}

/// Whether every registered port refuses a loopback connection (true with none registered).
async fn refuses_connections(bound: &[SocketAddr]) -> bool {
    for addr in bound {
        let ip: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        let target = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
            SocketAddr::new(ip, addr.port())
        } else {
            *addr
        };
        let connect = tokio::net::TcpStream::connect(target);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), connect).await {
            return false;
        }
    }
    true
}

/// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere) in the caller's runtime.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        drop(tokio::signal::ctrl_c().await);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tx) = self.commands.take() {
            deregister_and_wait(&tx, self.timeout);
        }
        tracing::trace!(id = self.id, "registration handle dropped");
    }
}

/// Asks the task to deregister and blocks until it did, or `timeout` plus 500 ms passed.
fn deregister_and_wait(tx: &Mailbox, timeout: Duration) {
    let (done, rx) = std::sync::mpsc::channel();
    if tx.send(Command::Deregister(Done::Sync(done))).is_ok() {
        let _ = rx.recv_timeout(timeout + DROP_MARGIN);
    }
}
