//! `cargo xtask`: the project's development commands.
//!
//! - `cargo xtask demo [axum|axum-minimal|actix|actix-handle]`: run the demo app against
//!   the Nacos `NACOS_SERVER_ADDR` names, or else a local one it starts (r-nacos, or the
//!   official server when r-nacos is not installed and `java` and `mvn` are on the `PATH`),
//!   show the instance in that server's own list, stop the app with SIGTERM and show the
//!   instance gone.
//! - `cargo xtask demo discovery`: r-nacos, two instances of the axum demo and the axum
//!   gateway calling them through Nacos: the answers alternate, then one provider leaves
//!   (SIGTERM) under load, with no failed call.
//! - `cargo xtask test [ARGS]`: install the servers if needed, then `cargo test --workspace
//!   --no-fail-fast ARGS`; the failed tests are listed together at the end.
//! - `cargo xtask nacos install|run`: install r-nacos, or run one in the foreground
//!   (`nacos run official [VERSION] [auth]`: the official server).
//! - `cargo xtask msrv`: each member's `rust-version` against its dependencies' (see
//!   `xtask::msrv`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xtask::external::ExternalNacos;
use xtask::official::OfficialVersion;
use xtask::server::{Server, ServerKind, ServerOptions};
use xtask::{App, RNACOS_VERSION, RNacos, announced_port, ensure_rnacos, wait_for};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") if args.get(1).is_some_and(|a| a == "discovery") => demo_discovery(),
        Some("demo") if args.get(1).is_some_and(|a| a == "config") => demo_config(),
        Some("demo") => demo(args.get(1).map_or("axum", String::as_str)),
        Some("test") => test(&args[1..]),
        Some("msrv") => msrv(),
        Some("rolling-restart") => rolling_restart(args.get(1).map(String::as_str)),
        Some("ghost-window") => ghost_window(args.get(1).map(String::as_str)),
        Some("faults") if args.get(1).is_some_and(|a| a == "frozen") => faults_frozen(),
        Some("faults") => faults(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600)),
        Some("recovery") => recovery(
            args.get(1).map_or("axum", String::as_str),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(5),
        ),
        Some("timings") => timings(
            args.get(1).map_or("axum", String::as_str),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20),
        ),
        Some("nacos") => match args.get(1).map(String::as_str) {
            Some("install") => install_servers(),
            Some("run") => run_nacos(&args[2..]),
            _ => Err(usage()),
        },
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    "usage: cargo xtask demo [axum|axum-minimal|actix|actix-handle|discovery|config] | test [cargo test args] | msrv | rolling-restart [OUT_DIR] | faults [SOAK_SECONDS|frozen] | recovery [APP] [ROUNDS] | timings [APP] [ROUNDS] | nacos install | nacos run [official [2.3.2|3.1.0] [auth] [cluster]] | ghost-window [ghosts|rolling]"
        .into()
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn test(args: &[String]) -> Result<(), String> {
    let promtool = xtask::ensure_promtool()?;
    let bin = ensure_rnacos()?;
    for version in xtask::official::OfficialVersion::ALL {
        xtask::official::ensure_official(version)?;
    }
    xtask::ensure_node_peer()?;
    for client in ["2.3.2", "3.1.0"] {
        xtask::ensure_java_peer(client)?;
    }
    xtask::ensure_spring_caller()?;
    // One pipe for cargo's stderr and the tests' stdout, so the lines keep their order.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new("sh")
        .args(["-c", "exec \"$@\" 2>&1", "sh"])
        .arg(cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .current_dir(workspace_root())
        .env("RNACOS_BIN", bin)
        .env("PROMTOOL", promtool)
        .env(xtask::REQUIRE_SERVERS, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let output = child
        .stdout
        .take()
        .ok_or("cargo test's output is not piped")?;
    let mut failures = xtask::testrun::Failures::default();
    let mut terminal = std::io::stdout();
    for line in std::io::BufReader::new(output).split(b'\n') {
        let line = line.map_err(|e| format!("reading cargo test's output: {e}"))?;
        // A closed terminal must not stop the run: the summary matters more.
        drop(
            terminal
                .write_all(&line)
                .and_then(|()| terminal.write_all(b"\n")),
        );
        drop(terminal.flush());
        failures.line(&String::from_utf8_lossy(&line));
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo test: {e}"))?;
    match failures.summary() {
        Some(summary) => Err(format!(
            "cargo test --workspace --no-fail-fast failed ({status}); {summary}"
        )),
        None if status.success() => Ok(()),
        None => Err(format!("cargo test failed ({status})")),
    }
}

/// `cargo xtask msrv`: a table of each member's declared and needed Rust version; fails
/// when a member declares less than its dependencies need.
fn msrv() -> Result<(), String> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed ({})", out.status));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata's output: {e}"))?;
    let members = xtask::msrv::members(&metadata)?;
    println!("| member | rust-version | needed | because of |");
    println!("|---|---|---|---|");
    for m in &members {
        println!(
            "| {} | {} | {} | {} |",
            m.name,
            m.declared
                .map_or_else(|| "none".to_owned(), |v| v.to_string()),
            m.needed,
            m.why
        );
    }
    let short: Vec<String> = members
        .iter()
        .filter(|m| !m.holds())
        .map(|m| {
            format!(
                "{} needs rust-version = \"{}\" ({})",
                m.name, m.needed, m.why
            )
        })
        .collect();
    if short.is_empty() {
        Ok(())
    } else {
        Err(short.join("; "))
    }
}

/// `cargo xtask nacos run [official [2.3.2|3.1.0] [auth] [cluster]]`: r-nacos, or the
/// official server (2.3.2 unless named; with `auth`, user `nacos`, password `nacos`; with
/// `cluster`, three nodes), in the foreground.
fn run_nacos(args: &[String]) -> Result<(), String> {
    let _server: Box<dyn std::fmt::Debug> = if args.first().is_some_and(|a| a == "official") {
        let version = match args.get(1).filter(|a| *a != "auth" && *a != "cluster") {
            Some(v) => v.parse()?,
            None => DEMO_OFFICIAL,
        };
        let auth = args.iter().any(|a| a == "auth");
        xtask::official::ensure_official(version)?;
        if args.iter().any(|a| a == "cluster") {
            let cluster = xtask::official::OfficialCluster::start(
                version,
                3,
                xtask::official::OfficialOptions {
                    auth,
                    ..Default::default()
                },
            );
            println!(
                "A 3-node Nacos {version} cluster is up: NACOS_SERVER_ADDR={}",
                cluster.addr()
            );
            for node in &cluster.nodes {
                println!("  pid {:?}, home {}", node.pid(), node.home().display());
            }
            println!("Ctrl-C stops it.");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let server = xtask::official::OfficialNacos::start(
            version,
            xtask::official::OfficialOptions {
                auth,
                ..Default::default()
            },
        );
        let (user, password) = server.credentials();
        println!(
            "Nacos {version} is up: NACOS_SERVER_ADDR={}{}",
            server.addr(),
            if auth {
                format!("  NACOS_USERNAME={user} NACOS_PASSWORD={password}")
            } else {
                String::new()
            }
        );
        Box::new(server)
    } else {
        ensure_rnacos()?;
        let server = RNacos::start();
        println!(
            "r-nacos is up: NACOS_SERVER_ADDR={}  console: {}",
            server.addr(),
            server.console_url()
        );
        Box::new(server)
    };
    println!("Ctrl-C stops it.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Builds a demo binary (release when `XTASK_RELEASE=1`) and returns its path.
fn build_demo(package: &str, bin: &str) -> Result<PathBuf, String> {
    build(
        package,
        bin,
        std::env::var("XTASK_RELEASE").is_ok_and(|v| v == "1"),
    )
}

/// Builds a binary (in release mode when `release`) and returns its path.
fn build(package: &str, bin: &str, release: bool) -> Result<PathBuf, String> {
    // cargo's own progress shows what a first build compiles.
    println!("==> cargo build --package {package} --bin {bin}");
    let mut cmd = cargo();
    cmd.args(["build", "--package", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("building {bin} failed"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join(bin))
}

fn demo_binary(which: &str) -> Result<(&'static str, &'static str), String> {
    match which {
        "axum" => Ok(("axum-demo", "axum-demo")),
        "axum-minimal" => Ok(("axum-demo", "axum-demo-minimal")),
        "actix" => Ok(("actix-demo", "actix-demo")),
        "actix-handle" => Ok(("actix-demo", "actix-demo-handle")),
        other => Err(format!("unknown demo {other:?}; {}", usage())),
    }
}

/// Which Nacos `cargo xtask demo` runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DemoChoice {
    /// The one `NACOS_SERVER_ADDR` names.
    Yours,
    /// r-nacos, installed the first time.
    RNacos,
    /// The official server, downloaded with Maven the first time.
    Official(OfficialVersion),
}

/// The official release the demo starts when it does not use r-nacos: the smaller download.
const DEMO_OFFICIAL: OfficialVersion = OfficialVersion::V2_3_2;

/// Whether `program` is an executable file in a `PATH` directory.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Picks the demo's Nacos and says why: the user's (`NACOS_SERVER_ADDR`), else
/// `XTASK_DEMO_SERVER` (`r-nacos` or `official`), else r-nacos when installed, else the
/// official server when it is downloaded or `java` and `mvn` are on the `PATH` (a first
/// run in about 2 minutes instead of compiling r-nacos), else r-nacos.
fn choose_demo_server() -> Result<DemoChoice, String> {
    if std::env::var_os("NACOS_SERVER_ADDR").is_some_and(|v| !v.is_empty())
        || std::env::var_os("NACOS_CLIENT_SERVER_ADDRESS").is_some_and(|v| !v.is_empty())
    {
        return Ok(DemoChoice::Yours);
    }
    match std::env::var("XTASK_DEMO_SERVER").as_deref() {
        Ok("r-nacos") => {
            println!("==> server: r-nacos {RNACOS_VERSION} (XTASK_DEMO_SERVER)");
            return Ok(DemoChoice::RNacos);
        }
        Ok("official") => {
            println!("==> server: the official Nacos {DEMO_OFFICIAL} (XTASK_DEMO_SERVER)");
            return Ok(DemoChoice::Official(DEMO_OFFICIAL));
        }
        Ok(other) => {
            return Err(format!(
                "XTASK_DEMO_SERVER={other:?}: expected r-nacos or official"
            ));
        }
        Err(_) => {}
    }
    if xtask::rnacos_bin().exists() {
        println!("==> server: r-nacos {RNACOS_VERSION} (installed)");
        return Ok(DemoChoice::RNacos);
    }
    if xtask::official::is_installed(DEMO_OFFICIAL) {
        println!(
            "==> server: the official Nacos {DEMO_OFFICIAL} (r-nacos is not installed; Nacos {DEMO_OFFICIAL} is downloaded)"
        );
        return Ok(DemoChoice::Official(DEMO_OFFICIAL));
    }
    if on_path("java") && on_path("mvn") {
        println!(
            "==> server: the official Nacos {DEMO_OFFICIAL}: r-nacos is not installed (compiling it takes about 9 minutes on 2 cores) \
             and java and mvn are on the PATH (about 150 MB from Maven Central the first time, under a minute on a fast link). \
             XTASK_DEMO_SERVER=r-nacos compiles r-nacos instead."
        );
        return Ok(DemoChoice::Official(DEMO_OFFICIAL));
    }
    println!(
        "==> server: r-nacos {RNACOS_VERSION}, compiled the first time (java and mvn, for the official server, are not on the PATH)"
    );
    Ok(DemoChoice::RNacos)
}

/// The demo's running Nacos.
enum DemoNacos {
    Yours(ExternalNacos),
    Local(Server),
}

impl DemoNacos {
    fn instances(
        &self,
        namespace: &str,
        group: &str,
        service: &str,
    ) -> Result<Vec<serde_json::Value>, String> {
        match self {
            DemoNacos::Yours(s) => s.instances(namespace, group, service),
            DemoNacos::Local(s) => s.instances(namespace, group, service),
        }
    }
}

fn demo(which: &str) -> Result<(), String> {
    let (package, bin) = demo_binary(which)?;
    let service = package;
    let group = std::env::var("NACOS_GROUP").unwrap_or_else(|_| "DEFAULT_GROUP".into());
    let namespace = std::env::var("NACOS_NAMESPACE")
        .or_else(|_| std::env::var("NACOS_CLIENT_NAMESPACE"))
        .unwrap_or_else(|_| "public".into());
    let choice = choose_demo_server()?;
    let yours = match choice {
        DemoChoice::Yours => {
            let nacos = ExternalNacos::from_env().ok_or("NACOS_SERVER_ADDR is not set")??;
            println!(
                "==> server: yours, {} (NACOS_SERVER_ADDR{}): nothing installed, nothing started",
                nacos.url(),
                if nacos.has_login() {
                    ", logging in as NACOS_USERNAME"
                } else {
                    ""
                }
            );
            nacos
                .instances(&namespace, &group, service)
                .map_err(|e| format!("your Nacos at {} cannot be used: {e}", nacos.url()))?;
            Some(nacos)
        }
        DemoChoice::RNacos => {
            ensure_rnacos()?;
            None
        }
        DemoChoice::Official(version) => {
            xtask::official::ensure_official(version)?;
            None
        }
    };
    let exe = build_demo(package, bin)?;

    let server = match (choice, yours) {
        (_, Some(nacos)) => DemoNacos::Yours(nacos),
        (DemoChoice::Official(version), None) => {
            println!("==> starting the official Nacos {version} (java) on free loopback ports");
            let started = Instant::now();
            let server = ServerKind::Official(version).start(&ServerOptions::default());
            println!(
                "    NACOS_SERVER_ADDR={}  (answered after {:.1} s)",
                server.addr(),
                started.elapsed().as_secs_f64()
            );
            DemoNacos::Local(server)
        }
        (_, None) => {
            println!("==> starting r-nacos on a free loopback port");
            let server = RNacos::start();
            println!(
                "    NACOS_SERVER_ADDR={}  (console: {})",
                server.addr(),
                server.console_url()
            );
            DemoNacos::Local(Server::RNacos(server))
        }
    };

    let mut envs: Vec<(&str, String)> = vec![
        ("NACOS_SERVICE_NAME", service.into()),
        (
            "NACOS_METADATA",
            format!(
                "version=0.1.0,framework={}",
                package.trim_end_matches("-demo")
            ),
        ),
        ("PORT", "0".into()),
    ];
    if let DemoNacos::Local(local) = &server {
        envs.push(("NACOS_SERVER_ADDR", local.addr()));
    }
    // The user's own NACOS_* settings apply too (the server address only when it is the
    // demo's server), except the service name.
    let passed: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("NACOS_")
                && k != "NACOS_SERVICE_NAME"
                && (matches!(server, DemoNacos::Yours(_))
                    || (k != "NACOS_SERVER_ADDR" && k != "NACOS_CLIENT_SERVER_ADDRESS"))
        })
        .collect();
    for (k, v) in &passed {
        envs.retain(|(e, _)| e != k);
        envs.push((k.as_str(), v.clone()));
    }

    println!("==> starting {bin} with PORT=0 and NACOS_SERVICE_NAME={service}");
    let mut app = App::start(&exe.to_string_lossy(), &envs);
    let shown = show_lifecycle(&mut app, &server, &namespace, &group, service);
    if shown.is_err() && app.is_running() {
        // Leave the server as it was: the app deregisters on SIGTERM (a SIGKILL, the
        // App's drop, would leave the instance listed until the server expires it).
        app.signal("TERM");
        let _ = app.wait_exit(Duration::from_secs(10));
    }
    shown?;
    println!("==> the app's log:");
    for line in app.output().lines() {
        println!("    {line}");
    }
    match server {
        DemoNacos::Yours(nacos) => {
            println!("==> your Nacos at {} keeps running", nacos.url());
        }
        DemoNacos::Local(Server::RNacos(_)) => println!("==> stopping r-nacos"),
        DemoNacos::Local(Server::Official(_)) => println!("==> stopping the official Nacos"),
    }
    Ok(())
}

/// Waits for the demo app to listen, shows its instance in `server`'s list and its
/// `/health`, stops it with SIGTERM and checks the instance gone and the app exited.
fn show_lifecycle(
    app: &mut App,
    server: &DemoNacos,
    namespace: &str,
    group: &str,
    service: &str,
) -> Result<(), String> {
    let port = wait_for(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(1));
        announced_port(&app.output())
    })
    .ok_or_else(|| format!("the app did not start:\n{}", app.output()))?;
    let listening = Instant::now();
    println!("    listening on port {port}");

    let listed = poll_instances(
        server,
        namespace,
        group,
        service,
        Duration::from_secs(30),
        |hosts| hosts.iter().any(|h| h["port"] == port),
    )
    .ok_or_else(|| format!("the instance never appeared in Nacos:\n{}", app.output()))?;
    let to_visible = listening.elapsed();
    println!(
        "==> registered: the server's instance list for {service} shows it {} ms after the app listened",
        to_visible.as_millis()
    );
    for host in &listed {
        println!("    {}", serde_json::to_string(host).unwrap_or_default());
    }
    if let Ok(health) = xtask::get_json(&format!("http://127.0.0.1:{port}/health")) {
        println!("==> the app's /health:\n    {health}");
    }

    println!("==> kill -TERM {}", app.pid());
    let signalled = Instant::now();
    app.signal("TERM");
    let gone = poll_instances(
        server,
        namespace,
        group,
        service,
        Duration::from_secs(10),
        |hosts| !hosts.iter().any(|h| h["port"] == port),
    );
    let to_gone = signalled.elapsed();
    let exit = app.wait_exit(Duration::from_secs(15));
    let to_exit = signalled.elapsed();
    match (gone, exit) {
        (Some(_), Some(status)) => {
            println!(
                "==> gone from Nacos {} ms after SIGTERM; the app exited after {} ms ({status})",
                to_gone.as_millis(),
                to_exit.as_millis()
            );
        }
        (gone, exit) => {
            return Err(format!(
                "after SIGTERM: gone from Nacos: {}, exited: {}\n{}",
                gone.is_some(),
                exit.is_some(),
                app.output()
            ));
        }
    }
    Ok(())
}

/// A call's answer: status and body, or why there was none.
type Answer = Result<(u16, String), String>;

/// `cargo xtask demo config`: the axum demo answers `GET /greeting` with a config it follows
/// in Nacos (`GREETING_DATA_ID`); the command publishes a new greeting and the answer
/// changes, no restart. The demo also imports typed settings as Spring Cloud Alibaba apps
/// do (a shared `.properties` config under a YAML one, `GET /settings`), and a change to
/// the YAML config reaches them too.
fn demo_config() -> Result<(), String> {
    ensure_rnacos()?;
    let exe = build_demo("axum-demo", "axum-demo")?;
    println!("==> starting r-nacos on a free loopback port");
    let mut server = Server::RNacos(RNacos::start());
    server.ensure_config_store();
    println!("    NACOS_SERVER_ADDR={}", server.addr());
    let data_id = "greeting.txt";
    server.publish_config(data_id, "DEFAULT_GROUP", "hello from Nacos\n", "text")?;
    println!("==> published {data_id}: \"hello from Nacos\"");
    let shared = "demo-shared.properties";
    let own = "axum-demo.yaml";
    server.publish_config(
        shared,
        "DEFAULT_GROUP",
        "max-items=3\ndb.pool=4\n",
        "properties",
    )?;
    server.publish_config(
        own,
        "DEFAULT_GROUP",
        "greeting: hi\nmaxItems: 8\ndb:\n  url: pg://db-a/orders\n",
        "yaml",
    )?;
    println!(
        "==> published {shared} (max-items=3, db.pool=4) and {own} (greeting, maxItems: 8, db.url)"
    );
    let app = App::start(
        &exe.to_string_lossy(),
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "axum-demo".to_owned()),
            ("GREETING_DATA_ID", data_id.to_owned()),
            ("NACOS_CONFIG_SHARED_CONFIGS", shared.to_owned()),
            ("NACOS_CONFIG_IMPORT", own.to_owned()),
            ("PORT", "0".to_owned()),
        ],
    );
    let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
        .ok_or_else(|| format!("axum-demo did not start:\n{}", app.output()))?;
    println!("==> axum-demo on port {port} (GREETING_DATA_ID={data_id})");
    let greeting = || {
        xtask::get_text(&format!("http://127.0.0.1:{port}/greeting"))
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let first = wait_for(Duration::from_secs(15), || {
        let now = greeting();
        (now == "hello from Nacos\n").then_some(now)
    })
    .ok_or_else(|| {
        format!(
            "GET /greeting never answered the greeting:\n{}",
            app.output()
        )
    })?;
    println!("    GET /greeting: {}", first.trim_end());
    let published = Instant::now();
    server.publish_config(data_id, "DEFAULT_GROUP", "bonjour from Nacos\n", "text")?;
    println!("==> published {data_id}: \"bonjour from Nacos\" (the app is not restarted)");
    let changed = wait_for(Duration::from_secs(15), || {
        let now = greeting();
        (now == "bonjour from Nacos\n").then_some(now)
    })
    .ok_or_else(|| format!("GET /greeting never changed:\n{}", app.output()))?;
    println!(
        "    GET /greeting: {} ({} ms after the publish)",
        changed.trim_end(),
        published.elapsed().as_millis()
    );
    let settings = || {
        xtask::get_json(&format!("http://127.0.0.1:{port}/settings"))
            .map(|v| v["value"].clone())
            .unwrap_or_default()
    };
    println!(
        "==> NACOS_CONFIG_SHARED_CONFIGS={shared} NACOS_CONFIG_IMPORT={own}: merged, the later winning"
    );
    println!("    GET /settings: {}", settings());
    let published = Instant::now();
    server.publish_config(
        own,
        "DEFAULT_GROUP",
        "greeting: hi\nmax-items: 9\ndb:\n  url: pg://db-b/orders\n",
        "yaml",
    )?;
    println!("==> published {own}: max-items: 9, db.url pg://db-b/orders");
    let now = wait_for(Duration::from_secs(15), || {
        let now = settings();
        (now["max_items"] == 9).then_some(now)
    })
    .ok_or_else(|| format!("GET /settings never changed:\n{}", app.output()))?;
    println!(
        "    GET /settings: {now} ({} ms after the publish)",
        published.elapsed().as_millis()
    );
    let log: Vec<String> = app
        .output()
        .lines()
        .filter(|l| l.contains("config changed"))
        .map(str::to_owned)
        .collect();
    for line in log {
        println!("    app log: {line}");
    }
    Ok(())
}

/// `cargo xtask demo discovery`: two providers, a gateway calling them through Nacos, one
/// provider leaving under load.
fn demo_discovery() -> Result<(), String> {
    ensure_rnacos()?;
    let provider_exe = build_demo("axum-demo", "axum-demo")?;
    let gateway_exe = build_demo("axum-demo", "axum-gateway")?;
    println!("==> starting r-nacos on a free loopback port");
    let server = RNacos::start();
    println!("    NACOS_SERVER_ADDR={}", server.addr());
    let start = |exe: &PathBuf, envs: &[(&str, String)]| -> Result<(App, u16), String> {
        let app = App::start(&exe.to_string_lossy(), envs);
        let port = wait_for(Duration::from_secs(30), || announced_port(&app.output()))
            .ok_or_else(|| format!("{} did not start:\n{}", exe.display(), app.output()))?;
        Ok((app, port))
    };
    let provider_env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", "axum-demo".to_owned()),
        ("NACOS_DEREGISTER_GRACE", "2s".to_owned()),
        ("PORT", "0".to_owned()),
    ];
    let (mut first, first_port) = start(&provider_exe, &provider_env)?;
    let (mut second, second_port) = start(&provider_exe, &provider_env)?;
    println!(
        "==> two providers of axum-demo on ports {first_port} and {second_port} (NACOS_DEREGISTER_GRACE=2s)"
    );
    let (mut gateway, gw) = start(
        &gateway_exe,
        &[
            ("NACOS_SERVER_ADDR", server.addr()),
            ("NACOS_SERVICE_NAME", "gateway".to_owned()),
            ("NACOS_DISCOVERY_REFRESH", "1s".to_owned()),
            ("TARGET_SERVICE", "axum-demo".to_owned()),
            ("PORT", "0".to_owned()),
        ],
    )?;
    println!("==> the gateway on port {gw}, polling Nacos every 1 s (NACOS_DISCOVERY_REFRESH=1s)");
    let call = move || xtask::get_text(&format!("http://127.0.0.1:{gw}/call"));
    let both = wait_for(Duration::from_secs(15), || {
        let (_, body) = xtask::get_text(&format!("http://127.0.0.1:{gw}/instances")).ok()?;
        (body.contains(&format!(":{first_port} ")) && body.contains(&format!(":{second_port} ")))
            .then_some(body)
    })
    .ok_or_else(|| {
        format!(
            "the gateway never saw both providers:\n{}",
            gateway.output()
        )
    })?;
    println!("    GET /instances: {both}");
    println!("==> GET /call, 8 times:");
    for _ in 0..8 {
        match call() {
            Ok((status, body)) => println!("    {status} {}", body.trim_end()),
            Err(e) => println!("    failed: {e}"),
        }
    }
    println!("==> calls every 10 ms; kill -TERM the provider on port {first_port}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut log: Vec<(Instant, Answer)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                log.push((Instant::now(), call()));
                std::thread::sleep(Duration::from_millis(10));
            }
            log
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    first.signal("TERM");
    let exit = first.wait_exit(Duration::from_secs(15));
    let exited = signalled.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let log = load.join().map_err(|_| "the load thread panicked")?;
    let failed = log
        .iter()
        .filter(|(_, r)| !matches!(r, Ok((200, _))))
        .count();
    let by = |port: u16, after: bool| {
        log.iter()
            .filter(|(at, r)| {
                (*at >= signalled) == after
                    && matches!(r, Ok((200, b)) if b.trim_end().ends_with(&format!(":{port}")))
            })
            .count()
    };
    let last_first = log
        .iter()
        .filter(
            |(_, r)| matches!(r, Ok((200, b)) if b.trim_end().ends_with(&format!(":{first_port}"))),
        )
        .map(|(at, _)| at.saturating_duration_since(signalled).as_millis())
        .max()
        .unwrap_or(0);
    println!(
        "==> {} calls, {failed} failed. Before SIGTERM: {} answered by :{first_port}, {} by :{second_port}. After: {} by :{first_port} (the last {last_first} ms after SIGTERM, during its grace), {} by :{second_port}",
        log.len(),
        by(first_port, false),
        by(second_port, false),
        by(first_port, true),
        by(second_port, true),
    );
    println!(
        "    the leaving provider exited {} ms after SIGTERM ({})",
        exited.as_millis(),
        exit.map_or("still running".to_owned(), |s| s.to_string())
    );
    println!("==> stopping the gateway, the other provider and r-nacos");
    for app in [&mut gateway, &mut second] {
        app.signal("TERM");
        let _ = app.wait_exit(Duration::from_secs(10));
    }
    if failed > 0 {
        return Err(format!("{failed} calls failed:\n{}", gateway.output()));
    }
    Ok(())
}

/// Polls the instance list every 2 ms until `done` holds; returns the list then.
fn poll_instances(
    server: &DemoNacos,
    namespace: &str,
    group: &str,
    service: &str,
    timeout: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Option<Vec<serde_json::Value>> {
    wait_for(timeout, || {
        std::thread::sleep(Duration::from_millis(2));
        server
            .instances(namespace, group, service)
            .ok()
            .filter(|hosts| done(hosts))
    })
}

/// `cargo xtask timings [demo] [runs]`: listening -> visible and SIGTERM -> gone, in ms.
///
/// The app starts with a clean environment; `NACOS_API`, when set, is passed on to it
/// (through a `sh` wrapper that `exec`s the app, so the pid signalled is the app's).
fn timings(which: &str, runs: usize) -> Result<(), String> {
    let (package, bin) = demo_binary(which)?;
    ensure_rnacos()?;
    let exe = build_demo(package, bin)?;
    let api = std::env::var("NACOS_API").ok().filter(|v| !v.is_empty());
    let wrapper_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let exe = match &api {
        None => exe,
        Some(api) => {
            if !api.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("NACOS_API={api:?}: expected auto, grpc, v1 or v3"));
            }
            let script = wrapper_dir.path().join(bin);
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\nNACOS_API={api} exec '{}' \"$@\"\n",
                    exe.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            script
        }
    };
    let samples = xtask::measure::lifecycle(&exe.to_string_lossy(), runs)?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let profile = if std::env::var("XTASK_RELEASE").is_ok_and(|v| v == "1") {
        "release"
    } else {
        "debug"
    };
    println!(
        "{bin}, {runs} runs against a local r-nacos ({profile} build, NACOS_API={}):",
        api.as_deref().unwrap_or("unset (auto)")
    );
    println!("| figure | p50 ms | p90 ms | max ms |");
    println!("|---|---|---|---|");
    type Pick = fn(&xtask::measure::Sample) -> Duration;
    let figures: [(&str, Pick); 3] = [
        ("listening -> visible in Nacos", |s| s.to_visible),
        ("SIGTERM -> gone from Nacos", |s| s.to_gone),
        ("SIGTERM -> process exited", |s| s.to_exit),
    ];
    for (name, pick) in figures {
        let values: Vec<Duration> = samples.iter().map(pick).collect();
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            ms(xtask::measure::quantile(&values, 0.5)),
            ms(xtask::measure::quantile(&values, 0.9)),
            ms(xtask::measure::quantile(&values, 1.0)),
        );
    }
    Ok(())
}

/// `cargo xtask ghost-window [ghosts|rolling]`: on a 3-node official Nacos 2.3.2 cluster,
/// how long providers stay listed when they stop after the node holding their connection
/// died (ours by SIGTERM and kill -9, a Java nacos-client's by kill -9; the server's default
/// expiry and `nacos.naming.client.expired.time=30000`), and what our gateway, a Java
/// nacos-client caller and a Spring Cloud app see of a rolling restart in that window and,
/// as a control, with every node up. About 15 minutes; tables on stdout.
fn ghost_window(only: Option<&str>) -> Result<(), String> {
    use xtask::rolling::Caller;
    xtask::official::ensure_official(xtask::official::OfficialVersion::V2_3_2)?;
    let class_path = xtask::ensure_java_peer("2.3.2")?;
    let provider = build("axum-demo", "axum-demo", true)?;
    let gateway = build("axum-demo", "axum-gateway", true)?;
    let provider = provider.display().to_string();
    let gateway = gateway.display().to_string();
    if only != Some("rolling") {
        println!(
            "| server setting | provider, stop | stopped after the node loss | listed on the survivors after the stop |"
        );
        println!("|---|---|---|---|");
        for (setting, properties) in [
            ("default (180 s)", vec![]),
            (
                "`nacos.naming.client.expired.time=30000`",
                vec![("nacos.naming.client.expired.time", "30000")],
            ),
        ] {
            for ghost in xtask::ghost::ghosts(&provider, &class_path, &properties)? {
                println!(
                    "| {setting} | {} | {:.1} s | {} |",
                    ghost.who,
                    ghost.stopped_after_loss.as_secs_f64(),
                    ghost
                        .listed_for
                        .map_or("more than 240 s".to_owned(), |d| format!(
                            "{:.1} s",
                            d.as_secs_f64()
                        )),
                );
            }
        }
    }
    if only != Some("ghosts") {
        let jar = xtask::ensure_spring_caller()?;
        let callers = vec![
            (Caller::Gateway, gateway.clone()),
            (
                Caller::Java {
                    class_path: class_path.clone(),
                },
                gateway.clone(),
            ),
            (
                Caller::Spring {
                    jar,
                    args: Vec::new(),
                },
                gateway.clone(),
            ),
        ];
        let rate = 20;
        let phases = xtask::ghost::rolling(&provider, &callers, rate, Duration::from_secs(180))?;
        println!();
        println!("Rolling restart of 2 providers (SIGTERM), {rate} requests/s per caller:");
        println!("| caller | phase | failed | last failure after the first SIGTERM |");
        println!("|---|---|---|---|");
        for p in phases {
            println!(
                "| {} | {} | {} of {} | {} |",
                p.caller,
                p.phase,
                p.failed,
                p.sent,
                p.last_failure
                    .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
            );
        }
    }
    Ok(())
}

/// `cargo xtask rolling-restart [OUT_DIR]`: the rolling-restart benchmark at the defaults:
/// our gateway, a Java nacos-client caller and a Spring Cloud caller, SIGTERM at 200 and 2
/// requests/s, kill -9, the no-grace baseline, the providers' former fixed 2 s grace
/// against the Spring caller, and the Spring-side settings that shorten its wait, side by
/// side; a table on stdout and, with `OUT_DIR`, per-second series (`rolling-<variant>.csv`)
/// for the plot. `ROLLING_ONLY=name,name` runs some variants only.
fn rolling_restart(out: Option<&str>) -> Result<(), String> {
    use xtask::rolling::{Caller, Options, Stop, quantile_ms, run};
    ensure_rnacos()?;
    let java = Caller::Java {
        class_path: xtask::ensure_java_peer("2.3.2")?,
    };
    let jar = xtask::ensure_spring_caller()?;
    let spring = |args: &[&str]| Caller::Spring {
        jar: jar.clone(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    };
    // Release builds, as users deploy.
    let provider = build("axum-demo", "axum-demo", true)?;
    let gateway = build("axum-demo", "axum-gateway", true)?;
    let zero = Some(Duration::ZERO);
    let fixed_2s = vec![("NACOS_DEREGISTER_GRACE_MAX", "2s".to_owned())];
    let only: Option<Vec<String>> = std::env::var("ROLLING_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    type Variant = (
        &'static str,
        Caller,
        Stop,
        u32,
        Option<Duration>,
        Vec<(&'static str, String)>,
    );
    let variants: Vec<Variant> = vec![
        (
            "gateway",
            Caller::Gateway,
            Stop::Graceful,
            200,
            None,
            vec![],
        ),
        ("java", java.clone(), Stop::Graceful, 200, None, vec![]),
        ("spring", spring(&[]), Stop::Graceful, 200, None, vec![]),
        (
            "gateway-2rps",
            Caller::Gateway,
            Stop::Graceful,
            2,
            None,
            vec![],
        ),
        ("java-2rps", java.clone(), Stop::Graceful, 2, None, vec![]),
        ("spring-2rps", spring(&[]), Stop::Graceful, 2, None, vec![]),
        (
            "spring-fixed-2s",
            spring(&[]),
            Stop::Graceful,
            200,
            None,
            fixed_2s,
        ),
        (
            "spring-no-cache",
            spring(&["--spring.cloud.loadbalancer.cache.enabled=false"]),
            Stop::Graceful,
            200,
            None,
            vec![],
        ),
        (
            "spring-ttl-5s",
            spring(&["--spring.cloud.loadbalancer.cache.ttl=5s"]),
            Stop::Graceful,
            200,
            None,
            vec![],
        ),
        (
            "gateway-kill-9",
            Caller::Gateway,
            Stop::Kill,
            200,
            None,
            vec![],
        ),
        ("java-kill-9", java.clone(), Stop::Kill, 200, None, vec![]),
        ("spring-kill-9", spring(&[]), Stop::Kill, 200, None, vec![]),
        (
            "gateway-no-grace",
            Caller::Gateway,
            Stop::Graceful,
            200,
            zero,
            vec![],
        ),
        ("java-no-grace", java, Stop::Graceful, 200, zero, vec![]),
    ];
    println!(
        "| caller | stop | provider | req/s | requests | failed | failed per restart | SIGTERM to exit, s (min / median / max) | p50 ms (restarts / outside) | p99 ms (restarts / outside) | max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, caller, stop, rate, grace, provider_env) in variants {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let provider_setting = match (stop, grace, provider_env.first()) {
            (Stop::Kill, _, _) => "-".to_owned(),
            (_, Some(g), _) => format!("grace {} s", g.as_secs()),
            (_, None, Some((k, v))) => format!("{k}={v}"),
            (_, None, None) => "defaults".to_owned(),
        };
        let caller_name = caller.name();
        let options = Options {
            providers: 3,
            rounds: 2,
            rate,
            stop,
            grace,
            refresh: None,
            provider_env,
            caller,
        };
        let report = run(
            &provider.to_string_lossy(),
            &gateway.to_string_lossy(),
            &options,
        )?;
        let failed = report.calls.iter().filter(|c| !c.ok).count();
        let (mut during, mut outside): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
        for call in &report.calls {
            if report.during_restart(call.at) {
                during.push(call.latency);
            } else {
                outside.push(call.latency);
            }
        }
        let mut all: Vec<Duration> = report.calls.iter().map(|c| c.latency).collect();
        let mut exits = report.exits.clone();
        let exit_s = |q| quantile_ms(&mut exits.clone(), q) / 1000.0;
        let exit_cell = if stop == Stop::Kill {
            "-".to_owned()
        } else {
            format!(
                "{:.1} / {:.1} / {:.1}",
                exit_s(0.0),
                exit_s(0.5),
                exit_s(1.0)
            )
        };
        exits.sort();
        println!(
            "| {caller_name} | {} | {provider_setting} | {rate} | {} | {failed} | {:.2} | {exit_cell} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} |",
            match stop {
                Stop::Graceful => "SIGTERM",
                Stop::Kill => "kill -9",
            },
            report.calls.len(),
            failed as f64 / report.restarts.len().max(1) as f64,
            quantile_ms(&mut during, 0.5),
            quantile_ms(&mut outside, 0.5),
            quantile_ms(&mut during, 0.99),
            quantile_ms(&mut outside, 0.99),
            quantile_ms(&mut all, 1.0),
        );
        if let Some(dir) = out {
            std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            let path = PathBuf::from(dir).join(format!("rolling-{name}.csv"));
            let seconds = report.length.as_secs() as usize + 1;
            let mut rows = vec![(0u32, 0u32, 0usize, false); seconds];
            for call in &report.calls {
                let row = &mut rows[call.at.as_secs() as usize];
                row.0 += 1;
                row.1 += u32::from(!call.ok);
            }
            for (at, count) in &report.listed {
                rows[at.as_secs() as usize].2 = *count;
            }
            for (i, row) in rows.iter_mut().enumerate() {
                row.3 = report.during_restart(Duration::from_secs(i as u64));
            }
            let mut csv = String::from("second,requests,failed,listed,restarting\n");
            for (i, (requests, failed, listed, restarting)) in rows.iter().enumerate() {
                csv.push_str(&format!(
                    "{i},{requests},{failed},{listed},{}\n",
                    u8::from(*restarting)
                ));
            }
            std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// `cargo xtask faults frozen`: only the matrix's "app frozen" rows (the servers' view of a
/// silent instance), printed.
fn faults_frozen() -> Result<(), String> {
    use xtask::faults as f;
    use xtask::official::OfficialVersion::V2_3_2;
    use xtask::server::ServerKind::{Official, RNacos as R};
    ensure_rnacos()?;
    xtask::official::ensure_official(V2_3_2)?;
    let demo = build("axum-demo", "axum-demo", true)?;
    let bin = demo.to_string_lossy().into_owned();
    for (kind, api) in [
        (R, "v1"),
        (Official(V2_3_2), "v1"),
        (R, "grpc"),
        (Official(V2_3_2), "grpc"),
    ] {
        let row = f::app_frozen(&bin, kind, api);
        println!(
            "{}",
            f::table(std::slice::from_ref(&row))
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `cargo xtask faults [SOAK_SECONDS]`: the fault matrix, printed and written to
/// docs/RELIABILITY.md (the soak lasts SOAK_SECONDS, 600 by default).
fn faults(soak_seconds: u64) -> Result<(), String> {
    use xtask::faults::{self as f, Row};
    use xtask::official::OfficialVersion::{V2_3_2, V3_1_0};
    const RNACOS: xtask::server::ServerKind = xtask::server::ServerKind::RNacos;
    ensure_rnacos()?;
    for version in xtask::official::OfficialVersion::ALL {
        xtask::official::ensure_official(version)?;
    }
    let demo = build("axum-demo", "axum-demo", true)?;
    let bin = demo.to_string_lossy().into_owned();
    let started = Instant::now();
    let plays: Vec<Box<dyn Fn() -> Row>> = vec![
        Box::new(|| f::down_at_start(&bin)),
        Box::new(|| f::restarted(&bin, xtask::server::ServerKind::RNacos)),
        Box::new(|| f::restarted(&bin, xtask::server::ServerKind::Official(V2_3_2))),
        Box::new(|| f::restarted(&bin, xtask::server::ServerKind::Official(V3_1_0))),
        Box::new(|| f::hangs(&bin)),
        Box::new(|| f::sigterm_while_hanging(&bin)),
        Box::new(|| f::bad_answers(&bin, "500")),
        Box::new(|| f::bad_answers(&bin, "garbage")),
        Box::new(|| f::bad_answers(&bin, "slow")),
        Box::new(|| f::cluster_node_killed(&bin)),
        Box::new(|| f::cluster_rolling(&bin)),
        Box::new(|| f::reset_by_server(&bin)),
        Box::new(|| f::app_frozen(&bin, RNACOS, "v1")),
        Box::new(|| f::app_frozen(&bin, xtask::server::ServerKind::Official(V2_3_2), "v1")),
        Box::new(|| f::app_frozen(&bin, RNACOS, "grpc")),
        Box::new(|| f::app_frozen(&bin, xtask::server::ServerKind::Official(V2_3_2), "grpc")),
        Box::new(|| f::removed(&bin, V2_3_2)),
        Box::new(|| f::removed(&bin, V3_1_0)),
        Box::new(|| f::token_expiry(&bin, V2_3_2, false)),
        Box::new(|| f::token_expiry(&bin, V3_1_0, false)),
        Box::new(|| f::token_expiry(&bin, V2_3_2, true)),
        Box::new(|| f::token_expiry(&bin, V3_1_0, true)),
        Box::new(|| f::wrong_password(&bin, V2_3_2)),
        Box::new(|| f::wrong_password(&bin, V3_1_0)),
        Box::new(|| f::soak(&bin, Duration::from_secs(soak_seconds))),
    ];
    let mut rows = Vec::new();
    for play in &plays {
        let row = play();
        print!(
            "{}",
            f::table(std::slice::from_ref(&row))
                .lines()
                .last()
                .unwrap_or_default()
        );
        println!();
        rows.push(row);
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let doc = format!(
        "# Reliability: the fault matrix\n\n\
         Produced by `cargo xtask faults` (xtask/src/faults.rs) at commit {commit}, {}, on \
         a {cores}-core Linux machine, in {} s. Release build of `axum-demo`; every row \
         starts its own servers on free loopback ports.\n\n\
         Method: the demo runs at the defaults (gRPC where the server offers it, as the \
         *API* column shows; HTTP where a row needs it) with `NACOS_REQUEST_TIMEOUT=1s` \
         while a client of its own \
         sends `GET /` every 20 ms; the fault is played; the row then waits until the \
         instance is listed and healthy again on every live node. *requests failed* are the \
         demo's own clients' failures (a Nacos fault must never fail a user request); \
         *recovered* runs from the end of the fault; *lost* is 1 when the instance is not \
         listed at the end; *panics* and *log lines* are counted in the app's log.\n\n{}\n\
         The *app frozen* rows (also `cargo xtask faults frozen`) show each server's view of \
         an instance that went silent: r-nacos 0.8.8 keeps listing a silent HTTP instance as \
         healthy until it removes it (about 30 s; it ignores `preserved.heart.beat.timeout` \
         and `preserved.ip.delete.timeout`), while the official server marks it unhealthy \
         after 15 s and removes it after 30 s. Over gRPC both remove it with the connection \
         once their idle connection check fails (20 s on r-nacos, 28 s on 2.3.2); a crashed \
         process, whose connection closes, is removed at once. Callers of this crate eject \
         an instance that refuses connections meanwhile.\n\n\
         Not in the matrix yet:\n\n\
         - *password changed while running*: needs the server's user API in the harness.\n\
         - *a server name that stops resolving, or resolves to several addresses*: needs a \
         private mount namespace with its own `/etc/hosts` (possible here as root with \
         `unshare -m`), not written yet. Today a name is resolved by reqwest on every new \
         connection, so a name that stops resolving behaves as a server that is down (the \
         rows above), and one that resolves to several addresses is tried in order by the \
         connector.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        started.elapsed().as_secs(),
        f::table(&rows),
    );
    let path = workspace_root().join("docs").join("RELIABILITY.md");
    // The sections measured elsewhere (the e2e suite, `ghost-window`) stay, between the
    // matrix and the list of what is not in it.
    let trailer = "Not in the matrix yet:";
    let kept = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| {
            let from = old.find("\n## ")?;
            let to = old.find(trailer)?;
            (from < to).then(|| old[from + 1..to].to_owned())
        })
        .unwrap_or_default();
    let doc = doc.replacen(trailer, &format!("{kept}{trailer}"), 1);
    std::fs::write(&path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Installs r-nacos and the official servers the suite uses.
fn install_servers() -> Result<(), String> {
    let bin = ensure_rnacos()?;
    println!("r-nacos: {}", bin.display());
    for version in xtask::official::OfficialVersion::ALL {
        let root = xtask::official::ensure_official(version)?;
        println!("nacos {version}: {}", root.display());
    }
    Ok(())
}

/// `cargo xtask recovery [demo] [runs]`: Nacos restarted, time until listed again.
fn recovery(which: &str, runs: usize) -> Result<(), String> {
    let (package, bin) = demo_binary(which)?;
    ensure_rnacos()?;
    let exe = build_demo(package, bin)?;
    let times = xtask::measure::recovery(&exe.to_string_lossy(), runs)?;
    let ms: Vec<String> = times.iter().map(|d| d.as_millis().to_string()).collect();
    println!(
        "{bin}, beat interval 5 s, r-nacos restarted {runs} times: listed again after [{}] ms (max {} ms)",
        ms.join(", "),
        times.iter().max().map_or(0, Duration::as_millis)
    );
    Ok(())
}
