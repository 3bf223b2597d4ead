//! Ripristino in progress: the hashed confirmation code, its targets, attempts and expiry.

use super::Store;
use crate::domain::pin::PinHash;
use sportello_platform::now_millis;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct Recovery {
    pub code_hash: PinHash,
    pub targets: String,
    pub expires_at: i64,
}

impl Store {
    /// Reserves one attempt at a recovery's code (see [`Store::reserve_attempt`]); None when
    /// there is no live recovery or its attempts are used up.
    pub async fn reserve_recovery_attempt(
        &self,
        fiscal_code: &str,
        max: i64,
    ) -> Result<Option<Recovery>, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE recoveries SET attempts = attempts + 1 WHERE fiscal_code = $1 \
             AND attempts < $2 AND expires_at > $3 RETURNING code_hash, targets, expires_at",
        )
        .bind(fiscal_code)
        .bind(max)
        .bind(now_millis())
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|row| {
            Ok(Recovery {
                code_hash: PinHash::from_phc(row.try_get("code_hash")?),
                targets: row.try_get("targets")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }
}

/// Starts (or restarts) a recovery for the citizen. A restart replaces the code but not the count
/// of wrong codes already tried while the previous one was live, so restarting buys no guesses.
pub async fn put_recovery(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    code: &PinHash,
    targets: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recoveries (fiscal_code, code_hash, targets, attempts, expires_at, created_at) \
         VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (fiscal_code) DO UPDATE SET \
         code_hash = $2, targets = $3, expires_at = $4, created_at = $5, \
         attempts = CASE WHEN recoveries.expires_at > $5 THEN recoveries.attempts ELSE 0 END",
    )
    .bind(fiscal_code)
    .bind(code.as_phc())
    .bind(targets)
    .bind(expires_at)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Consumes a recovery: true for exactly one caller, so a code works once.
pub async fn consume_recovery(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    code: &PinHash,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM recoveries WHERE fiscal_code = $1 AND code_hash = $2")
        .bind(fiscal_code)
        .bind(code.as_phc())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends any pending recovery of the citizen (their PIN was revoked: no code may bring it back).
pub async fn cancel_recoveries(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM recoveries WHERE fiscal_code = $1")
        .bind(fiscal_code)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
