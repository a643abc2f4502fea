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
