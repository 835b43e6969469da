//! The end-to-end suite every demo app passes: a real r-nacos, the demo as a child process,
//! real signals. Each check panics with the app's log when it fails.
//!
//! A demo under test reads only `NACOS_*` and `PORT`, logs `listening on ADDR` once bound,
//! serves `GET /health` with its registration status, and stops on SIGTERM/SIGINT.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{App, RNacos, RNacosOptions, announced_port, get_text, wait_for};

/// How a demo ends on SIGTERM or SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It drains and exits with status 0 (graceful shutdown).
    Clean,
    /// It dies of the signal, as a program without a handler does.
    KilledBySignal,
}

fn start_app(bin: &str, envs: &[(&str, String)]) -> (App, u16) {
    let mut app = App::start(bin, envs);
    let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()));
    match port {
        Some(port) => (app, port),
        None => {
            let running = app.is_running();
            panic!(
                "{bin} did not announce a port (running: {running}):\n{}",
                app.output()
            )
        }
    }
}

fn base_env(server: &RNacos, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", service.to_owned()),
        ("PORT", "0".into()),
    ]
}

fn find_port(hosts: &[Value], port: u16) -> Option<Value> {
    hosts.iter().find(|h| h["port"] == port).cloned()
}

/// Waits until Nacos lists an instance on `port`.
fn listed(
    server: &RNacos,
    ns: &str,
    group: &str,
    service: &str,
    port: u16,
    within: Duration,
) -> Option<Value> {
    wait_for(within, || {
        server
            .instances(ns, group, service)
            .ok()
            .and_then(|hosts| find_port(&hosts, port))
    })
}

/// Waits until Nacos no longer lists an instance on `port`.
fn unlisted(
    server: &RNacos,
    ns: &str,
    group: &str,
    service: &str,
    port: u16,
    within: Duration,
) -> bool {
    wait_for(within, || {
        server
            .instances(ns, group, service)
            .ok()
            .filter(|hosts| find_port(hosts, port).is_none())
    })
    .is_some()
}

/// Every configured field reaches Nacos exactly: ip, port, weight, metadata, cluster,
/// group and namespace.
pub fn registers_exact_fields(bin: &str) {
    let server = RNacos::start();
    let service = "e2e-exact";
    let mut envs = base_env(&server, service);
    envs.extend([
        ("NACOS_IP", "10.20.30.40".to_owned()),
        ("NACOS_PORT", "18080".to_owned()),
        ("NACOS_WEIGHT", "2.5".to_owned()),
        (
            "NACOS_METADATA",
            r#"{"version":"1.4.2","zone":"az-1"}"#.to_owned(),
        ),
        ("NACOS_CLUSTER_NAME", "east-1".to_owned()),
        ("NACOS_GROUP", "E2E_GROUP".to_owned()),
        ("NACOS_NAMESPACE", "e2e-ns".to_owned()),
    ]);
    let (app, _port) = start_app(bin, &envs);
    let host = listed(
        &server,
        "e2e-ns",
        "E2E_GROUP",
        service,
        18080,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("not listed in e2e-ns/E2E_GROUP:\n{}", app.output()));
    assert_eq!(host["ip"], "10.20.30.40", "{host}");
    assert_eq!(host["port"], 18080, "{host}");
    assert_eq!(host["weight"].as_f64(), Some(2.5), "{host}");
    assert_eq!(host["clusterName"], "east-1", "{host}");
    assert_eq!(host["metadata"]["version"], "1.4.2", "{host}");
    assert_eq!(host["metadata"]["zone"], "az-1", "{host}");
    assert_eq!(host["healthy"], true, "{host}");
    assert_eq!(host["ephemeral"], true, "{host}");
    assert!(
        host["serviceName"]
            .as_str()
            .is_some_and(|s| s.starts_with("E2E_GROUP@@")),
        "{host}"
    );
    let elsewhere = server
        .instances("public", "E2E_GROUP", service)
        .unwrap_or_default();
    assert!(
        elsewhere.is_empty(),
        "also listed in the public namespace: {elsewhere:?}"
    );
}

/// `PORT=0` on `0.0.0.0`: the real bound port and a real (not wildcard, not loopback) IP.
pub fn registers_bound_port_and_real_ip(bin: &str) {
    let server = RNacos::start();
    let service = "e2e-port0";
    let (app, port) = start_app(bin, &base_env(&server, service));
    assert_ne!(port, 0);
    let host = listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("port {port} not listed:\n{}", app.output()));
    let ip: std::net::IpAddr = host["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an IP");
    assert!(!ip.is_unspecified() && !ip.is_loopback(), "advertised {ip}");
    let hosts = server
        .instances("public", "DEFAULT_GROUP", service)
        .unwrap_or_default();
    assert_eq!(hosts.len(), 1, "exactly one instance: {hosts:?}");
    let (status, body) =
        get_text(&format!("http://127.0.0.1:{port}/health")).expect("health answers");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(health["nacos"]["state"], "registered", "{health}");
    assert_eq!(
        health["nacos"]["instance"],
        format!("{ip}:{port}"),
        "{health}"
    );
}

/// With short server timeouts, beats keep the instance listed and healthy over several of
/// them.
pub fn beats_keep_it_healthy(bin: &str) {
    let server = RNacos::start_with(RNacosOptions {
        health_timeout_s: Some(3),
        instance_timeout_s: Some(5),
    });
    let service = "e2e-beats";
    let mut envs = base_env(&server, service);
    envs.push(("NACOS_HEARTBEAT_INTERVAL", "1s".into()));
    let (app, port) = start_app(bin, &envs);
    listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("never listed:\n{}", app.output()));
    // 12 s: four health timeouts, more than two instance timeouts.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let hosts = server
            .instances("public", "DEFAULT_GROUP", service)
            .expect("nacos answers");
        let host = find_port(&hosts, port)
            .unwrap_or_else(|| panic!("dropped by nacos despite beats:\n{}", app.output()));
        assert_eq!(
            host["healthy"],
            true,
            "unhealthy despite beats: {host}\n{}",
            app.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Nacos killed and restarted: the instance is listed again within one beat interval
/// plus a second after the server answers again.
pub fn back_after_nacos_restart(bin: &str) {
    let mut server = RNacos::start();
    let service = "e2e-restart";
    let mut envs = base_env(&server, service);
    envs.push(("NACOS_HEARTBEAT_INTERVAL", "2s".into()));
    let (app, port) = start_app(bin, &envs);
    listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("never listed:\n{}", app.output()));
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    let back = Instant::now();
    let host = listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("not back after the restart:\n{}", app.output()));
    let took = back.elapsed();
    eprintln!(
        "[e2e] {bin}: listed again {} ms after nacos came back",
        took.as_millis()
    );
    assert!(
        took <= Duration::from_secs(3),
        "listed again {took:?} after nacos came back (interval 2s + 1s)\n{}",
        app.output()
    );
    assert_eq!(
        host["metadata"]["preserved.register.source"], "RUST_NACOS",
        "{host}"
    );
}

/// A signal (`TERM` or `INT`): the instance is gone from Nacos by the time the process has
/// exited, and the process exits by itself the way `exit` says.
pub fn signal_deregisters_then_exits(bin: &str, signal: &str, exit: Exit) {
    let server = RNacos::start();
    let service = "e2e-signal";
    let (mut app, port) = start_app(bin, &base_env(&server, service));
    listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("never listed:\n{}", app.output()));
    let signalled = Instant::now();
    app.signal(signal);
    let status = app
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIG{signal}:\n{}", app.output()));
    // Checked once, right after the exit: no waiting for the server to expire it.
    let hosts = server
        .instances("public", "DEFAULT_GROUP", service)
        .expect("nacos answers");
    assert!(
        find_port(&hosts, port).is_none(),
        "still listed after the app exited: {hosts:?}\n{}",
        app.output()
    );
    eprintln!(
        "[e2e] {bin}: exited {} ms after SIG{signal}, already deregistered",
        signalled.elapsed().as_millis()
    );
    let output = app.output();
    assert!(output.contains("deregistered from nacos"), "{output}");
    match exit {
        Exit::Clean => assert!(status.success(), "exit {status}:\n{output}"),
        Exit::KilledBySignal => {
            let expected = if signal == "INT" { 2 } else { 15 };
            assert_eq!(status.signal(), Some(expected), "exit {status}:\n{output}");
        }
    }
}

/// SIGTERM while a request is in flight: the instance leaves Nacos first, and the request
/// still completes (the app drains as it would have without the layer).
pub fn drains_in_flight_requests(bin: &str) {
    let server = RNacos::start();
    let service = "e2e-drain";
    let (mut app, port) = start_app(bin, &base_env(&server, service));
    listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("never listed:\n{}", app.output()));
    let slow =
        std::thread::spawn(move || get_text(&format!("http://127.0.0.1:{port}/slow?ms=1500")));
    std::thread::sleep(Duration::from_millis(300));
    app.signal("TERM");
    assert!(
        unlisted(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            port,
            Duration::from_secs(1)
        ),
        "still listed 1 s after SIGTERM:\n{}",
        app.output()
    );
    assert!(
        app.is_running(),
        "exited before draining:\n{}",
        app.output()
    );
    let answer = slow.join().expect("request thread");
    assert_eq!(
        answer.map(|(s, _)| s),
        Ok(200),
        "in-flight request:\n{}",
        app.output()
    );
    let status = app
        .wait_exit(Duration::from_secs(10))
        .expect("exits after draining");
    assert!(status.success(), "{status}");
}

/// Nacos down when the app starts: the app serves anyway, and registers once Nacos is up.
pub fn nacos_down_at_start(bin: &str) {
    let mut server = RNacos::reserve(RNacosOptions::default());
    let service = "e2e-late";
    let (app, port) = start_app(bin, &base_env(&server, service));
    let (status, _) = get_text(&format!("http://127.0.0.1:{port}/")).expect("the app serves");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) =
        get_text(&format!("http://127.0.0.1:{port}/health")).expect("health answers");
    assert_eq!(status, 200);
    assert!(
        body.contains("registering") && body.contains("last_error"),
        "{body}"
    );
    server.restart();
    listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(7),
    )
    .unwrap_or_else(|| panic!("not registered after nacos came up:\n{}", app.output()));
}
