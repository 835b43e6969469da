//! The instance model: what is registered, what a beat carries, what the server lists.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::metadata::{Metadata, PRESERVED_REGISTER_SOURCE, metadata_as_map};
use crate::settings::Config;

/// Where an instance lives in Nacos: namespace, group and service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Namespace id, e.g. `public`.
    pub namespace_id: String,
    /// Group name, e.g. `DEFAULT_GROUP`.
    pub group_name: String,
    /// Service name without the group.
    pub service_name: String,
}

impl ServiceKey {
    /// The service name as Nacos keys it: `group@@service`.
    pub fn grouped_service_name(&self) -> String {
        format!("{}@@{}", self.group_name, self.service_name)
    }
}

impl From<&Config> for ServiceKey {
    fn from(config: &Config) -> Self {
        ServiceKey {
            namespace_id: config.namespace_id().to_owned(),
            group_name: config.group_name().to_owned(),
            service_name: config.service_name().to_owned(),
        }
    }
}

/// One instance of a service, as registered and as listed by
/// `GET /nacos/v1/ns/instance/list` (field names follow the server's JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Instance {
    /// The server's id for the instance (`ip#port#cluster#group@@service`); empty before
    /// registration.
    #[serde(default)]
    pub instance_id: String,
    /// Advertised IP, as text.
    pub ip: String,
    /// Advertised port.
    pub port: u16,
    /// Weight, 0 to 10000.
    #[serde(default = "one")]
    pub weight: f64,
    /// Whether the server considers it healthy.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Whether it accepts traffic.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether it is kept alive by beats.
    #[serde(default = "yes")]
    pub ephemeral: bool,
    /// Cluster name.
    #[serde(default)]
    pub cluster_name: String,
    /// Service name as the server reports it (`group@@service` on most servers).
    #[serde(default)]
    pub service_name: String,
    /// Metadata.
    #[serde(default, serialize_with = "metadata_as_map")]
    pub metadata: Metadata,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl Instance {
    /// The instance `config` describes, at `addr`.
    ///
    /// Adds `preserved.register.source` = `RUST_NACOS` to the metadata unless it is set.
    pub fn from_config(config: &Config, addr: SocketAddr) -> Self {
        let own = config.metadata();
        let add_source = !own.contains_key(PRESERVED_REGISTER_SOURCE);
        // Exactly as many slots as entries: a process may hold thousands of instances.
        let mut metadata = Metadata::with_capacity(own.len() + usize::from(add_source));
        for (key, value) in own.iter() {
            metadata.insert(key.clone(), value.clone());
        }
        if add_source {
            metadata.insert(
                PRESERVED_REGISTER_SOURCE.to_owned(),
                "RUST_NACOS".to_owned(),
            );
        }
        Instance {
            instance_id: String::new(),
            ip: addr.ip().to_string(),
            port: addr.port(),
            weight: config.weight(),
            healthy: true,
            enabled: config.enabled(),
            ephemeral: config.ephemeral(),
            cluster_name: config.cluster_name().to_owned(),
            service_name: config.grouped_service_name(),
            metadata,
        }
    }

    /// `ip:port`, the way logs show an instance.
    pub fn addr(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// The body of a full beat (`PUT /nacos/v1/ns/instance/beat`, form field `beat`), as the
/// Java client's `BeatInfo` serialises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BeatInfo {
    /// Grouped service name, `group@@service`: the server looks the instance up by it.
    pub service_name: String,
    /// Instance IP.
    pub ip: String,
    /// Instance port.
    pub port: u16,
    /// Cluster name.
    pub cluster: String,
    /// Weight.
    pub weight: f64,
    /// Metadata.
    #[serde(serialize_with = "metadata_as_map")]
    pub metadata: Metadata,
    /// Always `false`; kept for the server's parser.
    pub scheduled: bool,
    /// The beat period in ms.
    pub period: u64,
    /// Always `false`.
    pub stopped: bool,
}

impl BeatInfo {
    /// The beat body for `instance`, beating every `period_ms` ms.
    pub fn new(instance: &Instance, period_ms: u64) -> Self {
        BeatInfo {
            service_name: instance.service_name.clone(),
            ip: instance.ip.clone(),
            port: instance.port,
            cluster: instance.cluster_name.clone(),
            weight: instance.weight,
            metadata: instance.metadata.clone(),
            scheduled: false,
            period: period_ms,
            stopped: false,
        }
    }
}

/// The server's answer to a beat: `{"clientBeatInterval":5000,"code":10200,"lightBeatEnabled":true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct BeatResult {
    /// The delay before the next beat, in ms; `None` or 0 means "keep your own interval".
    #[serde(default)]
    pub client_beat_interval: Option<i64>,
    /// 10200 when the instance is known, 20404 when the server no longer knows it.
    #[serde(default)]
    pub code: Option<i32>,
    /// Whether the next beats may leave out the `beat` body.
    #[serde(default)]
    pub light_beat_enabled: bool,
}

impl BeatResult {
    /// `code` 10200: the server knows the instance.
    pub const OK: i32 = 10200;
    /// `code` 20404 (`RESOURCE_NOT_FOUND`): the server no longer knows the instance, which
    /// must be registered again with full data.
    pub const RESOURCE_NOT_FOUND: i32 = 20404;

    /// v3 `code` 21003 (`INSTANCE_NOT_FOUND`): the renewed instance is unknown, register
    /// again with full data.
    pub const INSTANCE_NOT_FOUND: i32 = 21003;

    /// A result carrying only `code`.
    pub fn with_code(code: i32) -> Self {
        BeatResult {
            code: Some(code),
            ..BeatResult::default()
        }
    }

    /// Whether the server asks for the instance to be registered again (v1 20404, v3 21003).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code,
            Some(Self::RESOURCE_NOT_FOUND | Self::INSTANCE_NOT_FOUND)
        )
    }
}

/// The body of `GET /nacos/v1/ns/instance/list`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceList {
    #[serde(default)]
    pub(crate) hosts: Vec<Instance>,
    /// The service is below its protect threshold: unhealthy instances are listed as
    /// healthy (official server, v1 API).
    #[serde(default)]
    pub(crate) reach_protection_threshold: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::metadata_json;

    #[test]
    fn beat_info_serialises_like_the_java_client() {
        let cfg = Config::builder()
            .service_name("orders")
            .group_name("G")
            .metadata("v", "1")
            .build()
            .unwrap();
        let inst = Instance::from_config(&cfg, "10.0.0.1:8080".parse().unwrap());
        let beat = serde_json::to_value(BeatInfo::new(&inst, 5000)).unwrap();
        assert_eq!(
            beat,
            serde_json::json!({
                "serviceName": "G@@orders", "ip": "10.0.0.1", "port": 8080,
                "cluster": "DEFAULT", "weight": 1.0,
                "metadata": {"v": "1", "preserved.register.source": "RUST_NACOS"},
                "scheduled": false, "period": 5000, "stopped": false
            })
        );
    }

    #[test]
    fn metadata_is_a_json_object_even_when_empty() {
        let empty = Metadata::new();
        assert_eq!(metadata_json(&empty), "{}");
        let mut inst = Instance::from_config(
            &Config::builder().service_name("s").build().unwrap(),
            "10.0.0.1:1".parse().unwrap(),
        );
        inst.metadata = empty;
        assert_eq!(
            serde_json::to_value(&inst).unwrap()["metadata"],
            serde_json::json!({})
        );
        let listed: Instance =
            serde_json::from_str(r#"{"ip":"10.0.0.2","port":2,"metadata":{"b":"2","a":"1"}}"#)
                .unwrap();
        assert_eq!(metadata_json(&listed.metadata), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn instance_metadata_takes_exactly_its_entries() {
        let cfg = Config::builder()
            .service_name("s")
            .metadata("zone", "a")
            .metadata("preserved.register.source", "MINE")
            .heartbeat_interval(std::time::Duration::from_secs(2))
            .build()
            .unwrap();
        let inst = Instance::from_config(&cfg, "10.0.0.1:1".parse().unwrap());
        let keys: Vec<&str> = inst.metadata.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "preserved.heart.beat.interval",
                "preserved.register.source",
                "zone"
            ]
        );
        assert_eq!(
            inst.metadata
                .get("preserved.register.source")
                .map(String::as_str),
            Some("MINE")
        );
        assert_eq!(inst.metadata.into_tuple_vec().capacity(), 3);
    }

    #[test]
    fn beat_result_parses_server_answers() {
        let r: BeatResult = serde_json::from_str(
            r#"{"clientBeatInterval":5000,"code":10200,"lightBeatEnabled":true}"#,
        )
        .unwrap();
        assert_eq!(r.client_beat_interval, Some(5000));
        assert!(r.light_beat_enabled && !r.is_not_found());
        let r: BeatResult = serde_json::from_str(r#"{"code":20404}"#).unwrap();
        assert!(r.is_not_found() && !r.light_beat_enabled);
    }
}
