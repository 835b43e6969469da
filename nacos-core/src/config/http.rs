//! The configuration center over HTTP, when the client has no gRPC connection
//! (`NACOS_API=v1`/`v3`, or `auto` found no gRPC port: a load balancer that passes the HTTP
//! port only).
//!
//! - **v1** (r-nacos, the official servers up to 3.1, and 3.2+ with the legacy adapter):
//!   `GET /v1/cs/configs` reads a config (404: none); long polling on
//!   `POST /v1/cs/configs/listener` with `Listening-Configs` (`dataId^2group^2md5[^2tenant]^1`
//!   per config) and `Long-Pulling-Timeout`: the server answers at once with the configs
//!   whose md5 differs, else holds the request up to the timeout and answers when one
//!   changes (the Nacos 1.x clients' way); publish and remove on `/v1/cs/configs`.
//! - **v3** (3.2+, which dropped v1): `GET /v3/client/cs/config` reads a config; v3 has no
//!   listening, so listened configs are read again every [`CONFIG_V3_POLL`].
//!
//! Which one a server speaks: `NACOS_API` when it names one, else a first listen without a
//! timeout (answered at once) on v1, and v3 when v1 is not found.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Method;

use super::messages::Changed;
use super::{Center, ConfigItem, ConfigKey, md5_hex};
use crate::client::{CONFIG_V3, CONFIGS_LISTENER_V1, CONFIGS_V1, ConfigHttp, HttpAnswer};
use crate::error::{Error, Result, excerpt};
use crate::remote::lock;
use crate::settings::ApiVersion;

/// How long the server holds a long poll over HTTP v1 (the Java 1.x client's default,
/// 30 s); a change ends it at once.
pub const CONFIG_LONG_POLL: Duration = Duration::from_secs(30);

/// How often watched configs are read again over HTTP v3 (Nacos 3.2+ without gRPC), which
/// has no listening: 10 s.
pub const CONFIG_V3_POLL: Duration = Duration::from_secs(10);

/// The longest wait before a failed round over HTTP is tried again (the Java 1.x client
/// waits 2 s after a failed long poll).
pub(super) const HTTP_RETRY_MAX: Duration = Duration::from_secs(2);

/// The separators of `Listening-Configs` and of the long poll's answer.
const WORD: char = '\u{2}';
const LINE: char = '\u{1}';

/// The v3 code of a config that does not exist.
const V3_NOT_FOUND: i64 = 20004;

impl Center {
    /// The HTTP API of the configuration center: `NACOS_API` when it names one, else found
    /// out once by a listen answered at once.
    pub(super) async fn http_api(&self) -> Result<ApiVersion> {
        match self.client.http_mode() {
            ApiVersion::V1 => return Ok(ApiVersion::V1),
            ApiVersion::V3 => return Ok(ApiVersion::V3),
            _ => {}
        }
        if let Some(api) = *lock(&self.http_api) {
            return Ok(api);
        }
        let answer = self.long_poll_request(&[], None).await?;
        let api = match answer.status {
            // 400 (the official servers) or 204 (r-nacos): what a listen of no config gets.
            200..=299 | 400 | 403 => ApiVersion::V1,
            404 | 405 | 410 => ApiVersion::V3,
            // A proxy's 5xx while Nacos starts, ...: found out at the next round.
            _ => return Err(status_error(answer)),
        };
        tracing::info!(
            api = if api == ApiVersion::V1 {
                "v1 (long polling)"
            } else {
                "v3 (polling)"
            },
            "nacos config over HTTP (no gRPC connection)"
        );
        *lock(&self.http_api) = Some(api);
        Ok(api)
    }

    /// A `POST /v1/cs/configs/listener` of `configs` (key and md5); held by the server up to
    /// `hold` (none: answered at once).
    async fn long_poll_request(
        &self,
        configs: &[(Arc<ConfigKey>, String)],
        hold: Option<Duration>,
    ) -> Result<HttpAnswer> {
        let mut listening = String::new();
        for (key, md5) in configs {
            listening.push_str(&key.data_id);
            listening.push(WORD);
            listening.push_str(&key.group_name);
            listening.push(WORD);
            listening.push_str(md5);
            if !key.tenant().is_empty() {
                listening.push(WORD);
                listening.push_str(key.tenant());
            }
            listening.push(LINE);
        }
        let mut headers = Vec::new();
        let timeout = match hold {
            Some(hold) => {
                headers.push(("Long-Pulling-Timeout", hold.as_millis().to_string()));
                // The Java client waits half as long again as the server holds.
                hold + hold / 2
            }
            None => self.client.request_timeout(),
        };
        self.client
            .config_http(&ConfigHttp {
                method: Method::POST,
                path: CONFIGS_LISTENER_V1,
                query: Vec::new(),
                form: Some(vec![("Listening-Configs", listening.as_str())]),
                headers,
                timeout,
            })
            .await
    }

    /// One round over HTTP: (v3) every listened config when its poll is due, the pending
    /// queries, then (v1) a long poll of every listened config, whose changed configs
    /// become pending, or (v3) a wait until the next poll. Ends early when woken (a new
    /// watch). A failed query does not hold the others up: over v1 a listen answered at
    /// once still finds their changes, and the round fails (tried again within 2 s).
    pub(super) async fn http_round(&self) -> Result<()> {
        let api = self.http_api().await?;
        // Nothing to tell a server when a config is no longer listened to over HTTP; over
        // gRPC later, every config is listened to again.
        lock(&self.dropped).clear();
        lock(&self.listens)
            .values_mut()
            .for_each(|l| l.listened = false);
        let now = tokio::time::Instant::now();
        if api != ApiVersion::V1 {
            let mut next = lock(&self.http_next_poll);
            if next.is_none_or(|at| at <= now) {
                *next = Some(now + CONFIG_V3_POLL);
                let keys: Vec<Arc<ConfigKey>> = lock(&self.listens).keys().cloned().collect();
                lock(&self.pending).extend(keys);
            }
        }
        let pending: Vec<Arc<ConfigKey>> = std::mem::take(&mut *lock(&self.pending))
            .into_iter()
            .collect();
        let mut failed = None;
        for key in pending {
            if !lock(&self.listens).contains_key(&key) {
                continue;
            }
            match self.http_query(api, &key).await {
                Ok(item) => self.deliver(item),
                Err(e) => {
                    tracing::debug!(config = %key, error = %crate::error::Chain(&e), "nacos config query failed");
                    if let Some(listen) = lock(&self.listens).get_mut(&key) {
                        listen.error = Some(Box::new(e.clone()));
                    }
                    lock(&self.pending).insert(key);
                    failed.get_or_insert(e);
                }
            }
        }
        let listened: Vec<(Arc<ConfigKey>, String)> = lock(&self.listens)
            .iter()
            .map(|(k, l)| (k.clone(), l.md5.clone()))
            .collect();
        if listened.is_empty() {
            return failed.map_or(Ok(()), Err);
        }
        if api != ApiVersion::V1 {
            if let Some(e) = failed {
                return Err(e);
            }
            let until = lock(&self.http_next_poll).unwrap_or(now);
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = self.wake.notified() => {}
            }
            self.wake();
            return Ok(());
        }
        if let Some(e) = failed {
            // The others' changes, at once; the failed ones are tried again within 2 s.
            if let Ok(answer) = self.long_poll_request(&listened, None).await {
                if (200..300).contains(&answer.status) {
                    let changed = self.changed_in(&answer.body);
                    lock(&self.pending).extend(changed);
                }
            }
            return Err(e);
        }
        // A server whose md5 differs from the content it serves (a node still syncing)
        // answers every long poll at once: at most one such answer a second.
        let earliest = *lock(&self.http_next_poll);
        let woken = self.wake.notified();
        tokio::pin!(woken);
        if let Some(at) = earliest.filter(|at| *at > now) {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = &mut woken => {
                    self.wake();
                    return Ok(());
                }
            }
        }
        let started = tokio::time::Instant::now();
        let changed = tokio::select! {
            answer = self.long_poll_request(&listened, Some(CONFIG_LONG_POLL)) => {
                let answer = answer?;
                if !(200..300).contains(&answer.status) {
                    return Err(status_error(answer));
                }
                self.changed_in(&answer.body)
            }
            () = &mut woken => Vec::new(),
        };
        *lock(&self.http_next_poll) =
            (!changed.is_empty()).then(|| started + Duration::from_secs(1));
        lock(&self.pending).extend(changed);
        // Round again at once: the queries, then the next poll.
        self.wake();
        Ok(())
    }

    /// The listened configs a long poll's answer names (URL-encoded
    /// `dataId^2group[^2tenant]^1` lines).
    fn changed_in(&self, body: &str) -> Vec<Arc<ConfigKey>> {
        let decoded: String = url::form_urlencoded::parse(format!("x={}", body.trim()).as_bytes())
            .map(|(_, v)| v.into_owned())
            .next()
            .unwrap_or_default();
        let listens = lock(&self.listens);
        decoded
            .split(LINE)
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let mut words = line.split(WORD);
                let changed = Changed {
                    data_id: words.next()?.to_owned(),
                    group: words.next()?.to_owned(),
                    tenant: words.next().map(str::to_owned),
                };
                self.known(&listens, &changed)
            })
            .collect()
    }

    /// Reads `key` once over `api`.
    pub(super) async fn http_query(&self, api: ApiVersion, key: &ConfigKey) -> Result<ConfigItem> {
        let missing = || ConfigItem {
            key: key.clone(),
            content: None,
            md5: String::new(),
            content_type: None,
            last_modified: None,
            from_snapshot: false,
            from_failover: false,
        };
        if api == ApiVersion::V1 {
            let mut query = vec![
                ("dataId", key.data_id.as_str()),
                ("group", key.group_name.as_str()),
            ];
            if !key.tenant().is_empty() {
                query.push(("tenant", key.tenant()));
            }
            let answer = self
                .client
                .config_http(&ConfigHttp {
                    method: Method::GET,
                    path: CONFIGS_V1,
                    query,
                    form: None,
                    headers: Vec::new(),
                    timeout: self.client.request_timeout(),
                })
                .await?;
            return match answer.status {
                200 if !answer.body.is_empty() => {
                    let header = |name: &str| {
                        answer
                            .headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                            .filter(|v| !v.is_empty())
                    };
                    Ok(ConfigItem {
                        key: key.clone(),
                        // The server's md5 (of the content as stored: for an encrypted
                        // config, not of what v1 answers), which the long poll compares.
                        md5: header("Content-MD5").unwrap_or_else(|| md5_hex(&answer.body)),
                        content_type: header("Config-Type"),
                        last_modified: None,
                        from_snapshot: false,
                        from_failover: false,
                        content: Some(answer.body),
                    })
                }
                200 => Ok(missing()),
                404 if answer.body.contains("config data not exist") => Ok(missing()),
                _ => Err(status_error(answer)),
            };
        }
        let answer = self
            .client
            .config_http(&ConfigHttp {
                method: Method::GET,
                path: CONFIG_V3,
                query: vec![
                    ("namespaceId", key.namespace_id.as_str()),
                    ("groupName", key.group_name.as_str()),
                    ("dataId", key.data_id.as_str()),
                ],
                form: None,
                headers: Vec::new(),
                timeout: self.client.request_timeout(),
            })
            .await?;
        #[derive(serde::Deserialize)]
        struct Envelope {
            code: i64,
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            data: Option<V3Config>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct V3Config {
            #[serde(default)]
            content: Option<String>,
            #[serde(default)]
            md5: Option<String>,
            #[serde(default)]
            content_type: Option<String>,
            #[serde(default)]
            last_modified: Option<i64>,
        }
        let Ok(envelope) = serde_json::from_str::<Envelope>(&answer.body) else {
            return Err(if answer.status == 200 {
                status_error_hiding_body(answer)
            } else {
                status_error(answer)
            });
        };
        match (envelope.code, envelope.data) {
            (0, Some(data)) => {
                let content = data.content.filter(|c| !c.is_empty());
                let Some(content) = content else {
                    return Ok(missing());
                };
                Ok(ConfigItem {
                    key: key.clone(),
                    md5: data
                        .md5
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| md5_hex(&content)),
                    content_type: data.content_type.filter(|t| !t.is_empty()),
                    last_modified: data
                        .last_modified
                        .and_then(|ms| u64::try_from(ms).ok())
                        .and_then(|ms| {
                            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
                        }),
                    from_snapshot: false,
                    from_failover: false,
                    content: Some(content),
                })
            }
            (V3_NOT_FOUND, _) | (0, None) => Ok(missing()),
            (code, _) => Err(Error::Refused {
                server: answer.server,
                code,
                message: excerpt(envelope.message.as_deref().unwrap_or("")),
            }),
        }
    }

    /// Publishes over v1 (`POST /v1/cs/configs`, also with `NACOS_API=v3`: v3 has no
    /// client API to publish).
    pub(super) async fn http_publish(
        &self,
        key: &ConfigKey,
        content: &str,
        content_type: Option<&str>,
        cas_md5: Option<&str>,
    ) -> Result<()> {
        let mut form = vec![
            ("dataId", key.data_id.as_str()),
            ("group", key.group_name.as_str()),
            ("content", content),
        ];
        if !key.tenant().is_empty() {
            form.push(("tenant", key.tenant()));
        }
        if let Some(content_type) = content_type {
            form.push(("type", content_type));
        }
        let headers = cas_md5
            .filter(|m| !m.is_empty())
            .map(|m| vec![("casMd5", m.to_owned())])
            .unwrap_or_default();
        let answer = self
            .client
            .config_http(&ConfigHttp {
                method: Method::POST,
                path: CONFIGS_V1,
                query: Vec::new(),
                form: Some(form),
                headers,
                timeout: self.client.request_timeout(),
            })
            .await?;
        expect_true(answer)
    }

    /// Removes over v1 (`DELETE /v1/cs/configs`, also with `NACOS_API=v3`).
    pub(super) async fn http_remove(&self, key: &ConfigKey) -> Result<()> {
        let mut query = vec![
            ("dataId", key.data_id.as_str()),
            ("group", key.group_name.as_str()),
        ];
        if !key.tenant().is_empty() {
            query.push(("tenant", key.tenant()));
        }
        let answer = self
            .client
            .config_http(&ConfigHttp {
                method: Method::DELETE,
                path: CONFIGS_V1,
                query,
                form: None,
                headers: Vec::new(),
                timeout: self.client.request_timeout(),
            })
            .await?;
        expect_true(answer)
    }
}

/// A v1 write's answer: `true`.
fn expect_true(answer: HttpAnswer) -> Result<()> {
    match answer.status {
        200 if answer.body.trim() == "true" => Ok(()),
        404 | 405 | 410 => Err(Error::Unsupported(
            "publishing or removing a config over HTTP needs the v1 API, which this server does not have (Nacos 3.2+ does it over gRPC or its admin API)",
        )),
        _ => Err(status_error(answer)),
    }
}

fn status_error(answer: HttpAnswer) -> Error {
    Error::Status {
        server: answer.server,
        status: answer.status,
        body: excerpt(&answer.body),
    }
}

/// An answer to a config read: its body may be the config, so it is not shown.
fn status_error_hiding_body(answer: HttpAnswer) -> Error {
    Error::Status {
        server: answer.server,
        status: answer.status,
        body: format!("({} bytes, not shown)", answer.body.len()),
    }
}
