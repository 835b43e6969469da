//! How handles talk to a registration's task: a command queue with a wake-up, and the
//! acknowledgement a deregistration waits for.

use std::net::SocketAddr;

use tokio::sync::Notify;

use crate::error::Result;

/// What a handle or the engine tells a registration's task.
#[derive(Debug)]
pub(crate) enum Command {
    /// The app listens at this address (from the framework adapter).
    Bound(SocketAddr),
    /// Deregister, acknowledge, stop.
    Deregister(Done),
    /// Another registration took over the same `service#ip#port`: stop without
    /// deregistering.
    Replaced,
}

/// The commands of one task: a queue and a wake-up, lighter than a channel (a task
/// holds one for its whole life and receives a handful of commands).
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    queue: std::sync::Mutex<std::collections::VecDeque<Command>>,
    notify: Notify,
    closed: std::sync::atomic::AtomicBool,
}

impl Mailbox {
    /// Queues `command`; gives it back when the task has stopped.
    pub(crate) fn send(&self, command: Command) -> Result<(), Command> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(command);
        }
        queue.push_back(command);
        drop(queue);
        self.notify.notify_one();
        Ok(())
    }

    /// The next command.
    ///
    /// # Cancellation safety
    /// Cancel-safe: a command is taken out of the queue only when this returns.
    pub(crate) async fn recv(&self) -> Command {
        loop {
            let next = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let next = queue.pop_front();
                if queue.is_empty() {
                    // The queue is empty nearly all the time: hold no buffer meanwhile.
                    queue.shrink_to_fit();
                }
                next
            };
            if let Some(command) = next {
                return command;
            }
            self.notify.notified().await;
        }
    }

    /// Refuses further commands and returns those still queued.
    pub(crate) fn close(&self) -> Vec<Command> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        queue.drain(..).collect()
    }
}

/// An acknowledgement, to a blocking or an async waiter.
#[derive(Debug)]
pub(crate) enum Done {
    Sync(std::sync::mpsc::Sender<()>),
    Async(tokio::sync::oneshot::Sender<()>),
}

impl Done {
    pub(crate) fn send(self) {
        match self {
            Done::Sync(tx) => drop(tx.send(())),
            Done::Async(tx) => drop(tx.send(())),
        }
    }
}
