//! notify-svc's tables.

use crate::domain::{channel_from_name, channel_name, MessageIds, NewMessage, Original, Secrets};
use sportello_platform::db::Backend;
use sportello_platform::db::Database;
use sportello_platform::{mask, now_millis};
use sportello_proto::notify::v1::Channel;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// Status of a message that is waiting for its (next) delivery attempt.
pub const QUEUED: &str = "QUEUED";
/// A dispatcher holds the message under a lease and is sending it.
pub const SENDING: &str = "SENDING";
/// The channel's provider took the message.
pub const SENT: &str = "SENT";
/// The message will not be sent: its last attempt's reason says why.
pub const FAILED: &str = "FAILED";

/// A message claimed for sending, with everything its channel needs. Never logged whole.
pub struct Due {
    pub id: String,
    pub fiscal_code: String,
    pub channel: Channel,
    pub address: String,
    pub template: String,
    /// Its parameters, secret ones included.
    pub params: BTreeMap<String, String>,
    /// Attempts before this one.
    pub attempts: i64,
    /// The lease this claim holds: an outcome is recorded only under it.
    pub lease_until: i64,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent { provider: String, provider_message_id: Option<String> },
    RetryAt { at: i64, reason: String },
    Failed { reason: String },
}

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

/// A stored message as a lookup shows it: no secrets, and the address already masked, so the full
/// address never leaves this module on this path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub id: String,
    pub fiscal_code: String,
    /// The stored channel name (`SMS`, `EMAIL`, …).
    pub channel: String,
    pub masked_address: String,
    pub template: String,
    pub status: String,
    pub last_error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

fn to_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("string maps serialise")
}

fn from_json(column: &str, json: &str) -> Result<BTreeMap<String, String>, sqlx::Error> {
    // serde_json's message may quote the value it choked on, which may be a secret: say only where.
    serde_json::from_str(json).map_err(|_| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: "not a JSON object of strings".into(),
    })
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores `message` unless one with the same idempotency key exists; either way returns the
    /// stored message.
    pub async fn enqueue(&self, message: &NewMessage) -> Result<Stored, sqlx::Error> {
        self.insert_unless_known(message).await?;
        self.by_idempotency_key(&message.idempotency_key).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// The message stored under `key`, if any.
    pub async fn by_idempotency_key(&self, key: &str) -> Result<Option<Stored>, sqlx::Error> {
        let row = sqlx::query("SELECT id, status FROM messages WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|row| Ok(Stored { id: row.try_get("id")?, status: row.try_get("status")? }))
            .transpose()
    }

    /// Inserts `message` as QUEUED; does nothing when its idempotency key is already stored.
    async fn insert_unless_known(&self, message: &NewMessage) -> Result<(), sqlx::Error> {
        let now = now_millis();
        let secrets = (!message.secret_params.is_empty()).then(|| to_json(&message.secret_params));
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
        .bind(to_json(&message.params))
        .bind(secrets)
        .bind(QUEUED)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// The stored messages among `ids`, in the order asked; unknown ids are left out.
    pub async fn batch_get(&self, ids: &MessageIds) -> Result<Vec<Summary>, sqlx::Error> {
        let distinct = ids.distinct();
        let placeholders =
            (1..=distinct.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT id, fiscal_code, channel, address, template, status, last_error, \
             created_at, updated_at FROM messages WHERE id IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql);
        for id in &distinct {
            query = query.bind(*id);
        }
        let mut found = HashMap::new();
        for row in query.fetch_all(&self.db.pool).await? {
            let summary = summary(&row)?;
            found.insert(summary.id.clone(), summary);
        }
        Ok(ids.as_slice().iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    /// A citizen's messages, newest first, after the `(created_at, id)` position `before`.
    pub async fn of_citizen(
        &self,
        fiscal_code: &str,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<Summary>, sqlx::Error> {
        let (at, id) = before.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(
            "SELECT id, fiscal_code, channel, address, template, status, last_error, created_at, \
             updated_at FROM messages WHERE fiscal_code = $1 \
             AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(fiscal_code)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(summary).collect()
    }

    /// The message `id`, with what a resend copies from it.
    pub async fn original(&self, id: &str) -> Result<Option<Original>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, fiscal_code, channel, address, template, params, secret_params, \
             secrets_purged_at FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored_channel: String = row.try_get("channel")?;
        let channel = channel_from_name(&stored_channel).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown stored channel {stored_channel:?}").into())
        })?;
        let purged_at: Option<i64> = row.try_get("secrets_purged_at")?;
        let secrets = match purged_at {
            Some(_) => Secrets::Purged,
            None => {
                let json: Option<String> = row.try_get("secret_params")?;
                Secrets::Kept(match json {
                    Some(json) => from_json("secret_params", &json)?,
                    None => BTreeMap::new(),
                })
            }
        };
        let params: String = row.try_get("params")?;
        Ok(Some(Original {
            id: row.try_get("id")?,
            fiscal_code: row.try_get("fiscal_code")?,
            channel,
            address: row.try_get("address")?,
            template: row.try_get("template")?,
            params: from_json("params", &params)?,
            secrets,
        }))
    }
}

impl Store {
    /// Claims up to `limit` due messages for `lease_ms`: one statement, so two dispatchers never
    /// hold the same message (PostgreSQL skips rows another is claiming; SQLite has one writer).
    /// A message whose dispatcher died while SENDING is due again once its lease has run out.
    pub async fn claim_due(&self, limit: i64, lease_ms: i64) -> Result<Vec<Due>, sqlx::Error> {
        let lock = match self.db.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let now = now_millis();
        let lease_until = now.saturating_add(lease_ms);
        let sql = format!(
            "UPDATE messages SET status = '{SENDING}', lease_until = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM messages WHERE status IN ('{QUEUED}', '{SENDING}') \
             AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until <= $2) \
             ORDER BY next_attempt_at, id LIMIT $3 {lock}) \
             AND (lease_until IS NULL OR lease_until <= $2) \
             RETURNING id, fiscal_code, channel, address, template, params, secret_params, attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let stored_channel: String = row.try_get("channel")?;
                let channel = channel_from_name(&stored_channel).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown stored channel {stored_channel:?}").into())
                })?;
                let params: String = row.try_get("params")?;
                let mut params = from_json("params", &params)?;
                let secrets: Option<String> = row.try_get("secret_params")?;
                if let Some(secrets) = secrets {
                    params.extend(from_json("secret_params", &secrets)?);
                }
                Ok(Due {
                    id: row.try_get("id")?,
                    fiscal_code: row.try_get("fiscal_code")?,
                    channel,
                    address: row.try_get("address")?,
                    template: row.try_get("template")?,
                    params,
                    attempts: row.try_get("attempts")?,
                    lease_until,
                })
            })
            .collect()
    }

    /// Records how an attempt at `due` ended, if `due`'s lease is still the message's (a
    /// dispatcher whose lease ran out must not overwrite what another has since recorded).
    /// A sent message's secrets are purged in the same statement.
    pub async fn settle(&self, due: &Due, outcome: &Outcome) -> Result<bool, sqlx::Error> {
        let now = now_millis();
        let query = match outcome {
            Outcome::Sent { provider, provider_message_id } => sqlx::query(
                "UPDATE messages SET status = $3, attempts = attempts + 1, lease_until = NULL, \
                 provider = $4, provider_message_id = $5, sent_at = $6, updated_at = $6, \
                 last_error = NULL, secret_params = NULL, secrets_purged_at = $6 \
                 WHERE id = $1 AND lease_until = $2",
            )
            .bind(&due.id)
            .bind(due.lease_until)
            .bind(SENT)
            .bind(provider)
            .bind(provider_message_id)
            .bind(now),
            Outcome::RetryAt { at, reason } => sqlx::query(
                "UPDATE messages SET status = $3, attempts = attempts + 1, lease_until = NULL, \
                 next_attempt_at = $4, last_error = $5, updated_at = $6 \
                 WHERE id = $1 AND lease_until = $2",
            )
            .bind(&due.id)
            .bind(due.lease_until)
            .bind(QUEUED)
            .bind(*at)
            .bind(reason)
            .bind(now),
            // The secrets stay: the contact center may resend a failed first half elsewhere.
            Outcome::Failed { reason } => sqlx::query(
                "UPDATE messages SET status = $3, attempts = attempts + 1, lease_until = NULL, \
                 last_error = $4, updated_at = $5 WHERE id = $1 AND lease_until = $2",
            )
            .bind(&due.id)
            .bind(due.lease_until)
            .bind(FAILED)
            .bind(reason)
            .bind(now),
        };
        Ok(query.execute(&self.db.pool).await?.rows_affected() == 1)
    }
}

fn summary(row: &AnyRow) -> Result<Summary, sqlx::Error> {
    let address: String = row.try_get("address")?;
    Ok(Summary {
        id: row.try_get("id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        channel: row.try_get("channel")?,
        masked_address: mask::any(&address),
        template: row.try_get("template")?,
        status: row.try_get("status")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
