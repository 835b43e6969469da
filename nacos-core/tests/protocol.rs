//! The exact Nacos v1 protocol of the naming client and the beat engine, against a
//! `wiremock` server: re-registration on 20404, the server's beat interval, light beats,
//! login, server fail-over and retries, failures during beats, deregistration, headers.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nacos_core::{Error, Instance, NamingClient, RegistrationState, ServiceKey};
use serde_json::Value;
use support::{
    BEAT, INSTANCE, IP, LIST, LOGIN, Log, Seen, beat_answer, config, eventually, form_field,
    mock_server, mount, mount_nacos, next_port, ok, query_param, start,
};
use wiremock::ResponseTemplate;

const SECS_5: Duration = Duration::from_secs(5);

/// The key and instance the client-level tests register.
fn key_and_instance(config: &nacos_core::Config, port: u16) -> (ServiceKey, Instance) {
    let addr = SocketAddr::new(IP.parse().unwrap(), port);
    (
        ServiceKey::from(config),
        Instance::from_config(config, addr),
    )
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn beat_answer_20404_registers_again_at_once_then_beats_in_full() {
    let server = mock_server().await;
    let log = Log::default();
    // A real server's 20404 answer still says lightBeatEnabled: the beat after the new
    // registration must carry the full body anyway.
    mount_nacos(&server, &log, |n, _| match n {
        0 => beat_answer(20404, 600, true),
        _ => beat_answer(10200, 600, true),
    })
    .await;
    let reg = start(
        config(&server).heartbeat_interval(Duration::from_millis(600)),
        18001,
    );

    eventually(SECS_5, "3 beats", async || log.count("PUT", BEAT) >= 3).await;
    let seen: Vec<Seen> = log
        .all()
        .into_iter()
        .filter(|s| s.is("POST", INSTANCE) || s.is("PUT", BEAT))
        .collect();
    let kinds: Vec<String> = seen
        .iter()
        .take(5)
        .map(|s| format!("{} {}", s.request.method, s.request.url.path()))
        .collect();
    assert_eq!(
        kinds,
        [
            "POST /nacos/v1/ns/instance",
            "PUT /nacos/v1/ns/instance/beat",
            "POST /nacos/v1/ns/instance",
            "PUT /nacos/v1/ns/instance/beat",
            "PUT /nacos/v1/ns/instance/beat",
        ]
    );
    // How soon: the task's paused-clock tests (`an_unknown_instance_is_registered_again_at_once`).
    assert!(seen[1].form("beat").is_some(), "the first beat is full");
    let after = seen[3]
        .form("beat")
        .expect("the beat after re-registering is full");
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after["serviceName"], "DEFAULT_GROUP@@svc");
    assert!(seen[4].form("beat").is_none(), "then light beats again");
    drop(reg);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_beat_interval_of_the_server_wins_over_the_configured_one() {
    let server = mock_server().await;
    let log = Log::default();
    mount_nacos(&server, &log, |_, _| beat_answer(10200, 600, true)).await;
    let reg = start(config(&server), next_port());

    eventually(SECS_5, "4 beats", async || log.count("PUT", BEAT) >= 4).await;
    let register = log.of("POST", INSTANCE)[0].at;
    let beats: Vec<Instant> = log.of("PUT", BEAT).iter().map(|s| s.at).collect();
    assert!(beats[0] > register);
    // After the first answer, the server's 600 ms (exact timing: the task's paused-clock
    // tests).
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(500),
            "beats {} ms apart: clientBeatInterval 600 was ignored",
            millis(gap)
        );
    }
    drop(reg);
}

#[tokio::test(flavor = "multi_thread")]
async fn first_beat_is_full_and_later_ones_light() {
    let server = mock_server().await;
    let log = Log::default();
    mount_nacos(&server, &log, |_, _| beat_answer(10200, 0, true)).await;
    let port = next_port();
    let reg = start(config(&server).metadata("zone", "a"), port);

    eventually(SECS_5, "3 beats", async || log.count("PUT", BEAT) >= 3).await;
    let beats = log.of("PUT", BEAT);
    let full: Value = serde_json::from_str(&beats[0].form("beat").expect("first beat is full"))
        .expect("the beat field is JSON");
    assert_eq!(full["serviceName"], "DEFAULT_GROUP@@svc");
    assert_eq!(full["ip"], IP);
    assert_eq!(full["port"], port);
    assert_eq!(full["cluster"], "DEFAULT");
    assert_eq!(full["weight"], 1.0);
    assert_eq!(full["period"], 200);
    assert_eq!(full["scheduled"], false);
    assert_eq!(full["stopped"], false);
    let metadata: BTreeMap<String, String> =
        serde_json::from_value(full["metadata"].clone()).unwrap();
    assert_eq!(metadata["preserved.register.source"], "RUST_NACOS");
    assert_eq!(metadata["preserved.heart.beat.interval"], "200");
    assert_eq!(metadata["zone"], "a");

    for (i, beat) in beats.iter().enumerate().skip(1) {
        assert!(beat.form("beat").is_none(), "beat {i} is not light");
    }
    // Light or not, the query says which instance beats.
    for beat in &beats {
        assert_eq!(beat.query("namespaceId").as_deref(), Some("public"));
        assert_eq!(
            beat.query("serviceName").as_deref(),
            Some("DEFAULT_GROUP@@svc")
        );
        assert_eq!(beat.query("groupName").as_deref(), Some("DEFAULT_GROUP"));
        assert_eq!(beat.query("clusterName").as_deref(), Some("DEFAULT"));
        assert_eq!(beat.query("ip").as_deref(), Some(IP));
        assert_eq!(beat.query("port"), Some(port.to_string()));
    }
    drop(reg);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_beat_is_full_while_light_beats_are_off() {
    let server = mock_server().await;
    let log = Log::default();
    mount_nacos(&server, &log, |_, _| beat_answer(10200, 0, false)).await;
    let reg = start(config(&server), next_port());

    eventually(SECS_5, "3 beats", async || log.count("PUT", BEAT) >= 3).await;
    for (i, beat) in log.of("PUT", BEAT).iter().enumerate() {
        let body = beat
            .form("beat")
            .unwrap_or_else(|| panic!("beat {i} is light though lightBeatEnabled is false"));
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["serviceName"], "DEFAULT_GROUP@@svc");
    }
    drop(reg);
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_answer_logs_in_again_and_retries_with_the_new_token() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", LOGIN, |n, _| {
        ResponseTemplate::new(200).set_body_raw(
            format!(
                r#"{{"accessToken":"token-{}","tokenTtl":18000,"globalAdmin":false}}"#,
                n + 1
            ),
            "application/json",
        )
    })
    .await;
    mount(&server, &log, "POST", INSTANCE, |n, _| match n {
        0 => ResponseTemplate::new(403).set_body_string("token expired!"),
        _ => ok(),
    })
    .await;
    let config = config(&server)
        .username("nacos")
        .password("pw")
        .build()
        .unwrap();
    let client = NamingClient::new(&config).unwrap();
    let (key, instance) = key_and_instance(&config, next_port());

    client.register(&key, &instance).await.expect("registered");

    let kinds: Vec<String> = log
        .all()
        .iter()
        .map(|s| format!("{} {}", s.request.method, s.request.url.path()))
        .collect();
    assert_eq!(
        kinds,
        [
            "POST /nacos/v1/auth/login",
            "POST /nacos/v1/ns/instance",
            "POST /nacos/v1/auth/login",
            "POST /nacos/v1/ns/instance",
        ]
    );
    let logins = log.of("POST", LOGIN);
    for login in &logins {
        assert_eq!(login.form("username").as_deref(), Some("nacos"));
        assert_eq!(login.form("password").as_deref(), Some("pw"));
        assert!(login.query("accessToken").is_none());
        let agent = login.request.headers.get("user-agent").unwrap();
        assert!(agent.to_str().unwrap().starts_with("nacos-core/"));
        assert!(login.request.headers.contains_key("requestid"));
    }
    let registers = log.of("POST", INSTANCE);
    assert_eq!(
        registers[0].query("accessToken").as_deref(),
        Some("token-1")
    );
    assert_eq!(
        registers[1].query("accessToken").as_deref(),
        Some("token-2")
    );

    // The token is kept: the next request logs in no more.
    client.register(&key, &instance).await.expect("registered");
    assert_eq!(log.count("POST", LOGIN), 2);
    assert_eq!(
        log.of("POST", INSTANCE)[2].query("accessToken").as_deref(),
        Some("token-2")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_login_is_reported_without_the_password_and_not_repeated_within_5s() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", LOGIN, |_, _| {
        ResponseTemplate::new(403).set_body_string("unknown user!")
    })
    .await;
    mount(&server, &log, "POST", INSTANCE, |_, _| ok()).await;
    let password = "pw-Sup3rSecret";
    let config = config(&server)
        .username("nacos")
        .password(password)
        .build()
        .unwrap();
    let client = NamingClient::new(&config).unwrap();
    let (key, instance) = key_and_instance(&config, next_port());

    let err = client.register(&key, &instance).await.unwrap_err();
    assert!(matches!(err, Error::Login { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(!shown.contains(password), "{shown}");
    assert!(
        shown.contains("nacos") && shown.contains("unknown user!"),
        "{shown}"
    );
    assert!(!format!("{err:?}").contains(password));
    assert_eq!(log.count("POST", LOGIN), 1);

    let again = client.register(&key, &instance).await.unwrap_err();
    assert!(matches!(again, Error::Login { .. }), "{again:?}");
    assert!(!again.to_string().contains(password));
    assert_eq!(log.count("POST", LOGIN), 1, "logged in again within 5 s");
    assert_eq!(
        log.count("POST", INSTANCE),
        0,
        "a request went out without a token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_server_is_skipped_for_the_next_one() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", INSTANCE, |_, _| ok()).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = config(&server)
        .server_addr(format!("127.0.0.1:{closed},{}", server.address()))
        .build()
        .unwrap();
    assert_eq!(config.server_addrs().len(), 2);
    let client = NamingClient::new(&config).unwrap();
    let (key, instance) = key_and_instance(&config, next_port());

    // Each request starts at a random server: 20 runs start at the closed one at least
    // once but with a chance of 2^-20.
    const RUNS: usize = 20;
    for run in 0..RUNS {
        client
            .register(&key, &instance)
            .await
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
    }
    assert_eq!(log.count("POST", INSTANCE), RUNS, "one request per run");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_server_answering_500_is_tried_three_times() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", INSTANCE, |_, _| {
        ResponseTemplate::new(500).set_body_string("boom")
    })
    .await;
    let config = config(&server).build().unwrap();
    let client = NamingClient::new(&config).unwrap();
    let (key, instance) = key_and_instance(&config, next_port());

    let err = client.register(&key, &instance).await.unwrap_err();
    match &err {
        Error::Status { status, body, .. } => {
            assert_eq!(*status, 500);
            assert_eq!(body, "boom");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_answer_is_not_tried_again() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", INSTANCE, |_, _| {
        ResponseTemplate::new(400).set_body_string("caused: Param 'serviceName' is illegal")
    })
    .await;
    let config = config(&server).build().unwrap();
    let client = NamingClient::new(&config).unwrap();
    let (key, instance) = key_and_instance(&config, next_port());

    let err = client.register(&key, &instance).await.unwrap_err();
    assert!(
        matches!(err, Error::Status { status: 400, .. }),
        "expected a 400 status error, got {err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_garbled_beats_are_retried_and_beats_go_on() {
    let server = mock_server().await;
    let log = Log::default();
    // The client tries a single server 3 times per beat: calls 0-2 are one failed beat
    // (HTTP 500), calls 3-5 another (a body that is not JSON).
    mount_nacos(&server, &log, |n, _| match n {
        0..3 => ResponseTemplate::new(500).set_body_string("server error"),
        3..6 => ResponseTemplate::new(200).set_body_string("<html>not a beat answer</html>"),
        _ => beat_answer(10200, 0, true),
    })
    .await;
    let reg = start(config(&server), next_port());
    let status = reg.status();

    eventually(Duration::from_secs(8), "2 good beats", async || {
        let s = status.snapshot();
        s.beats >= 2 && s.consecutive_failures == 0
    })
    .await;
    let s = status.snapshot();
    assert_eq!(s.state, RegistrationState::Registered);
    let last_error = s.last_error.expect("the failures are recorded");
    assert!(
        last_error.contains("unexpected body") && last_error.contains("<html>"),
        "{last_error}"
    );
    // One registration, then one more after each failed beat.
    assert!(s.registrations >= 3, "{} registrations", s.registrations);

    let seen = log.all();
    let puts: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].is("PUT", BEAT))
        .collect();
    assert!(puts.len() >= 8, "{} beat requests", puts.len());
    // Each failed beat is followed by a registration after the backoff (failure 1:
    // min(200 ms interval, 250 ms) jittered to 100-200 ms), then a full beat.
    for failed_last_try in [2, 5] {
        let failed = &seen[puts[failed_last_try]];
        let next = &seen[puts[failed_last_try] + 1];
        assert!(
            next.is("POST", INSTANCE),
            "after failed beat call {failed_last_try}: {} {}",
            next.request.method,
            next.request.url.path()
        );
        let backoff = next.at - failed.at;
        assert!(
            backoff >= Duration::from_millis(90),
            "registered again {} ms after a failure: no backoff",
            millis(backoff)
        );
    }
    assert!(
        seen[puts[6]].form("beat").is_some(),
        "beat after re-registering is full"
    );
    drop(reg);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_server_neither_stalls_the_engine_nor_the_drop() {
    let server = mock_server().await;
    let log = Log::default();
    // Beats hang far beyond the 300 ms request timeout.
    mount_nacos(&server, &log, |_, _| {
        beat_answer(10200, 0, true).set_delay(Duration::from_secs(5))
    })
    .await;
    let reg = start(config(&server), next_port());
    let status = reg.status();

    // Registration, hanging beats, registration again, ...: the engine goes on.
    eventually(Duration::from_secs(8), "3 registrations", async || {
        status.snapshot().registrations >= 3
    })
    .await;
    let s = status.snapshot();
    assert!(log.count("POST", INSTANCE) >= 3);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{s:?}"
    );

    // Drop while a beat hangs.
    let beats = log.count("PUT", BEAT);
    eventually(SECS_5, "another beat", async || {
        log.count("PUT", BEAT) > beats
    })
    .await;
    let started = Instant::now();
    drop(reg);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "drop took {} ms",
        millis(elapsed)
    );
    assert_eq!(log.count("DELETE", INSTANCE), 1);
    assert_eq!(status.snapshot().state, RegistrationState::Deregistered);
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_deregisters_once_with_the_instance_query() {
    let server = mock_server().await;
    let log = Log::default();
    mount_nacos(&server, &log, |_, _| beat_answer(10200, 0, true)).await;
    let port = next_port();
    let reg = start(config(&server), port);
    let status = reg.status();

    eventually(SECS_5, "a beat", async || log.count("PUT", BEAT) >= 1).await;
    drop(reg);

    let received = server.received_requests().await.unwrap();
    let deletes: Vec<_> = received
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "DELETE requests when drop returned");
    let delete = deletes[0];
    assert_eq!(delete.url.path(), INSTANCE);
    let mut query: Vec<(String, String)> = delete.url.query_pairs().into_owned().collect();
    query.sort();
    let port = port.to_string();
    let mut expected: Vec<(String, String)> = [
        ("clusterName", "DEFAULT"),
        ("ephemeral", "true"),
        ("groupName", "DEFAULT_GROUP"),
        ("ip", IP),
        ("namespaceId", "public"),
        ("port", port.as_str()),
        ("serviceName", "svc"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    expected.sort();
    assert_eq!(query, expected);
    assert_eq!(status.snapshot().state, RegistrationState::Deregistered);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_carries_the_client_headers() {
    let server = mock_server().await;
    let log = Log::default();
    mount_nacos(&server, &log, |_, _| beat_answer(10200, 0, true)).await;
    mount(&server, &log, "GET", LIST, |_, _| {
        ResponseTemplate::new(200).set_body_raw(
            r#"{"name":"DEFAULT_GROUP@@svc","hosts":[{"instanceId":"10.0.0.1#18013#DEFAULT#DEFAULT_GROUP@@svc","ip":"10.0.0.1","port":18013,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@svc","metadata":{}}]}"#,
            "application/json",
        )
    })
    .await;
    let builder = config(&server);
    let config = builder.clone().build().unwrap();
    let reg = start(builder, 18013);

    // Register, a full beat, a light beat, then a deregistration and an instance list.
    eventually(SECS_5, "2 beats", async || log.count("PUT", BEAT) >= 2).await;
    drop(reg);
    let client = NamingClient::new(&config).unwrap();
    let hosts = client
        .instance_list(&ServiceKey::from(&config), false)
        .await
        .unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].port, 18013);

    let received = server.received_requests().await.unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    for r in &received {
        let what = format!("{} {}", r.method, r.url.path());
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let agent = header("user-agent").unwrap_or_default();
        assert!(
            agent.starts_with("nacos-core/"),
            "{what}: User-Agent {agent:?}"
        );
        assert_eq!(
            header("request-module").as_deref(),
            Some("Naming"),
            "{what}"
        );
        assert_eq!(header("client-version"), Some(agent), "{what}");
        let id = header("requestid").unwrap_or_else(|| panic!("{what}: no RequestId"));
        let uuid = uuid::Uuid::parse_str(&id)
            .unwrap_or_else(|e| panic!("{what}: RequestId {id:?} is not a UUID: {e}"));
        assert_eq!(uuid.get_version_num(), 4, "{what}: RequestId {id:?}");
        assert_eq!(
            id,
            uuid.hyphenated().to_string(),
            "{what}: lower-case, hyphenated"
        );
        assert!(ids.insert(id), "{what}: RequestId reused");
        kinds.insert(what);
    }
    assert!(
        [
            "POST /nacos/v1/ns/instance",
            "PUT /nacos/v1/ns/instance/beat",
            "DELETE /nacos/v1/ns/instance",
            "GET /nacos/v1/ns/instance/list",
        ]
        .iter()
        .all(|k| kinds.contains(*k)),
        "{kinds:?}"
    );
    // Both beat kinds were checked.
    let beats: Vec<_> = received
        .iter()
        .filter(|r| r.url.path() == BEAT)
        .map(|r| form_field(r, "beat").is_some())
        .collect();
    assert!(beats.contains(&true) && beats.contains(&false), "{beats:?}");
    assert!(
        received
            .iter()
            .all(|r| query_param(r, "accessToken").is_none())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_server_does_not_block_logging_in_to_the_next_one() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", LOGIN, |_, _| {
        ResponseTemplate::new(200).set_body_string(r#"{"accessToken":"t","tokenTtl":18000}"#)
    })
    .await;
    mount(&server, &log, "POST", INSTANCE, |_, _| ok()).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = config(&server)
        .server_addr(format!("127.0.0.1:{closed},{}", server.address()))
        .username("nacos")
        .password("pw")
        .build()
        .unwrap();
    let (key, instance) = key_and_instance(&config, next_port());
    // A new client each run: its first request logs in, at a random server.
    for run in 0..20 {
        let client = NamingClient::new(&config).unwrap();
        client
            .register(&key, &instance)
            .await
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
    }
    assert_eq!(log.count("POST", LOGIN), 20, "one login per client");
    assert_eq!(
        log.count("POST", INSTANCE),
        20,
        "one registration per client"
    );
}

/// Many registrations behind a slow server: at most `MAX_IN_FLIGHT` requests reach it
/// before the first answer, and every registration still gets through.
#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_are_bounded() {
    const DELAY: Duration = Duration::from_millis(800);
    let registrations = nacos_core::MAX_IN_FLIGHT * 2 + 5;
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", INSTANCE, |_, _| {
        ok().set_delay(DELAY)
    })
    .await;
    mount(&server, &log, "DELETE", INSTANCE, |_, _| ok()).await;
    mount(&server, &log, "PUT", BEAT, |_, _| {
        beat_answer(10200, 5000, true)
    })
    .await;
    let regs: Vec<_> = (0..registrations)
        .map(|i| {
            start(
                config(&server)
                    .heartbeat_interval(SECS_5)
                    .request_timeout(Duration::from_secs(3)),
                19100 + i as u16,
            )
        })
        .collect();

    eventually(SECS_5, "every registration accepted", async || {
        regs.iter().all(|r| r.status().is_registered())
    })
    .await;
    let seen = log.of("POST", INSTANCE);
    let first = seen[0].at;
    let before_first_answer = seen
        .iter()
        .filter(|s| s.at < first + DELAY - Duration::from_millis(100))
        .count();
    assert_eq!(
        before_first_answer,
        nacos_core::MAX_IN_FLIGHT,
        "requests on the wire before the first answer came back"
    );
    assert_eq!(seen.len(), registrations, "one registration each");
}

/// A second registration of the same `service#ip#port` replaces the first, which then
/// leaves the instance alone; once the second is gone, the key is free for a third.
#[tokio::test(flavor = "multi_thread")]
async fn same_instance_registered_twice_replaces_the_first() {
    let server = mock_server().await;
    let log = Log::default();
    mount_nacos(&server, &log, |_, _| beat_answer(10200, 5000, true)).await;
    let port = next_port();
    let first = start(config(&server).heartbeat_interval(SECS_5), port);
    eventually(SECS_5, "the first registered", async || {
        first.status().is_registered()
    })
    .await;

    let second = start(config(&server).heartbeat_interval(SECS_5), port);
    eventually(
        SECS_5,
        "the first replaced, the second registered",
        async || {
            first.status().snapshot().state == RegistrationState::Replaced
                && second.status().is_registered()
        },
    )
    .await;
    drop(first);
    assert_eq!(
        log.count("DELETE", INSTANCE),
        0,
        "a replaced registration does not deregister the instance it gave up"
    );
    drop(second);
    assert_eq!(log.count("DELETE", INSTANCE), 1, "the holder deregisters");

    let third = start(config(&server).heartbeat_interval(SECS_5), port);
    eventually(SECS_5, "the third registered", async || {
        third.status().is_registered()
    })
    .await;
    assert_eq!(log.count("POST", INSTANCE), 3);
    drop(third);
    assert_eq!(log.count("DELETE", INSTANCE), 2);
}

/// The same instance registered with two Nacos clusters (an old and a new registry while
/// moving) is two registrations: neither replaces the other, and each deregisters its own.
#[tokio::test(flavor = "multi_thread")]
async fn same_instance_registered_with_two_clusters_keeps_both() {
    let old = mock_server().await;
    let new = mock_server().await;
    let (old_log, new_log) = (Log::default(), Log::default());
    mount_nacos(&old, &old_log, |_, _| beat_answer(10200, 5000, true)).await;
    mount_nacos(&new, &new_log, |_, _| beat_answer(10200, 5000, true)).await;
    let port = next_port();
    let on_old = start(config(&old).heartbeat_interval(SECS_5), port);
    let on_new = start(config(&new).heartbeat_interval(SECS_5), port);
    eventually(SECS_5, "both registered", async || {
        on_old.status().is_registered() && on_new.status().is_registered()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(on_old.status().is_registered(), "the first is not replaced");
    drop(on_old);
    drop(on_new);
    assert_eq!(old_log.count("DELETE", INSTANCE), 1);
    assert_eq!(new_log.count("DELETE", INSTANCE), 1);
}
