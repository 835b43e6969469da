//! The error type of this crate.

use std::fmt;
use std::sync::Arc;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `nacos-core`.
///
/// Configuration errors come out of [`Config::from_env`](crate::Config::from_env) and
/// [`ConfigBuilder::build`](crate::ConfigBuilder::build), before anything touches the network.
/// The other variants describe a failed exchange with a Nacos server; the engine logs
/// them and retries, and keeps the last one in its [`Status`](crate::Status).
///
/// Causes are kept: [`std::error::Error::source`] gives the underlying error (the HTTP
/// library's, without the request URL; the JSON parser's). No variant, and no cause,
/// ever carries a password or an access token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is malformed or missing.
    ///
    /// `variable` is the environment variable (or the builder setter's variable) at fault,
    /// `value` the value as given (`<redacted>` for secrets) and `expected` what would have
    /// been accepted.
    #[error("invalid {variable}={value:?}: expected {expected}")]
    Config {
        /// The environment variable, e.g. `NACOS_WEIGHT`.
        variable: &'static str,
        /// The offending value, redacted for secrets.
        value: String,
        /// What the variable accepts.
        expected: String,
    },

    /// A required configuration value is missing.
    #[error("{variable} is required: {expected}")]
    Missing {
        /// The environment variable, e.g. `NACOS_SERVICE_NAME`.
        variable: &'static str,
        /// What the variable should hold.
        expected: String,
    },

    /// The HTTP client could not be built (for example no TLS backend for an `https://`
    /// server); the cause is the HTTP library's error.
    #[error("cannot build the HTTP client")]
    HttpClient {
        /// The HTTP library's error.
        #[source]
        source: Cause,
    },

    /// The server could not be reached, or did not answer within the request timeout.
    ///
    /// `source` is the HTTP library's error, with the request URL (which may hold an access
    /// token) removed.
    #[error("request to {server} failed: {what}")]
    Transport {
        /// The server's base address, e.g. `http://127.0.0.1:8848`.
        server: String,
        /// What went wrong, in a few words: `cannot connect`, `timed out`, ...
        what: &'static str,
        /// The HTTP library's error, without the URL.
        #[source]
        source: Cause,
    },

    /// The operation needs an API the server or this client does not have: publishing or
    /// removing a config over HTTP on a server without the v1 API (Nacos 3.2+ without
    /// gRPC).
    #[error("{0}")]
    Unsupported(&'static str),

    /// A config's content does not read into the app's type (`TypedConfig`).
    #[error("config {data_id} does not read as {format}: {message}")]
    ConfigParse {
        /// The config's data id.
        data_id: String,
        /// The format it was read as (`JSON`, `YAML`, `TOML`, `text`).
        format: &'static str,
        /// What did not read (the parser's message; never the content).
        message: String,
    },

    /// A config the app imports without `optional:` does not exist in Nacos
    /// (`ConfigService::import`).
    #[error(
        "config {data_id} (group {group_name}, namespace {namespace_id}) does not exist in nacos and is required: publish it, or import it as optional:{data_id}"
    )]
    ConfigMissing {
        /// The config's data id.
        data_id: String,
        /// Its group.
        group_name: String,
        /// Its namespace.
        namespace_id: String,
    },

    /// An imported config had no answer from Nacos (nor a local snapshot) within the
    /// import's timeout (`NACOS_CONFIG_TIMEOUT`).
    #[error(
        "config {data_id} (group {group_name}) was not read from nacos within {} ms and has no local snapshot: {reason}",
        after.as_millis()
    )]
    ConfigUnavailable {
        /// The config's data id.
        data_id: String,
        /// Its group.
        group_name: String,
        /// The timeout that passed.
        after: std::time::Duration,
        /// Why, as far as known (the last error of its reads, e.g. a refusal or no
        /// connection).
        reason: String,
    },

    /// The imported configs, merged, do not read into the app's type.
    #[error("configs {data_ids} together do not read as the app's type: {message}")]
    ConfigBind {
        /// The imported data ids, in their order.
        data_ids: String,
        /// What did not read: the key's path and why (never a value).
        message: String,
    },

    /// An operation did not finish within its bound (e.g. a deregistration within the
    /// request timeout, whatever the number of servers tried).
    #[error("{operation} timed out after {} ms", after.as_millis())]
    Timeout {
        /// The operation, e.g. `deregistration`.
        operation: &'static str,
        /// The bound that passed.
        after: std::time::Duration,
    },

    /// The server answered with an HTTP status other than 200.
    #[error("{server} answered HTTP {status}: {body}")]
    Status {
        /// The server's base address.
        server: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body (at most 256 characters).
        body: String,
    },

    /// The server answered HTTP 200 but refused the request in its answer: a v3 envelope
    /// `{"code":..,"message":..}` whose code is not 0.
    #[error("{server} refused the request: code {code}: {message}")]
    Refused {
        /// The server's base address.
        server: String,
        /// The server's code, e.g. `20004`.
        code: i64,
        /// The server's message (at most 256 characters).
        message: String,
    },

    /// The server answered 200 with a body this crate does not understand.
    #[error("{server} answered with an unexpected body: {body}")]
    Protocol {
        /// The server's base address.
        server: String,
        /// The start of the answer's body (at most 256 characters, tokens redacted).
        body: String,
        /// The JSON parser's error.
        #[source]
        source: Cause,
    },

    /// The server refused the configured username and password.
    #[error("login to {server} as {username:?} was refused: {body}")]
    Login {
        /// The server's base address.
        server: String,
        /// The username that was refused (the password is never shown).
        username: String,
        /// The server's answer (at most 256 characters).
        body: String,
    },

    /// The address to advertise could not be found; the message says what to set.
    #[error("cannot determine the address to register: {0}")]
    Address(String),
}

/// The underlying error of an [`Error`], shared so that errors stay cheap to clone (the
/// status handle and the login state keep the last one). Reach it through
/// [`std::error::Error::source`].
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Displays an error followed by its causes: `outer: cause: root cause`.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    /// Whether the same request may succeed against another server or later.
    ///
    /// Transport failures, HTTP 5xx and HTTP 403 (after a new login) are retried; a 400 is
    /// a request the server will never accept, so it is not.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Protocol { .. } | Error::Timeout { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 403 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn config(
        variable: &'static str,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::Config {
            variable,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Shortens a server answer for an error message, on a character boundary.
pub(crate) fn excerpt(body: &str) -> String {
    const MAX: usize = 256;
    let body = body.trim();
    match body.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &body[..cut]),
        None => body.to_owned(),
    }
}

/// A parser's message without the values it quotes (`invalid type: string "s3cret",
/// expected u32` names a value of the config, which may be a secret): every quoted run
/// becomes `"…"`.
#[cfg(feature = "grpc")]
pub(crate) fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

/// `text` with the value after every `accessToken` replaced by `<redacted>`.
pub(crate) fn redact_token(text: &str) -> String {
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
    fn config_error_names_variable_value_and_expectation() {
        let err = Error::config("NACOS_WEIGHT", "heavy", "a number from 0 to 10000");
        assert_eq!(
            err.to_string(),
            r#"invalid NACOS_WEIGHT="heavy": expected a number from 0 to 10000"#
        );
    }

    #[test]
    fn excerpt_cuts_long_bodies_on_char_boundaries() {
        let long = "é".repeat(300);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 259);
        assert!(cut.ends_with("..."));
        assert_eq!(excerpt("  ok \n"), "ok");
    }
}
