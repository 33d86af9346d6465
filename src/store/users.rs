//! Web UI accounts and login sessions. Passwords arrive already hashed (argon2, by the web
//! layer) and sessions are keyed by the SHA-256 of their cookie value: this module never sees
//! a password or a usable session token.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{Result, Store, get};

/// What a user may do in the web UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads every page; changes nothing.
    Viewer,
    /// Also triggers and cancels runs, clears tasks, pauses and unpauses workflows.
    Operator,
    /// Everything an operator may do.
    Admin,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may change things (start, cancel, clear, pause).
    pub fn may_act(self) -> bool {
        self >= Role::Operator
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of viewer, operator, admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role; use viewer, operator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// An argon2 hash in PHC string format.
    pub password_hash: String,
    pub role: Role,
}

/// A user as `sluice user list` shows it: no password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// When the password or role last changed.
    pub updated_at: DateTime<Utc>,
}

/// A live session, as found by its token hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_name: String,
    pub role: Role,
    /// The token every form of this session must send back.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn role_of(row: &sea_orm::QueryResult) -> Result<Role> {
    get::<String>(row, "role")?
        .parse()
        .map_err(|e: UnknownRole| super::StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Creates a user or replaces its password and role. The user's sessions end, so a new
    /// password (or a lower role) takes effect at once.
    pub async fn upsert_user(&self, name: &str, password_hash: &str, role: Role) -> Result<()> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        txn.execute_raw(self.stmt(
            "INSERT INTO users (name, password_hash, role, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET \
             password_hash = excluded.password_hash, role = excluded.role, \
             updated_at = excluded.updated_at",
            vec![
                name.into(),
                password_hash.into(),
                role.as_str().into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?;
        txn.execute_raw(self.stmt(
            "DELETE FROM sessions WHERE user_name = ?",
            vec![name.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT name, password_hash, role FROM users WHERE name = ?",
                vec![name.into()],
            ))
            .await?;
        row.map(|r| {
            Ok(UserRecord {
                name: get(&r, "name")?,
                password_hash: get(&r, "password_hash")?,
                role: role_of(&r)?,
            })
        })
        .transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserSummary>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT name, role, created_at, updated_at FROM users ORDER BY name",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UserSummary {
                    name: get(r, "name")?,
                    role: role_of(r)?,
                    created_at: get(r, "created_at")?,
                    updated_at: get(r, "updated_at")?,
                })
            })
            .collect()
    }

    /// Deletes a user and ends its sessions at once. Returns whether there was such a user.
    pub async fn remove_user(&self, name: &str) -> Result<bool> {
        let txn = self.db().begin().await?;
        txn.execute_raw(self.stmt(
            "DELETE FROM sessions WHERE user_name = ?",
            vec![name.into()],
        ))
        .await?;
        let removed = txn
            .execute_raw(self.stmt("DELETE FROM users WHERE name = ?", vec![name.into()]))
            .await?;
        txn.commit().await?;
        Ok(removed.rows_affected() > 0)
    }

    /// Records a session; `token_hash` is the SHA-256 of the cookie value. Sessions that have
    /// expired are deleted on the way, so the table stays as small as the live sessions.
    pub async fn create_session(
        &self,
        token_hash: &str,
        session: &SessionRecord,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let txn = self.db().begin().await?;
        txn.execute_raw(self.stmt(
            "DELETE FROM sessions WHERE expires_at <= ?",
            vec![now.into()],
        ))
        .await?;
        txn.execute_raw(self.stmt(
            "INSERT INTO sessions (token_hash, user_name, role, csrf_token, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                token_hash.into(),
                session.user_name.as_str().into(),
                session.role.as_str().into(),
                session.csrf_token.as_str().into(),
                now.into(),
                session.expires_at.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The session with this token hash, unless it has expired by `now`.
    pub async fn session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT user_name, role, csrf_token, expires_at FROM sessions \
                 WHERE token_hash = ? AND expires_at > ?",
                vec![token_hash.into(), now.into()],
            ))
            .await?;
        row.map(|r| {
            Ok(SessionRecord {
                user_name: get(&r, "user_name")?,
                role: role_of(&r)?,
                csrf_token: get(&r, "csrf_token")?,
                expires_at: get(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a session (logout). Returns whether there was one.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let result = self
            .db()
            .execute_raw(self.stmt(
                "DELETE FROM sessions WHERE token_hash = ?",
                vec![token_hash.into()],
            ))
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[tokio::test]
    async fn users_are_created_and_replaced() {
        for backend in crate::store::conformance::backends().await {
            eprintln!("users_are_created_and_replaced: on {}", backend.name);
            users_round_trip(backend.store.clone()).await;
            backend.finish().await;
        }
    }

    #[tokio::test]
    async fn sessions_expire_and_end_with_a_new_password() {
        for backend in crate::store::conformance::backends().await {
            eprintln!(
                "sessions_expire_and_end_with_a_new_password: on {}",
                backend.name
            );
            sessions_lifecycle(backend.store.clone()).await;
            backend.finish().await;
        }
    }

    async fn users_round_trip(store: Store) {
        assert_eq!(store.user("ann").await.expect("read"), None);
        store
            .upsert_user("ann", "hash1", Role::Viewer)
            .await
            .expect("create");
        store
            .upsert_user("ann", "hash2", Role::Operator)
            .await
            .expect("replace");
        let ann = store.user("ann").await.expect("read").expect("ann exists");
        assert_eq!(
            (ann.password_hash.as_str(), ann.role),
            ("hash2", Role::Operator)
        );
        store
            .upsert_user("abe", "hash3", Role::Admin)
            .await
            .expect("create");
        let listed: Vec<(String, Role)> = store
            .users()
            .await
            .expect("list")
            .into_iter()
            .map(|u| (u.name, u.role))
            .collect();
        assert_eq!(
            listed,
            [
                ("abe".to_owned(), Role::Admin),
                ("ann".to_owned(), Role::Operator)
            ]
        );
    }

    #[tokio::test]
    async fn removing_a_user_ends_its_sessions() {
        for backend in crate::store::conformance::backends().await {
            eprintln!("removing_a_user_ends_its_sessions: on {}", backend.name);
            let store = backend.store.clone();
            let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
            store
                .upsert_user("cid", "h", Role::Operator)
                .await
                .expect("user");
            let session = SessionRecord {
                user_name: "cid".into(),
                role: Role::Operator,
                csrf_token: "csrf".into(),
                expires_at: now + Duration::hours(1),
            };
            store
                .create_session("cid-token", &session, now)
                .await
                .expect("session");
            assert!(store.remove_user("cid").await.expect("remove"));
            assert_eq!(store.user("cid").await.expect("read"), None);
            assert_eq!(store.session("cid-token", now).await.expect("read"), None);
            assert!(!store.remove_user("cid").await.expect("remove again"));
            backend.finish().await;
        }
    }

    async fn sessions_lifecycle(store: Store) {
        // PostgreSQL keeps microseconds.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let session = |user: &str, expires_at| SessionRecord {
            user_name: user.into(),
            role: Role::Operator,
            csrf_token: "csrf".into(),
            expires_at,
        };
        store
            .upsert_user("bob", "h", Role::Operator)
            .await
            .expect("user");
        store
            .create_session("t1", &session("bob", now + Duration::hours(1)), now)
            .await
            .expect("session");
        store
            .create_session("old", &session("bob", now + Duration::seconds(5)), now)
            .await
            .expect("session");
        let found = store.session("t1", now).await.expect("read");
        assert_eq!(found, Some(session("bob", now + Duration::hours(1))));
        assert_eq!(
            store
                .session("old", now + Duration::seconds(6))
                .await
                .expect("read"),
            None,
            "an expired session is not found"
        );
        // A later login sweeps expired rows away.
        store
            .create_session(
                "t2",
                &session("bob", now + Duration::hours(1)),
                now + Duration::minutes(1),
            )
            .await
            .expect("session");
        assert!(!store.delete_session("old").await.expect("delete"), "swept");
        assert!(store.delete_session("t2").await.expect("logout"));
        // A new password ends every session of the user.
        store
            .upsert_user("bob", "h2", Role::Viewer)
            .await
            .expect("new password");
        assert_eq!(store.session("t1", now).await.expect("read"), None);
    }

    #[test]
    fn roles_parse_and_order() {
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
        assert!(!Role::Viewer.may_act());
        assert!(Role::Operator.may_act() && Role::Admin.may_act());
    }
}
