//! The v1 naming API (`{context}/v1/ns/...`): Nacos 1.x, 2.x, 3.0, 3.1 and r-nacos.
//!
//! - register: `POST /v1/ns/instance`, answer `ok`;
//! - deregister: `DELETE /v1/ns/instance`, answer `ok` (also for an unknown instance);
//! - beat: `PUT /v1/ns/instance/beat` with the grouped `serviceName` in the query and,
//!   for a full beat, the [`BeatInfo`] JSON in the form field `beat`; answer
//!   `{"clientBeatInterval":5000,"code":10200,"lightBeatEnabled":true}`, `code` 20404
//!   when the server no longer knows the instance;
//! - list: `GET /v1/ns/instance/list`, answer `{"hosts":[..],..}`.

use reqwest::Method;

use super::{Call, Op, Query, instance_query, list_query};
use crate::error::{Error, Result, excerpt};
use crate::instance::{BeatResult, Instance, InstanceList};

pub(super) const INSTANCE: &str = "/v1/ns/instance";
pub(super) const BEAT: &str = "/v1/ns/instance/beat";
pub(super) const LIST: &str = "/v1/ns/instance/list";

/// The v1 request for `op`.
pub(super) fn call(op: Op<'_>) -> Call {
    match op {
        Op::Register(key, instance) => Call::new(
            Method::POST,
            INSTANCE,
            instance_query(key, instance).details(instance),
        ),
        Op::Deregister(key, instance) => {
            Call::new(Method::DELETE, INSTANCE, instance_query(key, instance))
        }
        Op::Beat(key, instance, beat) => {
            let query = Query::default()
                .pair("namespaceId", &key.namespace_id)
                .pair("serviceName", &key.grouped_service_name())
                .pair("groupName", &key.group_name)
                .pair("clusterName", &instance.cluster_name)
                .pair("ip", &instance.ip)
                .pair("port", &instance.port.to_string());
            let mut call = Call::new(Method::PUT, BEAT, query);
            call.form = beat.map(|b| vec![("beat", serde_json::to_string(b).unwrap_or_default())]);
            call
        }
        Op::List(key, healthy_only) => Call::new(Method::GET, LIST, list_query(key, healthy_only)),
    }
}

/// Parses a beat answer.
///
/// # Errors
/// [`Error::Protocol`] when `body` is not the beat answer's JSON.
pub(crate) fn beat_result(server: &str, body: &str) -> Result<BeatResult> {
    serde_json::from_str(body).map_err(|e| protocol(server, body, e))
}

/// Parses an instance list answer.
///
/// # Errors
/// [`Error::Protocol`] when `body` is not an instance list.
pub(crate) fn instance_list(server: &str, body: &str) -> Result<Vec<Instance>> {
    service_list(server, body).map(|l| l.hosts)
}

/// Parses an instance list answer with its protect-threshold flag.
///
/// # Errors
/// [`Error::Protocol`] when `body` is not an instance list.
pub(crate) fn service_list(server: &str, body: &str) -> Result<InstanceList> {
    serde_json::from_str::<InstanceList>(body).map_err(|e| protocol(server, body, e))
}

pub(super) fn protocol(server: &str, body: &str, e: serde_json::Error) -> Error {
    Error::Protocol {
        server: server.to_owned(),
        body: excerpt(body),
        source: std::sync::Arc::new(e),
    }
}
