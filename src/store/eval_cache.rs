//! The `eval` operator's response cache: a stored reply per request key (the SHA-256 of the
//! target, model, rendered prompt and parameters), so an identical request is answered from
//! here instead of being paid for again. What a key covers is the operator's business; this
//! module only keeps and reads the rows.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::{Result, Store, get};

impl Store {
    /// The stored reply for `key`, if there is one.
    pub async fn eval_cache_get(&self, key: &str) -> Result<Option<String>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT response FROM eval_cache WHERE cache_key = ?",
                vec![key.into()],
            ))
            .await?;
        row.map(|r| get(&r, "response")).transpose()
    }

    /// Keeps `response` for `key`. The first reply stored for a key stays: two tries that
    /// asked at once got equivalent answers, and either will do.
    pub async fn eval_cache_put(&self, key: &str, response: &str, at: DateTime<Utc>) -> Result<()> {
        self.db()
            .execute_raw(self.stmt(
                "INSERT INTO eval_cache (cache_key, response, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (cache_key) DO NOTHING",
                vec![key.into(), response.into(), at.into()],
            ))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    on_every_backend! {
        eval_cache_keeps_the_first_reply_per_key => first_reply_kept,
    }

    async fn first_reply_kept(store: Store) {
        assert_eq!(store.eval_cache_get("k1").await.expect("read"), None);
        store
            .eval_cache_put("k1", r#"{"text":"a"}"#, Utc::now())
            .await
            .expect("put");
        store
            .eval_cache_put("k1", r#"{"text":"b"}"#, Utc::now())
            .await
            .expect("a second put is not an error");
        store
            .eval_cache_put("k2", r#"{"text":"c"}"#, Utc::now())
            .await
            .expect("put");
        assert_eq!(
            store.eval_cache_get("k1").await.expect("read").as_deref(),
            Some(r#"{"text":"a"}"#)
        );
        assert_eq!(
            store.eval_cache_get("k2").await.expect("read").as_deref(),
            Some(r#"{"text":"c"}"#)
        );
    }
}
