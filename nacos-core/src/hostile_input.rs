//! Property tests over every parser that reads outside input: the `NACOS_*` variables,
//! beat answers, the v3 envelope, login answers, instance lists, `/proc` tables and
//! `SigCgt`. None may panic; a refused variable names itself and never echoes a password.

use proptest::prelude::*;

use crate::error::Error;
use crate::settings::ConfigBuilder;

/// Every variable the configuration reads.
const VARIABLES: [&str; 31] = [
    "NACOS_SERVER_ADDR",
    "NACOS_CLIENT_SERVER_ADDRESS",
    "NACOS_CONTEXT_PATH",
    "NACOS_NAMESPACE",
    "NACOS_GROUP",
    "NACOS_SERVICE_NAME",
    "NACOS_CLUSTER_NAME",
    "NACOS_IP",
    "NACOS_PORT",
    "NACOS_NETWORK_INTERFACE",
    "NACOS_PREFERRED_NETWORKS",
    "NACOS_WEIGHT",
    "NACOS_METADATA",
    "NACOS_EPHEMERAL",
    "NACOS_INSTANCE_ENABLED",
    "NACOS_REGISTER_ENABLED",
    "NACOS_HEARTBEAT_INTERVAL",
    "NACOS_HEARTBEAT_TIMEOUT",
    "NACOS_IP_DELETE_TIMEOUT",
    "NACOS_USERNAME",
    "NACOS_PASSWORD",
    "NACOS_API",
    "NACOS_DEREGISTER_GRACE",
    "NACOS_DEREGISTER_QUIET",
    "NACOS_DEREGISTER_GRACE_MAX",
    "NACOS_PROBE_PATHS",
    "NACOS_REQUEST_TIMEOUT",
    "NACOS_HANDLE_SIGNALS",
    "NACOS_CLIENT_PASSWORD",
    "NACOS_IP_TYPE",
    "NACOS_DISCOVERY_REFRESH",
];

/// Text a user might put in a variable: printable noise, numbers, JSON-ish and URL-ish.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[0-9.:/\\[\\]a-z,=-]{0,30}",
        "\\{[\"a-z:,= ]{0,30}\\}?",
        "(https?://)?[a-z0-9.\\[\\]:]{0,20}(:[0-9]{0,6})?(,[a-z0-9.:]{0,10}){0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_variable_value_parses_or_names_the_variable(
        variable in proptest::sample::select(&VARIABLES[..]),
        value in text(),
        password in "[a-zA-Z0-9]{12}",
    ) {
        let lookup = |name: &str| match name {
            n if n == variable => Some(value.clone()),
            "NACOS_SERVICE_NAME" => Some("svc".to_owned()),
            "NACOS_PASSWORD" => Some(password.clone()),
            _ => None,
        };
        let result = ConfigBuilder::from_lookup(lookup).and_then(ConfigBuilder::build);
        if let Err(err) = result {
            let text = err.to_string();
            match &err {
                Error::Config { variable: named, .. } | Error::Missing { variable: named, .. } => {
                    prop_assert!(named.starts_with("NACOS_"), "{}", text);
                }
                other => prop_assert!(false, "not a configuration error: {other:?}"),
            }
            prop_assert!(!text.contains(&password), "{}", text);
            let debug = format!("{err:?}");
            prop_assert!(!debug.contains(&password), "{}", debug);
        }
    }

    #[test]
    fn beat_and_list_answers_never_panic(body in ".{0,200}") {
        let _ = crate::client::v1::beat_result("s", &body);
        let _ = crate::client::v1::instance_list("s", &body);
        let _ = crate::client::v3::beat_result("s", &body);
        let _ = crate::client::v3::instance_list("s", &body, true);
        let _ = crate::client::v3::expect_ok("s", &body);
    }

    #[test]
    fn json_shaped_answers_never_panic(
        code in prop_oneof![Just("0".to_owned()), Just("21003".to_owned()), "-?[0-9]{1,25}", Just("\"x\"".to_owned())],
        interval in prop_oneof![Just("null".to_owned()), "-?[0-9]{1,22}", Just("1e400".to_owned())],
        data in prop_oneof![Just("null".to_owned()), Just("[]".to_owned()), Just("[{\"ip\":\"1.2.3.4\",\"port\":70000}]".to_owned()), Just("[{\"ip\":\"h\",\"port\":1,\"weight\":\"x\"}]".to_owned())],
    ) {
        let beat = format!(r#"{{"clientBeatInterval":{interval},"code":{code},"lightBeatEnabled":true}}"#);
        let _ = crate::client::v1::beat_result("s", &beat);
        let envelope = format!(r#"{{"code":{code},"message":"m","data":{data}}}"#);
        let _ = crate::client::v3::beat_result("s", &envelope);
        let _ = crate::client::v3::instance_list("s", &envelope, false);
        let hosts = format!(r#"{{"hosts":{data}}}"#);
        let _ = crate::client::v1::instance_list("s", &hosts);
    }

    #[test]
    fn login_answers_never_panic_nor_echo_the_token(
        token in "[A-Za-z0-9._-]{8,40}",
        ttl in prop_oneof![Just("18000".to_owned()), "-?[0-9]{1,25}", Just("\"x\"".to_owned()), Just("null".to_owned())],
        cut in 0usize..80,
    ) {
        let body = format!(r#"{{"accessToken":"{token}","tokenTtl":{ttl},"globalAdmin":true}}"#);
        let body: String = body.chars().take(cut.max(1)).collect();
        if let Err(err) = crate::client::auth::parse_login("s", &body) {
            let text = crate::error::Chain(&err).to_string();
            prop_assert!(!text.contains(&token), "{}", text);
        }
    }

    #[test]
    fn proc_tables_never_panic(table in "(.{0,60}\n){0,6}", v6 in any::<bool>()) {
        #[cfg(target_os = "linux")]
        let _ = crate::listener::procfs::parse_table(&table, v6, |_| true);
        let _ = (table, v6);
    }

    #[test]
    fn proc_status_never_panics(status in "(SigCgt:\t?[0-9a-fA-Fx ]{0,20}\n)?.{0,40}") {
        let _ = crate::signals::caught_mask(&status);
    }
}
