//! A minimal Nacos v1 stub that records beats: `beat-stub PORT SECONDS [INTERVAL_MS]`.
//!
//! Answers register/deregister with `ok` and beats with `clientBeatInterval` =
//! `INTERVAL_MS` (default 5000), light beats on. After `SECONDS` it prints one JSON line:
//! beats received, instances seen, beat lateness (gap between two beats of one instance
//! minus the interval) as p50/p99/max in ms, and missed beats (gaps over 1.5 intervals).
//! It isolates the client's cost: the server side does no real work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{post, put};

#[derive(Default)]
struct Record {
    last: HashMap<(String, String), Instant>,
    gaps_ms: Vec<f64>,
    beats: u64,
    registers: u64,
}

type Shared = Arc<Mutex<Record>>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().and_then(|s| s.parse().ok()).unwrap_or(8848);
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(120);
    let interval_ms: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let record: Shared = Arc::default();

    let beat_answer =
        format!(r#"{{"clientBeatInterval":{interval_ms},"code":10200,"lightBeatEnabled":true}}"#);
    let app = Router::new()
        .route(
            "/nacos/v1/ns/instance",
            post(|State(r): State<Shared>| async move {
                r.lock().unwrap().registers += 1;
                "ok"
            })
            .delete(|| async { "ok" }),
        )
        .route(
            "/nacos/v1/ns/instance/beat",
            put(
                move |State(r): State<Shared>, Query(q): Query<HashMap<String, String>>| {
                    let answer = beat_answer.clone();
                    async move {
                        let key = (
                            q.get("ip").cloned().unwrap_or_default(),
                            q.get("port").cloned().unwrap_or_default(),
                        );
                        let now = Instant::now();
                        let mut rec = r.lock().unwrap();
                        rec.beats += 1;
                        if let Some(prev) = rec.last.insert(key, now) {
                            let gap = now.duration_since(prev).as_secs_f64() * 1000.0;
                            rec.gaps_ms.push(gap);
                        }
                        answer
                    }
                },
            ),
        )
        .with_state(record.clone());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    eprintln!(
        "beat-stub listening on {}",
        listener.local_addr().expect("addr")
    );
    let serve = axum::serve(listener, app);
    let _ = tokio::time::timeout(Duration::from_secs(seconds), serve).await;

    let rec = record.lock().unwrap();
    let interval = interval_ms as f64;
    let mut late: Vec<f64> = rec
        .gaps_ms
        .iter()
        .map(|g| (g - interval).max(0.0))
        .collect();
    late.sort_by(f64::total_cmp);
    let missed = rec.gaps_ms.iter().filter(|g| **g > 1.5 * interval).count();
    println!(
        "{}",
        serde_json::json!({
            "registers": rec.registers,
            "beats": rec.beats,
            "instances_beating": rec.last.len(),
            "lateness_ms_p50": nacos_bench::quantile(&late, 0.5),
            "lateness_ms_p99": nacos_bench::quantile(&late, 0.99),
            "lateness_ms_max": late.last().copied().unwrap_or(0.0),
            "missed_beats": missed,
        })
    );
}
