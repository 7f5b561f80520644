//! The claim at scale (sql/claim.sql), with real commits on separate connections:
//! under a snapshot held open by another session, a claim reads a bounded number of
//! index entries however many dead queue rows lie behind it; a lane's low-water mark
//! never passes a message whose producer has not committed yet; one tenant's flood
//! does not hold back another tenant's event.

use tokio_postgres::Client;
use triggers_tests::{connect, enqueue_many, scalar, test_database};

/// process_batch(100) until a call reads nothing; returns the number of calls.
async fn drain(db: &Client) -> usize {
    let mut calls = 0;
    loop {
        calls += 1;
        let read: i32 = db
            .query_one("SELECT read FROM triggers.process_batch(100)", &[])
            .await
            .unwrap()
            .get(0);
        if read == 0 {
            return calls;
        }
    }
}

/// Index entries of the lane index one process_batch(100) call returned to its scans
/// (dead ones included: those are what an old snapshot keeps), from the cumulative
/// statistics, which a session flushes at the end of a transaction when told to.
async fn lane_entries_read_by_one_claim(db: &Client) -> i64 {
    const READ: &str = "SELECT idx_tup_read FROM pg_stat_user_indexes
                         WHERE indexrelid = 'pgmq.q_triggers_events_lane_idx'::regclass";
    db.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let before = scalar(db, READ).await;
    db.batch_execute("SELECT triggers.process_batch(100); SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    scalar(db, READ).await - before
}

#[tokio::test]
async fn under_an_old_snapshot_a_claim_reads_a_bounded_number_of_index_entries() {
    let config = test_database("claim_old_snapshot").await;
    let worker = connect(&config).await;
    let holder = connect(&config).await;
    worker
        .batch_execute(
            "UPDATE triggers.config SET max_retries = 2, backoff_base_ms = 1, backoff_cap_ms = 1",
        )
        .await
        .unwrap();
    // Another session holds a snapshot from before everything below, as pg_dump or a
    // long report does: no row deleted from now on can be vacuumed, nor its index
    // entry marked dead.
    holder
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM triggers.config",
        )
        .await
        .unwrap();
    // Thousands of events processed, some retried until they are dead-lettered.
    for round in 0..12 {
        enqueue_many(&worker, "t", 500, None).await;
        enqueue_many(&worker, "t", 20, Some("processing_error")).await;
        drain(&worker).await;
        // Retries back off 1 ms: wait them out, then drain again, until nothing is left.
        while scalar(&worker, "SELECT count(*) FROM pgmq.q_triggers_events").await > 0 {
            drain(&worker).await;
        }
        assert_eq!(
            scalar(
                &worker,
                "SELECT count(*) FROM triggers.events WHERE status = 'pending'"
            )
            .await,
            (round + 1) * 500
        );
    }
    // Every message ever queued (retries are queued again) is a dead row behind the
    // lane's mark now: more than 6,000.
    let behind = scalar(
        &worker,
        "SELECT last_value FROM pgmq.q_triggers_events_msg_id_seq",
    )
    .await;
    assert!(behind > 6_000, "only {behind} messages queued");
    // One more batch: the claim starts at the lane's mark, past all of them. What it
    // reads is a batch or two: the claimed entries, and those of the last batches
    // processed since the mark last moved.
    enqueue_many(&worker, "t", 100, None).await;
    let read = lane_entries_read_by_one_claim(&worker).await;
    assert!(
        read <= 1_000,
        "one claim of 100 read {read} lane index entries with {behind} dead ones behind it"
    );
    // A new session knows no mark: its first claims walk the dead entries once, then
    // its marks move past them too.
    let fresh = connect(&config).await;
    enqueue_many(&worker, "t", 300, None).await;
    let first = lane_entries_read_by_one_claim(&fresh).await;
    assert!(
        first > 6_000,
        "a first claim from mark 0 read only {first}: was the old snapshot released?"
    );
    let later = lane_entries_read_by_one_claim(&fresh).await;
    assert!(
        later <= 1_000,
        "the second claim of a session read {later} entries"
    );
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_mark_never_passes_a_message_whose_producer_has_not_committed() {
    let config = test_database("claim_uncommitted").await;
    let worker = connect(&config).await;
    let producer = connect(&config).await;
    // The producer takes a msg_id and holds it, uncommitted (a transactional outbox
    // in a slow transaction).
    producer.batch_execute("BEGIN").await.unwrap();
    producer
        .execute(
            "SELECT triggers.enqueue('{\"late\": true}', tenant => 't')",
            &[],
        )
        .await
        .unwrap();
    // Meanwhile thousands of later messages of the same tenant are queued and
    // processed, over many calls: the lane's mark moves as far as it may.
    for _ in 0..5 {
        enqueue_many(&worker, "t", 200, None).await;
        drain(&worker).await;
    }
    producer.batch_execute("COMMIT").await.unwrap();
    drain(&worker).await;
    assert_eq!(
        scalar(
            &worker,
            "SELECT count(*) FROM triggers.events WHERE payload ? 'late'"
        )
        .await,
        1,
        "the late producer's event was skipped by a mark that passed it"
    );
    assert_eq!(
        scalar(&worker, "SELECT count(*) FROM pgmq.q_triggers_events").await,
        0
    );
}

#[tokio::test]
async fn a_tenants_one_event_is_stored_within_two_batches_of_another_tenants_flood() {
    let config = test_database("claim_flood").await;
    let db = connect(&config).await;
    for _ in 0..5 {
        enqueue_many(&db, "flood", 10_000, None).await;
    }
    db.execute(
        "SELECT triggers.enqueue('{\"hello\": 1}', tenant => 'quiet')",
        &[],
    )
    .await
    .unwrap();
    let worker = connect(&config).await;
    for _ in 0..2 {
        worker
            .execute("SELECT triggers.process_batch(100)", &[])
            .await
            .unwrap();
    }
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM triggers.events WHERE tenant = 'quiet'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM pgmq.q_triggers_events").await,
        50_000 - 199
    );
}
