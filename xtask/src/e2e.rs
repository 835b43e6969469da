//! The end-to-end suite every demo app passes: a real Nacos server (r-nacos, official 2.x,
//! official 3.x: [`ServerKind`]), the demo as a child process, real signals. Each check
//! panics with the app's log when it fails.
//!
//! A demo under test reads only `NACOS_*` and `PORT`, logs `listening on ADDR` once bound,
//! serves `GET /health` with its registration status, and stops on SIGTERM/SIGINT.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Server, ServerKind, ServerOptions};
use crate::{App, announced_port, get_text, wait_for};

/// How a demo ends on SIGTERM or SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It drains and exits with status 0 (graceful shutdown).
    Clean,
    /// It dies of the signal, as a program without a handler does.
    KilledBySignal,
}

thread_local! {
    /// `NACOS_API` for the apps this thread's check starts (see [`with_api`]).
    static API: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `check` with `NACOS_API=api` (when given) for every app it starts that does not set
/// `NACOS_API` itself: the suite over an HTTP path.
pub fn with_api(api: Option<&'static str>, check: impl FnOnce()) {
    API.with(|a| a.set(api));
    check();
    API.with(|a| a.set(None));
}

/// The `NACOS_API` [`with_api`] set for this thread's check.
pub fn forced_api() -> Option<&'static str> {
    API.with(std::cell::Cell::get)
}

fn start_app(bin: &str, envs: &[(&str, String)]) -> (App, u16) {
    let mut envs = envs.to_vec();
    if let Some(api) = forced_api() {
        if !envs.iter().any(|(k, _)| *k == "NACOS_API") {
            envs.push(("NACOS_API", api.to_owned()));
        }
    }
    let mut app = App::start(bin, &envs);
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

fn base_env(server: &Server, service: &str) -> Vec<(&'static str, String)> {
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
    server: &Server,
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

/// Starts `kind` and `bin` for `service` with `extra` variables, and waits until the
/// instance is listed.
fn start_listed(
    bin: &str,
    kind: ServerKind,
    service: &str,
    extra: &[(&'static str, String)],
) -> (Server, App, u16) {
    let server = kind.start(&ServerOptions::default());
    let mut env = base_env(&server, service);
    env.extend(extra.iter().cloned());
    let (app, port) = start_app(bin, &env);
    must_be_listed(&server, service, port, &app);
    (server, app, port)
}

/// Waits (10 s at most) until Nacos lists `service`'s instance on `port` (public,
/// `DEFAULT_GROUP`); panics with `app`'s log when it does not.
fn must_be_listed(server: &Server, service: &str, port: u16, app: &App) -> Value {
    listed_within(
        server,
        service,
        port,
        Duration::from_secs(10),
        app,
        "never listed",
    )
}

/// Waits (`within` at most) until Nacos lists `service`'s instance on `port` (public,
/// `DEFAULT_GROUP`); panics with `problem` and `app`'s log when it does not.
fn listed_within(
    server: &Server,
    service: &str,
    port: u16,
    within: Duration,
    app: &App,
    problem: &str,
) -> Value {
    listed(server, "public", "DEFAULT_GROUP", service, port, within)
        .unwrap_or_else(|| panic!("{problem}:\n{}", app.output()))
}

/// Starts `bin` logging in as `nacos` with `password` (1 s beats, plus `extra` variables)
/// and waits (15 s at most) until it is listed.
fn start_with_login(
    bin: &str,
    server: &Server,
    service: &str,
    password: &str,
    extra: &[(&'static str, &str)],
) -> (App, u16) {
    let mut envs = base_env(server, service);
    envs.push(("NACOS_USERNAME", "nacos".into()));
    envs.push(("NACOS_PASSWORD", password.into()));
    envs.push(("NACOS_HEARTBEAT_INTERVAL", "1s".into()));
    envs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let (app, port) = start_app(bin, &envs);
    listed_within(
        server,
        service,
        port,
        Duration::from_secs(15),
        &app,
        "never listed with auth on",
    );
    (app, port)
}

/// Waits (`within` at most) until Nacos no longer lists `service`'s instance on `port`;
/// panics with `app`'s log when it still does, saying what it was `after`.
fn must_be_unlisted(
    server: &Server,
    service: &str,
    port: u16,
    within: Duration,
    app: &App,
    after: &str,
) {
    assert!(
        unlisted(server, "public", "DEFAULT_GROUP", service, port, within),
        "still listed {} ms after {after}:\n{}",
        within.as_millis(),
        app.output()
    );
}

/// Waits until Nacos no longer lists an instance on `port`.
fn unlisted(
    server: &Server,
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
pub fn registers_exact_fields(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
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
    // r-nacos and 2.x answer `E2E_GROUP@@e2e-exact`, 3.x's v3 list the plain name.
    assert!(
        host["serviceName"]
            .as_str()
            .is_some_and(|s| s == service || s == format!("E2E_GROUP@@{service}")),
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
pub fn registers_bound_port_and_real_ip(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
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
    // The server lists the instance as it takes the request; the app's status follows
    // the answer a moment later.
    let mut last = String::new();
    let health: Value = wait_for(Duration::from_secs(3), || {
        let (status, body) = get_text(&format!("http://127.0.0.1:{port}/health")).ok()?;
        assert_eq!(status, 200);
        let health: Value = serde_json::from_str(&body).expect("health is JSON");
        last = body;
        (health["nacos"]["state"] == "registered").then_some(health)
    })
    .unwrap_or_else(|| panic!("not registered in /health: {last}\n{}", app.output()));
    assert_eq!(
        health["nacos"]["instance"],
        format!("{ip}:{port}"),
        "{health}"
    );
    // NACOS_API=auto settles on gRPC on every server tested.
    assert_eq!(
        health["nacos"]["api"],
        forced_api().unwrap_or("grpc"),
        "{health}"
    );
    // NACOS_API=auto: gRPC on every server tested (the gRPC port is the HTTP port + 1000).
    let api = "nacos server speaks gRPC";
    assert_eq!(
        app.output().contains(api),
        forced_api().is_none(),
        "`{api}` in the log (forced API: {:?}):\n{}",
        forced_api(),
        app.output()
    );
}

/// With short server timeouts, beats keep the instance listed and healthy over several of
/// them.
pub fn beats_keep_it_healthy(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions {
        short_timeouts: true,
        ..ServerOptions::default()
    });
    let service = "e2e-beats";
    let mut envs = base_env(&server, service);
    envs.extend(Server::short_timeout_env());
    // Beats are the HTTP path's keep-alive.
    envs.push(("NACOS_API", kind.api().to_owned()));
    let (app, port) = start_app(bin, &envs);
    must_be_listed(&server, service, port, &app);
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

/// r-nacos with its gRPC port 2000 above its HTTP port: at the defaults the app finds no
/// gRPC server at + 1000 and falls back to HTTP (v1) within the bound the README states
/// (a refused port fails at once: 3 s here is ample), saying so once; with
/// `NACOS_GRPC_PORT_OFFSET=2000` it speaks gRPC.
pub fn grpc_port_elsewhere(bin: &str) {
    if crate::skip_without(ServerKind::RNacos) {
        return;
    }
    let server = crate::RNacos::start_with(crate::RNacosOptions {
        grpc_offset: Some(2000),
        ..crate::RNacosOptions::default()
    });
    let listed_on = |port: u16| {
        server
            .instances("public", "DEFAULT_GROUP", "e2e-elsewhere")
            .ok()
            .and_then(|hosts| find_port(&hosts, port))
    };
    let env = |extra: Option<(&'static str, String)>| {
        let mut env = vec![
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "e2e-elsewhere".to_owned()),
            ("PORT", "0".into()),
        ];
        env.extend(extra);
        env
    };
    let (http, port) = start_app(bin, &env(None));
    let started = Instant::now();
    wait_for(Duration::from_secs(3), || listed_on(port)).unwrap_or_else(|| {
        panic!(
            "not listed over the HTTP fallback within 3 s:\n{}",
            http.output()
        )
    });
    let took = started.elapsed();
    // The line is logged once the fallback request has been answered, so it may follow
    // the listing by a moment.
    let settled = "nacos gRPC port does not answer but HTTP does: using HTTP";
    wait_for(Duration::from_secs(3), || {
        http.output().contains(settled).then_some(())
    })
    .unwrap_or_else(|| panic!("no line saying HTTP is used:\n{}", http.output()));
    let output = http.output();
    assert_eq!(output.matches(settled).count(), 1, "{output}");
    assert!(output.contains("speaks the v1 API"), "{output}");
    let (grpc, port) = start_app(bin, &env(Some(("NACOS_GRPC_PORT_OFFSET", "2000".into()))));
    wait_for(Duration::from_secs(10), || listed_on(port))
        .unwrap_or_else(|| panic!("not listed over gRPC:\n{}", grpc.output()));
    assert!(
        grpc.output().contains("nacos server speaks gRPC"),
        "{}",
        grpc.output()
    );
    eprintln!(
        "[e2e] {bin}: gRPC port elsewhere: listed over HTTP {} ms after start; with NACOS_GRPC_PORT_OFFSET over gRPC",
        took.as_millis()
    );
}

/// `NACOS_API=auto` on HTTP because the gRPC port did not answer (r-nacos's gRPC port is
/// 2000 above its HTTP port, the app looks 1000 above): once that port answers (a TCP
/// forwarder to the real one starts there), the app's next try of gRPC
/// (`NACOS_GRPC_PROBE_INTERVAL`, 2 s here) finds it, and at its next beat (r-nacos asks for
/// one every 5 s) the instance moves to one gRPC connection: listed throughout (its HTTP
/// registration is taken off once the connection is up, and the gRPC one follows at
/// once), then delisted within 2 s of a `kill -9` (an instance kept by HTTP beats stays
/// listed for 15 s).
pub fn auto_moves_to_grpc_when_its_port_answers(bin: &str) {
    if crate::skip_without(ServerKind::RNacos) {
        return;
    }
    let server = crate::RNacos::start_with(crate::RNacosOptions {
        grpc_offset: Some(2000),
        ..crate::RNacosOptions::default()
    });
    let service = "e2e-moves-to-grpc";
    let listed_on = |port: u16| {
        server
            .instances("public", "DEFAULT_GROUP", service)
            .ok()
            .and_then(|hosts| find_port(&hosts, port))
    };
    let env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", service.to_owned()),
        ("PORT", "0".into()),
        ("NACOS_GRPC_PROBE_INTERVAL", "2s".into()),
    ];
    let (app, port) = start_app(bin, &env);
    wait_for(Duration::from_secs(5), || listed_on(port))
        .unwrap_or_else(|| panic!("not listed over HTTP:\n{}", app.output()));
    // Logged once the fallback request has been answered: may follow the listing.
    wait_for(Duration::from_secs(3), || {
        app.output().contains("using HTTP").then_some(())
    })
    .unwrap_or_else(|| panic!("no line saying HTTP is used:\n{}", app.output()));
    // The gRPC port answers from now on.
    let http = server.http_port();
    let _forwarder = forward(http + 1000, http + 2000);
    let opened = Instant::now();
    let mut absent = 0;
    let moved = wait_for(Duration::from_secs(15), || {
        if listed_on(port).is_none() {
            absent += 1;
        }
        app.output()
            .contains("nacos gRPC connection up")
            .then(Instant::now)
    })
    .unwrap_or_else(|| panic!("never moved to gRPC:\n{}", app.output()));
    // Its instance is sent on the connection at the next beat.
    let back = wait_for(Duration::from_secs(5), || {
        (app.output().matches("registered with nacos again").count() >= 1).then_some(())
    });
    back.unwrap_or_else(|| panic!("not registered over gRPC:\n{}", app.output()));
    for _ in 0..20 {
        if listed_on(port).is_none() {
            absent += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        absent <= 1,
        "absent from the list {absent} times while moving:\n{}",
        app.output()
    );
    let (_, health) = get_text(&format!("http://127.0.0.1:{port}/health")).expect("/health");
    assert!(health.contains("\"api\":\"grpc\""), "{health}");
    app.signal("KILL");
    let killed = Instant::now();
    wait_for(Duration::from_secs(2), || {
        listed_on(port).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("still listed 2 s after kill -9: not kept by the connection"));
    eprintln!(
        "[e2e] {bin}: on gRPC {} ms after its port answered; gone {} ms after kill -9",
        (moved - opened).as_millis(),
        killed.elapsed().as_millis()
    );
}

/// Listens on `port` and forwards every connection to `upstream` (both on loopback)
/// until dropped.
fn forward(port: u16, upstream: u16) -> impl Drop {
    use std::net::{TcpListener, TcpStream};
    struct Stop(Arc<std::sync::atomic::AtomicBool>, u16);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(TcpStream::connect(("127.0.0.1", self.1)));
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the forwarded port is free");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let Ok(mut client) = conn else { continue };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            // Either side's end (a killed app) ends both, as a direct connection would.
            std::thread::spawn(move || {
                drop(std::io::copy(&mut c2, &mut s2));
                drop(s2.shutdown(std::net::Shutdown::Both));
            });
            std::thread::spawn(move || {
                drop(std::io::copy(&mut server, &mut client));
                drop(client.shutdown(std::net::Shutdown::Both));
            });
        }
    });
    Stop(stop, port)
}

/// `kill -9` of the app: over gRPC (the default) the server drops the instance with its
/// connection, within 2 s (an HTTP instance stays listed until its beats time out).
pub fn crash_delisted_at_once(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let (server, app, port) = start_listed(bin, kind, "e2e-crash", &[]);
    app.signal("KILL");
    let killed = Instant::now();
    assert!(
        unlisted(
            &server,
            "public",
            "DEFAULT_GROUP",
            "e2e-crash",
            port,
            Duration::from_secs(2)
        ),
        "still listed 2 s after kill -9:\n{}",
        app.output()
    );
    eprintln!(
        "[e2e] {bin} on {kind}: gone {} ms after kill -9",
        killed.elapsed().as_millis()
    );
}

/// `NACOS_EPHEMERAL=false` at the default API: the instance is listed `ephemeral: false`,
/// sent as a gRPC `PersistentInstanceRequest` where the server says it takes one (Nacos
/// 2.3+), over HTTP otherwise (r-nacos); it stays listed after `kill -9` (the server keeps
/// it; an ephemeral one leaves within a second), and a second instance leaves on SIGTERM.
pub fn persistent_instance(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-persistent";
    let persistent = [("NACOS_EPHEMERAL", "false".to_owned())];
    let (server, app, port) = start_listed(bin, kind, service, &persistent);
    let host = must_be_listed(&server, service, port, &app);
    assert_eq!(host["ephemeral"], false, "{host}\n{}", app.output());
    let api = match kind {
        ServerKind::RNacos => "v1",
        ServerKind::Official(_) => "grpc",
    };
    let sent = format!(
        "nacos_client_request_duration_seconds_count{{api=\"{api}\",operation=\"register\"}}"
    );
    // The request is timed once its answer is in, a moment after the server listed it.
    let mut metrics = String::new();
    wait_for(Duration::from_secs(3), || {
        metrics = get_text(&format!("http://127.0.0.1:{port}/metrics"))
            .ok()?
            .1;
        metrics.lines().any(|l| l.starts_with(&sent)).then_some(())
    })
    .unwrap_or_else(|| panic!("not registered over {api}:\n{metrics}"));
    app.signal("KILL");
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(4) {
        assert!(
            listed(
                &server,
                "public",
                "DEFAULT_GROUP",
                service,
                port,
                Duration::ZERO
            )
            .is_some(),
            "gone {} ms after kill -9: not kept by the server\n{}",
            killed.elapsed().as_millis(),
            app.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut env = base_env(&server, service);
    env.extend(persistent.iter().cloned());
    let (mut second, second_port) = start_app(bin, &env);
    let host = must_be_listed(&server, service, second_port, &second);
    assert_eq!(host["ephemeral"], false, "{host}");
    let signalled = Instant::now();
    second.signal("TERM");
    let status = second
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", second.output()));
    assert!(status.success(), "exit {status}:\n{}", second.output());
    assert!(
        unlisted(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            second_port,
            Duration::from_secs(5)
        ),
        "still listed 5 s after the exit:\n{}",
        second.output()
    );
    assert!(
        listed(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            port,
            Duration::ZERO
        )
        .is_some(),
        "the crashed one left with the other"
    );
    eprintln!(
        "[e2e] {bin} on {kind}: persistent over {api}, listed 4 s after kill -9; the second gone {} ms after SIGTERM",
        signalled.elapsed().as_millis()
    );
}

/// The instance deleted behind the app's back over HTTP (`DELETE /nacos/v1/ns/instance`,
/// 3.x: the v3 client API), the app on gRPC (the default): r-nacos removes it, and the
/// app's watch of its own service sees it missing and registers it again within a few
/// seconds. The official servers keep a gRPC instance apart from HTTP ones (an HTTP delete
/// reaches only an instance registered over HTTP): it stays listed and nothing is sent.
pub fn lost_instance_comes_back(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-lost";
    let (server, app, port) = start_listed(bin, kind, service, &[]);
    let host = must_be_listed(&server, service, port, &app);
    let ip = host["ip"].as_str().expect("ip").to_owned();
    server
        .remove_instance(service, &ip, port)
        .unwrap_or_else(|e| panic!("cannot remove the instance: {e}"));
    let removed = Instant::now();
    let marker = "nacos no longer lists some of this process's instances";
    if let ServerKind::Official(_) = kind {
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            listed(
                &server,
                "public",
                "DEFAULT_GROUP",
                service,
                port,
                Duration::ZERO
            )
            .is_some(),
            "an HTTP delete took a gRPC instance off:\n{}",
            app.output()
        );
        assert!(!app.output().contains(marker), "{}", app.output());
        eprintln!("[e2e] {bin} on {kind}: an HTTP delete leaves a gRPC instance listed");
        return;
    }
    assert!(
        unlisted(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            port,
            Duration::from_secs(1)
        ),
        "the server did not remove it"
    );
    listed_within(
        &server,
        service,
        port,
        Duration::from_secs(5),
        &app,
        "not back after removal",
    );
    let took = removed.elapsed();
    assert!(app.output().contains(marker), "{}", app.output());
    eprintln!(
        "[e2e] {bin} on {kind}: a gRPC instance deleted over HTTP listed again {} ms later",
        took.as_millis()
    );
}

/// gRPC over TLS on the official 2.3.2 (`nacos.remote.server.rpc.tls.enableTls`, plain
/// text refused with `compatibility=false`; certificates made by rcgen at the run):
/// with `NACOS_TLS_CA_FILE` the demo registers over gRPC, a gateway watching it gets it
/// pushed, and a `kill -9` delists it within 2 s and reaches the gateway's list; a demo
/// importing its settings loads them and follows a change over the same connection; with the
/// wrong CA nothing registers, the log names the certificate, and nothing falls back to
/// plain HTTP. Mutual TLS (`mutualAuthEnable`): registered with a client certificate, not
/// without one.
pub fn grpc_over_tls(bin: &str, gateway: &str) {
    use crate::official::{OfficialNacos, OfficialOptions, OfficialVersion};
    let kind = ServerKind::Official(OfficialVersion::V2_3_2);
    if crate::skip_without(kind) {
        return;
    }
    let certs = crate::tls::make();
    let start = |mutual: bool| {
        // Nacos opens them as Spring resources: `file:` (else the classpath).
        let path = |p: &std::path::Path| format!("file:{}", p.display());
        let mut properties = vec![
            ("nacos.remote.server.rpc.tls.enableTls", "true".to_owned()),
            (
                "nacos.remote.server.rpc.tls.compatibility",
                "false".to_owned(),
            ),
            ("nacos.remote.server.rpc.tls.sslProvider", "JDK".to_owned()),
            (
                "nacos.remote.server.rpc.tls.certChainFile",
                path(&certs.server_cert),
            ),
            (
                "nacos.remote.server.rpc.tls.certPrivateKey",
                path(&certs.server_key),
            ),
        ];
        if mutual {
            properties.push((
                "nacos.remote.server.rpc.tls.mutualAuthEnable",
                "true".to_owned(),
            ));
            properties.push((
                "nacos.remote.server.rpc.tls.trustCollectionCertFile",
                path(&certs.ca),
            ));
        }
        Server::Official(OfficialNacos::start(
            OfficialVersion::V2_3_2,
            OfficialOptions {
                properties: properties
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                ..OfficialOptions::default()
            },
        ))
    };
    let server = start(false);
    let service = "e2e-tls";
    let ca = certs.ca.display().to_string();
    // The demo also loads its settings from the configuration center, over the same
    // TLS connection.
    let data_id = "e2e-tls.properties";
    server
        .publish_config(
            data_id,
            "DEFAULT_GROUP",
            "greeting=over tls\n",
            "properties",
        )
        .expect("config published");
    let mut env = base_env(&server, service);
    env.push(("NACOS_TLS_CA_FILE", ca.clone()));
    let (app, port) = start_app(bin, &env);
    must_be_listed(&server, service, port, &app);
    let mut with_config = env.clone();
    with_config.push(("NACOS_CONFIG_IMPORT", data_id.to_owned()));
    with_config.push(("NACOS_CONFIG_SNAPSHOT_DIR", "off".to_owned()));
    let (configured, configured_port) = start_app(bin, &with_config);
    let greeting = || {
        crate::get_json(&format!("http://127.0.0.1:{configured_port}/settings"))
            .ok()
            .and_then(|v| v["value"]["greeting"].as_str().map(str::to_owned))
    };
    assert_eq!(
        greeting().as_deref(),
        Some("over tls"),
        "{}",
        configured.output()
    );
    server
        .publish_config(data_id, "DEFAULT_GROUP", "greeting=changed\n", "properties")
        .expect("config published");
    let changed = Instant::now();
    wait_for(Duration::from_secs(10), || {
        (greeting().as_deref() == Some("changed")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "a change never reached the settings over TLS:\n{}",
            configured.output()
        )
    });
    let config_change = changed.elapsed();
    assert!(
        !configured.output().contains("using HTTP"),
        "{}",
        configured.output()
    );
    drop(configured);
    // The server lists it as it takes the request; the app's status follows its answer.
    let health = wait_for(Duration::from_secs(5), || {
        let (_, health) = get_text(&format!("http://127.0.0.1:{port}/health")).ok()?;
        health.contains("\"api\":\"grpc\"").then_some(health)
    })
    .unwrap_or_default();
    assert!(
        health.contains("\"api\":\"grpc\""),
        "{health}\n{}",
        app.output()
    );
    // A caller watching the service over TLS gets it pushed (a second provider: a list
    // left empty is held by callers for a while).
    let (_second, second_port) = start_app(bin, &env);
    must_be_listed(&server, service, second_port, &app);
    let mut gateway_env = base_env(&server, "e2e-tls-gateway");
    gateway_env.push(("NACOS_TLS_CA_FILE", ca.clone()));
    gateway_env.push(("TARGET_SERVICE", service.to_owned()));
    let (gw, gw_port) = start_app(gateway, &gateway_env);
    let knows = |port: u16| {
        get_text(&format!("http://127.0.0.1:{gw_port}/instances"))
            .ok()
            .is_some_and(|(_, body)| body.contains(&format!(":{port} weight")))
    };
    wait_for(Duration::from_secs(10), || {
        (knows(port) && knows(second_port)).then_some(())
    })
    .unwrap_or_else(|| panic!("the gateway never listed the provider:\n{}", gw.output()));
    app.signal("KILL");
    let killed = Instant::now();
    assert!(
        unlisted(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            port,
            Duration::from_secs(2)
        ),
        "still listed 2 s after kill -9 over TLS:\n{}",
        app.output()
    );
    wait_for(Duration::from_secs(5), || (!knows(port)).then_some(()))
        .unwrap_or_else(|| panic!("the gateway kept the crashed provider:\n{}", gw.output()));
    let pushed = killed.elapsed();
    // The wrong CA: nothing registers, the error names the certificate, no plain HTTP.
    let mut wrong = base_env(&server, service);
    wrong.push(("NACOS_TLS_CA_FILE", certs.other_ca.display().to_string()));
    let (bad, bad_port) = start_app(bin, &wrong);
    assert!(
        listed(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            bad_port,
            Duration::from_secs(6)
        )
        .is_none(),
        "registered although its CA did not sign the server's certificate:\n{}",
        bad.output()
    );
    let output = bad.output();
    let refusal = output
        .lines()
        .find(|l| l.to_lowercase().contains("certificate"))
        .unwrap_or_else(|| panic!("no line names the certificate:\n{output}"))
        .to_owned();
    assert!(!output.contains("using HTTP"), "{output}");
    // Mutual TLS.
    let mutual = start(true);
    let with_cert = |cert: bool| {
        let mut env = base_env(&mutual, "e2e-mtls");
        env.push(("NACOS_TLS_CA_FILE", ca.clone()));
        if cert {
            env.push((
                "NACOS_TLS_CERT_FILE",
                certs.client_cert.display().to_string(),
            ));
            env.push(("NACOS_TLS_KEY_FILE", certs.client_key.display().to_string()));
        }
        start_app(bin, &env)
    };
    let (client, client_port) = with_cert(true);
    must_be_listed(&mutual, "e2e-mtls", client_port, &client);
    let (anonymous, anonymous_port) = with_cert(false);
    assert!(
        listed(
            &mutual,
            "public",
            "DEFAULT_GROUP",
            "e2e-mtls",
            anonymous_port,
            Duration::from_secs(6)
        )
        .is_none(),
        "registered without a client certificate:\n{}",
        anonymous.output()
    );
    eprintln!(
        "[e2e] {bin} on {kind} over TLS: registered, pushed to a gateway, delisted and the gateway told {} ms after kill -9; settings loaded from the configuration center, a change in them {} ms after the publish; mutual TLS with a client certificate only; the wrong CA: {refusal}",
        pushed.as_millis(),
        config_change.as_millis()
    );
}

/// The official server moves the app's gRPC connection (`GET
/// /nacos/v2/core/loader/reloadClient`, its own rebalancing tool): the app gets a
/// `ConnectResetRequest` naming the server, answers it, reconnects there and registers
/// again; the instance is listed afterwards.
pub fn server_reset_moves_the_connection(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let (server, app, port) = start_listed(bin, kind, "e2e-reset", &[]);
    crate::reset_rust_connections(&server.addr()).expect("reloadClient");
    wait_for(Duration::from_secs(10), || {
        app.output()
            .contains("nacos server asked for a reconnection")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no ConnectResetRequest seen:\n{}", app.output()));
    wait_for(Duration::from_secs(10), || {
        (app.output().matches("nacos gRPC connection up").count() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no new connection:\n{}", app.output()));
    must_be_listed(&server, "e2e-reset", port, &app);
}

/// Nacos killed and restarted: the instance is listed again within one beat interval
/// plus a second after the server answers again.
pub fn back_after_nacos_restart(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions::default());
    let service = "e2e-restart";
    let mut envs = base_env(&server, service);
    envs.push(("NACOS_HEARTBEAT_INTERVAL", "2s".into()));
    let (app, port) = start_app(bin, &envs);
    must_be_listed(&server, service, port, &app);
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    let back = Instant::now();
    let bound = kind.effective_interval(Duration::from_secs(2)) + Duration::from_secs(1);
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
        took <= bound,
        "listed again {took:?} after nacos came back (beat interval + 1s: {bound:?})\n{}",
        app.output()
    );
    assert_eq!(
        host["metadata"]["preserved.register.source"], "RUST_NACOS",
        "{host}"
    );
}

/// A signal (`TERM` or `INT`): the instance is gone from Nacos by the time the process has
/// exited, and the process exits by itself the way `exit` says.
pub fn signal_deregisters_then_exits(bin: &str, kind: ServerKind, signal: &str, exit: Exit) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-signal";
    let (mut app, port) = start_app(bin, &base_env(&server, service));
    must_be_listed(&server, service, port, &app);
    let signalled = Instant::now();
    app.signal(signal);
    let status = app
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIG{signal}:\n{}", app.output()));
    let exited = signalled.elapsed();
    assert!(
        exited < crate::SIGNAL_EXIT_BOUND,
        "exited {} ms after SIG{signal}, beyond the documented bound:\n{}",
        exited.as_millis(),
        app.output()
    );
    // The deregistration must have been acknowledged before the exit (the log says so).
    // r-nacos shows it in its list at once; the official server updates the list it serves
    // from a cache, asynchronously, so it gets a short lag there, far below the 15-30 s
    // after which it would drop a silent instance by itself.
    let lag = match kind {
        ServerKind::RNacos => Duration::ZERO,
        ServerKind::Official(_) => Duration::from_secs(2),
    };
    let gone_at = Instant::now();
    assert!(
        unlisted(&server, "public", "DEFAULT_GROUP", service, port, lag),
        "still listed {lag:?} after the app exited:\n{}",
        app.output()
    );
    eprintln!(
        "[e2e] {bin} on {kind}: exited {} ms after SIG{signal}, deregistered; the list showed it gone {} ms after the exit",
        exited.as_millis(),
        gone_at.elapsed().as_millis()
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

/// An app with its own graceful shutdown that keeps serving `wait` after SIGTERM (the
/// binary reads `SHUTDOWN_WAIT`): the instance leaves Nacos right after the signal, every
/// request during the wait is answered, and the app exits 0 by itself after the wait.
/// Nothing kills it, however long the wait.
pub fn own_shutdown_is_never_killed(bin: &str, kind: ServerKind, wait: Duration) {
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-own-shutdown";
    let (server, mut app, port) = start_listed(
        bin,
        kind,
        service,
        &[("SHUTDOWN_WAIT", format!("{}ms", wait.as_millis()))],
    );
    let signalled = Instant::now();
    app.signal("TERM");
    must_be_unlisted(
        &server,
        service,
        port,
        Duration::from_secs(2),
        &app,
        "SIGTERM",
    );
    let gone = signalled.elapsed();
    // Requests all through the wait (but the last 300 ms, when the app starts draining).
    let answered = answers_until(&app, port, signalled, wait, "SIGTERM");
    let status = app
        .wait_exit(wait + Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "still running {} s after SIGTERM:\n{}",
                (wait + Duration::from_secs(10)).as_secs(),
                app.output()
            )
        });
    let exited = signalled.elapsed();
    assert!(
        status.success(),
        "exit {status} (143 = killed by SIGTERM):\n{}",
        app.output()
    );
    assert!(
        exited >= wait,
        "exited {} ms after SIGTERM, before its own {} ms wait:\n{}",
        exited.as_millis(),
        wait.as_millis(),
        app.output()
    );
    eprintln!(
        "[e2e] {bin} on {kind}: gone from nacos {} ms after SIGTERM, {answered} requests answered during its {} ms wait, exited 0 after {} ms",
        gone.as_millis(),
        wait.as_millis(),
        exited.as_millis()
    );
}

/// Sends `GET /` to the app every 50 ms until 300 ms before `until` after `signalled` (the
/// drain may begin then); panics on the first request that is not answered 200. Returns
/// how many were answered.
fn answers_until(app: &App, port: u16, signalled: Instant, until: Duration, signal: &str) -> usize {
    let mut answered = 0;
    while signalled.elapsed() + Duration::from_millis(300) < until {
        match get_text(&format!("http://127.0.0.1:{port}/")) {
            Ok((200, _)) => answered += 1,
            other => panic!(
                "request {} ms after {signal} failed: {other:?}\n{}",
                signalled.elapsed().as_millis(),
                app.output()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    answered
}

/// At the defaults, SIGTERM or SIGINT takes the instance out of Nacos at once, and the app
/// serves on while a caller still comes: a caller sends `GET /` every 50 ms for 4 s after
/// the signal (past the 2 s grace; every request answered), while a prober sends `GET
/// /health` and a kubelet-like `GET /` (`User-Agent: kube-probe/1.31`) every 200 ms until
/// the app is gone. The app exits [`crate::DEFAULT_QUIET`] (2 s) after the caller's last
/// request, not held by the probes, as `exit` says, and logs how long it served and how
/// many requests it took.
pub fn default_grace_serves_while_callers_learn(
    bin: &str,
    kind: ServerKind,
    signal: &str,
    exit: Exit,
) {
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-default-grace";
    let (server, mut app, port) = start_listed(bin, kind, service, &[]);
    let signalled = Instant::now();
    app.signal(signal);
    must_be_unlisted(
        &server,
        service,
        port,
        Duration::from_secs(2),
        &app,
        &format!("SIG{signal}"),
    );
    let gone = signalled.elapsed();
    let stop_probes = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop_probes.clone();
        std::thread::spawn(move || {
            let agent = crate::agent(Duration::from_secs(2));
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                drop(agent.get(format!("http://127.0.0.1:{port}/health")).call());
                drop(
                    agent
                        .get(format!("http://127.0.0.1:{port}/"))
                        .header("User-Agent", "kube-probe/1.31")
                        .call(),
                );
                sent += 2;
                std::thread::sleep(Duration::from_millis(200));
            }
            sent
        })
    };
    // A caller that goes on past the grace: every request must be answered.
    let caller_for = crate::DEFAULT_GRACE * 2;
    let answered = answers_until(
        &app,
        port,
        signalled,
        caller_for + Duration::from_millis(300),
        &format!("SIG{signal}"),
    );
    let last_call = signalled.elapsed();
    let status = app.wait_exit(Duration::from_secs(15));
    stop_probes.store(true, std::sync::atomic::Ordering::SeqCst);
    let probes = prober.join().unwrap_or(0);
    let status =
        status.unwrap_or_else(|| panic!("still running after SIG{signal}:\n{}", app.output()));
    let exited = signalled.elapsed();
    let output = app.output();
    let earliest = last_call + crate::DEFAULT_QUIET - Duration::from_millis(100);
    let latest = last_call + crate::DEFAULT_QUIET + Duration::from_secs(2);
    assert!(
        exited >= earliest && exited < latest,
        "exited {} ms after SIG{signal}, the caller's last request {} ms after it; expected {} ms (quiet window) after that, probes not holding it:\n{output}",
        exited.as_millis(),
        last_call.as_millis(),
        crate::DEFAULT_QUIET.as_millis()
    );
    assert!(
        output.contains("leaving: served"),
        "no line saying how long the app served on:\n{output}"
    );
    match exit {
        Exit::Clean => assert!(status.success(), "exit {status}:\n{output}"),
        Exit::KilledBySignal => {
            let expected = if signal == "INT" { 2 } else { 15 };
            assert_eq!(status.signal(), Some(expected), "exit {status}:\n{output}");
        }
    }
    eprintln!(
        "[e2e] {bin} on {kind} at the defaults: gone from nacos {} ms after SIG{signal}, a caller's {answered} requests answered until {} ms after it ({probes} probes alongside), exited after {} ms ({status})",
        gone.as_millis(),
        last_call.as_millis(),
        exited.as_millis()
    );
}

/// A second signal while the app drains applies the signal's default action at once.
pub fn second_signal_stops_at_once(bin: &str, kind: ServerKind, signal: &str) {
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-second-signal";
    let (server, mut app, port) =
        start_listed(bin, kind, service, &[("SHUTDOWN_WAIT", "60s".into())]);
    app.signal(signal);
    must_be_unlisted(
        &server,
        service,
        port,
        Duration::from_secs(2),
        &app,
        "SIG{signal}",
    );
    assert!(
        app.is_running(),
        "exited on the first signal:\n{}",
        app.output()
    );
    let second = Instant::now();
    app.signal(signal);
    let status = app.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "still running 5 s after a second SIG{signal}:\n{}",
            app.output()
        )
    });
    let expected = if signal == "INT" { 2 } else { 15 };
    assert_eq!(
        status.signal(),
        Some(expected),
        "exit {status}:\n{}",
        app.output()
    );
    eprintln!(
        "[e2e] {bin} on {kind}: died of the second SIG{signal} {} ms after it",
        second.elapsed().as_millis()
    );
}

/// `NACOS_HANDLE_SIGNALS=false`: the engine leaves the signals alone. An app that awaits
/// `shutdown_signal()` still deregisters and drains (the future listens itself); a plain
/// app dies of the signal at once, as it would have without the layer.
pub fn signals_left_to_the_app(bin: &str, kind: ServerKind, signal: &str, exit: Exit) {
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-no-signals";
    // The server lives until the end of the test.
    let (_server, mut app, _port) = start_listed(
        bin,
        kind,
        service,
        &[("NACOS_HANDLE_SIGNALS", "false".into())],
    );
    let signalled = Instant::now();
    app.signal(signal);
    let status = app
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIG{signal}:\n{}", app.output()));
    let exited = signalled.elapsed();
    let output = app.output();
    match exit {
        Exit::Clean => {
            assert!(status.success(), "exit {status}:\n{output}");
            assert!(output.contains("deregistered from nacos"), "{output}");
        }
        Exit::KilledBySignal => {
            let expected = if signal == "INT" { 2 } else { 15 };
            assert_eq!(status.signal(), Some(expected), "exit {status}:\n{output}");
            assert!(
                !output.contains("deregistering from nacos before shutdown"),
                "{output}"
            );
            assert!(
                exited < Duration::from_millis(500),
                "died {} ms after SIG{signal}: the engine held the signal back\n{output}",
                exited.as_millis()
            );
        }
    }
    eprintln!(
        "[e2e] {bin} on {kind} with NACOS_HANDLE_SIGNALS=false: exited {} ms after SIG{signal} ({status})",
        exited.as_millis()
    );
}

/// SIGTERM while a request is in flight: the instance leaves Nacos first, and the request
/// still completes (the app drains as it would have without the layer).
pub fn drains_in_flight_requests(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-drain";
    let (mut app, port) = start_app(bin, &base_env(&server, service));
    must_be_listed(&server, service, port, &app);
    let slow =
        std::thread::spawn(move || get_text(&format!("http://127.0.0.1:{port}/slow?ms=1500")));
    std::thread::sleep(Duration::from_millis(300));
    app.signal("TERM");
    must_be_unlisted(
        &server,
        service,
        port,
        Duration::from_secs(1),
        &app,
        "SIGTERM",
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
pub fn nacos_down_at_start(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let mut server = kind.reserve(&ServerOptions::default());
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
    let up = Instant::now();
    // Over gRPC the retry goes out as soon as the connection comes up (the reconnect waits
    // 1 s at most); over HTTP at the next backoff step.
    let bound = Duration::from_secs(if forced_api().is_none() { 3 } else { 7 });
    listed_within(
        &server,
        service,
        port,
        bound,
        &app,
        "not registered after nacos came up",
    );
    eprintln!(
        "[e2e] {bin} on {kind} (API {:?}): listed {} ms after nacos answered",
        forced_api().unwrap_or("auto"),
        up.elapsed().as_millis()
    );
}

/// However many workers or middleware clones the app has, it is one registration: exactly
/// one instance in Nacos, one `registered with nacos` line in the log, and `/health`
/// showing `registrations == 1` 2 s later (over HTTP: after the first beats,
/// `NACOS_HEARTBEAT_INTERVAL=500ms`; over gRPC the connection keeps it).
pub fn one_instance_per_process(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-once";
    let mut envs = base_env(&server, service);
    envs.push(("NACOS_HEARTBEAT_INTERVAL", "500ms".into()));
    let (app, port) = start_app(bin, &envs);
    must_be_listed(&server, service, port, &app);
    std::thread::sleep(Duration::from_secs(2));
    let hosts = server
        .instances("public", "DEFAULT_GROUP", service)
        .expect("nacos answers");
    assert_eq!(
        hosts.len(),
        1,
        "exactly one instance: {hosts:?}\n{}",
        app.output()
    );
    let (status, body) =
        get_text(&format!("http://127.0.0.1:{port}/health")).expect("health answers");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(health["nacos"]["state"], "registered", "{health}");
    assert_eq!(health["nacos"]["registrations"], 1, "{health}");
    let output = app.output();
    let registered = output
        .lines()
        .filter(|l| l.contains("registered with nacos"))
        .count();
    assert_eq!(
        registered, 1,
        "one `registered with nacos` line expected:\n{output}"
    );
}

/// An app that stops its server without a signal (`POST /shutdown`, through actix's
/// `ServerHandle`): the instance is gone from Nacos by the time the process has exited
/// with status 0, deregistered by the handle drop, not by a signal.
pub fn stop_without_signal_deregisters(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-stop";
    let (mut app, port) = start_app(bin, &base_env(&server, service));
    must_be_listed(&server, service, port, &app);
    let answer = crate::agent(Duration::from_secs(5))
        .post(format!("http://127.0.0.1:{port}/shutdown"))
        .send_empty()
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string());
    assert_eq!(answer, Ok(202), "POST /shutdown:\n{}", app.output());
    let status = app
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after POST /shutdown:\n{}", app.output()));
    // Checked once, right after the exit: no waiting for the server to expire it.
    let hosts = server
        .instances("public", "DEFAULT_GROUP", service)
        .expect("nacos answers");
    let output = app.output();
    assert!(
        find_port(&hosts, port).is_none(),
        "still listed after the app exited: {hosts:?}\n{output}"
    );
    assert!(status.success(), "exit {status}:\n{output}");
    assert!(output.contains("deregistered from nacos"), "{output}");
    assert!(
        !output.contains("deregistering from nacos before shutdown")
            && !output.contains("SIGTERM: "),
        "a signal was involved:\n{output}"
    );
}

/// The instance removed behind the app's back (by an operator, or expired): the official
/// server answers the next light beat with 20404 (v1) or the next renewal with 21003 (v3),
/// and the app registers again at once; r-nacos re-creates it from the beat itself. Either
/// way it is listed again within a beat interval (r-nacos imposes 5 s) plus a second.
pub fn back_after_removal(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-removed";
    let mut envs = base_env(&server, service);
    envs.push(("NACOS_HEARTBEAT_INTERVAL", "1s".into()));
    // 20404 / 21003 are the HTTP path's answers to an unknown instance.
    envs.push(("NACOS_API", kind.api().to_owned()));
    let (app, port) = start_app(bin, &envs);
    let host = listed(
        &server,
        "public",
        "DEFAULT_GROUP",
        service,
        port,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("never listed:\n{}", app.output()));
    // Two beats: the first is full; only a light beat (v1) gets 20404.
    wait_for(Duration::from_secs(10), || {
        let (_, body) = get_text(&format!("http://127.0.0.1:{port}/health")).ok()?;
        let health: Value = serde_json::from_str(&body).ok()?;
        (health["nacos"]["beats"].as_u64()? >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("fewer than 2 beats:\n{}", app.output()));
    let ip = host["ip"].as_str().expect("ip").to_owned();
    server
        .remove_instance(service, &ip, port)
        .unwrap_or_else(|e| panic!("cannot remove the instance: {e}"));
    let removed = Instant::now();
    assert!(
        unlisted(
            &server,
            "public",
            "DEFAULT_GROUP",
            service,
            port,
            Duration::from_secs(1)
        ),
        "the server did not remove it"
    );
    listed_within(
        &server,
        service,
        port,
        Duration::from_secs(5),
        &app,
        "not back after removal",
    );
    let took = removed.elapsed();
    eprintln!(
        "[e2e] {bin} on {kind}: listed again {} ms after removal",
        took.as_millis()
    );
    let bound = kind.effective_interval(Duration::from_secs(1)) + Duration::from_secs(1);
    assert!(
        took <= bound,
        "back after {took:?} (beat interval + 1s: {bound:?})"
    );
    if kind.reports_unknown_instances() {
        let code = if kind.api() == "v3" {
            "code=21003"
        } else {
            "code=20404"
        };
        let output = app.output();
        assert!(
            output.contains("nacos no longer knows this instance") && output.contains(code),
            "expected a re-registration on {code}:\n{output}"
        );
    }
}

/// Authentication on (official server, short token lifetime): the app logs in with
/// `NACOS_USERNAME`/`NACOS_PASSWORD`, registers, and renews its token before it expires
/// without losing the instance.
pub fn auth_token_renewed(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let ttl_s = 8;
    let server = kind.start(&ServerOptions {
        auth: true,
        token_ttl_s: Some(ttl_s),
        password: Some("e2e-Secret-1".into()),
        ..ServerOptions::default()
    });
    let service = "e2e-auth";
    // Beats (HTTP) send a request every second, each needing a valid token.
    let (app, port) = start_with_login(
        bin,
        &server,
        service,
        "e2e-Secret-1",
        &[("NACOS_API", kind.api())],
    );
    // Two and a half token lifetimes: every request in between needs a valid token.
    let until = Instant::now() + Duration::from_secs(u64::from(ttl_s) * 5 / 2);
    while Instant::now() < until {
        let hosts = server
            .instances("public", "DEFAULT_GROUP", service)
            .expect("nacos answers");
        let host = find_port(&hosts, port)
            .unwrap_or_else(|| panic!("lost the instance with auth on:\n{}", app.output()));
        assert_eq!(host["healthy"], true, "{host}\n{}", app.output());
        std::thread::sleep(Duration::from_millis(500));
    }
    let output = app.output();
    let logins = output.matches("logged in to nacos").count();
    assert!(
        logins >= 3,
        "{logins} logins in {} s of {ttl_s} s tokens:\n{output}",
        ttl_s * 5 / 2
    );
    assert!(
        !output.contains("password"),
        "a password in the log?\n{output}"
    );
    assert!(
        !output.contains("e2e-Secret-1"),
        "the password in the log:\n{output}"
    );
    assert!(
        !output.contains("failed"),
        "a failure with auth on:\n{output}"
    );
}

/// Authentication on over gRPC (short token lifetime): a connection that stayed quiet for
/// two and a half token lifetimes still deregisters on SIGTERM, with a token logged in
/// for anew, and no failure.
pub fn auth_token_renewed_grpc(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let ttl_s = 8;
    let server = kind.start(&ServerOptions {
        auth: true,
        token_ttl_s: Some(ttl_s),
        password: Some("e2e-Secret-1".into()),
        ..ServerOptions::default()
    });
    let service = "e2e-auth-grpc";
    let (mut app, port) = start_with_login(bin, &server, service, "e2e-Secret-1", &[]);
    std::thread::sleep(Duration::from_secs(u64::from(ttl_s) * 5 / 2));
    app.signal("TERM");
    must_be_unlisted(
        &server,
        service,
        port,
        Duration::from_secs(3),
        &app,
        "SIGTERM with an expired token",
    );
    let _ = app.wait_exit(Duration::from_secs(10));
    let output = app.output();
    assert!(output.contains("nacos server speaks gRPC"), "{output}");
    assert!(output.contains("deregistered from nacos"), "{output}");
    let logins = output.matches("logged in to nacos").count();
    assert!(logins >= 2, "{logins} logins:\n{output}");
    assert!(
        !output.contains("e2e-Secret-1"),
        "the password in the log:\n{output}"
    );
    assert!(
        !output.contains("failed"),
        "a failure with auth on:\n{output}"
    );
}

/// With auth on and `RUST_LOG=trace` for every crate (reqwest and hyper included), through
/// several token renewals, a 403 and a Nacos restart: the whole log holds neither the
/// password nor any token (Nacos tokens are JWTs, `eyJ...`; a redacted one reads
/// `accessToken=<redacted>`).
pub fn auth_secrets_never_logged(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let password = format!("e2e-Pw-{:08x}", fastrand::u32(..));
    let ttl_s = 5;
    let mut server = kind.start(&ServerOptions {
        auth: true,
        token_ttl_s: Some(ttl_s),
        password: Some(password.clone()),
        ..ServerOptions::default()
    });
    let service = "e2e-auth-trace";
    let (app, port) = start_with_login(bin, &server, service, &password, &[("RUST_LOG", "trace")]);
    // Two token lifetimes, then a restart (the token of the old run may be refused).
    std::thread::sleep(Duration::from_secs(u64::from(ttl_s) * 2));
    server.restart();
    listed_within(
        &server,
        service,
        port,
        Duration::from_secs(30),
        &app,
        "not back after a restart with auth on",
    );
    let output = app.output();
    let token = server.login().ok();
    assert!(
        output.contains("logged in to nacos"),
        "no login at trace level?\n{output}"
    );
    assert!(!output.contains(&password), "the password in the trace log");
    assert!(
        !output.contains("eyJ"),
        "a token (JWT) in the trace log: {}",
        output
            .lines()
            .find(|l| l.contains("eyJ"))
            .unwrap_or_default()
    );
    if let Some(token) = token {
        assert!(
            !output.contains(&token),
            "the current token in the trace log"
        );
    }
    eprintln!(
        "[e2e] {bin} on {kind}: {} lines of trace log, {} logins, no password, no token",
        output.lines().count(),
        output.matches("logged in to nacos").count()
    );
}

/// A wrong password: one clear error in the log naming the variables to check, no storm
/// of logins, and the app still serves.
pub fn auth_wrong_password(bin: &str, kind: ServerKind) {
    if crate::skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions {
        auth: true,
        ..ServerOptions::default()
    });
    let service = "e2e-badpw";
    let mut envs = base_env(&server, service);
    envs.push(("NACOS_USERNAME", "nacos".into()));
    envs.push(("NACOS_PASSWORD", "not-the-password".into()));
    let (app, port) = start_app(bin, &envs);
    std::thread::sleep(Duration::from_secs(8));
    let (status, _) = get_text(&format!("http://127.0.0.1:{port}/")).expect("the app serves");
    assert_eq!(status, 200);
    let output = app.output();
    let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error expected:\n{output}");
    assert!(errors[0].contains("nacos login"), "{}", errors[0]);
    assert!(
        !output.contains("not-the-password"),
        "the password in the log:\n{output}"
    );
    let attempts = output.matches("logged in").count()
        + output.matches("login refused").count()
        + output.matches("login failed").count();
    assert!(attempts <= 3, "{attempts} login attempts in 8 s:\n{output}");
    let hosts = server
        .instances("public", "DEFAULT_GROUP", service)
        .unwrap_or_default();
    assert!(
        hosts.is_empty(),
        "registered with a wrong password? {hosts:?}"
    );
}

/// Generates the suite every demo runs, once per server: a module `rnacos`, `nacos2`
/// (official 2.x) and `nacos3` (official 3.x), each with one `#[test]` per check above.
/// `$bin` is the demo binary's path (`env!("CARGO_BIN_EXE_...")`), visible in the
/// calling module.
#[macro_export]
macro_rules! e2e_suite {
    ($bin:expr) => {
        $crate::e2e_suite!(@server rnacos, $crate::server::ServerKind::RNacos, $bin, None, {
            #[test]
            fn crash_delisted_at_once() {
                suite::crash_delisted_at_once($bin, KIND);
            }
            #[test]
            fn persistent_instance_outlives_a_crash() {
                suite::persistent_instance($bin, KIND);
            }
            #[test]
            fn lost_instance_comes_back() {
                suite::lost_instance_comes_back($bin, KIND);
            }
        });
        $crate::e2e_suite!(@server nacos2,
            $crate::server::ServerKind::Official($crate::official::OfficialVersion::V2_3_2), $bin,
            None, {
            #[test]
            fn crash_delisted_at_once() {
                suite::crash_delisted_at_once($bin, KIND);
            }
            #[test]
            fn persistent_instance_outlives_a_crash() {
                suite::persistent_instance($bin, KIND);
            }
            #[test]
            fn lost_instance_comes_back() {
                suite::lost_instance_comes_back($bin, KIND);
            }
        });
        $crate::e2e_suite!(@server nacos3,
            $crate::server::ServerKind::Official($crate::official::OfficialVersion::V3_1_0), $bin,
            None, {
            #[test]
            fn crash_delisted_at_once() {
                suite::crash_delisted_at_once($bin, KIND);
            }
            #[test]
            fn persistent_instance_outlives_a_crash() {
                suite::persistent_instance($bin, KIND);
            }
            #[test]
            fn lost_instance_comes_back() {
                suite::lost_instance_comes_back($bin, KIND);
            }
        });
        // The same lifecycle over the HTTP fallbacks.
        $crate::e2e_suite!(@server rnacos_http, $crate::server::ServerKind::RNacos, $bin,
            Some("v1"), {});
        $crate::e2e_suite!(@server nacos2_http,
            $crate::server::ServerKind::Official($crate::official::OfficialVersion::V2_3_2), $bin,
            Some("v1"), {});
        $crate::e2e_suite!(@server nacos3_http,
            $crate::server::ServerKind::Official($crate::official::OfficialVersion::V3_1_0), $bin,
            Some("v3"), {});
    };
    (@server $name:ident, $kind:expr, $bin:expr, $api:expr, { $($extra:tt)* }) => {
        mod $name {
            use super::*;
            use $crate::e2e::{self as suite, Exit};
            const KIND: $crate::server::ServerKind = $kind;

            /// Each check of this module runs with `NACOS_API` set to this, when given.
            fn run(check: impl FnOnce()) {
                suite::with_api($api, check)
            }

            $($extra)*

            #[test]
            fn registers_exact_fields() {
                run(|| suite::registers_exact_fields($bin, KIND));
            }
            #[test]
            fn registers_bound_port_and_real_ip() {
                run(|| suite::registers_bound_port_and_real_ip($bin, KIND));
            }
            #[test]
            fn one_instance_per_process() {
                run(|| suite::one_instance_per_process($bin, KIND));
            }
            #[test]
            fn beats_keep_it_healthy() {
                run(|| suite::beats_keep_it_healthy($bin, KIND));
            }
            #[test]
            fn back_after_nacos_restart() {
                run(|| suite::back_after_nacos_restart($bin, KIND));
            }
            #[test]
            fn back_after_removal() {
                run(|| suite::back_after_removal($bin, KIND));
            }
            #[test]
            fn sigterm_deregisters_then_exits() {
                run(|| suite::signal_deregisters_then_exits($bin, KIND, "TERM", Exit::Clean));
            }
            #[test]
            fn sigint_deregisters_then_exits() {
                run(|| suite::signal_deregisters_then_exits($bin, KIND, "INT", Exit::Clean));
            }
            #[test]
            fn drains_in_flight_requests() {
                run(|| suite::drains_in_flight_requests($bin, KIND));
            }
            #[test]
            fn nacos_down_at_start() {
                run(|| suite::nacos_down_at_start($bin, KIND));
            }
        }
    };
}

/// A 3-node r-nacos cluster, the app given all three: one node killed (node 1, which
/// initialised the raft group) keeps the instance listed and healthy on both survivors for
/// 18 s (over gRPC a connection to the dead node moves to a survivor and registers again at
/// once), no failure left in the status; the node back lists the instance again.
pub fn cluster_node_killed(bin: &str) {
    if crate::skip_without(ServerKind::RNacos) {
        return;
    }
    let mut cluster = crate::RNacosCluster::start(3);
    let service = "e2e-cluster";
    let (app, port) = start_app(
        bin,
        &[
            ("NACOS_SERVER_ADDR", cluster.addr()),
            ("NACOS_SERVICE_NAME", service.to_owned()),
            ("PORT", "0".into()),
        ],
    );
    let on = |node: &crate::RNacos| -> Option<Value> {
        node.instances("public", "DEFAULT_GROUP", service)
            .ok()
            .and_then(|hosts| find_port(&hosts, port))
    };
    wait_for(Duration::from_secs(20), || {
        cluster.nodes.iter().all(|n| on(n).is_some()).then_some(())
    })
    .unwrap_or_else(|| panic!("not listed on every node:\n{}", app.output()));
    cluster.nodes[0].stop();
    let killed = Instant::now();
    // Three beat intervals (r-nacos: 5 s): a missed beat would show as unhealthy after
    // its 15 s timeout, so look until then and a little beyond.
    while killed.elapsed() < Duration::from_secs(18) {
        for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
            let host = on(node).unwrap_or_else(|| {
                panic!(
                    "not listed on node {} {} ms after node 1 died:\n{}",
                    i + 1,
                    killed.elapsed().as_millis(),
                    app.output()
                )
            });
            assert_eq!(host["healthy"], true, "node {}: {host}", i + 1);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, health) = get_text(&format!("http://127.0.0.1:{port}/health")).expect("health");
    let health: Value = serde_json::from_str(&health).expect("health is JSON");
    assert_eq!(
        health["nacos"]["consecutive_failures"],
        0,
        "failures left while a node was down: {health}\n{}",
        app.output()
    );
    assert_eq!(health["nacos"]["state"], "registered", "{health}");
    cluster.nodes[0].restart();
    let back = Instant::now();
    wait_for(Duration::from_secs(30), || on(&cluster.nodes[0])).unwrap_or_else(|| {
        panic!(
            "node 1 back, but the instance is not listed there:\n{}",
            app.output()
        )
    });
    eprintln!(
        "[e2e] 3-node r-nacos cluster: node 1 killed, the instance stayed listed and healthy on nodes 2 and 3 for 18 s ({} registrations: a connection to node 1 moves to a survivor and registers again); node 1 back listed it {} ms after its restart",
        health["nacos"]["registrations"],
        back.elapsed().as_millis()
    );
}

/// A 3-node official Nacos 2.3.2 cluster (embedded storage), the demo given the address
/// list, a gateway watching it:
/// - `kill -9` of a second provider with no node lost: gone from every node within 3 s
///   (1.0-1.7 s on an idle machine), and from the gateway's list;
/// - `kill -9` of the node holding the demo's connection (`/health` names it): the instance
///   never missing from the survivors' lists for 15 s, and the gateway keeps getting pushes
///   (a provider started after the loss reaches it);
/// - the node back: it lists the instance again, and no node and no gateway lists it twice.
pub fn official_cluster_node_loss(bin: &str, gateway: &str) {
    use crate::official::{OfficialCluster, OfficialNacos, OfficialOptions, OfficialVersion};
    let kind = ServerKind::Official(OfficialVersion::V2_3_2);
    if crate::skip_without(kind) {
        return;
    }
    let mut cluster =
        OfficialCluster::start(OfficialVersion::V2_3_2, 3, OfficialOptions::default());
    let service = "e2e-official-cluster";
    let addr = cluster.addr();
    let env = |name: &str| {
        vec![
            ("NACOS_SERVER_ADDR", addr.clone()),
            ("NACOS_SERVICE_NAME", name.to_owned()),
            ("PORT", "0".to_owned()),
        ]
    };
    // How many times a node lists `port` (None: it did not answer).
    let count_on = |node: &OfficialNacos, port: u16| -> Option<usize> {
        let hosts = node.instances("public", "DEFAULT_GROUP", service).ok()?;
        Some(hosts.iter().filter(|h| h["port"] == port).count())
    };
    let on_every_node = |nodes: &[OfficialNacos], port: u16, times: usize| {
        nodes.iter().all(|n| count_on(n, port) == Some(times))
    };
    let (app, port) = start_app(bin, &env(service));
    wait_for(Duration::from_secs(20), || {
        on_every_node(&cluster.nodes, port, 1).then_some(())
    })
    .unwrap_or_else(|| panic!("not listed on every node:\n{}", app.output()));
    let mut gateway_env = env("e2e-official-cluster-gateway");
    gateway_env.push(("TARGET_SERVICE", service.to_owned()));
    let (gw, gw_port) = start_app(gateway, &gateway_env);
    // How many times the gateway lists `port`.
    let gateway_lists = |port: u16| {
        get_text(&format!("http://127.0.0.1:{gw_port}/instances"))
            .ok()
            .map(|(_, body)| body.matches(&format!(":{port} weight")).count())
    };
    // A crash with every node up.
    let (second, second_port) = start_app(bin, &env(service));
    wait_for(Duration::from_secs(20), || {
        (on_every_node(&cluster.nodes, second_port, 1) && gateway_lists(second_port) == Some(1))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the second provider never reached every node and the gateway:\n{}\n{}",
            second.output(),
            gw.output()
        )
    });
    second.signal("KILL");
    let killed = Instant::now();
    // Distro sends the removal to the other nodes after its 1 s sync delay: 1.0-1.7 s seen
    // on an idle machine; 3 s leaves room for a loaded one.
    let gone = wait_for(Duration::from_secs(3), || {
        on_every_node(&cluster.nodes, second_port, 0).then(|| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "a crashed provider still listed on a node 3 s after kill -9:\n{}",
            second.output()
        )
    });
    wait_for(Duration::from_secs(5), || {
        (gateway_lists(second_port) == Some(0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the gateway kept the crashed provider:\n{}", gw.output()));
    let told = killed.elapsed();
    // The node holding the demo's connection dies.
    let health = || -> Value {
        let (_, text) =
            get_text(&format!("http://127.0.0.1:{port}/health")).expect("/health answers");
        serde_json::from_str(&text).expect("/health is JSON")
    };
    let before = health();
    let holder = before["nacos"]["server"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let dead = cluster
        .nodes
        .iter()
        .position(|n| holder.ends_with(&format!(":{}", n.grpc_port())))
        .unwrap_or_else(|| panic!("/health names no node of the cluster as its server: {before}"));
    cluster.nodes[dead].stop();
    let lost = Instant::now();
    let survivors: Vec<&OfficialNacos> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| (i != dead).then_some(n))
        .collect();
    let mut third = None;
    let mut polls = 0;
    while lost.elapsed() < Duration::from_secs(15) {
        for node in &survivors {
            let times = count_on(node, port);
            assert_eq!(
                times,
                Some(1),
                "{} ms after the node holding its connection died, {} lists the instance {times:?} times\n{}",
                lost.elapsed().as_millis(),
                node.addr(),
                app.output()
            );
        }
        assert_eq!(
            gateway_lists(port),
            Some(1),
            "the gateway lost the provider:\n{}",
            gw.output()
        );
        polls += 1;
        if third.is_none() && lost.elapsed() > Duration::from_secs(2) {
            third = Some(start_app(bin, &env(service)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (third, third_port) = third.expect("started during the loss");
    let pushed = wait_for(Duration::from_secs(10), || {
        (gateway_lists(third_port) == Some(1)).then_some(())
    });
    assert!(
        pushed.is_some(),
        "a provider started after the node loss never reached the gateway:\n{}\n{}",
        third.output(),
        gw.output()
    );
    let after = health();
    assert_eq!(after["nacos"]["state"], "registered", "{after}");
    assert_ne!(
        after["nacos"]["server"], before["nacos"]["server"],
        "{after}"
    );
    // The node comes back: listed there, never twice anywhere.
    cluster.nodes[dead].restart();
    let back = Instant::now();
    wait_for(Duration::from_secs(30), || {
        (count_on(&cluster.nodes[dead], port) == Some(1)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the node back does not list the instance:\n{}",
            app.output()
        )
    });
    let relisted = back.elapsed();
    for _ in 0..10 {
        assert!(
            on_every_node(&cluster.nodes, port, 1),
            "listed twice or not at all on a node after the node came back"
        );
        assert!(
            on_every_node(&cluster.nodes, third_port, 1),
            "the third provider listed twice or not at all"
        );
        assert_eq!(gateway_lists(port), Some(1), "{}", gw.output());
        std::thread::sleep(Duration::from_millis(300));
    }
    // Leaving: the demo whose node died says that the survivors may still list it; the one
    // that connected after the loss says nothing of the kind.
    let warning = "went away without closing it";
    app.signal("TERM");
    third.signal("TERM");
    let said = wait_for(Duration::from_secs(10), || {
        let out = app.output();
        (out.contains("deregistered from nacos")
            && out.contains(warning)
            && third.output().contains("deregistered from nacos"))
        .then_some(out)
    })
    .unwrap_or_else(|| panic!("no deregistration on SIGTERM:\n{}", app.output()));
    let line = said
        .lines()
        .find(|l| l.contains(warning))
        .unwrap_or_else(|| panic!("no warning about the copies on the survivors:\n{said}"))
        .to_owned();
    assert!(!third.output().contains(warning), "{}", third.output());
    eprintln!("[e2e] leaving after the node loss: {line}");
    eprintln!(
        "[e2e] official 2.3.2 cluster of 3: kill -9 of a provider gone from every node in {} ms, the gateway told in {} ms; the node holding the connection killed: listed once on both survivors at {polls} polls over 15 s, moved from {holder} to {}, a provider started after the loss pushed to the gateway; the node back listed it {} ms after its restart, once",
        gone.as_millis(),
        told.as_millis(),
        after["nacos"]["server"],
        relisted.as_millis()
    );
}

/// `GET /metrics` of a demo: Prometheus's own `promtool check metrics` accepts it, and the
/// counters move with the lifecycle: registered and beating, then Nacos down for more than
/// a beat interval and back (a failed beat, a registration again).
pub fn metrics_move_with_the_lifecycle(bin: &str) {
    let kind = ServerKind::RNacos;
    if crate::skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions::default());
    let service = "e2e-metrics";
    let mut envs = base_env(&server, service);
    // Beats are the HTTP path's; `metrics_over_grpc` covers the connection's series.
    envs.push(("NACOS_API", "v1".into()));
    let (app, port) = start_app(bin, &envs);
    must_be_listed(&server, service, port, &app);
    let scrape = || {
        get_text(&format!("http://127.0.0.1:{port}/metrics"))
            .expect("/metrics answers")
            .1
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // A beat (r-nacos: every 5 s, the first 2.5-5 s after registering).
    let text = wait_for(Duration::from_secs(10), || {
        let text = scrape();
        (value(&text, r#"nacos_client_beats_total{outcome="ok"}"#) >= 1.0).then_some(text)
    })
    .unwrap_or_else(|| panic!("no beat counted:\n{}", scrape()));
    assert_eq!(
        value(&text, r#"nacos_client_registrations{state="registered"}"#),
        1.0,
        "{text}"
    );
    assert!(
        value(&text, r#"nacos_client_registrations_total{outcome="ok"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("nacos_client_request_duration_seconds"),
        "{text}"
    );
    check_with_promtool(&text);

    // Nacos down for longer than a beat interval, then back.
    server.stop();
    std::thread::sleep(Duration::from_secs(6));
    server.restart();
    must_be_listed(&server, service, port, &app);
    let text = wait_for(Duration::from_secs(10), || {
        let text = scrape();
        (value(&text, r#"nacos_client_registrations_total{outcome="ok"}"#) >= 2.0).then_some(text)
    })
    .unwrap_or_else(|| panic!("no second registration counted:\n{}", scrape()));
    assert!(
        value(&text, r#"nacos_client_beats_total{outcome="failed"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            r#"nacos_client_reregistrations_total{reason="failure"}"#
        ) >= 1.0,
        "{text}"
    );
    check_with_promtool(&text);
    eprintln!(
        "[e2e] {bin}: /metrics passes promtool; after a Nacos outage: {} failed beats, {} registrations",
        value(&text, r#"nacos_client_beats_total{outcome="failed"}"#),
        value(&text, r#"nacos_client_registrations_total{outcome="ok"}"#)
    );
}

/// `promtool check metrics` on `text`; without promtool, a line saying so (a failure under
/// `cargo xtask test` and in CI, which install it).
/// `GET /metrics` over gRPC (the default): the connection is up, requests are timed with
/// `api="grpc"`, and a Nacos restart counts a reconnection and the registration sent
/// again on it; `promtool check metrics` accepts the text.
pub fn metrics_over_grpc(bin: &str) {
    let kind = ServerKind::RNacos;
    if crate::skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions::default());
    let service = "e2e-metrics-grpc";
    let (app, port) = start_app(bin, &base_env(&server, service));
    must_be_listed(&server, service, port, &app);
    let scrape = || {
        get_text(&format!("http://127.0.0.1:{port}/metrics"))
            .expect("/metrics answers")
            .1
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // The registration is timed once its answer is in, a moment after the server
    // listed it.
    let timed = r#"nacos_client_request_duration_seconds_count{api="grpc",operation="register"}"#;
    let text = wait_for(Duration::from_secs(3), || {
        let text = scrape();
        text.contains(timed).then_some(text)
    })
    .unwrap_or_else(|| panic!("no gRPC registration timed:\n{}", scrape()));
    assert_eq!(
        value(&text, "nacos_client_grpc_connection_up"),
        1.0,
        "{text}"
    );
    check_with_promtool(&text);
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    must_be_listed(&server, service, port, &app);
    // The registration on the new connection is counted as it is sent; the connection
    // once everything is sent again on it: a scrape in between sees the one without the
    // other, so the three are waited for together.
    let text = wait_for(Duration::from_secs(10), || {
        let text = scrape();
        (value(
            &text,
            r#"nacos_client_reregistrations_total{reason="reconnect"}"#,
        ) >= 1.0
            && value(&text, "nacos_client_grpc_connections_total") >= 2.0
            && value(&text, "nacos_client_grpc_connection_up") == 1.0)
            .then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "no registration on a new connection counted, or the connection not up:\n{}",
            scrape()
        )
    });
    check_with_promtool(&text);
}

fn check_with_promtool(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new(crate::promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let required = [crate::REQUIRE_SERVERS, "CI"]
                .iter()
                .any(|v| std::env::var_os(v).is_some());
            assert!(
                !required,
                "promtool is needed (Debian package prometheus): {e}"
            );
            eprintln!("skipped: promtool check (Debian package prometheus, installed by CI): {e}");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a kubelet does on pod deletion, replayed: SIGTERM, then SIGKILL once
/// `termination_grace` has passed, with its readiness probe (`GET /health`,
/// `User-Agent: kube-probe/1.31`) every 500 ms until the end. With
/// `NACOS_DEREGISTER_GRACE=grace`: the instance is gone from Nacos while the app still
/// answers, a caller that stops 1 s after the signal (a push caller learning of the
/// deregistration) has no request fail, the probes do not hold the app, and it exits by
/// itself before the SIGKILL would come.
pub fn kubelet_sequence(bin: &str, grace: Duration, termination_grace: Duration) {
    let kind = ServerKind::RNacos;
    if crate::skip_without(kind) {
        return;
    }
    let service = "e2e-kubelet";
    let (server, mut app, port) = start_listed(
        bin,
        kind,
        service,
        &[("NACOS_DEREGISTER_GRACE", format!("{}ms", grace.as_millis()))],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sigterm_at = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let probes = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let agent = crate::agent(Duration::from_secs(1));
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                drop(
                    agent
                        .get(format!("http://127.0.0.1:{port}/health"))
                        .header("User-Agent", "kube-probe/1.31")
                        .call(),
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let load = {
        let stop = stop.clone();
        let sigterm_at = sigterm_at.clone();
        std::thread::spawn(move || {
            let agent = crate::agent(Duration::from_secs(5));
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst)
                && sigterm_at
                    .get()
                    .is_none_or(|at| at.elapsed() < Duration::from_secs(1))
            {
                let ok = agent
                    .get(format!("http://127.0.0.1:{port}/"))
                    .call()
                    .is_ok_and(|r| r.status().as_u16() == 200);
                answers.push((Instant::now(), ok));
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let sigterm = Instant::now();
    let _ = sigterm_at.set(sigterm);
    app.signal("TERM");
    must_be_unlisted(
        &server,
        service,
        port,
        Duration::from_secs(1),
        &app,
        "SIGTERM",
    );
    let gone = sigterm.elapsed();
    let (status, _) = get_text(&format!("http://127.0.0.1:{port}/")).unwrap_or_else(|e| {
        panic!(
            "the listener closed before the grace ended: {e}\n{}",
            app.output()
        )
    });
    assert_eq!(status, 200, "gone from Nacos, but no longer answering");
    let exited = match app.wait_exit(termination_grace) {
        Some(status) => {
            assert!(status.success(), "exit {status}:\n{}", app.output());
            sigterm.elapsed()
        }
        None => {
            app.signal("KILL");
            panic!(
                "still running when the kubelet sends SIGKILL ({} s):\n{}",
                termination_grace.as_secs(),
                app.output()
            );
        }
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(probes.join());
    let answers = load.join().expect("load thread");
    let during_grace: Vec<_> = answers.iter().filter(|(at, _)| *at >= sigterm).collect();
    let failed = during_grace.iter().filter(|(_, ok)| !ok).count();
    assert!(!during_grace.is_empty());
    assert_eq!(
        failed,
        0,
        "requests failed during the grace:\n{}",
        app.output()
    );
    eprintln!(
        "[e2e] kubelet sequence on {bin}: gone from nacos {} ms after SIGTERM, {} requests of a caller that stops 1 s after it answered (grace {} ms), 0 failed, probes alongside, exited 0 after {} ms (SIGKILL would come at {} ms)",
        gone.as_millis(),
        during_grace.len(),
        grace.as_millis(),
        exited.as_millis(),
        termination_grace.as_millis()
    );
}

/// IPv6 end to end on this host: r-nacos on `[::1]` (`NACOS_SERVER_ADDR=[::1]:port`),
/// the demo bound to `::` with `NACOS_IP_TYPE=ipv6`: it registers the host's global IPv6
/// (never link-local), and a consumer connects to the advertised `[ip]:port`. Skipped
/// with a line when the host has no global IPv6.
pub fn ipv6_registers_and_serves(bin: &str) {
    if crate::skip_without(ServerKind::RNacos) {
        return;
    }
    let has_global_v6 = std::process::Command::new("ip")
        .args(["-6", "addr", "show", "scope", "global"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("inet6"));
    if !has_global_v6 {
        eprintln!("skipped: this host has no global IPv6 address");
        return;
    }
    let server = crate::RNacos::start_with(crate::RNacosOptions {
        ipv6: true,
        ..crate::RNacosOptions::default()
    });
    let service = "e2e-ipv6";
    let (app, port) = start_app(
        bin,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", service.to_owned()),
            ("NACOS_IP_TYPE", "ipv6".to_owned()),
            ("BIND_ADDR", "::".to_owned()),
            ("PORT", "0".into()),
        ],
    );
    let host = wait_for(Duration::from_secs(10), || {
        server
            .instances("public", "DEFAULT_GROUP", service)
            .ok()
            .and_then(|hosts| find_port(&hosts, port))
    })
    .unwrap_or_else(|| panic!("not registered over IPv6:\n{}", app.output()));
    let ip: std::net::Ipv6Addr = host["ip"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("not an IPv6: {host}"));
    assert!(!ip.is_loopback(), "{ip}");
    assert_ne!(ip.segments()[0] & 0xffc0, 0xfe80, "link-local: {ip}");
    let (status, body) = get_text(&format!("http://[{ip}]:{port}/whoami"))
        .unwrap_or_else(|e| panic!("cannot reach the advertised [{ip}]:{port}: {e}"));
    assert_eq!(status, 200, "{body}");
    eprintln!("[e2e] IPv6: registered [{ip}]:{port} through [::1], and served a consumer there");
}

/// A private network namespace with no IPv4 but loopback: one veth end with a global IPv6
/// (`fd7e::2/64`) and its link-local `fe80::` address. Deleted on drop.
struct Ipv6OnlyNamespace {
    name: String,
    host_end: String,
}

impl Ipv6OnlyNamespace {
    /// `None` when namespaces cannot be made here (not root, no `ip`).
    fn create() -> Option<Ipv6OnlyNamespace> {
        let id = std::process::id() % 100_000;
        let ns = Ipv6OnlyNamespace {
            name: format!("nacos-v6-{id}"),
            host_end: format!("vh{id}"),
        };
        let inner = format!("vn{id}");
        let steps: [&[&str]; 6] = [
            &["netns", "add", &ns.name],
            &[
                "link",
                "add",
                &ns.host_end,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
                "netns",
                &ns.name,
            ],
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                "fd7e::2/64",
                "dev",
                &inner,
                "nodad",
            ],
            &["-n", &ns.name, "link", "set", &inner, "up"],
            &["-n", &ns.name, "link", "set", "lo", "up"],
            &["link", "set", &ns.host_end, "up"],
        ];
        for step in steps {
            let ok = std::process::Command::new("ip")
                .args(step)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("cannot make an IPv6-only namespace: ip {}", step.join(" "));
                return None;
            }
        }
        Some(ns)
    }

    /// Runs `args` inside the namespace.
    fn exec(&self, args: &[&str], envs: &[(&str, String)]) -> App {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        App::start_with_args("ip", &all, envs)
    }

    /// `curl -s URL` inside the namespace: status and body.
    fn get(&self, url: &str) -> Option<(u16, String)> {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "curl",
                "-s",
                "-m",
                "2",
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_owned()))
    }
}

impl Drop for Ipv6OnlyNamespace {
    fn drop(&mut self) {
        for args in [
            vec!["link", "del", self.host_end.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            drop(
                std::process::Command::new("ip")
                    .args(&args)
                    .stderr(std::process::Stdio::null())
                    .status(),
            );
        }
    }
}

/// An IPv6-only host (a private network namespace whose only addresses besides loopback
/// are a global IPv6 and a link-local one): r-nacos and the demo run inside it; without
/// `NACOS_IP_TYPE`, the demo registers the global IPv6 (not the link-local one, not
/// loopback) through `[::1]`, and a consumer in the namespace reaches it there.
pub fn ipv6_only_namespace(bin: &str) {
    if crate::skip_without(ServerKind::RNacos) {
        return;
    }
    let Some(ns) = Ipv6OnlyNamespace::create() else {
        let required = [crate::REQUIRE_SERVERS, "CI"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        assert!(
            !required,
            "network namespaces are needed (root and iproute2)"
        );
        eprintln!("skipped: network namespaces need root and iproute2; CI runs this test");
        return;
    };
    let data = tempfile::tempdir().expect("a temporary dir");
    // Fixed ports are free by construction: nothing else runs in a fresh namespace.
    let http = 18848;
    let rnacos_bin = crate::rnacos_bin();
    let _server = ns.exec(
        &[&rnacos_bin.to_string_lossy()],
        &[
            ("RNACOS_HTTP_PORT", http.to_string()),
            ("RNACOS_GRPC_PORT", "19848".into()),
            ("RNACOS_HTTP_CONSOLE_PORT", "20848".into()),
            ("RNACOS_DATA_DIR", data.path().display().to_string()),
            ("RNACOS_SDK_HOST", "::1".into()),
            ("RNACOS_CONSOLE_HOST", "::1".into()),
            ("RNACOS_RAFT_NODE_ADDR", "127.0.0.1:19848".into()),
            ("RUST_LOG", "warn".into()),
        ],
    );
    let list = format!("http://[::1]:{http}/nacos/v1/ns/instance/list?serviceName=e2e-v6only");
    wait_for(Duration::from_secs(30), || {
        ns.get(&list).filter(|(s, _)| *s == 200)
    })
    .expect("r-nacos answers inside the namespace");
    let app = ns.exec(
        &[bin],
        &[
            ("NACOS_SERVER_ADDR", format!("[::1]:{http}")),
            ("NACOS_SERVICE_NAME", "e2e-v6only".into()),
            ("BIND_ADDR", "::".into()),
            ("PORT", "0".into()),
        ],
    );
    let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
        .unwrap_or_else(|| panic!("the demo did not start in the namespace:\n{}", app.output()));
    let host = wait_for(Duration::from_secs(15), || {
        let (_, body) = ns.get(&list)?;
        let list: Value = serde_json::from_str(&body).ok()?;
        find_port(list["hosts"].as_array()?, port)
    })
    .unwrap_or_else(|| {
        panic!(
            "not registered in the IPv6-only namespace:\n{}",
            app.output()
        )
    });
    assert_eq!(host["ip"], "fd7e::2", "{host}\n{}", app.output());
    let (status, body) = ns
        .get(&format!("http://[fd7e::2]:{port}/whoami"))
        .expect("curl runs in the namespace");
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "[e2e] IPv6-only namespace: registered [fd7e::2]:{port} by itself (no NACOS_IP_TYPE), served a consumer there"
    );
}
