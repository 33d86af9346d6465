//! Failed UI logins, one row per failure, so every process on the database sees the same
//! count. The rule that turns failures into a lockout is the web layer's; this module only
//! records, reads, clears and prunes them.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{Result, Store, get};

impl Store {
    /// Records a failed login for `name` at `at`, and deletes every failure (of any name)
    /// from before `forget_before`, so the table holds no more than one window of failures.
    pub async fn record_login_failure(
        &self,
        name: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db().begin().await?;
        txn.execute_raw(self.stmt(
            "DELETE FROM login_failures WHERE failed_at < ?",
            vec![forget_before.into()],
        ))
        .await?;
        txn.execute_raw(self.stmt(
            "INSERT INTO login_failures (user_name, failed_at) VALUES (?, ?)",
            vec![name.into(), at.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The times of `name`'s failed logins at or after `since`, newest first, at most `limit`.
    pub async fn recent_login_failures(
        &self,
        name: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DateTime<Utc>>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT failed_at FROM login_failures WHERE user_name = ? AND failed_at >= ? \
                 ORDER BY failed_at DESC LIMIT ?",
                vec![
                    name.into(),
                    since.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        rows.iter().map(|r| get(r, "failed_at")).collect()
    }

    /// Forgets `name`'s failed logins (it just logged in).
    pub async fn clear_login_failures(&self, name: &str) -> Result<()> {
        self.db()
            .execute_raw(self.stmt(
                "DELETE FROM login_failures WHERE user_name = ?",
                vec![name.into()],
            ))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    on_every_backend! {
        login_failures_are_counted_per_name_cleared_and_pruned => failures_counted,
    }

    async fn failures_counted(store: Store) {
        // PostgreSQL keeps microseconds.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let window = Duration::minutes(15);
        for minutes in [20, 10, 5, 1] {
            let at = now - Duration::minutes(minutes);
            store
                .record_login_failure("ann", at, at - window)
                .await
                .expect("record");
        }
        store
            .record_login_failure("bob", now, now - window)
            .await
            .expect("record");
        let recent = store
            .recent_login_failures("ann", now - window, 10)
            .await
            .expect("read");
        assert_eq!(
            recent,
            [
                now - Duration::minutes(1),
                now - Duration::minutes(5),
                now - Duration::minutes(10)
            ],
            "newest first, only inside the window"
        );
        let newest = store
            .recent_login_failures("ann", now - window, 2)
            .await
            .expect("read");
        assert_eq!(newest.len(), 2, "the limit holds");
        // Later writes deleted the failure from 20 minutes ago.
        let all = store
            .recent_login_failures("ann", now - Duration::days(1), 10)
            .await
            .expect("read");
        assert_eq!(all.len(), 3, "old rows are deleted on write: {all:?}");

        store.clear_login_failures("ann").await.expect("clear");
        assert!(
            store
                .recent_login_failures("ann", now - window, 10)
                .await
                .expect("read")
                .is_empty()
        );
        assert_eq!(
            store
                .recent_login_failures("bob", now - window, 10)
                .await
                .expect("read"),
            [now],
            "another name keeps its failures"
        );
    }
}
