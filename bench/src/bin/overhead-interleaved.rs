//! Per-request cost of the adapters, interleaved:
//! `overhead-interleaved [axum|actix|all] [ROUNDS] [REQUESTS]` (defaults `all 101 20000`).
//!
//! Criterion measures one variant after the other; on a shared, noisy machine a slow
//! minute then lands on whichever variant ran in it. Here every round sends `REQUESTS`
//! requests to each variant in turn (forwards in even rounds, backwards in odd ones, after
//! one discarded warm-up round), so each variant is compared with the bare app of the same
//! round. Prints a markdown table per framework: ns/request per round, the median and the
//! minimum (the least disturbed round), the median of the per-round differences with the bare app (ns) and of the ratios (for axum
//! also with `identity-layer`, what `Router::layer` costs by itself). The target is
//! an added time of at most 20 ns per request.
//!
//! The apps and the request loops are those of `benches/overhead.rs`
//! (`benches/support/apps.rs`). Run it in release: `cargo run --release -p nacos-bench --bin
//! overhead-interleaved`.

use std::time::Duration;

use actix_web::App;
use actix_web::test::init_service;
use nacos_actix::Nacos;

#[path = "../../benches/support/apps.rs"]
mod apps;

use apps::{ActixVariant, AxumApps, AxumVariant};

/// The target for the added time per request, in ns.
const TARGET_NS: f64 = 20.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(101);
    let requests: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    assert!(
        matches!(which, "axum" | "actix" | "all") && rounds > 0 && requests > 0,
        "usage: overhead-interleaved [axum|actix|all] [ROUNDS>0] [REQUESTS>0]"
    );
    if which != "actix" {
        let names: Vec<&str> = AxumVariant::ALL.iter().map(|v| v.name()).collect();
        let times = axum_rounds(rounds, requests);
        // The identity layer is what `Router::layer` costs by itself: the Nacos part of the
        // `.layer(NacosLayer)` variants is their difference with it.
        print_table("axum 0.8", &names, &times, requests, &[0, 1]);
    }
    if which != "axum" {
        let names: Vec<&str> = ActixVariant::ALL.iter().map(|v| v.name()).collect();
        let times = actix_rounds(rounds, requests);
        print_table("actix-web 4", &names, &times, requests, &[0]);
    }
}

/// The order of the variants in round `round` (`None` for the warm-up): forwards, then
/// backwards, so that no variant always runs right after another.
fn order(round: Option<usize>, count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if round.is_some_and(|r| r % 2 == 1) {
        order.reverse();
    }
    order
}

/// `times[round][variant]` for the axum variants, on a current-thread runtime.
fn axum_rounds(rounds: usize, requests: u64) -> Vec<Vec<Duration>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let apps = AxumApps::new();
    runtime.block_on(apps.check());
    let variants = AxumVariant::ALL;
    let mut times = Vec::with_capacity(rounds);
    for round in std::iter::once(None).chain((0..rounds).map(Some)) {
        let mut row = vec![Duration::ZERO; variants.len()];
        for i in order(round, variants.len()) {
            row[i] = runtime.block_on(apps.run(variants[i], requests));
        }
        if round.is_some() {
            times.push(row);
        }
    }
    times
}

/// `times[round][variant]` for the actix-web variants, in an actix system.
fn actix_rounds(rounds: usize, requests: u64) -> Vec<Vec<Duration>> {
    actix_web::rt::System::new().block_on(async move {
        let bare = init_service(App::new().configure(apps::actix_routes)).await;
        let disabled = init_service(
            App::new()
                .wrap(Nacos::from_registration(apps::disabled_registration()))
                .configure(apps::actix_routes),
        )
        .await;
        let enabled = init_service(
            App::new()
                .wrap(Nacos::from_registration(apps::enabled_registration()))
                .configure(apps::actix_routes),
        )
        .await;
        let request = || apps::actix_request().to_request();
        let variants = ActixVariant::ALL;
        let mut times = Vec::with_capacity(rounds);
        for round in std::iter::once(None).chain((0..rounds).map(Some)) {
            let mut row = vec![Duration::ZERO; variants.len()];
            for i in order(round, variants.len()) {
                row[i] = match variants[i] {
                    ActixVariant::Bare => apps::actix_requests(&bare, request, requests).await,
                    ActixVariant::NacosDisabled => {
                        apps::actix_requests(&disabled, request, requests).await
                    }
                    ActixVariant::NacosEnabled => {
                        apps::actix_requests(&enabled, request, requests).await
                    }
                };
            }
            if round.is_some() {
                times.push(row);
            }
        }
        times
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    nacos_bench::quantile(&values, 0.5)
}

/// Prints the per-round ns/request, then for each variant its median, and the medians of
/// its per-round differences and ratios with each variant of `baselines` (0 is bare).
fn print_table(
    framework: &str,
    names: &[&str],
    times: &[Vec<Duration>],
    requests: u64,
    baselines: &[usize],
) {
    let ns: Vec<Vec<f64>> = times
        .iter()
        .map(|row| {
            row.iter()
                .map(|t| t.as_nanos() as f64 / requests as f64)
                .collect()
        })
        .collect();
    let column = |i: usize| ns.iter().map(|row| row[i]).collect::<Vec<f64>>();
    let diff = |i: usize, base: usize| median(ns.iter().map(|row| row[i] - row[base]).collect());
    let ratio = |i: usize, base: usize| median(ns.iter().map(|row| row[i] / row[base]).collect());

    println!(
        "\n### {framework}: {} rounds x {requests} requests per variant, ns/request\n",
        times.len()
    );
    println!("| round | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(names.len()));
    for (round, row) in ns.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.1}")).collect();
        println!("| {} | {} |", round + 1, cells.join(" | "));
    }
    let summary = |label: String, value: &dyn Fn(usize) -> String| {
        let cells: Vec<String> = (0..names.len()).map(value).collect();
        println!("| **{label}** | {} |", cells.join(" | "));
    };
    summary("median".into(), &|i| format!("{:.1}", median(column(i))));
    summary("min".into(), &|i| {
        format!("{:.1}", column(i).into_iter().fold(f64::INFINITY, f64::min))
    });
    for &base in baselines {
        let name = names[base];
        summary(format!("median diff vs {name} (ns)"), &|i| {
            format!("{:+.1}", diff(i, base))
        });
        summary(format!("median ratio vs {name}"), &|i| {
            format!("{:.4}", ratio(i, base))
        });
    }
    println!();
    for (i, name) in names.iter().enumerate().skip(1) {
        let added = diff(i, 0);
        let verdict = if added <= TARGET_NS { "within" } else { "over" };
        println!("- {name}: {added:+.1} ns/request over bare, {verdict} the {TARGET_NS} ns target");
    }
}
