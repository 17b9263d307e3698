//! Fresh PostgreSQL databases whose default transaction isolation is set, so tests can prove the store sets its own.
//!
//! `ALTER DATABASE … SET default_transaction_isolation` changes what every
//! new session of that database starts with; a store that relied on the
//! server's default (READ COMMITTED) would then run its transactions at the
//! stronger level. The tests built on this run the same story under each
//! [`DEFAULT_ISOLATIONS`] entry.

use sqlx::Connection as _;

/// The settings of `default_transaction_isolation` a store must work under.
pub const DEFAULT_ISOLATIONS: [&str; 3] = ["read committed", "repeatable read", "serializable"];

/// Sets the default transaction isolation of the database at `url` for every
/// new session, and checks that a new session sees it.
pub async fn set_default_isolation(url: &str, level: &str) {
    assert!(
        DEFAULT_ISOLATIONS.contains(&level),
        "unknown isolation level {level:?}"
    );
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the fresh database");
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("database name");
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{level}'"
    ))
    .execute(&mut conn)
    .await
    .expect("set the default isolation");
    let _ = conn.close().await;

    let mut fresh = sqlx::PgConnection::connect(url)
        .await
        .expect("connect again");
    let seen: String = sqlx::query_scalar("SHOW default_transaction_isolation")
        .fetch_one(&mut fresh)
        .await
        .expect("read the default isolation");
    assert_eq!(
        seen, level,
        "a new session starts with the database default"
    );
    let _ = fresh.close().await;
}
