//! A Nacos the user already runs, named by `NACOS_SERVER_ADDR`: `cargo xtask demo` uses it
//! instead of starting one, and reads the instance list from it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a token from a login is reused for the harness's own requests (the server's
/// default lifetime is 5 hours; a demo lasts seconds).
const TOKEN_REUSE: Duration = Duration::from_secs(60);

/// The first server of `NACOS_SERVER_ADDR`, its context path and the login the app uses.
#[derive(Debug)]
pub struct ExternalNacos {
    /// `http://host:port`.
    base: String,
    /// `/nacos` unless `NACOS_CONTEXT_PATH` says otherwise.
    context: String,
    /// User name and password, from `NACOS_USERNAME`/`NACOS_PASSWORD` (or their
    /// `NACOS_CLIENT_*` aliases).
    login: Option<(String, String)>,
    token: Mutex<Option<(String, Instant)>>,
}

fn var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

impl ExternalNacos {
    /// The server `NACOS_SERVER_ADDR` (or `NACOS_CLIENT_SERVER_ADDRESS`) names first, with
    /// `NACOS_CONTEXT_PATH` and the login variables; `None` when neither is set.
    ///
    /// # Errors
    /// When the first entry is not `host`, `host:port` or `http://host:port` (the harness
    /// speaks plain HTTP only).
    pub fn from_env() -> Option<Result<ExternalNacos, String>> {
        let addr = var(&["NACOS_SERVER_ADDR", "NACOS_CLIENT_SERVER_ADDRESS"])?;
        let context = var(&["NACOS_CONTEXT_PATH"]).unwrap_or_else(|| "/nacos".into());
        let login = var(&["NACOS_USERNAME", "NACOS_CLIENT_USERNAME"]).map(|user| {
            let password = var(&["NACOS_PASSWORD", "NACOS_CLIENT_PASSWORD"]).unwrap_or_default();
            (user, password)
        });
        Some(Self::new(&addr, &context, login))
    }

    /// A server from a `NACOS_SERVER_ADDR` value (its first entry), a context path and an
    /// optional login.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn new(
        addr: &str,
        context: &str,
        login: Option<(String, String)>,
    ) -> Result<ExternalNacos, String> {
        let first = addr.split(',').map(str::trim).find(|a| !a.is_empty());
        let first = first.ok_or_else(|| format!("NACOS_SERVER_ADDR={addr:?} names no server"))?;
        if first.starts_with("https://") {
            return Err(format!(
                "NACOS_SERVER_ADDR={addr:?}: the demo reads the instance list over plain HTTP only"
            ));
        }
        let host_port = first.strip_prefix("http://").unwrap_or(first);
        let host_port = host_port.trim_end_matches('/');
        let has_port = match host_port.rfind(']') {
            Some(end) => host_port[end..].contains(':'),
            None => host_port.contains(':'),
        };
        if host_port.is_empty() || host_port.contains('/') {
            return Err(format!(
                "NACOS_SERVER_ADDR={addr:?}: expected host, host:port or http://host:port"
            ));
        }
        let base = if has_port {
            format!("http://{host_port}")
        } else {
            format!("http://{host_port}:8848")
        };
        let context = format!("/{}", context.trim_matches('/'));
        let context = if context == "/" {
            String::new()
        } else {
            context
        };
        Ok(ExternalNacos {
            base,
            context,
            login,
            token: Mutex::new(None),
        })
    }

    /// `http://host:port` and the context path, for people.
    pub fn url(&self) -> String {
        format!("{}{}", self.base, self.context)
    }

    /// Whether a user name is configured.
    pub fn has_login(&self) -> bool {
        self.login.is_some()
    }

    /// A token from `POST {context}/v1/auth/login` (served by Nacos 1.x to 3.x), reused for
    /// a minute; `None` without a user name.
    fn token(&self) -> Result<Option<String>, String> {
        let Some((user, password)) = &self.login else {
            return Ok(None);
        };
        let mut cached = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, at)) = cached.as_ref() {
            if at.elapsed() < TOKEN_REUSE {
                return Ok(Some(token.clone()));
            }
        }
        let url = format!("{}/v1/auth/login", self.url());
        let (status, body) = crate::send(
            "POST",
            &url,
            &[("username", user.as_str()), ("password", password.as_str())],
        )?;
        if status != 200 {
            return Err(format!(
                "login as {user:?} refused: POST {url}: HTTP {status}: {}",
                body.trim()
            ));
        }
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("POST {url}: not JSON ({e}): {}", body.trim()))?;
        let token = json["accessToken"]
            .as_str()
            .ok_or_else(|| format!("POST {url}: no accessToken in {}", body.trim()))?
            .to_owned();
        *cached = Some((token.clone(), Instant::now()));
        Ok(Some(token))
    }

    /// The instances the server lists for a service, unhealthy ones included: `GET
    /// {context}/v1/ns/instance/list` (`hosts`), or on a server without the v1 API (404,
    /// 410: Nacos 3.2+) `GET {context}/v3/client/ns/instance/list` (`data`).
    ///
    /// # Errors
    /// When the server does not answer, refuses the login or the request, or answers
    /// something else than a list.
    pub fn instances(
        &self,
        namespace: &str,
        group: &str,
        service: &str,
    ) -> Result<Vec<Value>, String> {
        let token = self.token()?;
        let mut params = vec![
            ("namespaceId", namespace),
            ("groupName", group),
            ("serviceName", service),
            ("healthyOnly", "false"),
        ];
        if let Some(token) = &token {
            params.push(("accessToken", token));
        }
        let v1 = format!("{}/v1/ns/instance/list", self.url());
        let (status, body) = crate::send("GET", &v1, &params)?;
        let (url, status, body) = if status == 404 || status == 410 {
            let v3 = format!("{}/v3/client/ns/instance/list", self.url());
            let (status, body) = crate::send("GET", &v3, &params)?;
            (v3, status, body)
        } else {
            (v1, status, body)
        };
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}: {}", body.trim()));
        }
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {url}: not JSON ({e}): {}", body.trim()))?;
        let list = if json["hosts"].is_array() {
            &json["hosts"]
        } else if json["data"].is_array() {
            &json["data"]
        } else {
            &json["data"]["hosts"]
        };
        list.as_array()
            .cloned()
            .ok_or_else(|| format!("GET {url}: no instance list in {}", body.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(addr: &str) -> Result<String, String> {
        ExternalNacos::new(addr, "/nacos", None).map(|n| n.url())
    }

    #[test]
    fn the_first_server_of_the_list_is_used_with_the_default_port() {
        assert_eq!(
            base("nacos-1,nacos-2:8848"),
            Ok("http://nacos-1:8848/nacos".into())
        );
        assert_eq!(
            base(" 10.0.0.5:9848 "),
            Ok("http://10.0.0.5:9848/nacos".into())
        );
        assert_eq!(base("http://nacos:80/"), Ok("http://nacos:80/nacos".into()));
        assert_eq!(base("[::1]"), Ok("http://[::1]:8848/nacos".into()));
        assert_eq!(base("[::1]:8849"), Ok("http://[::1]:8849/nacos".into()));
    }

    #[test]
    fn https_and_nonsense_are_refused() {
        assert!(base("https://nacos:8848").is_err());
        assert!(base(" , ").is_err());
        assert!(base("nacos:8848/path").is_err());
    }

    #[test]
    fn the_context_path_is_normalised() {
        let url = |c: &str| ExternalNacos::new("n:1", c, None).unwrap().url();
        assert_eq!(url("nacos/"), "http://n:1/nacos");
        assert_eq!(url("/"), "http://n:1");
    }
}
