use std::task::{Context, Poll};

use nacos_core::Registration;
use tower_service::Service;

/// The service [`NacosLayer`](crate::NacosLayer) makes: forwards everything to the inner
/// service and keeps the registration alive while the app holds it.
///
/// `call` returns the inner future itself: no allocation, no wrapping, no error type.
/// Before a signal it adds one relaxed atomic load per request; once the app is leaving
/// (deregistered on a signal, serving on until its callers stop coming) it notes each
/// request's arrival, telling health checks and scrapes by path and `User-Agent`
/// ([`nacos_core::is_probe`]), so that the app serves on exactly as long as callers come.
#[derive(Debug, Clone)]
pub struct NacosService<S> {
    inner: S,
    registration: Registration,
}

impl<S> NacosService<S> {
    pub(crate) fn new(inner: S, registration: Registration) -> Self {
        NacosService {
            inner,
            registration,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service; the registration lives on in the other clones.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The registration this service keeps alive.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }
}

impl<S, B> Service<http::Request<B>> for NacosService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.registration.is_leaving() {
            note(&self.registration, &req);
        }
        self.inner.call(req)
    }
}

#[cold]
#[inline(never)]
fn note<B>(registration: &Registration, req: &http::Request<B>) {
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .map(http::HeaderValue::as_bytes);
    registration.note_request(req.uri().path(), user_agent);
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use nacos_core::Config;
    use tower::{ServiceBuilder, ServiceExt};

    use crate::NacosLayer;

    fn disabled_layer() -> NacosLayer {
        let config = Config::builder()
            .service_name("svc")
            .register_enabled(false)
            .build()
            .unwrap();
        NacosLayer::new(config).unwrap()
    }

    fn get(path: &str) -> http::Request<()> {
        http::Request::get(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn forwards_requests_responses_and_errors_unchanged() {
        let svc = ServiceBuilder::new().layer(disabled_layer()).service_fn(
            |req: http::Request<()>| async move {
                match req.uri().path() {
                    "/fail" => Err("zero"),
                    path => Ok(path.len()),
                }
            },
        );
        assert_eq!(svc.clone().oneshot(get("/four")).await, Ok(5));
        assert_eq!(svc.oneshot(get("/fail")).await, Err("zero"));
    }

    #[tokio::test]
    async fn disabled_registration_is_inert() {
        let layer = disabled_layer();
        assert!(!layer.registration().is_enabled());
        assert_eq!(
            layer.status().snapshot().state,
            nacos_core::RegistrationState::Disabled
        );
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>("ok") });
        assert_eq!(svc.oneshot(get("/")).await, Ok("ok"));
    }
}
