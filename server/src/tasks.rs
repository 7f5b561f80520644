//! [`Tasks`]: background tasks that run until told to stop (the processing workers of
//! worker.rs, the webhook delivery workers of webhook.rs).

use std::future::Future;

use tokio::sync::watch;

/// Running tasks, each handed a receiver that turns `true` when they should stop.
pub struct Tasks {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Spawns `n` tasks, `task(i, stop)` for i in 0..n.
    pub fn spawn<F, Fut>(n: usize, task: F) -> Tasks
    where
        F: Fn(usize, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..n)
            .map(|i| tokio::spawn(task(i, stopped.clone())))
            .collect();
        Tasks { stop, tasks }
    }

    /// Tells every task to stop and waits for each to finish what it has in hand.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
