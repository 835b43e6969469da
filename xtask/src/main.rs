//! `cargo xtask`: the project's development commands.
//!
//! - `cargo xtask demo [axum|axum-minimal|actix|actix-handle]`: start a local r-nacos
//!   (installing it the first time), run the demo app against it, show the instance in
//!   Nacos's own list, stop the app with SIGTERM and show the instance gone.
//! - `cargo xtask test [ARGS]`: install r-nacos if needed, then `cargo test --workspace ARGS`.
//! - `cargo xtask nacos install|run`: install r-nacos, or run one in the foreground.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xtask::{App, RNacos, announced_port, ensure_rnacos, wait_for};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(args.get(1).map_or("axum", String::as_str)),
        Some("test") => test(&args[1..]),
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
            Some("run") => run_nacos(),
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
    "usage: cargo xtask demo [axum|axum-minimal|actix|actix-handle] | test [cargo test args] | nacos install|run"
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
    let bin = ensure_rnacos()?;
    for version in xtask::official::OfficialVersion::ALL {
        xtask::official::ensure_official(version)?;
    }
    let status = cargo()
        .args(["test", "--workspace"])
        .args(args)
        .env("RNACOS_BIN", bin)
        .env(xtask::REQUIRE_SERVERS, "1")
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test failed ({status})"))
    }
}

fn run_nacos() -> Result<(), String> {
    ensure_rnacos()?;
    let server = RNacos::start();
    println!(
        "r-nacos is up: NACOS_SERVER_ADDR={}  console: {}",
        server.addr(),
        server.console_url()
    );
    println!("Ctrl-C stops it.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Builds a demo binary (release when `XTASK_RELEASE=1`) and returns its path.
fn build_demo(package: &str, bin: &str) -> Result<PathBuf, String> {
    let release = std::env::var("XTASK_RELEASE").is_ok_and(|v| v == "1");
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--package", package, "--bin", bin]);
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

fn demo(which: &str) -> Result<(), String> {
    let (package, bin) = demo_binary(which)?;
    ensure_rnacos()?;
    let exe = build_demo(package, bin)?;

    println!("==> starting r-nacos on a free loopback port");
    let server = RNacos::start();
    println!(
        "    NACOS_SERVER_ADDR={}  (console: {})",
        server.addr(),
        server.console_url()
    );

    let service = package;
    let mut envs: Vec<(&str, String)> = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
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
    // The user's own NACOS_* settings apply too, except where the demo's server is.
    let passed: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("NACOS_") && k != "NACOS_SERVER_ADDR" && k != "NACOS_SERVICE_NAME"
        })
        .collect();
    for (k, v) in &passed {
        envs.retain(|(e, _)| e != k);
        envs.push((k.as_str(), v.clone()));
    }
    let group = env_or(&envs, "NACOS_GROUP", "DEFAULT_GROUP");
    let namespace = env_or(&envs, "NACOS_NAMESPACE", "public");

    println!("==> starting {bin} with PORT=0 and NACOS_SERVICE_NAME={service}");
    let mut app = App::start(&exe.to_string_lossy(), &envs);
    let port = wait_for(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(1));
        announced_port(&app.output())
    })
    .ok_or_else(|| format!("the app did not start:\n{}", app.output()))?;
    let listening = Instant::now();
    println!("    listening on port {port}");

    let listed = poll_instances(
        &server,
        &namespace,
        &group,
        service,
        Duration::from_secs(30),
        |hosts| hosts.iter().any(|h| h["port"] == port),
    )
    .ok_or_else(|| format!("the instance never appeared in Nacos:\n{}", app.output()))?;
    let to_visible = listening.elapsed();
    println!(
        "==> registered: GET /nacos/v1/ns/instance/list?serviceName={service} lists it {} ms after the app listened",
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
        &server,
        &namespace,
        &group,
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
    println!("==> the app's log:");
    for line in app.output().lines() {
        println!("    {line}");
    }
    println!("==> stopping r-nacos");
    Ok(())
}

fn env_or(envs: &[(&str, String)], key: &str, default: &str) -> String {
    envs.iter()
        .find(|(k, _)| *k == key)
        .map_or_else(|| default.to_owned(), |(_, v)| v.clone())
}

/// Polls the instance list every 2 ms until `done` holds; returns the list then.
fn poll_instances(
    server: &RNacos,
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
fn timings(which: &str, runs: usize) -> Result<(), String> {
    let (package, bin) = demo_binary(which)?;
    ensure_rnacos()?;
    let exe = build_demo(package, bin)?;
    let samples = xtask::measure::lifecycle(&exe.to_string_lossy(), runs)?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let profile = if std::env::var("XTASK_RELEASE").is_ok_and(|v| v == "1") {
        "release"
    } else {
        "debug"
    };
    println!("{bin}, {runs} runs against a local r-nacos ({profile} build):");
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
