//! The Nacos v1 naming API over HTTP: register, deregister, beat, instance list, login.
//!
//! Mirrors the Java 1.x client's `NamingProxy`: every request starts at a random server and
//! tries each server once; with a single server it tries up to 3 times. Transport failures,
//! HTTP 5xx and 403 are tried again; a 400 is not. Every request carries `User-Agent`,
//! `Client-Version`, `Request-Module: Naming` and a fresh `RequestId`, and is bounded by
//! the configured request timeout.
//!
//! With a username, the client logs in (`POST {context}/v1/auth/login`), sends the token as
//! the `accessToken` query parameter, logs in again before the token expires (at
//! `ttl - random(ttl/15 .. ttl/10)`, as the Java 2.x client does) and after a 403. Logins
//! are rate-limited to one per [`LOGIN_RETRY`], so a wrong password gives one clear error
//! per interval instead of a storm of requests.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;

use crate::config::{Config, Secret, ServerAddr};
use crate::error::{Error, Result, excerpt};
use crate::instance::{BeatInfo, BeatResult, Instance, InstanceList, ServiceKey};

/// The `User-Agent` this crate sends: its name and version.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// The shortest time between two logins to the same cluster.
pub const LOGIN_RETRY: Duration = Duration::from_secs(5);

const SINGLE_SERVER_TRIES: usize = 3;

/// A client of the v1 naming API of one Nacos cluster.
///
/// Cheap to share behind an `Arc`; all methods take `&self`.
pub struct NamingClient {
    http: reqwest::Client,
    servers: Vec<ServerAddr>,
    context_path: String,
    request_timeout: Duration,
    auth: Option<Auth>,
}

impl fmt::Debug for NamingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamingClient")
            .field("servers", &self.servers)
            .field("context_path", &self.context_path)
            .field("request_timeout", &self.request_timeout)
            .field("username", &self.auth.as_ref().map(|a| &a.username))
            .finish_non_exhaustive()
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
struct Call<'a> {
    method: Method,
    path: &'static str,
    query: Vec<(&'static str, String)>,
    form: Option<Vec<(&'static str, String)>>,
    what: &'a str,
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
            .build()
            .map_err(|e| Error::Transport {
                server: "-".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(NamingClient {
            http,
            servers: config.server_addrs().to_vec(),
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

    /// The servers this client talks to.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    /// Registers `instance` (`POST /v1/ns/instance`). The server answers `ok`.
    ///
    /// # Errors
    /// The last server's error when every try failed.
    ///
    /// # Cancellation safety
    /// Dropping the future abandons the request; the server may or may not have applied it.
    pub async fn register(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        let metadata = serde_json::to_string(&instance.metadata).unwrap_or_default();
        let mut query = instance_query(key, instance);
        query.extend([
            ("weight", instance.weight.to_string()),
            ("enabled", instance.enabled.to_string()),
            ("healthy", instance.healthy.to_string()),
            ("metadata", metadata),
        ]);
        self.call(Call {
            method: Method::POST,
            path: "/v1/ns/instance",
            query,
            form: None,
            what: "register",
        })
        .await
        .map(drop)
    }

    /// Deregisters `instance` (`DELETE /v1/ns/instance`). Unknown instances answer `ok` too.
    ///
    /// # Errors
    /// The last server's error when every try failed.
    pub async fn deregister(&self, key: &ServiceKey, instance: &Instance) -> Result<()> {
        self.call(Call {
            method: Method::DELETE,
            path: "/v1/ns/instance",
            query: instance_query(key, instance),
            form: None,
            what: "deregister",
        })
        .await
        .map(drop)
    }

    /// Sends one beat (`PUT /v1/ns/instance/beat`): with the [`BeatInfo`] body when `beat`
    /// is given, a light beat otherwise.
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
        let query = vec![
            ("namespaceId", key.namespace_id.clone()),
            ("serviceName", key.grouped_service_name()),
            ("groupName", key.group_name.clone()),
            ("clusterName", instance.cluster_name.clone()),
            ("ip", instance.ip.clone()),
            ("port", instance.port.to_string()),
        ];
        let form = beat.map(|b| vec![("beat", serde_json::to_string(b).unwrap_or_default())]);
        let (server, body) = self
            .call_with_server(Call {
                method: Method::PUT,
                path: "/v1/ns/instance/beat",
                query,
                form,
                what: "beat",
            })
            .await?;
        serde_json::from_str(&body).map_err(|_| Error::Protocol {
            server,
            body: excerpt(&body),
        })
    }

    /// Lists the instances of a service (`GET /v1/ns/instance/list`), unhealthy ones
    /// included unless `healthy_only`.
    ///
    /// # Errors
    /// The last server's error when every try failed; [`Error::Protocol`] for a body that
    /// is not an instance list.
    pub async fn instance_list(
        &self,
        key: &ServiceKey,
        healthy_only: bool,
    ) -> Result<Vec<Instance>> {
        let (server, body) = self
            .call_with_server(Call {
                method: Method::GET,
                path: "/v1/ns/instance/list",
                query: vec![
                    ("namespaceId", key.namespace_id.clone()),
                    ("serviceName", key.service_name.clone()),
                    ("groupName", key.group_name.clone()),
                    ("healthyOnly", healthy_only.to_string()),
                ],
                form: None,
                what: "instance list",
            })
            .await?;
        serde_json::from_str::<InstanceList>(&body)
            .map(|l| l.hosts)
            .map_err(|_| Error::Protocol {
                server,
                body: excerpt(&body),
            })
    }

    async fn call(&self, call: Call<'_>) -> Result<String> {
        self.call_with_server(call).await.map(|(_, body)| body)
    }

    /// Tries the servers as the module docs say; returns the answering server and body.
    async fn call_with_server(&self, call: Call<'_>) -> Result<(String, String)> {
        let n = self.servers.len();
        let tries = if n == 1 { SINGLE_SERVER_TRIES } else { n };
        let start = fastrand::usize(..n);
        let mut last_err = None;
        for attempt in 0..tries {
            let server = &self.servers[(start + attempt) % n];
            match self.call_server(server, &call).await {
                Ok(body) => return Ok((server.to_string(), body)),
                Err(e) => {
                    tracing::debug!(server = %server, what = call.what, error = %e, "nacos request failed");
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

    /// One server, with one new login and retry after a 403.
    async fn call_server(&self, server: &ServerAddr, call: &Call<'_>) -> Result<String> {
        let token = self.token(server).await?;
        match self.send(server, call, token.as_deref()).await {
            Err(Error::Status { status: 403, .. }) if self.auth.is_some() => {
                let token = self.relogin(server, token.as_deref()).await?;
                self.send(server, call, token.as_deref()).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        server: &ServerAddr,
        call: &Call<'_>,
        token: Option<&str>,
    ) -> Result<String> {
        let url = format!("{server}{}{}", self.context_path, call.path);
        let mut req = self
            .http
            .request(call.method.clone(), &url)
            .timeout(self.request_timeout)
            .header("Client-Version", USER_AGENT)
            .header("Request-Module", "Naming")
            .header("RequestId", uuid::Uuid::new_v4().to_string())
            .query(&call.query);
        if let Some(token) = token {
            req = req.query(&[("accessToken", token)]);
        }
        if let Some(form) = &call.form {
            req = req.form(form);
        }
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
    async fn token(&self, server: &ServerAddr) -> Result<Option<String>> {
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
    async fn relogin(&self, server: &ServerAddr, stale: Option<&str>) -> Result<Option<String>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        {
            let mut state = auth.state.lock().unwrap_or_else(|e| e.into_inner());
            if stale.is_some() && state.token.as_deref() == stale {
                state.token = None;
            }
            let recent = state
                .last_login
                .is_some_and(|at| at.elapsed() < LOGIN_RETRY);
            if recent {
                if let Some(token) = &state.token {
                    return Ok(Some(token.clone()));
                }
                // Only a refusal of the credentials holds for every server: a login that
                // failed on an unreachable server must not keep the next one from trying.
                if let Some(err @ Error::Login { .. }) = &state.last_error {
                    return Err(clone_login_error(err));
                }
            }
            state.last_login = Some(Instant::now());
        }
        let result = self.login(server, auth).await;
        let mut state = auth.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((token, ttl)) => {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let margin = fastrand::u64((ttl_ms / 15)..=(ttl_ms / 10).max(ttl_ms / 15));
                state.refresh_at = Some(Instant::now() + Duration::from_millis(ttl_ms - margin));
                state.token = Some(token.clone());
                state.last_error = None;
                tracing::debug!(server = %server, ttl_s = ttl.as_secs(), "logged in to nacos");
                Ok(Some(token))
            }
            Err(e) => {
                state.token = None;
                state.last_error = Some(clone_login_error(&e));
                if matches!(e, Error::Login { .. }) {
                    tracing::error!(server = %server, username = %auth.username, error = %e,
                        "nacos login refused: check NACOS_USERNAME and NACOS_PASSWORD");
                }
                Err(e)
            }
        }
    }

    async fn login(&self, server: &ServerAddr, auth: &Auth) -> Result<(String, Duration)> {
        let url = format!("{server}{}/v1/auth/login", self.context_path);
        let server_name = server.to_string();
        let resp = self
            .http
            .post(&url)
            .timeout(self.request_timeout)
            .header("Client-Version", USER_AGENT)
            .header("RequestId", uuid::Uuid::new_v4().to_string())
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
                Ok((answer.access_token, ttl))
            }
            400 | 401 | 403 => Err(Error::Login {
                server: server_name,
                username: auth.username.clone(),
                body: excerpt(&body),
            }),
            _ => Err(Error::Status {
                server: server_name,
                status,
                body: excerpt(&body),
            }),
        }
    }
}

fn instance_query(key: &ServiceKey, instance: &Instance) -> Vec<(&'static str, String)> {
    vec![
        ("namespaceId", key.namespace_id.clone()),
        ("serviceName", key.service_name.clone()),
        ("groupName", key.group_name.clone()),
        ("clusterName", instance.cluster_name.clone()),
        ("ip", instance.ip.clone()),
        ("port", instance.port.to_string()),
        ("ephemeral", instance.ephemeral.to_string()),
    ]
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

fn clone_login_error(err: &Error) -> Error {
    match err {
        Error::Login {
            server,
            username,
            body,
        } => Error::Login {
            server: server.clone(),
            username: username.clone(),
            body: body.clone(),
        },
        other => Error::Transport {
            server: "-".into(),
            message: format!("login failed: {other}"),
        },
    }
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
