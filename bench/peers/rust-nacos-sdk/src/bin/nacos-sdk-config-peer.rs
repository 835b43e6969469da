//! Peer runner, configuration center: `nacos-sdk-config-peer SERVER_ADDR N SECONDS PREFIX`.
//!
//! Listens to the N configs `<PREFIX>-<i>.properties` (group `DEFAULT_GROUP`, namespace
//! `public`; `run.sh` publishes them before starting the runner) through nacos-sdk's public
//! `ConfigService`: one `add_listener` per config, one listener per config, the calls one
//! after the other. nacos-sdk's listeners fire on changes only, never for the content at
//! the time of `add_listener` (it reads the config itself, then listens), so the runner
//! then reads every config with `get_config` (answered from the SDK's cache) to check that
//! it has content.
//!
//! Prints `ready_ms=<ms>` (from before the service is built until every config has
//! content), `ready <n>` (n: configs with content), then `changed <data id> <unix ms>` for
//! every change notification, lives for SECONDS, prints `done` and exits.
//!
//! The SDK's disk cache goes to `./nacos-cache` (the runner's working directory).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nacos_sdk::api::config::{ConfigChangeListener, ConfigResponse, ConfigServiceBuilder};
use nacos_sdk::api::props::ClientProps;

const GROUP: &str = "DEFAULT_GROUP";

/// Prints one line per change notification.
struct Listener;

impl ConfigChangeListener for Listener {
    fn notify(&self, config: ConfigResponse) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        println!("changed {} {ms}", config.data_id());
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, n, seconds, prefix] = args.as_slice() else {
        eprintln!("usage: nacos-sdk-config-peer SERVER_ADDR N SECONDS PREFIX");
        std::process::exit(2);
    };
    let n: u32 = n.parse().expect("N");
    let seconds: u64 = seconds.parse().expect("SECONDS");

    let start = Instant::now();
    let props = ClientProps::new()
        .server_addr(server.clone())
        // nacos-sdk spells the "public" namespace as "".
        .namespace("")
        .app_name("peerbench")
        .config_load_cache_at_start(false)
        .cache_dir("./nacos-cache");
    let configs = ConfigServiceBuilder::new(props)
        .build()
        .await
        .expect("config service");
    let data_ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}.properties")).collect();
    for data_id in &data_ids {
        configs
            .add_listener(data_id.clone(), GROUP.to_owned(), Arc::new(Listener))
            .await
            .expect("add_listener");
    }
    let mut with_content = 0u32;
    for data_id in &data_ids {
        match configs.get_config(data_id.clone(), GROUP.to_owned()).await {
            Ok(config) if !config.content().is_empty() => with_content += 1,
            Ok(_) => eprintln!("{data_id}: no content"),
            Err(e) => eprintln!("{data_id}: {e}"),
        }
    }
    println!("ready_ms={}", start.elapsed().as_millis());
    println!("ready {with_content}");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("done");
    std::process::exit(0);
}
