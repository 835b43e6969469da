//! The three protobuf messages of Nacos's `nacos_grpc_service.proto`, written by hand (no
//! `protoc`, no build script): every request and answer is a [`Payload`] whose body is
//! camelCase JSON in a `google.protobuf.Any`, and whose [`Metadata`] names the body's type.

use std::collections::HashMap;
use std::fmt;

/// `message Metadata { string type = 3; map<string, string> headers = 7; string clientIp = 8; }`
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub(crate) struct Metadata {
    /// The body's type: the bare class name, e.g. `InstanceRequest`.
    #[prost(string, tag = "3")]
    pub(crate) r#type: String,
    /// Request headers; `accessToken` among them when logged in.
    #[prost(map = "string, string", tag = "7")]
    pub(crate) headers: HashMap<String, String>,
    /// The client's IP, informational (the console shows it).
    #[prost(string, tag = "8")]
    pub(crate) client_ip: String,
}

impl fmt::Debug for Metadata {
    /// The type and the header names: a header's value may be a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("type", &self.r#type)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `google.protobuf.Any`: `type_url` (the bare type name, as Nacos writes it) and the JSON.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Any {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// `message Payload { Metadata metadata = 2; google.protobuf.Any body = 3; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Payload {
    #[prost(message, optional, tag = "2")]
    pub(crate) metadata: Option<Metadata>,
    #[prost(message, optional, tag = "3")]
    pub(crate) body: Option<Any>,
}

impl Payload {
    /// A payload of type `kind` carrying `json`, with `headers`.
    pub(crate) fn new(kind: &str, json: Vec<u8>, headers: HashMap<String, String>) -> Self {
        Payload {
            metadata: Some(Metadata {
                r#type: kind.to_owned(),
                headers,
                client_ip: crate::addr::client_ip().to_owned(),
            }),
            body: Some(Any {
                type_url: kind.to_owned(),
                value: json,
            }),
        }
    }

    /// The body's type, from the metadata (or the `Any`'s type URL when the metadata has
    /// none).
    pub(crate) fn kind(&self) -> &str {
        match &self.metadata {
            Some(m) if !m.r#type.is_empty() => &m.r#type,
            _ => self.body.as_ref().map_or("", |b| b.type_url.as_str()),
        }
    }

    /// The JSON body (empty when there is none).
    pub(crate) fn json(&self) -> &[u8] {
        self.body.as_ref().map_or(&[], |b| b.value.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_nacos_proto() {
        let payload = Payload::new("HealthCheckRequest", b"{}".to_vec(), HashMap::new());
        let bytes = payload.encode_to_vec();
        // Payload.metadata = 2 (length-delimited: 0x12), Metadata.type = 3 (0x1a).
        assert_eq!(bytes[0], 0x12);
        assert_eq!(bytes[2], 0x1a);
        assert_eq!(Payload::decode(bytes.as_slice()).unwrap(), payload);
        let mut headers = HashMap::new();
        headers.insert("accessToken".to_owned(), "secret-token".to_owned());
        let shown = format!("{:?}", Payload::new("X", vec![], headers));
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("accessToken"), "{shown}");
    }
}
