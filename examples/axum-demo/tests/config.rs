//! The configuration center against real servers: a config read at once, a change made by
//! another client (HTTP v1, as an operator or a Java app publishes) reaching the watch by
//! push, a deletion reaching it as no content, a config that does not exist, publish and
//! remove through the crate, and on the official servers one gRPC connection for naming
//! and configuration together.

use std::time::{Duration, Instant};

use nacos_core::{ApiVersion, Config, ConfigBuilder, ConfigService};
use xtask::server::{Server, ServerKind, ServerOptions};
use xtask::skip_without;

fn nacos2() -> ServerKind {
    ServerKind::Official(xtask::official::OfficialVersion::V2_3_2)
}

fn nacos3() -> ServerKind {
    ServerKind::Official(xtask::official::OfficialVersion::V3_1_0)
}

fn settings(server: &Server) -> Config {
    settings_with(server, |b| b)
}

fn settings_with(server: &Server, more: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    // No snapshots in the user's cache dir from the tests (one test checks them).
    let mut builder = Config::builder()
        .server_addr(server.addr())
        .service_name("e2e-config")
        .config_snapshot_dir("off");
    if let Some((user, password)) = server.credentials() {
        builder = builder.username(user).password(password);
    }
    more(builder).build().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits up to `within` for the watch's content to be `expected`; returns how long it took
/// from `started`.
async fn content_becomes(
    watch: &mut nacos_core::ConfigWatch,
    expected: Option<&str>,
    within: Duration,
    started: Instant,
) -> Option<Duration> {
    let mut rx = watch.subscribe();
    let reached = tokio::time::timeout(
        within,
        rx.wait_for(|item| {
            item.as_ref()
                .is_some_and(|i| i.content.as_deref() == expected)
        }),
    )
    .await;
    matches!(reached, Ok(Ok(_))).then(|| started.elapsed())
}

/// Restarts the server (same ports and data) and makes sure its config store works.
fn restart(server: &mut Server) {
    server.restart();
    server.ensure_config_store();
}

/// `api`: `NACOS_API` (`None`: the default, `auto`, which finds gRPC).
fn follows_changes(kind: ServerKind, api: Option<ApiVersion>) {
    if skip_without(kind) {
        return;
    }
    let auth = matches!(kind, ServerKind::Official(_));
    let mut server = kind.start(&ServerOptions {
        auth,
        ..ServerOptions::default()
    });
    server.ensure_config_store();
    let configs = match api {
        None => ConfigService::new(&settings(&server)).unwrap(),
        Some(api) => ConfigService::new(&settings_with(&server, |b| b.api(api))).unwrap(),
    };
    // Over v3 (no listening) a change is seen at the next poll.
    let within = if api == Some(ApiVersion::V3) {
        Duration::from_secs(10) + nacos_core::CONFIG_V3_POLL
    } else {
        Duration::from_secs(10)
    };
    let data_id = "e2e-greeting.txt";
    server
        .publish_config(data_id, "DEFAULT_GROUP", "hello", "text")
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut watch = configs.watch(data_id);
        tokio::time::timeout(Duration::from_secs(15), watch.ready())
            .await
            .expect("no first answer within 15 s");
        // r-nacos answers HTTP before a query sees the write (its first answer may still
        // be "not found"); the change then comes by push.
        if content_becomes(
            &mut watch,
            Some("hello"),
            Duration::from_secs(5),
            Instant::now(),
        )
        .await
        .is_none()
        {
            let direct = configs.get(data_id).await;
            panic!("never read: {:?}; a query now: {direct:?}", watch.current());
        }
        let first = watch.current().expect("read");
        assert_eq!(first.md5, "5d41402abc4b2a76b9719d911017c592");
        // A change by another client, pushed.
        let started = Instant::now();
        server
            .publish_config(data_id, "DEFAULT_GROUP", "bonjour", "text")
            .unwrap();
        let pushed = content_becomes(
            &mut watch,
            Some("bonjour"),
            within,
            started,
        )
        .await
        .expect("the change never reached the watch");
        // Deleted: no content.
        let started = Instant::now();
        server.remove_config(data_id, "DEFAULT_GROUP").unwrap();
        let deleted = content_becomes(&mut watch, None, within, started)
            .await
            .expect("the deletion never reached the watch");
        // Through the crate.
        configs
            .publish(data_id, "hallo", Some("text"), None)
            .await
            .unwrap();
        content_becomes(
            &mut watch,
            Some("hallo"),
            Duration::from_secs(10),
            Instant::now(),
        )
        .await
        .expect("our own publish never reached the watch");
        let read = configs.get(data_id).await.unwrap();
        assert_eq!(read.content.as_deref(), Some("hallo"));
        configs.remove(data_id).await.unwrap();
        content_becomes(&mut watch, None, Duration::from_secs(10), Instant::now())
            .await
            .expect("our own remove never reached the watch");
        // Nacos restarted: the watch listens again on the new connection, and a change made
        // after the restart reaches it.
        restart(&mut server);
        let started = Instant::now();
        server
            .publish_config(data_id, "DEFAULT_GROUP", "after the restart", "text")
            .unwrap();
        let relistened =
            content_becomes(&mut watch, Some("after the restart"), Duration::from_secs(20), started)
                .await
                .expect("a change after a Nacos restart never reached the watch");
        // Never published.
        let mut missing = configs.watch("e2e-never-published.yaml");
        let none = tokio::time::timeout(Duration::from_secs(15), missing.ready())
            .await
            .expect("no answer for a missing config");
        assert_eq!(none.content, None);
        eprintln!(
            "[e2e] {kind}: a change pushed to the watch in {} ms, a deletion in {} ms; after a Nacos restart a change reached it {} ms after it was published",
            pushed.as_millis(),
            deleted.as_millis(),
            relistened.as_millis()
        );
    });
}

#[test]
fn rnacos_config_follows_changes() {
    follows_changes(ServerKind::RNacos, None);
}

#[test]
fn rnacos_config_follows_changes_over_http_v1() {
    follows_changes(ServerKind::RNacos, Some(ApiVersion::V1));
}

#[test]
fn nacos2_config_follows_changes_over_http_v1() {
    follows_changes(nacos2(), Some(ApiVersion::V1));
}

#[test]
fn nacos3_config_follows_changes_over_http_v3() {
    follows_changes(nacos3(), Some(ApiVersion::V3));
}

#[test]
fn nacos2_config_follows_changes() {
    follows_changes(nacos2(), None);
}

#[test]
fn nacos3_config_follows_changes() {
    follows_changes(nacos3(), None);
}

/// One process watching a service and a config: both over one gRPC connection (the server
/// lists one SDK connection, labelled `module: naming`), and both work on it.
fn one_connection_for_naming_and_config(kind: ServerKind) {
    let ServerKind::Official(version) = kind else {
        unreachable!("the official servers list their connections")
    };
    if skip_without(kind) {
        return;
    }
    let server = kind.start(&ServerOptions {
        auth: true,
        ..ServerOptions::default()
    });
    let settings = settings(&server);
    let configs = ConfigService::new(&settings).unwrap();
    let discovery = nacos_core::Discovery::new(&settings).unwrap();
    server
        .publish_config("e2e-one.properties", "DEFAULT_GROUP", "a=1", "properties")
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let services = discovery.watch("e2e-one-service");
        let mut config = configs.watch("e2e-one.properties");
        tokio::time::timeout(Duration::from_secs(15), config.ready())
            .await
            .expect("no config");
        tokio::time::timeout(Duration::from_secs(15), services.ready())
            .await
            .expect("no service list");
    });
    let Server::Official(official) = &server else {
        unreachable!()
    };
    let token = official.login().unwrap();
    let path = if version.speaks_v3() {
        "/nacos/v3/admin/core/loader/current"
    } else {
        "/nacos/v2/core/loader/current"
    };
    let (status, body) = official
        .send("GET", path, &[("accessToken", &token)])
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let connections = json.get("data").unwrap_or(&json);
    let sdk: Vec<&serde_json::Value> = connections
        .as_object()
        .map(|m| {
            m.values()
                .filter(|c| c["metaInfo"]["sdkSource"] == true)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(sdk.len(), 1, "SDK connections: {body}");
    assert_eq!(sdk[0]["metaInfo"]["labels"]["module"], "naming", "{body}");
    eprintln!("[e2e] {kind}: one gRPC connection carried the service watch and the config watch");
}

#[test]
fn nacos2_one_connection_for_naming_and_config() {
    one_connection_for_naming_and_config(nacos2());
}

#[test]
fn nacos3_one_connection_for_naming_and_config() {
    one_connection_for_naming_and_config(nacos3());
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Greeting {
    greeting: String,
    count: u32,
}

/// A YAML config read into a type: the value, a bad edit kept out (the last good value
/// stays, the error says why), the next good edit taken, the deletion read as `None`.
fn typed_config_keeps_the_last_good_value(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions {
        auth: matches!(kind, ServerKind::Official(_)),
        ..ServerOptions::default()
    });
    server.ensure_config_store();
    let configs = ConfigService::new(&settings(&server)).unwrap();
    let data_id = "e2e-typed.yaml";
    server
        .publish_config(data_id, "DEFAULT_GROUP", "greeting: hi\ncount: 2\n", "yaml")
        .unwrap();
    runtime().block_on(async {
        let mut typed = configs.watch_typed::<Greeting>(data_id);
        let value = |typed: &nacos_core::TypedConfig<Greeting>| {
            typed.current().map(|g| (g.greeting.clone(), g.count))
        };
        let until = |typed: nacos_core::TypedConfig<Greeting>, want: Option<(&'static str, u32)>| async move {
            let mut rx = typed.subscribe();
            tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|v| v.as_ref().map(|g| (g.greeting.as_str(), g.count)) == want),
            )
            .await
            .is_ok()
        };
        tokio::time::timeout(Duration::from_secs(15), typed.ready())
            .await
            .expect("no first answer")
            .expect("the first content reads");
        assert!(until(typed.clone(), Some(("hi", 2))).await, "{:?}", value(&typed));
        // A bad edit: kept out.
        server
            .publish_config(data_id, "DEFAULT_GROUP", "greeting: [unclosed\n", "yaml")
            .unwrap();
        let raw = typed.raw().clone();
        let mut raw_rx = raw.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            raw_rx.wait_for(|i| i.as_ref().and_then(|i| i.content.as_deref()) == Some("greeting: [unclosed\n")),
        )
        .await
        .expect("the bad edit never reached the raw watch")
        .unwrap();
        let error = xtask::wait_for(Duration::from_secs(5), || typed.last_error())
            .expect("no error for content that does not read");
        assert_eq!(value(&typed), Some(("hi".to_owned(), 2)), "the last good value was not kept");
        let error = error.to_string();
        assert!(error.contains("e2e-typed.yaml") && error.contains("YAML"), "{error}");
        // A good edit: taken.
        server
            .publish_config(data_id, "DEFAULT_GROUP", "greeting: hello\ncount: 3\n", "yaml")
            .unwrap();
        assert!(until(typed.clone(), Some(("hello", 3))).await, "{:?}", value(&typed));
        assert!(typed.last_error().is_none());
        // Deleted.
        server.remove_config(data_id, "DEFAULT_GROUP").unwrap();
        assert!(until(typed.clone(), None).await, "{:?}", value(&typed));
        eprintln!("[e2e] {kind}: a YAML config read as a type; a bad edit kept out ({error}); the next good edit and the deletion followed");
    });
}

#[test]
fn rnacos_typed_config_keeps_the_last_good_value() {
    typed_config_keeps_the_last_good_value(ServerKind::RNacos);
}

#[test]
fn nacos2_typed_config_keeps_the_last_good_value() {
    typed_config_keeps_the_last_good_value(nacos2());
}

#[test]
fn nacos3_typed_config_keeps_the_last_good_value() {
    typed_config_keeps_the_last_good_value(nacos3());
}

/// A change published over HTTP reaches our watch and a Java nacos-client 2.3.2 listener
/// (`peerbench.ConfigListener`), side by side: five changes, the time from each publish to
/// each side's receipt (wall clock, one machine); ours no later than Java's (medians, with
/// 100 ms of slack for a loaded machine). Then a config we publish reaches the Java
/// listener.
fn change_reaches_us_no_later_than_java(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let class_path = match xtask::ensure_java_peer("2.3.2") {
        Ok(class_path) => class_path,
        Err(e)
            if std::env::var_os(xtask::REQUIRE_SERVERS).is_none()
                && std::env::var_os("CI").is_none() =>
        {
            eprintln!("skipped: needs the Java nacos-client ({e}); `cargo xtask test` builds it");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut server = kind.start(&ServerOptions::default());
    server.ensure_config_store();
    let data_id = "e2e-side-by-side.txt";
    server
        .publish_config(data_id, "DEFAULT_GROUP", "v0", "text")
        .unwrap();
    let home = std::env::temp_dir().join(format!("e2e-config-java-{}", std::process::id()));
    let java = xtask::App::start_with_args(
        "java",
        &[
            &format!("-Duser.home={}", home.display()),
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &class_path,
            "peerbench.ConfigListener",
            &server.addr(),
            data_id,
            "DEFAULT_GROUP",
            "120",
        ],
        &[],
    );
    xtask::wait_for(Duration::from_secs(120), || {
        java.output().contains("initial v0").then_some(())
    })
    .unwrap_or_else(|| panic!("the Java listener did not start:\n{}", java.output()));
    let configs = ConfigService::new(&settings(&server)).unwrap();
    let epoch_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    runtime().block_on(async {
        let mut watch = configs.watch(data_id);
        content_becomes(
            &mut watch,
            Some("v0"),
            Duration::from_secs(15),
            Instant::now(),
        )
        .await
        .expect("never read v0");
        for n in 1..=5 {
            let content = format!("v{n}");
            // Both sides settle between changes.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let published = epoch_ms();
            server
                .publish_config(data_id, "DEFAULT_GROUP", &content, "text")
                .unwrap();
            let mut rx = watch.subscribe();
            let got = tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|i| i.as_ref().and_then(|i| i.content.as_deref()) == Some(&content)),
            )
            .await;
            assert!(
                matches!(got, Ok(Ok(_))),
                "{content} never reached our watch"
            );
            ours.push(epoch_ms() - published);
            let needle = format!(" {content}\n");
            let at = xtask::wait_for(Duration::from_secs(10), || {
                java.output()
                    .lines()
                    .filter_map(|l| l.strip_prefix("changed "))
                    .find(|l| format!(" {}\n", l.split_once(' ').map_or("", |(_, c)| c)) == needle)
                    .and_then(|l| l.split_once(' '))
                    .and_then(|(ms, _)| ms.parse::<u128>().ok())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{content} never reached the Java listener:\n{}",
                    java.output()
                )
            });
            theirs.push(at.saturating_sub(published));
        }
    });
    // The reverse: what we publish reaches the Java listener.
    runtime().block_on(async {
        configs
            .publish(data_id, "from rust", Some("text"), None)
            .await
            .expect("our publish");
    });
    xtask::wait_for(Duration::from_secs(10), || {
        java.output().contains(" from rust\n").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "our publish never reached the Java listener:\n{}",
            java.output()
        )
    });
    drop(std::fs::remove_dir_all(&home));
    let median = |v: &mut Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (o, t) = (median(&mut ours.clone()), median(&mut theirs.clone()));
    eprintln!(
        "[e2e] {kind}: publish to receipt, ms, ours {ours:?} (median {o}), Java nacos-client 2.3.2 {theirs:?} (median {t})"
    );
    assert!(o <= t + 100, "ours {ours:?} later than Java's {theirs:?}");
}

#[test]
fn rnacos_config_change_reaches_us_no_later_than_java() {
    change_reaches_us_no_later_than_java(ServerKind::RNacos);
}

#[test]
fn nacos2_config_change_reaches_us_no_later_than_java() {
    change_reaches_us_no_later_than_java(nacos2());
}

#[test]
fn nacos3_config_change_reaches_us_no_later_than_java() {
    change_reaches_us_no_later_than_java(nacos3());
}

const DEMO: &str = env!("CARGO_BIN_EXE_axum-demo");

/// The demo follows a config (`GREETING_DATA_ID`): its content is kept in the snapshot dir
/// (a file readable by its user only); started again while Nacos is down, the demo answers
/// with the snapshot; Nacos back, a new greeting reaches it.
#[test]
fn rnacos_config_starts_from_the_snapshot_while_nacos_is_down() {
    if skip_without(ServerKind::RNacos) {
        return;
    }
    let mut server = ServerKind::RNacos.start(&ServerOptions::default());
    server.ensure_config_store();
    let data_id = "greeting.txt";
    server
        .publish_config(data_id, "DEFAULT_GROUP", "hello, kept\n", "text")
        .unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", "e2e-snapshot".to_owned()),
        ("GREETING_DATA_ID", data_id.to_owned()),
        (
            "NACOS_CONFIG_SNAPSHOT_DIR",
            snapshots.path().display().to_string(),
        ),
        ("PORT", "0".to_owned()),
    ];
    let start = || {
        let app = xtask::App::start(DEMO, &env);
        let port = xtask::wait_for(Duration::from_secs(30), || {
            xtask::announced_port(&app.output())
        })
        .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
        (app, port)
    };
    let greeting_is = |port: u16, want: &str, within: Duration| {
        xtask::wait_for(within, || {
            let (_, body) = xtask::get_text(&format!("http://127.0.0.1:{port}/greeting")).ok()?;
            (body == want).then_some(())
        })
        .is_some()
    };
    let (first, port) = start();
    assert!(
        greeting_is(port, "hello, kept\n", Duration::from_secs(15)),
        "{}",
        first.output()
    );
    let file = snapshots
        .path()
        .join("public")
        .join("DEFAULT_GROUP")
        .join(data_id);
    assert!(
        xtask::wait_for(Duration::from_secs(5), || std::fs::read_to_string(&file)
            .ok()
            .filter(|c| c == "hello, kept\n"))
        .is_some(),
        "no snapshot at {}",
        file.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "snapshot mode {mode:o}");
    }
    first.signal("KILL");
    server.stop();
    let (second, port) = start();
    let down = Instant::now();
    assert!(
        greeting_is(port, "hello, kept\n", Duration::from_secs(20)),
        "Nacos down: the snapshot was not read:\n{}",
        second.output()
    );
    let from_snapshot = down.elapsed();
    server.restart();
    server.ensure_config_store();
    let back = Instant::now();
    server
        .publish_config(data_id, "DEFAULT_GROUP", "hello, fresh\n", "text")
        .unwrap();
    assert!(
        greeting_is(port, "hello, fresh\n", Duration::from_secs(45)),
        "Nacos back: the new greeting never reached the demo:\n{}",
        second.output()
    );
    eprintln!(
        "[e2e] r-nacos down: the demo answered from the snapshot {} ms after it started; back, a new greeting reached it {} ms after the publish",
        from_snapshot.as_millis(),
        back.elapsed().as_millis()
    );
}

/// A 5 MB config (the servers take up to 10 MiB; tonic's default limit is 4 MiB): published
/// by us, read by a watch, its md5 the server's.
fn a_5_mb_config(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions {
        auth: matches!(kind, ServerKind::Official(_)),
        ..ServerOptions::default()
    });
    server.ensure_config_store();
    let configs = ConfigService::new(&settings(&server)).unwrap();
    let data_id = "e2e-big.txt";
    // 5 MB of lines, not one repeated byte (a server may compress or dedupe).
    let big: String = (0..150_000)
        .map(|n| format!("line {n:07} of a big config ....\n"))
        .collect();
    assert!(big.len() > 5_000_000, "{}", big.len());
    runtime().block_on(async {
        configs
            .publish(data_id, &big, Some("text"), None)
            .await
            .expect("a 5 MB publish");
        let watch = configs.watch(data_id);
        // The official servers answer the publish before a query finds it (they dump the
        // config to their cache after the write): the watch's check 1 s after its first
        // answer finds it then.
        let mut rx = watch.subscribe();
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|i| i.as_ref().is_some_and(|i| i.content.is_some())),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the 5 MB config never read: {:?}",
            watch.current().map(|i| i.md5.clone())
        );
        let item = watch.current().expect("read");
        assert_eq!(item.content.as_deref().map(str::len), Some(big.len()));
        assert_eq!(item.content.as_deref(), Some(big.as_str()));
        eprintln!(
            "[e2e] {kind}: a {} byte config published and read back (md5 {})",
            big.len(),
            item.md5
        );
    });
}

#[test]
fn rnacos_a_5_mb_config() {
    a_5_mb_config(ServerKind::RNacos);
}

#[test]
fn nacos2_a_5_mb_config() {
    a_5_mb_config(nacos2());
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Pool {
    size: u32,
    hosts: Vec<String>,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct WithPool {
    pool: Pool,
}

/// A Java `.properties` config, as a Spring app's `application.properties` in Nacos, read
/// into a type and followed.
#[test]
fn rnacos_typed_properties_config() {
    if skip_without(ServerKind::RNacos) {
        return;
    }
    let mut server = ServerKind::RNacos.start(&ServerOptions::default());
    server.ensure_config_store();
    let configs = ConfigService::new(&settings(&server)).unwrap();
    let data_id = "e2e-app.properties";
    server
        .publish_config(
            data_id,
            "DEFAULT_GROUP",
            "pool.size=4\npool.hosts=a,b\n",
            "properties",
        )
        .unwrap();
    runtime().block_on(async {
        let mut typed = configs.watch_typed::<WithPool>(data_id);
        let first = tokio::time::timeout(Duration::from_secs(15), typed.ready())
            .await
            .expect("no answer")
            .expect("reads");
        let mut rx = typed.subscribe();
        let want = |size: u32| {
            move |v: &Option<std::sync::Arc<WithPool>>| {
                v.as_ref().is_some_and(|p| p.pool.size == size)
            }
        };
        if first.as_ref().is_none_or(|p| p.pool.size != 4) {
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(want(4)))
                .await
                .expect("never read")
                .unwrap();
        }
        assert_eq!(
            typed.current().unwrap().pool,
            Pool {
                size: 4,
                hosts: vec!["a".into(), "b".into()]
            }
        );
        server
            .publish_config(
                data_id,
                "DEFAULT_GROUP",
                "pool.size=8\npool.hosts[0]=c\n",
                "properties",
            )
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(want(8)))
            .await
            .expect("the change never read")
            .unwrap();
        assert_eq!(typed.current().unwrap().pool.hosts, vec!["c".to_owned()]);
    });
}

/// The demo's settings from imported configs (`NACOS_CONFIG_SHARED_CONFIGS`,
/// `NACOS_CONFIG_IMPORT`), as a Spring Cloud Alibaba app loads them: a shared `.properties`
/// config under a YAML one published without a type (the server stores `text`), merged key
/// by key, the later one winning; a change followed; content that does not read kept out
/// (the key named, not its value); an optional config that appears later taken; and a
/// second app whose required config does not exist stopped at start by an error naming it.
fn imports_merged_and_followed(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let auth = matches!(kind, ServerKind::Official(_));
    let mut server = kind.start(&ServerOptions {
        auth,
        ..ServerOptions::default()
    });
    server.ensure_config_store();
    let group = "DEFAULT_GROUP";
    server
        .publish_config(
            "e2e-shared.properties",
            group,
            "greeting=from shared\nmax-items=3\ndb.pool=4\n",
            "properties",
        )
        .unwrap();
    server
        .publish_config(
            "e2e-app.yaml",
            group,
            "maxItems: 8\ndb:\n  url: pg://a\n",
            "text",
        )
        .unwrap();
    let mut env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", "e2e-imports".to_owned()),
        ("NACOS_CONFIG_SNAPSHOT_DIR", "off".to_owned()),
        (
            "NACOS_CONFIG_SHARED_CONFIGS",
            "e2e-shared.properties".to_owned(),
        ),
        (
            "NACOS_CONFIG_IMPORT",
            "e2e-app.yaml, optional:e2e-local.yaml".to_owned(),
        ),
        ("PORT", "0".to_owned()),
    ];
    if let Some((user, password)) = server.credentials() {
        env.push(("NACOS_USERNAME", user));
        env.push(("NACOS_PASSWORD", password));
    }
    let started = Instant::now();
    let app = xtask::App::start(DEMO, &env);
    let port = xtask::wait_for(Duration::from_secs(30), || {
        xtask::announced_port(&app.output())
    })
    .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
    let loaded = started.elapsed();
    let url = format!("http://127.0.0.1:{port}/settings");
    let settings_where = |within: Duration, check: &dyn Fn(&serde_json::Value) -> bool| {
        let mut last = serde_json::Value::Null;
        let found = xtask::wait_for(within, || {
            let now = xtask::get_json(&url).ok()?;
            last = now.clone();
            check(&now).then_some(now)
        });
        found.ok_or(last)
    };
    let value = |v: &serde_json::Value, pointer: &str| v["value"].pointer(pointer).cloned();
    let first = xtask::get_json(&url).unwrap();
    // The later config wins key by key: max_items from the YAML, read as a number; names
    // spelled as Java apps spell them (`max-items`, `maxItems`) fill `max_items`.
    assert_eq!(
        value(&first, "/greeting"),
        Some("from shared".into()),
        "{first}"
    );
    assert_eq!(value(&first, "/max_items"), Some(8.into()), "{first}");
    assert_eq!(value(&first, "/db/url"), Some("pg://a".into()), "{first}");
    assert_eq!(value(&first, "/db/pool"), Some(4.into()), "{first}");
    assert_eq!(
        first["items"][0]["import"],
        "e2e-shared.properties?refresh=false"
    );
    assert_eq!(first["items"][2]["md5"], serde_json::Value::Null, "{first}");
    assert!(
        first["items"][1]["md5"]
            .as_str()
            .is_some_and(|m| m.len() == 32),
        "{first}"
    );

    let changed = Instant::now();
    server
        .publish_config(
            "e2e-app.yaml",
            group,
            "max-items: 9\ndb:\n  url: pg://b\n",
            "text",
        )
        .unwrap();
    settings_where(Duration::from_secs(15), &|v| {
        value(v, "/max_items") == Some(9.into()) && value(v, "/db/url") == Some("pg://b".into())
    })
    .unwrap_or_else(|v| {
        panic!(
            "the change never reached the settings: {v}\n{}",
            app.output()
        )
    });
    let followed = changed.elapsed();

    // Content that does not read as the app's type: the last good value stays, the error
    // names the key and the configs, never the value.
    server
        .publish_config("e2e-app.yaml", group, "max_items: s3cret\n", "text")
        .unwrap();
    let rejected = settings_where(Duration::from_secs(15), &|v| v["last_error"].is_string())
        .unwrap_or_else(|v| panic!("bad content was not reported: {v}\n{}", app.output()));
    let error = rejected["last_error"].as_str().unwrap();
    assert!(
        error.contains("max_items") && error.contains("e2e-app.yaml"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    assert_eq!(value(&rejected, "/max_items"), Some(9.into()), "{rejected}");
    assert!(
        app.output().contains("keeping the last good value"),
        "{}",
        app.output()
    );

    // An optional config that appears later is followed, and wins.
    server
        .publish_config("e2e-local.yaml", group, "greeting: local\n", "yaml")
        .unwrap();
    settings_where(Duration::from_secs(15), &|v| {
        value(v, "/greeting") == Some("local".into())
    })
    .unwrap_or_else(|v| panic!("the optional config never reached the settings: {v}"));

    // A required config that does not exist: the app does not start, and says which.
    env.retain(|(k, _)| *k != "NACOS_CONFIG_IMPORT");
    env.push((
        "NACOS_CONFIG_IMPORT",
        "e2e-app.yaml,e2e-missing.yaml".to_owned(),
    ));
    let mut missing = xtask::App::start(DEMO, &env);
    let status = missing
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "the demo started without its required config:\n{}",
                missing.output()
            )
        });
    assert!(!status.success());
    let output = missing.output();
    assert!(
        output.contains("e2e-missing.yaml")
            && output.contains("does not exist")
            && output.contains("optional:"),
        "{output}"
    );
    assert!(xtask::announced_port(&output).is_none(), "{output}");
    eprintln!(
        "[e2e] imports: the demo started with its merged settings in {} ms; a change reached them in {} ms",
        loaded.as_millis(),
        followed.as_millis()
    );
}

#[test]
fn rnacos_imports_merged_and_followed() {
    imports_merged_and_followed(ServerKind::RNacos);
}

#[test]
fn nacos3_imports_merged_and_followed() {
    imports_merged_and_followed(nacos3());
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct SourceSettings {
    name: String,
    max_items: u32,
    db: SourceDb,
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct SourceDb {
    pool: u32,
}

/// The imported configs as one more source of the `config` crate and of figment: merged
/// keys over the app's own defaults, numbers read from them, a change seen by figment's
/// provider, a required config that does not exist an error of the `config` build.
#[test]
fn rnacos_configs_as_config_and_figment_sources() {
    use nacos_core::{ConfigImport, ConfigImports, NacosProvider, NacosSource};
    if skip_without(ServerKind::RNacos) {
        return;
    }
    let mut server = ServerKind::RNacos.start(&ServerOptions::default());
    server.ensure_config_store();
    let group = "DEFAULT_GROUP";
    server
        .publish_config(
            "e2e-src-shared.properties",
            group,
            "name=shared\ndb.pool=4\n",
            "properties",
        )
        .unwrap();
    server
        .publish_config("e2e-src.yaml", group, "db:\n  pool: 9\n", "yaml")
        .unwrap();
    let configs = ConfigService::new(&settings(&server)).unwrap();
    let imports = ConfigImports::new()
        .with(ConfigImport::new("e2e-src-shared.properties"))
        .with(ConfigImport::new("e2e-src.yaml"));
    runtime().block_on(async {
        let built: SourceSettings = config::Config::builder()
            .set_default("max_items", 1)
            .unwrap()
            .add_async_source(NacosSource::new(configs.clone(), imports.clone()))
            .build()
            .await
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(
            built,
            SourceSettings {
                name: "shared".into(),
                max_items: 1,
                db: SourceDb { pool: 9 }
            }
        );

        let mut provider = NacosProvider::load(&configs, imports.clone())
            .await
            .unwrap();
        let extract = |provider: &NacosProvider| -> SourceSettings {
            figment::Figment::new()
                .merge(figment::providers::Serialized::default("max_items", 2))
                .merge(provider)
                .extract_lossy()
                .unwrap()
        };
        assert_eq!(extract(&provider).db.pool, 9);
        assert_eq!(extract(&provider).max_items, 2);
        server
            .publish_config("e2e-src.yaml", group, "db:\n  pool: 10\n", "yaml")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), provider.changed())
            .await
            .expect("figment's provider never saw the change")
            .unwrap();
        assert_eq!(extract(&provider).db.pool, 10);

        let missing = config::Config::builder()
            .add_async_source(NacosSource::new(
                configs.clone(),
                imports.with(ConfigImport::new("e2e-src-missing.yaml")),
            ))
            .build()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("e2e-src-missing.yaml") && missing.contains("does not exist"),
            "{missing}"
        );
    });
}

/// No gRPC port answers (a load balancer passing the HTTP port only): the demo registers
/// over HTTP and follows its greeting over HTTP v1 long polling, a change reaching it at
/// once.
fn demo_follows_its_config_over_http_when_no_grpc_port_answers(kind: ServerKind) {
    if skip_without(kind) {
        return;
    }
    let mut server = kind.start(&ServerOptions {
        auth: matches!(kind, ServerKind::Official(_)),
        ..ServerOptions::default()
    });
    server.ensure_config_store();
    let data_id = "e2e-http-greeting.txt";
    server
        .publish_config(data_id, "DEFAULT_GROUP", "hello over http\n", "text")
        .unwrap();
    server
        .publish_config(
            "e2e-http-settings.yaml",
            "DEFAULT_GROUP",
            "max_items: 5\n",
            "yaml",
        )
        .unwrap();
    let port: u16 = server.addr().rsplit(':').next().unwrap().parse().unwrap();
    // A port above the server's that nothing listens on.
    let closed = loop {
        let p = xtask::free_port();
        if p > port {
            break p;
        }
    };
    let env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", "e2e-http-config".to_owned()),
        ("NACOS_GRPC_PORT_OFFSET", (closed - port).to_string()),
        ("NACOS_CONFIG_SNAPSHOT_DIR", "off".to_owned()),
        ("GREETING_DATA_ID", data_id.to_owned()),
        // Loaded before the demo listens, so before any registration decides the API.
        ("NACOS_CONFIG_IMPORT", "e2e-http-settings.yaml".to_owned()),
        ("PORT", "0".to_owned()),
    ];
    let mut env = env;
    if let Some((user, password)) = server.credentials() {
        env.push(("NACOS_USERNAME", user));
        env.push(("NACOS_PASSWORD", password));
    }
    let app = xtask::App::start(DEMO, &env);
    let port = xtask::wait_for(Duration::from_secs(30), || {
        xtask::announced_port(&app.output())
    })
    .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
    let greeting_is = |want: &str, within: Duration| {
        xtask::wait_for(within, || {
            let (_, body) = xtask::get_text(&format!("http://127.0.0.1:{port}/greeting")).ok()?;
            (body == want).then_some(())
        })
        .is_some()
    };
    assert!(
        greeting_is("hello over http\n", Duration::from_secs(20)),
        "{}",
        app.output()
    );
    let settings = xtask::get_json(&format!("http://127.0.0.1:{port}/settings")).unwrap();
    assert_eq!(settings["value"]["max_items"], 5, "{settings}");
    let health = xtask::wait_for(Duration::from_secs(20), || {
        xtask::get_json(&format!("http://127.0.0.1:{port}/health"))
            .ok()
            .filter(|h| h["nacos"]["api"].is_string())
    })
    .unwrap_or_else(|| panic!("never registered:\n{}", app.output()));
    assert_ne!(health["nacos"]["api"], "grpc", "{health}");
    let changed = Instant::now();
    server
        .publish_config(data_id, "DEFAULT_GROUP", "changed over http\n", "text")
        .unwrap();
    assert!(
        greeting_is("changed over http\n", Duration::from_secs(10)),
        "{}",
        app.output()
    );
    let took = changed.elapsed();
    assert!(app.output().contains("long polling"), "{}", app.output());
    eprintln!(
        "[e2e] {kind}, no gRPC port: the demo ({} to register) got a new greeting over HTTP long polling {} ms after the publish",
        health["nacos"]["api"],
        took.as_millis()
    );
}

#[test]
fn rnacos_demo_follows_its_config_over_http_when_no_grpc_port_answers() {
    demo_follows_its_config_over_http_when_no_grpc_port_answers(ServerKind::RNacos);
}

#[test]
fn nacos2_demo_follows_its_config_over_http_when_no_grpc_port_answers() {
    demo_follows_its_config_over_http_when_no_grpc_port_answers(nacos2());
}

/// An operator's failover file (`NACOS_CONFIG_FAILOVER_DIR`, as the Java client's
/// `data/config-data`) replaces the server's content while it is there, changes on the
/// server kept out; removed, the config follows the server again.
#[test]
fn rnacos_demo_follows_the_operators_failover_file() {
    if skip_without(ServerKind::RNacos) {
        return;
    }
    let mut server = ServerKind::RNacos.start(&ServerOptions::default());
    server.ensure_config_store();
    let data_id = "e2e-failover-greeting.txt";
    server
        .publish_config(data_id, "DEFAULT_GROUP", "from nacos\n", "text")
        .unwrap();
    let failover = tempfile::tempdir().unwrap();
    let env = vec![
        ("NACOS_SERVER_ADDR", server.addr()),
        ("NACOS_SERVICE_NAME", "e2e-failover".to_owned()),
        ("NACOS_CONFIG_SNAPSHOT_DIR", "off".to_owned()),
        (
            "NACOS_CONFIG_FAILOVER_DIR",
            failover.path().display().to_string(),
        ),
        ("GREETING_DATA_ID", data_id.to_owned()),
        ("PORT", "0".to_owned()),
    ];
    let app = xtask::App::start(DEMO, &env);
    let port = xtask::wait_for(Duration::from_secs(30), || {
        xtask::announced_port(&app.output())
    })
    .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
    let greeting_is = |want: &str, within: Duration| {
        xtask::wait_for(within, || {
            let (_, body) = xtask::get_text(&format!("http://127.0.0.1:{port}/greeting")).ok()?;
            (body == want).then_some(())
        })
        .is_some()
    };
    assert!(
        greeting_is("from nacos\n", Duration::from_secs(15)),
        "{}",
        app.output()
    );
    let dir = failover.path().join("public").join("DEFAULT_GROUP");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(data_id), "from the failover file\n").unwrap();
    let placed = Instant::now();
    assert!(
        greeting_is("from the failover file\n", Duration::from_secs(10)),
        "{}",
        app.output()
    );
    let taken = placed.elapsed();
    server
        .publish_config(data_id, "DEFAULT_GROUP", "changed in nacos\n", "text")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(greeting_is(
        "from the failover file\n",
        Duration::from_secs(1)
    ));
    std::fs::remove_file(dir.join(data_id)).unwrap();
    let removed = Instant::now();
    assert!(
        greeting_is("changed in nacos\n", Duration::from_secs(10)),
        "{}",
        app.output()
    );
    eprintln!(
        "[e2e] failover file taken in {} ms, its removal in {} ms",
        taken.as_millis(),
        removed.elapsed().as_millis()
    );
}

/// A namespace other than `public` (the requests' `tenant`), over gRPC and over HTTP v1
/// long polling: what is published there is read and followed there, and not seen in
/// `public`.
fn a_namespace_of_its_own(api: Option<ApiVersion>) {
    if skip_without(ServerKind::RNacos) {
        return;
    }
    let mut server = ServerKind::RNacos.start(&ServerOptions::default());
    server.ensure_config_store();
    let in_namespace = |b: ConfigBuilder| {
        let b = b.namespace_id("e2e-ns");
        match api {
            Some(api) => b.api(api),
            None => b,
        }
    };
    let configs = ConfigService::new(&settings_with(&server, in_namespace)).unwrap();
    let public = ConfigService::new(&settings(&server)).unwrap();
    let data_id = "e2e-ns.yaml";
    runtime().block_on(async {
        configs
            .publish(data_id, "where: e2e-ns\n", Some("yaml"), None)
            .await
            .unwrap();
        let mut watch = configs.watch(data_id);
        assert!(
            content_becomes(
                &mut watch,
                Some("where: e2e-ns\n"),
                Duration::from_secs(10),
                Instant::now()
            )
            .await
            .is_some(),
            "{:?}",
            watch.current()
        );
        assert_eq!(watch.key().namespace_id, "e2e-ns");
        assert_eq!(public.get(data_id).await.unwrap().content, None);
        configs
            .publish(data_id, "where: e2e-ns, changed\n", Some("yaml"), None)
            .await
            .unwrap();
        assert!(
            content_becomes(
                &mut watch,
                Some("where: e2e-ns, changed\n"),
                Duration::from_secs(10),
                Instant::now()
            )
            .await
            .is_some(),
            "the change in the namespace never reached the watch: {:?}",
            watch.current()
        );
        assert_eq!(public.get(data_id).await.unwrap().content, None);
    });
}

#[test]
fn rnacos_config_in_a_namespace_of_its_own() {
    a_namespace_of_its_own(None);
}

#[test]
fn rnacos_config_in_a_namespace_of_its_own_over_http_v1() {
    a_namespace_of_its_own(Some(ApiVersion::V1));
}

/// Publishes `greeting=<greeting>` as `data_id` on the first node but `avoid` that takes
/// it (a write goes through the cluster's Raft leader: after a loss, an election comes
/// first), trying for up to 60 s; returns how long that took.
fn publish_on_cluster(
    nodes: &[xtask::official::OfficialNacos],
    avoid: Option<usize>,
    data_id: &str,
    greeting: &str,
) -> Duration {
    let content = format!("greeting={greeting}\n");
    let params = [
        ("dataId", data_id),
        ("group", "DEFAULT_GROUP"),
        ("content", content.as_str()),
        ("type", "properties"),
    ];
    let started = Instant::now();
    xtask::wait_for(Duration::from_secs(60), || {
        nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != avoid)
            .find_map(|(_, node)| {
                let (status, body) = node.send("POST", "/nacos/v1/cs/configs", &params).ok()?;
                (status == 200 && body.trim() == "true").then_some(())
            })
    })
    .unwrap_or_else(|| panic!("no node of the cluster took {data_id} within 60 s"));
    started.elapsed()
}

/// Nacos as users run it in production: a 3-node official 2.3.2 cluster (configs in Derby
/// replicated by its Raft). The node holding the demo's connection freezes as a JVM in a
/// long pause does (SIGSTOP, resumed once the change was seen), then the node holding it
/// next dies: each time a change published on another node reaches the demo's
/// `/settings`, which never stops answering.
#[test]
fn nacos2_cluster_config_followed_through_a_pause_and_a_node_loss() {
    use xtask::official::{OfficialCluster, OfficialOptions, OfficialVersion};
    if skip_without(nacos2()) {
        return;
    }
    let mut cluster =
        OfficialCluster::start(OfficialVersion::V2_3_2, 3, OfficialOptions::default());
    let data_id = "e2e-cluster.properties";
    publish_on_cluster(&cluster.nodes, None, data_id, "one");
    let env = vec![
        ("NACOS_SERVER_ADDR", cluster.addr()),
        ("NACOS_SERVICE_NAME", "e2e-cluster-config".to_owned()),
        ("NACOS_CONFIG_IMPORT", data_id.to_owned()),
        ("NACOS_CONFIG_SNAPSHOT_DIR", "off".to_owned()),
        ("PORT", "0".to_owned()),
    ];
    let app = xtask::App::start(DEMO, &env);
    let port = xtask::wait_for(Duration::from_secs(30), || {
        xtask::announced_port(&app.output())
    })
    .unwrap_or_else(|| panic!("the demo did not start:\n{}", app.output()));
    let greeting = || {
        xtask::get_json(&format!("http://127.0.0.1:{port}/settings"))
            .unwrap_or_else(|e| panic!("/settings did not answer: {e}\n{}", app.output()))["value"]
            ["greeting"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(greeting().as_deref(), Some("one"), "{}", app.output());
    // The node holding the demo's connection, from its `/health` (once registered).
    let holder = |nodes: &[xtask::official::OfficialNacos]| -> usize {
        let mut last = serde_json::Value::Null;
        xtask::wait_for(Duration::from_secs(20), || {
            last = xtask::get_json(&format!("http://127.0.0.1:{port}/health")).ok()?;
            let server = last["nacos"]["server"].as_str()?;
            nodes
                .iter()
                .position(|n| server.ends_with(&format!(":{}", n.grpc_port())))
        })
        .unwrap_or_else(|| panic!("/health names no node of the cluster: {last}"))
    };
    let reaches = |greeting_now: &str, what: &str| -> Duration {
        let started = Instant::now();
        xtask::wait_for(Duration::from_secs(60), || {
            (greeting().as_deref() == Some(greeting_now)).then(|| started.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: the change never reached /settings within 60 s:\n{}",
                app.output()
            )
        })
    };

    let paused = holder(&cluster.nodes);
    let pid = cluster.nodes[paused].pid().expect("the node runs");
    let signal = |name: &str| {
        std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("kill runs");
    };
    signal("STOP");
    let frozen = Instant::now();
    let write_paused = publish_on_cluster(&cluster.nodes, Some(paused), data_id, "two");
    let seen_paused = reaches("two", "node frozen");
    let since_freeze = frozen.elapsed();
    signal("CONT");

    let dead = holder(&cluster.nodes);
    assert_ne!(dead, paused, "still on the frozen node:\n{}", app.output());
    cluster.nodes[dead].stop();
    let write_dead = publish_on_cluster(&cluster.nodes, Some(dead), data_id, "three");
    let seen_dead = reaches("three", "node killed");
    eprintln!(
        "[e2e] 3-node official 2.3.2 cluster, the demo's settings imported: the node holding its connection frozen, a change (written in {} ms) reached /settings {} ms after the write ({} ms after the freeze); the next node holding it killed, a change (written in {} ms) reached it {} ms after the write",
        write_paused.as_millis(),
        seen_paused.as_millis(),
        since_freeze.as_millis(),
        write_dead.as_millis(),
        seen_dead.as_millis()
    );
}
