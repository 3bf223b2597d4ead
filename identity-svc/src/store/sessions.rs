//! Sessions: one row per login, its refresh token's hash, and when it was ended.

use super::Store;
use sportello_platform::now_millis;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub subject: String,
    pub role: String,
    pub level: String,
    pub amr: String,
    pub acr: Option<String>,
    pub refresh_hash: String,
    pub created_at: i64,
    pub refresh_expires_at: i64,
    pub previous_access_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Records a new session; its previous-access time is the start of the subject's last one.
    pub async fn create_session(&self, r: &SessionRow) -> Result<Option<i64>, sqlx::Error> {
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT MAX(created_at) FROM sessions WHERE subject = $1")
                .bind(&r.subject)
                .fetch_one(&self.db.pool)
                .await?;
        sqlx::query(
            "INSERT INTO sessions (id, subject, role, level, amr, acr, refresh_hash, created_at, \
             refresh_expires_at, previous_access_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id)
        .bind(&r.subject)
        .bind(&r.role)
        .bind(&r.level)
        .bind(&r.amr)
        .bind(&r.acr)
        .bind(&r.refresh_hash)
        .bind(r.created_at)
        .bind(r.refresh_expires_at)
        .bind(previous)
        .execute(&self.db.pool)
        .await?;
        Ok(previous)
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, subject, role, level, amr, acr, refresh_hash, created_at, \
             refresh_expires_at, previous_access_at, revoked_at FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await
    }

    /// Replaces a live session's refresh token, provided `old` is still the current one: a
    /// refresh token works once, even when two refreshes race.
    pub async fn rotate_refresh(
        &self,
        id: &str,
        old: &str,
        new: &str,
        expires_at: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sessions SET refresh_hash = $3, refresh_expires_at = $4 WHERE id = $1 \
             AND refresh_hash = $2 AND revoked_at IS NULL AND refresh_expires_at > $5",
        )
        .bind(id)
        .bind(old)
        .bind(new)
        .bind(expires_at)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn revoke_session(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now_millis())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Sessions revoked at or after `since`.
    pub async fn revoked_since(&self, since: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM sessions WHERE revoked_at >= $1")
            .bind(since)
            .fetch_all(&self.db.pool)
            .await
    }
}

/// Ends every live session of `subject` except `keep` (the session that made the change, when
/// it may go on), inside the caller's transaction: a credential's change and the end of the
/// sessions built on it commit together. Returns how many sessions ended.
pub async fn end_sessions_of(
    conn: &mut sqlx::AnyConnection,
    subject: &str,
    keep: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $3 WHERE subject = $1 AND revoked_at IS NULL \
         AND id <> $2",
    )
    .bind(subject)
    .bind(keep.unwrap_or(""))
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
