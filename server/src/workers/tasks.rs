//! [`Tasks`]: background tasks that run until told to stop (the processing workers of
//! processing.rs, the webhook delivery workers of delivery.rs).

use std::future::Future;

use tokio::sync::watch;

/// Running tasks, each handed a receiver that turns `true` when they should stop.
pub struct Tasks {
    stop: Vec<watch::Sender<bool>>,
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
        Tasks {
            stop: vec![stop],
            tasks,
        }
    }

    /// All of these as one (the workers of each node of a sharded layout).
    pub fn join(all: Vec<Tasks>) -> Tasks {
        let mut joined = Tasks {
            stop: Vec::new(),
            tasks: Vec::new(),
        };
        for tasks in all {
            joined.stop.extend(tasks.stop);
            joined.tasks.extend(tasks.tasks);
        }
        joined
    }

    /// Tells every task to stop and waits for each to finish what it has in hand.
    pub async fn stop(self) {
        for stop in &self.stop {
            let _ = stop.send(true);
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
