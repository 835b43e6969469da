//! Imports: the configs an app loads into one typed value at start and follows, the
//! counterpart of Spring Cloud Alibaba's `spring.config.import=nacos:...`, shared and
//! extension configs and `@RefreshScope`.
//!
//! Order, later winning key by key, as Spring Cloud Alibaba's bootstrap loads them
//! (`NacosPropertySourceLocator`): shared configs, then extension configs, then the imports.
//! Each config is read in its format (its data id's extension, else the type it was
//! published with, else `NACOS_CONFIG_FILE_EXTENSION`) into a tree of keys, the trees are
//! merged (a list is replaced whole) and the result is bound to the app's type as Spring
//! binds its environment.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;

use super::tree::Node;
use super::{ConfigFormat, ConfigItem, ConfigService, ConfigWatch};
use crate::error::{Error, Result, without_values};
use crate::remote::lock;

/// How long [`ConfigService::import`] waits for each config's first answer by default.
const DEFAULT_IMPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// One config an app imports: its data id, group, whether its changes are followed and
/// whether the app can do without it.
///
/// Written (in `NACOS_CONFIG_IMPORT` and the like, and by [`FromStr`]) as Spring Cloud
/// Alibaba's imports are: `[optional:][nacos:]data_id[?group=G&refresh=B]` (`refreshEnabled`
/// is read as `refresh`).
///
/// ```
/// use nacos_core::ConfigImport;
///
/// let import: ConfigImport = "optional:nacos:orders.yaml?group=ORDERS&refresh=false".parse()?;
/// assert_eq!(import.data_id, "orders.yaml");
/// assert_eq!(import.group_name.as_deref(), Some("ORDERS"));
/// assert!(import.optional && !import.refresh);
/// # Ok::<(), nacos_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigImport {
    /// The data id, e.g. `orders.yaml`.
    pub data_id: String,
    /// Its group; `None`: the configured one (`NACOS_CONFIG_GROUP`, else `NACOS_GROUP`).
    pub group_name: Option<String>,
    /// Whether its changes reach the app's value (`false`: read once at start).
    pub refresh: bool,
    /// Whether the app starts without it when it does not exist (`false`: an error).
    pub optional: bool,
}

impl ConfigImport {
    /// `data_id` in the configured group, required, its changes followed.
    pub fn new(data_id: impl Into<String>) -> Self {
        ConfigImport {
            data_id: data_id.into(),
            group_name: None,
            refresh: true,
            optional: false,
        }
    }

    /// In `group_name`.
    #[must_use]
    pub fn group_name(mut self, group_name: impl Into<String>) -> Self {
        self.group_name = Some(group_name.into());
        self
    }

    /// Whether its changes are followed.
    #[must_use]
    pub fn refresh(mut self, refresh: bool) -> Self {
        self.refresh = refresh;
        self
    }

    /// The app starts without it when it does not exist.
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Reads one entry; `refresh` is the default of its list.
    fn parse_entry(entry: &str, refresh: bool) -> std::result::Result<Self, String> {
        let mut rest = entry.trim();
        let optional = match rest.strip_prefix("optional:") {
            Some(after) => {
                rest = after;
                true
            }
            None => false,
        };
        rest = rest.strip_prefix("nacos:").unwrap_or(rest);
        let (data_id, query) = match rest.split_once('?') {
            Some((data_id, query)) => (data_id.trim(), Some(query)),
            None => (rest.trim(), None),
        };
        if data_id.is_empty() {
            return Err("a data id".into());
        }
        if let Some(bad) = data_id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
        {
            return Err(format!(
                "a data id of letters, digits and - _ . : (found {bad:?})"
            ));
        }
        let mut import = ConfigImport::new(data_id).refresh(refresh);
        import.optional = optional;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name.trim() {
                "group" => {
                    let value = value.trim();
                    if value.is_empty() {
                        return Err("a group name after group=".into());
                    }
                    import.group_name = Some(value.to_owned());
                }
                "refresh" | "refreshEnabled" => {
                    import.refresh = match value.trim().to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("true or false after {}=", name.trim())),
                    }
                }
                "" => {}
                other => {
                    return Err(format!(
                        "only group= and refresh= after ? (found {other:?})"
                    ));
                }
            }
        }
        Ok(import)
    }
}

impl FromStr for ConfigImport {
    type Err = Error;

    /// `[optional:][nacos:]data_id[?group=G&refresh=B]`; `refresh` defaults to `true`.
    fn from_str(s: &str) -> Result<Self> {
        ConfigImport::parse_entry(s, true).map_err(|expected| Error::Config {
            variable: "ConfigImport",
            value: s.to_owned(),
            expected,
        })
    }
}

impl fmt::Display for ConfigImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.optional {
            f.write_str("optional:")?;
        }
        f.write_str(&self.data_id)?;
        let mut sep = '?';
        if let Some(group) = &self.group_name {
            write!(f, "{sep}group={group}")?;
            sep = '&';
        }
        if !self.refresh {
            write!(f, "{sep}refresh=false")?;
        }
        Ok(())
    }
}

/// The configs an app loads into its settings, in order (later ones win key by key), and
/// how: the format of data ids without an extension, whether changes are followed at all,
/// how long the load waits.
///
/// From the environment ([`from_env`](Self::from_env)), in Spring Cloud Alibaba's order:
///
/// | variable | what | default |
/// |---|---|---|
/// | `NACOS_CONFIG_SHARED_CONFIGS` | loaded first; comma-separated [`ConfigImport`]s, `refresh` default `false` | none |
/// | `NACOS_CONFIG_EXTENSION_CONFIGS` | loaded next; same form, `refresh` default `false` | none |
/// | `NACOS_CONFIG_IMPORT` | loaded last; same form, `refresh` default `true` | none |
/// | `NACOS_CONFIG_FILE_EXTENSION` | the format of a config whose data id has no extension and that was published without a type: `properties`, `yaml`, `json`, `toml`, `text` | `properties` |
/// | `NACOS_CONFIG_REFRESH_ENABLED` | `false`: no config is followed | `true` |
/// | `NACOS_CONFIG_TIMEOUT` | how long the load waits for each config's first answer | `10s` |
///
/// The group of entries without `group=` is `NACOS_CONFIG_GROUP`, else `NACOS_GROUP`,
/// else `DEFAULT_GROUP`.
#[derive(Clone, Debug)]
pub struct ConfigImports {
    imports: Vec<ConfigImport>,
    file_extension: ConfigFormat,
    refresh_enabled: bool,
    timeout: Duration,
}

impl Default for ConfigImports {
    fn default() -> Self {
        ConfigImports::new()
    }
}

impl ConfigImports {
    /// No configs; `properties` for data ids without an extension, changes followed, a
    /// 10 s timeout.
    pub fn new() -> Self {
        ConfigImports {
            imports: Vec::new(),
            file_extension: ConfigFormat::Properties,
            refresh_enabled: true,
            timeout: DEFAULT_IMPORT_TIMEOUT,
        }
    }

    /// The imports of the process environment (see the table above).
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable and what it accepts when one is malformed.
    pub fn from_env() -> Result<Self> {
        ConfigImports::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut imports = ConfigImports::new();
        for (variable, refresh) in [
            ("NACOS_CONFIG_SHARED_CONFIGS", false),
            ("NACOS_CONFIG_EXTENSION_CONFIGS", false),
            ("NACOS_CONFIG_IMPORT", true),
        ] {
            let Some(raw) = get(variable) else { continue };
            for entry in raw.split(',').filter(|e| !e.trim().is_empty()) {
                let import = ConfigImport::parse_entry(entry, refresh).map_err(|expected| {
                    Error::config(
                        variable,
                        &raw,
                        format!(
                            "comma-separated [optional:]data_id[?group=G&refresh=true|false]; entry {:?} needs {expected}",
                            entry.trim()
                        ),
                    )
                })?;
                imports.imports.push(import);
            }
        }
        if let Some(raw) = get("NACOS_CONFIG_FILE_EXTENSION") {
            imports.file_extension = ConfigFormat::named(raw.trim()).ok_or_else(|| {
                Error::config(
                    "NACOS_CONFIG_FILE_EXTENSION",
                    &raw,
                    "properties, yaml, yml, json, toml or text",
                )
            })?;
        }
        if let Some(raw) = get("NACOS_CONFIG_REFRESH_ENABLED") {
            imports.refresh_enabled = match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(Error::config(
                        "NACOS_CONFIG_REFRESH_ENABLED",
                        &raw,
                        "true or false",
                    ));
                }
            };
        }
        if let Some(raw) = get("NACOS_CONFIG_TIMEOUT") {
            imports.timeout = humantime::parse_duration(raw.trim()).map_err(|_| {
                Error::config(
                    "NACOS_CONFIG_TIMEOUT",
                    &raw,
                    "a duration such as 10s or 500ms",
                )
            })?;
        }
        Ok(imports)
    }

    /// Adds `import` after the others (it wins over them).
    #[must_use]
    pub fn with(mut self, import: ConfigImport) -> Self {
        self.imports.push(import);
        self
    }

    /// The format of data ids without an extension published without a type.
    #[must_use]
    pub fn file_extension(mut self, format: ConfigFormat) -> Self {
        self.file_extension = format;
        self
    }

    /// `false`: every config is read once, none followed.
    #[must_use]
    pub fn refresh_enabled(mut self, enabled: bool) -> Self {
        self.refresh_enabled = enabled;
        self
    }

    /// How long the load waits for each config's first answer.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configs, lowest precedence first.
    pub fn imports(&self) -> &[ConfigImport] {
        &self.imports
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.imports.is_empty()
    }

    /// The format `item` is read in: its data id's extension, else the type it was
    /// published with (unless `text`, what servers store when none is named), else
    /// [`file_extension`](Self::file_extension).
    fn format_of(&self, item: &ConfigItem) -> ConfigFormat {
        let by_extension = item
            .key
            .data_id
            .rsplit_once('.')
            .and_then(|(_, ext)| ConfigFormat::named(ext));
        let by_type = item
            .content_type
            .as_deref()
            .and_then(ConfigFormat::named)
            .filter(|f| *f != ConfigFormat::Text);
        by_extension.or(by_type).unwrap_or(self.file_extension)
    }

    /// `item`'s content as a tree (empty without content, or for text).
    fn tree_of(&self, item: &ConfigItem) -> Result<Node> {
        let Some(content) = item.content.as_deref() else {
            return Ok(Node::empty());
        };
        let format = self.format_of(item);
        let failed = |message: String| Error::ConfigParse {
            data_id: item.key.data_id.clone(),
            format: format.name(),
            message: without_values(&message),
        };
        match format {
            ConfigFormat::Json => Node::from_json_str(content).map_err(|e| failed(e.to_string())),
            ConfigFormat::Text => Ok(Node::empty()),
            #[cfg(feature = "yaml")]
            ConfigFormat::Yaml => Node::from_yaml_str(content).map_err(|e| failed(e.to_string())),
            #[cfg(feature = "toml")]
            ConfigFormat::Toml => Node::from_toml_str(content).map_err(|e| failed(e.to_string())),
            #[cfg(feature = "properties")]
            ConfigFormat::Properties => {
                Node::from_properties_str(content).map_err(|e| failed(e.to_string()))
            }
            #[allow(unreachable_patterns)]
            other => Err(failed(format!(
                "reading {} needs nacos-core's feature `{}`",
                other.name(),
                other.name().to_ascii_lowercase()
            ))),
        }
    }

    /// The data ids, in order, for messages.
    pub(super) fn data_ids(&self) -> String {
        self.imports
            .iter()
            .map(|i| i.data_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The app's settings read from its imported configs: the merged value now, and a new one
/// each time a followed config changes. Cheap to clone; the configs are followed while any
/// clone lives.
///
/// A change that does not read (bad content, or a merged value that no longer binds, e.g.
/// a required key deleted) keeps the last good value: a WARN line,
/// `nacos_client_config_rejected_total` and [`last_error`](Self::last_error) say why.
pub struct ImportedConfig<T> {
    rx: watch::Receiver<Arc<T>>,
    pub(super) shared: Arc<Shared>,
}

/// What the clones and the follow task share.
pub(super) struct Shared {
    pub(super) imports: ConfigImports,
    /// The item of each import behind the current value (`None`: the config does not
    /// exist).
    items: Mutex<Vec<Option<Arc<ConfigItem>>>>,
    /// The merged tree behind the current value.
    pub(super) merged: Mutex<Arc<Node>>,
    last_error: Mutex<Option<Error>>,
}

impl<T> Clone for ImportedConfig<T> {
    fn clone(&self) -> Self {
        ImportedConfig {
            rx: self.rx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for ImportedConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedConfig")
            .field("imports", &self.shared.imports.imports)
            .finish_non_exhaustive()
    }
}

impl<T> ImportedConfig<T> {
    /// The current value.
    pub fn current(&self) -> Arc<T> {
        self.rx.borrow().clone()
    }

    /// Waits for the next value.
    ///
    /// # Errors
    /// Once no followed config is left (none has `refresh`, or refresh is disabled): there
    /// will be no next value.
    pub async fn changed(&mut self) -> std::result::Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// A receiver of the value, for `tokio::select!`, `axum` state and the like.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.rx.clone()
    }

    /// Why the latest change was not taken, while the last good value is kept; `None` once
    /// a change reads again.
    pub fn last_error(&self) -> Option<Error> {
        lock(&self.shared.last_error).clone()
    }

    /// Each import with the item the current value was read from (`None`: the config does
    /// not exist), lowest precedence first: data id, md5, whether it came from the local
    /// snapshot.
    pub fn items(&self) -> Vec<(ConfigImport, Option<Arc<ConfigItem>>)> {
        self.shared
            .imports
            .imports
            .iter()
            .cloned()
            .zip(lock(&self.shared.items).iter().cloned())
            .collect()
    }
}

impl ConfigService {
    /// Loads the configs of the environment's imports (`NACOS_CONFIG_IMPORT`,
    /// `NACOS_CONFIG_SHARED_CONFIGS`, `NACOS_CONFIG_EXTENSION_CONFIGS`; see
    /// [`ConfigImports`]) into one `T`, and follows them: [`import`](Self::import) with
    /// [`ConfigImports::from_env`].
    ///
    /// # Errors
    /// As [`import`](Self::import), and [`Error::Config`] for a malformed variable.
    pub async fn import_from_env<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Result<ImportedConfig<T>> {
        self.import(ConfigImports::from_env()?).await
    }

    /// Reads every config of `imports` (each waited for up to its timeout; while Nacos does
    /// not answer, its local snapshot), merges them in order, later ones winning key by key,
    /// and binds the result to `T` much as Spring binds its environment: dotted keys are
    /// paths, names are relaxed (`max-items`, `maxItems`, `MAX_ITEMS` fill `max_items`;
    /// enum values in any case; map keys as written), values are read as the numbers, bools
    /// and enums the fields want, comma-separated values as lists. Values reach
    /// `#[serde(flatten)]` fields and untagged or internally tagged enums as strings with
    /// their names as written (serde buffers them), so numbers and other spellings there do
    /// not bind. Then follows the configs with `refresh`: each change makes a new
    /// value.
    ///
    /// # Errors
    /// - [`Error::Missing`] when `imports` is empty (nothing says what to load);
    /// - [`Error::ConfigMissing`] naming a config without `optional` that does not exist;
    /// - [`Error::ConfigUnavailable`] naming a config with no answer from Nacos and no
    ///   snapshot within the timeout, and why (a refusal, no connection);
    /// - [`Error::ConfigParse`] naming a config whose content does not read in its format;
    /// - [`Error::ConfigBind`] when the merged value does not read as `T` (naming the
    ///   key, never its value).
    pub async fn import<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        imports: ConfigImports,
    ) -> Result<ImportedConfig<T>> {
        let Loaded {
            watches,
            items,
            trees,
        } = self.load(&imports).await?;
        let merged = merge(trees.iter().cloned());
        let value: T = bind(&imports, merged.clone())?;
        let (tx, rx) = watch::channel(Arc::new(value));
        let followed: Vec<(usize, ConfigWatch)> = watches
            .into_iter()
            .enumerate()
            .filter(|(i, _)| imports.refresh_enabled && imports.imports[*i].refresh)
            .collect();
        let shared = Arc::new(Shared {
            imports,
            items: Mutex::new(items),
            merged: Mutex::new(Arc::new(merged)),
            last_error: Mutex::new(None),
        });
        if !followed.is_empty() {
            self.inner
                .runtime
                .spawn(follow(followed, trees, tx, shared.clone()));
        }
        Ok(ImportedConfig { rx, shared })
    }

    /// Reads every config of `imports` once (see [`import`](Self::import)).
    pub(super) async fn load(&self, imports: &ConfigImports) -> Result<Loaded> {
        if imports.is_empty() {
            return Err(Error::Missing {
                variable: "NACOS_CONFIG_IMPORT",
                expected: "the configs to load, e.g. NACOS_CONFIG_IMPORT=orders.yaml,optional:orders-local.yaml".into(),
            });
        }
        let watches: Vec<ConfigWatch> = imports
            .imports
            .iter()
            .map(|import| {
                let group = import
                    .group_name
                    .clone()
                    .unwrap_or_else(|| self.inner.group_name.clone());
                self.watch_in(&group, &import.data_id)
            })
            .collect();
        // All are being read at once; each waits for what is left of one deadline.
        let deadline = tokio::time::Instant::now() + imports.timeout;
        let mut items = Vec::with_capacity(watches.len());
        let mut trees = Vec::with_capacity(watches.len());
        for (import, watch) in imports.imports.iter().zip(&watches) {
            let mut watch = watch.clone();
            let item = match tokio::time::timeout_at(deadline, watch.ready()).await {
                Ok(item) => item,
                Err(_) => {
                    return Err(Error::ConfigUnavailable {
                        data_id: import.data_id.clone(),
                        group_name: watch.key().group_name.clone(),
                        after: imports.timeout,
                        reason: watch.last_error().map_or_else(
                            || "no answer yet".to_owned(),
                            |e| crate::error::Chain(&e).to_string(),
                        ),
                    });
                }
            };
            if item.content.is_none() && !import.optional {
                return Err(Error::ConfigMissing {
                    data_id: import.data_id.clone(),
                    group_name: item.key.group_name.clone(),
                    namespace_id: item.key.namespace_id.clone(),
                });
            }
            if item.content.is_some() && imports.format_of(&item) == ConfigFormat::Text {
                tracing::warn!(config = %item.key,
                    "imported nacos config is text: it has no keys to bind (give its data id an extension, publish it with a type, or set NACOS_CONFIG_FILE_EXTENSION)");
            }
            trees.push(imports.tree_of(&item)?);
            items.push(Some(item).filter(|i| i.content.is_some()));
        }
        for (import, item) in imports.imports.iter().zip(&items) {
            match item {
                Some(item) => tracing::info!(config = %item.key, md5 = %item.md5,
                    from_snapshot = item.from_snapshot, refresh = import.refresh && imports.refresh_enabled,
                    "nacos config imported"),
                None => tracing::info!(data_id = %import.data_id,
                    "optional nacos config does not exist: imported as empty"),
            }
        }
        Ok(Loaded {
            watches,
            items,
            trees,
        })
    }
}

/// The configs of an import as first read.
pub(super) struct Loaded {
    /// One watch per import, in order.
    watches: Vec<ConfigWatch>,
    /// The item of each (`None`: it does not exist).
    items: Vec<Option<Arc<ConfigItem>>>,
    /// The content of each as a tree.
    pub(super) trees: Vec<Node>,
}

/// `trees` merged in order, later ones winning.
pub(super) fn merge(trees: impl Iterator<Item = Node>) -> Node {
    let mut merged = Node::empty();
    for tree in trees {
        merged.merge_config(tree);
    }
    merged
}

/// Binds `merged`, the merged configs of `imports`.
fn bind<T: DeserializeOwned>(imports: &ConfigImports, merged: Node) -> Result<T> {
    merged.bind().map_err(|e| Error::ConfigBind {
        data_ids: imports.data_ids(),
        message: without_values(&e.to_string()),
    })
}

/// Makes a new value each time a followed config changes, until no receiver is left;
/// holds the watches (and so the listens) meanwhile.
async fn follow<T: DeserializeOwned + Send + Sync + 'static>(
    followed: Vec<(usize, ConfigWatch)>,
    mut trees: Vec<Node>,
    tx: watch::Sender<Arc<T>>,
    shared: Arc<Shared>,
) {
    let mut changes = StreamMap::new();
    for (i, watch) in &followed {
        changes.insert(*i, WatchStream::from_changes(watch.subscribe()));
    }
    // The md5 whose failure was last logged, so that a bad content is logged once.
    let mut logged: Option<String> = None;
    loop {
        let (i, item) = tokio::select! {
            () = tx.closed() => return,
            next = changes.next() => match next {
                Some((i, Some(item))) => (i, item),
                Some((_, None)) => continue,
                None => return,
            },
        };
        // The item the value already has (the watch's first item, seen again here).
        let unchanged = match &lock(&shared.items)[i] {
            Some(had) => {
                had.md5 == item.md5
                    && had.from_snapshot == item.from_snapshot
                    && had.from_failover == item.from_failover
            }
            None => item.content.is_none(),
        };
        if unchanged && lock(&shared.last_error).is_none() {
            continue;
        }
        let outcome = shared.imports.tree_of(&item).and_then(|tree| {
            let mut candidate = trees.clone();
            candidate[i] = tree;
            let merged = merge(candidate.iter().cloned());
            let value: T = bind(&shared.imports, merged.clone())?;
            Ok((candidate, merged, value))
        });
        match outcome {
            Ok((candidate, merged, value)) => {
                trees = candidate;
                *lock(&shared.merged) = Arc::new(merged);
                lock(&shared.items)[i] = Some(item.clone()).filter(|i| i.content.is_some());
                *lock(&shared.last_error) = None;
                logged = None;
                tracing::info!(config = %item.key, md5 = %item.md5, "nacos config import reloaded");
                tx.send_replace(Arc::new(value));
            }
            Err(e) => {
                let fingerprint = format!("{}:{}", item.key, item.md5);
                if logged.as_deref() != Some(fingerprint.as_str()) {
                    tracing::warn!(config = %item.key, md5 = %item.md5, error = %e,
                        "nacos config change does not read: keeping the last good value");
                    logged = Some(fingerprint);
                }
                crate::metrics::config_rejected();
                *lock(&shared.last_error) = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigKey;

    fn env(vars: &[(&str, &str)]) -> Result<ConfigImports> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ConfigImports::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn entries_read_as_spring_cloud_alibaba_writes_them() {
        let imports = env(&[
            (
                "NACOS_CONFIG_IMPORT",
                "orders.yaml, optional:nacos:orders-local.yaml?group=DEV&refreshEnabled=false",
            ),
            (
                "NACOS_CONFIG_SHARED_CONFIGS",
                "common.properties?refresh=true",
            ),
            ("NACOS_CONFIG_EXTENSION_CONFIGS", "db.json"),
        ])
        .unwrap();
        let got: Vec<String> = imports.imports().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "common.properties",
                "db.json?refresh=false",
                "orders.yaml",
                "optional:orders-local.yaml?group=DEV&refresh=false",
            ]
        );
        assert_eq!(imports.timeout, DEFAULT_IMPORT_TIMEOUT);
        assert!(imports.refresh_enabled);
    }

    #[test]
    fn a_malformed_variable_names_itself_and_the_entry() {
        for (variable, value, says) in [
            ("NACOS_CONFIG_IMPORT", "a.yaml,b yaml", "\"b yaml\""),
            ("NACOS_CONFIG_IMPORT", "a.yaml?group=", "group name"),
            (
                "NACOS_CONFIG_SHARED_CONFIGS",
                "a.yaml?refresh=maybe",
                "true or false",
            ),
            ("NACOS_CONFIG_IMPORT", "a.yaml?grup=X", "grup"),
            ("NACOS_CONFIG_IMPORT", "optional:", "a data id"),
            ("NACOS_CONFIG_FILE_EXTENSION", "xml", "properties, yaml"),
            ("NACOS_CONFIG_TIMEOUT", "soon", "duration"),
            ("NACOS_CONFIG_REFRESH_ENABLED", "maybe", "true or false"),
        ] {
            let e = env(&[(variable, value)]).unwrap_err().to_string();
            assert!(e.contains(variable) && e.contains(says), "{e}");
        }
    }

    fn item(data_id: &str, content_type: Option<&str>, content: Option<&str>) -> ConfigItem {
        ConfigItem {
            key: ConfigKey {
                namespace_id: "public".into(),
                group_name: "DEFAULT_GROUP".into(),
                data_id: data_id.into(),
            },
            content: content.map(str::to_owned),
            md5: String::new(),
            content_type: content_type.map(str::to_owned),
            last_modified: None,
            from_snapshot: false,
            from_failover: false,
        }
    }

    #[test]
    fn the_format_is_the_extension_then_the_type_then_the_file_extension() {
        let imports = ConfigImports::new().file_extension(ConfigFormat::Yaml);
        assert_eq!(
            imports.format_of(&item("a.json", Some("yaml"), None)),
            ConfigFormat::Json
        );
        assert_eq!(
            imports.format_of(&item("a", Some("json"), None)),
            ConfigFormat::Json
        );
        assert_eq!(
            imports.format_of(&item("a", Some("text"), None)),
            ConfigFormat::Yaml
        );
        assert_eq!(
            imports.format_of(&item("a.v2", None, None)),
            ConfigFormat::Yaml
        );
        assert_eq!(
            imports.format_of(&item("a.txt", None, None)),
            ConfigFormat::Text
        );
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Db {
        url: String,
        pool: u32,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Settings {
        db: Db,
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn later_configs_win_key_by_key_whatever_their_formats() {
        let imports = ConfigImports::new()
            .with(ConfigImport::new("common.json"))
            .with(ConfigImport::new("app.json"))
            .with(ConfigImport::new("empty.json").optional());
        let trees = [
            item(
                "common.json",
                None,
                Some(r#"{"db":{"url":"u1","pool":2},"name":"common","tags":["a","b"]}"#),
            ),
            item(
                "app.json",
                None,
                Some(r#"{"db":{"pool":"8"},"tags":"x,y,z"}"#),
            ),
            item("empty.json", None, None),
        ]
        .map(|i| imports.tree_of(&i).unwrap());
        let settings: Settings = bind(&imports, merge(trees.into_iter())).unwrap();
        assert_eq!(
            settings,
            Settings {
                db: Db {
                    url: "u1".into(),
                    pool: 8
                },
                name: "common".into(),
                tags: vec!["x".into(), "y".into(), "z".into()],
            }
        );
    }

    #[test]
    fn a_merged_value_that_does_not_bind_names_the_key_and_the_configs() {
        let imports = ConfigImports::new().with(ConfigImport::new("app.json"));
        let tree = imports
            .tree_of(&item(
                "app.json",
                None,
                Some(r#"{"db":{"url":"u","pool":"s3cret"},"name":"n"}"#),
            ))
            .unwrap();
        let e = bind::<Settings>(&imports, tree).unwrap_err().to_string();
        assert!(e.contains("app.json") && e.contains("db.pool"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
