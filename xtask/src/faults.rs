//! The fault matrix (`cargo xtask faults`): each fault played against real servers while
//! the axum demo serves a steady load, with what its clients saw, whether the instance
//! stayed or came back in Nacos, and what the app logged.
//!
//! Every row starts the server(s) and the demo (`NACOS_REQUEST_TIMEOUT=1s`), sends `GET /`
//! to the demo every 20 ms from a client of its own, plays the fault, then waits until the
//! instance is listed and healthy again. Columns:
//! - **requests failed**: the demo's own clients' failed requests (the point: a Nacos fault
//!   must never fail a user request), out of those sent; **p99** of their latency;
//! - **recovered**: from the end of the fault until the instance is listed and healthy on
//!   every live node again;
//! - **lost**: 1 when the instance is not listed at the end (a lost registration);
//! - **panics**: `panicked` in the app's log;
//! - **log lines**: the app's WARN and ERROR lines during the row.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::official::OfficialVersion;
use crate::server::{Server, ServerKind, ServerOptions};
use crate::{App, RNacos, RNacosCluster, announced_port, wait_for};

/// One row of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// The fault.
    pub fault: String,
    /// The server(s).
    pub server: String,
    /// The API the app used (`gRPC`, `HTTP v1`, `HTTP v3`), from its log or `NACOS_API`.
    pub api: String,
    /// Requests the demo's clients sent.
    pub requests: usize,
    /// Of those, failed.
    pub failed: usize,
    /// p99 latency of the demo's clients, ms.
    pub p99_ms: f64,
    /// From the end of the fault to listed and healthy again; `None`: never (within 60 s).
    pub recovered: Option<Duration>,
    /// Registrations lost (0 or 1).
    pub lost: usize,
    /// Panics in the app's log.
    pub panics: usize,
    /// WARN lines in the app's log.
    pub warns: usize,
    /// ERROR lines in the app's log.
    pub errors: usize,
    /// What else to know.
    pub note: String,
}

/// The demo under load, and what its clients saw.
struct Loaded {
    app: App,
    port: u16,
    /// `NACOS_API` when the row sets it.
    forced_api: Option<String>,
    stop: Arc<AtomicBool>,
    load: Option<std::thread::JoinHandle<Vec<(Duration, bool)>>>,
}

impl Loaded {
    fn start(bin: &str, envs: &[(&str, String)]) -> Loaded {
        let mut all: Vec<(&str, String)> = vec![
            ("NACOS_SERVICE_NAME", "faults".to_owned()),
            ("NACOS_REQUEST_TIMEOUT", "1s".to_owned()),
            ("PORT", "0".to_owned()),
            ("RUST_LOG", "info,nacos_core=debug".to_owned()),
        ];
        all.extend(envs.iter().cloned());
        let forced_api = envs
            .iter()
            .find(|(k, _)| *k == "NACOS_API")
            .map(|(_, v)| v.clone());
        let app = App::start(bin, &all);
        let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
            .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = crate::agent(Duration::from_secs(5));
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let ok = agent
                        .get(format!("http://127.0.0.1:{port}/"))
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    seen.push((sent.elapsed(), ok));
                    std::thread::sleep(Duration::from_millis(20));
                }
                seen
            })
        };
        Loaded {
            app,
            port,
            forced_api,
            stop,
            load: Some(load),
        }
    }

    fn finish(
        mut self,
        fault: &str,
        server: &str,
        recovered: Option<Duration>,
        listed: bool,
        note: &str,
    ) -> Row {
        self.stop.store(true, Ordering::SeqCst);
        let mut seen = self
            .load
            .take()
            .map(|l| l.join().unwrap_or_default())
            .unwrap_or_default();
        let log = self.app.output();
        let failed = seen.iter().filter(|(_, ok)| !ok).count();
        seen.sort_by_key(|(d, _)| *d);
        let p99 = seen
            .get(((seen.len().max(1) - 1) as f64 * 0.99) as usize)
            .map_or(0.0, |(d, _)| d.as_secs_f64() * 1000.0);
        let api = match self.forced_api.as_deref() {
            Some("grpc") => "gRPC".to_owned(),
            Some(http) => format!("HTTP {http}"),
            None if log.contains("nacos server speaks gRPC") => "gRPC".to_owned(),
            None if log.contains("speaks the v3 API") => "HTTP v3".to_owned(),
            None if log.contains("speaks the v1 API") => "HTTP v1".to_owned(),
            None => "-".to_owned(),
        };
        Row {
            fault: fault.to_owned(),
            server: server.to_owned(),
            api,
            requests: seen.len(),
            failed,
            p99_ms: p99,
            recovered,
            lost: usize::from(!listed),
            panics: log.matches("panicked").count(),
            warns: log.lines().filter(|l| l.contains(" WARN ")).count(),
            errors: log.lines().filter(|l| l.contains(" ERROR ")).count(),
            note: note.to_owned(),
        }
    }
}

fn healthy_on(hosts: &[Value], port: u16) -> bool {
    hosts
        .iter()
        .any(|h| h["port"] == port && h["healthy"] == true)
}

fn listed_on(server: &Server, port: u16) -> bool {
    server
        .instances("public", "DEFAULT_GROUP", "faults")
        .is_ok_and(|hosts| healthy_on(&hosts, port))
}

fn rnacos_listed(node: &RNacos, port: u16) -> bool {
    node.instances("public", "DEFAULT_GROUP", "faults")
        .is_ok_and(|hosts| healthy_on(&hosts, port))
}

/// Waits up to 60 s for `ok`; the time it took.
fn recovery(ok: impl Fn() -> bool) -> Option<Duration> {
    let from = Instant::now();
    wait_for(Duration::from_secs(60), || ok().then_some(())).map(|()| from.elapsed())
}

fn kill(pid: u32, signal: &str) {
    drop(
        std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status(),
    );
}

/// Nacos down when the app starts, up 10 s later.
pub fn down_at_start(bin: &str) -> Row {
    let mut server = ServerKind::RNacos.reserve(&ServerOptions::default());
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", server.addr())]);
    std::thread::sleep(Duration::from_secs(10));
    server.restart();
    let rec = recovery(|| listed_on(&server, demo.port));
    let listed = listed_on(&server, demo.port);
    demo.finish(
        "Nacos down at start, up 10 s later",
        "r-nacos",
        rec,
        listed,
        "",
    )
}

/// Nacos killed (SIGKILL) and started again on the same port.
pub fn restarted(bin: &str, kind: ServerKind) -> Row {
    let mut server = kind.start(&ServerOptions::default());
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", server.addr())]);
    recovery(|| listed_on(&server, demo.port)).expect("listed at first");
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let rec = recovery(|| listed_on(&server, demo.port));
    let listed = listed_on(&server, demo.port);
    demo.finish(
        "Nacos restarted (kill -9, back 2 s later, same port)",
        &kind.to_string(),
        rec,
        listed,
        "",
    )
}

/// Nacos frozen (SIGSTOP) for two beat intervals, then resumed.
pub fn hangs(bin: &str) -> Row {
    let server = RNacos::start();
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", server.addr())]);
    recovery(|| rnacos_listed(&server, demo.port)).expect("listed at first");
    let pid = server.pid().expect("running");
    kill(pid, "STOP");
    std::thread::sleep(Duration::from_secs(10));
    kill(pid, "CONT");
    let rec = recovery(|| rnacos_listed(&server, demo.port));
    let listed = rnacos_listed(&server, demo.port);
    demo.finish(
        "Nacos hangs (SIGSTOP) 10 s, then resumes",
        "r-nacos",
        rec,
        listed,
        "",
    )
}

/// SIGTERM to the app while Nacos hangs: the deregistration gives up after the request
/// timeout (1 s here) and the app exits once the grace (2 s) has passed with no caller.
pub fn sigterm_while_hanging(bin: &str) -> Row {
    let server = RNacos::start();
    let mut demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", server.addr())]);
    recovery(|| rnacos_listed(&server, demo.port)).expect("listed at first");
    let pid = server.pid().expect("running");
    kill(pid, "STOP");
    // The load stops at the signal, as callers that heard of the deregistration would: a
    // caller still coming would keep the app serving on (up to 40 s at the defaults).
    demo.stop.store(true, Ordering::SeqCst);
    let signalled = Instant::now();
    demo.app.signal("TERM");
    let exit = demo.app.wait_exit(Duration::from_secs(15));
    let took = signalled.elapsed();
    kill(pid, "CONT");
    let note = match exit {
        Some(status) => format!(
            "exited ({status}) {} ms after SIGTERM; bound: request timeout + 0.5 s, then the 2 s grace: 3.5 s",
            took.as_millis()
        ),
        None => "still running 15 s after SIGTERM".to_owned(),
    };
    let mut row = demo.finish(
        "SIGTERM to the app while Nacos hangs",
        "r-nacos",
        None,
        true,
        &note,
    );
    // The demo's clients see it stop, which is the point of SIGTERM: not failures.
    row.failed = 0;
    row.lost = 0;
    row
}

/// The proxy's modes.
const PASS: u8 = 0;
const ERR_500: u8 = 1;
const GARBAGE: u8 = 2;
const SLOW: u8 = 3;

/// A TCP proxy in front of a server that can answer 500, garbage, or slowly (2 s).
/// Changing the mode closes every open connection, so that the next request of a client
/// with a connection pool meets the new mode.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a proxy port");
        let port = listener.local_addr().expect("an address").port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, o) = (mode.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Ok(copy) = conn.try_clone() {
                    o.lock().unwrap_or_else(|e| e.into_inner()).push(copy);
                }
                let mode = m.load(Ordering::SeqCst);
                std::thread::spawn(move || serve(conn, upstream, mode));
            }
        });
        Proxy { port, mode, open }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for conn in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            drop(conn.shutdown(std::net::Shutdown::Both));
        }
    }
}

fn serve(mut client: TcpStream, upstream: u16, mode: u8) {
    use std::io::{Read, Write};
    let reply = |client: &mut TcpStream, status: &str, body: &str| {
        let mut buf = [0u8; 8192];
        drop(client.set_read_timeout(Some(Duration::from_millis(200))));
        drop(client.read(&mut buf));
        drop(write!(
            client,
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ));
    };
    match mode {
        ERR_500 => reply(&mut client, "500 Internal Server Error", "server error"),
        GARBAGE => reply(&mut client, "200 OK", "<html>not nacos</html>"),
        _ => {
            if mode == SLOW {
                std::thread::sleep(Duration::from_secs(2));
            }
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || drop(std::io::copy(&mut c2, &mut s2)));
            drop(std::io::copy(&mut server, &mut client));
            drop(up.join());
        }
    }
}

/// Nacos answers 500, garbage or slowly for 12 s (more than two beat intervals).
pub fn bad_answers(bin: &str, mode_name: &str) -> Row {
    let server = RNacos::start();
    let proxy = Proxy::start(server.http_port());
    let demo = Loaded::start(
        bin,
        &[("NACOS_SERVER_ADDR", format!("127.0.0.1:{}", proxy.port))],
    );
    recovery(|| rnacos_listed(&server, demo.port)).expect("listed at first");
    let m = match mode_name {
        "500" => ERR_500,
        "garbage" => GARBAGE,
        _ => SLOW,
    };
    proxy.set(m);
    std::thread::sleep(Duration::from_secs(12));
    proxy.set(PASS);
    let rec = recovery(|| rnacos_listed(&server, demo.port));
    let listed = rnacos_listed(&server, demo.port);
    let fault = match mode_name {
        "500" => "Nacos answers HTTP 500 for 12 s",
        "garbage" => "Nacos answers garbage (200, HTML) for 12 s",
        _ => "Nacos answers after 2 s (request timeout 1 s) for 12 s",
    };
    demo.finish(fault, "r-nacos behind a fault proxy", rec, listed, "recovered: until listed healthy again (12 s stays within the server's timeouts for a silent HTTP instance)")
}

/// A 3-node r-nacos cluster: one node killed, later back.
pub fn cluster_node_killed(bin: &str) -> Row {
    let mut cluster = RNacosCluster::start(3);
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", cluster.addr())]);
    recovery(|| cluster.nodes.iter().all(|n| rnacos_listed(n, demo.port)))
        .expect("listed at first");
    cluster.nodes[0].stop();
    let down = Instant::now();
    let mut stayed = true;
    while down.elapsed() < Duration::from_secs(18) {
        stayed &= cluster.nodes[1..]
            .iter()
            .all(|n| rnacos_listed(n, demo.port));
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.nodes[0].restart();
    let rec = recovery(|| cluster.nodes.iter().all(|n| rnacos_listed(n, demo.port)));
    let listed = cluster.nodes.iter().all(|n| rnacos_listed(n, demo.port));
    let note = if stayed {
        "listed and healthy on both survivors throughout the 18 s"
    } else {
        "NOT listed on a survivor at some point"
    };
    demo.finish(
        "3-node cluster: node 1 killed for 18 s, then back",
        "r-nacos cluster",
        rec,
        listed,
        note,
    )
}

/// A 3-node r-nacos cluster restarted one node at a time.
pub fn cluster_rolling(bin: &str) -> Row {
    let mut cluster = RNacosCluster::start(3);
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", cluster.addr())]);
    recovery(|| cluster.nodes.iter().all(|n| rnacos_listed(n, demo.port)))
        .expect("listed at first");
    let mut stayed = true;
    let mut last = None;
    for i in 0..cluster.nodes.len() {
        cluster.nodes[i].stop();
        std::thread::sleep(Duration::from_secs(3));
        stayed &= cluster
            .nodes
            .iter()
            .enumerate()
            .all(|(j, n)| j == i || rnacos_listed(n, demo.port));
        cluster.nodes[i].restart();
        last = recovery(|| cluster.nodes.iter().all(|n| rnacos_listed(n, demo.port)));
    }
    let listed = cluster.nodes.iter().all(|n| rnacos_listed(n, demo.port));
    let note = if stayed {
        "listed and healthy on the live nodes at every step"
    } else {
        "NOT listed on a live node at some step"
    };
    demo.finish(
        "3-node cluster restarted one node at a time",
        "r-nacos cluster",
        last,
        listed,
        note,
    )
}

/// The instance deleted behind the app's back.
pub fn removed(bin: &str, version: OfficialVersion) -> Row {
    let kind = ServerKind::Official(version);
    let server = kind.start(&ServerOptions::default());
    let demo = Loaded::start(
        bin,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_HEARTBEAT_INTERVAL", "1s".to_owned()),
            // 20404 / 21003 are the HTTP path's answers to an unknown instance.
            ("NACOS_API", kind.api().to_owned()),
        ],
    );
    recovery(|| listed_on(&server, demo.port)).expect("listed at first");
    let hosts = server
        .instances("public", "DEFAULT_GROUP", "faults")
        .unwrap_or_default();
    let ip = hosts
        .iter()
        .find(|h| h["port"] == demo.port)
        .and_then(|h| h["ip"].as_str())
        .unwrap_or_default()
        .to_owned();
    server
        .remove_instance("faults", &ip, demo.port)
        .expect("removed");
    // The official server lists from a cache it updates asynchronously: first see the
    // instance gone, then time its return.
    let seen_gone = wait_for(Duration::from_secs(3), || {
        server
            .instances("public", "DEFAULT_GROUP", "faults")
            .ok()
            .filter(|hosts| !hosts.iter().any(|h| h["port"] == demo.port))
    })
    .is_some();
    let rec = recovery(|| listed_on(&server, demo.port));
    let listed = listed_on(&server, demo.port);
    let code = if version.speaks_v3() {
        "21003"
    } else {
        "20404"
    };
    let note = if seen_gone {
        "beats every 1 s; recovered: from the list showing it gone"
    } else {
        "beats every 1 s; the list never showed it gone (registered again within the server's list lag)"
    };
    demo.finish(
        &format!("instance deleted behind the app's back ({code})"),
        &kind.to_string(),
        rec,
        listed,
        note,
    )
}

/// The app frozen (SIGSTOP) for 40 s, as a hung process or a paused VM is: what the server
/// lists meanwhile (how long it stays healthy, when it is marked unhealthy, when it is
/// removed), then the app resumed (SIGCONT) and listed healthy again. Over HTTP v1 the
/// server only sees the beats stop; over gRPC the connection stays open (the kernel keeps
/// answering TCP) and the server's own connection checks decide.
pub fn app_frozen(bin: &str, kind: ServerKind, api: &str) -> Row {
    let server = kind.start(&ServerOptions::default());
    let app = App::start(
        bin,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "faults".to_owned()),
            ("NACOS_API", api.to_owned()),
            ("PORT", "0".to_owned()),
            ("RUST_LOG", "info,nacos_core=debug".to_owned()),
        ],
    );
    let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
        .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
    recovery(|| listed_on(&server, port)).expect("listed at first");
    kill(app.pid(), "STOP");
    let frozen = Instant::now();
    let (mut unhealthy, mut removed) = (None, None);
    while frozen.elapsed() < Duration::from_secs(40) && removed.is_none() {
        if let Ok(hosts) = server.instances("public", "DEFAULT_GROUP", "faults") {
            match hosts.iter().find(|h| h["port"] == port) {
                None => removed = Some(frozen.elapsed()),
                Some(h) if h["healthy"] != true && unhealthy.is_none() => {
                    unhealthy = Some(frozen.elapsed());
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let frozen_for = frozen.elapsed();
    kill(app.pid(), "CONT");
    let rec = recovery(|| listed_on(&server, port));
    let listed = listed_on(&server, port);
    let log = app.output();
    let secs =
        |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    Row {
        fault: format!(
            "the app frozen (SIGSTOP) {} s, then resumed",
            frozen_for.as_secs()
        ),
        server: kind.to_string(),
        api: if api == "grpc" {
            "gRPC".to_owned()
        } else {
            format!("HTTP {api}")
        },
        requests: 0,
        failed: 0,
        p99_ms: 0.0,
        recovered: rec,
        lost: usize::from(!listed),
        panics: log.matches("panicked").count(),
        warns: log.lines().filter(|l| l.contains(" WARN ")).count(),
        errors: log.lines().filter(|l| l.contains(" ERROR ")).count(),
        note: format!(
            "the server's view of a silent instance: marked unhealthy after {}, removed after {} (no requests: the app itself is frozen)",
            secs(unhealthy),
            secs(removed)
        ),
    }
}

/// The official server moves the app's gRPC connection (`/v2/core/loader/reloadClient`,
/// its own rebalancing tool): it sends `ConnectResetRequest`, the app answers, reconnects
/// and registers again.
pub fn reset_by_server(bin: &str) -> Row {
    let kind = ServerKind::Official(OfficialVersion::V2_3_2);
    let server = kind.start(&ServerOptions::default());
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", server.addr())]);
    recovery(|| listed_on(&server, demo.port)).expect("listed at first");
    let reset = crate::reset_rust_connections(&server.addr());
    let asked = wait_for(Duration::from_secs(10), || {
        demo.app
            .output()
            .contains("nacos server asked for a reconnection")
            .then_some(())
    })
    .is_some();
    // The old registration stays listed meanwhile: recovered once the new connection has
    // sent it again.
    let again = "nacos gRPC connection up again: registrations and subscriptions sent again";
    let rec = recovery(|| demo.app.output().contains(again) && listed_on(&server, demo.port));
    let listed = listed_on(&server, demo.port);
    let note = match (&reset, asked) {
        (_, true) if rec.is_some() => {
            "ConnectResetRequest answered; reconnected and registered again".to_owned()
        }
        (_, true) => "ConnectResetRequest answered; no new connection up within 60 s".to_owned(),
        (Ok(n), false) => format!("no ConnectResetRequest seen ({n} connections reset)"),
        (Err(e), false) => format!("reloadClient failed: {e}"),
    };
    demo.finish(
        "the server resets the connection (ConnectResetRequest)",
        &kind.to_string(),
        rec,
        listed,
        &note,
    )
}

/// Nacos restarted every 30 s for `length`: the app's memory, open files and threads at
/// the end against the start.
pub fn soak(bin: &str, length: Duration) -> Row {
    let mut server = RNacos::start();
    let demo = Loaded::start(bin, &[("NACOS_SERVER_ADDR", server.addr())]);
    recovery(|| rnacos_listed(&server, demo.port)).expect("listed at first");
    let pid = demo.app.pid();
    let sample = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        (field("VmRSS:"), fds, field("Threads:"))
    };
    std::thread::sleep(Duration::from_secs(5));
    let before = sample();
    let started = Instant::now();
    let mut restarts = 0;
    while started.elapsed() < length {
        std::thread::sleep(Duration::from_secs(30).min(length));
        server.stop();
        std::thread::sleep(Duration::from_secs(1));
        server.restart();
        restarts += 1;
    }
    let rec = recovery(|| rnacos_listed(&server, demo.port));
    std::thread::sleep(Duration::from_secs(5));
    let after = sample();
    let listed = rnacos_listed(&server, demo.port);
    let note = format!(
        "{restarts} restarts in {} s; RSS {} -> {} kB, open fds {} -> {}, threads {} -> {}",
        length.as_secs(),
        before.0,
        after.0,
        before.1,
        after.1,
        before.2,
        after.2
    );
    demo.finish(
        "soak: Nacos restarted every 30 s",
        "r-nacos",
        rec,
        listed,
        &note,
    )
}

/// The table, in Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fault | server | API | requests failed | p99 ms | recovered | lost | panics | log lines (WARN/ERROR) | note |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} of {} | {:.1} | {} | {} | {} | {}/{} | {} |\n",
            r.fault,
            r.server,
            r.api,
            r.failed,
            r.requests,
            r.p99_ms,
            r.recovered
                .map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            r.lost,
            r.panics,
            r.warns,
            r.errors,
            r.note
        ));
    }
    out
}

/// Tokens that expire every 5 s, for 20 s (official server, auth on).
///
/// `http`: the HTTP path (beats every second, each needing a valid token); else the
/// default (gRPC, where a quiet connection needs no token until its next request).
pub fn token_expiry(bin: &str, version: OfficialVersion, http: bool) -> Row {
    let kind = ServerKind::Official(version);
    let server = kind.start(&ServerOptions {
        auth: true,
        token_ttl_s: Some(5),
        password: Some("faults-Secret-1".into()),
        ..ServerOptions::default()
    });
    let mut envs = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_USERNAME", "nacos".to_owned()),
        ("NACOS_PASSWORD", "faults-Secret-1".to_owned()),
        ("NACOS_HEARTBEAT_INTERVAL", "1s".to_owned()),
    ];
    if http {
        envs.push(("NACOS_API", kind.api().to_owned()));
    }
    let demo = Loaded::start(bin, &envs);
    recovery(|| listed_on(&server, demo.port)).expect("listed at first");
    let from = Instant::now();
    let mut stayed = true;
    while from.elapsed() < Duration::from_secs(20) {
        stayed &= listed_on(&server, demo.port);
        std::thread::sleep(Duration::from_millis(500));
    }
    let listed = listed_on(&server, demo.port);
    let logins = demo.app.output().matches("logged in to nacos").count();
    let note = format!(
        "{logins} logins in 20 s of 5 s tokens; {}",
        if stayed {
            "listed and healthy throughout"
        } else {
            "NOT listed at some point"
        }
    );
    demo.finish(
        "token expiry (5 s tokens, 20 s)",
        &kind.to_string(),
        None,
        listed,
        &note,
    )
}

/// A wrong password: the app serves, the instance is never registered, one clear error.
pub fn wrong_password(bin: &str, version: OfficialVersion) -> Row {
    let kind = ServerKind::Official(version);
    let server = kind.start(&ServerOptions {
        auth: true,
        password: Some("faults-Secret-2".into()),
        ..ServerOptions::default()
    });
    let demo = Loaded::start(
        bin,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_USERNAME", "nacos".to_owned()),
            ("NACOS_PASSWORD", "not-the-password".to_owned()),
        ],
    );
    std::thread::sleep(Duration::from_secs(15));
    let registered = listed_on(&server, demo.port);
    let mut row = demo.finish(
        "wrong password (15 s)",
        &kind.to_string(),
        None,
        true,
        if registered { "REGISTERED with a wrong password?" } else { "never registered, as it must not be; the ERROR line says to check NACOS_USERNAME/NACOS_PASSWORD" },
    );
    row.lost = 0;
    row
}
