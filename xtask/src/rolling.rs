//! The rolling-restart benchmark: a caller under constant load through Nacos while every
//! provider instance is restarted, one at a time, several rounds.
//!
//! Set-up (all real processes on loopback): r-nacos; `providers` instances of the axum demo;
//! a caller whose `GET /call` calls one provider found through Nacos (our axum gateway, with
//! the load-balanced client, a Java nacos-client caller with push and no retry, or a Spring
//! Cloud app at its defaults, see [`Caller`]); a load generator sending `rate` requests per
//! second to the caller, each on a schedule (an open loop: a slow answer does not slow the
//! next request down), over keep-alive connections.
//!
//! A restart is what a deployment does: the old instance gets SIGTERM (or SIGKILL), a new one
//! starts on a new port at once (the old one leaves in its own time, as a Kubernetes rolling
//! update lets it), and the next instance is restarted 2 s after the registry lists the new
//! one, whenever the caller sees it (deploy tools pace on the registry or on readiness, not
//! on every caller). The load goes on until every old instance has exited, and 3 s more, so
//! that a caller still sending to a leaving instance is seen failing.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{App, RNacos, announced_port, wait_for};

/// How a provider instance is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: deregistered first, then `NACOS_DEREGISTER_GRACE`, then drained.
    Graceful,
    /// SIGKILL: no deregistration; the instance stays listed until the server drops it.
    Kill,
}

/// Who calls the providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `axum-gateway` at `gateway_exe`: `LoadBalancer` over a `ServiceWatch` (push over
    /// gRPC), connect retry on another instance, outlier ejection.
    Gateway,
    /// `peerbench.Caller` (bench/peers/java) on this class path: Alibaba's nacos-client,
    /// `selectInstances(service, true)` (push), round-robin, one attempt per call.
    Java {
        /// The runner's class path ([`crate::ensure_java_peer`]).
        class_path: String,
    },
    /// `bench/peers/spring-cloud`'s jar ([`crate::ensure_spring_caller`]): a Spring Boot 3.5
    /// app with Spring Cloud Alibaba's nacos-discovery and Spring Cloud LoadBalancer at
    /// their defaults (round robin, the list cached for 35 s, no retry), calling through a
    /// `@LoadBalanced RestTemplate`.
    Spring {
        /// The jar.
        jar: String,
        /// Extra Spring arguments (e.g. `--spring.cloud.loadbalancer.cache.ttl=5s`).
        args: Vec<String>,
    },
}

impl Caller {
    /// A short name for tables and messages.
    pub fn name(&self) -> String {
        match self {
            Caller::Gateway => "axum-gateway".to_owned(),
            Caller::Java { .. } => "Java nacos-client 2.3.2".to_owned(),
            Caller::Spring { args, .. } if args.is_empty() => {
                "Spring Cloud app, defaults".to_owned()
            }
            Caller::Spring { args, .. } => format!("Spring Cloud app, {}", args.join(" ")),
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many provider instances.
    pub providers: usize,
    /// Restart rounds (each restarts every instance once).
    pub rounds: usize,
    /// Requests per second sent to the caller.
    pub rate: u32,
    /// How providers are stopped.
    pub stop: Stop,
    /// `NACOS_DEREGISTER_GRACE` of the providers; `None` leaves the default.
    pub grace: Option<Duration>,
    /// `NACOS_DISCOVERY_REFRESH` of our gateway; `None` leaves the default.
    pub refresh: Option<Duration>,
    /// More environment for the providers (e.g. `NACOS_DEREGISTER_GRACE_MAX`).
    pub provider_env: Vec<(&'static str, String)>,
    /// Who calls.
    pub caller: Caller,
}

/// One request the load generator sent.
#[derive(Debug, Clone)]
pub struct Call {
    /// When it was due, from the start of the run.
    pub at: Duration,
    /// How long until the answer (or the failure).
    pub latency: Duration,
    /// Whether the gateway answered 200.
    pub ok: bool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every request.
    pub calls: Vec<Call>,
    /// When each restart started and ended (the new instance listed), from the start.
    pub restarts: Vec<(Duration, Duration)>,
    /// Instances the gateway listed, sampled every 200 ms: (time, count).
    pub listed: Vec<(Duration, usize)>,
    /// For each stopped instance, the time from its signal to its exit.
    pub exits: Vec<Duration>,
    /// The whole run's length.
    pub length: Duration,
}

impl Report {
    /// Whether `at` falls in a restart (from its start to 2 s after its end).
    pub fn during_restart(&self, at: Duration) -> bool {
        self.restarts
            .iter()
            .any(|(from, to)| at >= *from && at <= *to + Duration::from_secs(2))
    }
}

/// How long an old instance may take to exit after its signal: the providers' default
/// most time serving on after the deregistration (`NACOS_DEREGISTER_GRACE_MAX`, 40 s) and
/// 20 s for the drain.
const LEAVE_BOUND: Duration = Duration::from_secs(60);

/// Starts `exe` with `envs` and waits (30 s) for the port it announces.
///
/// # Errors
/// When it announces none in time, with its output.
pub fn start_app(exe: &str, envs: &[(&str, String)]) -> Result<(App, u16), String> {
    let app = App::start(exe, envs);
    let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
        .ok_or_else(|| format!("{exe} did not start:\n{}", app.output()))?;
    Ok((app, port))
}

/// The ports of the instances the gateway lists.
pub fn listed_ports(agent: &ureq::Agent, gateway: u16) -> Option<Vec<u16>> {
    let mut resp = agent
        .get(format!("http://127.0.0.1:{gateway}/instances"))
        .call()
        .ok()?;
    let text = resp.body_mut().read_to_string().ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(
        body["instances"]
            .as_array()?
            .iter()
            .filter_map(|i| {
                let text = i.as_str()?;
                let addr = text.split(' ').next()?;
                addr.rsplit(':').next()?.parse().ok()
            })
            .collect(),
    )
}

/// Starts `caller` calling `service` through the Nacos at `addr` (one address or a
/// comma-separated list), with its Java home (if any) in `home`; returns it with the port of
/// its `GET /call` and `GET /instances`. `refresh` is our gateway's
/// `NACOS_DISCOVERY_REFRESH` (`None`: the default).
///
/// # Errors
/// When the caller does not announce its port in time.
pub fn start_caller(
    caller: &Caller,
    gateway_exe: &str,
    addr: &str,
    service: &str,
    refresh: Option<Duration>,
    home: &std::path::Path,
) -> Result<(App, u16), String> {
    Ok(match caller {
        Caller::Gateway => {
            let mut env = vec![
                ("NACOS_SERVER_ADDR", addr.to_owned()),
                ("NACOS_SERVICE_NAME", format!("{service}-caller")),
                ("TARGET_SERVICE", service.to_owned()),
                ("PORT", "0".to_owned()),
                ("RUST_LOG", "error,axum_gateway=info".to_owned()),
            ];
            if let Some(refresh) = refresh {
                env.push((
                    "NACOS_DISCOVERY_REFRESH",
                    format!("{}ms", refresh.as_millis()),
                ));
            }
            start_app(gateway_exe, &env)?
        }
        Caller::Spring { jar, args } => {
            std::fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
            let mut all = vec![
                format!("-Duser.home={}", home.display()),
                format!("-Djava.io.tmpdir={}", home.display()),
                "-jar".to_owned(),
                jar.clone(),
                format!("--spring.cloud.nacos.discovery.server-addr={addr}"),
                format!("--target.service={service}"),
                "--server.port=0".to_owned(),
                "--server.address=127.0.0.1".to_owned(),
            ];
            all.extend(args.iter().cloned());
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let app = App::start_with_args("java", &all, &[]);
            let port = wait_for(Duration::from_secs(120), || announced_port(&app.output()))
                .ok_or_else(|| {
                    format!("the Spring Cloud caller did not start:\n{}", app.output())
                })?;
            (app, port)
        }
        Caller::Java { class_path } => {
            let app = App::start_with_args(
                "java",
                &[
                    &format!("-Duser.home={}", home.display()),
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                    "-cp",
                    class_path,
                    "peerbench.Caller",
                    addr,
                    service,
                    "0",
                ],
                &[],
            );
            let port = wait_for(Duration::from_secs(60), || announced_port(&app.output()))
                .ok_or_else(|| format!("the Java caller did not start:\n{}", app.output()))?;
            (app, port)
        }
    })
}

/// Runs the benchmark once.
///
/// # Errors
/// When a process does not start or a new instance is never listed.
pub fn run(provider_exe: &str, gateway_exe: &str, options: &Options) -> Result<Report, String> {
    let server = RNacos::start();
    let service = "rolling";
    let mut provider_env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", service.to_owned()),
        ("PORT", "0".to_owned()),
        ("RUST_LOG", "warn,axum_demo=info".to_owned()),
    ];
    if let Some(grace) = options.grace {
        provider_env.push(("NACOS_DEREGISTER_GRACE", format!("{}ms", grace.as_millis())));
    }
    provider_env.extend(options.provider_env.iter().cloned());
    let mut providers = Vec::new();
    for _ in 0..options.providers {
        providers.push(start_app(provider_exe, &provider_env)?);
    }
    let home = std::env::temp_dir().join(format!("rolling-java-home-{}", std::process::id()));
    let (_caller, gw) = start_caller(
        &options.caller,
        gateway_exe,
        &server.addr(),
        service,
        options.refresh,
        &home,
    )?;
    let agent = crate::agent(Duration::from_secs(5));
    let everyone: Vec<u16> = providers.iter().map(|(_, p)| *p).collect();
    wait_for(Duration::from_secs(20), || {
        let listed = listed_ports(&agent, gw)?;
        everyone.iter().all(|p| listed.contains(p)).then_some(())
    })
    .ok_or("the caller never listed every provider")?;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // The load: `threads` senders, each owning every `threads`-th slot of the schedule.
    let threads = 8u32;
    let period = Duration::from_secs(1) / options.rate;
    let senders: Vec<_> = (0..threads)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = crate::agent(Duration::from_secs(10));
                let url = format!("http://127.0.0.1:{gw}/call");
                let mut calls = Vec::new();
                let mut n = k;
                while !stop.load(Ordering::SeqCst) {
                    let due = period * n;
                    let now = started.elapsed();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let sent = Instant::now();
                    let ok = agent
                        .get(&url)
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    calls.push(Call {
                        at: due,
                        latency: sent.elapsed(),
                        ok,
                    });
                    n += threads;
                }
                calls
            })
        })
        .collect();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let agent = crate::agent(Duration::from_secs(2));
            let mut listed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some(ports) = listed_ports(&agent, gw) {
                    listed.push((started.elapsed(), ports.len()));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            listed
        })
    };

    std::thread::sleep(Duration::from_secs(3));
    let mut restarts = Vec::new();
    let mut leaving = Vec::new();
    for _ in 0..options.rounds {
        for slot in 0..providers.len() {
            let from = started.elapsed();
            let (mut old, _) = providers.remove(slot);
            let signalled = Instant::now();
            match options.stop {
                Stop::Graceful => old.signal("TERM"),
                Stop::Kill => old.signal("KILL"),
            }
            leaving.push(std::thread::spawn(move || {
                old.wait_exit(LEAVE_BOUND).map(|_| signalled.elapsed())
            }));
            let (new, port) = start_app(provider_exe, &provider_env)?;
            wait_for(Duration::from_secs(20), || {
                let hosts = server.instances("public", "DEFAULT_GROUP", service).ok()?;
                hosts.iter().any(|h| h["port"] == port).then_some(())
            })
            .ok_or("the registry never listed a new instance")?;
            providers.insert(slot, (new, port));
            restarts.push((from, started.elapsed()));
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let mut exits = Vec::new();
    for old in leaving {
        exits.push(
            old.join()
                .ok()
                .flatten()
                .ok_or("an old instance did not exit within 60 s of its signal")?,
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    drop(std::fs::remove_dir_all(&home));
    let mut calls: Vec<Call> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap_or_default())
        .collect();
    calls.sort_by_key(|c| c.at);
    let listed = sampler.join().unwrap_or_default();
    Ok(Report {
        calls,
        restarts,
        listed,
        exits,
        length: started.elapsed(),
    })
}

/// The `q` quantile of `values` (sorted here), in ms.
pub fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i].as_secs_f64() * 1000.0
}
