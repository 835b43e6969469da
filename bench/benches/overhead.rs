//! Per-request cost of the adapters, criterion: `cargo bench -p nacos-bench --bench overhead`.
//!
//! A hello-world app (`GET /` answering `Hello, World!`) with and without the adapter,
//! driven in-process the way each framework's server drives it (see `support/apps.rs`):
//!
//! - `axum/*`: `bare`; `identity-layer` (`Router::layer` with a layer that does nothing:
//!   axum's own cost for any layer); `nacos-disabled` and `nacos-enabled` (`.layer(NacosLayer)`
//!   with a disabled registration, and with an enabled one that is never bound so it never
//!   contacts a server: the request path is the same); `nacos-around-router` (the layer around
//!   the whole `Router`).
//! - `actix/*`: `bare`, `nacos-disabled`, `nacos-enabled` (`App::wrap(Nacos)`).
//! - `registration/clone-drop`: the pointer copy the adapters make, alone.
//!
//! Criterion runs the variants one after the other; `overhead-interleaved` alternates them,
//! which is what to trust on a shared machine.

use std::hint::black_box;
use std::time::Duration;

use actix_web::App;
use actix_web::test::init_service;
use criterion::Criterion;
use nacos_actix::Nacos;

#[path = "support/apps.rs"]
mod apps;

use apps::{ActixVariant, AxumApps, AxumVariant};

fn axum(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let apps = AxumApps::new();
    runtime.block_on(apps.check());
    let mut group = c.benchmark_group("axum");
    for variant in AxumVariant::ALL {
        group.bench_function(variant.name(), |b| {
            b.iter_custom(|iters| runtime.block_on(apps.run(variant, iters)));
        });
    }
    group.finish();
}

fn actix(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let bare = system.block_on(init_service(App::new().configure(apps::actix_routes)));
    let disabled = system.block_on(init_service(
        App::new()
            .wrap(Nacos::from_registration(apps::disabled_registration()))
            .configure(apps::actix_routes),
    ));
    let enabled = system.block_on(init_service(
        App::new()
            .wrap(Nacos::from_registration(apps::enabled_registration()))
            .configure(apps::actix_routes),
    ));
    let request = || apps::actix_request().to_request();
    let mut group = c.benchmark_group("actix");
    for variant in ActixVariant::ALL {
        group.bench_function(variant.name(), |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    match variant {
                        ActixVariant::Bare => apps::actix_requests(&bare, request, iters).await,
                        ActixVariant::NacosDisabled => {
                            apps::actix_requests(&disabled, request, iters).await
                        }
                        ActixVariant::NacosEnabled => {
                            apps::actix_requests(&enabled, request, iters).await
                        }
                    }
                })
            });
        });
    }
    group.finish();
}

fn registration(c: &mut Criterion) {
    let registration = apps::enabled_registration();
    c.bench_function("registration/clone-drop", |b| {
        b.iter(|| black_box(registration.clone()));
    });
}

/// What `criterion_group!`/`criterion_main!` would generate, minus an undocumented `pub fn`.
fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    axum(&mut criterion);
    actix(&mut criterion);
    registration(&mut criterion);
    criterion.final_summary();
}
