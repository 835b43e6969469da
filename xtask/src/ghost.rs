//! The ghost window of an official Nacos cluster: how long a provider that stops stays
//! listed after the node holding its connection died, and what callers see of it during a
//! rolling restart (`cargo xtask ghost-window`).
//!
//! Why there is one: over gRPC an ephemeral instance belongs to the client (connection) that
//! registered it, and that client to the node holding the connection. The other nodes keep a
//! copy (Distro), renewed by the owner's verify messages every 5 s. When the owner dies, the
//! copies of its clients stay on the survivors until `nacos.naming.client.expired.time`
//! (180,000 ms by default) has passed since their last renewal
//! (`ConnectionBasedClient.isExpire`, checked every 5 s). The provider has meanwhile moved its
//! connection to a survivor and registered again under a new client, so while it runs the two
//! show as one instance; once it stops, the new client goes at once and the old copy lists it
//! on until it expires. No request of a client reaches a copy: deregistration (gRPC or HTTP)
//! acts on the caller's own client only. So a client cannot shorten the window; the server
//! setting can.
//!
//! Set-up (all real processes on loopback): a 3-node official Nacos 2.3.2 cluster (embedded
//! storage); providers placed on one node (started again until `/health` or the node's
//! `GET /nacos/v2/core/loader/current` shows them there); that node killed.
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::official::{OfficialCluster, OfficialNacos, OfficialOptions, OfficialVersion};
use crate::rolling::{Caller, listed_ports, start_app, start_caller};
use crate::{App, wait_for};

/// How long a copy may outlive its owner before the measurement gives up: the server's
/// default expiry (180 s), its 5 s check and room.
const GHOST_BOUND: Duration = Duration::from_secs(240);

/// One stopped provider's ghost.
#[derive(Debug, Clone)]
pub struct Ghost {
    /// Who and how: e.g. "ours, kill -9".
    pub who: String,
    /// From the node's death to the provider's stop.
    pub stopped_after_loss: Duration,
    /// From the stop until no survivor lists it (`None`: still listed at the bound).
    pub listed_for: Option<Duration>,
}

/// How many times a node lists `port` in `service` (`None`: no answer).
fn count_on(node: &OfficialNacos, service: &str, port: u16) -> Option<usize> {
    let hosts = node.instances("public", "DEFAULT_GROUP", service).ok()?;
    Some(hosts.iter().filter(|h| h["port"] == port).count())
}

/// The node (index) whose connection keeps the demo listening on `port`, from its `/health`.
fn node_of_demo(cluster: &OfficialCluster, port: u16) -> Option<usize> {
    let (_, text) = crate::get_text(&format!("http://127.0.0.1:{port}/health")).ok()?;
    let health: Value = serde_json::from_str(&text).ok()?;
    let server = health["nacos"]["server"].as_str()?;
    cluster
        .nodes
        .iter()
        .position(|n| server.ends_with(&format!(":{}", n.grpc_port())))
}

/// The node (index) holding a Java nacos-client's SDK connection
/// (`GET /nacos/v2/core/loader/current`).
fn node_of_java(cluster: &OfficialCluster) -> Option<usize> {
    cluster.nodes.iter().position(|node| {
        node.send("GET", "/nacos/v2/core/loader/current", &[])
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v.as_object().cloned())
            .is_some_and(|conns| {
                conns.values().any(|c| {
                    c["metaInfo"]["sdkSource"] == true
                        && c["metaInfo"]["version"]
                            .as_str()
                            .is_some_and(|v| v.starts_with("Nacos-Java-Client"))
                })
            })
    })
}

fn demo_env(cluster: &OfficialCluster, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NACOS_SERVER_ADDR", cluster.addr()),
        ("NACOS_SERVICE_NAME", service.to_owned()),
        ("PORT", "0".to_owned()),
        ("RUST_LOG", "warn,axum_demo=info".to_owned()),
    ]
}

/// Starts the demo until its connection is on node `node` (20 tries); the others are
/// killed before anything calls them.
fn demo_on(
    exe: &str,
    cluster: &OfficialCluster,
    service: &str,
    node: usize,
) -> Result<(App, u16), String> {
    for _ in 0..20 {
        let (mut app, port) = start_app(exe, &demo_env(cluster, service))?;
        let on = wait_for(Duration::from_secs(10), || node_of_demo(cluster, port));
        if on == Some(node) {
            return Ok((app, port));
        }
        // Nothing calls it yet: gone without a grace period.
        app.signal("KILL");
        app.wait_exit(Duration::from_secs(10));
    }
    Err(format!("the demo never connected to node {}", node + 1))
}

/// Measures ghosts: a Java nacos-client 2.3.2 provider (`peerbench.Runner`) and two of our
/// demos on one node; that node killed; 10 s later the Java provider and one demo get
/// `kill -9`, the other demo SIGTERM; then how long the survivors list each. `properties`
/// go to every node (e.g. `nacos.naming.client.expired.time`).
///
/// # Errors
/// When a process does not start or a provider never lands where it must.
pub fn ghosts(
    provider_exe: &str,
    java_class_path: &str,
    properties: &[(&str, &str)],
) -> Result<Vec<Ghost>, String> {
    let mut cluster = OfficialCluster::start(
        OfficialVersion::V2_3_2,
        3,
        OfficialOptions {
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..OfficialOptions::default()
        },
    );
    let home = std::env::temp_dir().join(format!("ghost-java-home-{}", std::process::id()));
    let java = App::start_with_args(
        "java",
        &[
            &format!("-Duser.home={}", home.display()),
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            java_class_path,
            "peerbench.Runner",
            &cluster.addr(),
            "1",
            "600",
            "ghost",
        ],
        &[],
    );
    wait_for(Duration::from_secs(60), || {
        java.output().contains("ready 1").then_some(())
    })
    .ok_or_else(|| format!("the Java provider did not register:\n{}", java.output()))?;
    let node = wait_for(Duration::from_secs(10), || node_of_java(&cluster))
        .ok_or("no node holds the Java client's connection")?;
    let (killed, killed_port) = demo_on(provider_exe, &cluster, "ghost-rust", node)?;
    let (termed, termed_port) = demo_on(provider_exe, &cluster, "ghost-rust", node)?;
    let java_port = 20000;
    let survivors: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != node).collect();
    let all_listed = |cluster: &OfficialCluster| {
        survivors.iter().all(|&i| {
            count_on(&cluster.nodes[i], "ghost-rust", killed_port) == Some(1)
                && count_on(&cluster.nodes[i], "ghost-rust", termed_port) == Some(1)
                && count_on(&cluster.nodes[i], "ghost-java", java_port) == Some(1)
        })
    };
    wait_for(Duration::from_secs(20), || {
        all_listed(&cluster).then_some(())
    })
    .ok_or("the providers are not listed on every node")?;
    cluster.nodes[node].stop();
    let lost = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    if !all_listed(&cluster) {
        return Err("a provider went missing from a survivor after the node loss".into());
    }
    let stopped = Instant::now();
    java.signal("KILL");
    killed.signal("KILL");
    termed.signal("TERM");
    let mut pending: Vec<(&str, &str, u16)> = vec![
        ("ours, kill -9", "ghost-rust", killed_port),
        ("ours, SIGTERM (deregistered)", "ghost-rust", termed_port),
        ("Java nacos-client 2.3.2, kill -9", "ghost-java", java_port),
    ];
    let mut ghosts = Vec::new();
    while !pending.is_empty() && stopped.elapsed() < GHOST_BOUND {
        pending.retain(|(who, service, port)| {
            let gone = survivors
                .iter()
                .all(|&i| count_on(&cluster.nodes[i], service, *port) == Some(0));
            if gone {
                ghosts.push(Ghost {
                    who: (*who).to_owned(),
                    stopped_after_loss: stopped - lost,
                    listed_for: Some(stopped.elapsed()),
                });
            }
            !gone
        });
        std::thread::sleep(Duration::from_millis(250));
    }
    for (who, _, _) in pending {
        ghosts.push(Ghost {
            who: who.to_owned(),
            stopped_after_loss: stopped - lost,
            listed_for: None,
        });
    }
    drop(std::fs::remove_dir_all(&home));
    Ok(ghosts)
}

/// What one caller saw in one phase of [`rolling`].
#[derive(Debug, Clone)]
pub struct CallerPhase {
    /// The caller.
    pub caller: String,
    /// The phase: "after the node loss" or "every node up".
    pub phase: &'static str,
    /// Requests sent in the phase.
    pub sent: usize,
    /// Requests failed in the phase.
    pub failed: usize,
    /// From the phase's start to the last failure.
    pub last_failure: Option<Duration>,
}

/// A rolling restart in the ghost window: two demos on one node, our gateway, a Java
/// nacos-client caller and a Spring Cloud app calling them at `rate` requests per second
/// each; the node killed; 5 s later both demos restarted (SIGTERM, a new one on a new port,
/// the next 2 s after the registry lists the new one); the load goes on until the copies of
/// the old ones expired (`expiry` + 10 s after the loss). Then the node back and, as a
/// control, the same restart with every node up, followed by 60 s of load.
///
/// # Errors
/// When a process does not start or a new instance is never listed.
pub fn rolling(
    provider_exe: &str,
    callers: &[(Caller, String)],
    rate: u32,
    expiry: Duration,
) -> Result<Vec<CallerPhase>, String> {
    let mut cluster =
        OfficialCluster::start(OfficialVersion::V2_3_2, 3, OfficialOptions::default());
    let service = "ghost-roll";
    let first = start_app(provider_exe, &demo_env(&cluster, service))?;
    let node = wait_for(Duration::from_secs(10), || node_of_demo(&cluster, first.1))
        .ok_or("the first demo names no node")?;
    let mut providers = vec![first, demo_on(provider_exe, &cluster, service, node)?];
    let home = std::env::temp_dir().join(format!("ghost-callers-{}", std::process::id()));
    let mut running = Vec::new();
    for (caller, gateway_exe) in callers {
        let (app, port) = start_caller(
            caller,
            gateway_exe,
            &cluster.addr(),
            service,
            None,
            &home.join(running.len().to_string()),
        )?;
        running.push((caller.name(), app, port));
    }
    let agent = crate::agent(Duration::from_secs(5));
    let everyone: Vec<u16> = providers.iter().map(|(_, p)| *p).collect();
    for (name, _, port) in &running {
        wait_for(Duration::from_secs(30), || {
            let listed = listed_ports(&agent, *port)?;
            everyone.iter().all(|p| listed.contains(p)).then_some(())
        })
        .ok_or_else(|| format!("{name} never listed both providers"))?;
    }
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let period = Duration::from_secs(1) / rate;
    let senders: Vec<_> = running
        .iter()
        .map(|(_, _, port)| {
            let stop = stop.clone();
            let port = *port;
            std::thread::spawn(move || {
                let agent = crate::agent(Duration::from_secs(10));
                let url = format!("http://127.0.0.1:{port}/call");
                let mut calls = Vec::new();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let due = period * n;
                    let now = started.elapsed();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let ok = agent
                        .get(&url)
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    calls.push((due, ok));
                    n += 1;
                }
                calls
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    cluster.nodes[node].stop();
    let lost = started.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let listed_by = |cluster: &OfficialCluster, port: u16, skip: Option<usize>| {
        cluster
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .all(|(_, n)| count_on(n, service, port) == Some(1))
    };
    let mut leaving = Vec::new();
    let roll = |cluster: &OfficialCluster,
                providers: &mut Vec<(App, u16)>,
                leaving: &mut Vec<App>,
                skip: Option<usize>|
     -> Result<(), String> {
        for slot in 0..providers.len() {
            let (old, _) = providers.remove(slot);
            old.signal("TERM");
            leaving.push(old);
            let (new, port) = start_app(provider_exe, &demo_env(cluster, service))?;
            wait_for(Duration::from_secs(20), || {
                listed_by(cluster, port, skip).then_some(())
            })
            .ok_or("the registry never listed a new instance")?;
            providers.insert(slot, (new, port));
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(())
    };
    let loss_roll = started.elapsed();
    roll(&cluster, &mut providers, &mut leaving, Some(node))?;
    let until = lost + expiry + Duration::from_secs(10);
    while started.elapsed() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.nodes[node].restart();
    std::thread::sleep(Duration::from_secs(10));
    let control = started.elapsed();
    roll(&cluster, &mut providers, &mut leaving, None)?;
    std::thread::sleep(Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for mut old in leaving {
        old.wait_exit(Duration::from_secs(60));
    }
    let mut phases = Vec::new();
    for ((name, _, _), sender) in running.iter().zip(senders) {
        let calls = sender.join().unwrap_or_default();
        for (phase, from, to) in [
            ("after the node loss", loss_roll, control),
            ("every node up", control, Duration::MAX),
        ] {
            let inside: Vec<&(Duration, bool)> = calls
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .collect();
            phases.push(CallerPhase {
                caller: name.clone(),
                phase,
                sent: inside.len(),
                failed: inside.iter().filter(|(_, ok)| !ok).count(),
                last_failure: inside
                    .iter()
                    .filter(|(_, ok)| !ok)
                    .map(|(at, _)| *at - from)
                    .max(),
            });
        }
    }
    drop(std::fs::remove_dir_all(&home));
    Ok(phases)
}
