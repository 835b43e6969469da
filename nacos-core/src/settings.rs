//! Configuration: the `NACOS_*` environment variables and a builder that overrides them.
//!
//! [`Config::from_env`] reads every variable of the table below, validates all of them up
//! front and returns the first error, naming the variable, the value (secrets redacted) and
//! what was expected. Nothing touches the network. [`ConfigBuilder`] has one setter per
//! variable; a setter overrides the environment.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `NACOS_SERVER_ADDR` (alias `NACOS_CLIENT_SERVER_ADDRESS`) | comma-separated servers: `host`, `host:port`, `http(s)://host:port` | `127.0.0.1:8848` |
//! | `NACOS_CONTEXT_PATH` | server context path | `/nacos` |
//! | `NACOS_NAMESPACE` (alias `NACOS_CLIENT_NAMESPACE`) | namespace id | `public` |
//! | `NACOS_GROUP` | group | `DEFAULT_GROUP` |
//! | `NACOS_SERVICE_NAME` | service name | required |
//! | `NACOS_CLUSTER_NAME` | cluster | `DEFAULT` |
//! | `NACOS_IP` (alias `NACOS_CLIENT_LOCAL_IP`) | advertised IP | detected |
//! | `NACOS_IP_TYPE` | `ipv4` or `ipv6`: the family of a detected IP | IPv4, a global IPv6 when no IPv4 |
//! | `NACOS_PORT` | advertised port | the bound port |
//! | `NACOS_NETWORK_INTERFACE` | interface whose address is advertised | none |
//! | `NACOS_PREFERRED_NETWORKS` | comma-separated CIDRs (`10.0.0.0/8`) or prefixes (`192.168.`) | none |
//! | `NACOS_WEIGHT` | weight, 0 to 10000 | `1` |
//! | `NACOS_METADATA` | JSON object or `k=v,k2=v2` | none |
//! | `NACOS_EPHEMERAL` | ephemeral instance (kept alive by the connection or beats); `false`: persistent, kept by the server until deregistered | `true` |
//! | `NACOS_INSTANCE_ENABLED` | instance accepts traffic | `true` |
//! | `NACOS_REGISTER_ENABLED` | `false` turns registration off | `true` |
//! | `NACOS_HEARTBEAT_INTERVAL` | sent as `preserved.heart.beat.interval` | server default (5s) |
//! | `NACOS_HEARTBEAT_TIMEOUT` | sent as `preserved.heart.beat.timeout` | server default (15s) |
//! | `NACOS_IP_DELETE_TIMEOUT` | sent as `preserved.ip.delete.timeout` | server default (30s) |
//! | `NACOS_USERNAME` (alias `NACOS_CLIENT_USERNAME`) | login user | none |
//! | `NACOS_PASSWORD` (alias `NACOS_CLIENT_PASSWORD`) | login password | none |
//! | `NACOS_API` | `auto` (gRPC, then HTTP v3, then v1), `grpc`, `v3` or `v1` | `auto` |
//! | `NACOS_GRPC_PORT_OFFSET` | the gRPC port's distance from each server's port | `1000` |
//! | `NACOS_GRPC_TLS` | gRPC over TLS (feature `rustls`) | `true` with `https://` servers or a `NACOS_TLS_*` variable set, else `false` |
//! | `NACOS_TLS_CA_FILE` | PEM certificates to trust for gRPC over TLS | the system's roots |
//! | `NACOS_TLS_CERT_FILE`, `NACOS_TLS_KEY_FILE` | PEM certificate chain and private key of this client (mutual TLS) | none |
//! | `NACOS_TLS_SERVER_NAME` | the name the server's certificate must carry | each server's host |
//! | `NACOS_TLS_TRUST_ALL` | trust any server certificate (tests only: anyone on the path can read and change the traffic) | `false` |
//! | `NACOS_INSTANCE_CHECK` | over gRPC, watch the app's own service and register an instance again when the server no longer lists it | `true` |
//! | `NACOS_GRPC_PROBE_INTERVAL` | with `NACOS_API=auto` on HTTP because no gRPC port answered, how often gRPC is tried again (`0s`: never) | `60s` |
//! | `NACOS_DEREGISTER_GRACE` | the least time the app serves on after its deregistration on a signal, before it drains (`0s` opts out of serving on) | `2s` |
//! | `NACOS_DEREGISTER_QUIET` | after the grace, the app serves on until no caller's request came for this long (widened for slow callers) | `2s` |
//! | `NACOS_DEREGISTER_GRACE_MAX` | the most time it serves on after its deregistration | `40s` |
//! | `NACOS_PROBE_PATHS` | comma-separated paths of health checks and scrapes, which do not keep the app serving on | `/health,/healthz,/livez,/readyz,/ready,/metrics,/actuator/health,/actuator/prometheus,/grpc.health.v1.Health` |
//! | `NACOS_REQUEST_TIMEOUT` | timeout of one HTTP request to Nacos | `3s` |
//! | `NACOS_HANDLE_SIGNALS` | `false` leaves SIGTERM/SIGINT to the app | `true` |
//! | `NACOS_DISCOVERY_REFRESH` | how often a watched service is polled (discovery) | `5s` |
//! | `NACOS_CONFIG_GROUP` | the group of the configuration center's configs | `NACOS_GROUP` |
//! | `NACOS_CONFIG_IMPORT` | the configs an app loads into its settings, later ones winning (`ConfigImports`): `[optional:]data_id[?group=G&refresh=false]`, comma-separated; without `optional:` a config that does not exist is an error | none |
//! | `NACOS_CONFIG_SHARED_CONFIGS`, `NACOS_CONFIG_EXTENSION_CONFIGS` | configs loaded before the imports (shared first, then extension), same form, not followed unless `refresh=true` | none |
//! | `NACOS_CONFIG_FILE_EXTENSION` | the format of an imported config whose data id has no extension and that was published without a type | `properties` |
//! | `NACOS_CONFIG_REFRESH_ENABLED` | `false`: imported configs are read once, changes not followed | `true` |
//! | `NACOS_CONFIG_TIMEOUT` | how long the load waits for each imported config's first answer (or snapshot) | `10s` |
//! | `NACOS_CONFIG_FAILOVER_DIR` | a directory where an operator puts configs (`<namespace>/<group>/<data id>`) that replace the server's while they are there, checked every 5 s | none |
//! | `NACOS_CONFIG_SNAPSHOT_DIR` | where the configuration center keeps the last content of each config read (a start while Nacos is down reads it); `off` keeps none | `$XDG_CACHE_HOME/nacos-rs/config`, else `~/.cache/nacos-rs/config` |
//!
//! Durations are written the way [`humantime`] reads them: `5s`, `500ms`, `1m 30s`.
//! Booleans accept `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::metadata::{
    Metadata, PRESERVED_HEART_BEAT_INTERVAL, PRESERVED_HEART_BEAT_TIMEOUT,
    PRESERVED_IP_DELETE_TIMEOUT,
};

/// How often `NACOS_API=auto`, once on HTTP because no server's gRPC port answered, tries
/// gRPC again when `NACOS_GRPC_PROBE_INTERVAL` is not set: 60 s.
pub const DEFAULT_GRPC_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// TLS settings of the gRPC connection (`NACOS_TLS_*`; needs the `rustls` feature).
///
/// The server's certificate is checked against [`ca_file`](Self::ca_file) (else the
/// system's roots) and must carry [`server_name`](Self::server_name) (else the server's
/// host, as `NACOS_SERVER_ADDR` names it). The Java client trusts every certificate unless
/// told otherwise (`nacos.remote.client.rpc.tls.trustAll` is on by default); this client
/// trusts all only when [`trust_all`](Self::trust_all) asks for it by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GrpcTls {
    /// PEM file of the certificates to trust (`NACOS_TLS_CA_FILE`).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate chain this client presents, for mutual TLS (`NACOS_TLS_CERT_FILE`).
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate (`NACOS_TLS_KEY_FILE`).
    pub key_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (`NACOS_TLS_SERVER_NAME`).
    pub server_name: Option<String>,
    /// Trust any server certificate (`NACOS_TLS_TRUST_ALL`): for tests only.
    pub trust_all: bool,
}

impl fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // File paths and names only: no key material is ever held here.
        f.debug_struct("GrpcTls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("server_name", &self.server_name)
            .field("trust_all", &self.trust_all)
            .finish()
    }
}

/// Nacos's default HTTP port, used for a server entry without a port.
pub const DEFAULT_SERVER_PORT: u16 = 8848;
/// How often a watched service is polled when `NACOS_DISCOVERY_REFRESH` is not set (5 s;
/// see `Discovery` for why).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// The gRPC port is each server's port plus this (9848 for 8848), as every Nacos 2.x/3.x
/// client derives it, unless `NACOS_GRPC_PORT_OFFSET` says otherwise.
pub const DEFAULT_GRPC_PORT_OFFSET: u16 = 1000;
/// How long an instance keeps serving after it left Nacos on a signal, when
/// `NACOS_DEREGISTER_GRACE` is not set: 2 s. Callers learn of a deregistration by push, measured
/// at 0.55-0.65 s on official Nacos 2.3.2 and 3.1.0 (Java nacos-client subscribers and this
/// crate's watches alike) and up to 1.0 s on r-nacos 0.8.8, so 2 s is twice the slowest push.
/// Callers that poll over HTTP (this crate's watches against a server without gRPC: every
/// `NACOS_DISCOVERY_REFRESH`, 5 s) need a grace above their refresh.
pub const DEFAULT_DEREGISTER_GRACE: Duration = Duration::from_secs(2);
/// After the grace, how long without a caller's request ends the serving on, when
/// `NACOS_DEREGISTER_QUIET` is not set: 2 s. Push callers stop within 1.0 s of the
/// deregistration (above), so at the defaults they see the app leave 2.6-3.0 s after it.
/// The window widens for callers slower than that (see [`LeavePolicy`](crate::LeavePolicy)).
pub const DEFAULT_DEREGISTER_QUIET: Duration = Duration::from_secs(2);
/// The most time an app serves on after its deregistration, when
/// `NACOS_DEREGISTER_GRACE_MAX` is not set: 40 s. Spring Cloud LoadBalancer, the commonest
/// Java caller, keeps its list of a service for 35 s by default
/// (`spring.cloud.loadbalancer.cache.ttl`), loaded at most about 1 s before the push that
/// said the instance left: 40 s covers it with a margin. Under Kubernetes set
/// `terminationGracePeriodSeconds` above it plus the app's drain time.
pub const DEFAULT_DEREGISTER_GRACE_MAX: Duration = Duration::from_secs(40);
/// The beat interval Nacos assumes when the instance does not say otherwise (5 s).
pub const DEFAULT_BEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The paths whose requests are health checks or scrapes when `NACOS_PROBE_PATHS` is not
/// set. A path matches itself and everything below it (`/actuator/health` matches
/// `/actuator/health/liveness`); gRPC's health service is
/// `/grpc.health.v1.Health/Check` and `/Watch`.
pub const DEFAULT_PROBE_PATHS: &[&str] = &[
    "/health",
    "/healthz",
    "/livez",
    "/readyz",
    "/ready",
    "/metrics",
    "/actuator/health",
    "/actuator/prometheus",
    "/grpc.health.v1.Health",
];

/// How long the app serves on after its deregistration on a signal (`NACOS_DEREGISTER_GRACE`,
/// `NACOS_DEREGISTER_QUIET`, `NACOS_DEREGISTER_GRACE_MAX`): at least `grace`, then until no
/// caller's request came for the quiet window (`quiet`, widened for slow callers), at most
/// `max`. See the crate docs' signal section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeavePolicy {
    /// The least time (`NACOS_DEREGISTER_GRACE`); zero opts out of serving on at all.
    pub grace: Duration,
    /// The least time without a caller's request that ends it (`NACOS_DEREGISTER_QUIET`).
    pub quiet: Duration,
    /// The most time (`NACOS_DEREGISTER_GRACE_MAX`).
    pub max: Duration,
}

impl LeavePolicy {
    /// The wider of two policies, field by field (a process with several registrations
    /// serves on as long as the most patient of them asks).
    pub(crate) fn widest(self, other: LeavePolicy) -> LeavePolicy {
        LeavePolicy {
            grace: self.grace.max(other.grace),
            quiet: self.quiet.max(other.quiet),
            max: self.max.max(other.max),
        }
    }

    /// No serving on at all.
    pub(crate) const NONE: LeavePolicy = LeavePolicy {
        grace: Duration::ZERO,
        quiet: Duration::ZERO,
        max: Duration::ZERO,
    };
}

const MAX_SERVICE_NAME: usize = 512;
const MAX_GROUP_NAME: usize = 128;
const MAX_METADATA_JSON: usize = 1024;

/// A secret string (a password): `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which Nacos API to speak (`NACOS_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ApiVersion {
    /// Find out: a gRPC connection first (feature `grpc`); when no server's gRPC port
    /// answers but HTTP does, HTTP: v3 first, v1 when a server answers 404 or 410 there.
    #[default]
    Auto,
    /// The gRPC protocol of Nacos 2.x/3.x clients (one connection, server push), on each
    /// server's port + `NACOS_GRPC_PORT_OFFSET`. Needs the `grpc` feature.
    Grpc,
    /// The v1 HTTP API (`/nacos/v1/ns/...`): Nacos 1.x, 2.x, 3.0, 3.1 and r-nacos.
    V1,
    /// The v3 client HTTP API (`/nacos/v3/client/ns/...`): Nacos 3.x.
    V3,
}

impl fmt::Display for ApiVersion {
    /// `auto`, `grpc`, `v1` or `v3`, as `NACOS_API` takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiVersion::Auto => "auto",
            ApiVersion::Grpc => "grpc",
            ApiVersion::V1 => "v1",
            ApiVersion::V3 => "v3",
        })
    }
}

/// Which address family a detected IP is taken from (`NACOS_IP_TYPE`, Spring Cloud
/// Alibaba's `ip-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpType {
    /// An IPv4 address.
    V4,
    /// A global IPv6 address (never link-local).
    V6,
}

/// One Nacos server: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl ServerAddr {
    /// Parses `host`, `host:port`, `http://host:port` or `https://host:port` (IPv6 hosts in
    /// brackets). A missing port means 8848.
    ///
    /// # Errors
    /// [`Error::Config`] naming `NACOS_SERVER_ADDR` for anything else.
    pub fn parse(entry: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::config(
                "NACOS_SERVER_ADDR",
                entry,
                format!("comma-separated `host`, `host:port` or `http(s)://host:port` ({why})"),
            )
        };
        let entry_trimmed = entry.trim();
        if entry_trimmed.is_empty() {
            return Err(bad("empty entry"));
        }
        let with_scheme = if entry_trimmed.contains("://") {
            entry_trimmed.to_owned()
        } else {
            format!("http://{entry_trimmed}")
        };
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => "http",
            "https" => "https",
            _ => return Err(bad("the scheme must be http or https")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials go in NACOS_USERNAME and NACOS_PASSWORD"));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(bad("a path goes in NACOS_CONTEXT_PATH"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment"));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => return Err(bad("no host")),
        };
        // `Url` drops a port equal to the scheme's default: read it back from the text.
        let port = match url.port() {
            Some(port) => port,
            None if has_explicit_port(entry_trimmed) => match scheme {
                "https" => 443,
                _ => 80,
            },
            None => DEFAULT_SERVER_PORT,
        };
        #[cfg(not(feature = "rustls"))]
        if scheme == "https" {
            return Err(bad("https needs nacos-core's `rustls` feature"));
        }
        Ok(ServerAddr { scheme, host, port })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.scheme
    }

    /// The host name or IP (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn has_explicit_port(entry: &str) -> bool {
    let authority = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    let authority = authority.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) => !port.is_empty() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The validated configuration of one registration.
///
/// Built by [`Config::from_env`] or [`Config::builder`]; every field has been checked, so
/// nothing built from a `Config` fails on its configuration later. `Debug` never shows the
/// password.
#[derive(Debug, Clone)]
pub struct Config {
    server_addrs: Vec<ServerAddr>,
    // Defaults are `'static` text: a process may hold thousands of configurations.
    context_path: Cow<'static, str>,
    namespace_id: Cow<'static, str>,
    group_name: Cow<'static, str>,
    service_name: String,
    cluster_name: Cow<'static, str>,
    ip: Option<IpAddr>,
    ip_type: Option<IpType>,
    port: Option<u16>,
    network_interface: Option<String>,
    preferred_networks: Vec<String>,
    weight: f64,
    metadata: Metadata,
    ephemeral: bool,
    enabled: bool,
    register_enabled: bool,
    heartbeat_interval: Option<Duration>,
    heartbeat_timeout: Option<Duration>,
    ip_delete_timeout: Option<Duration>,
    username: Option<String>,
    password: Option<Secret>,
    api: ApiVersion,
    grpc_port_offset: u16,
    grpc_probe_interval: Duration,
    instance_check: bool,
    grpc_tls: Option<std::sync::Arc<GrpcTls>>,
    deregister_grace: Duration,
    deregister_quiet: Duration,
    deregister_grace_max: Duration,
    probe_paths: std::sync::Arc<[String]>,
    request_timeout: Duration,
    handle_signals: bool,
    discovery_refresh: Duration,
    config_snapshot_dir: Option<std::path::PathBuf>,
    config_failover_dir: Option<std::path::PathBuf>,
    config_group_name: Option<String>,
}

impl Config {
    /// Reads and validates every `NACOS_*` variable of the process environment.
    ///
    /// # Errors
    /// The first malformed variable, as [`Error::Config`] (variable, value, expectation), or
    /// [`Error::Missing`] when `NACOS_SERVICE_NAME` is not set.
    pub fn from_env() -> Result<Self> {
        ConfigBuilder::from_env()?.build()
    }

    /// A builder with every value at its default: no environment is read.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The servers, in the order given.
    pub fn server_addrs(&self) -> &[ServerAddr] {
        &self.server_addrs
    }
    /// The context path, e.g. `/nacos` (leading slash, no trailing slash).
    pub fn context_path(&self) -> &str {
        &self.context_path
    }
    /// The namespace id.
    pub fn namespace_id(&self) -> &str {
        &self.namespace_id
    }
    /// The group name.
    pub fn group_name(&self) -> &str {
        &self.group_name
    }
    /// The service name, without the group.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
    /// The service name as Nacos keys it: `group@@service`.
    pub fn grouped_service_name(&self) -> String {
        format!("{}@@{}", self.group_name, self.service_name)
    }
    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }
    /// The configured advertised IP (`NACOS_IP`), if any.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
    /// The address family a detected IP is taken from (`NACOS_IP_TYPE`); `None`: IPv4,
    /// else a global IPv6 when no interface has an IPv4.
    pub fn ip_type(&self) -> Option<IpType> {
        self.ip_type
    }
    /// The configured advertised port (`NACOS_PORT`), if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// The interface whose address is advertised (`NACOS_NETWORK_INTERFACE`).
    pub fn network_interface(&self) -> Option<&str> {
        self.network_interface.as_deref()
    }
    /// The preferred networks (`NACOS_PREFERRED_NETWORKS`).
    pub fn preferred_networks(&self) -> &[String] {
        &self.preferred_networks
    }
    /// The weight, from 0 to 10000.
    pub fn weight(&self) -> f64 {
        self.weight
    }
    /// The metadata sent with the instance, `preserved.*` timing keys included.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// Whether the instance is ephemeral.
    pub fn ephemeral(&self) -> bool {
        self.ephemeral
    }
    /// Whether the instance is enabled (accepts traffic).
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    /// Whether registration is on at all (`NACOS_REGISTER_ENABLED`).
    pub fn register_enabled(&self) -> bool {
        self.register_enabled
    }
    /// The beat interval: `NACOS_HEARTBEAT_INTERVAL`, else 5 s. The server's
    /// `clientBeatInterval` overrides it at run time.
    pub fn beat_interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(DEFAULT_BEAT_INTERVAL)
    }
    /// Unhealthy after this long without beats (`NACOS_HEARTBEAT_TIMEOUT`), if set.
    pub fn heartbeat_timeout(&self) -> Option<Duration> {
        self.heartbeat_timeout
    }
    /// Deleted after this long without beats (`NACOS_IP_DELETE_TIMEOUT`), if set.
    pub fn ip_delete_timeout(&self) -> Option<Duration> {
        self.ip_delete_timeout
    }
    /// The username to log in with, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }
    /// The password to log in with, if any.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    /// The API to speak.
    pub fn api(&self) -> ApiVersion {
        self.api
    }
    /// The gRPC port's distance from each server's port (`NACOS_GRPC_PORT_OFFSET`, 1000).
    pub fn grpc_port_offset(&self) -> u16 {
        self.grpc_port_offset
    }
    /// The least time the app serves on after its deregistration on a signal
    /// (`NACOS_DEREGISTER_GRACE`, [`DEFAULT_DEREGISTER_GRACE`] when not set; zero opts out
    /// of serving on).
    pub fn deregister_grace(&self) -> Duration {
        self.deregister_grace
    }
    /// After the grace, how long without a caller's request ends the serving on
    /// (`NACOS_DEREGISTER_QUIET`, [`DEFAULT_DEREGISTER_QUIET`] when not set).
    pub fn deregister_quiet(&self) -> Duration {
        self.deregister_quiet
    }
    /// The most time the app serves on after its deregistration
    /// (`NACOS_DEREGISTER_GRACE_MAX`, [`DEFAULT_DEREGISTER_GRACE_MAX`] or the grace when
    /// that is longer).
    pub fn deregister_grace_max(&self) -> Duration {
        self.deregister_grace_max
    }
    /// How long the app serves on after its deregistration, as one value.
    pub fn leave_policy(&self) -> LeavePolicy {
        LeavePolicy {
            grace: self.deregister_grace,
            quiet: self.deregister_quiet,
            max: self.deregister_grace_max,
        }
    }
    /// The paths of health checks and scrapes (`NACOS_PROBE_PATHS`,
    /// [`DEFAULT_PROBE_PATHS`] when not set).
    pub fn probe_paths(&self) -> &[String] {
        &self.probe_paths
    }
    /// The same list, shared (a registration keeps it without copying it).
    pub(crate) fn probe_paths_shared(&self) -> std::sync::Arc<[String]> {
        self.probe_paths.clone()
    }
    /// With `NACOS_API=auto` on HTTP because no gRPC port answered, how often gRPC is
    /// tried again (`NACOS_GRPC_PROBE_INTERVAL`, [`DEFAULT_GRPC_PROBE_INTERVAL`]); zero:
    /// never.
    pub fn grpc_probe_interval(&self) -> Duration {
        self.grpc_probe_interval
    }
    /// TLS for the gRPC connection, when it is on (`NACOS_GRPC_TLS`).
    pub fn grpc_tls(&self) -> Option<&GrpcTls> {
        self.grpc_tls.as_deref()
    }
    /// Whether, over gRPC, the app's own service is watched and an instance the server no
    /// longer lists is registered again (`NACOS_INSTANCE_CHECK`, default `true`).
    pub fn instance_check(&self) -> bool {
        self.instance_check
    }
    /// The timeout of one HTTP request to Nacos.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// Whether the engine handles SIGTERM and SIGINT (`NACOS_HANDLE_SIGNALS`).
    pub fn handle_signals(&self) -> bool {
        self.handle_signals
    }
    /// How often a watched service is polled (`NACOS_DISCOVERY_REFRESH`, default 5 s).
    pub fn discovery_refresh(&self) -> Duration {
        self.discovery_refresh
    }
    /// Where the configuration center keeps the last content of each config it read
    /// (`NACOS_CONFIG_SNAPSHOT_DIR`); `None` when off (or no home directory is known).
    pub fn config_snapshot_dir(&self) -> Option<&std::path::Path> {
        self.config_snapshot_dir.as_deref()
    }
    /// Where an operator puts configs that replace the server's
    /// (`NACOS_CONFIG_FAILOVER_DIR`); `None` (the default): none.
    pub fn config_failover_dir(&self) -> Option<&std::path::Path> {
        self.config_failover_dir.as_deref()
    }
    /// The group of the configuration center's configs (`NACOS_CONFIG_GROUP`, else the
    /// service's group, `NACOS_GROUP`).
    pub fn config_group_name(&self) -> &str {
        self.config_group_name
            .as_deref()
            .unwrap_or(&self.group_name)
    }
}

/// Builds a [`Config`]; every setter overrides the environment variable it names.
///
/// Setters store their value; all checks happen in [`build`](ConfigBuilder::build), whose
/// error names the variable the setter stands for.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    server_addr: Option<String>,
    context_path: Option<String>,
    namespace_id: Option<String>,
    group_name: Option<String>,
    service_name: Option<String>,
    cluster_name: Option<String>,
    ip: Option<IpAddr>,
    ip_type: Option<IpType>,
    port: Option<u16>,
    network_interface: Option<String>,
    preferred_networks: Vec<String>,
    weight: Option<f64>,
    metadata: BTreeMap<String, String>,
    ephemeral: Option<bool>,
    enabled: Option<bool>,
    register_enabled: Option<bool>,
    heartbeat_interval: Option<Duration>,
    heartbeat_timeout: Option<Duration>,
    ip_delete_timeout: Option<Duration>,
    username: Option<String>,
    password: Option<Secret>,
    api: Option<ApiVersion>,
    grpc_port_offset: Option<u16>,
    grpc_probe_interval: Option<Duration>,
    instance_check: Option<bool>,
    grpc_tls_enabled: Option<bool>,
    grpc_tls: Option<GrpcTls>,
    deregister_grace: Option<Duration>,
    deregister_quiet: Option<Duration>,
    deregister_grace_max: Option<Duration>,
    probe_paths: Option<Vec<String>>,
    request_timeout: Option<Duration>,
    handle_signals: Option<bool>,
    discovery_refresh: Option<Duration>,
    config_snapshot_dir: Option<String>,
    config_failover_dir: Option<String>,
    config_group_name: Option<String>,
}

/// Reads one variable, trying aliases in order; empty values count as unset.
struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|&name| {
            (self.lookup)(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        })
    }

    fn string(&self, names: &[&'static str]) -> Option<String> {
        self.get(names).map(|(_, v)| v.trim().to_owned())
    }

    fn parsed<T>(
        &self,
        names: &[&'static str],
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>> {
        match self.get(names) {
            None => Ok(None),
            Some((name, raw)) => match parse(raw.trim()) {
                Some(v) => Ok(Some(v)),
                None => Err(Error::config(name, raw, expected)),
            },
        }
    }

    fn bool(&self, name: &'static str) -> Result<Option<bool>> {
        self.parsed(&[name], parse_bool, "true or false")
    }

    fn duration(&self, name: &'static str) -> Result<Option<Duration>> {
        self.parsed(
            &[name],
            |s| humantime::parse_duration(s).ok(),
            "a duration such as 5s or 500ms",
        )
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_api(s: &str) -> Option<ApiVersion> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Some(ApiVersion::Auto),
        "grpc" => Some(ApiVersion::Grpc),
        "v1" => Some(ApiVersion::V1),
        "v3" => Some(ApiVersion::V3),
        _ => None,
    }
}

/// `text` as the `'static` `default` when it is that, so it takes no allocation.
fn shared_text(text: String, default: &'static str) -> Cow<'static, str> {
    if text == default {
        Cow::Borrowed(default)
    } else {
        Cow::Owned(text)
    }
}

/// Parses `NACOS_METADATA`: a JSON object whose values are strings, numbers or booleans,
/// or `k=v,k2=v2`.
fn parse_metadata(raw: &str) -> Result<BTreeMap<String, String>> {
    let bad = |why: String| {
        Error::config(
            "NACOS_METADATA",
            raw,
            format!("a JSON object of strings or `k=v,k2=v2` ({why})"),
        )
    };
    let raw_trimmed = raw.trim();
    let mut out = BTreeMap::new();
    if raw_trimmed.starts_with('{') {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw_trimmed).map_err(|e| bad(e.to_string()))?;
        for (k, v) in map {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(bad(format!("the value of {k:?} is {other}"))),
            };
            out.insert(k, v);
        }
    } else {
        for pair in raw_trimmed.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("{:?} has no `=`", pair.trim())))?;
            if k.trim().is_empty() {
                return Err(bad(format!("{:?} has an empty key", pair.trim())));
            }
            out.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    Ok(out)
}

fn comma_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: String) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.$name = Some(value.into());
            self
        }
    };
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = Some(value);
            self
        }
    };
}

impl ConfigBuilder {
    /// A builder holding the values of the process's `NACOS_*` variables.
    ///
    /// # Errors
    /// The first variable that does not parse (see [`Config::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// A builder holding the values `lookup` gives for the `NACOS_*` names: the same as
    /// [`from_env`](Self::from_env) with another source (a map, a file already read).
    ///
    /// # Errors
    /// The first variable that does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Env { lookup };
        Ok(ConfigBuilder {
            server_addr: env.string(&["NACOS_SERVER_ADDR", "NACOS_CLIENT_SERVER_ADDRESS"]),
            context_path: env.string(&["NACOS_CONTEXT_PATH"]),
            namespace_id: env.string(&["NACOS_NAMESPACE", "NACOS_CLIENT_NAMESPACE"]),
            group_name: env.string(&["NACOS_GROUP"]),
            service_name: env.string(&["NACOS_SERVICE_NAME"]),
            cluster_name: env.string(&["NACOS_CLUSTER_NAME"]),
            ip: env.parsed(
                &["NACOS_IP", "NACOS_CLIENT_LOCAL_IP"],
                |s| s.parse().ok(),
                "an IPv4 or IPv6 address",
            )?,
            ip_type: env.parsed(
                &["NACOS_IP_TYPE"],
                |s| match s.to_ascii_lowercase().as_str() {
                    "ipv4" | "v4" => Some(IpType::V4),
                    "ipv6" | "v6" => Some(IpType::V6),
                    _ => None,
                },
                "ipv4 or ipv6",
            )?,
            port: env.parsed(
                &["NACOS_PORT"],
                |s| s.parse::<u16>().ok().filter(|p| *p != 0),
                "a port number from 1 to 65535",
            )?,
            network_interface: env.string(&["NACOS_NETWORK_INTERFACE"]),
            preferred_networks: env
                .string(&["NACOS_PREFERRED_NETWORKS"])
                .map(|s| comma_list(&s))
                .unwrap_or_default(),
            weight: env.parsed(
                &["NACOS_WEIGHT"],
                |s| s.parse::<f64>().ok(),
                "a number from 0 to 10000",
            )?,
            metadata: match env.get(&["NACOS_METADATA"]) {
                Some((_, raw)) => parse_metadata(&raw)?,
                None => BTreeMap::new(),
            },
            ephemeral: env.bool("NACOS_EPHEMERAL")?,
            enabled: env.bool("NACOS_INSTANCE_ENABLED")?,
            register_enabled: env.bool("NACOS_REGISTER_ENABLED")?,
            heartbeat_interval: env.duration("NACOS_HEARTBEAT_INTERVAL")?,
            heartbeat_timeout: env.duration("NACOS_HEARTBEAT_TIMEOUT")?,
            ip_delete_timeout: env.duration("NACOS_IP_DELETE_TIMEOUT")?,
            username: env.string(&["NACOS_USERNAME", "NACOS_CLIENT_USERNAME"]),
            password: env
                .get(&["NACOS_PASSWORD", "NACOS_CLIENT_PASSWORD"])
                .map(|(_, v)| Secret(v)),
            api: env.parsed(&["NACOS_API"], parse_api, "auto, grpc, v3 or v1")?,
            grpc_port_offset: env.parsed(
                &["NACOS_GRPC_PORT_OFFSET"],
                |s| s.parse::<u16>().ok(),
                "a number from 0 to 65535",
            )?,
            grpc_probe_interval: env.duration("NACOS_GRPC_PROBE_INTERVAL")?,
            instance_check: env.bool("NACOS_INSTANCE_CHECK")?,
            grpc_tls_enabled: env.bool("NACOS_GRPC_TLS")?,
            grpc_tls: {
                let tls = GrpcTls {
                    ca_file: env.string(&["NACOS_TLS_CA_FILE"]).map(Into::into),
                    cert_file: env.string(&["NACOS_TLS_CERT_FILE"]).map(Into::into),
                    key_file: env.string(&["NACOS_TLS_KEY_FILE"]).map(Into::into),
                    server_name: env.string(&["NACOS_TLS_SERVER_NAME"]),
                    trust_all: env.bool("NACOS_TLS_TRUST_ALL")?.unwrap_or(false),
                };
                (tls != GrpcTls::default()).then_some(tls)
            },
            deregister_grace: env.duration("NACOS_DEREGISTER_GRACE")?,
            deregister_quiet: env.duration("NACOS_DEREGISTER_QUIET")?,
            deregister_grace_max: env.duration("NACOS_DEREGISTER_GRACE_MAX")?,
            probe_paths: env.string(&["NACOS_PROBE_PATHS"]).map(|s| comma_list(&s)),
            request_timeout: env.duration("NACOS_REQUEST_TIMEOUT")?,
            handle_signals: env.bool("NACOS_HANDLE_SIGNALS")?,
            discovery_refresh: env.duration("NACOS_DISCOVERY_REFRESH")?,
            config_snapshot_dir: env.string(&["NACOS_CONFIG_SNAPSHOT_DIR"]),
            config_failover_dir: env.string(&["NACOS_CONFIG_FAILOVER_DIR"]),
            config_group_name: env.string(&["NACOS_CONFIG_GROUP"]),
        })
    }

    setter!(
        /// Servers, comma-separated (`NACOS_SERVER_ADDR`).
        server_addr: String
    );
    setter!(
        /// Context path (`NACOS_CONTEXT_PATH`).
        context_path: String
    );
    setter!(
        /// Namespace id (`NACOS_NAMESPACE`).
        namespace_id: String
    );
    setter!(
        /// Group (`NACOS_GROUP`).
        group_name: String
    );
    setter!(
        /// Service name (`NACOS_SERVICE_NAME`).
        service_name: String
    );
    setter!(
        /// Cluster (`NACOS_CLUSTER_NAME`).
        cluster_name: String
    );
    setter!(
        /// Advertised IP (`NACOS_IP`).
        ip: IpAddr
    );
    setter!(
        /// The address family of a detected IP (`NACOS_IP_TYPE`).
        ip_type: IpType
    );
    setter!(
        /// Advertised port (`NACOS_PORT`).
        port: u16
    );
    setter!(
        /// Interface whose address is advertised (`NACOS_NETWORK_INTERFACE`).
        network_interface: String
    );
    /// Weight, 0 to 10000 (`NACOS_WEIGHT`): `weight(2)` and `weight(2.5)` both work.
    #[must_use]
    pub fn weight(mut self, weight: impl Into<f64>) -> Self {
        self.weight = Some(weight.into());
        self
    }
    setter!(
        /// Ephemeral instance (`NACOS_EPHEMERAL`).
        ephemeral: bool
    );
    setter!(
        /// Instance enabled (`NACOS_INSTANCE_ENABLED`).
        enabled: bool
    );
    setter!(
        /// Registration on or off (`NACOS_REGISTER_ENABLED`).
        register_enabled: bool
    );
    setter!(
        /// Beat interval, sent as `preserved.heart.beat.interval` (`NACOS_HEARTBEAT_INTERVAL`).
        heartbeat_interval: Duration
    );
    setter!(
        /// Unhealthy after this long without beats, sent as `preserved.heart.beat.timeout`
        /// (`NACOS_HEARTBEAT_TIMEOUT`).
        heartbeat_timeout: Duration
    );
    setter!(
        /// Deleted after this long without beats, sent as `preserved.ip.delete.timeout`
        /// (`NACOS_IP_DELETE_TIMEOUT`).
        ip_delete_timeout: Duration
    );
    setter!(
        /// Login user (`NACOS_USERNAME`).
        username: String
    );
    setter!(
        /// API to speak (`NACOS_API`).
        api: ApiVersion
    );
    setter!(
        /// The gRPC port's distance from each server's port (`NACOS_GRPC_PORT_OFFSET`).
        grpc_port_offset: u16
    );
    setter!(
        /// With `NACOS_API=auto` on HTTP because no gRPC port answered, how often gRPC is
        /// tried again (`NACOS_GRPC_PROBE_INTERVAL`; zero: never).
        grpc_probe_interval: Duration
    );
    /// gRPC over TLS with `tls` (`NACOS_GRPC_TLS=true` and the `NACOS_TLS_*` variables);
    /// needs the `rustls` feature.
    #[must_use]
    pub fn grpc_tls(mut self, tls: GrpcTls) -> Self {
        self.grpc_tls_enabled = Some(true);
        self.grpc_tls = Some(tls);
        self
    }
    setter!(
        /// gRPC over TLS on or off (`NACOS_GRPC_TLS`); on by default with `https://`
        /// servers or TLS settings.
        grpc_tls_enabled: bool
    );
    setter!(
        /// Over gRPC, watch the app's own service and register an instance the server no
        /// longer lists again (`NACOS_INSTANCE_CHECK`).
        instance_check: bool
    );
    setter!(
        /// The least time the app serves on after its deregistration on a signal
        /// (`NACOS_DEREGISTER_GRACE`; zero opts out of serving on).
        deregister_grace: Duration
    );
    setter!(
        /// After the grace, how long without a caller's request ends the serving on
        /// (`NACOS_DEREGISTER_QUIET`).
        deregister_quiet: Duration
    );
    setter!(
        /// The most time the app serves on after its deregistration
        /// (`NACOS_DEREGISTER_GRACE_MAX`).
        deregister_grace_max: Duration
    );
    setter!(
        /// Timeout of one HTTP request to Nacos (`NACOS_REQUEST_TIMEOUT`).
        request_timeout: Duration
    );
    setter!(
        /// Whether the engine handles SIGTERM and SIGINT (`NACOS_HANDLE_SIGNALS`); `false`
        /// leaves them to the app, which deregisters through `shutdown_signal()`,
        /// `deregister()` or drop.
        handle_signals: bool
    );
    setter!(
        /// How often a watched service is polled (`NACOS_DISCOVERY_REFRESH`).
        discovery_refresh: Duration
    );

    /// Where the configuration center keeps the last content of each config
    /// (`NACOS_CONFIG_SNAPSHOT_DIR`); `off` keeps none.
    #[must_use]
    pub fn config_snapshot_dir(mut self, dir: impl Into<String>) -> Self {
        self.config_snapshot_dir = Some(dir.into());
        self
    }

    /// Where an operator puts configs that replace the server's
    /// (`NACOS_CONFIG_FAILOVER_DIR`).
    #[must_use]
    pub fn config_failover_dir(mut self, dir: impl Into<String>) -> Self {
        self.config_failover_dir = Some(dir.into());
        self
    }

    /// The group of the configuration center's configs (`NACOS_CONFIG_GROUP`; default:
    /// the service's group).
    #[must_use]
    pub fn config_group_name(mut self, group_name: impl Into<String>) -> Self {
        self.config_group_name = Some(group_name.into());
        self
    }

    /// Whether a service name is set (by `NACOS_SERVICE_NAME` or the setter).
    pub fn has_service_name(&self) -> bool {
        self.service_name.is_some()
    }

    /// Login password (`NACOS_PASSWORD`).
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Preferred networks (`NACOS_PREFERRED_NETWORKS`): CIDRs such as `10.0.0.0/8` or
    /// address prefixes such as `192.168.`.
    #[must_use]
    pub fn preferred_networks<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.preferred_networks = networks.into_iter().map(Into::into).collect();
        self
    }

    /// The paths of health checks and scrapes (`NACOS_PROBE_PATHS`): requests to them (or
    /// below them) do not keep the app serving on after its deregistration. Replaces the
    /// defaults; an empty list counts every request (but those of known probers'
    /// `User-Agent`s).
    #[must_use]
    pub fn probe_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.probe_paths = Some(paths.into_iter().map(Into::into).collect());
        self
    }

    /// Adds one metadata entry (`NACOS_METADATA`), replacing one with the same key.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks every value and builds the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable of the first invalid value, or
    /// [`Error::Missing`] without a service name.
    pub fn build(self) -> Result<Config> {
        let mut server_addrs = self
            .server_addr
            .as_deref()
            .unwrap_or("127.0.0.1:8848")
            .split(',')
            .map(ServerAddr::parse)
            .collect::<Result<Vec<_>>>()?;
        // A process may hold thousands of configurations: no spare capacity.
        server_addrs.shrink_to_fit();

        let context_path = match self.context_path.as_deref().map(str::trim) {
            None => "/nacos".to_owned(),
            Some(raw) => {
                let path = format!("/{}", raw.trim_matches('/'));
                if path.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
                    return Err(Error::config(
                        "NACOS_CONTEXT_PATH",
                        raw,
                        "a URL path such as /nacos",
                    ));
                }
                if path == "/" { String::new() } else { path }
            }
        };

        let https = server_addrs.iter().any(|a| a.scheme() == "https");
        let grpc_tls = match self.grpc_tls_enabled {
            Some(false) => None,
            Some(true) => Some(self.grpc_tls.unwrap_or_default()),
            None if https || self.grpc_tls.is_some() => Some(self.grpc_tls.unwrap_or_default()),
            None => None,
        };
        if let Some(tls) = &grpc_tls {
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), None) => {
                    return Err(Error::config(
                        "NACOS_TLS_KEY_FILE",
                        "",
                        format!(
                            "the private key of NACOS_TLS_CERT_FILE ({})",
                            cert.display()
                        ),
                    ));
                }
                (None, Some(key)) => {
                    return Err(Error::config(
                        "NACOS_TLS_CERT_FILE",
                        "",
                        format!("the certificate of NACOS_TLS_KEY_FILE ({})", key.display()),
                    ));
                }
                _ => {}
            }
        }
        let grpc_tls = grpc_tls.map(std::sync::Arc::new);

        let service_name = self.service_name.ok_or(Error::Missing {
            variable: "NACOS_SERVICE_NAME",
            expected: "the name under which this app registers, e.g. order-service".into(),
        })?;
        check_name("NACOS_SERVICE_NAME", &service_name, MAX_SERVICE_NAME)?;

        let group_name = self.group_name.unwrap_or_else(|| "DEFAULT_GROUP".into());
        check_name("NACOS_GROUP", &group_name, MAX_GROUP_NAME)?;

        let namespace_id = self.namespace_id.unwrap_or_else(|| "public".into());
        if namespace_id.contains(char::is_whitespace) || namespace_id.len() > 128 {
            return Err(Error::config(
                "NACOS_NAMESPACE",
                &namespace_id,
                "a namespace id (not its display name) without spaces",
            ));
        }

        let cluster_name = self.cluster_name.unwrap_or_else(|| "DEFAULT".into());
        if cluster_name.is_empty()
            || !cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::config(
                "NACOS_CLUSTER_NAME",
                &cluster_name,
                "letters, digits and '-' only (Nacos rejects '_')",
            ));
        }

        if self.port == Some(0) {
            return Err(Error::config(
                "NACOS_PORT",
                0,
                "a port number from 1 to 65535",
            ));
        }
        if let Some(ip) = self.ip {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(Error::config(
                    "NACOS_IP",
                    ip,
                    "an address other nodes can reach, not a wildcard or multicast address",
                ));
            }
        }
        for net in &self.preferred_networks {
            if net.contains('/') && net.parse::<ipnet::IpNet>().is_err() {
                return Err(Error::config(
                    "NACOS_PREFERRED_NETWORKS",
                    net,
                    "CIDRs such as 10.0.0.0/8 or address prefixes such as 192.168.",
                ));
            }
        }

        let weight = self.weight.unwrap_or(1.0);
        if !(0.0..=10_000.0).contains(&weight) {
            return Err(Error::config(
                "NACOS_WEIGHT",
                weight,
                "a number from 0 to 10000",
            ));
        }

        let interval = self.heartbeat_interval;
        if interval == Some(Duration::ZERO) {
            return Err(Error::config(
                "NACOS_HEARTBEAT_INTERVAL",
                "0s",
                "a duration of at least 1ms",
            ));
        }
        let effective_interval = interval.unwrap_or(DEFAULT_BEAT_INTERVAL);
        for (variable, value) in [
            ("NACOS_HEARTBEAT_TIMEOUT", self.heartbeat_timeout),
            ("NACOS_IP_DELETE_TIMEOUT", self.ip_delete_timeout),
        ] {
            if let Some(value) = value {
                if value < effective_interval {
                    return Err(Error::config(
                        variable,
                        humantime::format_duration(value),
                        format!(
                            "a duration of at least the beat interval ({})",
                            humantime::format_duration(effective_interval)
                        ),
                    ));
                }
            }
        }

        let mut metadata = self.metadata;
        for (key, value) in [
            (PRESERVED_HEART_BEAT_INTERVAL, self.heartbeat_interval),
            (PRESERVED_HEART_BEAT_TIMEOUT, self.heartbeat_timeout),
            (PRESERVED_IP_DELETE_TIMEOUT, self.ip_delete_timeout),
        ] {
            if let Some(value) = value {
                metadata.insert(key.to_owned(), value.as_millis().to_string());
            }
        }
        let metadata_len = serde_json::to_string(&metadata).map_or(0, |s| s.len());
        // Exactly as many slots as entries: a process may hold thousands of configurations.
        let metadata = {
            let mut compact = Metadata::with_capacity(metadata.len());
            for (key, value) in metadata {
                compact.insert(key, value);
            }
            compact
        };
        if metadata_len > MAX_METADATA_JSON {
            return Err(Error::config(
                "NACOS_METADATA",
                format!("<{metadata_len} characters as JSON>"),
                format!("at most {MAX_METADATA_JSON} characters as JSON (a Nacos server limit)"),
            ));
        }

        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(Error::Missing {
                    variable: "NACOS_PASSWORD",
                    expected: "set with NACOS_USERNAME".into(),
                });
            }
            (None, Some(_)) => {
                return Err(Error::Missing {
                    variable: "NACOS_USERNAME",
                    expected: "set with NACOS_PASSWORD".into(),
                });
            }
            _ => {}
        }

        let api = self.api.unwrap_or_default();

        let request_timeout = self.request_timeout.unwrap_or(Duration::from_secs(3));
        if request_timeout.is_zero() {
            return Err(Error::config(
                "NACOS_REQUEST_TIMEOUT",
                "0s",
                "a duration of at least 1ms",
            ));
        }
        let discovery_refresh = self.discovery_refresh.unwrap_or(DEFAULT_REFRESH);
        if discovery_refresh < Duration::from_millis(100) {
            return Err(Error::config(
                "NACOS_DISCOVERY_REFRESH",
                humantime::format_duration(discovery_refresh),
                "a duration of at least 100ms",
            ));
        }

        let deregister_grace = self
            .deregister_grace
            .unwrap_or(crate::settings::DEFAULT_DEREGISTER_GRACE);
        let deregister_quiet = self.deregister_quiet.unwrap_or(DEFAULT_DEREGISTER_QUIET);
        let deregister_grace_max = match self.deregister_grace_max {
            Some(max) if max < deregister_grace => {
                return Err(Error::config(
                    "NACOS_DEREGISTER_GRACE_MAX",
                    humantime::format_duration(max),
                    format!(
                        "a duration of at least NACOS_DEREGISTER_GRACE ({})",
                        humantime::format_duration(deregister_grace)
                    ),
                ));
            }
            Some(max) => max,
            None => DEFAULT_DEREGISTER_GRACE_MAX.max(deregister_grace),
        };
        let probe_paths = match self.probe_paths {
            Some(paths) => {
                if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                    return Err(Error::config(
                        "NACOS_PROBE_PATHS",
                        bad,
                        "comma-separated paths, each starting with '/'",
                    ));
                }
                paths.into()
            }
            // One list for every configuration that keeps the default: a process may hold
            // thousands of them (each copy cost about 1 KB).
            None => {
                static DEFAULT: std::sync::OnceLock<std::sync::Arc<[String]>> =
                    std::sync::OnceLock::new();
                DEFAULT
                    .get_or_init(|| {
                        DEFAULT_PROBE_PATHS
                            .iter()
                            .map(|p| (*p).to_owned())
                            .collect()
                    })
                    .clone()
            }
        };

        Ok(Config {
            server_addrs,
            context_path: shared_text(context_path, "/nacos"),
            namespace_id: shared_text(namespace_id, "public"),
            group_name: shared_text(group_name, "DEFAULT_GROUP"),
            service_name,
            cluster_name: shared_text(cluster_name, "DEFAULT"),
            ip: self.ip,
            ip_type: self.ip_type,
            port: self.port,
            network_interface: self.network_interface,
            preferred_networks: self.preferred_networks,
            weight,
            metadata,
            ephemeral: self.ephemeral.unwrap_or(true),
            enabled: self.enabled.unwrap_or(true),
            register_enabled: self.register_enabled.unwrap_or(true),
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            ip_delete_timeout: self.ip_delete_timeout,
            username: self.username,
            password: self.password,
            api,
            grpc_port_offset: self
                .grpc_port_offset
                .unwrap_or(crate::settings::DEFAULT_GRPC_PORT_OFFSET),
            grpc_probe_interval: self
                .grpc_probe_interval
                .unwrap_or(DEFAULT_GRPC_PROBE_INTERVAL),
            instance_check: self.instance_check.unwrap_or(true),
            grpc_tls,
            deregister_grace,
            deregister_quiet,
            deregister_grace_max,
            probe_paths,
            request_timeout,
            handle_signals: self.handle_signals.unwrap_or(true),
            discovery_refresh,
            config_snapshot_dir: snapshot_dir(self.config_snapshot_dir.as_deref()),
            config_failover_dir: self
                .config_failover_dir
                .filter(|d| !d.eq_ignore_ascii_case("off"))
                .map(std::path::PathBuf::from),
            config_group_name: self.config_group_name,
        })
    }
}

/// The snapshot dir: `raw` (`off`, `false`, `none`: none), else the user's cache dir.
fn snapshot_dir(raw: Option<&str>) -> Option<std::path::PathBuf> {
    match raw.map(str::trim) {
        Some(off) if ["off", "false", "none", "0"].contains(&off.to_ascii_lowercase().as_str()) => {
            None
        }
        Some(dir) => Some(std::path::PathBuf::from(dir)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|d| !d.is_empty())
                    .map(|home| std::path::PathBuf::from(home).join(".cache"))
            })
            .map(|cache| cache.join("nacos-rs").join("config")),
    }
}

fn check_name(variable: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(Error::config(
            variable,
            value,
            format!("1 to {max} characters"),
        ));
    }
    if value.contains("@@") || value.contains(char::is_whitespace) {
        return Err(Error::config(
            variable,
            value,
            "a name without '@@' or white space",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConfigBuilder::from_lookup(|name| map.get(name).cloned())?.build()
    }

    fn err(vars: &[(&str, &str)]) -> String {
        let mut all = vec![("NACOS_SERVICE_NAME", "svc")];
        all.extend_from_slice(vars);
        from(&all).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let cfg = from(&[("NACOS_SERVICE_NAME", "orders")]).unwrap();
        assert_eq!(cfg.server_addrs()[0].to_string(), "http://127.0.0.1:8848");
        assert_eq!(cfg.context_path(), "/nacos");
        assert_eq!(cfg.namespace_id(), "public");
        assert_eq!(cfg.group_name(), "DEFAULT_GROUP");
        assert_eq!(cfg.grouped_service_name(), "DEFAULT_GROUP@@orders");
        assert_eq!(cfg.cluster_name(), "DEFAULT");
        assert_eq!(cfg.weight(), 1.0);
        assert!(cfg.ephemeral() && cfg.enabled() && cfg.register_enabled());
        assert_eq!(cfg.beat_interval(), Duration::from_secs(5));
        assert_eq!(cfg.request_timeout(), Duration::from_secs(3));
        assert_eq!(cfg.deregister_grace(), DEFAULT_DEREGISTER_GRACE);
        assert_eq!(cfg.deregister_quiet(), DEFAULT_DEREGISTER_QUIET);
        assert_eq!(cfg.deregister_grace_max(), DEFAULT_DEREGISTER_GRACE_MAX);
        assert!(cfg.probe_paths().iter().any(|p| p == "/actuator/health"));
        assert_eq!(cfg.api(), ApiVersion::Auto);
        assert!(cfg.metadata().is_empty());
    }

    #[test]
    fn grpc_tls_is_on_with_https_servers_or_tls_settings_and_off_when_asked() {
        let plain = from(&[("NACOS_SERVICE_NAME", "svc")]).unwrap();
        assert!(plain.grpc_tls().is_none());
        assert!(plain.instance_check());
        assert_eq!(plain.grpc_probe_interval(), DEFAULT_GRPC_PROBE_INTERVAL);
        let ca = from(&[
            ("NACOS_SERVICE_NAME", "svc"),
            ("NACOS_TLS_CA_FILE", "/etc/ca.pem"),
        ])
        .unwrap();
        let tls = ca.grpc_tls().expect("TLS on with a CA file");
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert!(!tls.trust_all);
        let off = from(&[
            ("NACOS_SERVICE_NAME", "svc"),
            ("NACOS_TLS_CA_FILE", "/etc/ca.pem"),
            ("NACOS_GRPC_TLS", "false"),
        ])
        .unwrap();
        assert!(off.grpc_tls().is_none());
        let on = from(&[("NACOS_SERVICE_NAME", "svc"), ("NACOS_GRPC_TLS", "true")]).unwrap();
        assert_eq!(on.grpc_tls(), Some(&GrpcTls::default()));
        let mutual = from(&[
            ("NACOS_SERVICE_NAME", "svc"),
            ("NACOS_TLS_CERT_FILE", "/etc/client.pem"),
            ("NACOS_TLS_KEY_FILE", "/etc/client.key"),
            ("NACOS_TLS_SERVER_NAME", "nacos.internal"),
            ("NACOS_TLS_TRUST_ALL", "true"),
        ])
        .unwrap();
        let tls = mutual.grpc_tls().unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("nacos.internal"));
        assert!(tls.trust_all && tls.key_file.is_some());
        // Paths only in Debug.
        assert!(format!("{tls:?}").contains("client.key"));
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        let e = err(&[("NACOS_TLS_CERT_FILE", "/etc/client.pem")]);
        assert!(
            e.contains("NACOS_TLS_KEY_FILE") && e.contains("client.pem"),
            "{e}"
        );
        let e = err(&[("NACOS_TLS_KEY_FILE", "/etc/client.key")]);
        assert!(
            e.contains("NACOS_TLS_CERT_FILE") && e.contains("client.key"),
            "{e}"
        );
    }

    #[test]
    fn every_variable_is_read() {
        let cfg = from(&[
            (
                "NACOS_SERVER_ADDR",
                "a.example:9000, http://b.example,[::1]:7000",
            ),
            ("NACOS_CONTEXT_PATH", "registry/"),
            ("NACOS_NAMESPACE", "dev"),
            ("NACOS_GROUP", "G"),
            ("NACOS_SERVICE_NAME", "orders"),
            ("NACOS_CLUSTER_NAME", "east-1"),
            ("NACOS_IP", "10.1.2.3"),
            ("NACOS_PORT", "9090"),
            ("NACOS_NETWORK_INTERFACE", "eth1"),
            ("NACOS_PREFERRED_NETWORKS", "10.0.0.0/8, 192.168."),
            ("NACOS_WEIGHT", "2.5"),
            (
                "NACOS_METADATA",
                r#"{"version":"1.2","canary":true,"shard":3}"#,
            ),
            ("NACOS_EPHEMERAL", "false"),
            ("NACOS_INSTANCE_ENABLED", "no"),
            ("NACOS_REGISTER_ENABLED", "0"),
            ("NACOS_HEARTBEAT_INTERVAL", "2s"),
            ("NACOS_HEARTBEAT_TIMEOUT", "6s"),
            ("NACOS_IP_DELETE_TIMEOUT", "1m"),
            ("NACOS_USERNAME", "nacos"),
            ("NACOS_PASSWORD", "s3cret"),
            ("NACOS_API", "V1"),
            ("NACOS_DEREGISTER_GRACE", "500ms"),
            ("NACOS_REQUEST_TIMEOUT", "1s"),
        ])
        .unwrap();
        let servers: Vec<String> = cfg.server_addrs().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            servers,
            [
                "http://a.example:9000",
                "http://b.example:8848",
                "http://[::1]:7000"
            ]
        );
        assert_eq!(cfg.context_path(), "/registry");
        assert_eq!(cfg.namespace_id(), "dev");
        assert_eq!(cfg.grouped_service_name(), "G@@orders");
        assert_eq!(cfg.cluster_name(), "east-1");
        assert_eq!(cfg.ip(), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(cfg.port(), Some(9090));
        assert_eq!(cfg.network_interface(), Some("eth1"));
        assert_eq!(cfg.preferred_networks(), ["10.0.0.0/8", "192.168."]);
        assert_eq!(cfg.weight(), 2.5);
        let md = cfg.metadata();
        assert_eq!(md.get("version").map(String::as_str), Some("1.2"));
        assert_eq!(md.get("canary").map(String::as_str), Some("true"));
        assert_eq!(md.get("shard").map(String::as_str), Some("3"));
        assert_eq!(
            md.get(PRESERVED_HEART_BEAT_INTERVAL).map(String::as_str),
            Some("2000")
        );
        assert_eq!(
            md.get(PRESERVED_HEART_BEAT_TIMEOUT).map(String::as_str),
            Some("6000")
        );
        assert_eq!(
            md.get(PRESERVED_IP_DELETE_TIMEOUT).map(String::as_str),
            Some("60000")
        );
        assert!(!cfg.ephemeral() && !cfg.enabled() && !cfg.register_enabled());
        assert_eq!(cfg.beat_interval(), Duration::from_secs(2));
        assert_eq!(cfg.username(), Some("nacos"));
        assert_eq!(cfg.password().unwrap().expose(), "s3cret");
        assert_eq!(cfg.api(), ApiVersion::V1);
        assert_eq!(cfg.deregister_grace(), Duration::from_millis(500));
        assert_eq!(cfg.request_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn aliases_are_read_and_primary_names_win() {
        let cfg = from(&[
            ("NACOS_SERVICE_NAME", "svc"),
            ("NACOS_CLIENT_SERVER_ADDRESS", "alias:1"),
            ("NACOS_CLIENT_NAMESPACE", "ns-alias"),
            ("NACOS_NAMESPACE", "ns-primary"),
            ("NACOS_CLIENT_LOCAL_IP", "10.0.0.7"),
            ("NACOS_CLIENT_USERNAME", "u"),
            ("NACOS_CLIENT_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(cfg.server_addrs()[0].to_string(), "http://alias:1");
        assert_eq!(cfg.namespace_id(), "ns-primary");
        assert_eq!(cfg.ip(), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(cfg.username(), Some("u"));
    }

    #[test]
    fn metadata_as_pairs() {
        let cfg = from(&[
            ("NACOS_SERVICE_NAME", "svc"),
            ("NACOS_METADATA", "version=1.2, zone = a,"),
        ])
        .unwrap();
        assert_eq!(
            cfg.metadata().get("version").map(String::as_str),
            Some("1.2")
        );
        assert_eq!(cfg.metadata().get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn each_malformed_variable_has_its_own_error() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "NACOS_SERVER_ADDR",
                "ftp://x:1",
                "scheme must be http or https",
            ),
            ("NACOS_SERVER_ADDR", "a:1,,b:2", "empty entry"),
            ("NACOS_SERVER_ADDR", "host:99999", "host:port"),
            (
                "NACOS_SERVER_ADDR",
                "http://u:pw@host:1",
                "credentials go in",
            ),
            ("NACOS_CONTEXT_PATH", "/na cos", "a URL path"),
            ("NACOS_NAMESPACE", "my namespace", "namespace id"),
            ("NACOS_GROUP", "a@@b", "without '@@'"),
            ("NACOS_CLUSTER_NAME", "east_1", "Nacos rejects '_'"),
            ("NACOS_IP", "10.0.0.300", "an IPv4 or IPv6 address"),
            ("NACOS_IP", "0.0.0.0", "not a wildcard"),
            ("NACOS_PORT", "0", "from 1 to 65535"),
            ("NACOS_PORT", "http", "from 1 to 65535"),
            ("NACOS_PREFERRED_NETWORKS", "10.0.0.0/99", "CIDRs"),
            ("NACOS_WEIGHT", "heavy", "from 0 to 10000"),
            ("NACOS_WEIGHT", "10001", "from 0 to 10000"),
            ("NACOS_METADATA", "{\"a\":", "JSON object"),
            ("NACOS_METADATA", "{\"a\":[1]}", "the value of \"a\""),
            ("NACOS_METADATA", "version", "has no `=`"),
            ("NACOS_EPHEMERAL", "maybe", "true or false"),
            ("NACOS_INSTANCE_ENABLED", "2", "true or false"),
            ("NACOS_REGISTER_ENABLED", "y", "true or false"),
            ("NACOS_HEARTBEAT_INTERVAL", "5", "a duration such as 5s"),
            ("NACOS_HEARTBEAT_INTERVAL", "0s", "at least 1ms"),
            (
                "NACOS_HEARTBEAT_TIMEOUT",
                "1s",
                "at least the beat interval",
            ),
            (
                "NACOS_IP_DELETE_TIMEOUT",
                "4s",
                "at least the beat interval",
            ),
            ("NACOS_API", "v2", "auto, grpc, v3 or v1"),
            ("NACOS_GRPC_PORT_OFFSET", "-1", "a number from 0 to 65535"),
            ("NACOS_GRPC_PROBE_INTERVAL", "hourly", "a duration"),
            ("NACOS_INSTANCE_CHECK", "maybe", "true or false"),
            ("NACOS_DEREGISTER_GRACE", "soon", "a duration"),
            ("NACOS_DEREGISTER_QUIET", "later", "a duration"),
            (
                "NACOS_DEREGISTER_GRACE_MAX",
                "1s",
                "at least NACOS_DEREGISTER_GRACE (2s)",
            ),
            (
                "NACOS_PROBE_PATHS",
                "/health,ready",
                "each starting with '/'",
            ),
            ("NACOS_REQUEST_TIMEOUT", "0ms", "at least 1ms"),
        ];
        for (var, value, expected) in cases {
            let msg = err(&[(var, value)]);
            assert!(
                msg.contains(var) && msg.contains(expected),
                "{var}={value}: got {msg:?}"
            );
        }
    }

    #[test]
    fn leave_policy_is_read_and_a_long_grace_lifts_the_max() {
        let cfg = from(&[
            ("NACOS_SERVICE_NAME", "orders"),
            ("NACOS_DEREGISTER_GRACE", "1s"),
            ("NACOS_DEREGISTER_QUIET", "5s"),
            ("NACOS_DEREGISTER_GRACE_MAX", "90s"),
            ("NACOS_PROBE_PATHS", "/ping, /status"),
        ])
        .unwrap();
        let policy = cfg.leave_policy();
        assert_eq!(policy.grace, Duration::from_secs(1));
        assert_eq!(policy.quiet, Duration::from_secs(5));
        assert_eq!(policy.max, Duration::from_secs(90));
        assert_eq!(cfg.probe_paths(), ["/ping", "/status"]);
        let cfg = from(&[
            ("NACOS_SERVICE_NAME", "orders"),
            ("NACOS_DEREGISTER_GRACE", "60s"),
        ])
        .unwrap();
        assert_eq!(cfg.deregister_grace_max(), Duration::from_secs(60));
    }

    #[test]
    fn missing_values_are_named() {
        let msg = from(&[]).unwrap_err().to_string();
        assert!(msg.contains("NACOS_SERVICE_NAME is required"), "{msg}");
        let msg = err(&[("NACOS_USERNAME", "nacos")]);
        assert!(msg.contains("NACOS_PASSWORD is required"), "{msg}");
        let msg = err(&[("NACOS_PASSWORD", "hunter2")]);
        assert!(msg.contains("NACOS_USERNAME is required"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let big = format!("k={}", "x".repeat(1100));
        let msg = err(&[("NACOS_METADATA", &big)]);
        assert!(msg.contains("at most 1024 characters"), "{msg}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = from(&[
            ("NACOS_SERVICE_NAME", "svc"),
            ("NACOS_USERNAME", "nacos"),
            ("NACOS_PASSWORD", "hunter2"),
        ])
        .unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let builder = Config::builder().password("hunter2");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }

    #[test]
    fn builder_overrides_environment() {
        let cfg = ConfigBuilder::from_lookup(|name| match name {
            "NACOS_SERVICE_NAME" => Some("from-env".into()),
            "NACOS_WEIGHT" => Some("3".into()),
            _ => None,
        })
        .unwrap()
        .service_name("from-builder")
        .port(8081u16)
        .metadata("k", "v")
        .build()
        .unwrap();
        assert_eq!(cfg.service_name(), "from-builder");
        assert_eq!(cfg.weight(), 3.0);
        assert_eq!(cfg.port(), Some(8081));
        assert_eq!(cfg.metadata().get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn setters_take_plain_literals() {
        let cfg = Config::builder()
            .service_name("s")
            .port(8081)
            .weight(2)
            .build()
            .unwrap();
        assert_eq!((cfg.port(), cfg.weight()), (Some(8081), 2.0));
        let cfg = Config::builder()
            .service_name("s")
            .weight(2.5)
            .build()
            .unwrap();
        assert_eq!(cfg.weight(), 2.5);
    }

    #[test]
    fn builder_errors_name_the_variable() {
        let msg = Config::builder()
            .service_name("svc")
            .weight(-1.0)
            .build()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("NACOS_WEIGHT"), "{msg}");
    }

    #[test]
    fn ipv6_servers_parse() {
        let one = ServerAddr::parse("[::1]:8848").unwrap();
        assert_eq!(one.to_string(), "http://[::1]:8848");
        let two = ServerAddr::parse("http://[fd00::1]:8848").unwrap();
        assert_eq!(two.to_string(), "http://[fd00::1]:8848");
        assert_eq!(ServerAddr::parse("[fd00::1]").unwrap().port(), 8848);
    }

    #[test]
    fn server_addr_forms() {
        let parse = |s: &str| ServerAddr::parse(s).unwrap().to_string();
        assert_eq!(parse("nacos"), "http://nacos:8848");
        assert_eq!(parse("nacos:80"), "http://nacos:80");
        assert_eq!(parse("http://nacos:80/"), "http://nacos:80");
        assert_eq!(parse("http://[::1]"), "http://[::1]:8848");
        assert!(ServerAddr::parse("http://nacos/nacos").is_err());
    }
}
