//! Staff accounts (operators, patronato, back office), kept in step with the configuration. A
//! password attempt is reserved before the hash comparison, as for PINs; the attempt that uses
//! up the allowance locks the account for a while (longer each time) and ends its sessions, in
//! one transaction.

use super::{end_sessions_of, Store};
use crate::domain::pin::PinHash;
use sportello_platform::now_millis;
use std::time::Duration;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StaffRow {
    pub role: String,
    #[sqlx(try_from = "String")]
    pub password_hash: PinHash,
    /// Lockouts since the last successful login: the next one lasts twice as long.
    pub lockouts: i64,
}

/// How long lockout number `lockouts + 1` lasts: `first`, doubling each time, at most 1024×.
pub fn lockout_length(first: Duration, lockouts: i64) -> Duration {
    first.saturating_mul(1 << lockouts.clamp(0, 10))
}

impl Store {
    /// Creates or updates a staff account from the configuration (enabling it again).
    pub async fn put_staff(
        &self,
        username: &str,
        role: &str,
        hash: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO staff (username, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (username) DO UPDATE SET role = $2, \
             password_hash = $3, updated_at = $4, disabled_at = NULL",
        )
        .bind(username)
        .bind(role)
        .bind(hash)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Disables every account not in `configured` and ends its sessions, in one transaction;
    /// returns the accounts disabled now.
    pub async fn disable_staff_except(
        &self,
        configured: &[String],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let enabled: Vec<String> =
            sqlx::query_scalar("SELECT username FROM staff WHERE disabled_at IS NULL")
                .fetch_all(&mut *tx)
                .await?;
        let removed: Vec<String> =
            enabled.into_iter().filter(|u| !configured.contains(u)).collect();
        for username in &removed {
            sqlx::query("UPDATE staff SET disabled_at = $2 WHERE username = $1")
                .bind(username)
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            end_sessions_of(&mut tx, username, None).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Whether `username` is a configured (enabled) staff account.
    pub async fn staff_enabled(&self, username: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM staff WHERE username = $1 AND disabled_at IS NULL")
                .bind(username)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Reserves a password attempt for an enabled, unlocked staff account (see
    /// [`Store::reserve_attempt`]); None when there is none or no attempt is left.
    pub async fn reserve_staff_attempt(
        &self,
        username: &str,
        max: i64,
    ) -> Result<Option<StaffRow>, sqlx::Error> {
        sqlx::query_as(
            "UPDATE staff SET failed_attempts = failed_attempts + 1 WHERE username = $1 \
             AND disabled_at IS NULL AND (locked_until IS NULL OR locked_until <= $3) \
             AND failed_attempts < $2 RETURNING role, password_hash, lockouts",
        )
        .bind(username)
        .bind(max)
        .bind(now_millis())
        .fetch_optional(&self.db.pool)
        .await
    }

    /// A reserved attempt failed: when it was the last one allowed, locks the account for
    /// `lockout_length(first, lockouts)` and ends its sessions. Returns whether it locked.
    pub async fn staff_attempt_failed(
        &self,
        username: &str,
        max: i64,
        seen: &StaffRow,
        first: Duration,
    ) -> Result<bool, sqlx::Error> {
        let length = lockout_length(first, seen.lockouts);
        let until =
            now_millis().saturating_add(i64::try_from(length.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.begin().await?;
        let locked = sqlx::query(
            "UPDATE staff SET locked_until = $3, lockouts = lockouts + 1, failed_attempts = 0 \
             WHERE username = $1 AND failed_attempts >= $2 AND lockouts = $4",
        )
        .bind(username)
        .bind(max)
        .bind(until)
        .bind(seen.lockouts)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if locked {
            end_sessions_of(&mut tx, username, None).await?;
        }
        tx.commit().await?;
        Ok(locked)
    }

    /// A reserved attempt succeeded: failures and lockouts count from zero again.
    pub async fn staff_attempt_succeeded(&self, username: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE staff SET failed_attempts = 0, lockouts = 0 WHERE username = $1")
            .bind(username)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Lifts a staff lockout at once (an administrator's decision), audited as `by`'s action.
    /// Returns whether the account exists.
    pub async fn unlock_staff(&self, username: &str, by: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let found = sqlx::query(
            "UPDATE staff SET failed_attempts = 0, lockouts = 0, locked_until = NULL, \
             locked_at = NULL WHERE username = $1",
        )
        .bind(username)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let outcome = if found { "OK" } else { "NOT_FOUND" };
        let detail = format!("staff account {username}");
        // An action on no citizen: it belongs to the administrator's own trail.
        let entry = super::Entry {
            operator_id: by,
            action: "UnlockStaff",
            fiscal_code: "",
            outcome,
            detail: &detail,
        };
        super::audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lockout_lasts_twice_as_long_as_the_last_up_to_a_bound() {
        let first = Duration::from_secs(60);
        assert_eq!(lockout_length(first, 0), first);
        assert_eq!(lockout_length(first, 3), first * 8);
        assert_eq!(lockout_length(first, 500), first * 1024);
    }
}
