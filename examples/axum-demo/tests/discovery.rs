//! Discovery against real servers and real provider processes: instances registered by
//! the demo are found, follow weights, clusters and `enabled`, disappear when a provider
//! leaves; a service that does not exist is empty; Nacos down keeps the last list; tower
//! p2c and the gateway's load-balanced client send real requests to the providers, and a
//! provider leaving under load fails no call, nor does a rolling restart at the defaults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nacos_core::{Config, Discovery, ServiceWatch};
use xtask::server::{Server, ServerKind, ServerOptions};
use xtask::{App, announced_port, get_text, skip_without, wait_for};

const DEMO: &str = env!("CARGO_BIN_EXE_axum-demo");
const GATEWAY: &str = env!("CARGO_BIN_EXE_axum-gateway");
/// The refresh the tests' callers use.
const REFRESH: Duration = Duration::from_millis(500);

fn nacos2() -> ServerKind {
    ServerKind::Official(xtask::official::OfficialVersion::V2_3_2)
}

fn nacos3() -> ServerKind {
    ServerKind::Official(xtask::official::OfficialVersion::V3_1_0)
}

/// Starts a provider (the axum demo) for `service` with extra `env`; returns it and its port.
fn provider(server: &Server, service: &str, env: &[(&str, &str)]) -> (App, u16) {
    let mut envs: Vec<(&str, String)> = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", service.to_owned()),
        ("PORT", "0".into()),
    ];
    envs.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let app = App::start(DEMO, &envs);
    let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
        .unwrap_or_else(|| panic!("the provider did not start:\n{}", app.output()));
    (app, port)
}

fn discovery(server: &Server) -> Discovery {
    let config = Config::builder()
        .server_addr(server.addr())
        .service_name("e2e-caller")
        .discovery_refresh(REFRESH)
        .build()
        .unwrap();
    Discovery::new(&config).unwrap()
}

/// The ports the watch lists, once `done` holds for them (within `within`).
fn ports_when(
    watch: &ServiceWatch,
    within: Duration,
    done: impl Fn(&[u16]) -> bool,
) -> Option<Vec<u16>> {
    wait_for(within, || {
        let mut ports: Vec<u16> = watch.instances().all().iter().map(|i| i.port).collect();
        ports.sort_unstable();
        done(&ports).then_some(ports)
    })
}

/// Kills `foreign` and waits until the watch lists only `our_port` (30 s at most);
/// returns how long that took.
fn foreign_dies_and_leaves(
    watch: &ServiceWatch,
    foreign: &App,
    our_port: u16,
    who: &str,
) -> Duration {
    foreign.signal("KILL");
    let died = Instant::now();
    let gone = ports_when(watch, Duration::from_secs(30), |p| p == [our_port]);
    assert_eq!(
        gone,
        Some(vec![our_port]),
        "still listed {} ms after {who} died",
        died.elapsed().as_millis()
    );
    died.elapsed()
}

/// Whether a missing tool fails the test (under `cargo xtask test` and in CI) rather
/// than skipping it.
fn tools_required() -> bool {
    std::env::var_os(xtask::REQUIRE_SERVERS).is_some() || std::env::var_os("CI").is_some()
}

/// How late a server's list may be after a change: the official server lists from a cache
/// it updates asynchronously.
fn lag(kind: ServerKind) -> Duration {
    match kind {
        ServerKind::RNacos => Duration::ZERO,
        ServerKind::Official(_) => Duration::from_secs(3),
    }
}

fn follows_providers(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-discovered";
    let (a, port_a) = provider(&server, service, &[("NACOS_WEIGHT", "3")]);
    let (_b, port_b) = provider(&server, service, &[]);
    let (_off, port_off) = provider(&server, service, &[("NACOS_INSTANCE_ENABLED", "false")]);
    let discovery = discovery(&server);
    let watch = discovery.watch(service);
    let within = Duration::from_secs(15);
    let mut expected = vec![port_a, port_b];
    expected.sort_unstable();
    let seen = ports_when(&watch, within, |ports| ports == expected.as_slice());
    assert_eq!(
        seen.as_ref(),
        Some(&expected),
        "both providers listed, the disabled one ({port_off}) not: {:?}",
        watch.instances().all()
    );
    let weights: BTreeMap<u16, f64> = watch
        .instances()
        .all()
        .iter()
        .map(|i| (i.port, i.weight))
        .collect();
    assert_eq!(weights[&port_a], 3.0, "{weights:?}");
    assert_eq!(weights[&port_b], 1.0, "{weights:?}");
    // Picks follow the weights (3:1).
    let mut a_picks = 0;
    for _ in 0..4000 {
        if watch.pick_with(|i| i.map(|i| i.port)) == Some(port_a) {
            a_picks += 1;
        }
    }
    assert!(
        (2700..3300).contains(&a_picks),
        "{a_picks} of 4000 picks for weight 3 of 4"
    );

    // A provider leaves: gone within one refresh (plus the server's own lag).
    let left = Instant::now();
    a.signal("TERM");
    let bound = REFRESH + lag(kind) + Duration::from_secs(1);
    let after = ports_when(&watch, bound, |ports| ports == [port_b]);
    assert_eq!(
        after,
        Some(vec![port_b]),
        "still listed {} ms after SIGTERM",
        left.elapsed().as_millis()
    );
    eprintln!(
        "[e2e] discovery on {kind}: the leaving provider was gone from the caller's list {} ms after SIGTERM",
        left.elapsed().as_millis()
    );

    // A service nobody registered: an answer, empty.
    let nobody = discovery.watch("e2e-nobody-here");
    let snapshot = wait_for(Duration::from_secs(10), || {
        let s = nobody.instances();
        (s.version() > 0).then_some(s)
    })
    .expect("an answer for an unknown service");
    assert!(snapshot.is_empty());
}

/// Over gRPC (the default), a caller's watch learns of a provider leaving by the server's
/// push, not at its refresh (left at its 5 s default here): within 1.5 s of the SIGTERM,
/// three rounds in a row.
fn push_reaches_the_caller(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-pushed";
    let config = Config::builder()
        .server_addr(server.addr())
        .service_name("e2e-caller")
        .build()
        .unwrap();
    let watch = Discovery::new(&config).unwrap().watch(service);
    // One provider stays (a list that empties is held for EMPTY_HOLD on purpose).
    let (_stays, stays) = provider(&server, service, &[]);
    let mut took = Vec::new();
    for round in 1..=3 {
        let (provider, port) = provider(&server, service, &[]);
        ports_when(&watch, Duration::from_secs(15), |p| {
            p.contains(&port) && p.contains(&stays)
        })
        .unwrap_or_else(|| panic!("round {round}: never listed:\n{}", provider.output()));
        let left = Instant::now();
        provider.signal("TERM");
        let gone = ports_when(&watch, Duration::from_millis(1500), |p| p == [stays]);
        assert!(
            gone.is_some(),
            "round {round}: still in the caller's list {} ms after SIGTERM:\n{}",
            left.elapsed().as_millis(),
            provider.output()
        );
        took.push(left.elapsed().as_millis());
    }
    eprintln!(
        "[e2e] push on {kind}: the leaving provider was gone from the caller's list {took:?} ms after SIGTERM"
    );
}

#[test]
fn rnacos_push_reaches_the_caller() {
    push_reaches_the_caller(ServerKind::RNacos);
}

#[test]
fn nacos2_push_reaches_the_caller() {
    push_reaches_the_caller(nacos2());
}

#[test]
fn nacos3_push_reaches_the_caller() {
    push_reaches_the_caller(nacos3());
}

#[test]
fn rnacos_follows_providers() {
    follows_providers(ServerKind::RNacos);
}

#[test]
fn nacos2_follows_providers() {
    follows_providers(nacos2());
}

#[test]
fn nacos3_follows_providers() {
    follows_providers(nacos3());
}

/// The caller's own cluster first, then all clusters (v1 servers: Nacos 3.1's v3 list
/// shows the `DEFAULT` cluster only).
#[test]
fn same_cluster_first_then_any() {
    let kind = ServerKind::RNacos;
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-clusters";
    let (_a, port_a) = provider(&server, service, &[("NACOS_CLUSTER_NAME", "east")]);
    let (_b, port_b) = provider(&server, service, &[("NACOS_CLUSTER_NAME", "west")]);
    let config = |cluster: &str| {
        Config::builder()
            .server_addr(server.addr())
            .service_name("e2e-caller")
            .cluster_name(cluster)
            .discovery_refresh(REFRESH)
            .build()
            .unwrap()
    };
    for (cluster, only) in [
        ("east", Some(port_a)),
        ("west", Some(port_b)),
        ("north", None),
    ] {
        let watch = Discovery::new(&config(cluster)).unwrap().watch(service);
        ports_when(&watch, Duration::from_secs(15), |p| p.len() == 2).expect("both listed");
        let picked: std::collections::BTreeSet<u16> = (0..200)
            .filter_map(|_| watch.pick_with(|i| i.map(|i| i.port)))
            .collect();
        match only {
            Some(port) => assert_eq!(picked, [port].into(), "caller in {cluster}"),
            None => assert_eq!(picked, [port_a, port_b].into(), "caller in {cluster}"),
        }
    }
}

/// Nacos down: the caller keeps its last list; Nacos back (empty, then the providers
/// register again): still listed throughout.
#[test]
fn nacos_down_keeps_the_last_list() {
    let kind = ServerKind::RNacos;
    if skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions::default());
    let service = "e2e-blink";
    let (_a, port_a) = provider(&server, service, &[]);
    let watch = discovery(&server).watch(service);
    ports_when(&watch, Duration::from_secs(15), |p| p == [port_a]).expect("listed");
    server.stop();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            watch.instances().len(),
            1,
            "lost the list while Nacos is down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.restart();
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            watch.instances().len(),
            1,
            "lost the list {} ms after Nacos came back empty",
            back.elapsed().as_millis()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server
            .instances("public", "DEFAULT_GROUP", service)
            .unwrap()
            .iter()
            .any(|h| h["port"] == port_a),
        "the provider registered again"
    );
}

/// tower's p2c balancer over the watch sends real requests to both real providers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_p2c_over_the_watch() {
    use tower::{Service, ServiceExt};
    let kind = ServerKind::RNacos;
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-p2c";
    let (_a, port_a) = provider(&server, service, &[]);
    let (_b, port_b) = provider(&server, service, &[]);
    let watch = discovery(&server).watch(service);
    let watched = watch.clone();
    tokio::task::spawn_blocking(move || {
        ports_when(&watched, Duration::from_secs(15), |p| p.len() == 2)
    })
    .await
    .unwrap()
    .expect("both listed");

    let http = reqwest::Client::new();
    let discover = tower::load::PendingRequestsDiscover::new(
        watch.discover(move |instance| {
            let base = format!("http://{}:{}", instance.ip, instance.port);
            let http = http.clone();
            tower::service_fn(move |path: &'static str| {
                let request = http.get(format!("{base}{path}"));
                async move { request.send().await?.text().await }
            })
        }),
        tower::load::CompleteOnResponse::default(),
    );
    let mut balanced = tower::balance::p2c::Balance::new(discover);
    let mut answers = BTreeMap::new();
    for _ in 0..40 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            balanced.ready().await.unwrap().call("/whoami"),
        )
        .await
        .expect("an answer within 5 s")
        .expect("the provider answers");
        *answers.entry(answer).or_insert(0) += 1;
    }
    assert_eq!(answers.len(), 2, "both providers answered: {answers:?}");
    let ports: Vec<String> = answers.keys().cloned().collect();
    assert!(
        ports
            .iter()
            .any(|a| a.trim_end().ends_with(&format!(":{port_a}")))
    );
    assert!(
        ports
            .iter()
            .any(|a| a.trim_end().ends_with(&format!(":{port_b}")))
    );
}

/// The gateway calls the providers through its load-balanced client: answers come from
/// both; one provider leaves (SIGTERM, grace longer than the gateway's refresh) while
/// calls go on: not one call fails, and the survivor takes them all.
#[test]
fn gateway_loses_no_call_when_a_provider_leaves() {
    let kind = ServerKind::RNacos;
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-provided";
    let grace = [("NACOS_DEREGISTER_GRACE", "2s")];
    let (mut a, port_a) = provider(&server, service, &grace);
    let (_b, port_b) = provider(&server, service, &grace);
    let gateway = App::start(
        GATEWAY,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "e2e-gateway".into()),
            ("NACOS_DISCOVERY_REFRESH", "500ms".into()),
            ("TARGET_SERVICE", service.into()),
            ("PORT", "0".into()),
        ],
    );
    let gw = wait_for(Duration::from_secs(30), || {
        announced_port(&gateway.output())
    })
    .unwrap_or_else(|| panic!("the gateway did not start:\n{}", gateway.output()));
    let call = move || get_text(&format!("http://127.0.0.1:{gw}/call"));
    // Both providers known to the gateway.
    wait_for(Duration::from_secs(15), || {
        let (status, body) = get_text(&format!("http://127.0.0.1:{gw}/instances")).ok()?;
        (status == 200
            && body.contains(&format!(":{port_a} "))
            && body.contains(&format!(":{port_b} ")))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("the gateway never listed both:\n{}", gateway.output()));

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, failed) = (stop.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut answers: Vec<(Instant, String)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match call() {
                    Ok((200, body)) => answers.push((Instant::now(), body)),
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("[e2e] a call failed: {other:?}");
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    a.signal("TERM");
    let exit = a
        .wait_exit(Duration::from_secs(15))
        .expect("the provider exits after its grace");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let answers = load.join().unwrap();
    let failed = failed.load(Ordering::SeqCst);
    let from = |port: u16| format!(":{port}\n");
    let before = answers
        .iter()
        .filter(|(at, _)| *at < signalled)
        .collect::<Vec<_>>();
    let last_a = answers
        .iter()
        .filter(|(_, b)| b.ends_with(&from(port_a)))
        .map(|(at, _)| at.duration_since(signalled).as_millis())
        .max();
    eprintln!(
        "[e2e] gateway: {} calls, {failed} failed; the leaving provider answered last {last_a:?} ms after its SIGTERM and exited ({exit}) after its 2 s grace",
        answers.len()
    );
    assert_eq!(failed, 0, "calls failed:\n{}", gateway.output());
    assert!(
        before.iter().any(|(_, b)| b.ends_with(&from(port_a))),
        "provider A answered before"
    );
    assert!(
        before.iter().any(|(_, b)| b.ends_with(&from(port_b))),
        "provider B answered before"
    );
    let after_exit: Vec<_> = answers
        .iter()
        .filter(|(at, _)| at.duration_since(signalled) > Duration::from_secs(3))
        .collect();
    assert!(!after_exit.is_empty());
    assert!(
        after_exit.iter().all(|(_, b)| b.ends_with(&from(port_b))),
        "only the survivor answers once the other has gone"
    );
}

/// A provider killed (SIGKILL: no deregistration) stays listed until the server notices;
/// the gateway's calls that pick it cannot connect and go to the other instance: none
/// fails.
#[test]
fn a_refused_connection_is_retried_on_another_instance() {
    let kind = ServerKind::RNacos;
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-killed";
    // HTTP providers: r-nacos keeps a killed one listed until its beats time out, so the
    // gateway keeps seeing it.
    let http = [("NACOS_API", "v1")];
    let (mut a, port_a) = provider(&server, service, &http);
    let (mut b, port_b) = provider(&server, service, &http);
    let (_c, port_c) = provider(&server, service, &http);
    let gateway = App::start(
        GATEWAY,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "e2e-gateway-retry".into()),
            ("TARGET_SERVICE", service.into()),
            ("PORT", "0".into()),
            ("RUST_LOG", "info,nacos_core=debug".into()),
        ],
    );
    let gw = wait_for(Duration::from_secs(30), || {
        announced_port(&gateway.output())
    })
    .unwrap_or_else(|| panic!("the gateway did not start:\n{}", gateway.output()));
    wait_for(Duration::from_secs(15), || {
        let (_, body) = get_text(&format!("http://127.0.0.1:{gw}/instances")).ok()?;
        [port_a, port_b, port_c]
            .iter()
            .all(|p| body.contains(&format!(":{p} ")))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the gateway never listed all three:\n{}", gateway.output()));
    // Two of three killed at once: every call still answered, by the survivor.
    for dead in [&mut a, &mut b] {
        dead.signal("KILL");
        dead.wait_exit(Duration::from_secs(5)).expect("killed");
    }
    for _ in 0..40 {
        let (status, body) = get_text(&format!("http://127.0.0.1:{gw}/call")).unwrap();
        assert_eq!(status, 200, "{body}\n{}", gateway.output());
        assert!(body.trim_end().ends_with(&format!(":{port_c}")), "{body}");
    }
    // Both dead instances are still listed, yet each cost at most one failed connection:
    // after it the instance is ejected from picks.
    let listed = get_text(&format!("http://127.0.0.1:{gw}/instances"))
        .unwrap()
        .1;
    assert!(
        listed.contains(&format!(":{port_a} ")) && listed.contains(&format!(":{port_b} ")),
        "{listed}"
    );
    let output = gateway.output();
    let retries = output
        .matches("the request did not reach the instance: sending it to another one")
        .count();
    assert!(
        (1..=2).contains(&retries),
        "{retries} retries (expected one per dead instance at most):\n{output}"
    );
    eprintln!(
        "[e2e] 40 calls after kill -9 of two of three providers, none failed, {retries} connections refused"
    );
}

/// Instances registered by a foreign client, the npm `nacos` client over v1 (its own
/// BeatReactor), are discovered; once that client dies they turn unhealthy on the server
/// and leave the caller's list within one refresh.
#[test]
fn npm_nacos_client_instances_are_discovered() {
    let kind = ServerKind::RNacos;
    if skip_without(kind) {
        return;
    }
    let runner = match xtask::ensure_node_peer() {
        Ok(runner) => runner,
        Err(e) if !tools_required() => {
            eprintln!("skipped: needs the npm nacos client ({e}); `cargo xtask test` installs it");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let server = kind.start(&ServerOptions::default());
    // One of ours in the same service, so that the list never becomes empty (an empty list
    // is only taken after EMPTY_HOLD).
    let (_ours, our_port) = provider(&server, "e2e-foreign-node", &[]);
    let foreign = App::start_with_args(
        "node",
        &[
            &runner.to_string_lossy(),
            &server.addr(),
            "2",
            "120",
            "e2e-foreign",
        ],
        &[],
    );
    wait_for(Duration::from_secs(30), || {
        foreign.output().contains("ready 2").then_some(())
    })
    .unwrap_or_else(|| panic!("the npm client did not register:\n{}", foreign.output()));
    let watch = discovery(&server).watch("e2e-foreign-node");
    let mut expected = vec![20000, 20001, our_port];
    expected.sort_unstable();
    let ports = ports_when(&watch, Duration::from_secs(10), |p| {
        p == expected.as_slice()
    });
    assert_eq!(ports, Some(expected), "{:?}", watch.instances().all());
    let foreign_ips = watch
        .instances()
        .all()
        .iter()
        .filter(|i| i.ip.starts_with("10.255."))
        .count();
    assert_eq!(foreign_ips, 2);
    // r-nacos marks them unhealthy 15-18 s after their last beat; the caller follows
    // within one refresh.
    let took = foreign_dies_and_leaves(&watch, &foreign, our_port, "the npm client");
    eprintln!(
        "[e2e] the npm client's instances left the caller's list {} ms after it died (r-nacos marks them unhealthy after about 15 s)",
        took.as_millis()
    );
}

/// Instances registered by Alibaba's Java `nacos-client` over its default protocol (gRPC
/// on 2.x and 3.x) are discovered; when that client dies, the server drops them with its
/// connection and they leave the caller's list within one refresh (plus the server's lag).
fn java_client_instances_are_discovered(kind: ServerKind, client_version: &str) {
    if skip_without(kind) {
        return;
    }
    let class_path = match xtask::ensure_java_peer(client_version) {
        Ok(class_path) => class_path,
        Err(e) if !tools_required() => {
            eprintln!("skipped: needs the Java nacos-client ({e}); `cargo xtask test` builds it");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-jv-java";
    let (_ours, our_port) = provider(&server, service, &[]);
    let home = std::env::temp_dir().join(format!("e2e-java-home-{}", std::process::id()));
    let foreign = App::start_with_args(
        "java",
        &[
            &format!("-Duser.home={}", home.display()),
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &class_path,
            "peerbench.Runner",
            &server.addr(),
            // One instance: over gRPC a client holds one instance per service, a second
            // `registerInstance` replaces the first (2.x and 3.x).
            "1",
            "120",
            "e2e-jv",
        ],
        &[],
    );
    wait_for(Duration::from_secs(60), || {
        foreign.output().contains("ready 1").then_some(())
    })
    .unwrap_or_else(|| panic!("the Java client did not register:\n{}", foreign.output()));
    let watch = discovery(&server).watch(service);
    let mut expected = vec![20000, our_port];
    expected.sort_unstable();
    let seen = ports_when(&watch, Duration::from_secs(15), |p| {
        p == expected.as_slice()
    });
    assert_eq!(
        seen,
        Some(expected),
        "{:?}\n{}",
        watch.instances().all(),
        foreign.output()
    );
    let took = foreign_dies_and_leaves(&watch, &foreign, our_port, "the Java client");
    eprintln!(
        "[e2e] nacos-client {client_version} on {kind}: its instances discovered, and gone from the caller's list {} ms after it died",
        took.as_millis()
    );
    drop(std::fs::remove_dir_all(home));
}

/// A Java caller (Alibaba's `nacos-client`, `subscribe`, server push over gRPC) sees our
/// provider, registered over gRPC, and its removal on SIGTERM.
fn java_subscriber_sees_our_instance(kind: ServerKind, client_version: &str) {
    if skip_without(kind) {
        return;
    }
    let class_path = match xtask::ensure_java_peer(client_version) {
        Ok(class_path) => class_path,
        Err(e) if !tools_required() => {
            eprintln!("skipped: needs the Java nacos-client ({e}); `cargo xtask test` builds it");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-java-caller";
    let home = std::env::temp_dir().join(format!("e2e-java-sub-{}", std::process::id()));
    let java = App::start_with_args(
        "java",
        &[
            &format!("-Duser.home={}", home.display()),
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &class_path,
            "peerbench.Subscriber",
            &server.addr(),
            service,
            "120",
        ],
        &[],
    );
    wait_for(Duration::from_secs(60), || {
        java.output().contains("subscribed").then_some(())
    })
    .unwrap_or_else(|| panic!("the Java client did not subscribe:\n{}", java.output()));
    let (ours, port) = provider(&server, service, &[]);
    let seen = format!("hosts {port}");
    wait_for(Duration::from_secs(15), || {
        java.output().lines().any(|l| l == seen).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the Java caller never saw our instance:\n{}\nours:\n{}",
            java.output(),
            ours.output()
        )
    });
    let left = Instant::now();
    ours.signal("TERM");
    wait_for(Duration::from_secs(5), || {
        java.output()
            .lines()
            .skip_while(|l| *l != seen)
            .any(|l| l == "hosts ")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the Java caller still lists our instance:\n{}",
            java.output()
        )
    });
    eprintln!(
        "[e2e] nacos-client {client_version} subscriber on {kind}: our instance seen, and its removal {} ms after SIGTERM",
        left.elapsed().as_millis()
    );
    drop(std::fs::remove_dir_all(home));
}

#[test]
fn nacos2_java_subscriber_sees_our_instance() {
    java_subscriber_sees_our_instance(nacos2(), "2.3.2");
}

#[test]
fn nacos3_java_subscriber_sees_our_instance() {
    java_subscriber_sees_our_instance(nacos3(), "3.1.0");
}

#[test]
fn nacos2_java_client_instances_are_discovered() {
    java_client_instances_are_discovered(nacos2(), "2.3.2");
}

#[test]
fn nacos3_java_client_instances_are_discovered() {
    java_client_instances_are_discovered(nacos3(), "3.1.0");
}

/// Authentication on and a namespace of its own: the caller logs in (its own login, or the
/// one it shares with a registration in the same process) and finds the provider there,
/// and only there.
fn discovers_with_auth_in_a_namespace(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let password = "e2e-Secret-2";
    let server = kind.start(&ServerOptions {
        auth: true,
        password: Some(password.into()),
        ..ServerOptions::default()
    });
    let service = "e2e-auth-discovered";
    let namespace = "e2e-ns";
    let (provider_app, port) = provider(
        &server,
        service,
        &[
            ("NACOS_USERNAME", "nacos"),
            ("NACOS_PASSWORD", password),
            ("NACOS_NAMESPACE", namespace),
        ],
    );
    let caller = |namespace: &str| {
        let config = Config::builder()
            .server_addr(server.addr())
            .service_name("e2e-caller")
            .namespace_id(namespace)
            .username("nacos")
            .password(password)
            .discovery_refresh(REFRESH)
            .build()
            .unwrap();
        Discovery::new(&config).unwrap().watch(service)
    };
    let watch = caller(namespace);
    let seen = ports_when(&watch, Duration::from_secs(20), |p| p == [port]);
    assert_eq!(
        seen,
        Some(vec![port]),
        "not discovered with auth on in namespace {namespace}:\n{}",
        provider_app.output()
    );
    let public = caller("public");
    let answer = wait_for(Duration::from_secs(10), || {
        let s = public.instances();
        (s.version() > 0).then_some(s)
    })
    .expect("an answer in public");
    assert!(
        answer.is_empty(),
        "the provider leaked into public: {:?}",
        answer.all()
    );
}

#[test]
fn nacos2_discovers_with_auth_in_a_namespace() {
    discovers_with_auth_in_a_namespace(nacos2());
}

#[test]
fn nacos3_discovers_with_auth_in_a_namespace() {
    discovers_with_auth_in_a_namespace(nacos3());
}

/// A rolling restart at the defaults (`xtask::rolling`, as `cargo xtask rolling-restart`
/// measures it, smaller): 3 providers of the demo on r-nacos, each restarted once with
/// SIGTERM, the next 2 s after the registry lists the new one, `rate` calls/s through
/// `caller` until every old instance has exited; neither the providers' grace nor the
/// caller's settings are touched. Not one call fails, and every old instance exits by
/// itself.
fn rolling_restart_at_defaults(caller: xtask::rolling::Caller, rate: u32) {
    use xtask::rolling::{Options, Stop, run};
    let options = Options {
        providers: 3,
        rounds: 1,
        rate,
        stop: Stop::Graceful,
        grace: None,
        refresh: None,
        provider_env: Vec::new(),
        caller: caller.clone(),
    };
    let report = run(DEMO, GATEWAY, &options).unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<_> = report.calls.iter().filter(|c| !c.ok).collect();
    assert_eq!(report.restarts.len(), 3);
    let least = (report.length.as_secs() as usize * rate as usize) / 2;
    assert!(
        report.calls.len() > least,
        "only {} calls were sent in {} s",
        report.calls.len(),
        report.length.as_secs()
    );
    let name = caller.name();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed through {name}, at {:?}",
        failed.len(),
        report.calls.len(),
        failed.iter().map(|c| c.at).collect::<Vec<_>>()
    );
    let mut exits = report.exits.clone();
    exits.sort();
    eprintln!(
        "[e2e] rolling restart at the defaults, {rate} calls/s through {name}: {} calls, 0 failed, {} s; SIGTERM to exit: {:?}",
        report.calls.len(),
        report.length.as_secs(),
        exits
    );
}

#[test]
fn rolling_restart_at_defaults_fails_no_call_of_our_gateway() {
    if skip_without(ServerKind::RNacos) {
        return;
    }
    rolling_restart_at_defaults(xtask::rolling::Caller::Gateway, 100);
}

#[test]
fn rolling_restart_at_defaults_fails_no_call_of_a_java_push_caller() {
    if skip_without(ServerKind::RNacos) {
        return;
    }
    let class_path = match xtask::ensure_java_peer("2.3.2") {
        Ok(class_path) => class_path,
        Err(e) if !tools_required() => {
            eprintln!("skipped: needs the Java nacos-client ({e}); `cargo xtask test` builds it");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    rolling_restart_at_defaults(xtask::rolling::Caller::Java { class_path }, 100);
}

/// The Spring Cloud caller ([`xtask::ensure_spring_caller`]) at its defaults, whose
/// LoadBalancer keeps each list for 35 s: the old instances serve on until it stops coming.
fn spring_caller() -> Option<xtask::rolling::Caller> {
    if skip_without(ServerKind::RNacos) {
        return None;
    }
    match xtask::ensure_spring_caller() {
        Ok(jar) => Some(xtask::rolling::Caller::Spring {
            jar,
            args: Vec::new(),
        }),
        Err(e) if !tools_required() => {
            eprintln!("skipped: needs the Spring Cloud caller ({e}); `cargo xtask test` builds it");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn rolling_restart_at_defaults_fails_no_call_of_a_spring_cloud_caller() {
    if let Some(caller) = spring_caller() {
        rolling_restart_at_defaults(caller, 100);
    }
}

#[test]
fn rolling_restart_at_defaults_fails_no_call_of_a_slow_spring_cloud_caller() {
    if let Some(caller) = spring_caller() {
        rolling_restart_at_defaults(caller, 2);
    }
}

/// One process holding several instances of one service over gRPC (a sidecar registering
/// its backends): all listed, some deregistered while the others stay, one added, then
/// none. The servers take a batch differently (official: it replaces the connection's
/// set; r-nacos: instance by instance), which the client learns from their answers.
fn several_instances_of_one_service(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-sidecar";
    let register = |port: u16| {
        let config = Config::builder()
            .server_addr(server.addr())
            .service_name(service)
            .ip("127.0.0.1".parse().unwrap())
            .build()
            .unwrap();
        let registration =
            nacos_core::Registration::with_addr_source(config, nacos_core::AddrSource::Reported)
                .unwrap();
        registration.listening_on(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        registration
    };
    let watch = discovery(&server).watch(service);
    let mut held: BTreeMap<u16, nacos_core::Registration> = (31_001..=31_006)
        .map(|port| (port, register(port)))
        .collect();
    let listed = |want: Vec<u16>, step: &str| {
        let seen = ports_when(&watch, Duration::from_secs(15), |p| p == want.as_slice());
        let server_lists = || {
            let hosts = server
                .instances("", "DEFAULT_GROUP", service)
                .unwrap_or_default();
            let mut ports: Vec<u64> = hosts.iter().filter_map(|h| h["port"].as_u64()).collect();
            ports.sort_unstable();
            ports
        };
        assert_eq!(
            seen,
            Some(want.clone()),
            "{kind:?}, {step}: the watch lists {:?}, the server {:?}",
            {
                let mut p: Vec<u16> = watch.instances().all().iter().map(|i| i.port).collect();
                p.sort_unstable();
                p
            },
            server_lists()
        );
    };
    listed((31_001..=31_006).collect(), "six registered");
    for port in [31_002, 31_005] {
        drop(held.remove(&port));
    }
    listed(vec![31_001, 31_003, 31_004, 31_006], "two deregistered");
    held.insert(31_007, register(31_007));
    listed(vec![31_001, 31_003, 31_004, 31_006, 31_007], "one added");
    drop(held.remove(&31_001));
    listed(
        vec![31_003, 31_004, 31_006, 31_007],
        "the first deregistered",
    );
    for registration in held.values() {
        assert_eq!(
            registration.status().snapshot().api,
            Some("grpc"),
            "{kind:?}"
        );
    }
    held.clear();
    listed(vec![], "all deregistered");
}

#[test]
fn rnacos_several_instances_of_one_service() {
    several_instances_of_one_service(ServerKind::RNacos);
}

#[test]
fn nacos2_several_instances_of_one_service() {
    several_instances_of_one_service(nacos2());
}

#[test]
fn nacos3_several_instances_of_one_service() {
    several_instances_of_one_service(nacos3());
}

/// One process watching the same service in two namespaces: each watch lists only its own
/// namespace's instances, before and after a change in one of them (a pushed list names no
/// namespace: the client keeps one connection per namespace, as the Java client does).
fn watches_one_service_in_two_namespaces(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-two-namespaces";
    let (_dev_app, dev) = provider(&server, service, &[("NACOS_NAMESPACE", "e2e-dev")]);
    let (_prod_app, prod) = provider(&server, service, &[("NACOS_NAMESPACE", "e2e-prod")]);
    let watch = |namespace: &str| {
        let config = Config::builder()
            .server_addr(server.addr())
            .service_name("e2e-caller")
            .namespace_id(namespace)
            .discovery_refresh(REFRESH)
            .build()
            .unwrap();
        Discovery::new(&config).unwrap().watch(service)
    };
    let dev_watch = watch("e2e-dev");
    let prod_watch = watch("e2e-prod");
    assert_eq!(
        ports_when(&dev_watch, Duration::from_secs(20), |p| p == [dev]),
        Some(vec![dev])
    );
    assert_eq!(
        ports_when(&prod_watch, Duration::from_secs(20), |p| p == [prod]),
        Some(vec![prod])
    );
    // A second dev instance: dev's watch gets it pushed, prod's stays as it was.
    let (_dev_app2, dev2) = provider(&server, service, &[("NACOS_NAMESPACE", "e2e-dev")]);
    let mut both = vec![dev, dev2];
    both.sort_unstable();
    assert_eq!(
        ports_when(&dev_watch, Duration::from_secs(20), |p| p == both),
        Some(both.clone())
    );
    std::thread::sleep(Duration::from_secs(2));
    let prod_ports: Vec<u16> = prod_watch
        .instances()
        .all()
        .iter()
        .map(|i| i.port)
        .collect();
    assert_eq!(
        prod_ports,
        [prod],
        "the dev namespace's list reached the prod watch on {kind}"
    );
    eprintln!(
        "[e2e] {kind}: one process watching {service} in two namespaces: dev {both:?}, prod {prod_ports:?}"
    );
}

#[test]
fn rnacos_watches_one_service_in_two_namespaces() {
    watches_one_service_in_two_namespaces(ServerKind::RNacos);
}

#[test]
fn nacos2_watches_one_service_in_two_namespaces() {
    watches_one_service_in_two_namespaces(nacos2());
}

#[test]
fn nacos3_watches_one_service_in_two_namespaces() {
    watches_one_service_in_two_namespaces(nacos3());
}

/// Nacos stops answering for `pause` (`kill -STOP`, as a long JVM pause does), then goes
/// on: our provider's gRPC connection stays (no reconnection, no redo), and a Java
/// nacos-client 2.3.2 subscriber never sees our instance leave the pushed list.
fn paused_server_keeps_our_instance(kind: ServerKind, pause: Duration) {
    if skip_without(kind) {
        return;
    }
    let class_path = match xtask::ensure_java_peer("2.3.2") {
        Ok(class_path) => class_path,
        Err(e) if !tools_required() => {
            eprintln!("skipped: needs the Java nacos-client ({e}); `cargo xtask test` builds it");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-paused-server";
    let home = std::env::temp_dir().join(format!(
        "e2e-java-pause-{}-{}",
        std::process::id(),
        pause.as_secs()
    ));
    let java = App::start_with_args(
        "java",
        &[
            &format!("-Duser.home={}", home.display()),
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &class_path,
            "peerbench.Subscriber",
            &server.addr(),
            service,
            "120",
        ],
        &[],
    );
    wait_for(Duration::from_secs(60), || {
        java.output().contains("subscribed").then_some(())
    })
    .unwrap_or_else(|| panic!("the Java client did not subscribe:\n{}", java.output()));
    let (ours, port) = provider(&server, service, &[]);
    let seen = format!("hosts {port}");
    wait_for(Duration::from_secs(15), || {
        java.output().lines().any(|l| l == seen).then_some(())
    })
    .unwrap_or_else(|| panic!("the Java caller never saw our instance:\n{}", java.output()));
    // Quiet for a health check's idle time, so that one falls into the pause.
    std::thread::sleep(Duration::from_secs(4));
    let pid = server.pid().expect("the server runs").to_string();
    let run = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    };
    run("-STOP");
    std::thread::sleep(pause);
    run("-CONT");
    // The server catches up; a health check that was waiting gets its answer.
    std::thread::sleep(Duration::from_secs(8));
    let log = ours.output();
    assert!(
        !log.contains("connection lost") && !log.contains("connection up again"),
        "our connection did not ride out a {} s pause on {kind}:\n{log}",
        pause.as_secs()
    );
    let lists: Vec<String> = java
        .output()
        .lines()
        .skip_while(|l| *l != seen)
        .filter(|l| l.starts_with("hosts"))
        .map(str::to_owned)
        .collect();
    assert!(
        lists.iter().all(|l| l == &seen),
        "the Java subscriber saw our instance leave during a {} s pause on {kind}: {lists:?}",
        pause.as_secs()
    );
    let checks = log.matches("health check failed").count();
    eprintln!(
        "[e2e] {kind} paused {} s: our connection stayed ({checks} health checks tried again), the Java subscriber's lists: {lists:?}",
        pause.as_secs()
    );
    drop(std::fs::remove_dir_all(home));
}

#[test]
fn rnacos_paused_4s_keeps_our_instance() {
    paused_server_keeps_our_instance(ServerKind::RNacos, Duration::from_secs(4));
}

#[test]
fn rnacos_paused_8s_keeps_our_instance() {
    paused_server_keeps_our_instance(ServerKind::RNacos, Duration::from_secs(8));
}

#[test]
fn nacos2_paused_4s_keeps_our_instance() {
    paused_server_keeps_our_instance(nacos2(), Duration::from_secs(4));
}

#[test]
fn nacos2_paused_8s_keeps_our_instance() {
    paused_server_keeps_our_instance(nacos2(), Duration::from_secs(8));
}

/// A watched service whose pushed list is over 4 MiB (tonic's default limit; Nacos and the
/// Java client allow 10 MiB): 5,000 instances with about 1 KB of metadata each, registered
/// (persistent, over HTTP v1) by the test, reach a gRPC watch whole.
fn watches_a_list_over_4_mib(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions::default());
    let service = "e2e-big-list";
    let count = 5000u32;
    let padding = "x".repeat(900);
    let metadata = serde_json::json!({ "padding": padding }).to_string();
    let url = format!("http://{}/nacos/v1/ns/instance", server.addr());
    let threads = 8;
    let workers: Vec<_> = (0..threads)
        .map(|k| {
            let (url, metadata) = (url.clone(), metadata.clone());
            std::thread::spawn(move || {
                for i in (k..count).step_by(threads as usize) {
                    let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                    let answer = xtask::send(
                        "POST",
                        &url,
                        &[
                            ("serviceName", service),
                            ("ip", &ip),
                            ("port", "8080"),
                            ("ephemeral", "false"),
                            ("metadata", &metadata),
                        ],
                    );
                    assert!(
                        matches!(answer, Ok((200, _))),
                        "registering {ip}: {answer:?}"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a registering thread");
    }
    let config = Config::builder()
        .server_addr(server.addr())
        .service_name("e2e-caller")
        .build()
        .unwrap();
    let watch = Discovery::new(&config).unwrap().watch(service);
    let listed = wait_for(Duration::from_secs(60), || {
        let n = watch.instances().listed();
        (n == count as usize).then_some(n)
    });
    assert_eq!(
        listed,
        Some(count as usize),
        "the watch lists {} of {count} on {kind}",
        watch.instances().listed()
    );
    eprintln!(
        "[e2e] {kind}: a watch over gRPC lists all {count} instances of a service whose list is over 4 MiB"
    );
}

#[test]
fn rnacos_watches_a_list_over_4_mib() {
    watches_a_list_over_4_mib(ServerKind::RNacos);
}

#[test]
fn nacos2_watches_a_list_over_4_mib() {
    watches_a_list_over_4_mib(nacos2());
}
