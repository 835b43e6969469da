//! The JSON bodies of the connection's own payloads: the set-up, the health checks, the
//! common fields of every answer and of the requests the server pushes, and the answer to
//! those. Field names follow the Java classes of `com.alibaba.nacos.api` (camelCase), which
//! every server deserializes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, excerpt};

/// The version this client announces in `ConnectionSetupRequest.clientVersion`.
pub(crate) const CLIENT_VERSION: &str = concat!("Nacos-Rust-Client:v", env!("CARGO_PKG_VERSION"));

/// `resultCode` of a successful answer.
pub(crate) const SUCCESS: i64 = 200;
/// `errorCode` of an answer on a connection the server does not know (any more):
/// `NacosException.UN_REGISTER`.
pub(crate) const UNREGISTERED: i64 = 301;
/// `errorCode` of an answer refusing the access token: `NacosException.NO_RIGHT`.
pub(crate) const NO_RIGHT: i64 = 403;

/// Request types of the connection.
pub(crate) const SERVER_CHECK: &str = "ServerCheckRequest";
pub(crate) const CONNECTION_SETUP: &str = "ConnectionSetupRequest";
pub(crate) const HEALTH_CHECK: &str = "HealthCheckRequest";

/// Server -> client request types the connection answers itself.
pub(crate) const CLIENT_DETECTION: &str = "ClientDetectionRequest";
pub(crate) const CONNECT_RESET: &str = "ConnectResetRequest";
pub(crate) const SETUP_ACK: &str = "SetupAckRequest";

/// The answer type of a server request (`FooRequest` -> `FooResponse`).
pub(crate) fn answer_type(request: &str) -> String {
    match request.strip_suffix("Request") {
        Some(stem) => format!("{stem}Response"),
        None => "ErrorResponse".to_owned(),
    }
}

/// An internal request with no field of its own (`ServerCheckRequest`,
/// `HealthCheckRequest`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Internal<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

impl<'a> Internal<'a> {
    pub(crate) fn new(request_id: &'a str) -> Self {
        Internal {
            request_id,
            module: "internal",
            headers: Empty {},
        }
    }
}

/// `{}`.
#[derive(Serialize, Default)]
pub(crate) struct Empty {}

/// `ConnectionSetupRequest`, the first message on the bi-stream, with `source: sdk`, the
/// owner's labels (`module: naming` makes the server create a naming client for the
/// connection) and `AppName`. An `abilityTable` (even empty) asks a Nacos 2.3+ server for
/// its own abilities in a `SetupAckRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectionSetup<'a> {
    pub(crate) client_version: &'static str,
    pub(crate) abilities: serde_json::Value,
    pub(crate) ability_table: Empty,
    pub(crate) tenant: &'a str,
    pub(crate) labels: std::collections::BTreeMap<&'static str, &'a str>,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

impl<'a> ConnectionSetup<'a> {
    pub(crate) fn new(
        request_id: &'a str,
        app_name: &'a str,
        owner_labels: &[(&'static str, &'static str)],
    ) -> Self {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("source", "sdk");
        for (key, value) in owner_labels {
            labels.insert(*key, *value);
        }
        labels.insert("AppName", app_name);
        ConnectionSetup {
            client_version: CLIENT_VERSION,
            abilities: serde_json::json!({
                "remoteAbility": {"supportRemoteConnection": true},
                "configAbility": {"supportRemoteMetrics": false},
                "namingAbility": {"supportDeltaPush": false, "supportRemoteMetric": false},
            }),
            ability_table: Empty {},
            tenant: "",
            labels,
            request_id,
            module: "internal",
            headers: Empty {},
        }
    }
}

/// Any answer: the common fields, and those of the connection's own answers; the whole
/// JSON for the module that sent the request ([`body`](Self::body)).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Response {
    #[serde(default)]
    pub(crate) result_code: i64,
    #[serde(default)]
    pub(crate) error_code: i64,
    #[serde(default)]
    pub(crate) message: Option<String>,
    /// `ServerCheckResponse`.
    #[serde(default)]
    pub(crate) connection_id: Option<String>,
    /// `ServerCheckResponse` (Nacos 2.3+): the server answers an `abilityTable` with a
    /// `SetupAckRequest` carrying its own.
    #[serde(default)]
    pub(crate) support_ability_negotiation: bool,
    /// The answer's JSON.
    #[serde(skip)]
    pub(crate) json: Vec<u8>,
}

impl Response {
    /// The answer read as `T` (the fields of the answer a module reads).
    ///
    /// # Errors
    /// [`Error::Protocol`] when the JSON does not fit `T`.
    pub(crate) fn body<T: DeserializeOwned>(&self, server: &str) -> Result<T> {
        serde_json::from_slice(&self.json).map_err(|e| Error::Protocol {
            server: server.to_owned(),
            body: excerpt(&crate::error::redact_token(&String::from_utf8_lossy(
                &self.json[..self.json.len().min(512)],
            ))),
            source: std::sync::Arc::new(e),
        })
    }
}

/// A request the server pushes on the bi-stream: the fields the connection reads.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerRequest {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    /// `ConnectResetRequest`: the server to connect to instead, if any.
    #[serde(default)]
    pub(crate) server_ip: Option<String>,
    /// `ConnectResetRequest`: its main (HTTP) port, as text.
    #[serde(default)]
    pub(crate) server_port: Option<serde_json::Value>,
    /// `SetupAckRequest`: the server's abilities by name.
    #[serde(default)]
    pub(crate) ability_table: Option<std::collections::HashMap<String, bool>>,
}

/// The answer to a server request.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ack<'a> {
    pub(crate) result_code: i64,
    pub(crate) error_code: i64,
    pub(crate) request_id: &'a str,
    pub(crate) success: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_types_follow_the_request_types() {
        assert_eq!(
            answer_type("NotifySubscriberRequest"),
            "NotifySubscriberResponse"
        );
        assert_eq!(answer_type(CLIENT_DETECTION), "ClientDetectionResponse");
        assert_eq!(answer_type("Odd"), "ErrorResponse");
    }
}
