//! The v3 client API and the `auto` choice between v1 and v3, against `wiremock`:
//! register/renew/deregister on `/nacos/v3/client/ns/instance`, 21003 -> register again,
//! the instance list envelope, the v3 login with its v1 fallback, and `auto` falling back
//! to v1 on 404/410 once per server.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use nacos_core::{ApiVersion, Instance, NamingClient, ServiceKey};
use serde_json::json;
use support::{
    BEAT, INSTANCE, IP, LOGIN, Log, beat_answer, config, eventually, mock_server, mount, next_port,
    ok, query_param, start,
};
use wiremock::ResponseTemplate;

const V3_INSTANCE: &str = "/nacos/v3/client/ns/instance";
const V3_LIST: &str = "/nacos/v3/client/ns/instance/list";
const V3_LOGIN: &str = "/nacos/v3/auth/user/login";
const SECS_5: Duration = Duration::from_secs(5);

fn envelope(code: i64, data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        json!({"code": code, "message": if code == 0 { "success" } else { "instance not found" }, "data": data})
            .to_string(),
        "application/json",
    )
}

fn key_and_instance(config: &nacos_core::Config, port: u16) -> (ServiceKey, Instance) {
    let addr = SocketAddr::new(IP.parse().unwrap(), port);
    (
        ServiceKey::from(config),
        Instance::from_config(config, addr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_registers_renews_and_registers_again_on_21003() {
    let server = mock_server().await;
    let log = Log::default();
    // POSTs: register (0), renew answered 21003 (1), register again (2), renewals after.
    mount(&server, &log, "POST", V3_INSTANCE, |n, req| {
        let heartbeat = query_param(req, "heartBeat").as_deref() == Some("true");
        match (n, heartbeat) {
            (1, true) => envelope(21003, serde_json::Value::Null),
            _ => envelope(0, json!("ok")),
        }
    })
    .await;
    mount(&server, &log, "DELETE", V3_INSTANCE, |_, _| {
        envelope(0, json!("ok"))
    })
    .await;
    let reg = start(
        config(&server)
            .api(ApiVersion::V3)
            .group_name("G")
            .metadata("version", "2"),
        18101,
    );

    eventually(SECS_5, "register, 21003, register, renew", async || {
        log.count("POST", V3_INSTANCE) >= 4
    })
    .await;
    let posts = log.of("POST", V3_INSTANCE);
    let hb: Vec<String> = posts
        .iter()
        .map(|s| s.query("heartBeat").unwrap_or_default())
        .collect();
    assert_eq!(hb[..4], ["false", "true", "false", "true"], "{hb:?}");
    // The re-registration after 21003 carries the full data again.
    let again = &posts[2];
    assert_eq!(again.query("serviceName").as_deref(), Some("svc"));
    assert_eq!(again.query("groupName").as_deref(), Some("G"));
    assert_eq!(again.query("ip").as_deref(), Some(IP));
    assert_eq!(again.query("port").as_deref(), Some("18101"));
    let metadata: serde_json::Value =
        serde_json::from_str(&again.query("metadata").unwrap()).unwrap();
    assert_eq!(metadata["version"], "2");
    assert_eq!(again.query("weight").as_deref(), Some("1"));
    // Nothing went to the v1 API.
    assert_eq!(log.count("PUT", BEAT), 0);

    drop(reg);
    let deletes = log.of("DELETE", V3_INSTANCE);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].query("serviceName").as_deref(), Some("svc"));
    assert_eq!(deletes[0].query("ephemeral").as_deref(), Some("true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_instance_list_reads_the_envelope() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "GET", V3_LIST, |_, _| {
        envelope(
            0,
            json!([
                {"instanceId": "10.0.0.1#80#DEFAULT#G@@svc", "ip": "10.0.0.1", "port": 80,
                 "weight": 2.0, "healthy": true, "enabled": true, "ephemeral": true,
                 "clusterName": "DEFAULT", "serviceName": "G@@svc", "metadata": {"a": "b"}},
                {"ip": "10.0.0.2", "port": 81, "healthy": false}
            ]),
        )
    })
    .await;
    let cfg = config(&server).api(ApiVersion::V3).build().unwrap();
    let client = NamingClient::new(&cfg).unwrap();
    let (key, _) = key_and_instance(&cfg, 80);
    let all = client.instance_list(&key, false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].weight, 2.0);
    assert_eq!(all[0].metadata.get("a").map(String::as_str), Some("b"));
    let healthy = client.instance_list(&key, true).await.unwrap();
    assert_eq!(healthy.len(), 1);
    assert_eq!(healthy[0].port, 80);
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_falls_back_to_v1_on_404_once_per_server() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", V3_INSTANCE, |_, _| {
        ResponseTemplate::new(404)
    })
    .await;
    mount(&server, &log, "POST", INSTANCE, |_, _| ok()).await;
    mount(&server, &log, "PUT", BEAT, |_, _| {
        beat_answer(10200, 200, true)
    })
    .await;
    mount(&server, &log, "DELETE", INSTANCE, |_, _| ok()).await;
    let reg = start(config(&server).api(ApiVersion::Auto), next_port());

    eventually(SECS_5, "v1 register and 2 beats", async || {
        log.count("PUT", BEAT) >= 2
    })
    .await;
    assert_eq!(log.count("POST", V3_INSTANCE), 1, "v3 is tried once");
    assert_eq!(log.count("POST", INSTANCE), 1);
    drop(reg);
    assert_eq!(log.count("DELETE", INSTANCE), 1, "deregistered on v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_falls_back_to_v1_on_410_and_remembers_it() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", V3_INSTANCE, |_, _| {
        ResponseTemplate::new(410)
    })
    .await;
    mount(&server, &log, "POST", INSTANCE, |_, _| ok()).await;
    let cfg = config(&server).api(ApiVersion::Auto).build().unwrap();
    let client = NamingClient::new(&cfg).unwrap();
    let (key, inst) = key_and_instance(&cfg, next_port());
    let addr = cfg.server_addrs()[0].clone();
    assert_eq!(client.api_of(&addr), None);
    client.register(&key, &inst).await.unwrap();
    assert_eq!(client.api_of(&addr), Some(ApiVersion::V1));
    client.register(&key, &inst).await.unwrap();
    assert_eq!(log.count("POST", V3_INSTANCE), 1);
    assert_eq!(log.count("POST", INSTANCE), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_stays_on_v3_when_the_server_speaks_it() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", V3_INSTANCE, |_, _| {
        envelope(0, json!("ok"))
    })
    .await;
    let cfg = config(&server).api(ApiVersion::Auto).build().unwrap();
    let client = NamingClient::new(&cfg).unwrap();
    let (key, inst) = key_and_instance(&cfg, next_port());
    client.register(&key, &inst).await.unwrap();
    client.register(&key, &inst).await.unwrap();
    assert_eq!(
        client.api_of(&cfg.server_addrs()[0]),
        Some(ApiVersion::V3),
        "remembered"
    );
    assert_eq!(log.count("POST", V3_INSTANCE), 2);
    assert_eq!(log.count("POST", INSTANCE), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_error_codes_are_errors() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", V3_INSTANCE, |_, _| {
        ResponseTemplate::new(400).set_body_raw(
            r#"{"code":10000,"message":"parameter missing","data":null}"#,
            "application/json",
        )
    })
    .await;
    let cfg = config(&server).api(ApiVersion::V3).build().unwrap();
    let client = NamingClient::new(&cfg).unwrap();
    let (key, inst) = key_and_instance(&cfg, next_port());
    let err = client.register(&key, &inst).await.unwrap_err().to_string();
    assert!(
        err.contains("400") && err.contains("parameter missing"),
        "{err}"
    );
    assert_eq!(log.count("POST", V3_INSTANCE), 1, "a 400 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_tries_v3_then_falls_back_to_v1() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", V3_LOGIN, |_, _| {
        ResponseTemplate::new(404)
    })
    .await;
    mount(&server, &log, "POST", LOGIN, |_, _| {
        ResponseTemplate::new(200).set_body_raw(
            r#"{"accessToken":"tok-v1","tokenTtl":18000,"globalAdmin":true}"#,
            "application/json",
        )
    })
    .await;
    mount(&server, &log, "POST", V3_INSTANCE, |_, _| {
        envelope(0, json!("ok"))
    })
    .await;
    let cfg = config(&server)
        .api(ApiVersion::V3)
        .username("nacos")
        .password("pw")
        .build()
        .unwrap();
    let client = NamingClient::new(&cfg).unwrap();
    let (key, inst) = key_and_instance(&cfg, next_port());
    client.register(&key, &inst).await.unwrap();
    assert_eq!(log.count("POST", V3_LOGIN), 1);
    assert_eq!(log.count("POST", LOGIN), 1);
    let reg = &log.of("POST", V3_INSTANCE)[0];
    assert_eq!(reg.query("accessToken").as_deref(), Some("tok-v1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_uses_v3_when_the_server_has_it() {
    let server = mock_server().await;
    let log = Log::default();
    mount(&server, &log, "POST", V3_LOGIN, |_, _| {
        ResponseTemplate::new(200).set_body_raw(
            r#"{"accessToken":"tok-v3","tokenTtl":18000,"globalAdmin":true,"username":"nacos"}"#,
            "application/json",
        )
    })
    .await;
    mount(&server, &log, "POST", V3_INSTANCE, |_, _| {
        envelope(0, json!("ok"))
    })
    .await;
    let cfg = config(&server)
        .api(ApiVersion::Auto)
        .username("nacos")
        .password("pw")
        .build()
        .unwrap();
    let client = NamingClient::new(&cfg).unwrap();
    let (key, inst) = key_and_instance(&cfg, next_port());
    client.register(&key, &inst).await.unwrap();
    assert_eq!(log.count("POST", V3_LOGIN), 1);
    assert_eq!(log.count("POST", LOGIN), 0);
    let reg = &log.of("POST", V3_INSTANCE)[0];
    assert_eq!(reg.query("accessToken").as_deref(), Some("tok-v3"));
}
