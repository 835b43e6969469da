//! Login and the access token: when to log in, when again, and what to log.
//!
//! With a username, the client logs in (`POST {context}/v3/auth/user/login`, falling back
//! to `{context}/v1/auth/login` on 404/410; v1 only when the server is known to speak v1),
//! sends the token as the `accessToken` query parameter, logs in again before the token
//! expires (at `ttl - random(ttl/15 .. ttl/10)`, as the Java 2.x client does) and after a
//! 403. Logins are rate-limited to one per [`LOGIN_RETRY`]; refused credentials double that
//! wait up to [`MAX_LOGIN_RETRY`]. A login error is logged once (again only when it
//! changes), so a wrong password gives one clear error instead of a storm of requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{NamingClient, Server, USER_AGENT, request_id, transport};
use crate::error::{Error, Result, excerpt, redact_token};
use crate::settings::{ApiVersion, Secret, ServerAddr};

/// The shortest time between two logins to the same cluster.
pub const LOGIN_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two logins after the credentials were refused.
pub const MAX_LOGIN_RETRY: Duration = Duration::from_secs(60);

/// The token lifetime assumed when the server gives none (Nacos's default, 5 h).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(18_000);

/// The credentials of a client and its token state.
pub(super) struct Auth {
    pub(super) username: String,
    password: Secret,
    state: Mutex<TokenState>,
}

impl Auth {
    pub(super) fn new(username: &str, password: &Secret) -> Self {
        Auth {
            username: username.to_owned(),
            password: password.clone(),
            state: Mutex::default(),
        }
    }
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
    /// The kind of the last login error written to the log, so the same one is not
    /// written again.
    logged: Option<String>,
    last_login: Option<Instant>,
    last_error: Option<Error>,
}

/// A login answer: `{"accessToken":"..","tokenTtl":18000,..}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoginAnswer {
    pub(crate) access_token: String,
    #[serde(default)]
    pub(crate) token_ttl: Option<u64>,
}

impl LoginAnswer {
    /// The token's lifetime: `tokenTtl` seconds when positive, else 5 h.
    pub(crate) fn ttl(&self) -> Duration {
        self.token_ttl
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs)
    }
}

/// Parses a login answer.
///
/// # Errors
/// [`Error::Protocol`] naming `server`, with any token in the excerpt redacted.
pub(crate) fn parse_login(server: &str, body: &str) -> Result<LoginAnswer> {
    serde_json::from_str(body).map_err(|e| Error::Protocol {
        server: server.to_owned(),
        body: excerpt(&redact_token(body)),
        source: std::sync::Arc::new(e),
    })
}

impl NamingClient {
    /// The current token, logging in first when there is none or it is due for refresh.
    pub(super) async fn token(&self, server: &Server) -> Result<Option<String>> {
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
    pub(super) async fn relogin(
        &self,
        server: &Server,
        stale: Option<&str>,
    ) -> Result<Option<String>> {
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
        crate::metrics::login(match &result {
            Ok(_) => "ok",
            Err(Error::Login { .. }) => "refused",
            Err(_) => "failed",
        });
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
                let kind = match &e {
                    Error::Status { status, .. } => format!("HTTP {status}"),
                    Error::Login { .. } => "refused".to_owned(),
                    Error::Transport { what, .. } => (*what).to_owned(),
                    Error::Protocol { .. } => "unexpected answer".to_owned(),
                    _ => "other".to_owned(),
                };
                let first = state.logged.as_deref() != Some(kind.as_str());
                let chain = crate::error::Chain(&e);
                if matches!(e, Error::Login { .. }) {
                    state.refusals += 1;
                    state.token = None;
                    if first {
                        tracing::error!(server = %server.addr, username = %auth.username, error = %chain,
                            "nacos login refused: check NACOS_USERNAME and NACOS_PASSWORD");
                    } else {
                        tracing::debug!(server = %server.addr, refusals = state.refusals, "nacos login refused again");
                    }
                    state.logged = Some(kind);
                    return Err(e);
                }
                if first {
                    tracing::error!(server = %server.addr, username = %auth.username, error = %chain, "nacos login failed");
                    state.logged = Some(kind);
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
        let v1_only = self.mode == ApiVersion::V1 || server.api() == Some(ApiVersion::V1);
        let server_name = server.addr.to_string();
        let mut paths = if v1_only {
            &["/v1/auth/login"][..]
        } else {
            &["/v3/auth/user/login", "/v1/auth/login"][..]
        }
        .iter()
        .peekable();
        while let Some(path) = paths.next() {
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
                .map_err(|e| transport(&server_name, e))?;
            let status = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| transport(&server_name, e))?;
            match status {
                200 => {
                    let answer = parse_login(&server_name, &body)?;
                    let ttl = answer.ttl();
                    return Ok((answer.access_token, ttl));
                }
                404 | 410 if paths.peek().is_some() => {}
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
        unreachable!("the last login path returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn login_answers_parse_or_name_the_server_without_the_token() {
        let ok = parse_login("s", r#"{"accessToken":"t","tokenTtl":60}"#).unwrap();
        assert_eq!(
            (ok.access_token.as_str(), ok.ttl()),
            ("t", Duration::from_secs(60))
        );
        let no_ttl = parse_login("s", r#"{"accessToken":"t","tokenTtl":0}"#).unwrap();
        assert_eq!(no_ttl.ttl(), DEFAULT_TOKEN_TTL);
        let Err(err) = parse_login("s", r#"{"accessToken":"secret-token","tokenTtl":"x"}"#) else {
            panic!("a malformed answer parsed");
        };
        let text = crate::error::Chain(&err).to_string();
        assert!(!text.contains("secret-token"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
