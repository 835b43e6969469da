//! Typed configs: a watched config's content read into the app's own type with serde, the
//! counterpart of Spring's `@ConfigurationProperties` with `@RefreshScope`. Content that
//! does not read keeps the last good value.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{ConfigItem, ConfigWatch};
use crate::error::{Error, Result, without_values};
use crate::remote::lock;

/// How a config's content is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigFormat {
    /// JSON (`serde_json`).
    Json,
    /// YAML (`serde_yaml_ng`, feature `yaml`).
    Yaml,
    /// TOML (`toml`, feature `toml`).
    Toml,
    /// Java `.properties`, bound much as Spring binds them (feature `properties`): dotted keys
    /// are paths, `name[0]` list elements, comma-separated values lists where a list is
    /// wanted, names relaxed (`max-items` fills `max_items`), and values become the
    /// numbers, bools and enums the fields want.
    Properties,
    /// The whole content as one string: the type must read from a string (`String`, or
    /// a newtype around one).
    Text,
}

impl ConfigFormat {
    /// The format of `item`: its data id's extension (`.json`, `.yaml`/`.yml`, `.toml`,
    /// `.properties`, `.txt`), else the type it was published with (`json`, `yaml`, `toml`,
    /// `properties`, `text`), else text; the extension first, as Spring Cloud Alibaba reads
    /// a data id (and servers store `text` when a publisher names no type).
    pub fn of(item: &ConfigItem) -> ConfigFormat {
        ConfigFormat::declared(item).unwrap_or(ConfigFormat::Text)
    }

    /// The format `item`'s extension or type names, if any.
    pub(super) fn declared(item: &ConfigItem) -> Option<ConfigFormat> {
        let by_extension = item
            .key
            .data_id
            .rsplit_once('.')
            .and_then(|(_, ext)| ConfigFormat::named(ext));
        by_extension.or_else(|| item.content_type.as_deref().and_then(ConfigFormat::named))
    }

    /// The format a type or extension names (`json`, `yaml`/`yml`, `toml`, `properties`,
    /// `text`/`txt`; any case).
    pub(super) fn named(name: &str) -> Option<ConfigFormat> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(ConfigFormat::Json),
            "yaml" | "yml" => Some(ConfigFormat::Yaml),
            "toml" => Some(ConfigFormat::Toml),
            "properties" => Some(ConfigFormat::Properties),
            "text" | "txt" => Some(ConfigFormat::Text),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            ConfigFormat::Json => "JSON",
            ConfigFormat::Yaml => "YAML",
            ConfigFormat::Toml => "TOML",
            ConfigFormat::Properties => "properties",
            ConfigFormat::Text => "text",
        }
    }
}

impl ConfigItem {
    /// The content read as `T` in its [`ConfigFormat`]; `Ok(None)` when the config has no
    /// content.
    ///
    /// # Errors
    /// [`Error::ConfigParse`] naming the config, the format and what did not read (or the
    /// feature the format needs).
    pub fn read<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        read(self)
    }
}

fn read<T: DeserializeOwned>(item: &ConfigItem) -> Result<Option<T>> {
    let Some(content) = item.content.as_deref() else {
        return Ok(None);
    };
    let format = ConfigFormat::of(item);
    let failed = |message: String| Error::ConfigParse {
        data_id: item.key.data_id.clone(),
        format: format.name(),
        message: without_values(&message),
    };
    let value = match format {
        ConfigFormat::Json => serde_json::from_str(content).map_err(|e| failed(e.to_string())),
        ConfigFormat::Text => serde_json::from_value(serde_json::Value::String(content.to_owned()))
            .map_err(|e| failed(e.to_string())),
        #[cfg(feature = "yaml")]
        ConfigFormat::Yaml => serde_yaml_ng::from_str(content).map_err(|e| failed(e.to_string())),
        // Its message only: its `Display` quotes the offending line of the config.
        #[cfg(feature = "toml")]
        ConfigFormat::Toml => toml::from_str(content).map_err(|e| failed(e.message().to_owned())),
        #[cfg(feature = "properties")]
        ConfigFormat::Properties => {
            super::tree::from_properties(content).map_err(|e| failed(e.to_string()))
        }
        #[allow(unreachable_patterns)]
        other => Err(failed(format!(
            "reading {} needs nacos-core's feature `{}`",
            other.name(),
            other.name().to_ascii_lowercase()
        ))),
    }?;
    Ok(Some(value))
}

/// A watched config read as `T`: the last good value, and its changes. Cheap to clone; the
/// config is listened to while any clone lives.
pub struct TypedConfig<T> {
    rx: watch::Receiver<Option<Arc<T>>>,
    raw: ConfigWatch,
    last_error: Arc<Mutex<Option<Error>>>,
}

impl<T> Clone for TypedConfig<T> {
    fn clone(&self) -> Self {
        TypedConfig {
            rx: self.rx.clone(),
            raw: self.raw.clone(),
            last_error: self.last_error.clone(),
        }
    }
}

impl<T> fmt::Debug for TypedConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedConfig")
            .field("key", self.raw.key())
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> TypedConfig<T> {
    pub(super) fn new(raw: ConfigWatch, runtime: &tokio::runtime::Handle) -> Self {
        let (tx, rx) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(None));
        runtime.spawn(follow(raw.subscribe(), tx, last_error.clone()));
        TypedConfig {
            rx,
            raw,
            last_error,
        }
    }

    /// Waits for the first answer and reads it: the value, or `None` when the config does
    /// not exist.
    ///
    /// # Errors
    /// [`Error::ConfigParse`] when the config's content does not read as `T` (or its
    /// format's feature is off).
    pub async fn ready(&mut self) -> Result<Option<Arc<T>>> {
        let mut raw = self.raw.subscribe();
        let item = self.raw.ready().await;
        let value = read::<T>(&item)?;
        // The task reads the same item into the value watchers share: wait for it (or for
        // a newer item, which the task reads next), so that `current` has it after this.
        raw.borrow_and_update();
        let mut rx = self.rx.clone();
        tokio::select! {
            shared = rx.wait_for(|v| v.is_some() || item.content.is_none()) => {
                if let Ok(shared) = shared {
                    if let Some(shared) = shared.clone() {
                        return Ok(Some(shared));
                    }
                }
            }
            _ = raw.changed() => {}
        }
        Ok(value.map(Arc::new))
    }

    /// The last value that read (`None`: none yet, or the config does not exist).
    pub fn current(&self) -> Option<Arc<T>> {
        self.rx.borrow().clone()
    }

    /// Waits for the next value (new content that reads, or the config deleted: `None`).
    ///
    /// # Errors
    /// Never while the watch lives.
    pub async fn changed(&mut self) -> std::result::Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// A receiver of the value, for `tokio::select!` and the like.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<T>>> {
        self.rx.clone()
    }

    /// Why the latest content did not read, while the last good value is kept; `None`
    /// once content reads again.
    pub fn last_error(&self) -> Option<Error> {
        lock(&self.last_error).clone()
    }

    /// The raw watch (content, md5, type).
    pub fn raw(&self) -> &ConfigWatch {
        &self.raw
    }
}

/// Reads every new item into `tx` until no receiver is left; content that does not read is
/// logged (once per content), counted and kept out.
async fn follow<T: DeserializeOwned + Send + Sync + 'static>(
    mut raw: watch::Receiver<Option<Arc<ConfigItem>>>,
    tx: watch::Sender<Option<Arc<T>>>,
    last_error: Arc<Mutex<Option<Error>>>,
) {
    loop {
        let item = raw.borrow_and_update().clone();
        if let Some(item) = item {
            match read::<T>(&item) {
                Ok(value) => {
                    *lock(&last_error) = None;
                    tx.send_replace(value.map(Arc::new));
                }
                Err(e) => {
                    tracing::warn!(config = %item.key, md5 = %item.md5, error = %e,
                        "nacos config content does not read: keeping the last good value");
                    crate::metrics::config_rejected();
                    *lock(&last_error) = Some(e);
                }
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            changed = raw.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigKey;

    fn item(data_id: &str, content_type: Option<&str>, content: &str) -> ConfigItem {
        ConfigItem {
            key: ConfigKey {
                namespace_id: "public".into(),
                group_name: "DEFAULT_GROUP".into(),
                data_id: data_id.into(),
            },
            content: Some(content.into()),
            md5: String::new(),
            content_type: content_type.map(str::to_owned),
            last_modified: None,
            from_snapshot: false,
            from_failover: false,
        }
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Limits {
        max: u32,
    }

    #[test]
    fn the_format_comes_from_the_extension_then_the_type() {
        assert_eq!(
            ConfigFormat::of(&item("a.json", None, "")),
            ConfigFormat::Json
        );
        assert_eq!(
            ConfigFormat::of(&item("a.yml", None, "")),
            ConfigFormat::Yaml
        );
        assert_eq!(
            ConfigFormat::of(&item("a.txt", Some("yaml"), "")),
            ConfigFormat::Text
        );
        assert_eq!(
            ConfigFormat::of(&item("a.conf", Some("yaml"), "")),
            ConfigFormat::Yaml
        );
        assert_eq!(ConfigFormat::of(&item("a", None, "")), ConfigFormat::Text);
        assert_eq!(
            ConfigFormat::of(&item("a.toml", Some("unknown"), "")),
            ConfigFormat::Toml
        );
        // What servers store when the publisher names no type.
        assert_eq!(
            ConfigFormat::of(&item("a.yaml", Some("text"), "")),
            ConfigFormat::Yaml
        );
        assert_eq!(
            ConfigFormat::of(&item("a.conf", Some("text"), "")),
            ConfigFormat::Text
        );
    }

    #[test]
    fn json_and_text_read() {
        let limits: Option<Limits> = item("l.json", None, r#"{"max": 3}"#).read().unwrap();
        assert_eq!(limits, Some(Limits { max: 3 }));
        let text: Option<String> = item("t", None, "hello").read().unwrap();
        assert_eq!(text.as_deref(), Some("hello"));
    }

    #[test]
    fn an_error_names_the_config_and_never_a_value() {
        let e = item("l.json", None, r#"{"max": "s3cret"}"#)
            .read::<Limits>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("l.json") && e.contains("JSON"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
