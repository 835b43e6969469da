//! A load-balanced HTTP client in one line: a `reqwest-middleware` middleware that sends a
//! request for a service name to one of the service's instances, the way Spring's
//! `@LoadBalanced RestTemplate` does.
//!
//! See [`LoadBalancer`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::{Discovery, ServiceWatch};

/// The load-balancing middleware. Cheap to clone.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use nacos_core::{Discovery, LoadBalancer};
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(LoadBalancer::new(Discovery::from_env()?).service("orders"))
///     .build();
/// // http://orders/... goes to an instance of "orders"; nacos://<any service>/... too.
/// let items = client.get("http://orders/api/items").send().await?.text().await?;
/// # let _ = items; Ok(()) }
/// ```
///
/// # Which requests
/// - `http://NAME/...` and `https://NAME/...` where `NAME` was given to
///   [`LoadBalancer::service`]: the scheme is kept;
/// - `nacos://NAME/...` for any service `NAME`, sent as `http://`.
///
/// Any other request passes through untouched.
///
/// # How an instance is chosen
/// Same cluster as the caller first (`NACOS_CLUSTER_NAME`), then weighted random by Nacos
/// weight; instances of weight 0 are never chosen ([`Instances::pick`](crate::Instances::pick)). The choice reads
/// the current snapshot without a lock (`arc-swap`). Before the service's first list
/// arrives, the request waits for it, up to `NACOS_REQUEST_TIMEOUT`.
///
/// # Retries and ejection
/// - A request that could not connect (refused, or the connect timed out) was never sent:
///   the instance is [ejected](ServiceWatch::eject) from picks for [`EJECT_FOR`](crate::EJECT_FOR)
///   and the request goes to another instance not tried yet, up to [`MAX_TRIES`] instances
///   in all (a killed provider, or several restarting at once, cost no request).
/// - An idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) whose connection was reset
///   before any answer (a provider killed with kept-alive connections) is ejected and sent
///   to another instance once.
/// - Nothing else is retried: a request that reached an instance may have been acted
///   upon. A body that cannot be cloned (a stream) is not retried either.
#[derive(Clone)]
pub struct LoadBalancer {
    discovery: Discovery,
    /// Watches by host name: configured names, and `nacos://` names as they come.
    services: Arc<ArcSwap<HashMap<String, ServiceWatch>>>,
}

impl fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("services", &self.services.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// No instance of the service can take the request; `why` says which case it is (unknown
/// or empty service, all unhealthy or disabled, all of weight 0, or Nacos unreachable
/// with the cause).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no instance of service {service:?} to call: {why}")]
pub struct NoInstance {
    /// The service name.
    pub service: String,
    /// Why, in words (see [`ServiceWatch::why_none`]).
    pub why: String,
}

/// The most instances one request is sent to: the first pick and up to two more after
/// connections that could not be made.
pub const MAX_TRIES: usize = 3;

impl LoadBalancer {
    /// A load balancer over `discovery`, handling `nacos://` URLs; add names for
    /// `http(s)://NAME` URLs with [`service`](Self::service).
    pub fn new(discovery: Discovery) -> Self {
        LoadBalancer {
            discovery,
            services: Arc::new(ArcSwap::from_pointee(HashMap::new())),
        }
    }

    /// Sends `http://name/...` and `https://name/...` to instances of service `name` (in
    /// the configured group); watching starts now.
    #[must_use]
    pub fn service(self, name: &str) -> Self {
        self.watch(name);
        self
    }

    fn watch(&self, name: &str) -> ServiceWatch {
        if let Some(watch) = self.services.load().get(name) {
            return watch.clone();
        }
        let watch = self.discovery.watch(name);
        self.services.rcu(|services| {
            let mut services = HashMap::clone(services);
            services
                .entry(name.to_owned())
                .or_insert_with(|| watch.clone());
            services
        });
        watch
    }

    /// The watch and scheme for `req`, when it is for a service.
    fn route(&self, req: &Request) -> Option<(ServiceWatch, &'static str)> {
        let url = req.url();
        let host = url.host_str()?;
        match url.scheme() {
            "nacos" => Some((self.watch(host), "http")),
            "http" => self.services.load().get(host).map(|w| (w.clone(), "http")),
            "https" => self.services.load().get(host).map(|w| (w.clone(), "https")),
            _ => None,
        }
    }
}

/// Points `req` at `ip:port` with `scheme`.
fn aim(req: &mut Request, scheme: &str, ip: &str, port: u16) -> reqwest_middleware::Result<()> {
    let url = req.url_mut();
    let host = if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let bad = |what: &str| {
        reqwest_middleware::Error::middleware(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cannot aim the request at {what}"),
        ))
    };
    if url.scheme() != scheme {
        // `nacos` is not a "special" scheme to the URL parser: rebuild the URL.
        let rest = &url[url::Position::BeforePath..];
        let rebuilt = format!("{scheme}://{host}:{port}{rest}");
        *url = reqwest::Url::parse(&rebuilt).map_err(|_| bad(&rebuilt))?;
        return Ok(());
    }
    url.set_host(Some(&host)).map_err(|_| bad(&host))?;
    url.set_port(Some(port)).map_err(|()| bad(&host))?;
    Ok(())
}

#[async_trait::async_trait]
impl Middleware for LoadBalancer {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let Some((watch, scheme)) = self.route(&req) else {
            return next.run(req, extensions).await;
        };
        if watch.instances().version() == 0 {
            watch.ready().await;
        }
        let service = || watch.service().service_name.clone();
        let idempotent = matches!(
            *req.method(),
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::PUT
                | http::Method::DELETE
        );
        let mut tried: Vec<(String, u16)> = Vec::with_capacity(MAX_TRIES);
        let mut reset_retried = false;
        let mut req = Some(req);
        loop {
            let picked = watch.pick_avoiding(
                |i| {
                    tried
                        .iter()
                        .any(|(ip, port)| *ip == i.ip && *port == i.port)
                },
                |i| i.map(|i| (i.ip.clone(), i.port)),
            );
            let (Some((ip, port)), Some(mut this)) = (picked, req.take()) else {
                break Err(reqwest_middleware::Error::middleware(NoInstance {
                    service: service(),
                    why: watch
                        .why_none()
                        .unwrap_or_else(|| "every instance was tried".to_owned()),
                }));
            };
            aim(&mut this, scheme, &ip, port)?;
            let again = this.try_clone();
            let result = next.clone().run(this, extensions).await;
            let retry = match &result {
                Err(reqwest_middleware::Error::Reqwest(err)) if err.is_connect() => true,
                Err(reqwest_middleware::Error::Reqwest(err))
                    if idempotent && !reset_retried && is_reset(err) =>
                {
                    reset_retried = true;
                    true
                }
                _ => false,
            };
            if !retry {
                break result;
            }
            watch.eject(&ip, port);
            tried.push((ip, port));
            let more = tried.len() < MAX_TRIES
                && watch.pick_avoiding(
                    |i| {
                        tried
                            .iter()
                            .any(|(ip, port)| *ip == i.ip && *port == i.port)
                    },
                    |i| i.is_some(),
                );
            match (again, more) {
                (Some(again), true) => {
                    tracing::debug!(service = %service(), instance = %format_args!("{}:{}", tried[tried.len() - 1].0, tried[tried.len() - 1].1),
                        "the request did not reach the instance: sending it to another one");
                    req = Some(again);
                }
                _ => break result,
            }
        }
    }
}

/// Whether `err` is a connection reset or closed before any answer (not a timeout).
fn is_reset(err: &reqwest::Error) -> bool {
    if err.is_timeout() || !err.is_request() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("connection closed before message completed")
            || text.contains("connection reset")
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_aimed_at_the_instance() {
        let client = reqwest::Client::new();
        let mut req = client
            .get("nacos://orders/api/items?x=1#f")
            .build()
            .unwrap();
        aim(&mut req, "http", "10.0.0.1", 8080).unwrap();
        assert_eq!(req.url().as_str(), "http://10.0.0.1:8080/api/items?x=1#f");
        let mut req = client.get("https://orders/a").build().unwrap();
        aim(&mut req, "https", "fd00::1", 443).unwrap();
        assert_eq!(req.url().as_str(), "https://[fd00::1]/a");
        let mut req = client.get("http://orders:9/a").build().unwrap();
        aim(&mut req, "http", "10.0.0.2", 81).unwrap();
        assert_eq!(req.url().as_str(), "http://10.0.0.2:81/a");
    }
}
