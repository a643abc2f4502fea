//! The conformance suite on PostgreSQL, each test in a scratch database of its own.
//! Skips (printing why) when no server is reachable, unless `CI=true`.

use tasker_store::postgres::PgStore;
use tasker_store::postgres::testing::ScratchDatabase;
use tasker_storetest::Fixture;

async fn fresh() -> Option<Fixture<PgStore>> {
    let db = ScratchDatabase::create().await?;
    let store = PgStore::connect(&db.url, 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some(Fixture::new(store, db))
}

tasker_storetest::conformance_tests!(fresh);

/// A scratch database and a store on it with one started task of one `noop` step on
/// queue `conf`, and its id; `None` when no server is reachable (see `ScratchDatabase`).
async fn one_started_task() -> Option<(
    ScratchDatabase,
    std::sync::Arc<PgStore>,
    tasker_core::id::TaskId,
)> {
    use tasker_core::store::{Store, TaskCreateParams};

    let db = ScratchDatabase::create().await?;
    let store = std::sync::Arc::new(PgStore::connect(&db.url, 4).await.expect("connect"));
    store.migrate().await.expect("migrate");
    let template = tasker_core::template::parse_template(
        "namespace: conf\nname: one\nversion: 1.0.0\nsteps:\n  - {name: only, handler: noop}\n",
        "one.yaml",
    )
    .unwrap();
    store.template_register(&template).await.unwrap();
    let context = serde_json::value::RawValue::from_string("{}".into()).unwrap();
    let params = TaskCreateParams {
        template: &template,
        context: &context,
        idempotency_key: None,
        priority: None,
        traceparent: None,
    };
    let task = store.task_create(params).await.unwrap().task_id;
    store
        .task_start_batch(10, std::time::Duration::from_secs(30), None)
        .await
        .unwrap();
    Some((db, store, task))
}

/// The store's cancel of `task`, to run beside another connection's transaction.
fn cancel(
    store: &std::sync::Arc<PgStore>,
    task: tasker_core::id::TaskId,
) -> impl std::future::Future<Output = tasker_core::store::StoreResult<tasker_core::state::TaskState>>
+ Send
+ 'static {
    use tasker_core::store::Store;
    let store = store.clone();
    async move { store.task_cancel(task, "operator cancelled").await }
}

/// Runs `sql` (with the task id as `$1`) in a transaction on a connection of its own,
/// and commits it 300 ms after `meanwhile` started.
async fn concurrently<T: Send + 'static>(
    db: &ScratchDatabase,
    sql: &str,
    task: tasker_core::id::TaskId,
    meanwhile: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    use sqlx::Connection;

    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query(sql)
        .bind(task.0)
        .execute(&mut other)
        .await
        .unwrap();
    let running = tokio::spawn(meanwhile);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    running.await.unwrap()
}

/// A cancel that meets a claim in flight waits for it and cancels what it claimed,
/// rather than failing because the step changed under it.
#[tokio::test]
async fn cancel_waits_for_a_claim_in_flight() {
    use tasker_core::state::{StepState, TaskState};
    use tasker_core::store::Store;

    let Some((db, store, task)) = one_started_task().await else {
        return;
    };
    let cancelling = cancel(&store, task);
    let claim = "UPDATE tasker.steps SET state = 'in_progress', attempts = 1 WHERE task_id = $1";
    let state = concurrently(&db, claim, task, cancelling).await;
    assert!(matches!(state, Ok(TaskState::Cancelled)), "{state:?}");
    let detail = store.task_get(task).await.unwrap();
    assert_eq!(detail.steps[0].state, StepState::Cancelled);
}

/// A claim whose step an operator changes as it reads it skips the step rather than
/// failing (which would fail every other claim of its batch too).
#[tokio::test]
async fn a_claim_that_loses_its_step_to_a_cancel_skips_it() {
    use std::time::Duration;

    use tasker_core::state::StepState;
    use tasker_core::store::{ClaimParams, StepStart, Store};

    let Some((db, store, task)) = one_started_task().await else {
        return;
    };
    let claiming = {
        let store = store.clone();
        async move {
            let params = ClaimParams {
                queue: "conf",
                limit: 10,
                visibility: Duration::from_secs(30),
                grace: Duration::from_secs(5),
            };
            store.step_claim(params).await
        }
    };
    let cancel = "UPDATE tasker.steps SET state = 'cancelled' WHERE task_id = $1";
    let claimed = concurrently(&db, cancel, task, claiming).await.unwrap();
    assert!(
        matches!(
            claimed.claims[..],
            [tasker_core::store::Claim {
                start: StepStart::Skipped { .. },
                ..
            }]
        ),
        "{claimed:?}"
    );
    let detail = store.task_get(task).await.unwrap();
    assert_eq!(detail.steps[0].state, StepState::Cancelled);
}

/// An operation whose connection the server ends before it commits runs again on a
/// fresh connection: the caller sees it succeed, not a database error.
#[tokio::test]
async fn an_operation_whose_connection_is_killed_runs_again() {
    use tasker_core::state::TaskState;

    let Some((db, store, task)) = one_started_task().await else {
        return;
    };
    let cancelling = cancel(&store, task);
    // The cancel waits for the task's lock; meanwhile the server ends its connection.
    let lock = "SELECT 1 FROM tasker.tasks WHERE id = $1 FOR UPDATE";
    let killer = db.url.clone();
    let killing = async move {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&killer).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock') AS t",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    let both = async move { tokio::join!(cancelling, killing) };
    let (state, killed) = concurrently(&db, lock, task, both).await;
    assert_eq!(killed, 1, "the waiting cancel's connection was ended");
    assert!(matches!(state, Ok(TaskState::Cancelled)), "{state:?}");
}

/// A statement prepared on the store's connections while a table is small is planned
/// again as the table grows: a plan kept from an empty table would scan every row
/// until the table is analyzed (never, with autovacuum off).
#[tokio::test]
async fn plans_follow_the_tables_as_they_grow() {
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(&db.url, 2).await.expect("connect");
    let mut conn = store.pool().acquire().await.unwrap();
    // Rows as wide as a step's, whose table PostgreSQL guesses to be small while empty.
    sqlx::query(
        "CREATE TABLE grows (id bigint PRIMARY KEY, a text, b text, c text, d text, e text,
                             f text, g text, h json, i json)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // The shape of the store's statements on arrays: a join with UNNEST.
    sqlx::query(
        "PREPARE lookup(bigint[]) AS UPDATE grows g SET a = 'y'
         FROM UNNEST($1) AS u(id) WHERE g.id = u.id",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // More executions than PostgreSQL needs before it would keep a generic plan.
    for _ in 0..8 {
        sqlx::query("EXECUTE lookup('{1}')")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO grows (id) SELECT g FROM generate_series(1, 50000) g")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE lookup('{1}')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan") && !plan.contains("Seq Scan"),
        "the plan made for an empty table was kept:\n{plan}"
    );
}

/// The clients and workers of one process on one database share one store (one pool,
/// one listening connection); a larger need gets a larger one, which later ones share.
#[tokio::test]
async fn a_process_shares_one_store_per_database() {
    use std::sync::Arc;

    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let client = PgStore::shared(&db.url, 2).await.expect("connect");
    let again = PgStore::shared(&db.url, 2).await.expect("connect");
    assert!(
        Arc::ptr_eq(&client, &again),
        "one store for the same database"
    );
    let worker = PgStore::shared(&db.url, 6).await.expect("connect");
    assert!(
        !Arc::ptr_eq(&client, &worker),
        "more connections than it has"
    );
    let later = PgStore::shared(&db.url, 2).await.expect("connect");
    assert!(
        Arc::ptr_eq(&later, &worker),
        "the larger store is shared from then on"
    );
    drop((client, again, worker, later));
    let fresh = PgStore::shared(&db.url, 2).await.expect("connect");
    // A closed connection's server process ends a moment after its socket closes.
    let mut listeners = 0;
    for _ in 0..50 {
        listeners = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(fresh.pool())
        .await
        .unwrap();
        if listeners == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        listeners, 1,
        "the dropped stores closed their listening connections"
    );
}
