use std::task::{Context, Poll};

use nacos_core::Registration;
use tower_service::Service;

/// The service [`NacosLayer`](crate::NacosLayer) makes: forwards everything to the inner
/// service and keeps the registration alive while the app holds it.
///
/// `call` returns the inner future itself: no allocation, no wrapping, no error type.
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

impl<S, R> Service<R> for NacosService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: R) -> Self::Future {
        self.inner.call(req)
    }
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

    #[tokio::test]
    async fn forwards_requests_responses_and_errors_unchanged() {
        let svc = ServiceBuilder::new()
            .layer(disabled_layer())
            .service_fn(|n: u32| async move { if n == 0 { Err("zero") } else { Ok(n * 2) } });
        assert_eq!(svc.clone().oneshot(21).await, Ok(42));
        assert_eq!(svc.oneshot(0).await, Err("zero"));
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
            .service_fn(|()| async { Ok::<_, Infallible>("ok") });
        assert_eq!(svc.oneshot(()).await, Ok("ok"));
    }
}
