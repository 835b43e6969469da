//! The registration status an app can show on its health endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::instance::ServiceKey;

/// Where a registration is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RegistrationState {
    /// `NACOS_REGISTER_ENABLED=false`: nothing is registered.
    Disabled,
    /// Waiting for the app to listen.
    WaitingForListener,
    /// Listening; registering (retried until the server accepts).
    Registering,
    /// Registered and beating.
    Registered,
    /// Deregistered (on a signal, on drop or on request); final.
    Deregistered,
    /// Another registration of the same instance (same servers, namespace, group, service,
    /// ip and port) took over; final.
    Replaced,
}

impl RegistrationState {
    /// The state's label on the `nacos_client_registrations` gauge.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RegistrationState::Disabled => "disabled",
            RegistrationState::WaitingForListener => "waiting_for_listener",
            RegistrationState::Registering => "registering",
            RegistrationState::Registered => "registered",
            RegistrationState::Deregistered => "deregistered",
            RegistrationState::Replaced => "replaced",
        }
    }
}

/// A snapshot of a registration's status. Serialises to JSON with RFC 3339 timestamps.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The lifecycle state.
    pub state: RegistrationState,
    /// Namespace id.
    pub namespace_id: String,
    /// Group name.
    pub group_name: String,
    /// Service name.
    pub service_name: String,
    /// The address the app listens on, once known.
    pub bound: Option<SocketAddr>,
    /// The advertised `ip:port`, once known.
    pub instance: Option<String>,
    /// When the current registration was accepted.
    #[serde(serialize_with = "rfc3339")]
    pub registered_since: Option<SystemTime>,
    /// When the last beat was accepted.
    #[serde(serialize_with = "rfc3339")]
    pub last_beat: Option<SystemTime>,
    /// How many times the server accepted a registration (more than 1: re-registered).
    pub registrations: u64,
    /// The API the last registration went over: `"grpc"`, `"v3"` or `"v1"` (HTTP).
    pub api: Option<&'static str>,
    /// Over gRPC, the Nacos server whose connection keeps the instance, as
    /// `grpc://host:port` (its gRPC port): in a cluster, the node that owns the instance
    /// and replicates it to the others. `None` over HTTP, where each beat may go to another
    /// node.
    #[serde(serialize_with = "opt_str")]
    pub server: Option<Arc<str>>,
    /// Beats accepted since start (HTTP). Over gRPC no beats are sent: the connection keeps
    /// the instance, and this stays 0 with `last_beat` empty.
    pub beats: u64,
    /// Failed requests in a row (0 when the last one succeeded).
    pub consecutive_failures: u64,
    /// The last error with its causes (`outer: cause: root cause`), kept after recovery.
    pub last_error: Option<String>,
    /// When the last error happened.
    #[serde(serialize_with = "rfc3339")]
    pub last_error_at: Option<SystemTime>,
}

fn opt_str<S: Serializer>(text: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(t) => s.serialize_str(t),
        None => s.serialize_none(),
    }
}

fn rfc3339<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// A shared, read-only view of a registration's [`Status`]. Cheap to clone; holding one
/// does not keep the registration alive.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    inner: Arc<Shared>,
}

/// The names are kept once, in the (shared) service key, and put in a [`Status`] only when
/// a snapshot is taken: a process may hold thousands of these.
#[derive(Debug)]
struct Shared {
    key: Arc<ServiceKey>,
    status: Mutex<Status>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self
            .status
            .get_mut()
            .map_or_else(|e| e.into_inner().state, |s| s.state);
        crate::metrics::registration_state(state.label(), -1.0);
    }
}

impl StatusHandle {
    pub(crate) fn new(state: RegistrationState, key: Arc<ServiceKey>) -> Self {
        crate::metrics::registration_state(state.label(), 1.0);
        StatusHandle {
            inner: Arc::new(Shared {
                key,
                status: Mutex::new(Status {
                    state,
                    namespace_id: String::new(),
                    group_name: String::new(),
                    service_name: String::new(),
                    bound: None,
                    instance: None,
                    registered_since: None,
                    last_beat: None,
                    registrations: 0,
                    api: None,
                    server: None,
                    beats: 0,
                    consecutive_failures: 0,
                    last_error: None,
                    last_error_at: None,
                }),
            }),
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> Status {
        let mut status = self.lock().clone();
        status.namespace_id.clone_from(&self.inner.key.namespace_id);
        status.group_name.clone_from(&self.inner.key.group_name);
        status.service_name.clone_from(&self.inner.key.service_name);
        status
    }

    /// Whether the instance is registered right now.
    pub fn is_registered(&self) -> bool {
        self.lock().state == RegistrationState::Registered
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut status = self.lock();
        let before = status.state;
        f(&mut status);
        if status.state != before {
            crate::metrics::registration_state(before.label(), -1.0);
            crate::metrics::registration_state(status.state.label(), 1.0);
        }
    }

    pub(crate) fn failed(&self, error: &crate::Error) -> u64 {
        let mut s = self.lock();
        s.consecutive_failures += 1;
        s.last_error = Some(crate::error::Chain(error).to_string());
        s.last_error_at = Some(SystemTime::now());
        s.consecutive_failures
    }

    fn lock(&self) -> MutexGuard<'_, Status> {
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_rfc3339_times() {
        let key = ServiceKey {
            namespace_id: "public".into(),
            group_name: "G".into(),
            service_name: "svc".into(),
        };
        let h = StatusHandle::new(RegistrationState::Registered, Arc::new(key));
        h.update(|s| s.registered_since = Some(SystemTime::UNIX_EPOCH));
        let json = serde_json::to_value(h.snapshot()).unwrap();
        assert_eq!(json["state"], "registered");
        assert_eq!(json["group_name"], "G");
        assert_eq!(json["service_name"], "svc");
        assert_eq!(json["namespace_id"], "public");
        assert_eq!(json["registered_since"], "1970-01-01T00:00:00.000Z");
        assert!(json["last_beat"].is_null());
        assert!(h.is_registered());
    }
}
