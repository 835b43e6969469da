//! The imported configs as one more source of the `config` crate (feature `config`) or of
//! figment (feature `figment`), for apps that already assemble their settings with one of
//! them. The values are the configs' merged keys ([`ConfigService::import`]'s order and
//! formats), every value a string: both crates read strings as the numbers and bools a
//! field wants (`config` always, figment with `Figment::extract_lossy`), as they do for
//! environment variables.

#[cfg(feature = "config")]
pub use self::config_crate::NacosSource;
#[cfg(feature = "figment")]
pub use self::figment_crate::NacosProvider;

#[cfg(feature = "config")]
mod config_crate {
    use ::config::{AsyncSource, ConfigError, Map, Value, ValueKind};

    use crate::config::imports::merge;
    use crate::config::tree::Node;
    use crate::{ConfigImports, ConfigService, Result};

    /// Nacos configs as a `config::AsyncSource`: each `build().await` reads them (as
    /// [`ConfigService::import`] does, its errors included) and gives their merged keys.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(serde::Deserialize)]
    /// struct Settings {
    ///     max_items: u32,
    /// }
    /// let settings: Settings = config::Config::builder()
    ///     .add_source(config::File::with_name("settings.toml").required(false))
    ///     .add_async_source(nacos_core::NacosSource::from_env()?) // NACOS_CONFIG_IMPORT, ...
    ///     .build()
    ///     .await?
    ///     .try_deserialize()?;
    /// # Ok(()) }
    /// ```
    #[derive(Clone, Debug)]
    pub struct NacosSource {
        service: ConfigService,
        imports: ConfigImports,
    }

    impl NacosSource {
        /// The configs `imports` names, read through `service`.
        pub fn new(service: ConfigService, imports: ConfigImports) -> Self {
            NacosSource { service, imports }
        }

        /// The environment's configs (`NACOS_CONFIG_IMPORT` and the like) through the
        /// environment's Nacos ([`ConfigService::from_env`]).
        ///
        /// # Errors
        /// A malformed variable ([`crate::Error::Config`]), or as
        /// [`ConfigService::from_env`].
        pub fn from_env() -> Result<Self> {
            Ok(NacosSource::new(
                ConfigService::from_env()?,
                ConfigImports::from_env()?,
            ))
        }
    }

    #[async_trait::async_trait]
    impl AsyncSource for NacosSource {
        async fn collect(&self) -> std::result::Result<Map<String, Value>, ConfigError> {
            let loaded = self
                .service
                .load(&self.imports)
                .await
                .map_err(|e| ConfigError::Foreign(Box::new(e)))?;
            let origin = format!("nacos:{}", self.imports.data_ids());
            Ok(match value(merge(loaded.trees.into_iter()), &origin).kind {
                ValueKind::Table(table) => table,
                _ => Map::new(),
            })
        }
    }

    fn value(node: Node, origin: &String) -> Value {
        let kind = match node {
            Node::Leaf(s) => ValueKind::String(s),
            Node::Map(map) => ValueKind::Table(
                map.into_iter()
                    .map(|(k, v)| (k, value(v, origin)))
                    .collect(),
            ),
            Node::List(list) => {
                ValueKind::Array(list.into_values().map(|v| value(v, origin)).collect())
            }
        };
        Value::new(Some(origin), kind)
    }
}

#[cfg(feature = "figment")]
mod figment_crate {
    use figment::value::{Dict, Map, Value};
    use figment::{Metadata, Profile, Provider};
    use serde::de::IgnoredAny;

    use crate::config::tree::Node;
    use crate::{ConfigImports, ConfigService, ImportedConfig, Result};

    /// Nacos configs as a `figment::Provider`: their merged keys as they are now (followed
    /// like [`ConfigService::import`]'s: extract again after
    /// [`changed`](Self::changed)). Values are strings: extract with
    /// `Figment::extract_lossy` to read numbers and bools from them.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(serde::Deserialize)]
    /// struct Settings {
    ///     max_items: u32,
    /// }
    /// let nacos = nacos_core::NacosProvider::from_env().await?; // NACOS_CONFIG_IMPORT, ...
    /// let settings: Settings = figment::Figment::new().merge(&nacos).extract_lossy()?;
    /// # Ok(()) }
    /// ```
    #[derive(Clone, Debug)]
    pub struct NacosProvider {
        imported: ImportedConfig<IgnoredAny>,
    }

    impl NacosProvider {
        /// Reads the configs `imports` names through `service` and follows them.
        ///
        /// # Errors
        /// As [`ConfigService::import`].
        pub async fn load(service: &ConfigService, imports: ConfigImports) -> Result<Self> {
            Ok(NacosProvider {
                imported: service.import(imports).await?,
            })
        }

        /// The environment's configs (`NACOS_CONFIG_IMPORT` and the like) through the
        /// environment's Nacos.
        ///
        /// # Errors
        /// A malformed variable, or as [`ConfigService::import`].
        pub async fn from_env() -> Result<Self> {
            NacosProvider::load(&ConfigService::from_env()?, ConfigImports::from_env()?).await
        }

        /// Waits until a followed config changed (then extract again).
        ///
        /// # Errors
        /// Once nothing is followed.
        pub async fn changed(
            &mut self,
        ) -> std::result::Result<(), tokio::sync::watch::error::RecvError> {
            self.imported.changed().await
        }

        /// Each config with the item the keys come from (`None`: it does not exist): md5,
        /// whether from the snapshot ([`ImportedConfig::items`]).
        pub fn items(
            &self,
        ) -> Vec<(
            crate::ConfigImport,
            Option<std::sync::Arc<crate::ConfigItem>>,
        )> {
            self.imported.items()
        }

        /// Why the latest change was not taken ([`ImportedConfig::last_error`]).
        pub fn last_error(&self) -> Option<crate::Error> {
            self.imported.last_error()
        }
    }

    impl Provider for NacosProvider {
        fn metadata(&self) -> Metadata {
            Metadata::named("Nacos configs")
                .source(format!("nacos:{}", self.imported.shared.imports.data_ids()))
        }

        fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
            let merged = crate::remote::lock(&self.imported.shared.merged).clone();
            let dict = match value(&merged) {
                Value::Dict(_, dict) => dict,
                _ => Dict::new(),
            };
            Ok(Profile::Default.collect(dict))
        }
    }

    fn value(node: &Node) -> Value {
        match node {
            Node::Leaf(s) => Value::from(s.clone()),
            Node::Map(map) => Value::from(
                map.iter()
                    .map(|(k, v)| (k.clone(), value(v)))
                    .collect::<Dict>(),
            ),
            Node::List(list) => Value::from(list.values().map(value).collect::<Vec<Value>>()),
        }
    }
}
