//! The Nacos servers the end-to-end suite runs against, behind one interface: r-nacos and
//! the official server (2.x and 3.x).

use std::fmt;

use serde_json::Value;

use crate::official::{OfficialNacos, OfficialOptions, OfficialVersion};
use crate::{RNacos, RNacosOptions};

/// Which server to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// r-nacos ([`crate::RNACOS_VERSION`]): v1 API, never answers 20404.
    RNacos,
    /// The official server: 2.x (v1, 20404) or 3.x (v3, 21003).
    Official(OfficialVersion),
}

impl ServerKind {
    /// r-nacos, official 2.x, official 3.x.
    pub const ALL: [ServerKind; 3] = [
        ServerKind::RNacos,
        ServerKind::Official(OfficialVersion::V2_3_2),
        ServerKind::Official(OfficialVersion::V3_1_0),
    ];

    /// Whether the server answers a light beat or a renewal of an unknown instance with
    /// "not found" (20404 / 21003) instead of re-creating the instance.
    pub fn reports_unknown_instances(self) -> bool {
        matches!(self, ServerKind::Official(_))
    }

    /// The beat interval an app configured with `configured` ends up with: r-nacos always
    /// answers `clientBeatInterval: 5000`, which the client follows; the official server
    /// answers the instance's own `preserved.heart.beat.interval`.
    pub fn effective_interval(self, configured: std::time::Duration) -> std::time::Duration {
        match self {
            ServerKind::RNacos => std::time::Duration::from_secs(5),
            ServerKind::Official(_) => configured,
        }
    }

    /// The HTTP API `NACOS_API=auto` falls back to with this server when its gRPC port does
    /// not answer (the value for `NACOS_API` in tests of the HTTP path).
    pub fn api(self) -> &'static str {
        match self {
            ServerKind::Official(v) if v.speaks_v3() => "v3",
            _ => "v1",
        }
    }

    /// Starts the server with `options` and waits until it answers.
    ///
    /// # Panics
    /// When the server cannot be installed or started.
    pub fn start(self, options: &ServerOptions) -> Server {
        let mut server = self.reserve(options);
        server.restart();
        server
    }

    /// Picks the server's ports without starting it ("Nacos is down"); start it with
    /// [`Server::restart`].
    ///
    /// # Panics
    /// When the server cannot be installed.
    pub fn reserve(self, options: &ServerOptions) -> Server {
        match self {
            ServerKind::RNacos => {
                let short = options.short_timeouts;
                Server::RNacos(RNacos::reserve(RNacosOptions {
                    health_timeout_s: short.then_some(SHORT_HEALTH_TIMEOUT_S),
                    instance_timeout_s: short.then_some(SHORT_INSTANCE_TIMEOUT_S),
                    raft: None,
                    ipv6: false,
                    grpc_offset: None,
                }))
            }
            ServerKind::Official(version) => {
                let mut official = OfficialOptions {
                    auth: options.auth,
                    token_ttl_s: options.token_ttl_s,
                    ..OfficialOptions::default()
                };
                if let Some(password) = &options.password {
                    official.password.clone_from(password);
                }
                Server::Official(OfficialNacos::reserve(version, official))
            }
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerKind::RNacos => write!(f, "r-nacos {}", crate::RNACOS_VERSION),
            ServerKind::Official(v) => write!(f, "nacos {v}"),
        }
    }
}

/// Unhealthy after this many seconds without beats, with [`ServerOptions::short_timeouts`].
pub const SHORT_HEALTH_TIMEOUT_S: u32 = 3;
/// Removed after this many seconds without beats, with [`ServerOptions::short_timeouts`].
pub const SHORT_INSTANCE_TIMEOUT_S: u32 = 5;

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Short health and instance timeouts: server-wide on r-nacos; the official server
    /// takes them from the instance's metadata, so the app must also get
    /// [`Server::short_timeout_env`].
    pub short_timeouts: bool,
    /// Authentication on (official server only).
    pub auth: bool,
    /// Token lifetime in seconds (official server only).
    pub token_ttl_s: Option<u32>,
    /// The password of user `nacos` (official server only; default `nacos`).
    pub password: Option<String>,
}

/// A running (or reserved) server.
#[derive(Debug)]
pub enum Server {
    /// r-nacos.
    RNacos(RNacos),
    /// The official server.
    Official(OfficialNacos),
}

impl Server {
    /// `127.0.0.1:<port>`, the value for `NACOS_SERVER_ADDR`.
    pub fn addr(&self) -> String {
        match self {
            Server::RNacos(s) => s.addr(),
            Server::Official(s) => s.addr(),
        }
    }

    /// The instances the server lists for a service (unhealthy ones included).
    ///
    /// # Errors
    /// When the server does not answer.
    pub fn instances(
        &self,
        namespace: &str,
        group: &str,
        service: &str,
    ) -> Result<Vec<Value>, String> {
        match self {
            Server::RNacos(s) => s.instances(namespace, group, service),
            Server::Official(s) => s.instances(namespace, group, service),
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Server::RNacos(s) => s.pid(),
            Server::Official(s) => s.pid(),
        }
    }

    /// Kills the server (no goodbye to clients).
    pub fn stop(&mut self) {
        match self {
            Server::RNacos(s) => s.stop(),
            Server::Official(s) => s.stop(),
        }
    }

    /// Starts the server (again) on the same ports and waits until it answers.
    pub fn restart(&mut self) {
        match self {
            Server::RNacos(s) => s.restart(),
            Server::Official(s) => s.restart(),
        }
    }

    /// The app environment that gives an instance the short timeouts of
    /// [`ServerOptions::short_timeouts`] through its metadata (what the official server
    /// reads), with a 1 s beat interval.
    pub fn short_timeout_env() -> Vec<(&'static str, String)> {
        vec![
            ("NACOS_HEARTBEAT_INTERVAL", "1s".into()),
            (
                "NACOS_HEARTBEAT_TIMEOUT",
                format!("{SHORT_HEALTH_TIMEOUT_S}s"),
            ),
            (
                "NACOS_IP_DELETE_TIMEOUT",
                format!("{SHORT_INSTANCE_TIMEOUT_S}s"),
            ),
        ]
    }

    /// A fresh access token (official server with auth on).
    ///
    /// # Errors
    /// On r-nacos, or when the login is refused.
    pub fn login(&self) -> Result<String, String> {
        match self {
            Server::RNacos(_) => Err("r-nacos runs without auth here".into()),
            Server::Official(s) => s.login(),
        }
    }

    /// Removes an instance behind the app's back, the way an operator (or the server's
    /// expiry) does: the next light beat or renewal finds it unknown.
    ///
    /// # Errors
    /// When the server refuses.
    pub fn remove_instance(&self, service: &str, ip: &str, port: u16) -> Result<(), String> {
        let port = port.to_string();
        let params = [
            ("serviceName", service),
            ("groupName", "DEFAULT_GROUP"),
            ("namespaceId", "public"),
            ("ip", ip),
            ("port", port.as_str()),
            ("ephemeral", "true"),
        ];
        match self {
            Server::RNacos(s) => {
                let url = format!("http://{}/nacos/v1/ns/instance", s.addr());
                crate::send("DELETE", &url, &params).map(drop)
            }
            Server::Official(s) => {
                let path = if s.version().speaks_v3() {
                    "/nacos/v3/client/ns/instance"
                } else {
                    "/nacos/v1/ns/instance"
                };
                let token = if s.options().auth {
                    Some(s.login()?)
                } else {
                    None
                };
                let mut all: Vec<(&str, &str)> = params.to_vec();
                if let Some(token) = &token {
                    all.push(("accessToken", token));
                }
                match s.send("DELETE", path, &all)? {
                    (200, _) => Ok(()),
                    (status, body) => Err(format!("DELETE {path}: {status} {body}")),
                }
            }
        }
    }
}

impl Server {
    /// See [`RNacos::ensure_config_store`](crate::RNacos::ensure_config_store); nothing to
    /// do on the official servers.
    pub fn ensure_config_store(&mut self) {
        if let Server::RNacos(s) = self {
            s.ensure_config_store();
        }
    }

    /// Publishes a config the way another client or an operator does, over HTTP v1 (`POST
    /// /nacos/v1/cs/configs`, which r-nacos and the official servers up to 3.1 serve),
    /// logging in first when auth is on. `tenant` `""` is the public namespace.
    ///
    /// # Errors
    /// When the server refuses (the status and body).
    ///
    /// Waits until a read (`GET /nacos/v1/cs/configs`) returns it, publishing again when it
    /// does not within 2 s (see [`RNacos::ensure_config_store`](crate::RNacos::ensure_config_store)
    /// for an r-nacos that keeps nothing).
    pub fn publish_config(
        &self,
        data_id: &str,
        group: &str,
        content: &str,
        content_type: &str,
    ) -> Result<(), String> {
        for _ in 0..5 {
            self.config_call(
                "POST",
                &[
                    ("dataId", data_id),
                    ("group", group),
                    ("content", content),
                    ("type", content_type),
                ],
            )?;
            let kept = crate::wait_for(std::time::Duration::from_secs(2), || {
                (self.read_config(data_id, group).as_deref() == Some(content)).then_some(())
            });
            if kept.is_some() {
                return Ok(());
            }
        }
        Err(format!("{data_id} published five times, never read back"))
    }

    /// The content of a config (`GET /nacos/v1/cs/configs`); `None` when there is none.
    pub fn read_config(&self, data_id: &str, group: &str) -> Option<String> {
        let path = "/nacos/v1/cs/configs";
        let token = match self {
            Server::Official(s) if s.options().auth => Some(s.login().ok()?),
            _ => None,
        };
        let mut all: Vec<(&str, &str)> = vec![("dataId", data_id), ("group", group)];
        if let Some(token) = &token {
            all.push(("accessToken", token));
        }
        let (status, body) = match self {
            Server::RNacos(s) => {
                crate::send("GET", &format!("http://{}{path}", s.addr()), &all).ok()?
            }
            Server::Official(s) => s.send("GET", path, &all).ok()?,
        };
        (status == 200).then_some(body)
    }

    /// Removes a config over HTTP v1 (`DELETE /nacos/v1/cs/configs`).
    ///
    /// # Errors
    /// When the server refuses.
    pub fn remove_config(&self, data_id: &str, group: &str) -> Result<(), String> {
        self.config_call("DELETE", &[("dataId", data_id), ("group", group)])
    }

    fn config_call(&self, method: &str, params: &[(&str, &str)]) -> Result<(), String> {
        let path = "/nacos/v1/cs/configs";
        let token = match self {
            Server::Official(s) if s.options().auth => Some(s.login()?),
            _ => None,
        };
        let mut all: Vec<(&str, &str)> = params.to_vec();
        if let Some(token) = &token {
            all.push(("accessToken", token));
        }
        let (status, body) = match self {
            Server::RNacos(s) => crate::send(method, &format!("http://{}{path}", s.addr()), &all)?,
            Server::Official(s) => s.send(method, path, &all)?,
        };
        if status == 200 && body.trim() == "true" {
            Ok(())
        } else {
            Err(format!("{method} {path}: {status} {body}"))
        }
    }
}

impl Server {
    /// The user and password that log in: the official server's user `nacos` when auth is
    /// on; `None` otherwise (r-nacos runs without auth here).
    pub fn credentials(&self) -> Option<(String, String)> {
        match self {
            Server::Official(s) if s.options().auth => {
                let (user, password) = s.credentials();
                Some((user.to_owned(), password.to_owned()))
            }
            _ => None,
        }
    }
}
