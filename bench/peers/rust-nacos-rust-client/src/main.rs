//! Peer runner: crates.io `nacos_rust_client` 0.3.x, v1 HTTP mode.
//!
//! Usage: `nacos-rust-client-peer SERVER_ADDR N SECONDS SERVICE_PREFIX`
//!
//! Registers N ephemeral instances 10.255.x.y:port (never contacted) in
//! service `<prefix>-rust-nacos-rust-client` with `NamingClient::new_with_addrs`
//! (the crate's HTTP constructor; `ClientBuilder` would default to gRPC).
//! `register` is fire-and-forget (an actix message), so before printing
//! `ready <n>` the runner polls the server's v1 instance list with a bare
//! HTTP/1.0 GET until all N are listed. Prints `done` after SECONDS and exits
//! without deregistering (the instances expire on the server).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nacos_rust_client::client::naming_client::{Instance, NamingClient};

fn ip(i: u32) -> String {
    format!("10.255.{}.{}", i / 200, i % 200 + 1)
}

fn port(i: u32) -> u32 {
    20000 + i
}

/// Number of instances the server lists for `service` (healthy or not).
fn listed(server: &str, service: &str) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /nacos/v1/ns/instance/list?serviceName={service}&healthyOnly=false HTTP/1.0\r\nHost: {server}\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    Ok(v["hosts"].as_array().map(|a| a.len()).unwrap_or(0))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: nacos-rust-client-peer SERVER_ADDR N SECONDS SERVICE_PREFIX");
        std::process::exit(2);
    }
    let server = args[0].as_str();
    let n: u32 = args[1].parse().expect("N");
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let service = format!("{}-rust-nacos-rust-client", args[3]);

    // Without NACOS_CLIENT_IP the client finds "its" address with
    // local_ipaddress::get(), i.e. a UDP connect() towards 8.8.8.8 (no packet
    // is sent, but keep the runner strictly on loopback). Still single-threaded
    // here, so setting the variable is sound.
    if std::env::var_os("NACOS_CLIENT_IP").is_none() {
        std::env::set_var("NACOS_CLIENT_IP", "127.0.0.1");
    }
    // Namespace "public", no auth. The client spawns its own actix system thread.
    let client = NamingClient::new_with_addrs(server, "public".to_owned(), None);
    for i in 0..n {
        client.register(Instance::new_simple(
            &ip(i),
            port(i),
            &service,
            "DEFAULT_GROUP",
        ));
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match listed(server, &service) {
            Ok(k) if k >= n as usize => break,
            _ if Instant::now() > deadline => {
                eprintln!("instances not all listed after 120 s");
                std::process::exit(1);
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    println!("ready {n}");

    std::thread::sleep(Duration::from_secs_f64(seconds));
    println!("done");
    // Exit without running the client's Drop (which would deregister every instance).
    std::process::exit(0);
}
