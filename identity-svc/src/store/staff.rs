//! Staff accounts (operators, patronato, back office), kept in step with the configuration.

use super::Store;
use crate::domain::pin::PinHash;
use sportello_platform::now_millis;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct StaffRow {
    pub role: String,
    pub password_hash: PinHash,
}

impl Store {
    /// Creates or updates a staff account from the configuration.
    pub async fn put_staff(
        &self,
        username: &str,
        role: &str,
        hash: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO staff (username, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (username) DO UPDATE SET role = $2, \
             password_hash = $3, updated_at = $4",
        )
        .bind(username)
        .bind(role)
        .bind(hash)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Reserves a password attempt for a staff account (see [`Store::reserve_attempt`]).
    pub async fn reserve_staff_attempt(
        &self,
        username: &str,
        max: i64,
    ) -> Result<Option<StaffRow>, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE staff SET failed_attempts = failed_attempts + 1 WHERE username = $1 \
             AND locked_at IS NULL AND failed_attempts < $2 RETURNING role, password_hash",
        )
        .bind(username)
        .bind(max)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|row| {
            Ok(StaffRow {
                role: row.try_get("role")?,
                password_hash: PinHash::from_phc(row.try_get("password_hash")?),
            })
        })
        .transpose()
    }
}
