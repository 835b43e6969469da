use std::future::Future;
use std::net::SocketAddr;

use nacos_core::{Config, Registration, StatusHandle};
use tower_layer::Layer;

use crate::service::NacosService;

/// A tower [`Layer`] that registers the app with Nacos. See the [crate docs](crate).
///
/// Cheap to clone: every clone, and every [`NacosService`] it makes, shares one
/// registration, which is deregistered when the last of them is dropped.
#[derive(Debug, Clone)]
pub struct NacosLayer {
    registration: Registration,
}

impl NacosLayer {
    /// Reads the `NACOS_*` environment variables and starts the registration (which waits
    /// for the app to listen). Nothing is sent to Nacos yet.
    ///
    /// # Errors
    /// A malformed or missing variable ([`nacos_core::Error::Config`] or
    /// [`nacos_core::Error::Missing`]), naming the variable, the value and what was
    /// expected.
    pub fn from_env() -> Result<Self, nacos_core::Error> {
        Self::new(Config::from_env()?)
    }

    /// Starts the registration `config` describes.
    ///
    /// # Errors
    /// [`nacos_core::Error::HttpClient`] when the HTTP client cannot be built.
    pub fn new(config: Config) -> Result<Self, nacos_core::Error> {
        Ok(NacosLayer {
            registration: Registration::new(config)?,
        })
    }

    /// Wraps an existing registration.
    pub fn from_registration(registration: Registration) -> Self {
        NacosLayer { registration }
    }

    /// Tells the layer where the app listens (e.g. `listener.local_addr()?`), instead of
    /// detecting it. A wildcard or loopback IP is replaced by the detected IP;
    /// `NACOS_IP`/`NACOS_PORT` win over it.
    pub fn listening_on(&self, addr: SocketAddr) {
        self.registration.listening_on(addr);
    }

    /// The former name of [`listening_on`](Self::listening_on).
    #[deprecated(since = "0.1.1", note = "renamed to `listening_on`")]
    pub fn bound(&self, addr: SocketAddr) {
        self.listening_on(addr);
    }

    /// A future for `axum::serve(..).with_graceful_shutdown(..)`: resolves after SIGTERM or
    /// SIGINT once the instance is deregistered and `NACOS_DEREGISTER_GRACE` has passed.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        self.registration.shutdown_signal()
    }

    /// The registration status, for a health endpoint.
    pub fn status(&self) -> StatusHandle {
        self.registration.status()
    }

    /// The underlying registration.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }
}

impl<S> Layer<S> for NacosLayer {
    type Service = NacosService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NacosService::new(inner, self.registration.clone())
    }
}
