//! The task's timing on tokio's paused clock, against a scripted client: beat intervals,
//! light beats, registering again, backoff, and bounded deregistration.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::timing::{BEAT_TICK, FIRST_RETRY};
use super::*;
use crate::settings::Config;
use crate::signals::SETTLE;

/// A request the task sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Register,
    Beat { full: bool },
    Deregister,
}

/// How the fake answers.
enum Reply {
    Ok,
    Beat(BeatResult),
    Fail,
    Hang,
}

type Script = Box<dyn FnMut(Sent, usize) -> Reply + Send>;

/// A client that records what it is sent (with the paused clock's time) and answers from
/// a script given the request and how many requests came before it.
struct Fake {
    slots: Arc<Semaphore>,
    sent: Mutex<Vec<(Instant, Sent)>>,
    script: Mutex<Script>,
}

impl Fake {
    fn new(script: impl FnMut(Sent, usize) -> Reply + Send + 'static) -> Arc<Self> {
        Arc::new(Fake {
            slots: Arc::new(Semaphore::new(4)),
            sent: Mutex::new(Vec::new()),
            script: Mutex::new(Box::new(script)),
        })
    }

    fn sent(&self) -> Vec<(Instant, Sent)> {
        self.sent.lock().unwrap().clone()
    }

    async fn answer(&self, what: Sent) -> Reply {
        let reply = {
            let mut sent = self.sent.lock().unwrap();
            let n = sent.len();
            sent.push((Instant::now(), what));
            (self.script.lock().unwrap())(what, n)
        };
        if let Reply::Hang = reply {
            std::future::pending::<()>().await;
        }
        reply
    }
}

fn refused() -> Error {
    Error::Status {
        server: "fake".into(),
        status: 500,
        body: "down".into(),
    }
}

impl Naming for Fake {
    async fn admit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots.clone().acquire_owned().await.unwrap()
    }

    async fn register(&self, _: &ServiceKey, _: &Arc<Instance>) -> Result<Kept> {
        match self.answer(Sent::Register).await {
            Reply::Fail => Err(refused()),
            _ => Ok(Kept::Beats),
        }
    }

    async fn connection_change(&self, _: &ServiceKey, _: Seen) -> ConnectionChange {
        std::future::pending().await
    }

    async fn connected(&self) {
        std::future::pending().await
    }

    async fn beat(
        &self,
        _: &ServiceKey,
        _: &Instance,
        body: Option<&BeatInfo>,
    ) -> Result<BeatResult> {
        match self
            .answer(Sent::Beat {
                full: body.is_some(),
            })
            .await
        {
            Reply::Beat(result) => Ok(result),
            Reply::Fail => Err(refused()),
            _ => Ok(BeatResult::with_code(BeatResult::OK)),
        }
    }

    async fn deregister(&self, _: &ServiceKey, _: &Instance) -> Result<()> {
        match self.answer(Sent::Deregister).await {
            Reply::Fail => Err(refused()),
            _ => Ok(()),
        }
    }
}

struct NoEvents;

impl TaskEvents for NoEvents {
    fn claim(&self, _: String, _: u64) {}
    fn unclaim(&self, _: &str, _: u64) {}
    fn release(&self, _: u64) {}
    fn registering(self: Arc<Self>, _: bool) {}
}

/// Starts a task for `config` on the test's runtime and tells it the app listens.
fn start(fake: &Arc<Fake>, config: Config) -> (Arc<Mailbox>, StatusHandle, Instant) {
    let key = Arc::new(ServiceKey::from(&config));
    let status = StatusHandle::new(RegistrationState::WaitingForListener, key.clone());
    let mailbox = Arc::new(Mailbox::default());
    let task = Task {
        id: 1,
        config: Arc::new(config),
        key,
        client: fake.clone(),
        status: status.clone(),
        detect_listener: false,
        events: Arc::new(NoEvents),
    };
    tokio::spawn(task.run(mailbox.clone()));
    let started = Instant::now();
    let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
    mailbox.send(Command::Bound(addr)).unwrap();
    (mailbox, status, started)
}

fn config() -> Config {
    Config::builder()
        .service_name("orders")
        .request_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

fn beat(interval_ms: i64, light: bool, code: i32) -> BeatResult {
    let mut result = BeatResult::with_code(code);
    result.client_beat_interval = Some(interval_ms);
    result.light_beat_enabled = light;
    result
}

async fn deregister(mailbox: &Mailbox) {
    let (tx, rx) = oneshot::channel();
    mailbox.send(Command::Deregister(Done::Async(tx))).unwrap();
    rx.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn beats_follow_the_servers_interval_at_a_fixed_rate() {
    let fake = Fake::new(|_, _| Reply::Beat(beat(2000, true, BeatResult::OK)));
    let (mailbox, status, started) = start(&fake, config());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let sent = fake.sent();
    assert_eq!(sent[0].1, Sent::Register);
    let registered = sent[0].0 - started;
    assert!(
        registered >= SETTLE && registered < SETTLE + BEAT_TICK,
        "registered {registered:?} after the address was known"
    );
    // The first beat: 50-100 % of the configured 5 s after the registration, full.
    let first = sent[1].0 - sent[0].0;
    assert!(
        first >= Duration::from_millis(2500) && first <= Duration::from_millis(5000) + BEAT_TICK,
        "first beat {first:?} after registering"
    );
    assert_eq!(sent[1].1, Sent::Beat { full: true });
    // Then light beats every clientBeatInterval (2 s), on the 20 ms grid.
    for pair in sent[1..].windows(2) {
        assert_eq!(pair[1].1, Sent::Beat { full: false });
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap + BEAT_TICK >= Duration::from_secs(2) && gap <= Duration::from_secs(2) + BEAT_TICK,
            "beat gap {gap:?}"
        );
    }
    assert!(sent.len() >= 8, "{} requests in 20 s", sent.len());
    assert_eq!(status.snapshot().state, RegistrationState::Registered);
    assert_eq!(status.snapshot().beats as usize, sent.len() - 1);
    deregister(&mailbox).await;
    assert_eq!(fake.sent().last().unwrap().1, Sent::Deregister);
}

#[tokio::test(start_paused = true)]
async fn full_beats_while_the_server_refuses_light_ones() {
    let fake = Fake::new(|_, _| Reply::Beat(beat(1000, false, BeatResult::OK)));
    let (_mailbox, _status, _) = start(&fake, config());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sent = fake.sent();
    assert!(sent.len() > 4);
    assert!(
        sent[1..]
            .iter()
            .all(|(_, s)| *s == Sent::Beat { full: true }),
        "{sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_instance_is_registered_again_at_once() {
    // The third request (the second beat) answers 20404.
    let fake = Fake::new(|what, n| match (what, n) {
        (Sent::Beat { .. }, 2) => Reply::Beat(beat(1000, true, BeatResult::RESOURCE_NOT_FOUND)),
        _ => Reply::Beat(beat(1000, true, BeatResult::OK)),
    });
    let (_mailbox, status, _) = start(&fake, config());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sent = fake.sent();
    assert_eq!(sent[3].1, Sent::Register, "{sent:?}");
    assert_eq!(sent[3].0, sent[2].0, "registered again at once");
    assert_eq!(sent[4].1, Sent::Beat { full: true }, "a full beat follows");
    assert_eq!(status.snapshot().registrations, 2);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_each_retry_registers_again() {
    let fake = Fake::new(|what, n| match (what, n) {
        (_, 0..=5) => Reply::Fail,
        _ => Reply::Beat(beat(5000, true, BeatResult::OK)),
    });
    let (_mailbox, status, _) = start(&fake, config());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let sent = fake.sent();
    assert!(
        sent[..7].iter().all(|(_, s)| *s == Sent::Register),
        "{sent:?}"
    );
    for failures in 1..=6u32 {
        let gap = sent[failures as usize].0 - sent[failures as usize - 1].0;
        let full = (FIRST_RETRY * 2u32.pow(failures - 1)).min(Duration::from_secs(5));
        assert!(
            gap >= full / 2 && gap <= full,
            "retry after failure {failures}: {gap:?}, expected {:?}..{full:?}",
            full / 2
        );
    }
    let snapshot = status.snapshot();
    assert_eq!(snapshot.state, RegistrationState::Registered);
    assert_eq!(snapshot.consecutive_failures, 0);
    assert!(snapshot.last_error.unwrap().contains("HTTP 500"));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_deregistration_ends_at_the_request_timeout() {
    let fake = Fake::new(|what, _| match what {
        Sent::Deregister => Reply::Hang,
        _ => Reply::Ok,
    });
    let (mailbox, status, _) = start(&fake, config());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    deregister(&mailbox).await;
    assert_eq!(
        asked.elapsed(),
        Duration::from_secs(3),
        "NACOS_REQUEST_TIMEOUT"
    );
    let snapshot = status.snapshot();
    assert_eq!(snapshot.state, RegistrationState::Deregistered);
    assert!(
        snapshot
            .last_error
            .unwrap()
            .contains("deregistration timed out after 3000 ms")
    );
    // The task has ended: later commands are refused.
    assert!(mailbox.send(Command::Replaced).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_deregistration_does_not_wait_for_a_hanging_beat() {
    let fake = Fake::new(|what, _| match what {
        Sent::Beat { .. } => Reply::Hang,
        _ => Reply::Ok,
    });
    let (mailbox, _status, _) = start(&fake, config());
    // Past the first beat, which hangs.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(fake.sent().last().unwrap().1, Sent::Beat { full: true });
    let asked = Instant::now();
    deregister(&mailbox).await;
    assert_eq!(asked.elapsed(), Duration::ZERO);
    assert_eq!(fake.sent().last().unwrap().1, Sent::Deregister);
}
