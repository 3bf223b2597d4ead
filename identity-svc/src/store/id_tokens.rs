//! Identity providers' ID tokens already used for a login, kept until they expire: in the
//! database, so that every identity-svc instance refuses a replayed one.

use super::Store;
use sportello_platform::now_millis;

impl Store {
    /// Spends the ID token known by `key`, usable until `expires_at` (milliseconds): true the
    /// first time, false ever after (one conditional insert, so two racing logins cannot both
    /// win). Tokens past their expiry are forgotten on the way.
    pub async fn spend_id_token(&self, key: &str, expires_at: i64) -> Result<bool, sqlx::Error> {
        sqlx::query("DELETE FROM used_id_tokens WHERE expires_at < $1")
            .bind(now_millis())
            .execute(&self.db.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO used_id_tokens (token_key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (token_key) DO NOTHING",
        )
        .bind(key)
        .bind(expires_at)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
