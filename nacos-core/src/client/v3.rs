//! The v3 client API (`{context}/v3/client/ns/...`): Nacos 3.x.
//!
//! - register: `POST /v3/client/ns/instance` with `heartBeat=false`;
//! - renew (the beat): the same `POST` with `heartBeat=true`; the server ignores weight,
//!   enabled and metadata there and answers `code` 21003 for an unknown instance;
//! - deregister: `DELETE /v3/client/ns/instance`;
//! - list: `GET /v3/client/ns/instance/list`.
//!
//! Every answer is an envelope `{"code":0,"message":"success","data":..}`: HTTP 200 with a
//! code other than 0 is a refusal ([`Error::Refused`]).

use reqwest::Method;
use serde::Deserialize;

use super::{Call, Op, instance_query, list_query};
use crate::error::{Error, Result, excerpt};
use crate::instance::{BeatResult, Instance};

pub(super) const INSTANCE: &str = "/v3/client/ns/instance";
pub(super) const LIST: &str = "/v3/client/ns/instance/list";

/// The v3 request for `op`.
pub(super) fn call(op: Op<'_>) -> Call {
    match op {
        Op::Register(key, instance) => Call::new(
            Method::POST,
            INSTANCE,
            instance_query(key, instance)
                .details(instance)
                .pair("heartBeat", "false"),
        ),
        Op::Beat(key, instance, _) => Call::new(
            Method::POST,
            INSTANCE,
            instance_query(key, instance).pair("heartBeat", "true"),
        ),
        Op::Deregister(key, instance) => {
            Call::new(Method::DELETE, INSTANCE, instance_query(key, instance))
        }
        Op::List(key, healthy_only) => Call::new(Method::GET, LIST, list_query(key, healthy_only)),
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

/// The envelope's `data` when `code` is 0.
///
/// # Errors
/// [`Error::Refused`] with the server's code and message when `code` is not 0;
/// [`Error::Protocol`] when `body` is not an envelope.
fn data<T: serde::de::DeserializeOwned>(server: &str, body: &str) -> Result<Option<T>> {
    let envelope: Envelope<T> =
        serde_json::from_str(body).map_err(|e| super::v1::protocol(server, body, e))?;
    match envelope.code {
        0 => Ok(envelope.data),
        code => Err(Error::Refused {
            server: server.to_owned(),
            code,
            message: excerpt(envelope.message.as_deref().unwrap_or_default()),
        }),
    }
}

/// Checks a register or deregister answer.
///
/// # Errors
/// As [`data`].
pub(crate) fn expect_ok(server: &str, body: &str) -> Result<()> {
    data::<serde_json::Value>(server, body).map(drop)
}

/// Parses a renewal answer: code 0, or 21003 for an unknown instance.
///
/// # Errors
/// As [`data`], for any other code.
pub(crate) fn beat_result(server: &str, body: &str) -> Result<BeatResult> {
    match data::<serde_json::Value>(server, body) {
        Ok(_) => Ok(BeatResult::with_code(BeatResult::OK)),
        Err(Error::Refused { code, .. }) if code == i64::from(BeatResult::INSTANCE_NOT_FOUND) => {
            Ok(BeatResult::with_code(BeatResult::INSTANCE_NOT_FOUND))
        }
        Err(e) => Err(e),
    }
}

/// Nacos's `RESOURCE_NOT_FOUND` code: a service that does not exist (listed as empty).
pub(crate) const RESOURCE_NOT_FOUND: i64 = 20004;

/// Parses an instance list answer, keeping only healthy instances when `healthy_only`
/// (the v3 list ignores the parameter).
///
/// # Errors
/// As [`data`].
pub(crate) fn instance_list(server: &str, body: &str, healthy_only: bool) -> Result<Vec<Instance>> {
    Ok(data::<Vec<Instance>>(server, body)?
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !healthy_only || i.healthy)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_code_and_message() {
        let err = expect_ok("s", r#"{"code":20004,"message":"param error"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::Refused { code: 20004, message, .. } if message == "param error"),
            "{err:?}"
        );
        assert!(err.to_string().contains("code 20004"), "{err}");
        assert!(!err.to_string().contains("HTTP 200"), "{err}");
    }

    #[test]
    fn renewals_tell_an_unknown_instance_from_a_refusal() {
        assert!(
            !beat_result("s", r#"{"code":0,"data":"ok"}"#)
                .unwrap()
                .is_not_found()
        );
        assert!(
            beat_result("s", r#"{"code":21003,"message":"instance not found"}"#)
                .unwrap()
                .is_not_found()
        );
        assert!(beat_result("s", r#"{"code":500}"#).is_err());
        let err = beat_result("s", "<html>").unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }));
        assert!(std::error::Error::source(&err).is_some());
    }
}
