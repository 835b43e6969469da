//! The error type of this crate.

use std::fmt;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `nacos-core`.
///
/// Configuration errors come out of [`Config::from_env`](crate::Config::from_env) and
/// [`ConfigBuilder::build`](crate::ConfigBuilder::build), before anything touches the network.
/// The other variants describe a failed exchange with a Nacos server; the registrar logs
/// them and retries, and keeps the last one in its [`Status`](crate::Status).
///
/// No variant ever carries a password or an access token.
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

    /// The server could not be reached, or did not answer within the request timeout.
    #[error("request to {server} failed: {message}")]
    Transport {
        /// The server's base address, e.g. `http://127.0.0.1:8848`.
        server: String,
        /// What went wrong (connection refused, timed out, ...).
        message: String,
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

    /// The server answered 200 with a body this crate does not understand.
    #[error("{server} answered with an unexpected body: {body}")]
    Protocol {
        /// The server's base address.
        server: String,
        /// The start of the answer's body (at most 256 characters).
        body: String,
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

    /// The registration has been deregistered and no longer accepts commands.
    #[error("the registration is shut down")]
    Shutdown,
}

impl Error {
    /// Whether the same request may succeed against another server or later.
    ///
    /// Transport failures, HTTP 5xx and HTTP 403 (after a new login) are retried; a 400 is
    /// a request the server will never accept, so it is not.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Protocol { .. } => true,
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
