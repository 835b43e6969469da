//! Peer runner: `nacos-sdk-peer SERVER_ADDR N SECONDS SERVICE_PREFIX`.
//!
//! Registers N ephemeral instances `10.255.x.y:20000+i` (never contacted) through
//! nacos-sdk's public `NamingService`, over its one gRPC connection. With
//! `PEER_SERVICES=S` (default 1) the instances are spread round-robin over S services
//! (`<prefix>-rust-nacos-sdk` if S is 1, else `<prefix>-rust-nacos-sdk-<k>`).
//!
//! nacos-sdk, like the Java 2.x client, keeps one registered instance per service per
//! client (a second `register_instance` of the same service replaces the first), so a
//! user with many instances of one service calls `batch_register_instance`: that is what
//! this runner does, one call per service, the calls one after the other.
//!
//! With `PEER_METADATA=key=value` every instance carries that one metadata entry (ours
//! carry `preserved.register.source=RUST_NACOS`; r-nacos takes instances with metadata
//! several times slower than instances without).
//!
//! Prints `registered_ms=<ms>` (first request to the last acknowledgement), then
//! `ready <n>`, lives for SECONDS, prints `done` and exits without deregistering.

use std::time::{Duration, Instant};

use nacos_sdk::api::naming::{NamingServiceBuilder, ServiceInstance};
use nacos_sdk::api::props::ClientProps;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, n, seconds, prefix] = args.as_slice() else {
        eprintln!("usage: nacos-sdk-peer SERVER_ADDR N SECONDS SERVICE_PREFIX");
        std::process::exit(2);
    };
    let n: u32 = n.parse().expect("N");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let services: u32 = std::env::var("PEER_SERVICES")
        .ok()
        .map_or(1, |s| s.parse().expect("PEER_SERVICES"));
    assert!(
        (1..=n).contains(&services),
        "PEER_SERVICES must be in 1..=N"
    );

    let props = ClientProps::new()
        .server_addr(server.clone())
        // nacos-sdk spells the "public" namespace as "".
        .namespace("")
        .app_name("peerbench")
        .naming_load_cache_at_start(false)
        .cache_dir("./nacos-cache");
    let naming = NamingServiceBuilder::new(props)
        .build()
        .await
        .expect("naming service");

    let metadata: std::collections::HashMap<String, String> = std::env::var("PEER_METADATA")
        .ok()
        .and_then(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .into_iter()
        .collect();
    let mut per_service: Vec<Vec<ServiceInstance>> = vec![Vec::new(); services as usize];
    for i in 0..n {
        per_service[(i % services) as usize].push(ServiceInstance {
            ip: format!("10.255.{}.{}", i / 200, i % 200 + 1),
            port: 20000 + i as i32,
            ephemeral: true,
            metadata: metadata.clone(),
            ..Default::default()
        });
    }
    let start = Instant::now();
    for (k, instances) in per_service.into_iter().enumerate() {
        let service = if services == 1 {
            format!("{prefix}-rust-nacos-sdk")
        } else {
            format!("{prefix}-rust-nacos-sdk-{k}")
        };
        naming
            .batch_register_instance(service, None, instances)
            .await
            .expect("batch_register_instance");
    }
    println!("registered_ms={}", start.elapsed().as_millis());
    println!("ready {n}");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("done");
    std::process::exit(0);
}
