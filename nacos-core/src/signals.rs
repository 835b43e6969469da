//! SIGTERM and SIGINT: the instance leaves Nacos first, then the app stops as it would have
//! without this crate.
//!
//! # When the engine listens
//! With `NACOS_HANDLE_SIGNALS=true` (the default) the engine starts listening for SIGTERM
//! and SIGINT right before its first registration request, 5 ms after the app was found
//! listening, or when the app asks for [`Registration::shutdown_signal`]. A signal that
//! comes earlier meets the app's own behaviour: nothing was registered yet.
//!
//! # What the first signal does
//! Every registration is deregistered, then the app serves on while callers still come (at
//! least `NACOS_DEREGISTER_GRACE`, 2 s, then until no caller's request came for
//! `NACOS_DEREGISTER_QUIET`, at most `NACOS_DEREGISTER_GRACE_MAX`, 40 s: see
//! [`LeavePolicy`](crate::LeavePolicy)), then:
//! 1. an app that awaits [`Registration::shutdown_signal`] gets it and drains;
//! 2. an app that had its own handler for the signal when the engine started listening
//!    (its `SigCgt` bit in `/proc/self/status` was set) is left alone, however long it keeps
//!    serving: the signal reaches its handler as it always did;
//! 3. an app that had none would have died on the signal at once: it is given
//!    [`EXIT_WAIT`] to close its listener (a handler installed later), then ended the way
//!    the signal's default action ends it, with the same exit status;
//! 4. where the handlers cannot be read (no `/proc`, off Linux), the engine never ends the
//!    app: it keeps serving, deregistered, until a second signal, its own shutdown or a
//!    SIGKILL.
//!
//! The engine cannot see a handler that the app installs more than 5 ms after it starts
//! listening (tokio installs one process-wide handler per signal, shared by every
//! listener, so the engine cannot count them): such an app should await
//! [`Registration::shutdown_signal`] or set `NACOS_HANDLE_SIGNALS=false`. Even then it is
//! only ended when it keeps its listener open for [`EXIT_WAIT`] after the grace.
//!
//! # A second signal
//! A second SIGTERM or SIGINT applies the signal's default action at once (the convention
//! of pressing Ctrl-C twice), whatever state the first one left.
//!
//! # Ctrl-C in a terminal
//! SIGINT waits the grace like SIGTERM, whether or not it comes from a terminal: Docker
//! (`STOPSIGNAL`), process managers and supervisors send SIGINT too, and telling them apart
//! from a developer's Ctrl-C would be a guess. A developer who does not want to wait presses
//! Ctrl-C twice, or sets `NACOS_DEREGISTER_GRACE=0s` for local runs.
//!
//! # Leaving signals to the app
//! With `NACOS_HANDLE_SIGNALS=false` the engine never listens; the instance is deregistered
//! by [`Registration::shutdown_signal`] (which then listens in the caller's runtime),
//! [`Registration::deregister`] or the drop of the last handle.
//!
//! [`Registration::shutdown_signal`]: crate::Registration::shutdown_signal
//! [`Registration::deregister`]: crate::Registration::deregister

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use tokio::sync::watch;

use crate::leaving::Arrivals;
use crate::listener::{ListenerState, listener_state};
use crate::settings::LeavePolicy;

/// How long, after the grace, the engine waits for an app that had no handler of its own
/// for the signal to close its listener before it applies the signal's default action.
pub const EXIT_WAIT: Duration = Duration::from_millis(500);

/// How long after the app starts listening the engine takes its first look at the app's
/// signal handlers (and registers): the app's own handler is usually installed by the
/// framework's `serve` call right after the bind.
pub(crate) const SETTLE: Duration = Duration::from_millis(5);

/// What signal handling needs from the engine (implemented by the engine, so that this
/// module does not depend on it).
pub(crate) trait Registrations: Send + Sync + 'static {
    /// The runtime the engine's tasks run on.
    fn runtime(&self) -> &tokio::runtime::Handle;
    /// The signal state.
    fn signals(&self) -> &Signals;
    /// How many registrations are live.
    fn count(&self) -> usize;
    /// Deregisters every registration and waits for them; the widest leave policy and the
    /// bound addresses.
    fn deregister_all(
        &self,
    ) -> Pin<Box<dyn Future<Output = (LeavePolicy, Vec<SocketAddr>)> + Send + '_>>;
}

/// The shutdown progress the engine publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    Running,
    /// A signal arrived; every registration is deregistered and the app has served on
    /// until its callers stopped (or the maximum).
    Drain,
}

/// The engine's signal state.
pub(crate) struct Signals {
    armed: Once,
    /// Whether some app awaits `shutdown_signal()` (and so drains by itself).
    app_drains: AtomicBool,
    shutdown: watch::Sender<Shutdown>,
    /// Requests counted by the adapters once a signal came.
    pub(crate) arrivals: Arc<Arrivals>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            armed: Once::new(),
            app_drains: AtomicBool::new(false),
            shutdown: watch::Sender::new(Shutdown::Running),
            arrivals: Arc::default(),
        }
    }
}

/// Which signals the app had its own handler for before the engine listened; `None`
/// where that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AppHandlers {
    term: Option<bool>,
    int: Option<bool>,
}

impl Signals {
    /// Starts listening for SIGTERM and SIGINT on the engine's runtime (once per process),
    /// after noting which of them the app already handles.
    pub(crate) fn arm<E: Registrations>(&self, engine: &Arc<E>) {
        #[cfg(unix)]
        self.armed.call_once(|| {
            use tokio::signal::unix::{SignalKind, signal};
            let handlers = app_handlers();
            tracing::debug!(?handlers, "listening for SIGTERM and SIGINT");
            // Registered here, synchronously, so no signal slips between this call and the
            // registration that follows.
            let _guard = engine.runtime().enter();
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
            engine
                .runtime()
                .spawn(listen(engine.clone(), term, int, handlers));
        });
        #[cfg(not(unix))]
        let _ = engine;
    }

    /// Notes that the app drains by itself once [`subscribe`](Self::subscribe)'s receiver
    /// says [`Shutdown::Drain`], and listens from now on.
    pub(crate) fn app_drains<E: Registrations>(
        &self,
        engine: &Arc<E>,
    ) -> watch::Receiver<Shutdown> {
        self.app_drains.store(true, Ordering::SeqCst);
        self.arm(engine);
        self.shutdown.subscribe()
    }
}

/// Receives the signals for the whole life of the process.
#[cfg(unix)]
async fn listen<E: Registrations>(
    engine: Arc<E>,
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    handlers: AppHandlers,
) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut first = true;
    loop {
        let (signo, name, handled) = tokio::select! {
            _ = term.recv() => (SIGTERM, "SIGTERM", handlers.term),
            _ = int.recv() => (SIGINT, "SIGINT", handlers.int),
        };
        if first {
            first = false;
            engine
                .runtime()
                .spawn(first_signal(engine.clone(), signo, name, handled));
        } else {
            tracing::warn!(
                signal = name,
                "second signal: stopping now, as the signal's default action does"
            );
            default_action(signo);
        }
    }
}

/// What the first signal does (see the module docs).
#[cfg(unix)]
async fn first_signal<E: Registrations>(
    engine: Arc<E>,
    signo: i32,
    name: &'static str,
    handled: Option<bool>,
) {
    let started = std::time::Instant::now();
    tracing::info!(
        signal = name,
        registrations = engine.count(),
        "deregistering from nacos before shutdown"
    );
    let signals = engine.signals();
    signals.arrivals.start();
    let (policy, bound) = engine.deregister_all().await;
    crate::leaving::after_deregistration(&signals.arrivals, policy).await;
    signals.shutdown.send_replace(Shutdown::Drain);
    if signals.app_drains.load(Ordering::SeqCst) {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "the app drains on shutdown_signal()"
        );
        return;
    }
    match handled {
        Some(true) => {
            tracing::debug!(
                signal = name,
                "the app handles the signal itself: it stops on its own"
            );
            return;
        }
        None => {
            tracing::info!(
                signal = name,
                "cannot tell whether the app handles the signal: it keeps running, deregistered; send the signal again to stop it now"
            );
            return;
        }
        Some(false) => {}
    }
    // The app had no handler: the signal would have ended it. A handler installed since
    // then may still be shutting the app down: give it EXIT_WAIT to close its listener.
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    loop {
        let bound = bound.clone();
        let state = tokio::task::spawn_blocking(move || listener_state(&bound))
            .await
            .unwrap_or(ListenerState::Unknown);
        match state {
            ListenerState::Closed => {
                tracing::debug!("the app closed its listener: it shuts down on its own");
                return;
            }
            ListenerState::Unknown => {
                tracing::info!(
                    signal = name,
                    "cannot read the app's listener: it keeps running, deregistered; send the signal again to stop it now"
                );
                return;
            }
            ListenerState::Open => {}
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(signal = name, "exiting as the signal's default action does");
    default_action(signo);
}

#[cfg(unix)]
fn default_action(signo: i32) {
    if let Err(e) = signal_hook::low_level::emulate_default_handler(signo) {
        tracing::error!(error = %e, "cannot apply the signal's default action");
    }
}

/// Which of SIGTERM and SIGINT have a handler in this process now.
fn app_handlers() -> AppHandlers {
    let caught = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| caught_mask(&status));
    AppHandlers {
        term: caught.map(|mask| mask & (1 << (15 - 1)) != 0),
        int: caught.map(|mask| mask & (1 << (2 - 1)) != 0),
    }
}

/// The `SigCgt` mask of a `/proc/<pid>/status` text: bit `n - 1` is set when signal `n`
/// has a handler. `None` when the line is missing or malformed.
pub(crate) fn caught_mask(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere) in the caller's runtime.
pub(crate) async fn wait_for_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigcgt_is_read_from_the_status_text() {
        let status = "Name:\tapp\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180004002\n";
        let mask = caught_mask(status).unwrap();
        assert_ne!(mask & (1 << 14), 0, "SIGTERM");
        assert_ne!(mask & (1 << 1), 0, "SIGINT");
        assert_eq!(mask & (1 << 0), 0, "SIGHUP");
        assert_eq!(caught_mask("Name:\tapp\n"), None);
        assert_eq!(caught_mask("SigCgt:\tzz\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_handlers_are_readable() {
        let handlers = app_handlers();
        assert!(handlers.term.is_some() && handlers.int.is_some());
    }
}
