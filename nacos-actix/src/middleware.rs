use std::future::{Future, Ready, ready};
use std::net::SocketAddr;

use actix_web::dev::{Service, ServiceRequest, Transform, forward_ready};
use nacos_core::{Config, Registration, StatusHandle};

/// The actix-web middleware that registers the app with Nacos. See the [crate docs](crate).
///
/// Cheap to clone: every clone, and every [`NacosMiddleware`] the workers build from it,
/// shares one registration, so a server with any number of workers registers one instance.
///
/// # Drop
/// Dropping a `Nacos` (any clone, on any thread) once the app no longer listens on the
/// registered port deregisters the instance and waits for it, bounded by
/// `NACOS_REQUEST_TIMEOUT` plus 500 ms; while the app listens, it does nothing. (Linux:
/// the listener is looked up in `/proc`, and a refused connection confirms it is gone.)
///
/// Why: a stopped actix server drops its factory, and so a clone, on the thread that
/// awaited it, right after closing its listener, but it does not wait for its worker
/// threads, which hold the other clones. Without this, the last clone could go on a worker
/// thread while `main` returns and the process exits, leaving the instance in Nacos until
/// it expires. With it, the instance is gone before `server.await` returns.
#[derive(Debug, Clone)]
#[must_use = "dropping the Nacos handles deregisters the instance"]
pub struct Nacos {
    registration: Registration,
}

impl Nacos {
    /// Reads the `NACOS_*` environment variables and starts the registration, which waits
    /// for the app to listen. Nothing is sent to Nacos yet.
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
        Ok(Nacos {
            registration: Registration::new(config)?,
        })
    }

    /// Wraps an existing registration.
    pub fn from_registration(registration: Registration) -> Self {
        Nacos { registration }
    }

    /// Tells the registration where the app listens (e.g. an address from
    /// `HttpServer::addrs()`), instead of detecting it: needed off Linux, or to pick one of
    /// several listeners. A wildcard or loopback IP is replaced by the detected IP;
    /// `NACOS_IP`/`NACOS_PORT` win over it.
    pub fn listening_on(&self, addr: SocketAddr) {
        self.registration.listening_on(addr);
    }

    /// The former name of [`listening_on`](Self::listening_on).
    #[deprecated(since = "0.1.1", note = "renamed to `listening_on`")]
    pub fn bound(&self, addr: SocketAddr) {
        self.listening_on(addr);
    }

    /// A future for `HttpServer::shutdown_signal`: resolves after SIGTERM or SIGINT once
    /// the instance is deregistered and `NACOS_DEREGISTER_GRACE` has passed; actix then
    /// stops accepting and drains (gracefully, for SIGINT too). Only needed to keep serving
    /// during the grace: without it actix handles the signals itself.
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

impl Drop for Nacos {
    fn drop(&mut self) {
        if self.registration.stopped_listening() {
            tracing::debug!("the server no longer listens: deregistering before the handle goes");
            self.registration.deregister_blocking();
        }
    }
}

impl<S> Transform<S, ServiceRequest> for Nacos
where
    S: Service<ServiceRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Transform = NacosMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    /// Called once per worker (after actix has bound its sockets); registers nothing: the
    /// registration was started by [`Nacos::from_env`] and is shared.
    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(NacosMiddleware {
            service,
            nacos: self.clone(),
        }))
    }
}

/// The service [`Nacos`] makes in each worker: forwards readiness and calls to the inner
/// service and keeps the registration alive while the worker holds it.
///
/// `call` returns the inner future itself: no allocation, no wrapping, no error type.
/// Before a signal it adds one relaxed atomic load per request; once the app is leaving
/// (deregistered on a signal, serving on until its callers stop coming) it notes each
/// request's arrival, telling health checks and scrapes by path and `User-Agent`
/// ([`nacos_core::is_probe`]).
#[derive(Debug)]
pub struct NacosMiddleware<S> {
    service: S,
    nacos: Nacos,
}

impl<S> NacosMiddleware<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// The inner service; the registration lives on in the other clones.
    pub fn into_inner(self) -> S {
        self.service
    }

    /// The [`Nacos`] handle this service keeps alive.
    pub fn nacos(&self) -> &Nacos {
        &self.nacos
    }
}

impl<S> Service<ServiceRequest> for NacosMiddleware<S>
where
    S: Service<ServiceRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    forward_ready!(service);

    #[inline]
    fn call(&self, req: ServiceRequest) -> Self::Future {
        let registration = &self.nacos.registration;
        if registration.is_leaving() {
            note(registration, &req);
        }
        self.service.call(req)
    }
}

#[cold]
#[inline(never)]
fn note(registration: &Registration, req: &ServiceRequest) {
    let user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .map(actix_web::http::header::HeaderValue::as_bytes);
    registration.note_request(req.path(), user_agent);
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::test::{TestRequest, call_service, init_service, read_body};
    use actix_web::{App, HttpResponse, error, web};
    use nacos_core::{Config, RegistrationState};

    use crate::Nacos;

    fn disabled() -> Nacos {
        let config = Config::builder()
            .service_name("svc")
            .register_enabled(false)
            .build()
            .unwrap();
        Nacos::new(config).unwrap()
    }

    #[actix_web::test]
    async fn forwards_requests_responses_and_errors_unchanged() {
        let app = init_service(
            App::new()
                .wrap(disabled())
                .route(
                    "/echo/{word}",
                    web::get().to(|w: web::Path<String>| async move {
                        HttpResponse::Created()
                            .insert_header(("x-word", w.as_str()))
                            .body(w.into_inner())
                    }),
                )
                .route(
                    "/fail",
                    web::get().to(|| async {
                        Err::<HttpResponse, _>(error::ErrorImATeapot("no coffee"))
                    }),
                ),
        )
        .await;
        let resp = call_service(&app, TestRequest::get().uri("/echo/hi").to_request()).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers().get("x-word").unwrap(), "hi");
        assert_eq!(read_body(resp).await, "hi");
        let resp = call_service(&app, TestRequest::get().uri("/fail").to_request()).await;
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(read_body(resp).await, "no coffee");
        let resp = call_service(&app, TestRequest::get().uri("/nowhere").to_request()).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn wraps_scopes_and_resources_too() {
        let app = init_service(
            App::new().service(
                web::scope("/api")
                    .wrap(disabled())
                    .service(web::resource("/x").wrap(disabled()).to(|| async { "x" })),
            ),
        )
        .await;
        let resp = call_service(&app, TestRequest::get().uri("/api/x").to_request()).await;
        assert_eq!(read_body(resp).await, "x");
    }

    #[actix_web::test]
    async fn disabled_registration_is_inert() {
        let nacos = disabled();
        assert!(!nacos.registration().is_enabled());
        assert_eq!(nacos.status().snapshot().state, RegistrationState::Disabled);
        drop(nacos.clone());
        assert_eq!(nacos.status().snapshot().state, RegistrationState::Disabled);
    }
}
