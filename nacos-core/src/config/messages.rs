//! The JSON bodies of the configuration payloads (`com.alibaba.nacos.api.config.remote`):
//! the requests this client sends, the answers it reads and the change the server pushes.
//! `tenant` is the namespace id, always sent (r-nacos requires the field; `""` is the
//! public namespace).

use serde::{Deserialize, Serialize};

use crate::remote::messages::Empty;

/// Request types.
pub(crate) const CONFIG_QUERY: &str = "ConfigQueryRequest";
pub(crate) const CONFIG_BATCH_LISTEN: &str = "ConfigBatchListenRequest";
pub(crate) const CONFIG_PUBLISH: &str = "ConfigPublishRequest";
pub(crate) const CONFIG_REMOVE: &str = "ConfigRemoveRequest";
/// The server's push: a listened config changed (no content: the client queries it).
pub(crate) const CONFIG_CHANGE_NOTIFY: &str = "ConfigChangeNotifyRequest";

/// `errorCode` of a query for a config that does not exist (`CONFIG_NOT_FOUND`).
pub(crate) const NOT_FOUND: i64 = 300;

/// `ConfigQueryRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryRequest<'a> {
    pub(crate) data_id: &'a str,
    pub(crate) group: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) tag: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

/// The fields of `ConfigQueryResponse` this client reads.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryAnswer {
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) md5: Option<String>,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) last_modified: Option<i64>,
}

/// One config of a `ConfigBatchListenRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenContext<'a> {
    pub(crate) data_id: &'a str,
    pub(crate) group: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) md5: &'a str,
}

/// `ConfigBatchListenRequest`: listen (or stop listening) to configs, each with the md5 of
/// the content this client has (`""`: none).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchListenRequest<'a> {
    pub(crate) listen: bool,
    pub(crate) config_listen_contexts: Vec<ListenContext<'a>>,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

/// A config named by the server (in a listen answer or a push).
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Changed {
    #[serde(default)]
    pub(crate) data_id: String,
    #[serde(default)]
    pub(crate) group: String,
    #[serde(default)]
    pub(crate) tenant: Option<String>,
}

/// `ConfigChangeBatchListenResponse`: the listened configs whose md5 differs from the
/// server's.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchListenAnswer {
    #[serde(default)]
    pub(crate) changed_configs: Vec<Changed>,
}

/// `ConfigPublishRequest`: `cas_md5` makes it a compare-and-set (official servers refuse
/// it when the stored md5 differs).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublishRequest<'a> {
    pub(crate) data_id: &'a str,
    pub(crate) group: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cas_md5: Option<&'a str>,
    pub(crate) addition_map: std::collections::BTreeMap<&'static str, &'a str>,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

/// `ConfigRemoveRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemoveRequest<'a> {
    pub(crate) data_id: &'a str,
    pub(crate) group: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) tag: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}
