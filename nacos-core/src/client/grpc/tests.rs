//! Protocol tests of the gRPC transport against a fake Nacos server.
//!
//! The fake ([`Fake`]) is a real tonic server on `127.0.0.1:0` serving the two Nacos
//! services, `/Request/request` (unary) and `/BiRequestStream/requestBiStream` (bi-stream),
//! with the crate's own [`Payload`]. It behaves like a Nacos server just enough for the
//! client's set-up to complete: `ServerCheckRequest` answers a `connectionId`, and
//! `HealthCheckRequest` is refused (`errorCode` 301) on a connection until its
//! `ConnectionSetupRequest` arrived on the stream. Every other request gets a `resultCode`
//! 200 answer unless the test scripted another one ([`Fake::script`]).
//!
//! It records every payload it receives, in order, with the TCP connection (the client's
//! address) it came on and whether it came on the stream ([`Seen`]); it lets a test push
//! server requests down the latest stream ([`Fake::push`]) and end that stream
//! ([`Fake::end_stream`]), which the client sees as a lost connection.
//!
//! The client under test is a [`NamingClient`] with `api(ApiVersion::Grpc)` whose only
//! server is `127.0.0.1:1` with a gRPC port offset that lands on the fake's port.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

use super::messages::{
    BATCH_INSTANCE, INSTANCE, NOTIFY_SUBSCRIBER, PERSISTENT_INSTANCE, SERVICE_QUERY, SUBSCRIBE,
};
use crate::client::NamingClient;
use crate::error::{Error, excerpt};
use crate::instance::{Instance, ServiceKey};
use crate::remote::messages::{
    CLIENT_DETECTION, CONNECT_RESET, CONNECTION_SETUP, HEALTH_CHECK, SERVER_CHECK, SETUP_ACK,
    ServerRequest, answer_type,
};
use crate::remote::parse_response;
use crate::remote::proto::Payload;
use crate::settings::{ApiVersion, Config};

/// How long a test waits for something the fake should see.
const WAIT: Duration = Duration::from_secs(10);

/// One payload the fake received.
#[derive(Clone, Debug)]
struct Seen {
    /// The client's address: one per TCP connection.
    conn: SocketAddr,
    /// On the bi-stream (else a unary request).
    on_stream: bool,
    kind: String,
    body: Vec<u8>,
    /// When the fake received it.
    at: std::time::Instant,
}

impl Seen {
    /// The body as JSON (`null` when it is not JSON).
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn unary(&self, kind: &str) -> bool {
        !self.on_stream && self.kind == kind
    }

    fn streamed(&self, kind: &str) -> bool {
        self.on_stream && self.kind == kind
    }

    /// A naming request (the kinds the redo and the callers send).
    fn naming(&self) -> bool {
        !self.on_stream
            && [INSTANCE, BATCH_INSTANCE, SUBSCRIBE, SERVICE_QUERY].contains(&&*self.kind)
    }
}

/// An answer a test scripts for the next request of a kind.
enum Answer {
    Body {
        kind: String,
        body: Vec<u8>,
    },
    Status(Status),
    /// The usual answer, after a pause (a server stopped for a while).
    Delayed(Duration),
}

impl Answer {
    fn body(kind: &str, body: impl Into<Vec<u8>>) -> Self {
        Answer::Body {
            kind: kind.to_owned(),
            body: body.into(),
        }
    }

    /// An `ErrorResponse` with `errorCode` `code`.
    fn error(code: i64, message: &str) -> Self {
        Answer::body(
            "ErrorResponse",
            json!({"resultCode": 500, "errorCode": code, "message": message, "success": false})
                .to_string(),
        )
    }
}

type Outbound = mpsc::Sender<std::result::Result<Payload, Status>>;

struct State {
    log: watch::Sender<Vec<Seen>>,
    scripted: Mutex<HashMap<String, VecDeque<Answer>>>,
    /// Every stream opened, with the sender of its server half (`None` once ended).
    streams: Mutex<Vec<(SocketAddr, Option<Outbound>)>>,
    /// The abilities a Nacos 2.3+ server announces: `supportAbilityNegotiation` in its
    /// `ServerCheckResponse`, then a `SetupAckRequest` with this table after the set-up.
    abilities: Mutex<Option<Value>>,
    /// The configs a `ConfigQueryRequest` gets by data id (any other: not found, error 300).
    configs: Mutex<HashMap<String, String>>,
}

impl State {
    /// Logs `payload`; returns whether `conn`'s `ConnectionSetupRequest` came before it
    /// (decided as it is logged, so that the log shows what the answer saw).
    fn record(&self, conn: SocketAddr, on_stream: bool, payload: &Payload) -> bool {
        let seen = Seen {
            conn,
            on_stream,
            kind: payload.kind().to_owned(),
            body: payload.json().to_vec(),
            at: std::time::Instant::now(),
        };
        let mut set_up = false;
        self.log.send_modify(|log| {
            set_up = log
                .iter()
                .any(|s| s.conn == conn && s.streamed(CONNECTION_SETUP));
            log.push(seen);
        });
        set_up
    }

    /// The answer scripted for the next request of `kind`, if any.
    fn scripted(&self, kind: &str) -> Option<Answer> {
        self.scripted
            .lock()
            .unwrap()
            .get_mut(kind)
            .and_then(VecDeque::pop_front)
    }

    /// The answer to `request`, from a connection `set_up` or not, `scripted` or the usual.
    fn answer(
        &self,
        scripted: Option<Answer>,
        set_up: bool,
        request: &Payload,
    ) -> std::result::Result<Payload, Status> {
        let kind = request.kind().to_owned();
        match scripted {
            Some(Answer::Body { kind, body }) => {
                return Ok(Payload::new(&kind, body, HashMap::new()));
            }
            Some(Answer::Status(status)) => return Err(status),
            Some(Answer::Delayed(_)) | None => {}
        }
        let asked: Value = serde_json::from_slice(request.json()).unwrap_or(Value::Null);
        let mut body = json!({
            "resultCode": 200, "errorCode": 0, "success": true,
            "requestId": asked["requestId"].clone(),
        });
        match kind.as_str() {
            SERVER_CHECK => {
                body["connectionId"] = json!(format!("conn-{}", fastrand::u64(..)));
                body["supportAbilityNegotiation"] = json!(self.abilities.lock().unwrap().is_some());
            }
            HEALTH_CHECK if !set_up => {
                let refused = json!({"resultCode": 500, "errorCode": 301,
                    "message": "Connection is unregistered.", "success": false});
                return Ok(Payload::new(
                    "ErrorResponse",
                    refused.to_string().into_bytes(),
                    HashMap::new(),
                ));
            }
            "ConfigQueryRequest" => {
                let data_id = asked["dataId"].as_str().unwrap_or_default();
                match self.configs.lock().unwrap().get(data_id) {
                    Some(content) => body["content"] = json!(content),
                    None => {
                        body["resultCode"] = json!(500);
                        body["errorCode"] = json!(300);
                        body["success"] = json!(false);
                    }
                }
            }
            SUBSCRIBE | SERVICE_QUERY => {
                body["serviceInfo"] = json!({
                    "name": asked["serviceName"].clone(),
                    "groupName": asked["groupName"].clone(),
                    "hosts": [],
                });
            }
            _ => {}
        }
        Ok(Payload::new(
            &answer_type(&kind),
            body.to_string().into_bytes(),
            HashMap::new(),
        ))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `/Request/request`.
#[derive(Clone)]
struct RequestService(Arc<State>);

impl tonic::server::NamedService for RequestService {
    const NAME: &'static str = "Request";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for RequestService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Payload, Payload>::default());
            Ok(grpc.unary(Unary(state), request).await)
        })
    }
}

struct Unary(Arc<State>);

impl tonic::server::UnaryService<Payload> for Unary {
    type Response = Payload;
    type Future = BoxFuture<std::result::Result<tonic::Response<Payload>, Status>>;

    fn call(&mut self, request: tonic::Request<Payload>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let conn = request.remote_addr().expect("the client's address");
            let payload = request.into_inner();
            // The answer is chosen before the request shows in the log: a test that saw
            // a request and scripts the next answer scripts it for a later one.
            let scripted = state.scripted(payload.kind());
            let set_up = state.record(conn, false, &payload);
            if let Some(Answer::Delayed(pause)) = &scripted {
                tokio::time::sleep(*pause).await;
            }
            state
                .answer(scripted, set_up, &payload)
                .map(tonic::Response::new)
        })
    }
}

/// `/BiRequestStream/requestBiStream`.
#[derive(Clone)]
struct StreamService(Arc<State>);

impl tonic::server::NamedService for StreamService {
    const NAME: &'static str = "BiRequestStream";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for StreamService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Payload, Payload>::default());
            Ok(grpc.streaming(Bidi(state), request).await)
        })
    }
}

struct Bidi(Arc<State>);

impl tonic::server::StreamingService<Payload> for Bidi {
    type Response = Payload;
    type ResponseStream = ReceiverStream<std::result::Result<Payload, Status>>;
    type Future = BoxFuture<std::result::Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Payload>>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let conn = request.remote_addr().expect("the client's address");
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(16);
            state.streams.lock().unwrap().push((conn, Some(tx)));
            tokio::spawn(async move {
                while let Ok(Some(payload)) = inbound.message().await {
                    let _ = state.record(conn, true, &payload);
                    let abilities = state.abilities.lock().unwrap().clone();
                    if let (CONNECTION_SETUP, Some(table)) = (payload.kind(), abilities) {
                        let ack = json!({"abilityTable": table, "requestId": "1", "headers": {}});
                        let ack =
                            Payload::new(SETUP_ACK, ack.to_string().into_bytes(), HashMap::new());
                        // The stream's sender from the table (held here, it would keep
                        // the stream open past `end_stream`).
                        let tx = state
                            .streams
                            .lock()
                            .unwrap()
                            .iter()
                            .rev()
                            .find(|(c, _)| *c == conn)
                            .and_then(|(_, tx)| tx.clone());
                        if let Some(tx) = tx {
                            let _ = tx.send(Ok(ack)).await;
                        }
                    }
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        })
    }
}

/// The fake Nacos gRPC server (see the module docs).
struct Fake {
    port: u16,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            log: watch::Sender::new(Vec::new()),
            scripted: Mutex::new(HashMap::new()),
            streams: Mutex::new(Vec::new()),
            abilities: Mutex::new(None),
            configs: Mutex::new(HashMap::new()),
        });
        let router = tonic::transport::Server::builder()
            .add_service(RequestService(state.clone()))
            .add_service(StreamService(state.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            drop(router.serve_with_incoming(incoming).await);
        });
        Fake {
            port,
            state,
            server,
        }
    }

    /// What a client error names as the server.
    fn name(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// A client whose only server's gRPC port is the fake's.
    fn client(&self) -> Arc<NamingClient> {
        self.client_with_timeout(Duration::from_secs(3))
    }

    /// The same, with another request timeout. Its own services are not watched (the
    /// fake lists no instance; see [`Fake::checking_client`]).
    fn client_with_timeout(&self, timeout: Duration) -> Arc<NamingClient> {
        self.client_with(timeout, false)
    }

    /// A client that watches the services it registers instances of
    /// (`NACOS_INSTANCE_CHECK`).
    fn checking_client(&self) -> Arc<NamingClient> {
        self.client_with(Duration::from_secs(3), true)
    }

    fn client_with(&self, timeout: Duration, instance_check: bool) -> Arc<NamingClient> {
        let config = Config::builder()
            .service_name("svc")
            .server_addr("127.0.0.1:1")
            .api(ApiVersion::Grpc)
            .grpc_port_offset(self.port - 1)
            .request_timeout(timeout)
            .instance_check(instance_check)
            .build()
            .unwrap();
        NamingClient::new(&config).unwrap()
    }

    /// The next request of `kind` gets `answer`.
    fn script(&self, kind: &str, answer: Answer) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .entry(kind.to_owned())
            .or_default()
            .push_back(answer);
    }

    fn log(&self) -> Vec<Seen> {
        self.state.log.borrow().clone()
    }

    /// Waits until `found` finds something in the log; panics after [`WAIT`].
    async fn wait<T>(&self, what: &str, mut found: impl FnMut(&[Seen]) -> Option<T>) -> T {
        let mut rx = self.state.log.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let hit = found(&rx.borrow_and_update());
            if let Some(hit) = hit {
                return hit;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, rx.changed()).await,
                Ok(Ok(()))
            ) {
                panic!(
                    "no {what} after {WAIT:?}; the fake saw:\n{}",
                    summary(&self.log())
                );
            }
        }
    }

    /// Waits for a `ServerCheckRequest` on a connection made after `old`: the new one.
    async fn reconnection(&self, old: SocketAddr) -> SocketAddr {
        self.wait("reconnection", |log| {
            let start = log.iter().position(|s| s.conn == old)?;
            log[start..]
                .iter()
                .find(|s| s.unary(SERVER_CHECK) && s.conn != old)
                .map(|s| s.conn)
        })
        .await
    }

    /// The latest stream still open.
    fn stream(&self) -> (SocketAddr, Outbound) {
        let streams = self.state.streams.lock().unwrap();
        streams
            .iter()
            .rev()
            .find_map(|(conn, tx)| tx.clone().map(|tx| (*conn, tx)))
            .expect("an open stream")
    }

    /// Pushes a server request down the latest stream; returns its connection.
    async fn push_payload(&self, payload: Payload) -> SocketAddr {
        let (conn, tx) = self.stream();
        tx.send(Ok(payload)).await.expect("the stream is open");
        conn
    }

    async fn push(&self, kind: &str, body: impl Into<Vec<u8>>) -> SocketAddr {
        self.push_payload(Payload::new(kind, body.into(), HashMap::new()))
            .await
    }

    /// Ends the latest stream (the server half closes: the client sees its connection
    /// lost); returns its connection.
    fn end_stream(&self) -> SocketAddr {
        let mut streams = self.state.streams.lock().unwrap();
        let (conn, tx) = streams
            .iter_mut()
            .rev()
            .find(|(_, tx)| tx.is_some())
            .expect("an open stream");
        drop(tx.take());
        *conn
    }
}

/// The log, one line per payload, for failure messages.
fn summary(log: &[Seen]) -> String {
    log.iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{i:3} :{} {} {} {}\n",
                s.conn.port(),
                if s.on_stream { "stream" } else { "unary " },
                s.kind,
                String::from_utf8_lossy(&s.body[..s.body.len().min(160)])
            )
        })
        .collect()
}

fn key(service: &str) -> ServiceKey {
    ServiceKey {
        namespace_id: "public".to_owned(),
        group_name: "DEFAULT_GROUP".to_owned(),
        service_name: service.to_owned(),
    }
}

fn instance(ip: &str, port: u16) -> Instance {
    serde_json::from_value(json!({"ip": ip, "port": port, "clusterName": "DEFAULT"})).unwrap()
}

/// Waits until the client's connection is up (and its redo done).
async fn up(client: &NamingClient) {
    let mut state = client.grpc().expect("requests go over gRPC").state();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.up))
        .await
        .expect("the connection up")
        .unwrap();
}

/// The connection the client's requests go on: that of its latest `ServerCheckRequest`.
fn current_connection(fake: &Fake) -> SocketAddr {
    fake.log()
        .iter()
        .rev()
        .find(|s| s.unary(SERVER_CHECK))
        .expect("a ServerCheckRequest")
        .conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_is_set_up_before_the_first_request() {
    let fake = Fake::start().await;
    let client = fake.client();
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    assert_eq!(client.uses_grpc(), Some(true));

    let log = fake.log();
    let text = summary(&log);
    assert!(log[0].unary(SERVER_CHECK), "{text}");
    let conn = log[0].conn;
    let setup = log
        .iter()
        .position(|s| s.streamed(CONNECTION_SETUP))
        .unwrap_or_else(|| panic!("no ConnectionSetupRequest:\n{text}"));
    let first = log
        .iter()
        .position(|s| s.unary(INSTANCE))
        .unwrap_or_else(|| panic!("no InstanceRequest:\n{text}"));
    // Before the set-up: the server check, and health checks the fake refuses.
    assert!(
        log[..setup]
            .iter()
            .all(|s| s.unary(SERVER_CHECK) || s.unary(HEALTH_CHECK)),
        "{text}"
    );
    assert!(setup < first, "{text}");
    // A health check after the set-up (the one answered 200), before the request.
    assert!(
        log[setup..first]
            .iter()
            .any(|s| s.unary(HEALTH_CHECK) && s.conn == conn),
        "{text}"
    );
    // One connection for all of it.
    assert!(log[..=first].iter().all(|s| s.conn == conn), "{text}");

    let setup = log[setup].json();
    assert_eq!(setup["labels"]["module"], "naming", "{setup}");
    assert_eq!(setup["labels"]["source"], "sdk", "{setup}");
    let request = log[first].json();
    assert_eq!(request["type"], "registerInstance", "{request}");
    assert_eq!(request["serviceName"], "orders", "{request}");
    assert_eq!(request["groupName"], "DEFAULT_GROUP", "{request}");
    assert_eq!(request["instance"]["ip"], "10.0.0.1", "{request}");
    assert_eq!(request["instance"]["port"], 8080, "{request}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requests_are_answered_and_pushed_lists_reach_the_subscription() {
    let fake = Fake::start().await;
    let client = fake.client();
    let subscribed = client
        .subscribe(&key("orders"))
        .await
        .unwrap()
        .expect("a gRPC subscription");
    let request = fake
        .wait("SubscribeServiceRequest", |log| {
            log.iter().find(|s| s.unary(SUBSCRIBE)).map(Seen::json)
        })
        .await;
    assert_eq!(request["subscribe"], true, "{request}");
    assert_eq!(request["serviceName"], "orders", "{request}");

    let push = json!({
        "requestId": "n1",
        "namespace": "public",
        "serviceInfo": {
            "name": "DEFAULT_GROUP@@orders",
            "groupName": "DEFAULT_GROUP",
            "hosts": [
                {"ip": "10.0.0.7", "port": 8080, "healthy": true, "clusterName": "DEFAULT"},
                {"ip": "10.0.0.8", "port": 8080, "healthy": true, "clusterName": "DEFAULT"},
            ],
        },
    });
    let conn = fake.push(NOTIFY_SUBSCRIBER, push.to_string()).await;
    let ack = fake
        .wait("NotifySubscriberResponse n1", |log| {
            log.iter()
                .find(|s| s.streamed("NotifySubscriberResponse") && s.json()["requestId"] == "n1")
                .cloned()
        })
        .await;
    assert_eq!(ack.conn, conn);
    assert_eq!(ack.json()["resultCode"], 200, "{}", ack.json());

    let mut rx = subscribed.rx.clone();
    let pushed = tokio::time::timeout(
        WAIT,
        rx.wait_for(|info| info.as_ref().is_some_and(|i| i.hosts.len() == 2)),
    )
    .await
    .expect("the pushed list reaches the subscription")
    .unwrap()
    .clone()
    .unwrap();
    let mut ips: Vec<&str> = pushed.hosts.iter().map(|h| h.ip.as_str()).collect();
    ips.sort_unstable();
    assert_eq!(ips, ["10.0.0.7", "10.0.0.8"]);

    fake.push(CLIENT_DETECTION, json!({"requestId": "d1"}).to_string())
        .await;
    let ack = fake
        .wait("ClientDetectionResponse d1", |log| {
            log.iter()
                .find(|s| s.streamed("ClientDetectionResponse") && s.json()["requestId"] == "d1")
                .map(Seen::json)
        })
        .await;
    assert_eq!(ack["resultCode"], 200, "{ack}");

    // The last watcher gone, the client unsubscribes.
    drop(rx);
    drop(subscribed);
    fake.wait("unsubscription", |log| {
        log.iter()
            .find(|s| s.unary(SUBSCRIBE) && s.json()["subscribe"] == false)
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_and_subscriptions_are_redone_first_on_a_new_connection() {
    let fake = Fake::start().await;
    let client = fake.client();
    client
        .register(&key("alpha"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    client
        .register(&key("alpha"), &instance("10.0.0.2", 8080))
        .await
        .unwrap();
    client
        .register(&key("beta"), &instance("10.0.0.3", 9090))
        .await
        .unwrap();
    let _subscribed = client
        .subscribe(&key("gamma"))
        .await
        .unwrap()
        .expect("a gRPC subscription");

    let old = fake.end_stream();
    let new = fake.reconnection(old).await;
    // A request made while the client reconnects goes after the redo.
    let late = tokio::spawn({
        let client = client.clone();
        async move { client.instance_list(&key("delta"), false).await }
    });
    fake.wait("the late query", |log| {
        log.iter()
            .find(|s| s.conn == new && s.unary(SERVICE_QUERY))
            .map(drop)
    })
    .await;
    late.await.unwrap().unwrap();

    let log: Vec<Seen> = fake.log().into_iter().filter(|s| s.conn == new).collect();
    let text = summary(&log);
    assert!(log[0].unary(SERVER_CHECK), "{text}");
    let setup = log
        .iter()
        .position(|s| s.streamed(CONNECTION_SETUP))
        .unwrap_or_else(|| panic!("no set-up:\n{text}"));
    let naming: Vec<&Seen> = log.iter().filter(|s| s.naming()).collect();
    let first = log.iter().position(Seen::naming).unwrap();
    assert!(setup < first, "{text}");
    assert!(naming.len() >= 4, "{text}");

    // The redo, registrations then subscriptions, before anything else.
    let mut redo: Vec<&Seen> = naming[..3].to_vec();
    redo.sort_by_key(|s| {
        s.json()["serviceName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    let [alpha, beta, gamma] = redo[..] else {
        unreachable!()
    };
    assert_eq!(alpha.kind, BATCH_INSTANCE, "{text}");
    let body = alpha.json();
    assert_eq!(body["serviceName"], "alpha", "{body}");
    assert_eq!(body["type"], "batchRegisterInstance", "{body}");
    let mut ips: Vec<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap())
        .collect();
    ips.sort_unstable();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2"], "{body}");
    assert_eq!(beta.kind, INSTANCE, "{text}");
    let body = beta.json();
    assert_eq!(body["serviceName"], "beta", "{body}");
    assert_eq!(body["type"], "registerInstance", "{body}");
    assert_eq!(body["instance"]["ip"], "10.0.0.3", "{body}");
    assert_eq!(gamma.kind, SUBSCRIBE, "{text}");
    let body = gamma.json();
    assert_eq!(body["serviceName"], "gamma", "{body}");
    assert_eq!(body["subscribe"], true, "{body}");
    assert!(naming[..2].iter().all(|s| s.kind != SUBSCRIBE), "{text}");
    assert_eq!(naming[3].kind, SERVICE_QUERY, "{text}");
    assert_eq!(naming[3].json()["serviceName"], "delta", "{text}");

    let generation = client.grpc().expect("gRPC").state().borrow().generation;
    assert_eq!(generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_errors_not_panics() {
    let fake = Fake::start().await;
    let client = fake.client();
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    let conn = current_connection(&fake);

    // Server requests the client cannot read: refused, and the connection stays.
    fake.push("NoSuchRequest", json!({"requestId": "u1"}).to_string())
        .await;
    fake.push(NOTIFY_SUBSCRIBER, "{not json").await;
    fake.push_payload(Payload::default()).await;
    fake.push(NOTIFY_SUBSCRIBER, vec![0xff, 0x00, 0xc3]).await;
    let refused = fake
        .wait("four refusals", |log| {
            let refused: Vec<Value> = log
                .iter()
                .filter(|s| s.streamed("ErrorResponse"))
                .map(Seen::json)
                .collect();
            (refused.len() >= 4).then_some(refused)
        })
        .await;
    assert_eq!(refused[0]["requestId"], "u1", "{}", refused[0]);
    assert!(refused.iter().all(|r| r["resultCode"] != 200));
    client
        .register(&key("still"), &instance("10.0.0.2", 8080))
        .await
        .unwrap();
    assert_eq!(current_connection(&fake), conn);

    // An answer that is not JSON.
    fake.script(
        INSTANCE,
        Answer::body("InstanceResponse", "<html>oops</html>"),
    );
    let error = client
        .register(&key("html"), &instance("10.0.0.3", 8080))
        .await
        .unwrap_err();
    match &error {
        Error::Protocol { server, body, .. } => {
            assert_eq!(server, &fake.name());
            assert!(body.contains("<html>oops"), "{body}");
        }
        other => panic!("not a protocol error: {other:?}"),
    }
    assert!(error.to_string().contains(&fake.name()), "{error}");

    // A gRPC error status for one call: that call fails, the connection stays.
    fake.script(INSTANCE, Answer::Status(Status::internal("boom")));
    let error = client
        .register(&key("status"), &instance("10.0.0.4", 8080))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    assert!(error.to_string().contains(&fake.name()), "{error}");

    // An answer over the 10 MiB limit: that call fails, the connection stays.
    let huge = json!({"resultCode": 200, "message": "x".repeat(11 << 20)}).to_string();
    fake.script(INSTANCE, Answer::body("InstanceResponse", huge));
    let error = client
        .register(&key("huge"), &instance("10.0.0.5", 8080))
        .await
        .unwrap_err();
    match &error {
        Error::Transport { server, .. } => assert_eq!(server, &fake.name()),
        other => panic!("not a transport error: {other:?}"),
    }
    assert!(error.to_string().contains(&fake.name()), "{error}");

    // A transport failure ends the connection: the client reconnects and works again.
    fake.script(INSTANCE, Answer::Status(Status::unavailable("gone")));
    let error = client
        .register(&key("gone"), &instance("10.0.0.7", 8080))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    let log = fake.log();
    assert!(
        !log.iter().any(|s| s.unary(SERVER_CHECK) && s.conn != conn),
        "a failed call of its own ended the connection:\n{}",
        summary(&log)
    );
    let conn = fake.reconnection(conn).await;
    client
        .register(&key("after"), &instance("10.0.0.6", 8080))
        .await
        .unwrap();
    let log = fake.log();
    assert!(
        log.iter()
            .any(|s| s.conn == conn && s.unary(INSTANCE) && s.json()["serviceName"] == "after"),
        "{}",
        summary(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_connection_answer_makes_the_client_reconnect() {
    let fake = Fake::start().await;
    let client = fake.client();
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    let old = current_connection(&fake);

    fake.script(INSTANCE, Answer::error(301, "Connection is unregistered."));
    let error = client
        .register(&key("billing"), &instance("10.0.0.2", 8080))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Refused { code: 301, .. }),
        "{error:?}"
    );

    let new = fake.reconnection(old).await;
    // The redo registers both again on the new connection.
    let mut services = fake
        .wait("the redo", |log| {
            let services: Vec<String> = log
                .iter()
                .filter(|s| s.conn == new && s.unary(INSTANCE))
                .map(|s| {
                    s.json()["serviceName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            (services.len() >= 2).then_some(services)
        })
        .await;
    services.sort();
    assert_eq!(services, ["billing", "orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_reset_is_answered_and_the_client_reconnects() {
    let fake = Fake::start().await;
    let client = fake.client();
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    let old = current_connection(&fake);

    let conn = fake
        .push(CONNECT_RESET, json!({"requestId": "r1"}).to_string())
        .await;
    assert_eq!(conn, old);
    let ack = fake
        .wait("ConnectResetResponse r1", |log| {
            log.iter()
                .find(|s| s.streamed("ConnectResetResponse") && s.json()["requestId"] == "r1")
                .cloned()
        })
        .await;
    assert_eq!(ack.conn, old);
    assert_eq!(ack.json()["resultCode"], 200, "{}", ack.json());

    let new = fake.reconnection(old).await;
    client
        .register(&key("billing"), &instance("10.0.0.2", 8080))
        .await
        .unwrap();
    let last = fake.log().into_iter().rfind(|s| s.unary(INSTANCE)).unwrap();
    assert_eq!(last.conn, new);
}

/// The answer parser's server name in the property tests.
const SERVER: &str = "grpc://10.0.0.1:9848";

/// Keys the parsers look for, so that generated objects hit them.
const KEYS: [&str; 16] = [
    "resultCode",
    "errorCode",
    "message",
    "connectionId",
    "serviceInfo",
    "hosts",
    "name",
    "groupName",
    "ip",
    "port",
    "metadata",
    "requestId",
    "namespace",
    "serverIp",
    "serverPort",
    "reachProtectionThreshold",
];

/// Any JSON value, its object keys often those the parsers read.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        proptest::sample::select(&KEYS[..]).prop_map(str::to_owned),
        "[a-zA-Z]{0,8}",
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// The answer kinds to try: real ones, the error one and noise.
fn answer_kind() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("InstanceResponse".to_owned()),
        Just("ErrorResponse".to_owned()),
        ".{0,20}",
    ]
}

/// Parses `body` both ways; an error names the server and is one of the two an answer
/// can be.
fn parse_any(kind: &str, body: &[u8]) -> std::result::Result<(), TestCaseError> {
    let _ = serde_json::from_slice::<ServerRequest>(body);
    let payload = Payload::new(kind, body.to_vec(), HashMap::new());
    if let Err(error) = parse_response(SERVER, &payload) {
        prop_assert!(
            matches!(error, Error::Protocol { .. } | Error::Refused { .. }),
            "{:?}",
            error
        );
        prop_assert!(error.to_string().contains(SERVER), "{}", error);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bytes_parse_without_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        kind in answer_kind(),
    ) {
        parse_any(&kind, &body)?;
    }

    #[test]
    fn any_text_parses_without_panic(body in ".{0,256}", kind in answer_kind()) {
        parse_any(&kind, body.as_bytes())?;
    }

    #[test]
    fn any_json_parses_without_panic(value in json_value(), kind in answer_kind()) {
        parse_any(&kind, &serde_json::to_vec(&value).unwrap())?;
        // As the body of a server push too, under the keys it is read from.
        for field in ["serviceInfo", "hosts", "serverPort", "requestId"] {
            let wrapped = json!({ field: value.clone(), "requestId": "1" });
            parse_any(&kind, &serde_json::to_vec(&wrapped).unwrap())?;
        }
    }

    #[test]
    fn a_response_round_trips_its_codes(
        result_code in prop_oneof![Just(200_i64), any::<i64>()],
        error_code in prop_oneof![Just(0_i64), Just(301), Just(403), any::<i64>()],
        message in proptest::option::of(".{0,300}"),
        error_kind in any::<bool>(),
    ) {
        let kind = if error_kind { "ErrorResponse" } else { "InstanceResponse" };
        let body = json!({
            "resultCode": result_code, "errorCode": error_code, "message": message,
            "requestId": "7", "success": result_code == 200,
        });
        let payload = Payload::new(kind, serde_json::to_vec(&body).unwrap(), HashMap::new());
        match parse_response(SERVER, &payload) {
            Ok(response) => {
                prop_assert!(result_code == 200 && !error_kind);
                prop_assert_eq!(response.result_code, result_code);
                prop_assert_eq!(response.error_code, error_code);
                prop_assert_eq!(response.message, message);
            }
            Err(Error::Refused { server, code, message: shown }) => {
                prop_assert!(result_code != 200 || error_kind);
                prop_assert_eq!(server, SERVER);
                prop_assert_eq!(code, error_code);
                prop_assert_eq!(shown, excerpt(message.as_deref().unwrap_or(kind)));
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}

/// The `BatchInstanceRequest`s the fake saw, as (`type`, the instances' ips, sorted).
fn batches(fake: &Fake) -> Vec<(String, Vec<String>)> {
    fake.log()
        .iter()
        .filter(|s| s.unary(BATCH_INSTANCE))
        .map(|s| {
            let body = s.json();
            let mut ips: Vec<String> = body["instances"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|i| i["ip"].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            ips.sort_unstable();
            (body["type"].as_str().unwrap_or_default().to_owned(), ips)
        })
        .collect()
}

/// Registers `ips` (port 8080) of `service`, all at once; says which calls succeeded.
async fn try_register_all(client: &Arc<NamingClient>, service: &str, ips: &[String]) -> Vec<bool> {
    let calls = ips.iter().map(|ip| {
        let client = client.clone();
        let ip = ip.clone();
        let service = service.to_owned();
        tokio::spawn(async move { client.register(&key(&service), &instance(&ip, 8080)).await })
    });
    let mut ok = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        ok.push(call.await.unwrap().is_ok());
    }
    ok
}

/// Registers `ips` of `service` all at once; every call must succeed.
async fn register_all(client: &Arc<NamingClient>, service: &str, ips: &[String]) {
    let ok = try_register_all(client, service, ips).await;
    assert!(ok.iter().all(|ok| *ok), "a registration failed: {ok:?}");
}

/// The first registration of `sidecar`, alone (it goes out at once, without gathering).
async fn register_first(client: &NamingClient, ip: &str) {
    client
        .register(&key("sidecar"), &instance(ip, 8080))
        .await
        .unwrap();
}

/// A batch's answer saying what the server did (`type`).
fn batch_answer(done: &str) -> Answer {
    Answer::body(
        "BatchInstanceResponse",
        json!({"resultCode": 200, "errorCode": 0, "success": true, "type": done}).to_string(),
    )
}

fn ips(range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| format!("10.1.{}.{}", i / 200, i % 200 + 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_registrations_of_one_service_goes_out_in_one_batch() {
    let fake = Fake::start().await;
    let client = fake.client();
    // The first registration goes at once, alone.
    register_first(&client, "10.0.0.1").await;
    let burst = ips(0..300);
    register_all(&client, "sidecar", &burst).await;

    let sent = batches(&fake);
    let text = summary(&fake.log());
    // The burst in one request (two when the scheduler paused the burst for 20 ms), the
    // last with every instance, the first one's too (the server's batch may replace the
    // set).
    assert!(sent.len() <= 2, "{text}");
    assert!(sent.iter().all(|(kind, _)| kind == "batchRegisterInstance"));
    assert_eq!(sent.last().unwrap().1.len(), 301, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_not_sent_again_by_every_registration_waiting_behind_it() {
    let fake = Fake::start().await;
    let client = fake.client();
    register_first(&client, "10.0.0.1").await;
    fake.script(BATCH_INSTANCE, Answer::error(500, "server busy"));
    let burst = ips(0..100);
    let ok = try_register_all(&client, "sidecar", &burst).await;

    let sent = batches(&fake);
    let text = summary(&fake.log());
    // The first batch failed: the registrations it carried fail with it, none sends it
    // again; a registration that came after it may go in a later batch.
    let failed = ok.iter().filter(|ok| !**ok).count();
    assert_eq!(failed, sent[0].1.len() - 1, "{text}");
    assert!(failed > 0, "{text}");
    assert!(sent.len() <= 3, "no resend per waiter:\n{text}");

    // Their retries go out together, and succeed.
    register_all(&client, "sidecar", &burst).await;
    let sent = batches(&fake);
    assert_eq!(
        sent.last().unwrap().1.len(),
        101,
        "{}",
        summary(&fake.log())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_several_instances_is_deregistered_by_name_where_the_server_takes_it() {
    // The fake takes a batch of type `deregisterInstance`, as r-nacos does.
    let fake = Fake::start().await;
    let client = fake.client();
    let all = ips(0..3);
    register_first(&client, &all[0]).await;
    register_all(&client, "sidecar", &all[1..]).await;
    client
        .deregister(&key("sidecar"), &instance(&all[1], 8080))
        .await
        .unwrap();
    client
        .deregister(&key("sidecar"), &instance(&all[2], 8080))
        .await
        .unwrap();

    let sent = batches(&fake);
    let text = summary(&fake.log());
    assert_eq!(
        sent,
        [
            ("batchRegisterInstance".to_owned(), all.clone()),
            ("deregisterInstance".to_owned(), vec![all[1].clone()]),
            ("deregisterInstance".to_owned(), vec![all[2].clone()]),
        ],
        "no resend of the rest of the set:\n{text}"
    );
    // The last one goes by its own request.
    client
        .deregister(&key("sidecar"), &instance(&all[0], 8080))
        .await
        .unwrap();
    let last = fake
        .log()
        .into_iter()
        .rev()
        .find(|s| s.unary(INSTANCE))
        .unwrap();
    assert_eq!(last.json()["type"], "deregisterInstance");
    assert_eq!(last.json()["instance"]["ip"], all[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_batches_replace_the_set_the_rest_of_it_is_sent_once_refused() {
    // The official servers: a batch of type `deregisterInstance` is refused.
    let fake = Fake::start().await;
    let client = fake.client();
    let all = ips(0..4);
    register_first(&client, &all[0]).await;
    register_all(&client, "sidecar", &all[1..]).await;
    fake.script(
        BATCH_INSTANCE,
        Answer::error(500, "Unsupported request type deregisterInstance"),
    );
    client
        .deregister(&key("sidecar"), &instance(&all[3], 8080))
        .await
        .unwrap();
    // Learnt: the next one sends the rest straight away.
    client
        .deregister(&key("sidecar"), &instance(&all[2], 8080))
        .await
        .unwrap();

    let sent = batches(&fake);
    let text = summary(&fake.log());
    assert_eq!(
        sent,
        [
            ("batchRegisterInstance".to_owned(), all.clone()),
            ("deregisterInstance".to_owned(), vec![all[3].clone()]),
            ("batchRegisterInstance".to_owned(), all[..3].to_vec()),
            ("batchRegisterInstance".to_owned(), all[..2].to_vec()),
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_registers_batches_instance_by_instance_gets_only_the_new_ones() {
    let fake = Fake::start().await;
    let client = fake.client();
    let all = ips(0..6);
    register_first(&client, &all[0]).await;
    // r-nacos answers a batch as `registerInstance`: each instance was registered alone.
    fake.script(BATCH_INSTANCE, batch_answer("registerInstance"));
    register_all(&client, "sidecar", &all[1..3]).await;
    register_all(&client, "sidecar", &all[3..]).await;

    let sent = batches(&fake);
    let text = summary(&fake.log());
    assert_eq!(
        sent,
        [
            ("batchRegisterInstance".to_owned(), all[..3].to_vec()),
            ("batchRegisterInstance".to_owned(), all[3..].to_vec()),
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_a_batch_answer_says_it_replaced_the_set_every_change_sends_it_whole() {
    let fake = Fake::start().await;
    let client = fake.client();
    let all = ips(0..4);
    register_first(&client, &all[0]).await;
    // The official servers answer `batchRegisterInstance`.
    fake.script(BATCH_INSTANCE, batch_answer("batchRegisterInstance"));
    register_all(&client, "sidecar", &all[1..2]).await;
    register_all(&client, "sidecar", &all[2..]).await;
    // And a deregistration sends the rest, without trying the batch type they refuse.
    client
        .deregister(&key("sidecar"), &instance(&all[3], 8080))
        .await
        .unwrap();

    let sent = batches(&fake);
    let text = summary(&fake.log());
    assert_eq!(
        sent,
        [
            ("batchRegisterInstance".to_owned(), all[..2].to_vec()),
            ("batchRegisterInstance".to_owned(), all.clone()),
            ("batchRegisterInstance".to_owned(), all[..3].to_vec()),
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistrations_at_once_go_out_together() {
    // A SIGTERM deregisters every instance at once; the fake takes batch deregistrations.
    let fake = Fake::start().await;
    let client = fake.client();
    let all = ips(0..60);
    register_first(&client, &all[0]).await;
    register_all(&client, "sidecar", &all[1..]).await;
    let leaving = all[1..].iter().map(|ip| {
        let client = client.clone();
        let ip = ip.clone();
        tokio::spawn(async move {
            client
                .deregister(&key("sidecar"), &instance(&ip, 8080))
                .await
        })
    });
    for call in leaving.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }

    let sent = batches(&fake);
    let text = summary(&fake.log());
    let deregistrations: Vec<&Vec<String>> = sent
        .iter()
        .filter(|(kind, _)| kind == "deregisterInstance")
        .map(|(_, ips)| ips)
        .collect();
    // Those gone while one request is out go in the next (how many go together depends
    // on the scheduling of the 59 calls; one request each is what this guards against).
    assert!(deregistrations.len() <= 59 / 2, "{text}");
    let mut off: Vec<String> = deregistrations.into_iter().flatten().cloned().collect();
    off.sort_unstable();
    let mut want = all[1..].to_vec();
    want.sort_unstable();
    assert_eq!(off, want, "{text}");
    assert_eq!(
        sent.iter()
            .filter(|(kind, _)| kind != "deregisterInstance")
            .count(),
        1
    );
}

/// Whether the fake saw a `ServerCheckRequest` on a connection other than `old` after
/// `old`'s first payload: a reconnection.
fn reconnected(fake: &Fake, old: SocketAddr) -> bool {
    let log = fake.log();
    let start = log.iter().position(|s| s.conn == old).unwrap_or(0);
    log[start..]
        .iter()
        .any(|s| s.unary(SERVER_CHECK) && s.conn != old)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_keeps_the_connection() {
    let fake = Fake::start().await;
    let client = fake.client_with_timeout(Duration::from_millis(300));
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    let old = current_connection(&fake);

    // The server stops answering for a second (a JVM pause): the request times out...
    fake.script(INSTANCE, Answer::Delayed(Duration::from_secs(1)));
    let error = client
        .register(&key("billing"), &instance("10.0.0.2", 8080))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
    // ... and the next request goes on the same connection once the server is back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client
        .register(&key("billing"), &instance("10.0.0.2", 8080))
        .await
        .unwrap();
    assert!(!reconnected(&fake, old), "{}", summary(&fake.log()));
    assert_eq!(current_connection(&fake), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_is_waited_for_by_health_checks_in_a_row() {
    let fake = Fake::start().await;
    let client = fake.client_with_timeout(Duration::from_millis(300));
    up(&client).await;
    let old = current_connection(&fake);
    let checks_before = |log: &[Seen]| {
        log.iter()
            .filter(|s| s.conn == old && s.unary(HEALTH_CHECK))
            .count()
    };
    let before = checks_before(&fake.log());
    // Two health checks unanswered in time, then the server answers again.
    for _ in 1..super::HEALTH_CHECK_TRIES {
        fake.script(HEALTH_CHECK, Answer::Delayed(Duration::from_millis(600)));
    }
    fake.wait("the third health check", |log| {
        (checks_before(log) >= before + super::HEALTH_CHECK_TRIES as usize).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!reconnected(&fake, old), "{}", summary(&fake.log()));
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    assert_eq!(current_connection(&fake), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_failing_in_a_row_end_the_connection() {
    let fake = Fake::start().await;
    let client = fake.client_with_timeout(Duration::from_millis(300));
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    let old = current_connection(&fake);
    for _ in 0..super::HEALTH_CHECK_TRIES {
        fake.script(HEALTH_CHECK, Answer::Delayed(Duration::from_secs(2)));
    }
    let new = fake.reconnection(old).await;
    // The registration is sent again on the new connection.
    fake.wait("the redo", |log| {
        log.iter()
            .find(|s| s.conn == new && s.unary(INSTANCE))
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_over_4_mib_is_received() {
    let fake = Fake::start().await;
    let client = fake.client();
    up(&client).await;
    // 6,000 instances with 1 KB of metadata each: about 6.5 MB, over tonic's default
    // 4 MiB limit and under Nacos's 10 MiB.
    let padding = "x".repeat(1000);
    let hosts: Vec<Value> = (0..6000u32)
        .map(|i| {
            json!({"ip": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                "port": 8080, "healthy": true, "enabled": true, "weight": 1.0,
                "clusterName": "DEFAULT", "metadata": {"padding": padding}})
        })
        .collect();
    let body = json!({"resultCode": 200, "errorCode": 0, "success": true,
        "serviceInfo": {"name": "big", "groupName": "DEFAULT_GROUP", "hosts": hosts}})
    .to_string();
    assert!(body.len() > 4 << 20 && body.len() < super::MAX_MESSAGE_SIZE);
    let old = current_connection(&fake);
    fake.script(
        SERVICE_QUERY,
        Answer::body(&answer_type(SERVICE_QUERY), body),
    );
    let list = client.instance_list(&key("big"), false).await.unwrap();
    assert_eq!(list.len(), 6000);
    assert_eq!(current_connection(&fake), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_fails_on_a_new_connection_is_tried_again() {
    let fake = Fake::start().await;
    let client = fake.client();
    let _subscribed = client
        .subscribe(&key("orders"))
        .await
        .unwrap()
        .expect("a gRPC subscription");
    // The redo's subscription is refused twice, then taken.
    fake.script(SUBSCRIBE, Answer::error(500, "server busy"));
    fake.script(SUBSCRIBE, Answer::error(500, "server busy"));
    let old = fake.end_stream();
    let new = fake.reconnection(old).await;
    let tries = fake
        .wait("the subscription tried until it holds", |log| {
            let tries = log
                .iter()
                .filter(|s| s.conn == new && s.unary(SUBSCRIBE))
                .count();
            (tries >= 3).then_some(tries)
        })
        .await;
    assert_eq!(tries, 3, "{}", summary(&fake.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_subscription_then_a_new_one_leaves_the_service_subscribed() {
    let fake = Fake::start().await;
    let client = fake.client();
    up(&client).await;
    for round in 0..20u64 {
        let service = format!("orders-{round}");
        fake.script(SUBSCRIBE, Answer::error(500, "server busy"));
        let first = client.subscribe(&key(&service)).await;
        assert!(
            first.is_err(),
            "round {round}: {:?}\n{}",
            first.map(|s| s.is_some()),
            summary(&fake.log())
        );
        // The failed watch's unsubscribe and the new watch's subscribe race.
        tokio::time::sleep(Duration::from_micros(round * 150)).await;
        let subscribed = client
            .subscribe(&key(&service))
            .await
            .unwrap()
            .expect("a gRPC subscription");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = fake.log();
        let last = log
            .iter()
            .rev()
            .find(|s| s.unary(SUBSCRIBE) && s.json()["serviceName"] == service.as_str())
            .expect("a subscription");
        assert_eq!(
            last.json()["subscribe"],
            true,
            "round {round}: the service was left unsubscribed:\n{}",
            summary(&log)
        );
        // The round's watch gone, its unsubscribe out before the next round's script.
        drop(subscribed);
        let subscriptions = |log: &[Seen]| {
            log.iter()
                .filter(|s| s.unary(SUBSCRIBE) && s.json()["serviceName"] == service.as_str())
                .count()
        };
        let before = subscriptions(&log);
        fake.wait("the unsubscription", |log| {
            (subscriptions(log) > before).then_some(())
        })
        .await;
    }
}

fn persistent(ip: &str, port: u16) -> Instance {
    Instance {
        ephemeral: false,
        ..instance(ip, port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_instances_go_as_persistent_requests_where_the_server_takes_them() {
    let fake = Fake::start().await;
    *fake.state.abilities.lock().unwrap() = Some(json!({"supportPersistentInstanceByGrpc": true}));
    let client = fake.client();
    let orders = persistent("10.0.0.1", 8080);
    client.register(&key("orders"), &orders).await.unwrap();
    client.deregister(&key("orders"), &orders).await.unwrap();
    let log = fake.log();
    let sent: Vec<(String, Value)> = log
        .iter()
        .filter(|s| s.unary(PERSISTENT_INSTANCE))
        .map(|s| (s.json()["type"].as_str().unwrap_or("").to_owned(), s.json()))
        .collect();
    assert_eq!(sent.len(), 2, "{}", summary(&log));
    assert_eq!(sent[0].0, "registerInstance");
    assert_eq!(sent[1].0, "deregisterInstance");
    assert_eq!(sent[0].1["instance"]["ephemeral"], false, "{}", sent[0].1);
    assert_eq!(sent[0].1["serviceName"], "orders");
    // Not the ephemeral path: no InstanceRequest, and nothing for the redo to send again.
    assert!(
        !log.iter()
            .any(|s| s.unary(INSTANCE) || s.unary(BATCH_INSTANCE)),
        "{}",
        summary(&log)
    );
    // The set-up asked for the server's abilities (an `abilityTable`, even empty).
    let setup = log.iter().find(|s| s.streamed(CONNECTION_SETUP)).unwrap();
    assert!(setup.json()["abilityTable"].is_object(), "{}", setup.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_instances_go_over_http_where_the_server_does_not_say_it_takes_them() {
    for abilities in [
        None,
        Some(json!({})),
        Some(json!({"supportPersistentInstanceByGrpc": false})),
    ] {
        let fake = Fake::start().await;
        *fake.state.abilities.lock().unwrap() = abilities.clone();
        let client = fake.client_with_timeout(Duration::from_millis(500));
        up(&client).await;
        // The fake has no HTTP port (`127.0.0.1:1` refuses): the request fails over HTTP.
        let error = client
            .register(&key("orders"), &persistent("10.0.0.1", 8080))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("127.0.0.1:1"),
            "{abilities:?}: {error}"
        );
        let log = fake.log();
        assert!(
            !log.iter()
                .any(|s| s.unary(PERSISTENT_INSTANCE) || s.unary(INSTANCE)),
            "{abilities:?}: {}",
            summary(&log)
        );
    }
}

/// A `NotifySubscriberRequest` of `orders` listing `ips` (port 8080).
fn orders_list(ips: &[&str]) -> Value {
    json!({
        "requestId": format!("n{}", fastrand::u32(..)),
        "namespace": "public",
        "serviceInfo": {
            "name": "DEFAULT_GROUP@@orders",
            "groupName": "DEFAULT_GROUP",
            "hosts": ips.iter().map(|ip| json!({"ip": ip, "port": 8080, "healthy": true, "clusterName": "DEFAULT"})).collect::<Vec<_>>(),
        },
    })
}

fn registrations_of(fake: &Fake, ip: &str) -> usize {
    fake.log()
        .iter()
        .filter(|s| {
            s.unary(INSTANCE)
                && s.json()["type"] == "registerInstance"
                && s.json()["instance"]["ip"] == ip
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_the_server_no_longer_lists_is_registered_again_once() {
    let fake = Fake::start().await;
    // The subscription's answer lists the instance.
    fake.script(
        SUBSCRIBE,
        Answer::body(
            "SubscribeServiceResponse",
            json!({"resultCode": 200, "serviceInfo": orders_list(&["10.0.0.1"])["serviceInfo"]})
                .to_string(),
        ),
    );
    let client = fake.checking_client();
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    fake.wait("the own-service subscription", |log| {
        log.iter()
            .find(|s| s.unary(SUBSCRIBE) && s.json()["serviceName"] == "orders")
            .map(drop)
    })
    .await;
    // A list with another instance only does nothing while the query confirms nothing...
    fake.script(SERVICE_QUERY, Answer::body("QueryServiceResponse",
        json!({"resultCode": 200, "serviceInfo": orders_list(&["10.0.0.1", "10.0.0.2"])["serviceInfo"]}).to_string()));
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&["10.0.0.2"]).to_string())
        .await;
    fake.wait("the confirming query", |log| {
        log.iter().find(|s| s.unary(SERVICE_QUERY)).map(drop)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        registrations_of(&fake, "10.0.0.1"),
        1,
        "{}",
        summary(&fake.log())
    );
    // ... and when the server confirms it lost the instance, it is registered again.
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&["10.0.0.2"]).to_string())
        .await;
    fake.wait("the registration again", |log| {
        (log.iter()
            .filter(|s| s.unary(INSTANCE) && s.json()["instance"]["ip"] == "10.0.0.1")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    // Still not listed after that (disabled in the console): left alone, not a loop.
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&["10.0.0.2"]).to_string())
        .await;
    let queries = |fake: &Fake| fake.log().iter().filter(|s| s.unary(SERVICE_QUERY)).count();
    fake.wait("the third query", |log| {
        (log.iter().filter(|s| s.unary(SERVICE_QUERY)).count() >= 3).then_some(())
    })
    .await;
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&["10.0.0.2"]).to_string())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        registrations_of(&fake, "10.0.0.1"),
        2,
        "{}",
        summary(&fake.log())
    );
    assert_eq!(queries(&fake), 3, "{}", summary(&fake.log()));
    // Listed again: the watch acts on the next loss.
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&["10.0.0.1"]).to_string())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&[]).to_string())
        .await;
    fake.wait("a registration after the next loss", |log| {
        (log.iter()
            .filter(|s| s.unary(INSTANCE) && s.json()["instance"]["ip"] == "10.0.0.1")
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    // Deregistered: the watch unsubscribes.
    client
        .deregister(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    fake.wait("the unsubscribe", |log| {
        log.iter()
            .find(|s| s.unary(SUBSCRIBE) && s.json()["subscribe"] == false)
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_many_other_instances_is_not_watched_for_lost_ones() {
    let fake = Fake::start().await;
    let others: Vec<String> = (0..=super::INSTANCE_CHECK_MAX_OTHERS)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let mut listed: Vec<&str> = others.iter().map(String::as_str).collect();
    listed.push("10.0.0.1");
    fake.script(
        SUBSCRIBE,
        Answer::body(
            "SubscribeServiceResponse",
            json!({"resultCode": 200, "serviceInfo": orders_list(&listed)["serviceInfo"]})
                .to_string(),
        ),
    );
    let client = fake.checking_client();
    client
        .register(&key("orders"), &instance("10.0.0.1", 8080))
        .await
        .unwrap();
    // The watch gives the service up: its subscription goes.
    fake.wait("the unsubscribe", |log| {
        log.iter()
            .find(|s| s.unary(SUBSCRIBE) && s.json()["subscribe"] == false)
            .map(drop)
    })
    .await;
    fake.push(NOTIFY_SUBSCRIBER, orders_list(&["10.0.0.2"]).to_string())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = fake.log();
    assert!(
        !log.iter().any(|s| s.unary(SERVICE_QUERY)),
        "{}",
        summary(&log)
    );
    assert_eq!(registrations_of(&fake, "10.0.0.1"), 1, "{}", summary(&log));
}

/// How many `ConfigBatchListenRequest`s listen to `data_id` with `md5`, and the index in
/// the log of the first.
fn listens_with(log: &[Seen], data_id: &str, md5: &str) -> (usize, Option<usize>) {
    let hits: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, s)| s.unary("ConfigBatchListenRequest"))
        .filter(|(_, s)| {
            let json = s.json();
            json["listen"] == true
                && json["configListenContexts"].as_array().is_some_and(|all| {
                    all.iter()
                        .any(|c| c["dataId"] == data_id && c["md5"] == md5)
                })
        })
        .map(|(i, _)| i)
        .collect();
    (hits.len(), hits.first().copied())
}

/// A config read after a push is listened to again with its new md5 once the
/// re-verification second has passed, not at whatever round comes first: the push and
/// query of another config 50 ms later do not bring it forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_is_listened_to_again_a_second_later_whatever_comes_between() {
    let fake = Fake::start().await;
    let set = |data_id: &str, content: &str| {
        fake.state
            .configs
            .lock()
            .unwrap()
            .insert(data_id.to_owned(), content.to_owned());
    };
    set("a", "a1");
    set("b", "b1");
    let config = Config::builder()
        .service_name("svc")
        .server_addr("127.0.0.1:1")
        .api(ApiVersion::Grpc)
        .grpc_port_offset(fake.port - 1)
        .config_snapshot_dir("off")
        .build()
        .unwrap();
    let configs = crate::ConfigService::new(&config).unwrap();
    let mut a = configs.watch("a");
    let mut b = configs.watch("b");
    a.ready().await;
    b.ready().await;
    let md5 = crate::config::md5_hex;
    // The start's re-verification, with the md5s read.
    fake.wait("the start's re-verification", |log| {
        (listens_with(log, "a", &md5("a1")).0 > 0 && listens_with(log, "b", &md5("b1")).0 > 0)
            .then_some(())
    })
    .await;

    set("a", "a2");
    let notify = |data_id: &str| {
        json!({"requestId": format!("n-{data_id}"), "dataId": data_id, "group": "DEFAULT_GROUP",
            "tenant": ""})
        .to_string()
    };
    fake.push("ConfigChangeNotifyRequest", notify("a")).await;
    tokio::time::timeout(
        WAIT,
        a.subscribe().wait_for(|item| {
            item.as_ref()
                .is_some_and(|i| i.content.as_deref() == Some("a2"))
        }),
    )
    .await
    .expect("a's change reaches its watch")
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    set("b", "b2");
    fake.push("ConfigChangeNotifyRequest", notify("b")).await;
    tokio::time::timeout(
        WAIT,
        b.subscribe().wait_for(|item| {
            item.as_ref()
                .is_some_and(|i| i.content.as_deref() == Some("b2"))
        }),
    )
    .await
    .expect("b's change reaches its watch")
    .unwrap();
    fake.wait("a listened to with a2's md5", |log| {
        (listens_with(log, "a", &md5("a2")).0 > 0).then_some(())
    })
    .await;
    let log = fake.log();
    let (count, first) = listens_with(&log, "a", &md5("a2"));
    // The query that read a2: the last query of `a` before that listen.
    let first = first.expect("seen");
    let queried = log[..first]
        .iter()
        .rev()
        .find(|s| s.unary("ConfigQueryRequest") && s.json()["dataId"] == "a")
        .expect("a queried");
    let relistened = log[first].at - queried.at;
    assert!(
        relistened >= Duration::from_millis(950),
        "a listened to again {} ms after it was queried:\n{}",
        relistened.as_millis(),
        summary(&log)
    );
    let first = Some(first);
    assert_eq!(count, 1, "{}", summary(&log));
    assert_eq!(
        listens_with(&log, "b", &md5("b2")).1,
        first,
        "{}",
        summary(&log)
    );
}
