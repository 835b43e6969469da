//! Helpers of the protocol tests: a recording mock responder, polling with a deadline and
//! the configuration every test starts from.
#![allow(
    dead_code,
    reason = "shared by several test binaries, each using a part of it"
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nacos_core::{AddrSource, ConfigBuilder, Registration};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Register and deregister (`POST`/`DELETE`).
pub(crate) const INSTANCE: &str = "/nacos/v1/ns/instance";
/// Beats (`PUT`).
pub(crate) const BEAT: &str = "/nacos/v1/ns/instance/beat";
/// Login (`POST`).
pub(crate) const LOGIN: &str = "/nacos/v1/auth/login";
/// Instance list (`GET`).
pub(crate) const LIST: &str = "/nacos/v1/ns/instance/list";
/// The advertised IP of every test.
pub(crate) const IP: &str = "10.0.0.1";

/// Logs of `RUST_LOG` to the test's output, once per process.
pub(crate) fn init_tracing() {
    drop(
        tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init(),
    );
}

/// A fresh (not pooled) mock server, so no request of another test can reach it.
pub(crate) async fn mock_server() -> MockServer {
    init_tracing();
    MockServer::builder().start().await
}

/// The configuration the tests start from: service `svc` at [`IP`], beats every 200 ms,
/// requests bounded by 300 ms.
pub(crate) fn config(server: &MockServer) -> ConfigBuilder {
    nacos_core::Config::builder()
        .api(nacos_core::ApiVersion::V1)
        .service_name("svc")
        .server_addr(server.address().to_string())
        .ip(IP.parse::<IpAddr>().unwrap())
        .heartbeat_interval(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(300))
}

/// Starts a registration of `config` bound at `IP:port`.
///
/// The engine is process-wide and a newer registration of the same `service#ip#port`
/// replaces an older one, so every test uses its own port.
/// A fresh instance port for a test: each test's instance has its own `service#ip#port`,
/// so registrations of tests running side by side never replace one another.
pub(crate) fn next_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(19_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn start(config: ConfigBuilder, port: u16) -> Registration {
    let reg = Registration::with_addr_source(config.build().unwrap(), AddrSource::Reported)
        .expect("registration starts");
    reg.listening_on(SocketAddr::new(IP.parse().unwrap(), port));
    reg
}

/// One request as the mock server saw it, with the time it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// When the responder was called.
    pub(crate) at: Instant,
    /// The request.
    pub(crate) request: Request,
}

impl Seen {
    /// Whether this is `method` on `path`.
    pub(crate) fn is(&self, method: &str, path: &str) -> bool {
        self.request.method.as_str() == method && self.request.url.path() == path
    }

    /// The value of query parameter `key`.
    pub(crate) fn query(&self, key: &str) -> Option<String> {
        query_param(&self.request, key)
    }

    /// The value of form field `key` of the (url-encoded) body.
    pub(crate) fn form(&self, key: &str) -> Option<String> {
        form_field(&self.request, key)
    }
}

/// The value of query parameter `key` of `request`.
pub(crate) fn query_param(request: &Request, key: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The value of form field `key` of `request`'s url-encoded body.
pub(crate) fn form_field(request: &Request, key: &str) -> Option<String> {
    let body = std::str::from_utf8(&request.body).ok()?;
    // A url-encoded form is a query string: let `Url` decode it.
    let url = reqwest::Url::parse(&format!("http://form/?{body}")).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Every request the [`Scripted`] responders of one test answered, in arrival order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    /// A copy of every request so far.
    pub(crate) fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// The requests `method` on `path` so far.
    pub(crate) fn of(&self, method: &str, path: &str) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.is(method, path))
            .collect()
    }

    /// How many `method` on `path` requests arrived so far.
    pub(crate) fn count(&self, method: &str, path: &str) -> usize {
        self.of(method, path).len()
    }
}

/// A responder that records each request in a [`Log`] and answers with
/// `script(n, request)`, `n` counting this responder's calls from 0.
pub(crate) struct Scripted<F> {
    log: Log,
    calls: AtomicUsize,
    script: F,
}

impl<F> Respond for Scripted<F>
where
    F: Fn(usize, &Request) -> ResponseTemplate + Send + Sync,
{
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let at = Instant::now();
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log.0.lock().unwrap().push(Seen {
            at,
            request: request.clone(),
        });
        (self.script)(n, request)
    }
}

/// Mounts a [`Scripted`] responder for `verb` on `route`.
pub(crate) async fn mount<F>(server: &MockServer, log: &Log, verb: &str, route: &str, script: F)
where
    F: Fn(usize, &Request) -> ResponseTemplate + Send + Sync + 'static,
{
    Mock::given(method(verb))
        .and(path(route))
        .respond_with(Scripted {
            log: log.clone(),
            calls: AtomicUsize::new(0),
            script,
        })
        .mount(server)
        .await;
}

/// Mounts register and deregister answering `ok`, and beats answered by `beat`.
pub(crate) async fn mount_nacos<F>(server: &MockServer, log: &Log, beat: F)
where
    F: Fn(usize, &Request) -> ResponseTemplate + Send + Sync + 'static,
{
    mount(server, log, "POST", INSTANCE, |_, _| ok()).await;
    mount(server, log, "DELETE", INSTANCE, |_, _| ok()).await;
    mount(server, log, "PUT", BEAT, beat).await;
}

/// HTTP 200 `ok`, the answer to register and deregister.
pub(crate) fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string("ok")
}

/// A beat answer: `code`, `clientBeatInterval` (ms) and `lightBeatEnabled`.
pub(crate) fn beat_answer(code: i32, interval_ms: u64, light: bool) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        serde_json::json!({
            "clientBeatInterval": interval_ms,
            "code": code,
            "lightBeatEnabled": light,
        })
        .to_string(),
        "application/json",
    )
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`.
pub(crate) async fn eventually(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
