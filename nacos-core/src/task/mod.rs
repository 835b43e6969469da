//! One registration's life, as one task on the engine's runtime: wait for the app to
//! listen, register, beat, register again when the server forgot the instance, and send the
//! deregistration. The job of the Java client's `BeatReactor` for one instance.
//!
//! - [`mailbox`]: the commands a task receives (bound address, deregister, replaced);
//! - [`timing`]: the beat grid, the first beat's spread, the backoff after a failure.
//!
//! The task waits for the app to listen, registers, then beats:
//!
//! - the first beat comes 50-100 % of an interval after the registration (spreading the
//!   beats of a process that registers many instances at once);
//! - the first beat after a registration carries the [`BeatInfo`] body; the next ones are
//!   light (no body) while the server answers `lightBeatEnabled: true`;
//! - the next beat is due the server's `clientBeatInterval` (when it gives one, > 0), else
//!   the configured interval, after the previous one was due (fixed rate: the time a request
//!   takes does not accumulate), rounded up to a 20 ms grid so that beats due together are
//!   sent in one wake-up;
//! - `code: 20404` (v1) or `21003` (v3): the server no longer knows the instance ->
//!   register again at once;
//! - a failed request is logged with the count of failures in a row and retried after
//!   `min(interval, 250 ms * 2^(failures - 1))`, jittered down to half of that, so the first
//!   try after a server comes back is at most one interval later. The retry registers
//!   again with full data, since a server that was unreachable may have restarted and lost
//!   the instance;
//! - one request at a time: a request that hangs ends at the request timeout, and a
//!   deregistration does not wait for it (the request is dropped).
//!
//! The loop ends only on deregistration or replacement; it never stops on an error.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until, timeout};

use crate::addr::advertised_addr;
use crate::client::{ConnectionChange, Kept, NamingClient, Seen};
use crate::error::{Error, Result};
use crate::instance::{BeatInfo, BeatResult, Instance, ServiceKey};
use crate::listener::{Listening, choose_listener, detect_pause, own_listeners};
use crate::settings::Config;
use crate::status::{RegistrationState, StatusHandle};

pub(crate) mod mailbox;
pub(crate) mod timing;

pub(crate) use mailbox::{Command, Done, Mailbox};
use timing::{first_beat_delay, on_tick, retry_delay};

/// How long to wait before trying again to find the IP to advertise.
const ADDRESS_RETRY: Duration = Duration::from_secs(5);

/// The step a task takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Look for the app's listening socket.
    Detect,
    /// Work out the advertised address.
    Resolve,
    /// Register with full data.
    Register,
    /// Beat, with the body when `full`.
    Beat { full: bool },
    /// Kept alive by the gRPC connection: wait for it to change.
    Held,
    /// Nothing until a command arrives.
    Idle,
}

/// What woke a task: a command or the end of its step.
enum Event {
    Command(Command),
    Outcome(Outcome),
}

enum Outcome {
    Detected(Listening),
    Registered(Result<Kept>),
    Beat(Result<BeatResult>),
    Connection(ConnectionChange),
    Nothing,
}

/// What the engine hears from a task.
pub(crate) trait TaskEvents: Send + Sync + 'static {
    /// Claims `key` (`service#ip#port`) for registration `id`; an older holder is replaced.
    fn claim(&self, key: String, id: u64);
    /// Gives up `key` if registration `id` still holds it.
    fn unclaim(&self, key: &str, id: u64);
    /// Registration `id`'s task has ended (its claim given up first): forget it.
    fn release(&self, id: u64);
    /// A registration request is about to go out (the engine starts listening for signals
    /// when `handle_signals`).
    fn registering(self: Arc<Self>, handle_signals: bool);
}

/// The naming requests a task sends: [`NamingClient`] in the engine, a scripted fake in the
/// task's tests (which run on tokio's paused clock).
pub(crate) trait Naming: Send + Sync + 'static {
    /// Waits for one of the client's in-flight slots, held until the permit is dropped.
    fn admit(&self) -> impl Future<Output = tokio::sync::OwnedSemaphorePermit> + Send;
    /// Registers the instance; says how it is kept alive.
    fn register(
        &self,
        key: &ServiceKey,
        instance: &Arc<Instance>,
    ) -> impl Future<Output = Result<Kept>> + Send;
    /// Resolves when a connection to Nacos comes up after this call (never for HTTP).
    fn connected(&self) -> impl Future<Output = ()> + Send;
    /// Waits until the connection keeping `key`'s instances is no longer as `seen` (never
    /// resolves for instances kept by beats).
    fn connection_change(
        &self,
        key: &ServiceKey,
        seen: Seen,
    ) -> impl Future<Output = ConnectionChange> + Send;
    /// Beats, with the body for a full beat.
    fn beat(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        body: Option<&BeatInfo>,
    ) -> impl Future<Output = Result<BeatResult>> + Send;
    /// Deregisters the instance.
    fn deregister(
        &self,
        key: &ServiceKey,
        instance: &Instance,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The API requests go over (`"grpc"`, `"v3"`, `"v1"`), once known.
    fn api_in_use(&self) -> Option<&'static str> {
        None
    }
    /// Over gRPC, the server of the connection keeping the instance.
    fn grpc_server(&self) -> Option<Arc<str>> {
        None
    }
    /// A lost connection whose server's cluster peers may still list the instance: that
    /// server, how long ago, and how long its peers may keep the copy.
    fn copies_may_remain(&self) -> Option<(Arc<str>, Duration, Duration)> {
        None
    }
    /// Whether an instance kept by beats is to move to the gRPC connection (checked before
    /// each beat).
    fn grpc_found(&self) -> bool {
        false
    }
    /// Moves an instance kept by beats to the gRPC connection.
    fn move_to_grpc(
        &self,
        key: &ServiceKey,
        instance: &Arc<Instance>,
    ) -> impl Future<Output = Result<Kept>> + Send {
        self.register(key, instance)
    }
    /// Opens the connection to Nacos ahead of the first request, where there is one to open.
    fn prepare(&self) {}
}

impl Naming for NamingClient {
    fn admit(&self) -> impl Future<Output = tokio::sync::OwnedSemaphorePermit> + Send {
        NamingClient::admit(self)
    }
    fn api_in_use(&self) -> Option<&'static str> {
        NamingClient::api_in_use(self)
    }
    fn grpc_server(&self) -> Option<Arc<str>> {
        NamingClient::grpc_server(self)
    }
    fn copies_may_remain(&self) -> Option<(Arc<str>, Duration, Duration)> {
        NamingClient::copies_may_remain(self)
    }
    fn grpc_found(&self) -> bool {
        NamingClient::grpc_found(self)
    }
    fn move_to_grpc(
        &self,
        key: &ServiceKey,
        instance: &Arc<Instance>,
    ) -> impl Future<Output = Result<Kept>> + Send {
        NamingClient::move_to_grpc(self, key, instance)
    }
    fn prepare(&self) {
        NamingClient::prepare(self);
    }
    fn register(
        &self,
        key: &ServiceKey,
        instance: &Arc<Instance>,
    ) -> impl Future<Output = Result<Kept>> + Send {
        NamingClient::register_kept(self, key, instance)
    }
    fn connection_change(
        &self,
        key: &ServiceKey,
        seen: Seen,
    ) -> impl Future<Output = ConnectionChange> + Send {
        NamingClient::connection_change(self, key, seen)
    }
    fn connected(&self) -> impl Future<Output = ()> + Send {
        NamingClient::connected(self)
    }
    fn beat(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        body: Option<&BeatInfo>,
    ) -> impl Future<Output = Result<BeatResult>> + Send {
        NamingClient::beat(self, key, instance, body)
    }
    fn deregister(
        &self,
        key: &ServiceKey,
        instance: &Instance,
    ) -> impl Future<Output = Result<()>> + Send {
        NamingClient::deregister(self, key, instance)
    }
}

pub(crate) struct Task<C = NamingClient> {
    pub(crate) id: u64,
    pub(crate) config: Arc<Config>,
    /// Shared by every registration of the same service.
    pub(crate) key: Arc<ServiceKey>,
    pub(crate) client: Arc<C>,
    pub(crate) status: StatusHandle,
    pub(crate) detect_listener: bool,
    pub(crate) events: Arc<dyn TaskEvents>,
}

struct Run {
    step: Step,
    next: Instant,
    bound: Option<SocketAddr>,
    instance: Option<Arc<Instance>>,
    /// Whether a registration may have reached the server (so deregistration is due).
    attempted: bool,
    failures: u32,
    interval: Duration,
    /// The connection keeping the instance, when it is kept by one.
    seen: Seen,
    detect_started: Instant,
    ambiguity_logged: bool,
}

impl<C: Naming> Task<C> {
    /// The task's whole life, ending with its release from the engine.
    ///
    /// An async block rather than an `async fn`, and commands handled in a boxed future
    /// outside the `select!`: the task's state is what each registration costs in memory
    /// (640 bytes with tokio's task header, against 896 before), and an `async fn` would
    /// keep a second copy of its arguments while a command's await would widen every
    /// task's state for a step taken once or twice in its life.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice; the block stores them once"
    )]
    pub(crate) fn run(self, commands: Arc<Mailbox>) -> impl Future<Output = ()> + Send + 'static {
        async move {
            // The gRPC connection's set-up overlaps the app's start, not its registration.
            self.client.prepare();
            let now = Instant::now();
            let mut run = Run {
                step: if self.detect_listener {
                    Step::Detect
                } else {
                    Step::Idle
                },
                next: now,
                bound: None,
                instance: None,
                attempted: false,
                failures: 0,
                interval: self.config.beat_interval(),
                seen: Seen {
                    generation: 0,
                    up: false,
                },
                detect_started: now,
                ambiguity_logged: false,
            };
            loop {
                let event = tokio::select! {
                    biased;
                    command = commands.recv() => Event::Command(command),
                    outcome = self.work(&run) => Event::Outcome(outcome),
                };
                let command = match event {
                    Event::Outcome(outcome) => {
                        self.apply(&mut run, outcome);
                        continue;
                    }
                    Event::Command(command) => command,
                };
                let flow = Box::pin(self.on_command(&mut run, command, &commands)).await;
                if flow.is_break() {
                    break;
                }
            }
            if let Some(instance) = &run.instance {
                self.events.unclaim(&self.claim_key(instance), self.id);
            }
            self.events.release(self.id);
        }
    }

    /// Carries out a command; `Break` when the task ends.
    async fn on_command(
        &self,
        run: &mut Run,
        command: Command,
        commands: &Mailbox,
    ) -> ControlFlow<()> {
        match command {
            Command::Bound(addr) => {
                self.on_bound(run, addr).await;
                return ControlFlow::Continue(());
            }
            Command::Replaced => {
                self.status
                    .update(|s| s.state = RegistrationState::Replaced);
                tracing::info!(service = %self.config.service_name(),
                    "registration replaced by a newer one for the same instance");
            }
            Command::Deregister(done) => {
                self.deregister(run).await;
                done.send();
            }
        }
        for command in commands.close() {
            if let Command::Deregister(done) = command {
                done.send();
            }
        }
        ControlFlow::Break(())
    }

    /// The next step's I/O, as a future that owns what it needs (so a command can cancel it).
    fn work(&self, run: &Run) -> impl Future<Output = Outcome> + 'static {
        let step = run.step;
        let next = run.next;
        let client = self.client.clone();
        let key = self.key.clone();
        let instance = run.instance.clone();
        let port = self.config.port();
        let period_ms = u64::try_from(run.interval.as_millis()).unwrap_or(u64::MAX);
        let events = (step == Step::Register).then(|| self.events.clone());
        let handle_signals = self.config.handle_signals();
        let seen = run.seen;
        let retrying = step == Step::Register && run.failures > 0;
        async move {
            if step == Step::Idle {
                std::future::pending::<()>().await;
            }
            if step == Step::Held {
                return Outcome::Connection(client.connection_change(&key, seen).await);
            }
            if retrying {
                // A retry goes out early when a connection to Nacos comes up meanwhile
                // (Nacos back after being down): no need to sit out the backoff.
                tokio::select! {
                    () = sleep_until(next) => {}
                    () = client.connected() => {}
                }
            } else {
                sleep_until(next).await;
            }
            let inst = match (step, instance) {
                (Step::Detect, _) => {
                    return match own_listeners() {
                        Some(listeners) => Outcome::Detected(choose_listener(&listeners, port)),
                        None => Outcome::Detected(Listening::Nothing),
                    };
                }
                (Step::Register | Step::Beat { .. }, Some(inst)) => inst,
                _ => return Outcome::Nothing,
            };
            // A slot first, then the request, each in a box that lives only while it is
            // awaited: a task that sleeps between beats, or is held by the gRPC connection
            // (nearly all of its life), holds a few words, not a whole exchange, and one
            // that waits for a slot behind a slow server holds the wait, not the request.
            if let Some(events) = events {
                events.registering(handle_signals);
            }
            let slot = Box::pin(client.admit()).await;
            let moving = matches!(step, Step::Beat { .. }) && client.grpc_found();
            let request: Pin<Box<dyn Future<Output = Outcome> + Send>> = match step {
                Step::Beat { .. } if moving => {
                    Box::pin(
                        async move { Outcome::Registered(client.move_to_grpc(&key, &inst).await) },
                    )
                }
                Step::Beat { full } => Box::pin(async move {
                    let body = full.then(|| BeatInfo::new(&inst, period_ms));
                    Outcome::Beat(client.beat(&key, &inst, body.as_ref()).await)
                }),
                _ => {
                    Box::pin(async move { Outcome::Registered(client.register(&key, &inst).await) })
                }
            };
            let outcome = request.await;
            drop(slot);
            outcome
        }
    }

    fn apply(&self, run: &mut Run, outcome: Outcome) {
        let now = Instant::now();
        match outcome {
            Outcome::Nothing => {
                if run.step == Step::Resolve {
                    self.resolve(run);
                } else {
                    run.next = now + ADDRESS_RETRY;
                }
            }
            Outcome::Detected(Listening::One(addr)) => {
                run.bound = Some(addr);
                self.status.update(|s| s.bound = Some(addr));
                run.step = Step::Resolve;
                self.resolve(run);
            }
            Outcome::Detected(found) => {
                if let Listening::Ambiguous(all) = found {
                    if !run.ambiguity_logged {
                        run.ambiguity_logged = true;
                        let err = Error::Address(format!(
                            "the process listens on several ports ({}); set NACOS_PORT to the one to register",
                            all.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        tracing::error!(service = %self.config.service_name(), error = %crate::error::Chain(&err), "cannot register");
                        self.status.failed(&err);
                    }
                }
                run.next = now + detect_pause(now - run.detect_started);
            }
            Outcome::Connection(ConnectionChange::Down(err)) => {
                // The connection logs the outage once; each instance shows it in its status.
                run.seen.up = false;
                self.status.failed(&err);
                self.status
                    .update(|s| s.state = RegistrationState::Registering);
            }
            Outcome::Connection(ConnectionChange::Redone {
                generation,
                error: None,
            }) => {
                run.seen = Seen {
                    generation,
                    up: true,
                };
                let api = self.client.api_in_use();
                let server = self.client.grpc_server();
                self.status.update(|s| {
                    s.registrations += 1;
                    s.state = RegistrationState::Registered;
                    s.registered_since = Some(SystemTime::now());
                    s.consecutive_failures = 0;
                    s.api = api.or(s.api);
                    s.server = server;
                });
                tracing::debug!(service = %self.config.service_name(),
                    instance = %run.instance.as_deref().map(Instance::addr).unwrap_or_default(),
                    "registered with nacos again on a new connection");
            }
            Outcome::Connection(ConnectionChange::Redone {
                generation,
                error: Some(err),
            }) => {
                // The redo failed for this service: the task registers it again itself.
                run.seen = Seen {
                    generation,
                    up: true,
                };
                run.failures += 1;
                self.status.failed(&err);
                self.status
                    .update(|s| s.state = RegistrationState::Registering);
                run.step = Step::Register;
                run.next = now + retry_delay(run.failures, run.interval);
            }
            Outcome::Registered(Ok(Kept::Connection(generation))) => {
                crate::metrics::registration("ok");
                self.registered(run);
                run.seen = Seen {
                    generation,
                    up: true,
                };
                run.step = Step::Held;
            }
            Outcome::Registered(Ok(Kept::Server)) => {
                crate::metrics::registration("ok");
                self.registered(run);
                run.step = Step::Idle;
            }
            Outcome::Registered(Ok(Kept::Beats)) => {
                crate::metrics::registration("ok");
                self.registered(run);
                run.step = Step::Beat { full: true };
                run.next = on_tick(now + first_beat_delay(run.interval));
            }
            Outcome::Beat(Ok(result)) if result.is_not_found() => {
                crate::metrics::beat("not_found");
                crate::metrics::reregistration(
                    if result.code == Some(BeatResult::INSTANCE_NOT_FOUND) {
                        "21003"
                    } else {
                        "20404"
                    },
                );
                tracing::warn!(service = %self.config.service_name(),
                    instance = %run.instance.as_deref().map(Instance::addr).unwrap_or_default(),
                    code = result.code.unwrap_or_default(),
                    "nacos no longer knows this instance: registering again");
                self.status
                    .update(|s| s.state = RegistrationState::Registering);
                run.step = Step::Register;
                run.next = now;
            }
            Outcome::Beat(Ok(result)) => {
                crate::metrics::beat("ok");
                if run.failures > 0 {
                    tracing::info!(service = %self.config.service_name(), failures = run.failures,
                        "nacos beats recovered");
                }
                run.failures = 0;
                self.status.update(|s| {
                    s.beats += 1;
                    s.last_beat = Some(SystemTime::now());
                    s.consecutive_failures = 0;
                    s.state = RegistrationState::Registered;
                });
                if let Some(ms) = result.client_beat_interval.filter(|ms| *ms > 0) {
                    run.interval = Duration::from_millis(ms.unsigned_abs());
                }
                run.step = Step::Beat {
                    full: !result.light_beat_enabled,
                };
                // Fixed rate on the tick grid: the next beat is due one interval after this
                // one was due, so time spent on the request does not add up beat after beat.
                run.next = on_tick(run.next + run.interval).max(now);
            }
            Outcome::Registered(Err(err)) | Outcome::Beat(Err(err)) => {
                let what = if run.step == Step::Register {
                    crate::metrics::registration("failed");
                    "registration"
                } else {
                    crate::metrics::beat("failed");
                    "beat"
                };
                run.failures += 1;
                if run.failures == 1 && self.status.snapshot().registrations > 0 {
                    // The retry registers again with full data: the server may have restarted.
                    crate::metrics::reregistration("failure");
                }
                let failures = self.status.failed(&err);
                self.status
                    .update(|s| s.state = RegistrationState::Registering);
                let delay = retry_delay(run.failures, run.interval);
                // A refused login is logged once by the client; repeating it helps nobody.
                let quiet = matches!(err, Error::Login { .. });
                if !quiet && (failures <= 3 || failures % 10 == 0) {
                    tracing::warn!(service = %self.config.service_name(),
                        instance = %run.instance.as_deref().map(Instance::addr).unwrap_or_default(),
                        failures, retry_in_ms = delay.as_millis() as u64, error = %crate::error::Chain(&err),
                        "nacos {what} failed");
                } else {
                    tracing::debug!(service = %self.config.service_name(), failures, error = %crate::error::Chain(&err),
                        "nacos {what} failed");
                }
                run.step = Step::Register;
                run.next = now + delay;
            }
        }
    }

    /// Records a successful registration in the status and the log.
    fn registered(&self, run: &mut Run) {
        let inst = run
            .instance
            .as_deref()
            .map(Instance::addr)
            .unwrap_or_default();
        let registrations = {
            let mut n = 0;
            let api = self.client.api_in_use();
            let server = self.client.grpc_server();
            self.status.update(|s| {
                s.api = api.or(s.api);
                s.server = server;
                s.registrations += 1;
                s.state = RegistrationState::Registered;
                s.registered_since = Some(SystemTime::now());
                s.consecutive_failures = 0;
                n = s.registrations;
            });
            n
        };
        if registrations == 1 {
            tracing::info!(service = %self.config.service_name(), group = %self.config.group_name(),
                    namespace = %self.config.namespace_id(), instance = %inst, "registered with nacos");
        } else {
            tracing::info!(service = %self.config.service_name(), instance = %inst,
                    failures = run.failures, "registered with nacos again");
        }
        run.failures = 0;
    }

    /// Works out the advertised address and claims it.
    fn resolve(&self, run: &mut Run) {
        let Some(bound) = run.bound else {
            run.step = Step::Detect;
            return;
        };
        match advertised_addr(&self.config, bound) {
            Ok(addr) => {
                let instance = Instance::from_config(&self.config, addr);
                self.events.claim(self.claim_key(&instance), self.id);
                self.status.update(|s| {
                    s.instance = Some(instance.addr());
                    s.state = RegistrationState::Registering;
                });
                run.instance = Some(Arc::new(instance));
                run.attempted = true;
                run.step = Step::Register;
                // A moment for the app to install its own signal handlers before the
                // engine looks at them (see the `signals` module).
                run.next = Instant::now() + crate::signals::SETTLE;
            }
            Err(err) => {
                tracing::error!(service = %self.config.service_name(), error = %crate::error::Chain(&err), "cannot register");
                self.status.failed(&err);
                run.step = Step::Resolve;
                run.next = Instant::now() + ADDRESS_RETRY;
            }
        }
    }

    /// The key this task claims for `instance`: the servers, then
    /// `namespace#group@@service#ip#port`. The same instance registered with another Nacos
    /// cluster (registering with an old and a new registry while moving) or in another
    /// namespace is another instance, not a replacement.
    fn claim_key(&self, instance: &Instance) -> String {
        let servers: Vec<String> = self
            .config
            .server_addrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "{}#{}#{}#{}#{}",
            servers.join(","),
            self.key.namespace_id,
            self.key.grouped_service_name(),
            instance.ip,
            instance.port
        )
    }

    async fn on_bound(&self, run: &mut Run, addr: SocketAddr) {
        if run.bound == Some(addr) {
            return;
        }
        if run.attempted {
            // Moved to another address: the old instance goes first.
            self.deregister(run).await;
            if let Some(old) = run.instance.take() {
                self.events.unclaim(&self.claim_key(&old), self.id);
            }
            run.attempted = false;
        }
        run.bound = Some(addr);
        self.status.update(|s| s.bound = Some(addr));
        self.resolve(run);
    }

    /// Deregisters the instance, bounded by the request timeout. Errors are logged.
    async fn deregister(&self, run: &Run) {
        let instance = match (&run.instance, run.attempted) {
            (Some(instance), true) => instance.clone(),
            _ => {
                self.status
                    .update(|s| s.state = RegistrationState::Deregistered);
                return;
            }
        };
        let started = std::time::Instant::now();
        let result = timeout(self.config.request_timeout(), async {
            let _slot = self.client.admit().await;
            self.client.deregister(&self.key, &instance).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                operation: "deregistration",
                after: self.config.request_timeout(),
            })
        });
        let elapsed_ms = started.elapsed().as_millis() as u64;
        crate::metrics::deregistration(if result.is_ok() { "ok" } else { "failed" });
        match result {
            Ok(()) => {
                tracing::info!(service = %self.config.service_name(), instance = %instance.addr(),
                elapsed_ms, "deregistered from nacos");
                if let Some((server, ago, left)) = self.client.copies_may_remain() {
                    tracing::warn!(service = %self.config.service_name(), instance = %instance.addr(),
                        lost = %server, lost_s_ago = ago.as_secs(), may_stay_listed_s = left.as_secs(),
                        "the nacos server that held this app's connection went away without closing it; if it was a node of a cluster, the other nodes keep listing this instance until their copy expires (nacos.naming.client.expired.time, 180 s by default after the loss), and callers without a retry may still be sent here");
                }
            }
            Err(ref err) => {
                self.status.failed(err);
                tracing::warn!(service = %self.config.service_name(), instance = %instance.addr(),
                    elapsed_ms, error = %crate::error::Chain(err), "nacos deregistration failed; the server drops the instance once beats stop (HTTP) or its connection closes (gRPC)");
            }
        }
        self.status
            .update(|s| s.state = RegistrationState::Deregistered);
    }
}

#[cfg(test)]
mod tests;
