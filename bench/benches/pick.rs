//! The cost of choosing an instance per request (the load-balanced client's and
//! `ServiceWatch::pick_with`'s path): a lock-free load of the current snapshot
//! (`arc-swap`), then a weighted choice by binary search over cumulative weights.
//!
//! - `pick/N`: one thread, N instances (same cluster first, weights 1..=3);
//! - `pick_2_threads/10`: two threads picking from the same snapshot at once, time per
//!   pick: about the one-thread figure when nothing is shared for writing (no lock, no
//!   reference count touched per pick).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{BenchmarkId, Criterion};
use nacos_core::{Instance, Instances};

fn snapshot(n: usize) -> Instances {
    let listed: Vec<Instance> = (0..n)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "ip": format!("10.0.{}.{}", i / 250, i % 250 + 1),
                "port": 8080,
                "weight": (i % 3 + 1) as f64,
                "healthy": true,
                "clusterName": if i % 2 == 0 { "DEFAULT" } else { "other" },
            }))
            .expect("an instance")
        })
        .collect();
    Instances::from_instances(listed, Some("DEFAULT"))
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [3, 10, 100] {
        let current = ArcSwap::from_pointee(snapshot(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &current, |b, current| {
            b.iter(|| black_box(current.load().pick().map(|i| i.port)))
        });
    }
    group.finish();

    let current = Arc::new(ArcSwap::from_pointee(snapshot(10)));
    c.bench_function("pick_2_threads/10", |b| {
        b.iter_custom(|iters| {
            let run = |current: Arc<ArcSwap<Instances>>| {
                move || {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(current.load().pick().map(|i| i.port));
                    }
                    started.elapsed()
                }
            };
            let other = std::thread::spawn(run(current.clone()));
            let mine = run(current.clone())();
            let theirs = other.join().expect("the other thread");
            // Time per pick on one thread while the other picks too.
            (mine + theirs) / 2
        })
    });
}

/// What `criterion_group!`/`criterion_main!` would generate, minus an undocumented `pub fn`.
fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    pick(&mut criterion);
    criterion.final_summary();
}
