//! Graceful shutdown as one type, in the manner of mini-redis: a signal every task listens to,
//! and a way for the one who stops the node to know that every listener has stopped.
//!
//! [`ShutdownSignal::trigger`] tells every [`Shutdown`] to stop. Each `Shutdown` also holds a
//! drop guard, so [`ShutdownSignal::stopped`] resolves once every task that held one has
//! returned (and dropped it) — without counting tasks by hand. The signal is a `watch` rather
//! than a broadcast so that a `Shutdown` cloned after the trigger still sees it.

use tokio::sync::{mpsc, watch};

/// The sending side: owned by whoever stops the node.
#[derive(Debug)]
pub(crate) struct ShutdownSignal {
    stop: watch::Sender<bool>,
    /// Handed (cloned) to every [`Shutdown`]; the channel closes once all are dropped.
    done_guard: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

impl ShutdownSignal {
    pub(crate) fn new() -> Self {
        let (stop, _) = watch::channel(false);
        let (done_guard, done) = mpsc::channel(1);
        Self {
            stop,
            done_guard,
            done,
        }
    }

    /// A listener for a task to hold until it returns.
    pub(crate) fn subscribe(&self) -> Shutdown {
        Shutdown {
            stop: self.stop.subscribe(),
            _done_guard: self.done_guard.clone(),
        }
    }

    /// Tells every listener to stop; does not wait.
    pub(crate) fn trigger(&self) {
        self.stop.send_replace(true);
    }

    /// Triggers the shutdown and waits until every listener was dropped.
    pub(crate) async fn stopped(self) {
        let Self {
            stop,
            done_guard,
            mut done,
        } = self;
        stop.send_replace(true);
        drop(done_guard);
        // Nothing is ever sent: `recv` returns `None` once the last guard is dropped.
        let _ = done.recv().await;
    }
}

/// The listening side, held by a task for as long as it runs.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    stop: watch::Receiver<bool>,
    /// Dropped with this listener: [`ShutdownSignal::stopped`] waits for all of them.
    _done_guard: mpsc::Sender<()>,
}

impl Shutdown {
    /// Resolves once the shutdown is triggered (at once if it already was). A signal that was
    /// dropped without a trigger counts as one: no one is left to stop this task otherwise.
    pub(crate) async fn recv(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_listener_hears_the_trigger_and_stopped_waits_for_all() {
        let signal = ShutdownSignal::new();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let mut shutdown = signal.subscribe();
            tasks.push(tokio::spawn(async move {
                shutdown.recv().await;
            }));
        }
        let mut late = signal.subscribe();
        signal.trigger();
        // A listener that looks after the trigger still sees it.
        tokio::time::timeout(Duration::from_secs(10), late.recv())
            .await
            .expect("the trigger is seen");
        // `late` is still held: `stopped` must not resolve until it is dropped.
        let waiting = tokio::spawn(signal.stopped());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(late);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("stopped resolves once every listener is dropped")
            .expect("no panic");
        for t in tasks {
            t.await.expect("listener task");
        }
    }
}
