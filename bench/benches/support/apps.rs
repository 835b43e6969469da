//! The hello-world apps whose per-request cost `benches/overhead.rs` (criterion) and
//! `src/bin/overhead-interleaved.rs` (interleaved rounds) compare, and the loops that drive
//! them. One definition, so that both measure the same thing.
//!
//! Per request, each loop does what the framework's server does: axum (through hyper-util's
//! `TowerToHyperService`) clones the service it made for the connection (for a `Router`,
//! `router.with_state(())`) and calls `oneshot` on the clone; actix-web calls the app
//! service it built once per worker. The request is built inside the loop (the same cost for
//! every variant) and the response is dropped unread: the body type is the same with and
//! without the adapter, so reading it would add the same time to both.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::get;
use nacos_axum::{NacosLayer, NacosService};
use nacos_core::{AddrSource, Config, Registration};
use tower::{Layer, Service, ServiceExt};

/// The body every hello-world app answers.
pub(crate) const HELLO: &str = "Hello, World!";

/// The axum variants, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AxumVariant {
    /// `Router` with one `GET /` route.
    Bare,
    /// `.layer(tower::layer::util::Identity::new())`: what `Router::layer` costs with a
    /// layer that does nothing (axum boxes every layered route once more).
    Identity,
    /// `.layer(NacosLayer)` with `register_enabled(false)`.
    NacosDisabled,
    /// `.layer(NacosLayer)` with an enabled registration that is never bound, so it never
    /// contacts a server.
    NacosEnabled,
    /// `NacosLayer` around the whole `Router` (`NacosLayer.layer(router.with_state(()))`),
    /// the enabled registration: no route boxing, one `Arc` clone per request. (Served with
    /// `axum::ServiceExt::into_make_service`, nothing calls `with_state(())` per connection:
    /// an app doing this should call it itself, or a layered router re-applies its layers to
    /// the matched route on every request.)
    NacosAroundRouter,
}

impl AxumVariant {
    /// Every variant, `Bare` first.
    pub(crate) const ALL: [AxumVariant; 5] = [
        AxumVariant::Bare,
        AxumVariant::Identity,
        AxumVariant::NacosDisabled,
        AxumVariant::NacosEnabled,
        AxumVariant::NacosAroundRouter,
    ];

    /// A short name for tables and criterion ids.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AxumVariant::Bare => "bare",
            AxumVariant::Identity => "identity-layer",
            AxumVariant::NacosDisabled => "nacos-disabled",
            AxumVariant::NacosEnabled => "nacos-enabled",
            AxumVariant::NacosAroundRouter => "nacos-around-router",
        }
    }
}

/// The actix-web variants, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActixVariant {
    /// `App` with one `GET /` route.
    Bare,
    /// `.wrap(Nacos)` with `register_enabled(false)`.
    NacosDisabled,
    /// `.wrap(Nacos)` with an enabled registration that is never bound.
    NacosEnabled,
}

impl ActixVariant {
    /// Every variant, `Bare` first.
    pub(crate) const ALL: [ActixVariant; 3] = [
        ActixVariant::Bare,
        ActixVariant::NacosDisabled,
        ActixVariant::NacosEnabled,
    ];

    /// A short name for tables and criterion ids.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ActixVariant::Bare => "bare",
            ActixVariant::NacosDisabled => "nacos-disabled",
            ActixVariant::NacosEnabled => "nacos-enabled",
        }
    }
}

/// A registration with `register_enabled(false)`: no engine, just the shared handle.
pub(crate) fn disabled_registration() -> Registration {
    let config = Config::builder()
        .service_name("bench")
        .register_enabled(false)
        .build()
        .expect("config");
    Registration::new(config).expect("registration")
}

/// An enabled registration waiting for its adapter to report the bound address, which
/// never comes: the engine runs but never contacts a server (`127.0.0.1:9`, discard, in
/// case it did).
pub(crate) fn enabled_registration() -> Registration {
    let config = Config::builder()
        .server_addr("127.0.0.1:9")
        .service_name("bench")
        .build()
        .expect("config");
    Registration::with_addr_source(config, AddrSource::Reported).expect("registration")
}

/// The bare axum app: one `GET /` route.
pub(crate) fn axum_router() -> axum::Router {
    axum::Router::new().route("/", get(|| async { HELLO }))
}

/// The axum apps, one per [`AxumVariant`].
#[derive(Debug, Clone)]
pub(crate) struct AxumApps {
    bare: axum::Router,
    identity: axum::Router,
    disabled: axum::Router,
    enabled: axum::Router,
    around: NacosService<axum::Router>,
}

impl AxumApps {
    /// Builds every variant.
    pub(crate) fn new() -> Self {
        let enabled = enabled_registration();
        // `axum::serve` calls `with_state(())` once per connection, which turns every handler
        // into a `Route` up front; without it, the `Router` would do that per request.
        let served = |router: axum::Router| router.with_state::<()>(());
        AxumApps {
            bare: served(axum_router()),
            identity: served(axum_router().layer(tower::layer::util::Identity::new())),
            disabled: served(
                axum_router().layer(NacosLayer::from_registration(disabled_registration())),
            ),
            enabled: served(axum_router().layer(NacosLayer::from_registration(enabled.clone()))),
            around: NacosLayer::from_registration(enabled).layer(served(axum_router())),
        }
    }

    /// Sends `n` requests to `variant` and returns the time they took.
    pub(crate) async fn run(&self, variant: AxumVariant, n: u64) -> Duration {
        match variant {
            AxumVariant::Bare => axum_requests(&self.bare, n).await,
            AxumVariant::Identity => axum_requests(&self.identity, n).await,
            AxumVariant::NacosDisabled => axum_requests(&self.disabled, n).await,
            AxumVariant::NacosEnabled => axum_requests(&self.enabled, n).await,
            AxumVariant::NacosAroundRouter => axum_requests(&self.around, n).await,
        }
    }

    /// Checks that every variant answers `200 Hello, World!`, so that no variant is measured
    /// answering a 404.
    ///
    /// # Panics
    /// When one does not.
    pub(crate) async fn check(&self) {
        for variant in AxumVariant::ALL {
            let response = match variant {
                AxumVariant::Bare => axum_once(&self.bare).await,
                AxumVariant::Identity => axum_once(&self.identity).await,
                AxumVariant::NacosDisabled => axum_once(&self.disabled).await,
                AxumVariant::NacosEnabled => axum_once(&self.enabled).await,
                AxumVariant::NacosAroundRouter => axum_once(&self.around).await,
            };
            assert_eq!(response.status(), StatusCode::OK, "{}", variant.name());
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(body, HELLO, "{}", variant.name());
        }
    }
}

async fn axum_once<S>(svc: &S) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    let request = Request::get("/").body(Body::empty()).expect("request");
    let Ok(response) = svc.clone().oneshot(request).await;
    response
}

/// `n` requests through `svc`, each on a clone of it as axum's server does; the time taken.
pub(crate) async fn axum_requests<S>(svc: &S, n: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    let start = Instant::now();
    for _ in 0..n {
        let request = Request::get("/").body(Body::empty()).expect("request");
        let Ok(response) = svc.clone().oneshot(request).await;
        black_box(response);
    }
    start.elapsed()
}

/// The actix-web app's one route, for `App::new().configure(actix_routes)`.
pub(crate) fn actix_routes(config: &mut actix_web::web::ServiceConfig) {
    config.route("/", actix_web::web::get().to(|| async { HELLO }));
}

/// A `GET /` request for actix-web's test service.
pub(crate) fn actix_request() -> actix_web::test::TestRequest {
    actix_web::test::TestRequest::get().uri("/")
}

/// `n` requests through the actix-web app service `app`, each built by `request` (the
/// same for every variant); the time taken. Checks the first answer is `200`.
///
/// # Panics
/// When the app answers an error or anything but `200`.
pub(crate) async fn actix_requests<S, R, B>(app: &S, request: impl Fn() -> R, n: u64) -> Duration
where
    S: actix_web::dev::Service<
            R,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
{
    let first = app.call(request()).await.expect("response");
    assert_eq!(first.status(), actix_web::http::StatusCode::OK);
    drop(first);
    let start = Instant::now();
    for _ in 0..n {
        let response = app.call(request()).await.expect("response");
        black_box(response);
    }
    start.elapsed()
}
