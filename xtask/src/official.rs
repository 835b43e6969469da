//! The official Nacos server (Java), 2.x and 3.x, on free loopback ports with a temporary
//! `nacos.home`, for checks against the real thing next to r-nacos.
//!
//! Alibaba publishes only the client-side modules of Nacos to Maven Central, and this
//! machine reaches no GitHub release zips, so the server comes from republications of the
//! upstream modules on Maven Central (see `xtask/official-nacos/pom-*.xml`):
//!
//! - [`OfficialVersion::V2_3_2`]: `org.jeecgframework.nacos:nacos-console:2.3.2` and its
//!   dependencies, started with `com.alibaba.nacos.Nacos`, the main class of the official
//!   2.x `nacos-server.jar`. Speaks the v1 HTTP API (and gRPC).
//! - [`OfficialVersion::V3_1_0`]: `io.github.pig-mesh.nacos:nacos-server` and
//!   `nacos-console` `3.1.0-bugfix`, started with `xtask/official-nacos/XtaskNacosBootstrap.java`
//!   (the bootstrap module of the official 3.x jar is not published; that class starts the
//!   same Spring contexts). Speaks the v3 client API, the v1 client API, gRPC.
//!
//! [`ensure_official`] resolves the jars once with Maven into `cache_dir()/nacos-<version>/`.
//! [`OfficialNacos::start`] writes `<nacos.home>/conf/application.properties` (the shared
//! settings of `xtask/official-nacos/application.properties` plus the run's ports and auth
//! switches), starts `java` with `-Dnacos.standalone=true` and embedded Derby storage, waits
//! until the server answers HTTP and its user `nacos` logs in with the known password.
//!
//! Ports: the main HTTP port P on 127.0.0.1; gRPC on P+1000 (clients) and P+1001 (cluster)
//! and Raft on P-1000, which the server binds on all interfaces (no setting for that); on 3.x
//! with [`OfficialOptions::console`], the console on P+2 on 127.0.0.1. P is picked in
//! 11000..29000, below the kernel's ephemeral range, with all of those free.
//!
//! Tools: `mvn` (or `$MVN`) for the first download, `java`/`javac` 17+ (from `$JAVA_HOME` if
//! set, else the `PATH`). One server takes about 400-520 MB of memory and answers HTTP 4.5-6 s
//! after the process starts on an idle machine (about 20 s when four start at once on two
//! cores).
//!
//! The server has no global instance timeouts: an instance is unhealthy after 15 s and
//! removed after 30 s without beats unless its metadata says otherwise
//! (`preserved.heart.beat.timeout`, `preserved.ip.delete.timeout`, in ms; checked every 5 s).

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cache_dir;

/// The user every [`OfficialNacos`] has, with [`OfficialOptions::password`].
pub const OFFICIAL_USERNAME: &str = "nacos";

/// The password of user `nacos` unless [`OfficialOptions::password`] says otherwise (the
/// built-in one of 2.x; 3.x has no built-in user, the harness creates it).
pub const OFFICIAL_DEFAULT_PASSWORD: &str = "nacos";

/// The maven-dependency-plugin that resolves the jars. Its 3.x versions write the class path
/// in Maven's dependency order (the default 2.8 does not), and the order matters: two
/// different `hessian` jars are on it, and with `com.alipay.sofa:hessian` first Nacos 2.3.2
/// fails to start (`SerializerFactory.getClassFactory()` missing).
const DEPENDENCY_PLUGIN: &str = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1";

const SHARED_PROPERTIES: &str = include_str!("../official-nacos/application.properties");
const BOOTSTRAP_SOURCE: &str = include_str!("../official-nacos/XtaskNacosBootstrap.java");
const BOOTSTRAP_CLASS: &str = "XtaskNacosBootstrap";

/// How long a start may take before the server answers HTTP (JVM start, Spring, Derby).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long, after the first HTTP answer, until user `nacos` logs in.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// JVM options: modest memory and CPU, as tests run several servers side by side on few
/// cores; C1 only (`TieredStopAtLevel=1`) answers in about 4.5-5.5 s instead of 7.5-8.5 s.
/// More (or overriding) ones, whitespace-separated, from `$OFFICIAL_NACOS_JAVA_OPTS`.
const JVM_OPTIONS: &[&str] = &[
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
];

/// A Nacos release [`OfficialNacos`] can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfficialVersion {
    /// Nacos 2.3.2: the v1 HTTP API (beats answer `code` 20404 for an unknown instance) and
    /// gRPC. Login at `/nacos/v1/auth/login`.
    V2_3_2,
    /// Nacos 3.1.0: the v3 client API (`/nacos/v3/client/ns/instance`; renewing an unknown
    /// instance answers `code` 21003), the v1 client endpoints (admin-type v1 and all v2
    /// endpoints answer 410), the v3 admin API, gRPC. Login at `/nacos/v3/auth/user/login`
    /// (the v1 login paths work too).
    V3_1_0,
}

impl OfficialVersion {
    /// Every version, oldest first.
    pub const ALL: [OfficialVersion; 2] = [OfficialVersion::V2_3_2, OfficialVersion::V3_1_0];

    /// The Nacos version, `2.3.2` or `3.1.0`.
    pub fn version(self) -> &'static str {
        match self {
            OfficialVersion::V2_3_2 => "2.3.2",
            OfficialVersion::V3_1_0 => "3.1.0",
        }
    }

    /// The Maven Central artifacts the server is made of, for people.
    pub fn artifacts(self) -> &'static str {
        match self {
            OfficialVersion::V2_3_2 => "org.jeecgframework.nacos:nacos-console:2.3.2",
            OfficialVersion::V3_1_0 => {
                "io.github.pig-mesh.nacos:nacos-server+nacos-console:3.1.0-bugfix"
            }
        }
    }

    /// Whether the server speaks the v3 client API (else only v1).
    pub fn speaks_v3(self) -> bool {
        matches!(self, OfficialVersion::V3_1_0)
    }

    fn pom(self) -> &'static str {
        match self {
            OfficialVersion::V2_3_2 => include_str!("../official-nacos/pom-2.3.2.xml"),
            OfficialVersion::V3_1_0 => include_str!("../official-nacos/pom-3.1.0.xml"),
        }
    }

    fn main_class(self) -> &'static str {
        match self {
            OfficialVersion::V2_3_2 => "com.alibaba.nacos.Nacos",
            OfficialVersion::V3_1_0 => BOOTSTRAP_CLASS,
        }
    }

    fn login_path(self) -> &'static str {
        match self {
            OfficialVersion::V2_3_2 => "/nacos/v1/auth/login",
            OfficialVersion::V3_1_0 => "/nacos/v3/auth/user/login",
        }
    }
}

impl fmt::Display for OfficialVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version())
    }
}

impl FromStr for OfficialVersion {
    type Err = String;

    /// `2`, `2.3`, `2.3.2`, `3`, `3.1`, `3.1.0`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2" | "2.3" | "2.3.2" => Ok(OfficialVersion::V2_3_2),
            "3" | "3.1" | "3.1.0" => Ok(OfficialVersion::V3_1_0),
            _ => Err(format!("unknown Nacos version {s:?}: 2.3.2 or 3.1.0")),
        }
    }
}

/// How to start an official Nacos.
#[derive(Debug, Clone)]
pub struct OfficialOptions {
    /// `nacos.core.auth.enabled`: the client API (v1, v3 client, gRPC) wants a token. On 3.x
    /// the admin and console APIs want one either way (`nacos.core.auth.admin.enabled` and
    /// `nacos.core.auth.console.enabled` are true, as in the official configuration).
    pub auth: bool,
    /// `nacos.core.auth.plugin.nacos.token.expire.seconds` (server default 18000): the
    /// `tokenTtl` of logins; a request with an older token gets 403 `token expired!`.
    pub token_ttl_s: Option<u32>,
    /// The password of user `nacos`, set at every start: on 2.x the built-in `nacos/nacos`
    /// is changed through the API when this differs; on 3.x (no built-in user) the admin
    /// user is created with it (`POST /nacos/v3/auth/user/admin`).
    pub password: String,
    /// 3.x only: also start the console on its own port (`merged` deployment, as the official
    /// start script does); without it the server runs as `nacos.deployment.type=server`.
    /// The 2.x console is always part of the main port.
    pub console: bool,
    /// More `application.properties` lines (they win over the harness's own).
    pub properties: Vec<(String, String)>,
}

impl Default for OfficialOptions {
    fn default() -> Self {
        OfficialOptions {
            auth: false,
            token_ttl_s: None,
            password: OFFICIAL_DEFAULT_PASSWORD.into(),
            console: false,
            properties: Vec::new(),
        }
    }
}

/// Where a version's jars are kept: `cache_dir()/nacos-<version>`.
pub fn official_root(version: OfficialVersion) -> PathBuf {
    cache_dir().join(format!("nacos-{version}"))
}

/// An installed server: its class path (absolute jar paths in Maven's order, plus the
/// bootstrap class's dir on 3.x).
#[derive(Debug, Clone)]
struct Install {
    class_path: String,
}

/// Resolves the jars of `version` into [`official_root`] with Maven (`mvn` on the `PATH`)
/// unless they are there already, and (3.x) compiles the bootstrap class. The first time
/// takes a minute or so and about 150 MB (2.3.2) or 190 MB (3.1.0).
///
/// # Errors
/// When Maven or `javac` cannot run or fail, with their output.
pub fn ensure_official(version: OfficialVersion) -> Result<PathBuf, String> {
    install(version).map(|_| official_root(version))
}

/// Whether `version`'s jars are in [`official_root`] (a complete download).
pub fn is_installed(version: OfficialVersion) -> bool {
    let stamp = official_root(version).join(".complete");
    std::fs::read_to_string(stamp).ok().as_deref() == Some(version.pom())
}

fn install(version: OfficialVersion) -> Result<Install, String> {
    let root = official_root(version);
    if !is_installed(version) {
        download(version, &root)?;
    }
    let listed = std::fs::read_to_string(root.join("classpath.txt"))
        .map_err(|e| format!("{}: {e}", root.join("classpath.txt").display()))?;
    let mut entries: Vec<String> = listed
        .trim()
        .split(':')
        .filter(|e| !e.is_empty())
        .map(|e| root.join(e).display().to_string())
        .collect();
    if version == OfficialVersion::V3_1_0 {
        let jars = entries.join(":");
        entries.push(compile_bootstrap(&root, &jars)?.display().to_string());
    }
    Ok(Install {
        class_path: entries.join(":"),
    })
}

/// Runs Maven into a private partial directory (own local repository, deleted afterwards)
/// and moves the result into place, so parallel first runs do not see half a download.
fn download(version: OfficialVersion, root: &Path) -> Result<(), String> {
    let parent = root.parent().ok_or("the cache dir has no parent")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let partial = parent.join(format!(".nacos-{version}.{}.partial", std::process::id()));
    drop(std::fs::remove_dir_all(&partial));
    std::fs::create_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let pom = partial.join("pom.xml");
    std::fs::write(&pom, version.pom()).map_err(|e| format!("{}: {e}", pom.display()))?;
    eprintln!(
        "resolving Nacos {version} ({}) from Maven Central into {} (first time only)",
        version.artifacts(),
        root.display()
    );
    let started = Instant::now();
    let out = Command::new(std::env::var("MVN").unwrap_or_else(|_| "mvn".into()))
        .current_dir(&partial)
        .arg("-B")
        .arg("-q")
        .arg("-Dstyle.color=never")
        .arg("-f")
        .arg(&pom)
        .arg(format!(
            "-Dmaven.repo.local={}",
            partial.join("m2").display()
        ))
        .arg(format!("{DEPENDENCY_PLUGIN}:copy-dependencies"))
        .arg(format!("{DEPENDENCY_PLUGIN}:build-classpath"))
        .arg("-DincludeScope=runtime")
        .arg(format!(
            "-DoutputDirectory={}",
            partial.join("lib").display()
        ))
        .arg(format!(
            "-Dmdep.outputFile={}",
            partial.join("classpath.txt").display()
        ))
        .arg("-Dmdep.prefix=lib")
        .arg("-Dmdep.pathSeparator=:")
        .arg("-Dmdep.fileSeparator=/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run mvn (is Maven installed?): {e}"))?;
    if !out.status.success() || !partial.join("classpath.txt").exists() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        drop(std::fs::remove_dir_all(&partial));
        return Err(format!(
            "mvn could not resolve Nacos {version} ({}): {}\n{}",
            version.artifacts(),
            out.status,
            tail(&text, 40)
        ));
    }
    drop(std::fs::remove_dir_all(partial.join("m2")));
    std::fs::write(partial.join(".complete"), version.pom())
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    let bytes = dir_size(&partial.join("lib"));
    // Someone else may have finished first: theirs is as good as ours.
    if std::fs::read_to_string(root.join(".complete"))
        .ok()
        .as_deref()
        != Some(version.pom())
    {
        drop(std::fs::remove_dir_all(root));
        if let Err(e) = std::fs::rename(&partial, root) {
            drop(std::fs::remove_dir_all(&partial));
            if !root.join(".complete").exists() {
                return Err(format!("cannot move {} into place: {e}", root.display()));
            }
        }
    } else {
        drop(std::fs::remove_dir_all(&partial));
    }
    eprintln!(
        "resolved Nacos {version}: {:.1} MB of jars in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Compiles the 3.x bootstrap class against the jars, once per source text.
fn compile_bootstrap(root: &Path, jars: &str) -> Result<PathBuf, String> {
    let dir = root.join(format!("bootstrap-{:016x}", fnv1a(BOOTSTRAP_SOURCE)));
    if dir.join(format!("{BOOTSTRAP_CLASS}.class")).exists() {
        return Ok(dir);
    }
    let partial = root.join(format!(".bootstrap.{}.partial", std::process::id()));
    drop(std::fs::remove_dir_all(&partial));
    std::fs::create_dir_all(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let source = partial.join(format!("{BOOTSTRAP_CLASS}.java"));
    std::fs::write(&source, BOOTSTRAP_SOURCE).map_err(|e| format!("{}: {e}", source.display()))?;
    let out = Command::new(java_tool("javac"))
        .arg("-nowarn")
        .arg("-encoding")
        .arg("UTF-8")
        .arg("-cp")
        .arg(jars)
        .arg("-d")
        .arg(&partial)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run javac (is a JDK 17+ installed?): {e}"))?;
    if !out.status.success() {
        drop(std::fs::remove_dir_all(&partial));
        return Err(format!(
            "javac {BOOTSTRAP_CLASS}.java failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if std::fs::rename(&partial, &dir).is_err() {
        drop(std::fs::remove_dir_all(&partial));
    }
    if dir.join(format!("{BOOTSTRAP_CLASS}.class")).exists() {
        Ok(dir)
    } else {
        Err(format!(
            "cannot move the bootstrap class to {}",
            dir.display()
        ))
    }
}

fn java_tool(name: &str) -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin").join(name).exists() => {
            Path::new(&home).join("bin").join(name)
        }
        _ => PathBuf::from(name),
    }
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Ports handed out in this process and not yet released.
static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn bindable(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A main port P with P-1000, P+1000, P+1001 (and the console port) free on all interfaces,
/// below the kernel's ephemeral range (32768+) so outgoing connections do not take them.
fn pick_ports(console: bool) -> (u16, Option<u16>) {
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..500 {
        let main = fastrand::u16(11_000..29_000);
        let console_port = console.then_some(main + 2);
        let mut ports = vec![main - 1000, main, main + 1000, main + 1001];
        ports.extend(console_port);
        if ports.iter().all(|p| !taken.contains(p) && bindable(*p)) {
            taken.extend(ports);
            return (main, console_port);
        }
    }
    panic!("no free set of loopback ports for Nacos (P-1000, P, P+1000, P+1001)");
}

fn release_ports(ports: &[u16]) {
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    taken.retain(|p| !ports.contains(p));
}

/// A running official Nacos (Java) on free loopback ports with a temporary `nacos.home`
/// (configuration, Derby data, logs). Stopped (killed and reaped) on drop.
#[derive(Debug)]
pub struct OfficialNacos {
    version: OfficialVersion,
    options: OfficialOptions,
    install: Install,
    child: Option<Child>,
    http_port: u16,
    console_port: Option<u16>,
    secret: String,
    home: tempfile::TempDir,
    answered_in: Option<Duration>,
    ready_in: Option<Duration>,
    /// A token for the harness's own requests, with when it was issued.
    token: Mutex<Option<(String, Instant)>>,
    /// The main ports of every member of its cluster (itself included); empty: standalone.
    members: Vec<u16>,
}

impl OfficialNacos {
    /// Starts `version` with `options` (resolving its jars first if needed, see
    /// [`ensure_official`]) and waits until it answers HTTP and user `nacos` logs in with
    /// [`OfficialOptions::password`].
    ///
    /// # Panics
    /// When the jars cannot be resolved, or the server exits or does not get ready in time
    /// (with the tail of its log).
    pub fn start(version: OfficialVersion, options: OfficialOptions) -> OfficialNacos {
        let mut server = Self::reserve(version, options);
        server.spawn();
        server
    }

    /// Picks ports and a `nacos.home` without starting the server ("Nacos is down"); start
    /// it later with [`restart`](Self::restart).
    ///
    /// # Panics
    /// When the jars cannot be resolved.
    pub fn reserve(version: OfficialVersion, options: OfficialOptions) -> OfficialNacos {
        let install = install(version).unwrap_or_else(|e| panic!("official Nacos {version}: {e}"));
        let console = options.console && version.speaks_v3();
        let (http_port, console_port) = pick_ports(console);
        // 64 hex digits: valid Base64 for a 48-byte HMAC key; kept across restarts, so
        // tokens survive them as with a real server's fixed configuration.
        let secret = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..)
        );
        OfficialNacos {
            version,
            options,
            install,
            child: None,
            http_port,
            console_port,
            secret,
            home: tempfile::Builder::new()
                .prefix("official-nacos-")
                .tempdir()
                .expect("no temporary dir"),
            answered_in: None,
            ready_in: None,
            token: Mutex::new(None),
            members: Vec::new(),
        }
    }

    fn properties(&self) -> String {
        let mut props = String::from(SHARED_PROPERTIES);
        props.push_str("\n# This run\n");
        let mut set = |key: &str, value: String| {
            props.push_str(key);
            props.push('=');
            props.push_str(&value);
            props.push('\n');
        };
        set("server.address", "127.0.0.1".into());
        set("nacos.inetutils.ip-address", "127.0.0.1".into());
        match self.version {
            OfficialVersion::V2_3_2 => set("server.port", self.http_port.to_string()),
            OfficialVersion::V3_1_0 => {
                set("nacos.server.main.port", self.http_port.to_string());
                // Unused without a console, but never the default 8080.
                let console = self.console_port.unwrap_or(self.http_port + 2);
                set("nacos.console.port", console.to_string());
                set("nacos.core.auth.admin.enabled", "true".into());
                set("nacos.core.auth.console.enabled", "true".into());
            }
        }
        set("nacos.core.auth.enabled", self.options.auth.to_string());
        set(
            "nacos.core.auth.plugin.nacos.token.secret.key",
            self.secret.clone(),
        );
        if let Some(ttl) = self.options.token_ttl_s {
            set(
                "nacos.core.auth.plugin.nacos.token.expire.seconds",
                ttl.to_string(),
            );
        }
        for (key, value) in &self.options.properties {
            set(key, value.clone());
        }
        props
    }

    fn spawn(&mut self) {
        let started = self.launch();
        self.wait_ready(started);
    }

    /// Starts the process (a child of the calling thread, see [`crate::child_command`]).
    fn launch(&mut self) -> Instant {
        let home = self.home.path().to_path_buf();
        let conf = home.join("conf");
        let logs = home.join("logs");
        std::fs::create_dir_all(&conf).expect("cannot create the conf dir");
        std::fs::create_dir_all(&logs).expect("cannot create the logs dir");
        std::fs::write(conf.join("application.properties"), self.properties())
            .expect("cannot write application.properties");
        let members: Vec<String> = self
            .members
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        if !members.is_empty() {
            std::fs::write(conf.join("cluster.conf"), members.join("\n") + "\n")
                .expect("cannot write cluster.conf");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the server log");
        let err = log.try_clone().expect("cannot clone the server log");
        let mut cmd = crate::child_command(java_tool("java"));
        cmd.current_dir(&home)
            .args(JVM_OPTIONS)
            .args(
                std::env::var("OFFICIAL_NACOS_JAVA_OPTS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .arg(format!("-Dnacos.standalone={}", members.is_empty()))
            .arg(format!("-Dnacos.member.list={}", members.join(",")))
            .arg(format!("-Dnacos.home={}", home.display()))
            .arg(format!("-Djava.io.tmpdir={}", home.display()));
        if !members.is_empty() {
            // Derby on every node, replicated by Nacos's own Raft (JRaft on port P - 1000),
            // as the official `startup.sh -p embedded` does.
            cmd.arg("-DembeddedStorage=true");
        }
        if self.version.speaks_v3() {
            let deployment = if self.console_port.is_some() {
                "merged"
            } else {
                "server"
            };
            cmd.arg(format!("-Dnacos.deployment.type={deployment}"));
        }
        cmd.arg("-cp")
            .arg(&self.install.class_path)
            .arg(self.version.main_class())
            .arg(format!(
                "--spring.config.additional-location=file:{}/",
                conf.display()
            ))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let started = Instant::now();
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start java (is a JDK 17+ installed?): {e}")),
        );
        started
    }

    /// Waits until the spawned server answers HTTP and user `nacos` logs in.
    fn wait_ready(&mut self, started: Instant) {
        while !self.is_up() {
            self.check_alive("at start");
            if started.elapsed() > START_TIMEOUT {
                self.fail(&format!("did not answer HTTP within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.answered_in = Some(started.elapsed());
        if let Err(e) = self.ensure_password() {
            self.fail(&format!("user {OFFICIAL_USERNAME} cannot log in: {e}"));
        }
        self.ready_in = Some(started.elapsed());
    }

    fn check_alive(&mut self, when: &str) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            self.child = None;
            self.fail(&format!("exited {when} ({status})"));
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        self.stop();
        panic!(
            "official Nacos {} on port {} {what}; log {}:\n{}",
            self.version,
            self.http_port,
            self.log_path().display(),
            tail(&self.log(), 60)
        );
    }

    /// Makes user `nacos` have the configured password and waits until it logs in.
    fn ensure_password(&mut self) -> Result<(), String> {
        let wanted = self.options.password.clone();
        match self.version {
            OfficialVersion::V3_1_0 => {
                // 200 with code 0 when created, code 409 once an admin exists (a restart).
                let (status, body) = self.send(
                    "POST",
                    "/nacos/v3/auth/user/admin",
                    &[("password", &wanted)],
                )?;
                if status != 200 {
                    return Err(format!("POST /nacos/v3/auth/user/admin: {status} {body}"));
                }
            }
            OfficialVersion::V2_3_2 => {
                if wanted != OFFICIAL_DEFAULT_PASSWORD
                    && self.login_with(OFFICIAL_USERNAME, &wanted).is_err()
                {
                    let token = self.wait_login(OFFICIAL_DEFAULT_PASSWORD)?;
                    let (status, body) = self.send(
                        "PUT",
                        "/nacos/v1/auth/users",
                        &[
                            ("username", OFFICIAL_USERNAME),
                            ("newPassword", &wanted),
                            ("accessToken", &token),
                        ],
                    )?;
                    if status != 200 {
                        return Err(format!("PUT /nacos/v1/auth/users: {status} {body}"));
                    }
                }
            }
        }
        self.wait_login(&wanted).map(drop)
    }

    fn wait_login(&mut self, password: &str) -> Result<String, String> {
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        loop {
            match self.login_with(OFFICIAL_USERNAME, password) {
                Ok(token) => return Ok(token),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    self.check_alive("while waiting for login");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Sends `params` to `path` (e.g. `/nacos/v1/ns/instance`) on the main port: in the
    /// query for `GET` and `DELETE`, as a form for `POST` and `PUT`. Add
    /// `("accessToken", token)` yourself when auth is on. Any HTTP status is `Ok`.
    ///
    /// # Errors
    /// Transport errors (5 s timeout) and unknown methods, as text.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        crate::send(method, &format!("http://{}{path}", self.addr()), params)
    }

    /// Logs in as `username` (`POST /nacos/v1/auth/login` on 2.x,
    /// `/nacos/v3/auth/user/login` on 3.x) and returns the `accessToken` (2.x with auth off
    /// answers `AUTH_DISABLED`).
    ///
    /// # Errors
    /// Transport errors and refusals (403 for a wrong password), with the answer.
    pub fn login_with(&self, username: &str, password: &str) -> Result<String, String> {
        let (status, body) = self.send(
            "POST",
            self.version.login_path(),
            &[("username", username), ("password", password)],
        )?;
        if status != 200 {
            return Err(format!("login {status}: {body}"));
        }
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("login answer {e}: {body}"))?;
        json["accessToken"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("login answer without accessToken: {body}"))
    }

    /// Logs in as `nacos` with [`OfficialOptions::password`]; see
    /// [`login_with`](Self::login_with).
    ///
    /// # Errors
    /// As [`login_with`](Self::login_with).
    pub fn login(&self) -> Result<String, String> {
        self.login_with(OFFICIAL_USERNAME, &self.options.password)
    }

    /// A token of user `nacos` for the harness's own polling, reused for 2 s (logins are
    /// slow: the server checks a bcrypt hash).
    fn cached_token(&self) -> Result<String, String> {
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, at)) = cached.as_ref() {
            if at.elapsed() < Duration::from_secs(2) {
                return Ok(token.clone());
            }
        }
        let token = self.login()?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// The version running.
    pub fn version(&self) -> OfficialVersion {
        self.version
    }

    /// The options it was started with.
    pub fn options(&self) -> &OfficialOptions {
        &self.options
    }

    /// `127.0.0.1:<http port>`, the value for `NACOS_SERVER_ADDR`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The main HTTP port (context path `/nacos`).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The gRPC port clients use (HTTP port + 1000).
    pub fn grpc_port(&self) -> u16 {
        self.http_port + 1000
    }

    /// The console's address, for people: on the main port on 2.x, on its own port on 3.x
    /// when [`OfficialOptions::console`] is set, else `None`.
    pub fn console_url(&self) -> Option<String> {
        match (self.version, self.console_port) {
            (OfficialVersion::V2_3_2, _) => Some(format!("http://{}/nacos/", self.addr())),
            (_, Some(port)) => Some(format!("http://127.0.0.1:{port}/")),
            _ => None,
        }
    }

    /// The user name and password that log in.
    pub fn credentials(&self) -> (&str, &str) {
        (OFFICIAL_USERNAME, &self.options.password)
    }

    /// The temporary `nacos.home` (conf, data, logs).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The server's own log (its stdout and stderr), every start appended.
    pub fn log_path(&self) -> PathBuf {
        self.home.path().join("logs").join("start.out")
    }

    /// Everything in [`log_path`](Self::log_path) so far.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// From process start to the first HTTP answer, for the last start.
    pub fn answered_in(&self) -> Option<Duration> {
        self.answered_in
    }

    /// From process start to user `nacos` logging in (the end of `start`), for the last start.
    pub fn ready_in(&self) -> Option<Duration> {
        self.ready_in
    }

    /// Whether the main port answers HTTP (any status: 403 with auth on).
    pub fn is_up(&self) -> bool {
        let path = if self.version.speaks_v3() {
            "/nacos/v3/client/ns/instance/list?serviceName=xtask-probe"
        } else {
            "/nacos/v1/ns/service/list?pageNo=1&pageSize=1"
        };
        crate::agent(Duration::from_secs(2))
            .get(format!("http://{}{path}", self.addr()))
            .call()
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

    /// Starts the server (again) on the same ports with the same `nacos.home` (so its data
    /// and users stay), and waits until it is ready as [`start`](Self::start) does.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The instances Nacos lists for a service, unhealthy ones included; empty when the
    /// service is unknown, from `GET /nacos/v1/ns/instance/list` (`hosts`), which 3.0/3.1
    /// still serve. Logs in first when auth is on.
    ///
    /// # Errors
    /// When the server does not answer or refuses.
    pub fn instances(
        &self,
        namespace: &str,
        group: &str,
        service: &str,
    ) -> Result<Vec<Value>, String> {
        let token = if self.options.auth {
            Some(self.cached_token()?)
        } else {
            None
        };
        let mut params = vec![
            ("namespaceId", namespace),
            ("groupName", group),
            ("serviceName", service),
            ("healthyOnly", "false"),
        ];
        if let Some(token) = &token {
            params.push(("accessToken", token));
        }
        // The v1 list on both: 3.1's v3 client list shows only the DEFAULT cluster unless
        // the query names one.
        let path = "/nacos/v1/ns/instance/list";
        let (status, text) = self.send("GET", path, &params)?;
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("GET {path}: {status} {e}: {text}"))?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {text}"));
        }
        let list = &body["hosts"];
        Ok(list.as_array().cloned().unwrap_or_default())
    }
}

impl Drop for OfficialNacos {
    fn drop(&mut self) {
        self.stop();
        let mut ports = vec![
            self.http_port - 1000,
            self.http_port,
            self.http_port + 1000,
            self.http_port + 1001,
        ];
        ports.extend(self.console_port);
        release_ports(&ports);
    }
}

/// An official Nacos cluster on loopback: every node lists the others in its
/// `conf/cluster.conf` (`nacos.standalone=false`), with embedded storage (Derby replicated by
/// Nacos's Raft on each node's port P - 1000) and ephemeral instances replicated by Distro
/// over the cluster gRPC port P + 1001. Stopped on drop.
///
/// A client connection belongs to the node it reaches; the other nodes hold a copy of its
/// instances (Distro), renewed by that node's verify messages (every 5 s). When the node dies
/// the copies stay until they expire, `nacos.naming.client.expired.time` (180,000 ms by
/// default) after their last renewal.
#[derive(Debug)]
pub struct OfficialCluster {
    /// The nodes.
    pub nodes: Vec<OfficialNacos>,
}

impl OfficialCluster {
    /// Starts `n` nodes of `version` at once with `options` and waits until an instance
    /// registered on the first node is listed by every node.
    ///
    /// # Panics
    /// When the jars cannot be resolved, a node does not start (with its log), or the cluster
    /// does not replicate within 60 s.
    pub fn start(version: OfficialVersion, n: usize, options: OfficialOptions) -> OfficialCluster {
        let mut nodes: Vec<OfficialNacos> = (0..n)
            .map(|_| OfficialNacos::reserve(version, options.clone()))
            .collect();
        let members: Vec<u16> = nodes.iter().map(OfficialNacos::http_port).collect();
        for node in &mut nodes {
            node.members.clone_from(&members);
        }
        // Started from this thread, so that they live as long as it does; waited for in
        // parallel (a node is not ready before a majority of them runs).
        let started: Vec<Instant> = nodes.iter_mut().map(OfficialNacos::launch).collect();
        std::thread::scope(|scope| {
            for (node, started) in nodes.iter_mut().zip(started) {
                scope.spawn(move || node.wait_ready(started));
            }
        });
        let cluster = OfficialCluster { nodes };
        let mut params = vec![
            ("serviceName", "cluster-probe"),
            ("ip", "10.255.255.1"),
            ("port", "1"),
            ("ephemeral", "true"),
        ];
        let token = if options.auth {
            Some(cluster.nodes[0].login().unwrap_or_else(|e| panic!("{e}")))
        } else {
            None
        };
        if let Some(token) = &token {
            params.push(("accessToken", token));
        }
        let path = "/nacos/v1/ns/instance";
        let replicated = crate::wait_for(Duration::from_secs(60), || {
            drop(cluster.nodes[0].send("POST", path, &params));
            cluster
                .nodes
                .iter()
                .all(|node| {
                    node.instances("public", "DEFAULT_GROUP", "cluster-probe")
                        .is_ok_and(|hosts| !hosts.is_empty())
                })
                .then_some(())
        });
        if replicated.is_none() {
            let logs: Vec<String> = cluster
                .nodes
                .iter()
                .map(|node| format!("{}:\n{}", node.addr(), tail(&node.log(), 30)))
                .collect();
            panic!(
                "the official Nacos cluster does not replicate within 60 s:\n{}",
                logs.join("\n")
            );
        }
        drop(cluster.nodes[0].send("DELETE", path, &params));
        cluster
    }

    /// Every node's address, comma-separated: the value for `NACOS_SERVER_ADDR`.
    pub fn addr(&self) -> String {
        let all: Vec<String> = self.nodes.iter().map(OfficialNacos::addr).collect();
        all.join(",")
    }
}
