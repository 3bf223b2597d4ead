//! notify-svc's tables.

use crate::domain::{channel_name, NewMessage};
use sportello_platform::db::Database;
use sportello_platform::now_millis;
use sqlx::Row;

/// Status of a message that is waiting for its first delivery attempt.
pub const QUEUED: &str = "QUEUED";

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

/// A stored message as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    pub status: String,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores `message` unless one with the same idempotency key exists; either way returns the
    /// stored message.
    pub async fn enqueue(&self, message: &NewMessage) -> Result<Stored, sqlx::Error> {
        let now = now_millis();
        let params = serde_json::to_string(&message.params).expect("string maps serialise");
        let secrets = (!message.secret_params.is_empty())
            .then(|| serde_json::to_string(&message.secret_params).expect("string maps serialise"));
        sqlx::query(
            "INSERT INTO messages (id, idempotency_key, fiscal_code, channel, address, template, \
             params, secret_params, status, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $10, $10) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&message.idempotency_key)
        .bind(&message.fiscal_code)
        .bind(channel_name(message.channel))
        .bind(&message.address)
        .bind(&message.template)
        .bind(params)
        .bind(secrets)
        .bind(QUEUED)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        let row = sqlx::query("SELECT id, status FROM messages WHERE idempotency_key = $1")
            .bind(&message.idempotency_key)
            .fetch_one(&self.db.pool)
            .await?;
        Ok(Stored {
            id: row.try_get("id")?,
            status: row.try_get("status")?,
        })
    }
}
