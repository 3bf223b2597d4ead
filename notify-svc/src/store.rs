//! notify-svc's tables. A message's secret parameters are sealed for its row before they are
//! written (`sportello_platform::sealed`), opened only to render the message, and purged once it
//! is sent.

use crate::domain::{channel_from_name, channel_name, MessageIds, NewMessage, Original, Secrets};
use secrecy::{ExposeSecret, ExposeSecretMut};
use sportello_platform::db::{storable, Backend, Database};
use sportello_platform::group_commit::GroupCommit;
use sportello_platform::sealed::{Keyring, OpenError, Params, Sealed, SecretParams};
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
/// The provider reported the message delivered.
pub const DELIVERED: &str = "DELIVERED";

/// What a lookup reads of a message.
const SUMMARY_COLUMNS: &str = "id, fiscal_code, channel, address, template, status, last_error, \
    attempts, created_at, updated_at, sent_at, delivered_at, fallback_message_id, fallback_channel";

/// The table, also the associated data of its rows' sealed secrets.
const TABLE: &str = "messages";

/// A message claimed for sending, with everything its channel needs. Never logged whole.
pub struct Due {
    pub id: String,
    pub fiscal_code: String,
    pub channel: Channel,
    pub address: String,
    pub template: String,
    /// Its parameters, secret ones aside.
    pub params: BTreeMap<String, String>,
    /// Its secret parameters as stored: sealed (see [`Store::params_of`]).
    pub secrets: Option<Sealed>,
    /// Attempts before this one.
    pub attempts: i64,
    /// The lease this claim holds: an outcome is recorded only under it.
    pub lease_until: i64,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        provider: String,
        provider_message_id: Option<String>,
    },
    RetryAt {
        at: i64,
        reason: String,
    },
    /// Not attempted (the channel was over its rate): due again at `at`.
    Postponed {
        at: i64,
    },
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    /// The hot writes — enqueues, the dispatcher's claims and the outcomes it records — share
    /// transactions (and so fsyncs) through one writer: see `sportello_platform::group_commit`.
    writer: GroupCommit,
    /// What secret parameters are sealed under.
    keys: Keyring,
}

/// The most writes one transaction takes.
const MAX_WRITES_PER_COMMIT: usize = 256;

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
    pub attempts: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    /// The message sent on the fallback channel after this one failed, and that channel's
    /// stored name.
    pub fallback: Option<(String, String)>,
}

impl Summary {
    /// Whether the message's state can still change (it is not DELIVERED or FAILED).
    pub fn is_final(&self) -> bool {
        self.status == DELIVERED || self.status == FAILED
    }
}

/// What a provider's receipt says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receipt {
    Delivered,
    Failed { reason: String },
}

/// An operator's lookup, for the audit trail.
#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    pub operator_id: &'a str,
    pub action: &'a str,
    pub fiscal_code: &'a str,
    pub detail: &'a str,
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

/// The message stored under idempotency key `key`, if any.
async fn stored_under(
    conn: &mut sqlx::AnyConnection,
    key: &str,
) -> Result<Option<Stored>, sqlx::Error> {
    let row = sqlx::query("SELECT id, status FROM messages WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| Ok(Stored { id: row.try_get("id")?, status: row.try_get("status")? })).transpose()
}

/// A message to insert: its row id, and its secret parameters sealed for that row.
struct Insert {
    id: String,
    message: NewMessage,
    secrets: Option<Sealed>,
}

/// Inserts `message` as QUEUED; does nothing when its idempotency key is already stored.
async fn insert_unless_known(
    conn: &mut sqlx::AnyConnection,
    Insert { id, message, secrets }: &Insert,
) -> Result<(), sqlx::Error> {
    let now = now_millis();
    let fallback = message.fallback.as_ref();
    sqlx::query(
        "INSERT INTO messages (id, idempotency_key, fiscal_code, channel, address, template, \
         params, secret_params, secrets_key, status, attempts, next_attempt_at, created_at, \
         updated_at, fallback_channel, fallback_address) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $11, $11, $12, $13) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(id)
    .bind(&message.idempotency_key)
    .bind(&message.fiscal_code)
    .bind(channel_name(message.channel))
    .bind(&message.address)
    .bind(&message.template)
    .bind(to_json(&message.params))
    .bind(secrets.as_ref().map(|s| s.ciphertext.as_str()))
    .bind(secrets.as_ref().map(|s| s.key_id.as_str()))
    .bind(QUEUED)
    .bind(now)
    .bind(fallback.map(|f| channel_name(f.channel)))
    .bind(fallback.map(|f| f.address.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Messages waiting to go (queued or being sent) per channel: how many, and when the oldest
    /// was accepted (Unix ms).
    pub async fn queues(&self) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS waiting, MIN(created_at) AS oldest FROM messages \
             WHERE status IN ('QUEUED', 'SENDING') GROUP BY channel",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("waiting")?, r.try_get("oldest")?)))
            .collect()
    }

    /// The store of `db`, with its writer of enqueues (started here: call within a runtime),
    /// sealing secret parameters under `keys`.
    pub fn new(db: Database, keys: Keyring) -> Self {
        let writer = GroupCommit::start(&db, MAX_WRITES_PER_COMMIT);
        Self { db, writer, keys }
    }

    /// Seals the secrets rows written before sealing kept in clear (see
    /// [`sportello_platform::sealed::seal_cleartext_rows`]).
    pub async fn seal_cleartext_messages(&self) -> Result<u64, sqlx::Error> {
        sportello_platform::sealed::seal_cleartext_rows(&self.db.pool, &self.keys, TABLE).await
    }

    /// Stores `message` unless one with the same idempotency key exists; either way returns the
    /// stored message, once it is committed (in a transaction shared with concurrent enqueues).
    pub async fn enqueue(&self, message: &NewMessage) -> Result<Stored, sqlx::Error> {
        // Sealed here, by the caller's task, rather than by the one writer all enqueues share.
        let id = uuid::Uuid::now_v7().to_string();
        let secrets = (!message.secret_params.is_empty())
            .then(|| self.keys.seal_params(TABLE, &id, &message.secret_params));
        let insert = Insert { id, message: message.clone(), secrets };
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    insert_unless_known(conn, &insert).await?;
                    stored_under(conn, &insert.message.idempotency_key)
                        .await?
                        .ok_or(sqlx::Error::RowNotFound)
                })
            }))
            .await
    }

    /// The message stored under `key`, if any.
    pub async fn by_idempotency_key(&self, key: &str) -> Result<Option<Stored>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        stored_under(&mut conn, key).await
    }

    /// The stored messages among `ids`, in the order asked; unknown ids are left out.
    pub async fn batch_get(&self, ids: &MessageIds) -> Result<Vec<Summary>, sqlx::Error> {
        let distinct = ids.distinct();
        let placeholders =
            (1..=distinct.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM messages WHERE id IN ({placeholders})");
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
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM messages WHERE fiscal_code = $1 \
             AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
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
             secrets_key, secrets_purged_at FROM messages WHERE id = $1",
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
        let id: String = row.try_get("id")?;
        let purged_at: Option<i64> = row.try_get("secrets_purged_at")?;
        let secrets = match purged_at {
            Some(_) => Secrets::Purged,
            None => match self.keys.open_params(TABLE, &id, Sealed::of_row(&row)?.as_ref()) {
                Ok(opened) => Secrets::Kept(opened.expose_secret().0.clone()),
                // As good as purged: no one can recover them.
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "secret parameters do not open");
                    Secrets::Purged
                }
            },
        };
        let params: String = row.try_get("params")?;
        Ok(Some(Original {
            id,
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
             RETURNING id, fiscal_code, channel, address, template, params, secret_params, \
             secrets_key, attempts"
        );
        let rows = self
            .writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    sqlx::query(&sql).bind(lease_until).bind(now).bind(limit).fetch_all(conn).await
                })
            }))
            .await?;
        rows.iter()
            .map(|row| {
                let stored_channel: String = row.try_get("channel")?;
                let channel = channel_from_name(&stored_channel).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown stored channel {stored_channel:?}").into())
                })?;
                let params: String = row.try_get("params")?;
                Ok(Due {
                    id: row.try_get("id")?,
                    fiscal_code: row.try_get("fiscal_code")?,
                    channel,
                    address: row.try_get("address")?,
                    template: row.try_get("template")?,
                    params: from_json("params", &params)?,
                    secrets: Sealed::of_row(row)?,
                    attempts: row.try_get("attempts")?,
                    lease_until,
                })
            })
            .collect()
    }

    /// All of `due`'s parameters, secret ones opened, to render it with.
    pub fn params_of(&self, due: &Due) -> Result<SecretParams, OpenError> {
        let mut all = self.keys.open_params(TABLE, &due.id, due.secrets.as_ref())?;
        let Params(secrets) = all.expose_secret_mut();
        for (name, value) in &due.params {
            secrets.entry(name.clone()).or_insert_with(|| value.clone());
        }
        Ok(all)
    }

    /// Records how an attempt at `due` ended, if `due`'s lease is still the message's (a
    /// dispatcher whose lease ran out must not overwrite what another has since recorded).
    /// A sent message's secrets are purged in the same statement.
    pub async fn settle(&self, due: &Due, outcome: &Outcome) -> Result<bool, sqlx::Error> {
        let (id, lease, outcome) = (due.id.clone(), due.lease_until, outcome.clone());
        let keys = self.keys.clone();
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move { record(conn, &keys, &id, lease, &outcome).await })
            }))
            .await
    }

    /// Records a provider's receipt for the message it knows as `provider_message_id`; returns
    /// the message as it stands afterwards, or `None` when no message has that provider id. Only
    /// a SENT message changes: a receipt repeated, or one for a message already final, is a no-op.
    pub async fn receipt(
        &self,
        provider: &str,
        provider_message_id: &str,
        receipt: &Receipt,
    ) -> Result<Option<Summary>, sqlx::Error> {
        let (provider, provider_id) = (provider.to_owned(), provider_message_id.to_owned());
        let (receipt, keys) = (receipt.clone(), self.keys.clone());
        // Through the writer: on SQLite a transaction that reads before it writes would fail at
        // once (not wait) when the writer commits in between.
        let id = self
            .writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    take_receipt(conn, &keys, &provider, &provider_id, &receipt).await
                })
            }))
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM messages WHERE id = $1");
        let row = sqlx::query(&sql).bind(&id).fetch_one(&self.db.pool).await?;
        summary(&row).map(Some)
    }

    /// The database, for the queries [`sportello_platform`] shares between services.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Appends an operator's lookup to the audit trail (only operators look messages up). There is deliberately no function to
    /// change or remove one (the database refuses it too).
    pub async fn audit(&self, lookup: &Lookup<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_events (at, operator_id, action, fiscal_code, outcome, detail, \
             actor_role) VALUES ($1, $2, $3, $4, 'OK', $5, 'ACTOR_ROLE_OPERATOR')",
        )
        .bind(now_millis())
        .bind(storable(lookup.operator_id))
        .bind(lookup.action)
        .bind(storable(lookup.fiscal_code))
        .bind(storable(lookup.detail))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

/// Applies `receipt` to the message the provider knows as `provider_id`; returns its id, or
/// `None` when no message has that provider id.
async fn take_receipt(
    conn: &mut sqlx::AnyConnection,
    keys: &Keyring,
    provider: &str,
    provider_id: &str,
    receipt: &Receipt,
) -> Result<Option<String>, sqlx::Error> {
    let row =
        sqlx::query("SELECT id FROM messages WHERE provider_message_id = $1 AND provider = $2")
            .bind(provider_id)
            .bind(provider)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    match receipt {
        Receipt::Delivered => {
            let now = now_millis();
            sqlx::query(
                "UPDATE messages SET status = $2, delivered_at = $3, updated_at = $3 \
                 WHERE id = $1 AND status = $4",
            )
            .bind(&id)
            .bind(DELIVERED)
            .bind(now)
            .bind(SENT)
            .execute(&mut *conn)
            .await?;
        }
        Receipt::Failed { reason } => {
            fail(conn, keys, &id, None, reason).await?;
        }
    }
    Ok(Some(id))
}

/// Records `outcome` for message `id` if `lease` is still its lease; see [`Store::settle`].
async fn record(
    conn: &mut sqlx::AnyConnection,
    keys: &Keyring,
    id: &str,
    lease: i64,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let now = now_millis();
    let query = match outcome {
        Outcome::Sent { provider, provider_message_id } => sqlx::query(
            "UPDATE messages SET status = $3, attempts = attempts + 1, lease_until = NULL, \
             provider = $4, provider_message_id = $5, sent_at = $6, updated_at = $6, \
             last_error = NULL, secret_params = NULL, secrets_key = NULL, secrets_purged_at = $6 \
             WHERE id = $1 AND lease_until = $2",
        )
        .bind(id)
        .bind(lease)
        .bind(SENT)
        .bind(provider)
        .bind(provider_message_id)
        .bind(now),
        Outcome::RetryAt { at, reason } => sqlx::query(
            "UPDATE messages SET status = $3, attempts = attempts + 1, lease_until = NULL, \
             next_attempt_at = $4, last_error = $5, updated_at = $6 \
             WHERE id = $1 AND lease_until = $2",
        )
        .bind(id)
        .bind(lease)
        .bind(QUEUED)
        .bind(*at)
        .bind(reason)
        .bind(now),
        Outcome::Postponed { at } => sqlx::query(
            "UPDATE messages SET status = $3, lease_until = NULL, next_attempt_at = $4, \
             updated_at = $5 WHERE id = $1 AND lease_until = $2",
        )
        .bind(id)
        .bind(lease)
        .bind(QUEUED)
        .bind(*at)
        .bind(now),
        Outcome::Failed { reason } => return fail(conn, keys, id, Some(lease), reason).await,
    };
    Ok(query.execute(&mut *conn).await?.rows_affected() == 1)
}

/// Marks message `id` FAILED with `reason` — under `lease` when a dispatcher holds it, or only
/// while it is SENT when a receipt reports the failure — and, in the same transaction, queues
/// the same message on its fallback channel if it has one and still holds its secrets (a message
/// that failed after it was sent has had them purged: the contact center issues anew). Returns
/// whether it changed the message.
async fn fail(
    tx: &mut sqlx::AnyConnection,
    keys: &Keyring,
    id: &str,
    lease: Option<i64>,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    // A dispatcher holding the lease has just made an attempt; a receipt reports on an old one.
    let attempted = lease.is_some();
    let now = now_millis();
    let fallback_id = uuid::Uuid::now_v7().to_string();
    let guard = match lease {
        Some(_) => "lease_until = $5",
        None => "status = $5",
    };
    let sql = format!(
        "UPDATE messages SET status = $2, attempts = attempts + $6, lease_until = NULL, \
         last_error = $3, updated_at = $4, \
         fallback_message_id = CASE WHEN fallback_channel IS NULL OR secrets_purged_at IS NOT NULL \
         THEN NULL ELSE $7 END \
         WHERE id = $1 AND {guard}"
    );
    let query = sqlx::query(&sql).bind(id).bind(FAILED).bind(storable(reason)).bind(now);
    let query = match lease {
        Some(lease) => query.bind(lease),
        None => query.bind(SENT),
    };
    let changed = query
        .bind(i64::from(attempted))
        .bind(&fallback_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if changed {
        // The secrets go along (the fallback carries the same PIN half), sealed again for the
        // fallback's row; the original keeps them too, so the contact center can still resend
        // it elsewhere. Secrets that do not open (their key is gone) make no fallback: it could
        // not be rendered either.
        let row = sqlx::query(
            "SELECT secret_params, secrets_key FROM messages \
             WHERE id = $1 AND fallback_message_id = $2",
        )
        .bind(id)
        .bind(&fallback_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(changed);
        };
        let resealed = match keys.open_params(TABLE, id, Sealed::of_row(&row)?.as_ref()) {
            Ok(secrets) if secrets.expose_secret().0.is_empty() => None,
            Ok(secrets) => Some(keys.seal_params(TABLE, &fallback_id, &secrets.expose_secret().0)),
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "secret parameters do not open");
                sqlx::query("UPDATE messages SET fallback_message_id = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                return Ok(changed);
            }
        };
        sqlx::query(
            "INSERT INTO messages (id, idempotency_key, fiscal_code, channel, address, template, \
             params, secret_params, secrets_key, status, attempts, next_attempt_at, created_at, \
             updated_at) \
             SELECT $1, 'fallback:' || id, fiscal_code, fallback_channel, fallback_address, \
             template, params, $5, $6, $2, 0, $3, $3, $3 FROM messages \
             WHERE id = $4 AND fallback_message_id = $1 \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&fallback_id)
        .bind(QUEUED)
        .bind(now)
        .bind(id)
        .bind(resealed.as_ref().map(|s| s.ciphertext.as_str()))
        .bind(resealed.as_ref().map(|s| s.key_id.as_str()))
        .execute(&mut *tx)
        .await?;
    }
    Ok(changed)
}

fn summary(row: &AnyRow) -> Result<Summary, sqlx::Error> {
    let address: String = row.try_get("address")?;
    let fallback_id: Option<String> = row.try_get("fallback_message_id")?;
    let fallback_channel: Option<String> = row.try_get("fallback_channel")?;
    Ok(Summary {
        id: row.try_get("id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        channel: row.try_get("channel")?,
        masked_address: mask::any(&address),
        template: row.try_get("template")?,
        status: row.try_get("status")?,
        last_error: row.try_get("last_error")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        sent_at: row.try_get("sent_at")?,
        delivered_at: row.try_get("delivered_at")?,
        fallback: fallback_id.zip(fallback_channel),
    })
}
