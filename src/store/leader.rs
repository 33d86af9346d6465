//! Leadership: which `serve` process runs the scheduler, the cron service and recovery when
//! several share a PostgreSQL database. The leader holds a session-level advisory lock on a
//! connection of its own; PostgreSQL releases it when that connection ends, so a leader that
//! dies (even by `kill -9`) frees the lock and a standby's next attempt takes it. SQLite has a
//! single process, which always leads.

use std::time::Duration;

use sea_orm::DbBackend;
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::{self, Connection};

use super::{Result, Store, StoreError, notify};

/// Held while this process leads; dropping it gives leadership up.
pub enum Leadership {
    /// The only process on the database (SQLite).
    Sole,
    /// Holds the advisory lock on this connection.
    Locked(PgConnection),
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leadership::Sole => f.write_str("Leadership::Sole"),
            Leadership::Locked(_) => f.write_str("Leadership::Locked"),
        }
    }
}

impl Leadership {
    /// Returns when leadership is lost: the lock's connection stopped answering (checked every
    /// `check_every`). Never returns for `Sole`.
    pub async fn lost(&mut self, check_every: Duration) {
        let Leadership::Locked(conn) = self else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(check_every).await;
            let alive = tokio::time::timeout(check_every, conn.ping()).await;
            if !matches!(alive, Ok(Ok(()))) {
                return;
            }
        }
    }
}

/// The lock key of a database schema's leader: schemas are separate installations, while
/// advisory locks are per database.
fn lock_key(channel: &str) -> i64 {
    // FNV-1a: stable across versions and machines, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("sluice-leader:{channel}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// The advisory lock key that serialises migrations ("sluice:migrate").
const MIGRATION_LOCK: i64 = 0x736c_7569_6365_6d67;

/// Runs `work` while holding the migration lock on a connection of its own (released when
/// that connection closes, even if this process dies half-way).
pub(super) async fn with_migration_lock<T>(
    url: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T> {
    let mut conn = PgConnection::connect(url).await.map_err(StoreError::Lock)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut conn)
        .await
        .map_err(StoreError::Lock)?;
    let result = work.await;
    let _ = conn.close().await;
    Ok(result)
}

impl Store {
    /// Becomes the leader if no other process is: `Some` while this process leads.
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        let Some(cluster) = self.cluster.as_deref() else {
            debug_assert_ne!(self.backend(), DbBackend::Postgres);
            return Ok(Some(Leadership::Sole));
        };
        let mut conn = PgConnection::connect(&cluster.url)
            .await
            .map_err(StoreError::Lock)?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(cluster.channel(notify::Channel::Control)))
            .fetch_one(&mut conn)
            .await
            .map_err(StoreError::Lock)?;
        if locked {
            Ok(Some(Leadership::Locked(conn)))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::StoreConfig;
    use crate::store::conformance::backends;

    #[tokio::test]
    async fn one_process_leads_and_a_standby_takes_over_when_it_lets_go() {
        for backend in backends().await {
            let store = backend.store.clone();
            let Some(cluster) = store.cluster.clone() else {
                // SQLite: the only process always leads.
                assert!(matches!(
                    store.try_lead().await.expect("lead"),
                    Some(Leadership::Sole)
                ));
                backend.finish().await;
                continue;
            };
            let other = Store::open(&StoreConfig::new(cluster.url.clone()))
                .await
                .expect("a second process's store");
            let leader = store.try_lead().await.expect("lead").expect("first leads");
            assert!(
                other.try_lead().await.expect("try").is_none(),
                "a second leader while the first holds the lock"
            );
            drop(leader);
            // The lock goes with the connection, which closes in the background.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if other.try_lead().await.expect("try").is_some() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the standby never led"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            backend.finish().await;
        }
    }

    #[test]
    fn keys_differ_per_schema_and_are_stable() {
        assert_ne!(lock_key("sluice_a"), lock_key("sluice_b"));
        assert_eq!(lock_key("sluice_public"), lock_key("sluice_public"));
    }
}
