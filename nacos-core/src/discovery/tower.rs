//! A watched service as a [`tower::discover::Discover`]: the stream of `Change::Insert` and
//! `Change::Remove` that `tower::balance::p2c::Balance` and tonic's balanced channels
//! consume.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use super::{Instances, ServiceWatch};
use crate::instance::Instance;

/// The key of a discovered instance: its advertised IP (as Nacos lists it) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// The instance's IP (or host name), as listed.
    pub ip: String,
    /// The instance's port.
    pub port: u16,
}

impl InstanceKey {
    fn of(instance: &Instance) -> Self {
        InstanceKey {
            ip: instance.ip.clone(),
            port: instance.port,
        }
    }
}

impl fmt::Display for InstanceKey {
    /// `ip:port`, with brackets around an IPv6 address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ip.contains(':') {
            write!(f, "[{}]:{}", self.ip, self.port)
        } else {
            write!(f, "{}:{}", self.ip, self.port)
        }
    }
}

/// A [`tower::discover::Discover`] over a [`ServiceWatch`]: yields `Change::Insert` for
/// each instance that appears (with the service `make` builds for it) and `Change::Remove`
/// for each that leaves. Made by [`ServiceWatch::discover`]. Never fails; ends never.
pub struct DiscoverInstances<S, F> {
    updates: WatchStream<Arc<Instances>>,
    known: HashSet<InstanceKey>,
    pending: VecDeque<Change<InstanceKey, S>>,
    make: F,
}

// Nothing is pinned inside: the services are moved out by value.
impl<S, F> Unpin for DiscoverInstances<S, F> {}

impl<S, F> fmt::Debug for DiscoverInstances<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoverInstances")
            .field("known", &self.known)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ServiceWatch {
    /// The watched service as a [`tower::discover::Discover`], `make` building the service
    /// that calls one instance (e.g. an HTTP client bound to `http://ip:port`).
    ///
    /// `tower::balance::p2c::Balance` needs services that implement `tower::load::Load`:
    /// wrap the discover in `tower::load::PeakEwmaDiscover` or
    /// `tower::load::PendingRequestsDiscover`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
    ///
    /// let orders = nacos_core::Discovery::from_env()?.watch("orders");
    /// # let service_for = |_: &nacos_core::Instance| tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
    /// let discover = PendingRequestsDiscover::new(
    ///     orders.discover(|instance| service_for(instance)),
    ///     CompleteOnResponse::default(),
    /// );
    /// let balanced = tower::balance::p2c::Balance::new(discover);
    /// # drop(balanced);
    /// # Ok(()) }
    /// ```
    pub fn discover<S, F>(&self, make: F) -> DiscoverInstances<S, F>
    where
        F: FnMut(&Instance) -> S,
    {
        DiscoverInstances {
            updates: WatchStream::new(self.subscribe()),
            known: HashSet::new(),
            pending: VecDeque::new(),
            make,
        }
    }
}

impl<S, F> DiscoverInstances<S, F>
where
    F: FnMut(&Instance) -> S,
{
    fn apply(&mut self, snapshot: &Instances) {
        let now: HashSet<InstanceKey> = snapshot.all().iter().map(InstanceKey::of).collect();
        let mut gone: Vec<InstanceKey> = self.known.difference(&now).cloned().collect();
        gone.sort();
        for key in gone {
            self.known.remove(&key);
            self.pending.push_back(Change::Remove(key));
        }
        for instance in snapshot.all() {
            let key = InstanceKey::of(instance);
            if self.known.insert(key.clone()) {
                let service = (self.make)(instance);
                self.pending.push_back(Change::Insert(key, service));
            }
        }
    }
}

impl<S, F> Stream for DiscoverInstances<S, F>
where
    F: FnMut(&Instance) -> S,
{
    type Item = Result<Change<InstanceKey, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match Pin::new(&mut this.updates).poll_next(cx) {
                Poll::Ready(Some(snapshot)) => {
                    if snapshot.version() > 0 {
                        this.apply(&snapshot);
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(feature = "tonic")]
impl ServiceWatch {
    /// Keeps a tonic balanced channel in step with the watched service: every instance
    /// that appears is sent as `Change::Insert(key, make(instance))`, every one that
    /// leaves as `Change::Remove(key)`, for as long as the channel lives. Returns the
    /// feeding task.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tonic::transport::{Channel, Endpoint};
    ///
    /// let orders = nacos_core::Discovery::from_env()?.watch("orders");
    /// let (channel, sender) = Channel::balance_channel(64);
    /// orders.feed_tonic_channel(sender, |instance| {
    ///     Endpoint::from_shared(format!("http://{}:{}", instance.ip, instance.port))
    ///         .expect("an instance address is a valid URI")
    /// });
    /// // build the generated client on `channel`
    /// # drop(channel);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// Outside a tokio runtime (the task is spawned on the current one).
    pub fn feed_tonic_channel<F>(
        &self,
        sender: tokio::sync::mpsc::Sender<
            tonic::transport::channel::Change<InstanceKey, tonic::transport::Endpoint>,
        >,
        make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(&Instance) -> tonic::transport::Endpoint + Send + 'static,
    {
        use tokio_stream::StreamExt;
        use tonic::transport::channel::Change as TonicChange;
        let mut changes = self.discover(make);
        tokio::spawn(async move {
            while let Some(Ok(change)) = changes.next().await {
                let change = match change {
                    Change::Insert(key, endpoint) => TonicChange::Insert(key, endpoint),
                    Change::Remove(key) => TonicChange::Remove(key),
                };
                if sender.send(change).await.is_err() {
                    return;
                }
            }
        })
    }
}
