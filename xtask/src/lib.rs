//! Development harness: a local r-nacos server on free loopback ports, and helpers to run a
//! demo app against it and watch Nacos's own instance list.
//!
//! The `cargo xtask` binary and the end-to-end tests use the same code, so what the
//! README's commands show is what the tests check.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest an app may take to exit after SIGTERM/SIGINT in the end-to-end suite when
/// it has no handler of its own: the deregistration (bounded by the request timeout, but
/// milliseconds on loopback), the default grace (`nacos_core::DEFAULT_DEREGISTER_GRACE`,
/// 2 s), then at most `nacos_core::EXIT_WAIT` (500 ms) before the signal's default action;
/// 2 s more leaves room for a loaded machine.
pub const SIGNAL_EXIT_BOUND: Duration = Duration::from_secs(DEFAULT_GRACE.as_secs() + 2);

/// `nacos_core::DEFAULT_DEREGISTER_GRACE` (the harness does not link the library): the
/// quickest exit after SIGTERM/SIGINT of an app left at the defaults that drains when told
/// (`shutdown_signal()`) or has no handler of its own.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// `nacos_core::DEFAULT_DEREGISTER_QUIET`: after the grace, an app left at the defaults
/// serves on until no caller's request came for this long.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(2);

/// A command for a process the harness starts (a server, a demo app, a foreign client) that
/// gets SIGKILL when the thread that spawned it ends: `setpriv --pdeathsig KILL -- PROGRAM`
/// (util-linux), which sets the parent-death signal and then executes `PROGRAM`, so the
/// child's pid is the program's. A test run killed with SIGKILL, whose `Drop`s never run,
/// takes its servers with it.
///
/// The signal follows the spawning *thread*, not the process: a test starts its servers on
/// its own thread and they live until that test ends, which is what the suite wants (no
/// server is shared between tests); a thread that only starts a server for others to use
/// would take it down when it returns. A parent that dies in the microseconds between the
/// spawn and `setpriv`'s `prctl` goes unnoticed. Where `setpriv` is missing (not Linux) the
/// command is `PROGRAM` itself, and the servers outlive a killed run as before.
pub fn child_command(program: impl AsRef<OsStr>) -> Command {
    static SETPRIV: OnceLock<bool> = OnceLock::new();
    let setpriv = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if setpriv {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// The r-nacos release the project develops and tests against.
pub const RNACOS_VERSION: &str = "0.8.8";

/// Where downloaded servers are kept: `$NACOS_DEV_CACHE`, else `~/.cache/nacos-dev`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NACOS_DEV_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("nacos-dev")
}

fn rnacos_root() -> PathBuf {
    cache_dir().join(format!("rnacos-{RNACOS_VERSION}"))
}

/// The r-nacos binary: `$RNACOS_BIN` if set, else the pinned version in [`cache_dir`].
pub fn rnacos_bin() -> PathBuf {
    match std::env::var_os("RNACOS_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => rnacos_root().join("bin").join("rnacos"),
    }
}

/// The release-profile settings r-nacos is compiled with, through cargo's
/// `CARGO_PROFILE_RELEASE_*` variables: `opt-level` 1 instead of 3, no debug info, no LTO.
/// A development server's speed hardly matters, its compile time does (see the README for
/// the figures).
pub const RNACOS_PROFILE: [(&str, &str); 3] = [
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
];

/// Installs the pinned r-nacos unless it is there already: with `cargo binstall` when the
/// user has it (a prebuilt binary where one can be downloaded), else, or when that fails,
/// with `cargo install --locked` and the cheaper [`RNACOS_PROFILE`]. Compiling takes
/// several minutes the first time.
///
/// # Errors
/// When `cargo install` fails.
pub fn ensure_rnacos() -> Result<PathBuf, String> {
    let bin = rnacos_bin();
    if bin.exists() {
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_binstall = Command::new(&cargo)
        .args(["binstall", "-V"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_binstall {
        eprintln!("installing r-nacos {RNACOS_VERSION} with cargo binstall");
        let installed = Command::new(&cargo)
            .args(["binstall", "--no-confirm", "--locked", "--root"])
            .arg(rnacos_root())
            .arg(format!("rnacos@{RNACOS_VERSION}"))
            .envs(RNACOS_PROFILE)
            .status()
            .is_ok_and(|s| s.success());
        if installed && bin.exists() {
            return Ok(bin);
        }
        eprintln!("cargo binstall did not install r-nacos; compiling it");
    }
    eprintln!(
        "installing r-nacos {RNACOS_VERSION} into {} (first time only: cargo install compiles \
         {RNACOS_CRATES} crates, about 9 minutes on 2 idle cores)",
        rnacos_root().display()
    );
    let mut cmd = Command::new(cargo);
    cmd.args([
        "install",
        "rnacos",
        "--locked",
        "--version",
        RNACOS_VERSION,
        "--root",
    ])
    .arg(rnacos_root())
    .envs(RNACOS_PROFILE);
    run_with_progress(cmd, &format!("r-nacos {RNACOS_VERSION}"), RNACOS_CRATES)?;
    if !bin.exists() {
        return Err(format!(
            "cargo install rnacos --version {RNACOS_VERSION} left no {}",
            bin.display()
        ));
    }
    Ok(bin)
}

/// How many crates `cargo install rnacos --locked --version 0.8.8` compiles on Linux
/// (its `Compiling` lines), for the progress figure.
pub const RNACOS_CRATES: usize = 440;

/// Runs a cargo command that compiles things, showing how far it got: each `Compiling
/// NAME VERSION` line of its output becomes `compiling N/TOTAL: NAME VERSION`, in place on
/// a terminal, every 10 % otherwise, with the time so far. Other lines are kept and, when
/// the command fails, the last 40 are printed.
///
/// # Errors
/// When the command cannot run or fails.
pub fn run_with_progress(mut cmd: Command, what: &str, total: usize) -> Result<(), String> {
    use std::io::{BufRead, IsTerminal, Write};
    let mut child = cmd
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let output = child.stderr.take().ok_or("stderr is not piped")?;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut compiled = 0usize;
    let mut shown_tenth = 0usize;
    let mut other: Vec<String> = Vec::new();
    for line in std::io::BufReader::new(output).lines() {
        let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
        let Some(krate) = line.trim().strip_prefix("Compiling ") else {
            other.push(line);
            continue;
        };
        compiled += 1;
        let progress = format!(
            "    {what}: compiling {compiled}/{total}: {krate} ({} s)",
            started.elapsed().as_secs()
        );
        if terminal {
            let mut err = std::io::stderr();
            drop(write!(err, "\r{progress:<100.100}"));
            drop(err.flush());
        } else if total > 0 && compiled * 10 / total > shown_tenth {
            shown_tenth = compiled * 10 / total;
            eprintln!("{progress}");
        }
    }
    if terminal {
        eprintln!();
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    if !status.success() {
        let tail = &other[other.len().saturating_sub(40)..];
        return Err(format!(
            "installing {what} failed ({status}):\n{}",
            tail.join("\n")
        ));
    }
    eprintln!(
        "    {what}: {compiled} crates compiled in {} s",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// Installs the npm `nacos` client's runner (`bench/peers/node`: `package.json`, the
/// committed lockfile and `runner.js`) with `npm ci` into [`cache_dir`]`/peers/node/e2e`
/// unless it is there already; returns the runner's path (`node runner.js SERVER N
/// SECONDS PREFIX` registers N instances of `PREFIX-node`).
///
/// # Errors
/// When `npm` is missing or `npm ci` fails.
pub fn ensure_node_peer() -> Result<PathBuf, String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peers/node");
    let dir = cache_dir().join("peers").join("node").join("e2e");
    let files = ["package.json", "package-lock.json", "runner.js"];
    let same = files.iter().all(|f| {
        std::fs::read(src.join(f))
            .ok()
            .is_some_and(|a| std::fs::read(dir.join(f)).ok() == Some(a))
    });
    if same && dir.join(".built").exists() {
        return Ok(dir.join("runner.js"));
    }
    drop(std::fs::remove_dir_all(&dir));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in files {
        std::fs::copy(src.join(f), dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    eprintln!(
        "installing the npm nacos client into {} (npm ci)",
        dir.display()
    );
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("cannot run npm (is Node.js installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(dir.join(".built"), "").map_err(|e| e.to_string())?;
    Ok(dir.join("runner.js"))
}

/// Builds the Java `nacos-client` runner (`bench/peers/java`: `peerbench.Runner`, the
/// client's public `NamingService` API) against `com.alibaba.nacos:nacos-client:VERSION`
/// from Maven Central, into [`cache_dir`]`/peers/java/e2e-VERSION` unless it is there;
/// returns the class path (`java -cp CP peerbench.Runner SERVER N SECONDS PREFIX` registers
/// N instances of `PREFIX-java` over the client's default protocol: HTTP for 1.x, gRPC for
/// 2.x and 3.x).
///
/// # Errors
/// When `mvn` is missing or the build fails.
pub fn ensure_java_peer(version: &str) -> Result<String, String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peers/java");
    let dir = cache_dir()
        .join("peers")
        .join("java")
        .join(format!("e2e-{version}"));
    let class_path = format!(
        "{}:{}",
        dir.join("target/classes").display(),
        dir.join("target/lib/*").display()
    );
    let sources = [
        "pom.xml",
        "src/main/java/peerbench/Runner.java",
        "src/main/java/peerbench/Subscriber.java",
        "src/main/java/peerbench/Caller.java",
        "src/main/java/peerbench/ConfigListener.java",
    ];
    let same = sources.iter().all(|f| {
        std::fs::read(src.join(f))
            .ok()
            .is_some_and(|a| std::fs::read(dir.join(f)).ok() == Some(a))
    });
    if same && dir.join(".built").exists() {
        return Ok(class_path);
    }
    drop(std::fs::remove_dir_all(&dir));
    for f in sources {
        let to = dir.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(src.join(f), &to).map_err(|e| format!("{f}: {e}"))?;
    }
    eprintln!(
        "building the Java nacos-client {version} runner in {} (mvn)",
        dir.display()
    );
    let repo = cache_dir().join("peers").join("java").join("m2");
    let out = Command::new(std::env::var("MVN").unwrap_or_else(|_| "mvn".into()))
        .args(["-B", "-q", "package"])
        .arg(format!("-Dmaven.repo.local={}", repo.display()))
        .arg(format!("-Dnacos.client.version={version}"))
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("cannot run mvn (is Maven installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the Java runner failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(dir.join(".built"), "").map_err(|e| e.to_string())?;
    Ok(class_path)
}

/// The `promtool` the `/metrics` tests check with: `PROMTOOL` when set, else `promtool`
/// on the `PATH`, else the one `cargo xtask test` built into the cache dir.
pub fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(path);
    }
    let cached = cache_dir().join("bin").join("promtool");
    if !on_path("promtool") && cached.exists() {
        return cached;
    }
    PathBuf::from("promtool")
}

/// The Prometheus release whose `promtool` is built when none is installed (Go module
/// `github.com/prometheus/prometheus` v0.316.0 is Prometheus 3.16.0).
pub const PROMTOOL_MODULE: &str = "github.com/prometheus/prometheus/cmd/promtool@v0.316.0";

/// Makes sure a `promtool` is there for the `/metrics` tests: on the `PATH` (Debian's
/// `prometheus` package), in the cache dir, else installed with `apt-get` when running as
/// root, else built with Go (`go install` of [`PROMTOOL_MODULE`] into the cache dir, once).
///
/// # Errors
/// One line saying how to get it, when none of these can.
pub fn ensure_promtool() -> Result<PathBuf, String> {
    let works = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let current = promtool();
    if works(&current) {
        return Ok(current);
    }
    let bin = cache_dir().join("bin");
    let mut tried = Vec::new();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root && on_path("apt-get") {
        eprintln!("installing promtool (Debian package prometheus) with apt-get");
        let ok = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok && works(Path::new("promtool")) {
            return Ok(PathBuf::from("promtool"));
        }
        tried.push("apt-get install prometheus failed".into());
    }
    if on_path("go") {
        eprintln!(
            "building promtool ({PROMTOOL_MODULE}) into {} with go install (once)",
            bin.display()
        );
        let out = Command::new("go")
            .args(["install", PROMTOOL_MODULE])
            .env("GOBIN", &bin)
            .env("CGO_ENABLED", "0")
            .output();
        match out {
            Ok(out) if out.status.success() && works(&bin.join("promtool")) => {
                return Ok(bin.join("promtool"));
            }
            Ok(out) => tried.push(format!(
                "go install failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )),
            Err(e) => tried.push(format!("go: {e}")),
        }
    }
    Err(format!(
        "promtool is needed by the /metrics tests and could not be installed ({}): install Debian's prometheus package (apt-get install prometheus) or Go, or set PROMTOOL to a promtool binary",
        if tried.is_empty() {
            "no Go, not root for apt-get".to_owned()
        } else {
            tried.join("; ")
        }
    ))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Builds `bench/peers/spring-cloud` (a Spring Cloud caller at its defaults: Spring Boot
/// 3.5, Spring Cloud 2025.0, Spring Cloud Alibaba's nacos-discovery and Spring Cloud
/// LoadBalancer) with `mvn` into the cache dir, once per source change; returns the jar.
/// The artifacts come from Maven Central into the cache's own repository (about 60 MB the
/// first time).
///
/// # Errors
/// When `mvn` is missing or the build fails.
pub fn ensure_spring_caller() -> Result<String, String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peers/spring-cloud");
    let dir = cache_dir().join("peers").join("spring-cloud");
    let jar = dir.join("target/spring-caller.jar");
    let mut sources = Vec::new();
    collect_files(&src, &src, &mut sources)?;
    sources.sort();
    let same = sources.iter().all(|f| {
        std::fs::read(src.join(f))
            .ok()
            .is_some_and(|a| std::fs::read(dir.join(f)).ok() == Some(a))
    });
    if same && dir.join(".built").exists() && jar.exists() {
        return Ok(jar.display().to_string());
    }
    drop(std::fs::remove_dir_all(&dir));
    for f in &sources {
        let to = dir.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(src.join(f), &to).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    eprintln!(
        "building the Spring Cloud caller in {} (mvn)",
        dir.display()
    );
    let repo = cache_dir().join("peers").join("java").join("m2");
    let out = Command::new(std::env::var("MVN").unwrap_or_else(|_| "mvn".into()))
        .args(["-B", "-q", "package"])
        .arg(format!("-Dmaven.repo.local={}", repo.display()))
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("cannot run mvn (is Maven installed?): {e}"))?;
    if !out.status.success() || !jar.exists() {
        return Err(format!(
            "building the Spring Cloud caller failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(dir.join(".built"), "").map_err(|e| e.to_string())?;
    Ok(jar.display().to_string())
}

/// The files under `dir` (but `target/`), relative to `root`.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

/// A 3-node r-nacos cluster on loopback: node 1 initialises the raft group, nodes 2 and 3
/// join it; naming data is replicated between the nodes (r-nacos's distro protocol).
/// Stopped on drop.
#[derive(Debug)]
pub struct RNacosCluster {
    /// The nodes, node 1 first.
    pub nodes: Vec<RNacos>,
}

impl RNacosCluster {
    /// Starts node `node_id` of a cluster (joining `join` unless it is the first).
    fn node(node_id: u32, join: Option<String>) -> RNacos {
        let mut node = RNacos::reserve(RNacosOptions {
            raft: Some(Raft { node_id, join }),
            ..RNacosOptions::default()
        });
        node.spawn();
        node
    }

    /// Starts `n` nodes and waits until an instance registered on the last node is listed
    /// by every node.
    ///
    /// # Panics
    /// When r-nacos is not installed, a node does not start, or the cluster does not
    /// replicate (joiners started three times, 20 s each).
    pub fn start(n: u32) -> RNacosCluster {
        let mut cluster = RNacosCluster { nodes: Vec::new() };
        let params = [
            ("serviceName", "cluster-probe"),
            ("ip", "10.255.255.1"),
            ("port", "1"),
            ("ephemeral", "true"),
        ];
        // r-nacos initialises node 1's raft group a moment after its HTTP port answers, and
        // a join that comes before is refused ("Mailbox has closed") and leaves the group
        // wedged: the joiners wait 2 s (it has no readiness endpoint), and a cluster that
        // does not replicate is started again, fresh.
        let mut replicated = None;
        for _ in 0..3 {
            cluster.nodes.clear();
            let first = Self::node(1, None);
            let join = Some(format!("127.0.0.1:{}", first.grpc_port));
            cluster.nodes.push(first);
            for node_id in 2..=n {
                std::thread::sleep(Duration::from_secs(if node_id == 2 { 2 } else { 1 }));
                cluster.nodes.push(Self::node(node_id, join.clone()));
            }
            // Replication check: a probe instance registered on the last node, seen by all.
            let last = cluster.nodes.last().expect("at least one node");
            let probe = format!("http://{}/nacos/v1/ns/instance", last.addr());
            replicated = wait_for(Duration::from_secs(20), || {
                drop(send("POST", &probe, &params));
                cluster
                    .nodes
                    .iter()
                    .all(|node| {
                        node.instances("public", "DEFAULT_GROUP", "cluster-probe")
                            .is_ok_and(|hosts| !hosts.is_empty())
                    })
                    .then(|| probe.clone())
            });
            if replicated.is_some() {
                break;
            }
        }
        let Some(probe) = replicated else {
            panic!("the r-nacos cluster does not replicate");
        };
        drop(send("DELETE", &probe, &params));
        cluster
    }

    /// Every node's address, comma-separated: the value for `NACOS_SERVER_ADDR`.
    pub fn addr(&self) -> String {
        self.nodes
            .iter()
            .map(RNacos::addr)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Set by `cargo xtask test` (and implied by `CI`): a test whose server is not installed
/// fails instead of skipping.
pub const REQUIRE_SERVERS: &str = "NACOS_DEV_REQUIRE_SERVERS";

/// Whether a test that needs `kind` should end here, because the server is not installed
/// and neither `cargo xtask test` nor CI runs it: it then prints one line saying so.
/// Under `cargo xtask test` ([`REQUIRE_SERVERS`]) or with `CI` set it is always `false`,
/// and the test goes on to fail on the missing server: never a silent pass.
pub fn skip_without(kind: server::ServerKind) -> bool {
    let installed = match kind {
        server::ServerKind::RNacos => rnacos_bin().exists(),
        server::ServerKind::Official(version) => official::is_installed(version),
    };
    let required = [REQUIRE_SERVERS, "CI"].iter().any(|name| {
        std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
    });
    if installed || required {
        return false;
    }
    eprintln!(
        "skipped: needs {kind}, not installed here; `cargo xtask test` installs it and runs this test"
    );
    true
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Asks an official Nacos 2.x at `addr` (`host:port`) to move every gRPC connection of
/// this crate's clients (`GET /nacos/v2/core/loader/current`, then `reloadClient` for each,
/// redirected to the same server): each gets a `ConnectResetRequest`. Returns how many.
///
/// # Errors
/// The server's answers, when they are not what 2.x answers.
pub fn reset_rust_connections(addr: &str) -> Result<usize, String> {
    let (status, body) = get_text(&format!("http://{addr}/nacos/v2/core/loader/current"))?;
    if status != 200 {
        return Err(format!("loader/current answered {status}: {body}"));
    }
    let current: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let ids: Vec<String> = current
        .as_object()
        .map(|all| {
            all.iter()
                .filter(|(_, c)| {
                    c["metaInfo"]["version"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("Nacos-Rust-Client"))
                })
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default();
    for id in &ids {
        let url = format!(
            "http://{addr}/nacos/v2/core/loader/reloadClient?connectionId={id}&redirectAddress={addr}"
        );
        let (status, body) = get_text(&url)?;
        if status != 200 {
            return Err(format!("reloadClient answered {status}: {body}"));
        }
    }
    Ok(ids.len())
}

/// A free loopback port `p` whose `p + 1000` is free too: a server's HTTP port and the
/// gRPC port every Nacos 2.x/3.x client derives from it.
///
/// Both below the kernel's ephemeral range (32768+ here): a server restarted on its ports
/// must find them free, and a port in that range can be taken meanwhile by an outgoing
/// connection, even by a client's own reconnection to the dead server (a TCP
/// self-connect). Above the official servers' range (`official.rs`, 11000..30001), so
/// that neither harness picks a port the other's stopped server is about to take again.
///
/// # Panics
/// When no such pair is found in 500 tries.
pub fn free_port_pair() -> (u16, u16) {
    free_port_pair_at(1000)
}

/// A free loopback port `p` whose `p + offset` (and `p + 1000`) are free too, all below
/// the ephemeral range (see [`free_port_pair`]); `offset` at most 2000.
///
/// # Panics
/// When no such pair is found in 500 tries.
pub fn free_port_pair_at(offset: u16) -> (u16, u16) {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bindable = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..500 {
        let main = fastrand::u16(30_200..(32_700 - offset).max(30_201));
        // Also + 1000, where clients look by default: kept free for a test to use.
        let pair = [main, main + offset, main + 1000];
        if pair.iter().all(|p| !taken.contains(p) && bindable(*p)) {
            taken.extend(pair);
            return (main, main + offset);
        }
    }
    panic!("no free pair of loopback ports (P, P+{offset})");
}

/// How to start r-nacos.
#[derive(Debug, Clone, Default)]
pub struct RNacosOptions {
    /// `RNACOS_NAMING_HEALTH_TIMEOUT_SECOND`: unhealthy after this many seconds without beats.
    pub health_timeout_s: Option<u32>,
    /// `RNACOS_NAMING_INSTANCE_TIMEOUT_SECOND`: removed after this many seconds without beats.
    pub instance_timeout_s: Option<u32>,
    /// Cluster membership (`RNACOS_RAFT_*`); `None` for a standalone server.
    pub raft: Option<Raft>,
    /// Listen on IPv6 loopback (`[::1]`) instead of `127.0.0.1`.
    pub ipv6: bool,
    /// The gRPC port's distance from the HTTP port; `None`: 1000, where clients look.
    pub grpc_offset: Option<u16>,
}

/// A node's place in an r-nacos cluster: its raft id, and the node it joins (none for the
/// node that initialises the cluster).
#[derive(Debug, Clone)]
pub struct Raft {
    /// `RNACOS_RAFT_NODE_ID`.
    pub node_id: u32,
    /// `RNACOS_RAFT_JOIN_ADDR`: the first node's raft (gRPC) address, for the others.
    pub join: Option<String>,
}

/// A running r-nacos process on free loopback ports with a temporary data dir. Stopped
/// (killed and reaped) on drop.
#[derive(Debug)]
pub struct RNacos {
    child: Option<Child>,
    http_port: u16,
    grpc_port: u16,
    console_port: u16,
    data_dir: tempfile::TempDir,
    options: RNacosOptions,
}

impl RNacos {
    /// Starts r-nacos with default timings and waits until it answers.
    ///
    /// # Panics
    /// When r-nacos is not installed, or does not answer within 30 s.
    pub fn start() -> RNacos {
        Self::start_with(RNacosOptions::default())
    }

    /// Starts r-nacos with `options` and waits until it answers.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(options: RNacosOptions) -> RNacos {
        let mut server = Self::reserve(options);
        server.spawn();
        server
    }

    /// Picks ports and a data dir without starting the server ("Nacos is down"); start
    /// it later with [`restart`](Self::restart).
    ///
    /// # Panics
    /// When r-nacos is not installed.
    pub fn reserve(options: RNacosOptions) -> RNacos {
        let bin = rnacos_bin();
        assert!(
            bin.exists(),
            "r-nacos is not installed at {}: run `cargo xtask nacos install` (or `cargo xtask test`)",
            bin.display()
        );
        // The gRPC port is the HTTP port + 1000, where clients look for it.
        let (http_port, grpc_port) = match options.grpc_offset {
            None | Some(1000) => free_port_pair(),
            Some(offset) => free_port_pair_at(offset),
        };
        RNacos {
            child: None,
            http_port,
            grpc_port,
            console_port: free_port(),
            data_dir: tempfile::tempdir().expect("no temporary dir"),
            options,
        }
    }

    fn spawn(&mut self) {
        let mut cmd = child_command(rnacos_bin());
        cmd.current_dir(self.data_dir.path())
            .env("RNACOS_HTTP_PORT", self.http_port.to_string())
            .env("RNACOS_GRPC_PORT", self.grpc_port.to_string())
            .env("RNACOS_HTTP_CONSOLE_PORT", self.console_port.to_string())
            .env("RNACOS_DATA_DIR", self.data_dir.path().join("data"))
            .env(
                "RNACOS_SDK_HOST",
                if self.options.ipv6 {
                    "::1"
                } else {
                    "127.0.0.1"
                },
            )
            .env(
                "RNACOS_CONSOLE_HOST",
                if self.options.ipv6 {
                    "::1"
                } else {
                    "127.0.0.1"
                },
            )
            .env(
                "RNACOS_RAFT_NODE_ADDR",
                format!("127.0.0.1:{}", self.grpc_port),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(s) = self.options.health_timeout_s {
            cmd.env("RNACOS_NAMING_HEALTH_TIMEOUT_SECOND", s.to_string());
        }
        if let Some(s) = self.options.instance_timeout_s {
            cmd.env("RNACOS_NAMING_INSTANCE_TIMEOUT_SECOND", s.to_string());
        }
        if let Some(raft) = &self.options.raft {
            cmd.env("RNACOS_RAFT_NODE_ID", raft.node_id.to_string())
                .env("RNACOS_RAFT_AUTO_INIT", raft.join.is_none().to_string());
            if let Some(join) = &raft.join {
                cmd.env("RNACOS_RAFT_JOIN_ADDR", join);
            }
        }
        self.child = Some(cmd.spawn().expect("cannot start r-nacos"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.is_up() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "r-nacos exited at start ({status}); ports {}/{}",
                        self.http_port, self.grpc_port
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "r-nacos did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    /// `127.0.0.1:<http port>` (`[::1]:<http port>` on IPv6), the value for
    /// `NACOS_SERVER_ADDR`.
    pub fn addr(&self) -> String {
        if self.options.ipv6 {
            format!("[::1]:{}", self.http_port)
        } else {
            format!("127.0.0.1:{}", self.http_port)
        }
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The console's address, for people.
    pub fn console_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.console_port)
    }

    /// Whether the server answers the naming API.
    pub fn is_up(&self) -> bool {
        get_json(&format!(
            "http://{}/nacos/v1/ns/service/list?pageNo=1&pageSize=1",
            self.addr()
        ))
        .is_ok()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }

    /// Starts the server (again) on the same ports, with the same data dir, and waits
    /// until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Makes sure the configuration store keeps what is written: about one start in six on
    /// this machine, r-nacos 0.8.8 answers `true` to config writes and keeps none of them
    /// (for more than 36 s in the case timed), its Raft group not working. A probe config is
    /// written and read back; when it is not kept within 3 s the server is started again
    /// on an empty data dir (three times at most).
    ///
    /// # Panics
    /// When no start keeps a config.
    pub fn ensure_config_store(&mut self) {
        let url = format!("http://{}/nacos/v1/cs/configs", self.addr());
        let probe = [
            ("dataId", "xtask-probe"),
            ("group", "DEFAULT_GROUP"),
            ("content", "kept"),
        ];
        for _ in 0..3 {
            let kept = wait_for(Duration::from_secs(3), || {
                drop(send("POST", &url, &probe));
                let read = send("GET", &url, &probe[..2]).ok()?;
                (read.1 == "kept").then_some(())
            });
            if kept.is_some() {
                drop(send("DELETE", &url, &probe[..2]));
                return;
            }
            self.stop();
            let data = self.data_dir.path().join("data");
            drop(std::fs::remove_dir_all(&data));
            self.spawn();
        }
        panic!("r-nacos keeps no config after three starts");
    }

    /// The instances Nacos lists for a service (`GET /nacos/v1/ns/instance/list`),
    /// unhealthy ones included; empty when the service is unknown.
    ///
    /// # Errors
    /// When the server does not answer.
    pub fn instances(
        &self,
        namespace: &str,
        group: &str,
        service: &str,
    ) -> Result<Vec<Value>, String> {
        let url = format!(
            "http://{}/nacos/v1/ns/instance/list?namespaceId={namespace}&groupName={group}&serviceName={service}&healthyOnly=false",
            self.addr()
        );
        let body = get_json(&url)?;
        Ok(body["hosts"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for RNacos {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GETs a URL and parses the JSON body (5 s timeout).
///
/// # Errors
/// Transport errors, non-2xx statuses and bodies that are not JSON, as text.
pub fn get_json(url: &str) -> Result<Value, String> {
    let (status, text) = get_text(url)?;
    if !(200..300).contains(&status) {
        return Err(format!("GET {url}: HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// Polls `check` every 20 ms until it returns `Some`, or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A demo app process (one of the example binaries), with its output captured to a file.
#[derive(Debug)]
pub struct App {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts `bin` with exactly `envs` (plus `PATH`, `HOME` and `RUST_LOG`), output to a
    /// log file.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn start(bin: &str, envs: &[(&str, String)]) -> App {
        Self::start_with_args(bin, &[], envs)
    }

    /// As [`start`](Self::start), with command-line arguments.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn start_with_args(bin: &str, args: &[&str], envs: &[(&str, String)]) -> App {
        let dir = tempfile::tempdir().expect("no temporary dir");
        let log = dir.path().join("app.log");
        let out = std::fs::File::create(&log).expect("cannot create the app log");
        let err = out.try_clone().expect("cannot clone the app log");
        let mut cmd = child_command(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("APP_RUST_LOG").unwrap_or_else(|_| "info,nacos_core=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        App {
            child,
            log,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the app printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill(1)`.
    ///
    /// # Panics
    /// When `kill` cannot run.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the process to exit; `None` when it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.is_running() {
            drop(self.child.kill());
            drop(self.child.wait());
        }
    }
}

/// The port an app announces on its first `listening on ADDR` log line.
pub fn announced_port(output: &str) -> Option<u16> {
    output
        .lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.trim_matches(|c: char| c == '"').rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

/// GETs a URL and returns the status and body (5 s timeout).
///
/// # Errors
/// Transport errors, as text.
pub fn get_text(url: &str) -> Result<(u16, String), String> {
    send("GET", url, &[])
}

/// An HTTP agent whose calls end after `timeout` and give any status as an answer (not as
/// an error).
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

pub mod e2e;
pub mod external;
pub mod faults;
pub mod ghost;
pub mod measure;
pub mod msrv;
pub mod official;
pub mod rolling;
pub mod server;
pub mod testrun;
pub mod tls;

/// Sends `method` to `url` with `params` in the query (a form body for `POST`/`PUT`) and
/// returns the status and body (5 s timeout).
///
/// # Errors
/// Transport errors and unknown methods, as text.
pub fn send(method: &str, url: &str, params: &[(&str, &str)]) -> Result<(u16, String), String> {
    let agent = agent(Duration::from_secs(5));
    let pairs = params.iter().copied();
    let resp = match method {
        "GET" => agent.get(url).query_pairs(pairs).call(),
        "DELETE" => agent.delete(url).query_pairs(pairs).call(),
        "POST" => agent.post(url).send_form(pairs),
        "PUT" => agent.put(url).send_form(pairs),
        _ => return Err(format!("unsupported method {method}")),
    };
    let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn progress_counts_compiling_lines_and_a_failure_shows_the_rest() {
        let ok = sh("for c in a b c; do echo \"   Compiling $c v1.0.0\" >&2; done");
        assert_eq!(run_with_progress(ok, "test", 3), Ok(()));
        let failing =
            sh("echo '   Compiling a v1.0.0' >&2; echo 'error: linker not found' >&2; exit 3");
        let err = run_with_progress(failing, "test", 3).unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("error: linker not found"), "{err}");
        assert!(!err.contains("Compiling"), "{err}");
    }
}
