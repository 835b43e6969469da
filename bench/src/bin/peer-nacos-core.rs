//! Our engine as a runner of `bench/peers/run.sh`: `peer-nacos-core SERVER N SECONDS PREFIX`.
//!
//! Registers N ephemeral instances `10.255.x.y:port` (never contacted) of service
//! `<PREFIX>-nacos-core` through `nacos_core::Registration`, one per instance as a sidecar
//! registering its backends would, prints `ready <n>` once the server accepted every
//! registration, beats for SECONDS (the server's interval, 5 s by default) and exits,
//! deregistering.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use nacos_core::{AddrSource, ApiVersion, Config, Registration};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, n, seconds, prefix] = args.as_slice() else {
        eprintln!("usage: peer-nacos-core SERVER N SECONDS PREFIX");
        std::process::exit(2);
    };
    let n: u32 = n.parse().expect("N");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let service = format!("{prefix}-nacos-core");
    let registrations: Vec<Registration> = (0..n)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::new(10, 255, (i / 200) as u8, (i % 200 + 1) as u8));
            let config = Config::builder()
                .server_addr(server.clone())
                .service_name(service.clone())
                .api(ApiVersion::V1)
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
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ready {n}");
    std::thread::sleep(Duration::from_secs(seconds));
    drop(registrations);
}
