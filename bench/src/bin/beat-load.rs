//! One process, many registrations: `beat-load SERVER_ADDR INSTANCES SECONDS [INTERVAL]`.
//!
//! Registers `INSTANCES` ephemeral instances of service `load-svc` (IP 10.255.0.1, ports
//! from 20000) through `nacos_core::Registration`, each beating every `INTERVAL` (default
//! `5s`), waits until all are registered, then measures this process's CPU time and
//! memory over `SECONDS` and prints one JSON line. Deregisters everything at the end.
//!
//! Besides RSS it reports the heap the program holds (counted by
//! `stats_alloc`): before the first registration, once all are registered
//! and at the end, and from those the heap per registration.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nacos_core::{AddrSource, ApiVersion, Config, Registration};

const MIB: f64 = 1024.0 * 1024.0;

#[global_allocator]
static ALLOC: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8848".into());
    let instances: u16 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let interval = args.get(3).map_or("5s", String::as_str);
    let interval: Duration = interval
        .parse::<u64>()
        .map_or_else(|_| Duration::from_secs(5), Duration::from_secs);

    let (heap_before, _) = nacos_bench::heap_live(ALLOC.stats());
    let started = Instant::now();
    let registrations: Vec<Registration> = (0..instances)
        .map(|i| {
            let config = Config::builder()
                .server_addr(server.clone())
                .service_name("load-svc")
                .api(ApiVersion::V1)
                .ip("10.255.0.1".parse::<std::net::IpAddr>().unwrap())
                .heartbeat_interval(interval)
                .build()
                .expect("config");
            let reg =
                Registration::with_addr_source(config, AddrSource::Reported).expect("registration");
            reg.listening_on(SocketAddr::from(([10, 255, 0, 1], 20000 + i)));
            reg
        })
        .collect();
    while registrations.iter().any(|r| !r.status().is_registered()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = started.elapsed();
    let cpu0 = nacos_bench::cpu_time();
    let (rss0, _) = nacos_bench::rss_mib();
    let (heap0, _) = nacos_bench::heap_live(ALLOC.stats());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = t0.elapsed();
    let cpu = nacos_bench::cpu_time() - cpu0;
    let (rss, peak) = nacos_bench::rss_mib();
    let (heap, blocks) = nacos_bench::heap_live(ALLOC.stats());
    let failures: u64 = registrations
        .iter()
        .map(|r| r.status().snapshot().consecutive_failures)
        .sum();
    let beats: u64 = registrations
        .iter()
        .map(|r| r.status().snapshot().beats)
        .sum();
    println!(
        "{}",
        serde_json::json!({
            "client": "nacos-core",
            "instances": instances,
            "seconds": wall.as_secs_f64(),
            "registered_in_s": ready.as_secs_f64(),
            "cpu_percent_of_one_core": 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            "rss_mib_after_register": rss0,
            "rss_mib": rss,
            "peak_rss_mib": peak,
            "heap_mib_before": heap_before as f64 / MIB,
            "heap_mib_after_register": heap0 as f64 / MIB,
            "heap_mib": heap as f64 / MIB,
            "heap_blocks": blocks,
            "heap_bytes_per_registration": (heap.saturating_sub(heap_before)) / usize::from(instances.max(1)),
            "beats_acknowledged": beats,
            "failing_now": failures,
        })
    );
    drop(registrations);
}
