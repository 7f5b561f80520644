//! The server's worker loop (`triggers_server::workers::processing::run`) against a real database,
//! with a manual clock: it wakes on the enqueue notification rather than a poll, it
//! looks once more after its linger (which catches an event whose producer's NOTIFY
//! was throttled away), it gathers after a partial batch but not after a full one, and
//! worker 0 vacuums the queue every `vacuum_every` while there is work.
//! Time moves only when a test advances the clock, so "not yet" is a fact, not a race.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use triggers_server::workers::processing::{self, ManualClock, WorkerOptions};
use triggers_tests::{connect, test_database, wait_until, Notifications, PATIENCE};

/// A worker task on a manual clock.
struct Worker {
    clock: ManualClock,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Worker {
    fn start(config: &tokio_postgres::Config, options: WorkerOptions) -> Worker {
        let clock = ManualClock::new();
        let (stop, stopped) = watch::channel(false);
        let client = triggers_client::Client::from_config(config.clone(), 2).expect("client");
        let options = WorkerOptions {
            clock: Arc::new(clock.clone()),
            ..options
        };
        let task = tokio::spawn(processing::run(0, client, options, stopped));
        Worker { clock, stop, task }
    }

    /// Waits until the worker sleeps on exactly one wait of `left` (the clock shows
    /// every pending sleep; a worker waiting for a notification sleeps on one).
    async fn until_sleeping(&self, left: Duration, what: &str) {
        tokio::time::timeout(
            PATIENCE,
            self.clock.until_sleeping(|sleeps| sleeps == [left]),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what}: the worker never slept {left:?} (sleeping: {:?})",
                self.clock.sleeping()
            )
        });
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

async fn stored(client: &Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM triggers.events", &[])
        .await
        .unwrap()
        .get(0)
}

async fn until_stored(client: &Client, n: i64) {
    wait_until(&format!("{n} events stored"), || async {
        stored(client).await >= n
    })
    .await;
    assert_eq!(stored(client).await, n);
}

async fn enqueue(client: &Client, n: i32) {
    client
        .query(
            "SELECT triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', \
             jsonb_build_object('i', i))) FROM generate_series(1, $1) i))",
            &[&n],
        )
        .await
        .expect("enqueue_batch");
}

/// The default fallback poll: the sleep of a worker that has lingered and is idle.
fn fallback_poll() -> Duration {
    WorkerOptions::default().fallback_poll
}

/// An idle worker (lingered, asleep on its fallback poll, the clock standing still)
/// stores a new event: the enqueue's NOTIFY woke it, not a poll.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_wakes_on_the_enqueue_notification_not_on_a_poll() {
    let config = test_database("worker_wake").await;
    let sql = connect(&config).await;
    let worker = Worker::start(&config, WorkerOptions::default());
    let linger = Duration::from_millis(100); // notify_throttle_ms's default
    worker.until_sleeping(linger, "empty at start").await;
    worker.clock.advance(linger);
    worker.until_sleeping(fallback_poll(), "idle").await;

    // The clock stays short of the poll from here on.
    enqueue(&sql, 1).await;
    until_stored(&sql, 1).await;
    worker.stop().await;
}

/// The linger protocol (see `triggers._wake`): a producer session notifies at most
/// once per throttle, so an event can arrive with no NOTIFY of its own while a worker
/// is about to sleep. The worker looks once more `linger` after the queue turned empty,
/// with the linger read from `triggers.config.notify_throttle_ms`: the event waits
/// until then, and not longer.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_without_a_notify_of_its_own_is_found_when_the_linger_ends() {
    let config = test_database("worker_linger").await;
    let sql = connect(&config).await;
    sql.batch_execute("UPDATE triggers.config SET notify_throttle_ms = 250")
        .await
        .unwrap();
    let linger = Duration::from_millis(250);
    let mut notifications = Notifications::listen(&config).await;
    // A producer whose session throttle lets only its first NOTIFY through.
    let producer = connect(&config).await;
    producer
        .batch_execute("SET triggers.notify_throttle_ms = 3600000")
        .await
        .unwrap();
    let worker = Worker::start(
        &config,
        WorkerOptions {
            gather: Duration::ZERO,
            ..WorkerOptions::default()
        },
    );
    worker.until_sleeping(linger, "empty at start").await;
    worker.clock.advance(linger);
    worker.until_sleeping(fallback_poll(), "idle").await;

    // The first event notifies and wakes the worker, which stores it, finds the queue
    // empty, and lingers.
    enqueue(&producer, 1).await;
    assert_eq!(
        notifications.until_marker(&sql).await.len(),
        1,
        "the first enqueue notifies"
    );
    until_stored(&sql, 1).await;
    worker
        .until_sleeping(linger, "lingering after the queue turned empty")
        .await;

    // The second is throttled: no NOTIFY, so nothing wakes the worker but its clock.
    enqueue(&producer, 1).await;
    let seen = notifications.until_marker(&sql).await;
    assert!(
        seen.is_empty(),
        "the second enqueue, within the throttle, does not notify: {seen:?}"
    );
    worker.clock.advance(linger - Duration::from_millis(1));
    assert_eq!(worker.clock.sleeping(), [Duration::from_millis(1)]);
    assert_eq!(
        stored(&sql).await,
        1,
        "not processed before the linger ends"
    );
    worker.clock.advance(Duration::from_millis(1));
    until_stored(&sql, 2).await;
    worker.stop().await;
}

/// A server worker starts the next batch at once after a full one (a backlog) and
/// `gather` after the start of a partial one (a trickle), so batches grow with the load.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_gathers_after_a_partial_batch_but_not_after_a_full_one() {
    let config = test_database("worker_gather").await;
    let sql = connect(&config).await;
    // Every enqueue of this session notifies.
    sql.batch_execute("SET triggers.notify_throttle_ms = 0")
        .await
        .unwrap();
    let gather = Duration::from_millis(400);
    let linger = Duration::from_millis(100);
    // A backlog of 20 full batches (batch_size 100) drains with the clock standing
    // still: no gather pause after a full batch.
    enqueue(&sql, 2000).await;
    let worker = Worker::start(
        &config,
        WorkerOptions {
            gather,
            ..WorkerOptions::default()
        },
    );
    until_stored(&sql, 2000).await;
    worker
        .until_sleeping(linger, "empty after the backlog")
        .await;

    // A trickle: after a partial batch the worker waits out the gather time before
    // the next batch, however soon the next events arrive.
    enqueue(&sql, 10).await;
    until_stored(&sql, 2010).await;
    worker.until_sleeping(gather, "gathering").await;
    enqueue(&sql, 10).await;
    worker.clock.advance(gather - Duration::from_millis(1));
    assert_eq!(worker.clock.sleeping(), [Duration::from_millis(1)]);
    assert_eq!(
        stored(&sql).await,
        2010,
        "no batch before the gather time has passed"
    );
    worker.clock.advance(Duration::from_millis(1));
    until_stored(&sql, 2020).await;
    worker.stop().await;
}

/// Worker 0 vacuums the queue itself once `vacuum_every` has passed with messages
/// processed, so the space of processed messages is reused at that pace whatever
/// autovacuum's naptime, and not before.
#[tokio::test(flavor = "multi_thread")]
async fn worker_zero_vacuums_the_queue_once_vacuum_every_has_passed_with_work() {
    let config = test_database("worker_vacuum").await;
    let sql = connect(&config).await;
    let vacuums = || async {
        sql.query_one(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgmq.q_triggers_events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let every = Duration::from_secs(1);
    let linger = Duration::from_millis(100);
    let worker = Worker::start(
        &config,
        WorkerOptions {
            vacuum_every: Some(every),
            ..WorkerOptions::default()
        },
    );
    worker.until_sleeping(linger, "empty at start").await;
    enqueue(&sql, 100).await;
    until_stored(&sql, 100).await;
    worker.until_sleeping(linger, "empty after the batch").await;
    assert_eq!(
        vacuums().await,
        0,
        "vacuumed before vacuum_every had passed"
    );
    worker.clock.advance(every);
    wait_until("the worker vacuumed the queue", || async {
        vacuums().await == 1
    })
    .await;
    worker.stop().await;
}
