//! Our configuration center as a runner of `bench/peers/run.sh`:
//! `peer-nacos-core-config SERVER N SECONDS PREFIX`.
//!
//! Watches the N configs `<PREFIX>-<i>.properties` (group `DEFAULT_GROUP`, namespace
//! `public`; `run.sh` publishes them before starting the runner) through
//! `nacos_core::ConfigService`: one `watch` per config, then `ready()` on each. Prints
//! `ready_ms=<ms>` (from before the service is made until every watch has its first
//! answer), `ready <n>` (n: configs with content), then, from one task per watch waiting
//! on `changed()`, `changed <data id> <unix ms>` for every change, lives for SECONDS,
//! prints `done` and exits.
//!
//! The global allocator is `stats_alloc`'s instrumented system allocator, so the runner
//! also prints the heap it holds (bytes and blocks not freed): `heap_kb_base=` and
//! `heap_blocks_base=` before the service is made, `heap_kb_at_ready=` and
//! `heap_blocks_at_ready=` at `ready`, `heap_kb=` and `heap_blocks=` once the watcher tasks
//! run (`run.sh` passes them on).
//!
//! The config snapshot (`NACOS_CONFIG_SNAPSHOT_DIR`, on by default) goes to
//! `./nacos-snapshot` (the runner's working directory) unless `PEER_CONFIG_SNAPSHOT` names
//! another (`off`: none).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nacos_core::{Config, ConfigService, ConfigWatch};

#[global_allocator]
static ALLOC: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn print_heap(suffix: &str) {
    let (bytes, blocks) = nacos_bench::heap_live(ALLOC.stats());
    println!("heap_kb{suffix}={}", bytes / 1024);
    println!("heap_blocks{suffix}={blocks}");
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, n, seconds, prefix] = args.as_slice() else {
        eprintln!("usage: peer-nacos-core-config SERVER N SECONDS PREFIX");
        std::process::exit(2);
    };
    let n: u32 = n.parse().expect("N");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let snapshot =
        std::env::var("PEER_CONFIG_SNAPSHOT").unwrap_or_else(|_| "./nacos-snapshot".to_owned());

    print_heap("_base");
    let start = Instant::now();
    let config = Config::builder()
        .server_addr(server.clone())
        .service_name("peerbench-config")
        .config_snapshot_dir(snapshot)
        .build()
        .expect("config");
    let configs = ConfigService::new(&config).expect("config service");
    let mut watches: Vec<ConfigWatch> = (0..n)
        .map(|i| configs.watch(&format!("{prefix}-{i}.properties")))
        .collect();
    let mut with_content = 0u32;
    for watch in &mut watches {
        let item = watch.ready().await;
        if item.content.is_some() {
            with_content += 1;
        } else {
            eprintln!("{}: no content", item.key);
        }
    }
    println!("ready_ms={}", start.elapsed().as_millis());
    println!("ready {with_content}");
    print_heap("_at_ready");
    for mut watch in watches {
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                println!("changed {} {}", watch.key().data_id, unix_ms());
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    print_heap("");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("done");
    std::process::exit(0);
}
