//! The [`Registration`] handle every adapter holds, and what dropping its last clone does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::engine::{ANSWER_MARGIN, Engine, Entry};
use crate::error::Result;
use crate::instance::ServiceKey;
use crate::leaving::{Arrivals, is_probe};
use crate::listener::{ListenerState, listener_state};
use crate::settings::Config;
use crate::settings::LeavePolicy;
use crate::signals::{Shutdown, wait_for_signal};
use crate::status::{RegistrationState, StatusHandle};
use crate::task::{Command, Done, Mailbox, Task};

/// How a [`Registration`] learns where the app listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrSource {
    /// Watch the process's own listening sockets (Linux) and register once one appears;
    /// [`Registration::listening_on`] still takes precedence. What a bare `.layer()` uses.
    Detect,
    /// Wait for [`Registration::listening_on`]: the caller reports the bound address (a
    /// framework adapter that sees the listener, or an app off Linux).
    Reported,
}

/// One instance's registration with Nacos: the handle every adapter holds.
///
/// Created by [`Registration::new`]; cheap to clone (an `Arc`). The instance is registered
/// once the app listens, kept alive with beats, registered again when the server forgets
/// it, and deregistered on SIGTERM/SIGINT (see [`shutdown_signal`](Self::shutdown_signal)
/// and the crate docs' signal section), on [`deregister`](Registration::deregister), or
/// when the last clone is dropped.
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
    leave: LeavePolicy,
    handle_signals: bool,
    /// The engine's request counts (shared by every registration of the process); `None`
    /// when registration is disabled.
    arrivals: Option<Arc<Arrivals>>,
    probe_paths: Arc<[String]>,
}

impl Registration {
    /// Starts the registration `config` describes, finding the bound address by itself
    /// ([`AddrSource::Detect`]).
    ///
    /// With `NACOS_REGISTER_ENABLED=false` nothing starts: the handle is inert and its
    /// status says [`RegistrationState::Disabled`].
    ///
    /// # Errors
    /// [`Error::HttpClient`](crate::Error::HttpClient) when the HTTP client cannot be built.
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
            tracing::info!(service = %config.service_name(), "nacos registration is disabled (NACOS_REGISTER_ENABLED=false)");
            let key = Arc::new(ServiceKey::from(&config));
            return Ok(Registration {
                inner: Arc::new(Inner {
                    id: 0,
                    engine: None,
                    commands: None,
                    status: StatusHandle::new(RegistrationState::Disabled, key),
                    timeout: config.request_timeout(),
                    leave: config.leave_policy(),
                    handle_signals: config.handle_signals(),
                    arrivals: None,
                    probe_paths: config.probe_paths_shared(),
                }),
            });
        }
        Self::start(Engine::get(), config, source)
    }

    /// Starts the registration's task on `engine`.
    pub(crate) fn start(engine: Arc<Engine>, config: Config, source: AddrSource) -> Result<Self> {
        let client = engine.client_for(&config)?;
        let key = engine.service_key(&config)?;
        let status = StatusHandle::new(RegistrationState::WaitingForListener, key.clone());
        let commands = Arc::new(Mailbox::default());
        let timeout = config.request_timeout();
        let leave = config.leave_policy();
        let handle_signals = config.handle_signals();
        let probe_paths = config.probe_paths_shared();
        let id = engine.add(Entry {
            commands: commands.clone(),
            status: status.clone(),
            leave,
            timeout,
        });
        let task = Task {
            id,
            config: Arc::new(config),
            key,
            client,
            status: status.clone(),
            detect_listener: source == AddrSource::Detect,
            events: engine.clone(),
        };
        engine.runtime.spawn(task.run(commands.clone()));
        let arrivals = Some(engine.signals.arrivals.clone());
        Ok(Registration {
            inner: Arc::new(Inner {
                id,
                engine: Some(engine),
                commands: Some(commands),
                status,
                timeout,
                leave,
                handle_signals,
                arrivals,
                probe_paths,
            }),
        })
    }

    /// Tells the registration where the app listens (the framework's bound address).
    /// A wildcard or loopback IP is replaced by the detected one; `NACOS_IP`/`NACOS_PORT`
    /// win over it. Calling it again with another address moves the instance: the old one
    /// is deregistered first.
    pub fn listening_on(&self, addr: SocketAddr) {
        if let Some(tx) = &self.inner.commands {
            drop(tx.send(Command::Bound(addr)));
        }
    }

    /// The former name of [`listening_on`](Self::listening_on).
    #[deprecated(since = "0.1.1", note = "renamed to `listening_on`")]
    pub fn bound(&self, addr: SocketAddr) {
        self.listening_on(addr);
    }

    /// Whether the app is leaving: a signal came and the instance is (being) deregistered,
    /// so every request is to be noted with [`note_request`](Self::note_request) until the
    /// app drains. One relaxed atomic load: what an adapter pays per request before that.
    #[inline]
    pub fn is_leaving(&self) -> bool {
        self.inner.arrivals.as_ref().is_some_and(|a| a.is_leaving())
    }

    /// Notes a request that arrived while the app is leaving (see
    /// [`is_leaving`](Self::is_leaving)): a caller's request keeps the app serving on, a
    /// health check or a scrape (told by `path`, the request's path, and `user_agent`, its
    /// `User-Agent` header: [`is_probe`](crate::is_probe)) does not. Adapters call it for
    /// every request while [`is_leaving`](Self::is_leaving) says so; the framework adapters
    /// of this project do.
    pub fn note_request(&self, path: &str, user_agent: Option<&[u8]>) {
        if let Some(arrivals) = &self.inner.arrivals {
            arrivals.note(is_probe(&self.inner.probe_paths, path, user_agent));
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

    /// Whether the instance is (being) registered while the app no longer listens on its
    /// port: the server was stopped without a signal (e.g. through actix's `ServerHandle`).
    /// `false` when it cannot be told (no `/proc`); see the `listener` module for how a
    /// closed listener is told from an open one (5 ms to 110 ms when it looks closed).
    pub fn stopped_listening(&self) -> bool {
        let status = self.inner.status.snapshot();
        if !matches!(
            status.state,
            RegistrationState::Registering | RegistrationState::Registered
        ) {
            return false;
        }
        let Some(bound) = status.bound else {
            return false;
        };
        listener_state(&[bound]) == ListenerState::Closed
    }

    /// Deregisters now and stops beating; later calls, signals and drops do nothing more.
    /// Resolves when the server answered or the request timeout (plus 500 ms) passed.
    ///
    /// # Cancellation safety
    /// Dropping the future does not cancel the deregistration.
    pub async fn deregister(&self) {
        let Some(tx) = &self.inner.commands else {
            return;
        };
        let (done, rx) = oneshot::channel();
        if tx.send(Command::Deregister(Done::Async(done))).is_ok() {
            drop(tokio::time::timeout(self.inner.timeout + ANSWER_MARGIN, rx).await);
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

    /// A future for an app's graceful-shutdown trigger (axum's `with_graceful_shutdown`,
    /// actix's `HttpServer::shutdown_signal`): resolves after SIGTERM or SIGINT once every
    /// instance is deregistered and the app has served on while its callers still came
    /// (at least `NACOS_DEREGISTER_GRACE`, then until none came for
    /// `NACOS_DEREGISTER_QUIET`, at most `NACOS_DEREGISTER_GRACE_MAX`: see
    /// [`LeavePolicy`](crate::LeavePolicy)). Asking for it tells the engine the app drains
    /// by itself, so the signal's default action is never applied to it (a second signal
    /// still is).
    ///
    /// With `NACOS_HANDLE_SIGNALS=false` the future listens for the signals itself, in the
    /// caller's runtime, then deregisters this registration and serves on the same way.
    /// With registration disabled it resolves on SIGTERM or SIGINT directly.
    ///
    /// # Cancellation safety
    /// Dropping the future before a signal changes nothing; dropping it after the signal
    /// does not cancel the deregistration.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        enum Wait {
            Engine(tokio::sync::watch::Receiver<Shutdown>),
            Own(Registration),
            Signal,
        }
        let wait = match &self.inner.engine {
            Some(engine) if self.inner.handle_signals => {
                Wait::Engine(engine.signals.app_drains(engine))
            }
            Some(_) => Wait::Own(self.clone()),
            None => Wait::Signal,
        };
        async move {
            match wait {
                Wait::Engine(mut rx) => drop(rx.wait_for(|s| *s == Shutdown::Drain).await),
                Wait::Own(registration) => {
                    wait_for_signal().await;
                    let arrivals = registration.inner.arrivals.clone().unwrap_or_default();
                    arrivals.start();
                    registration.deregister().await;
                    crate::leaving::after_deregistration(&arrivals, registration.inner.leave).await;
                }
                Wait::Signal => wait_for_signal().await,
            }
        }
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
        let _ = rx.recv_timeout(timeout + ANSWER_MARGIN);
    }
}
