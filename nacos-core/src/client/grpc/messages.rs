//! The JSON bodies of the naming payloads: the requests this client sends, the answers it
//! reads and the lists the server pushes. Field names follow the Java classes of
//! `com.alibaba.nacos.api` (camelCase), which every server deserializes.

use serde::{Deserialize, Serialize};

use crate::instance::{Instance, ServiceKey};
use crate::metadata::metadata_as_map;
use crate::remote::messages::Empty;

/// Naming request types.
pub(crate) const INSTANCE: &str = "InstanceRequest";
pub(crate) const BATCH_INSTANCE: &str = "BatchInstanceRequest";
pub(crate) const PERSISTENT_INSTANCE: &str = "PersistentInstanceRequest";
pub(crate) const SUBSCRIBE: &str = "SubscribeServiceRequest";
pub(crate) const SERVICE_QUERY: &str = "ServiceQueryRequest";

/// The server's push of a subscribed service's list.
pub(crate) const NOTIFY_SUBSCRIBER: &str = "NotifySubscriberRequest";

/// The server ability (Nacos 2.3+, `AbilityKey.SERVER_SUPPORT_PERSISTENT_INSTANCE_BY_GRPC`)
/// that says `PersistentInstanceRequest` is taken over gRPC.
pub(crate) const PERSISTENT_BY_GRPC: &str = "supportPersistentInstanceByGrpc";

/// An instance as a naming request carries it: no `serviceName` (the request names the
/// service; r-nacos would take a grouped name here as the service's own name) and no id.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireInstance<'a> {
    ip: &'a str,
    port: u16,
    weight: f64,
    healthy: bool,
    enabled: bool,
    ephemeral: bool,
    cluster_name: &'a str,
    #[serde(serialize_with = "wire_metadata")]
    metadata: &'a crate::metadata::Metadata,
}

fn wire_metadata<S: serde::Serializer>(
    metadata: &&crate::metadata::Metadata,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    metadata_as_map(metadata, serializer)
}

impl<'a> From<&'a Instance> for WireInstance<'a> {
    fn from(i: &'a Instance) -> Self {
        WireInstance {
            ip: &i.ip,
            port: i.port,
            weight: i.weight,
            healthy: i.healthy,
            enabled: i.enabled,
            ephemeral: i.ephemeral,
            cluster_name: &i.cluster_name,
            metadata: &i.metadata,
        }
    }
}

/// `InstanceRequest`: `registerInstance` or `deregisterInstance` of one instance. The
/// same body is a `PersistentInstanceRequest` under that type (an `InstanceRequest` is
/// taken as ephemeral by the official servers whatever the instance says).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceRequest<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) service_name: &'a str,
    pub(crate) group_name: &'a str,
    pub(crate) r#type: &'static str,
    pub(crate) instance: WireInstance<'a>,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

impl<'a> InstanceRequest<'a> {
    pub(crate) fn new(
        key: &'a ServiceKey,
        kind: &'static str,
        instance: &'a Instance,
        request_id: &'a str,
    ) -> Self {
        InstanceRequest {
            namespace: &key.namespace_id,
            service_name: &key.service_name,
            group_name: &key.group_name,
            r#type: kind,
            instance: instance.into(),
            request_id,
            module: "naming",
            headers: Empty {},
        }
    }
}

/// `BatchInstanceRequest`: `batchRegisterInstance` makes the listed instances the whole set
/// the connection holds for the service (official servers); `deregisterInstance` removes
/// the listed ones (r-nacos; official servers refuse the type and change nothing).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchInstanceRequest<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) service_name: &'a str,
    pub(crate) group_name: &'a str,
    pub(crate) r#type: &'static str,
    pub(crate) instances: Vec<WireInstance<'a>>,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

impl<'a> BatchInstanceRequest<'a> {
    pub(crate) fn new(
        key: &'a ServiceKey,
        r#type: &'static str,
        instances: Vec<WireInstance<'a>>,
        request_id: &'a str,
    ) -> Self {
        BatchInstanceRequest {
            namespace: &key.namespace_id,
            service_name: &key.service_name,
            group_name: &key.group_name,
            r#type,
            instances,
            request_id,
            module: "naming",
            headers: Empty {},
        }
    }
}

/// `SubscribeServiceRequest` (`subscribe: false` unsubscribes).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscribeRequest<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) service_name: &'a str,
    pub(crate) group_name: &'a str,
    pub(crate) subscribe: bool,
    pub(crate) clusters: &'static str,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

/// `ServiceQueryRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryRequest<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) service_name: &'a str,
    pub(crate) group_name: &'a str,
    pub(crate) cluster: &'static str,
    pub(crate) healthy_only: bool,
    pub(crate) udp_port: u16,
    pub(crate) request_id: &'a str,
    pub(crate) module: &'static str,
    pub(crate) headers: Empty,
}

/// The fields of the naming answers this client reads.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NamingAnswer {
    /// `InstanceResponse`, `BatchInstanceResponse`: what the server did. A batch answered
    /// `batchRegisterInstance` replaced the set (official servers); answered
    /// `registerInstance`, every instance was registered on its own (r-nacos).
    #[serde(default)]
    pub(crate) r#type: Option<String>,
    /// `SubscribeServiceResponse`, `QueryServiceResponse`.
    #[serde(default)]
    pub(crate) service_info: Option<ServiceInfo>,
}

/// A service's instances as the server pushes or answers them.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceInfo {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) group_name: Option<String>,
    #[serde(default)]
    pub(crate) hosts: Vec<Instance>,
    #[serde(default)]
    pub(crate) reach_protection_threshold: bool,
}

impl ServiceInfo {
    /// The service it describes, in `namespace`: `name` may be grouped (`G@@svc`).
    pub(crate) fn key(&self, namespace: &str) -> Option<ServiceKey> {
        let name = self.name.as_deref()?;
        let (group, service) = match name.split_once("@@") {
            Some((group, service)) => (group.to_owned(), service.to_owned()),
            None => (self.group_name.clone()?, name.to_owned()),
        };
        Some(ServiceKey {
            namespace_id: namespace.to_owned(),
            group_name: group,
            service_name: service,
        })
    }
}

/// `NotifySubscriberRequest`: a subscribed service's list, pushed.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotifySubscriber {
    #[serde(default)]
    pub(crate) service_info: Option<ServiceInfo>,
    /// The namespace of the service.
    #[serde(default)]
    pub(crate) namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_info_names_its_service_grouped_or_not() {
        let grouped: ServiceInfo =
            serde_json::from_str(r#"{"name":"G@@orders","groupName":"G","hosts":[]}"#).unwrap();
        let plain: ServiceInfo =
            serde_json::from_str(r#"{"name":"orders","groupName":"G","hosts":[]}"#).unwrap();
        for info in [grouped, plain] {
            let key = info.key("ns").unwrap();
            assert_eq!(
                (
                    key.namespace_id.as_str(),
                    key.group_name.as_str(),
                    key.service_name.as_str()
                ),
                ("ns", "G", "orders")
            );
        }
    }

    #[test]
    fn an_instance_on_the_wire_has_no_service_name() {
        let mut instance: Instance = serde_json::from_str(
            r#"{"ip":"10.0.0.1","port":80,"serviceName":"G@@orders","clusterName":"DEFAULT"}"#,
        )
        .unwrap();
        instance.metadata.insert("k".into(), "v".into());
        let json = serde_json::to_value(WireInstance::from(&instance)).unwrap();
        assert!(json.get("serviceName").is_none(), "{json}");
        assert_eq!(json["metadata"]["k"], "v");
        assert_eq!(json["clusterName"], "DEFAULT");
    }
}
