//! The Nacos naming HTTP APIs: register, deregister, beat, instance list, login.
//!
//! Two APIs, chosen by `NACOS_API` ([`ApiVersion`]):
//! - **v1** (`{context}/v1/ns/instance`, `/instance/beat`, `/instance/list`): Nacos 1.x,
//!   2.x, 3.0, 3.1 and r-nacos. Beats answer `code` 10200, or 20404 for an unknown instance.
//! - **v3** (`{context}/v3/client/ns/instance` and `/instance/list`): Nacos 3.x. A beat is
//!   the register call with `heartBeat=true`; `code` 21003 means the instance is unknown.
//!   Answers come in the `{"code":0,"message":"success","data":...}` envelope.
//! - **auto** (the default): the first request to each server goes to v3; a 404 or 410
//!   there means the server speaks v1 only, and the request is sent again on v1. The
//!   answer is remembered per server and logged once.
//!
//! Mirrors the Java 1.x client's `NamingProxy`: every request starts at a random server and
//! tries each server once; with a single server it tries up to 3 times. Transport failures,
//! HTTP 5xx and 403 are tried again; a 400 is not. Every request carries `User-Agent`,
//! `Client-Version`, `Request-Module: Naming` and a fresh `RequestId`, and is bounded by
//! the configured request timeout.
//!
//! With a username, the client logs in (`POST {context}/v3/auth/user/login`, falling back
//! to `{context}/v1/auth/login` on 404/410; v1 only when the server is known to speak v1),
//! sends the token as
//! the `accessToken` query parameter, logs in again before the token expires (at
//! `ttl - random(ttl/15 .. ttl/10)`, as the Java 2.x client does) and after a 403. Logins
//! are rate-limited to one per [`LOGIN_RETRY`]; refused credentials double that wait up to
//! [`MAX_LOGIN_RETRY`]. A login error is logged once (again only when it changes), so a
//! wrong password gives one clear error instead of a storm of requests.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use crate::config::{ApiVersion, Config, Secret, ServerAddr};
use crate::error::{Error, Result, excerpt};
use crate::instance::{BeatInfo, BeatResult, Instance, InstanceList, ServiceKey};

/// The `User-Agent` this crate sends: its name and version.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// The shortest time between two logins to the same cluster.
pub const LOGIN_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two logins after the credentials were refused.
pub const MAX_LOGIN_RETRY: Duration = Duration::from_secs(60);

const SINGLE_SERVER_TRIES: usize = 3;

/// At most this many of the beat engine's requests (registrations, beats,
/// deregistrations) through one client are on the wire at once, and so at most this many
/// connections per server: a process registering thousands of instances sends its beats
/// through a bounded pool instead of opening a connection per instance. The engine waits
/// for a slot before it builds a request ([`NamingClient`]'s own methods, called
/// directly, are not limited).
///
/// Each connection costs about 26 KB (hyper's read and write buffers and request queue).
/// 16 requests in flight carry 3,200 beats per second (16,000 instances beating every 5 s)
/// as long as the server answers within 5 ms; a slower server makes beats queue here, not
/// fail.
pub const MAX_IN_FLIGHT: usize = 16;

/// A client of the v1 naming API of one Nacos cluster.
///
/// Cheap to share behind an `Arc`; all methods take `&self`.
pub struct NamingClient {
    http: reqwest::Client,
    /// The beat engine's [`MAX_IN_FLIGHT`] slots (see [`NamingClient::admit`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    servers: Vec<Server>,
    mode: ApiVersion,
    context_path: String,
    request_timeout: Duration,
    auth: Option<Auth>,
}

impl fmt::Debug for NamingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamingClient")
            .field("servers", &self.servers)
            .field("api", &self.mode)
            .field("context_path", &self.context_path)
            .field("request_timeout", &self.request_timeout)
            .field("username", &self.auth.as_ref().map(|a| &a.username))
            .finish_non_exhaustive()
    }
}

/// The API one server speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Api {
    /// `/v1/ns/...`
    V1,
    /// `/v3/client/ns/...`
    V3,
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::V1 => "v1",
            Api::V3 => "v3",
        })
    }
}

/// A server and what is known of the API it speaks.
struct Server {
    addr: ServerAddr,
    /// 0: unknown, 1: v1, 3: v3.
    api: AtomicU8,
    /// `{server}{context}{path}` for each of [`PATHS`], parsed once.
    urls: Vec<reqwest::Url>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

impl Server {
    fn new(addr: &ServerAddr, context_path: &str) -> Result<Self> {
        let urls = PATHS
            .iter()
            .map(|path| {
                reqwest::Url::parse(&format!("{addr}{context_path}{path}")).map_err(|e| {
                    Error::Transport {
                        server: addr.to_string(),
                        message: format!("invalid URL: {e}"),
                    }
                })
            })
            .collect::<Result<_>>()?;
        Ok(Server {
            addr: addr.clone(),
            api: AtomicU8::new(0),
            urls,
        })
    }

    /// The URL of `path`, one of [`PATHS`].
    fn url(&self, path: &str) -> reqwest::Url {
        let i = PATHS.iter().position(|p| *p == path).unwrap_or(0);
        self.urls[i].clone()
    }

    fn api(&self) -> Option<Api> {
        match self.api.load(Ordering::Relaxed) {
            1 => Some(Api::V1),
            3 => Some(Api::V3),
            _ => None,
        }
    }

    fn learn(&self, api: Api, why: &str) {
        let code = match api {
            Api::V1 => 1,
            Api::V3 => 3,
        };
        if self.api.swap(code, Ordering::Relaxed) != code {
            tracing::info!(server = %self.addr, api = %api, "nacos server speaks the {api} API ({why})");
        }
    }
}

struct Auth {
    username: String,
    password: Secret,
    state: Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    token: Option<String>,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// The server of the last login attempt.
    last_server: Option<ServerAddr>,
    /// Refusals of the credentials in a row: each one doubles the wait before the next
    /// login (5 s, 10 s, 20 s, 40 s, then 60 s).
    refusals: u32,
    /// The last login error written to the log, so the same one is not written again.
    logged: Option<String>,
    last_login: Option<Instant>,
    last_error: Option<Error>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    access_token: String,
    #[serde(default)]
    token_ttl: Option<u64>,
}

/// A request before it is sent: method, path below the context path, query and form.
struct Call {
    method: Method,
    path: &'static str,
    /// Percent-encoded, without the `?`.
    query: String,
    form: Option<Vec<(&'static str, String)>>,
}

/// One naming operation, whichever API carries it.
#[derive(Clone, Copy)]
enum Op<'a> {
    Register(&'a ServiceKey, &'a Instance),
    Deregister(&'a ServiceKey, &'a Instance),
    Beat(&'a ServiceKey, &'a Instance, Option<&'a BeatInfo>),
    List(&'a ServiceKey, bool),
}

impl Op<'_> {
    fn what(&self) -> &'static str {
        match self {
            Op::Register(..) => "register",
            Op::Deregister(..) => "deregister",
            Op::Beat(..) => "beat",
            Op::List(..) => "instance list",
        }
    }

    fn call(&self, api: Api) -> Call {
        match (api, *self) {
            (Api::V1, Op::Register(key, instance)) => Call::new(
                Method::POST,
                V1_INSTANCE,
                instance_query(key, instance).details(instance),
            ),
            (Api::V1, Op::Deregister(key, instance)) => {
                Call::new(Method::DELETE, V1_INSTANCE, instance_query(key, instance))
            }
            (Api::V1, Op::Beat(key, instance, beat)) => {
                let query = Query::default()
                    .pair("namespaceId", &key.namespace_id)
                    .pair("serviceName", &key.grouped_service_name())
                    .pair("groupName", &key.group_name)
                    .pair("clusterName", &instance.cluster_name)
                    .pair("ip", &instance.ip)
                    .pair("port", &instance.port.to_string());
                let mut call = Call::new(Method::PUT, V1_BEAT, query);
                call.form =
                    beat.map(|b| vec![("beat", serde_json::to_string(b).unwrap_or_default())]);
                call
            }
            (Api::V1, Op::List(key, healthy_only)) => {
                Call::new(Method::GET, V1_LIST, list_query(key, healthy_only))
            }
            (Api::V3, Op::Register(key, instance)) => Call::new(
                Method::POST,
                V3_INSTANCE,
                instance_query(key, instance)
                    .details(instance)
                    .pair("heartBeat", "false"),
            ),
            (Api::V3, Op::Beat(key, instance, _)) => Call::new(
                Method::POST,
                V3_INSTANCE,
                instance_query(key, instance).pair("heartBeat", "true"),
            ),
            (Api::V3, Op::Deregister(key, instance)) => {
                Call::new(Method::DELETE, V3_INSTANCE, instance_query(key, instance))
            }
            (Api::V3, Op::List(key, healthy_only)) => {
                Call::new(Method::GET, V3_LIST, list_query(key, healthy_only))
            }
        }
    }
}

const V1_INSTANCE: &str = "/v1/ns/instance";
const V1_BEAT: &str = "/v1/ns/instance/beat";
const V1_LIST: &str = "/v1/ns/instance/list";
const V3_INSTANCE: &str = "/v3/client/ns/instance";
const V3_LIST: &str = "/v3/client/ns/instance/list";
/// Every naming path, parsed into a URL once per server.
const PATHS: [&str; 5] = [V1_INSTANCE, V1_BEAT, V1_LIST, V3_INSTANCE, V3_LIST];

/// A query string, percent-encoded as it is built.
struct Query(String);

impl Default for Query {
    fn default() -> Self {
        Query(String::with_capacity(160))
    }
}

impl Query {
    #[must_use]
    fn pair(mut self, key: &str, value: &str) -> Self {
        url::form_urlencoded::Serializer::for_suffix(&mut self.0, 0).append_pair(key, value);
        self
    }

    #[must_use]
    fn details(self, instance: &Instance) -> Self {
        self.pair("weight", &instance.weight.to_string())
            .pair("enabled", if instance.enabled { "true" } else { "false" })
            .pair("healthy", if instance.healthy { "true" } else { "false" })
            .pair(
                "metadata",
                &crate::instance::metadata_json(&instance.metadata),
            )
    }
}

impl Call {
    fn new(method: Method, path: &'static str, query: Query) -> Self {
        Call {
            method,
            path,
            query: query.0,
            form: None,
        }
    }
}

/// The v3 answer envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    code: i64,
    #[serde(default)]
    message: Option<String>,
    data: Option<T>,
}

/// Parses a v3 envelope; `code` other than 0 is an error naming the server's code.
fn envelope<T: serde::de::DeserializeOwned>(server: &str, body: &str) -> Result<(i64, Option<T>)> {
    let env: Envelope<T> = serde_json::from_str(body).map_err(|_| Error::Protocol {
        server: server.to_owned(),
        body: excerpt(body),
    })?;
    let _ = env.message;
    Ok((env.code, env.data))
}

/// A fresh random (v4) UUID for the `RequestId` header. Drawn from `fastrand`, not the
/// operating system: it identifies a request in the server's logs and guards nothing, and
/// a `getrandom` system call per beat is measurable at thousands of instances.
fn request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

fn refused(server: &str, body: &str) -> Error {
    Error::Status {
        server: server.to_owned(),
        status: 200,
        body: excerpt(body),
    }
}

impl NamingClient {
    /// A client for the servers of `config`.
    ///
    /// # Errors
    /// [`Error::Transport`] when the HTTP client cannot be built (no TLS backend).
    pub fn new(config: &Config) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .no_proxy()
            .connect_timeout(config.request_timeout())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build()
            .map_err(|e| Error::Transport {
                server: "-".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(NamingClient {
            http,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            servers: config
                .server_addrs()
                .iter()
                .map(|addr| Server::new(addr, config.context_path()))
                .collect::<Result<_>>()?,
            mode: config.api(),
            context_path: config.context_path().to_owned(),
            request_timeout: config.request_timeout(),
            auth: match (config.username(), config.password()) {
                (Some(username), Some(password)) => Some(Auth {
                    username: username.to_owned(),
                    password: password.clone(),
                    state: Mutex::default(),
                }),
                _ => None,
            },
        })
    }

    /// Waits for one of the [`MAX_IN_FLIGHT`] slots of the beat engine's requests and
    /// holds it until the permit is dropped. The engine takes it before it builds a
    /// request, so thousands of registrations waiting for a slow server wait as a few
    /// words each, not as thousands of built requests.
    pub(crate) async fn admit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed")
    }

    /// The servers this client talks to.
    pub fn servers(&self) -> Vec<ServerAddr> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    /// The API `server` (an entry of [`servers`](Self::servers)) is known to speak:
    /// `None` until the first answer in `auto` mode.
    pub fn api_of(&self, server: &ServerAddr) -> Option<Api> {
        self.servers
            .iter()
            .find(|s| &s.addr == server)
            .and_then(Server::api)
    }

    /// Registers `instance` (v1 `POST /v1/ns/instance`, v3 `POST /v3/client/ns/instance`).
    ///
    /// # Errors
    /// The last server's error when every try failed.
    ///
    /// # Cancellation safety
    /// Dropping the future abandons the request; the server may or may not have applied it.
    pub async fn register(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        let (server, api, body) = self.call(Op::Register(key, instance)).await?;
        expect_ok(&server, api, &body)
    }

    /// Deregisters `instance` (v1 `DELETE /v1/ns/instance`, v3 `DELETE
    /// /v3/client/ns/instance`). Unknown instances answer success too.
    ///
    /// # Errors
    /// The last server's error when every try failed.
    pub async fn deregister(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        let (server, api, body) = self.call(Op::Deregister(key, instance)).await?;
        expect_ok(&server, api, &body)
    }

    /// Sends one beat. v1: `PUT /v1/ns/instance/beat`, with the [`BeatInfo`] body when
    /// `beat` is given, a light beat otherwise. v3: the register call with
    /// `heartBeat=true` (no body, no `clientBeatInterval`; code 21003 becomes a
    /// [`BeatResult`] whose [`is_not_found`](BeatResult::is_not_found) is true).
    ///
    /// # Errors
    /// The last server's error when every try failed; [`Error::Protocol`] when the answer is
    /// not the JSON a beat gets.
    pub async fn beat(
        &self,
        key: &ServiceKey,
        instance: &Instance,
        beat: Option<&BeatInfo>,
    ) -> Result<BeatResult> {
        let (server, api, body) = self.call(Op::Beat(key, instance, beat)).await?;
        match api {
            Api::V1 => serde_json::from_str(&body).map_err(|_| Error::Protocol {
                server,
                body: excerpt(&body),
            }),
            Api::V3 => match envelope::<serde_json::Value>(&server, &body)? {
                (0, _) => Ok(BeatResult::with_code(BeatResult::OK)),
                (code, _) if code == i64::from(BeatResult::INSTANCE_NOT_FOUND) => {
                    Ok(BeatResult::with_code(BeatResult::INSTANCE_NOT_FOUND))
                }
                _ => Err(refused(&server, &body)),
            },
        }
    }

    /// Lists the instances of a service (v1 `GET /v1/ns/instance/list`, v3 `GET
    /// /v3/client/ns/instance/list`), unhealthy ones included unless `healthy_only`.
    /// Nacos 3.1's v3 list shows only the `DEFAULT` cluster (its form defaults the cluster);
    /// its v1 list shows all.
    ///
    /// # Errors
    /// The last server's error when every try failed; [`Error::Protocol`] for a body that
    /// is not an instance list.
    pub async fn instance_list(
        &self,
        key: &ServiceKey,
        healthy_only: bool,
    ) -> Result<Vec<Instance>> {
        let (server, api, body) = self.call(Op::List(key, healthy_only)).await?;
        let bad = || Error::Protocol {
            server: server.clone(),
            body: excerpt(&body),
        };
        match api {
            Api::V1 => serde_json::from_str::<InstanceList>(&body)
                .map(|l| l.hosts)
                .map_err(|_| bad()),
            Api::V3 => match envelope::<Vec<Instance>>(&server, &body)? {
                (0, data) => Ok(data
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|i| !healthy_only || i.healthy)
                    .collect()),
                _ => Err(refused(&server, &body)),
            },
        }
    }

    /// Tries the servers as the module docs say; returns the answering server, the API
    /// it answered on and the body.
    async fn call(&self, op: Op<'_>) -> Result<(String, Api, String)> {
        let n = self.servers.len();
        let tries = if n == 1 { SINGLE_SERVER_TRIES } else { n };
        let start = fastrand::usize(..n);
        let mut last_err = None;
        for attempt in 0..tries {
            let server = &self.servers[(start + attempt) % n];
            match self.call_server(server, op).await {
                Ok((api, body)) => return Ok((server.addr.to_string(), api, body)),
                Err(e) => {
                    tracing::debug!(server = %server.addr, what = op.what(), error = %e, "nacos request failed");
                    let retry = e.is_retryable();
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or(Error::Shutdown))
    }

    /// One server, on the API it speaks (finding it out in `auto` mode).
    async fn call_server(&self, server: &Server, op: Op<'_>) -> Result<(Api, String)> {
        let known = match self.mode {
            ApiVersion::V1 => Some(Api::V1),
            ApiVersion::V3 => Some(Api::V3),
            _ => server.api(),
        };
        // A failed login says nothing about the naming API: it ends here.
        let token = self.token(server).await?;
        let api = known.unwrap_or(Api::V3);
        let result = self.send_authed(server, &op.call(api), token).await;
        if known.is_some() {
            return result.map(|body| (api, body));
        }
        match result {
            Err(Error::Status {
                status: status @ (404 | 410),
                ..
            }) => {
                server.learn(Api::V1, &format!("the v3 API answered HTTP {status}"));
                let token = self.token(server).await?;
                self.send_authed(server, &op.call(Api::V1), token)
                    .await
                    .map(|body| (Api::V1, body))
            }
            Err(e @ (Error::Transport { .. } | Error::Login { .. })) => Err(e),
            other => {
                server.learn(Api::V3, "the v3 API answered");
                other.map(|body| (Api::V3, body))
            }
        }
    }

    /// One request with `token`, with one new login and retry after a 403.
    async fn send_authed(
        &self,
        server: &Server,
        call: &Call,
        token: Option<String>,
    ) -> Result<String> {
        match self.send(server, call, token.as_deref()).await {
            Err(Error::Status { status: 403, .. }) if self.auth.is_some() => {
                let token = self.relogin(server, token.as_deref()).await?;
                self.send(server, call, token.as_deref()).await
            }
            other => other,
        }
    }

    async fn send(&self, server: &Server, call: &Call, token: Option<&str>) -> Result<String> {
        let mut url = server.url(call.path);
        match token {
            Some(token) => {
                let mut query = call.query.clone();
                url::form_urlencoded::Serializer::for_suffix(&mut query, 0)
                    .append_pair("accessToken", token);
                url.set_query(Some(&query));
            }
            None => url.set_query(Some(&call.query)),
        }
        let mut req = self
            .http
            .request(call.method.clone(), url)
            .timeout(self.request_timeout)
            .header("Client-Version", HeaderValue::from_static(USER_AGENT))
            .header("Request-Module", HeaderValue::from_static("Naming"))
            .header("RequestId", request_id());
        if let Some(form) = &call.form {
            req = req.form(form);
        }
        let server = &server.addr;
        let server_name = server.to_string();
        let resp = req.send().await.map_err(|e| transport(&server_name, &e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| transport(&server_name, &e))?;
        if status == 200 {
            Ok(body)
        } else {
            Err(Error::Status {
                server: server_name,
                status,
                body: excerpt(&body),
            })
        }
    }

    /// The current token, logging in first when there is none or it is due for refresh.
    async fn token(&self, server: &Server) -> Result<Option<String>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        {
            let state = auth.state.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = state.refresh_at.is_some_and(|at| Instant::now() < at);
            if let (Some(token), true) = (&state.token, fresh) {
                return Ok(Some(token.clone()));
            }
        }
        self.relogin(server, None).await
    }

    /// Logs in unless another login happened within [`LOGIN_RETRY`] (then the token or
    /// credentials refusal of that login is used). `stale` is a token known to be refused.
    async fn relogin(&self, server: &Server, stale: Option<&str>) -> Result<Option<String>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        {
            let mut state = auth.state.lock().unwrap_or_else(|e| e.into_inner());
            if stale.is_some() && state.token.as_deref() == stale {
                state.token = None;
            }
            let wait = match state.last_error {
                Some(Error::Login { .. }) => (LOGIN_RETRY
                    * 2u32.pow(state.refusals.saturating_sub(1).min(4)))
                .min(MAX_LOGIN_RETRY),
                _ => LOGIN_RETRY,
            };
            if state.last_login.is_some_and(|at| at.elapsed() < wait) {
                if let Some(token) = &state.token {
                    return Ok(Some(token.clone()));
                }
                // A refusal of the credentials holds for every server; another failure
                // holds for the server it happened on, so the next server may try.
                match &state.last_error {
                    Some(err @ Error::Login { .. }) => return Err(err.clone()),
                    Some(err) if state.last_server.as_ref() == Some(&server.addr) => {
                        return Err(err.clone());
                    }
                    _ => {}
                }
            }
            state.last_login = Some(Instant::now());
            state.last_server = Some(server.addr.clone());
        }
        let result = self.login(server, auth).await;
        let mut state = auth.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((token, ttl)) => {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let margin = fastrand::u64((ttl_ms / 15)..=(ttl_ms / 10).max(ttl_ms / 15));
                let now = Instant::now();
                state.refresh_at = Some(now + Duration::from_millis(ttl_ms - margin));
                state.expires_at = Some(now + ttl);
                state.token = Some(token.clone());
                state.last_error = None;
                if state.logged.take().is_some() {
                    tracing::info!(server = %server.addr, username = %auth.username, "nacos login accepted again");
                }
                state.refusals = 0;
                tracing::debug!(server = %server.addr, ttl_s = ttl.as_secs(), "logged in to nacos");
                Ok(Some(token))
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                // What makes two failures "the same" for the log: their kind and status,
                // not their text (a server's error body carries a timestamp).
                let message = match &e {
                    Error::Status { status, .. } => format!("HTTP {status}"),
                    Error::Login { .. } => "refused".to_owned(),
                    Error::Transport { message, .. } => message.clone(),
                    other => format!("{other:?}").chars().take(40).collect(),
                };
                let first = state.logged.as_deref() != Some(message.as_str());
                if matches!(e, Error::Login { .. }) {
                    state.refusals += 1;
                    state.token = None;
                    if first {
                        tracing::error!(server = %server.addr, username = %auth.username, error = %e,
                            "nacos login refused: check NACOS_USERNAME and NACOS_PASSWORD");
                    } else {
                        tracing::debug!(server = %server.addr, refusals = state.refusals, "nacos login refused again");
                    }
                    state.logged = Some(message);
                    return Err(e);
                }
                if first {
                    tracing::error!(server = %server.addr, username = %auth.username, error = %e, "nacos login failed");
                    state.logged = Some(message);
                }
                // A refresh that failed for another reason keeps a token that is still valid.
                let valid = state.expires_at.is_some_and(|at| Instant::now() < at);
                match (&state.token, valid) {
                    (Some(token), true) => Ok(Some(token.clone())),
                    _ => {
                        state.token = None;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Logs in on `server`: `/v3/auth/user/login` first (unless the server is known to
    /// speak v1 or `NACOS_API=v1`), then `/v1/auth/login` when that path is unknown.
    async fn login(&self, server: &Server, auth: &Auth) -> Result<(String, Duration)> {
        let v1_only = self.mode == ApiVersion::V1 || server.api() == Some(Api::V1);
        let paths: &[&str] = if v1_only {
            &["/v1/auth/login"]
        } else {
            &["/v3/auth/user/login", "/v1/auth/login"]
        };
        let server_name = server.addr.to_string();
        let mut last = None;
        for path in paths {
            let url = format!("{}{}{path}", server.addr, self.context_path);
            let resp = self
                .http
                .post(&url)
                .timeout(self.request_timeout)
                .header("Client-Version", USER_AGENT)
                .header("RequestId", request_id())
                .form(&[
                    ("username", auth.username.as_str()),
                    ("password", auth.password.expose()),
                ])
                .send()
                .await
                .map_err(|e| transport(&server_name, &e))?;
            let status = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| transport(&server_name, &e))?;
            match status {
                200 => {
                    let answer: LoginAnswer =
                        serde_json::from_str(&body).map_err(|_| Error::Protocol {
                            server: server_name.clone(),
                            body: excerpt(&redact_token(&body)),
                        })?;
                    let ttl =
                        Duration::from_secs(answer.token_ttl.filter(|t| *t > 0).unwrap_or(18_000));
                    return Ok((answer.access_token, ttl));
                }
                404 | 410 => {
                    last = Some(Error::Status {
                        server: server_name.clone(),
                        status,
                        body: excerpt(&body),
                    });
                }
                400 | 401 | 403 => {
                    return Err(Error::Login {
                        server: server_name,
                        username: auth.username.clone(),
                        body: excerpt(&body),
                    });
                }
                _ => {
                    return Err(Error::Status {
                        server: server_name,
                        status,
                        body: excerpt(&body),
                    });
                }
            }
        }
        Err(last.unwrap_or(Error::Shutdown))
    }
}

/// `ok` (v1) or a v3 envelope with code 0.
fn expect_ok(server: &str, api: Api, body: &str) -> Result<()> {
    match api {
        Api::V1 => Ok(()),
        Api::V3 => match envelope::<serde_json::Value>(server, body)? {
            (0, _) => Ok(()),
            _ => Err(refused(server, body)),
        },
    }
}

fn list_query(key: &ServiceKey, healthy_only: bool) -> Query {
    Query::default()
        .pair("namespaceId", &key.namespace_id)
        .pair("serviceName", &key.service_name)
        .pair("groupName", &key.group_name)
        .pair("healthyOnly", if healthy_only { "true" } else { "false" })
}

fn instance_query(key: &ServiceKey, instance: &Instance) -> Query {
    Query::default()
        .pair("namespaceId", &key.namespace_id)
        .pair("serviceName", &key.service_name)
        .pair("groupName", &key.group_name)
        .pair("clusterName", &instance.cluster_name)
        .pair("ip", &instance.ip)
        .pair("port", &instance.port.to_string())
        .pair(
            "ephemeral",
            if instance.ephemeral { "true" } else { "false" },
        )
}

fn transport(server: &str, err: &reqwest::Error) -> Error {
    let message = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        message
    };
    // reqwest's messages hold the URL, whose query holds the access token: drop it.
    Error::Transport {
        server: server.to_owned(),
        message: redact_token(&message),
    }
}

fn redact_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("accessToken") {
        let (head, tail) = rest.split_at(pos + "accessToken".len());
        out.push_str(head);
        let start = tail
            .find(|c: char| c.is_alphanumeric())
            .unwrap_or(tail.len());
        let end = tail[start..]
            .find(|c: char| !(c.is_alphanumeric() || "-_.+/=".contains(c)))
            .map_or(tail.len(), |e| start + e);
        out.push_str(&tail[..start]);
        out.push_str("<redacted>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_this_crate() {
        assert!(USER_AGENT.starts_with("nacos-core/"));
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(
            redact_token("http://h/x?a=1&accessToken=eyJabc.def&b=2"),
            "http://h/x?a=1&accessToken=<redacted>&b=2"
        );
        assert_eq!(
            redact_token(r#"{"accessToken":"eyJabc","tokenTtl":1}"#),
            r#"{"accessToken":"<redacted>","tokenTtl":1}"#
        );
    }
}
