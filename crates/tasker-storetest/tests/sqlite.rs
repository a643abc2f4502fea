//! The conformance suite on the embedded SQLite store, each test on its own file.

use tasker_store::sqlite::SqliteStore;
use tasker_storetest::Fixture;

async fn fresh() -> Option<Fixture<SqliteStore>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tasker.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path"))
        .await
        .expect("open");
    Some(Fixture::new(store, dir))
}

tasker_storetest::conformance_tests!(fresh);
