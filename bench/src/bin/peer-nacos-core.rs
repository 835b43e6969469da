//! Our engine as a runner of `bench/peers/run.sh`: `peer-nacos-core SERVER N SECONDS PREFIX`.
//!
//! Registers N ephemeral instances `10.255.x.y:port` (never contacted) through
//! `nacos_core::Registration`, one per instance as a sidecar registering its backends
//! would, prints `registered_ms=<ms>` (from the first registration request until the
//! server accepted every one) and `ready <n>`, keeps them alive for SECONDS and exits,
//! deregistering.
//!
//! Environment:
//! - `PEER_API`: `auto` (default: gRPC first), `grpc`, `v1` (HTTP beats) or `v3`.
//! - `PEER_SERVICES=S` (default 1): the instances are spread round-robin over S services,
//!   `<PREFIX>-<peer>-<k>` for k in 0..S; with S = 1 the service is `<PREFIX>-<peer>`.
//! - `PEER_NAME` (default `nacos-core`): the `<peer>` part of the service names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nacos_core::{AddrSource, ApiVersion, Config, Registration};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, n, seconds, prefix] = args.as_slice() else {
        eprintln!("usage: peer-nacos-core SERVER N SECONDS PREFIX");
        std::process::exit(2);
    };
    let n: u32 = n.parse().expect("N");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let api = match env_or("PEER_API", "auto").as_str() {
        "auto" => ApiVersion::Auto,
        "grpc" => ApiVersion::Grpc,
        "v1" => ApiVersion::V1,
        "v3" => ApiVersion::V3,
        other => {
            eprintln!("PEER_API must be auto, grpc, v1 or v3, not {other:?}");
            std::process::exit(2);
        }
    };
    let services: u32 = env_or("PEER_SERVICES", "1").parse().expect("PEER_SERVICES");
    assert!(
        (1..=n).contains(&services),
        "PEER_SERVICES must be in 1..=N"
    );
    let peer = env_or("PEER_NAME", "nacos-core");
    // NACOS_INSTANCE_CHECK: each registered service watched for lost instances.
    let instance_check = env_or("PEER_INSTANCE_CHECK", "true") != "false";
    let service_of = |i: u32| {
        if services == 1 {
            format!("{prefix}-{peer}")
        } else {
            format!("{prefix}-{peer}-{}", i % services)
        }
    };
    let start = Instant::now();
    let registrations: Vec<Registration> = (0..n)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 255, (i / 200) as u8, (i % 200 + 1) as u8));
            let config = Config::builder()
                .server_addr(server.clone())
                .service_name(service_of(i))
                .api(api)
                .instance_check(instance_check)
                .ip(ip)
                .build()
                .expect("config");
            let reg =
                Registration::with_addr_source(config, AddrSource::Reported).expect("registration");
            reg.listening_on(SocketAddr::new(ip, 8080 + (i % 1000) as u16));
            reg
        })
        .collect();
    while registrations.iter().any(|r| !r.status().is_registered()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("registered_ms={}", start.elapsed().as_millis());
    println!("ready {n}");
    std::thread::sleep(Duration::from_secs(seconds));
    drop(registrations);
}
