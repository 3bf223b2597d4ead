//! The outbox: messages to send, written in the transaction of the change they announce, and
//! handed to notify-svc by the relay (`crate::relay`). A row is claimed with a lease, so several
//! identity instances can relay side by side; notify-svc deduplicates by the row id, so a row sent
//! twice (a relay dying after notify answered) is still one message. A message's secret (a PIN
//! half, a code) is sealed for its row before it is written, and forgotten once notify has it.

use super::Store;
use crate::domain::pin_request::Channel;
use crate::notifier::Destination;
use sportello_platform::now_millis;
use sportello_platform::sealed::{Keyring, OpenError, Sealed, SecretParams};
use sqlx::Row;
use std::collections::BTreeMap;

/// The table, also the associated data of its rows' sealed secrets.
const TABLE: &str = "outbox";

/// Which half of a PIN request's PIN a message carries: the relay records the message id there,
/// so the contact center sees the delivery of each half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    First,
    Second,
}

impl Half {
    fn as_str(self) -> &'static str {
        match self {
            Half::First => "FIRST",
            Half::Second => "SECOND",
        }
    }
}

/// A secret parameter of a message (a PIN half, a code), and the keys it is sealed under.
#[derive(Clone, Copy)]
pub struct Secret<'a> {
    pub keys: &'a Keyring,
    pub name: &'a str,
    pub value: &'a str,
}

/// A message to write to the outbox.
pub struct NewMessage<'a> {
    pub fiscal_code: &'a str,
    pub template: &'a str,
    pub to: &'a Destination,
    /// A secret parameter: sealed for the row, and kept only until notify-svc has it.
    pub secret: Option<Secret<'a>>,
    /// Send this stored notify message again (with its own secret) instead of a new one.
    pub resend_of: Option<&'a str>,
    pub request: Option<(&'a str, Half)>,
    /// Where notify-svc sends the message instead if `to` refuses it for good.
    pub fallback: Option<&'a Destination>,
}

// Neither the secret nor the address in Debug.
impl std::fmt::Debug for NewMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMessage")
            .field("template", &self.template)
            .field("resend_of", &self.resend_of)
            .finish_non_exhaustive()
    }
}

/// An outbox row claimed by a relay.
#[derive(Clone)]
pub struct Pending {
    pub id: String,
    pub fiscal_code: String,
    pub template: String,
    pub to: Destination,
    /// The message's secret parameters as stored: sealed (see [`Store::open_secrets`]).
    pub secrets: Option<Sealed>,
    pub resend_of: Option<String>,
    pub request: Option<(String, Half)>,
    pub fallback: Option<Destination>,
    pub traceparent: Option<String>,
    pub attempts: i64,
}

// The secret and the address stay out of Debug: rows show up in logs of failures.
impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.id)
            .field("template", &self.template)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

fn channel_name(to: &Destination) -> (&'static str, &str) {
    match to {
        Destination::Channel(ch, address) => (ch.as_str(), address),
        Destination::Post(block) => ("POST", block),
    }
}

fn destination(channel: &str, address: String) -> Destination {
    match channel {
        "POST" => Destination::Post(address),
        "EMAIL" => Destination::Channel(Channel::Email, address),
        "PEC" => Destination::Channel(Channel::Pec, address),
        _ => Destination::Channel(Channel::Sms, address),
    }
}

/// Writes `m` to the outbox on `conn` (the caller's transaction); returns the row id, which is
/// also the idempotency key of the message at notify-svc.
pub async fn enqueue(
    conn: &mut sqlx::AnyConnection,
    m: &NewMessage<'_>,
) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let (channel, address) = channel_name(m.to);
    let fallback = m.fallback.map(channel_name);
    let sealed = m.secret.map(|Secret { keys, name, value }| {
        keys.seal_params(TABLE, &id, &BTreeMap::from([(name, value)]))
    });
    let now = now_millis();
    sqlx::query(
        "INSERT INTO outbox (id, fiscal_code, template, channel, address, secret_params, \
         secrets_key, resend_of, request_id, request_half, traceparent, next_attempt_at, \
         created_at, fallback_channel, fallback_address) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14)",
    )
    .bind(&id)
    .bind(m.fiscal_code)
    .bind(m.template)
    .bind(channel)
    .bind(address)
    .bind(sealed.as_ref().map(|s| s.ciphertext.as_str()))
    .bind(sealed.as_ref().map(|s| s.key_id.as_str()))
    .bind(m.resend_of)
    .bind(m.request.map(|(r, _)| r))
    .bind(m.request.map(|(_, h)| h.as_str()))
    .bind(sportello_platform::trace_context::current_traceparent())
    .bind(now)
    .bind(fallback.map(|(channel, _)| channel))
    .bind(fallback.map(|(_, address)| address))
    .execute(conn)
    .await?;
    Ok(id)
}

const PENDING_COLUMNS: &str = "id, fiscal_code, template, channel, address, secret_params, \
    secrets_key, resend_of, request_id, request_half, traceparent, attempts, fallback_channel, \
    fallback_address";

fn pending(row: &sqlx::any::AnyRow) -> Result<Pending, sqlx::Error> {
    let request_id: Option<String> = row.try_get("request_id")?;
    let half: Option<String> = row.try_get("request_half")?;
    let fallback_channel: Option<String> = row.try_get("fallback_channel")?;
    let fallback_address: Option<String> = row.try_get("fallback_address")?;
    Ok(Pending {
        id: row.try_get("id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        template: row.try_get("template")?,
        to: destination(&row.try_get::<String, _>("channel")?, row.try_get("address")?),
        secrets: Sealed::of_row(row)?,
        resend_of: row.try_get("resend_of")?,
        request: request_id.map(|id| {
            (id, if half.as_deref() == Some("SECOND") { Half::Second } else { Half::First })
        }),
        fallback: fallback_channel.zip(fallback_address).map(|(ch, a)| destination(&ch, a)),
        traceparent: row.try_get("traceparent")?,
        attempts: row.try_get("attempts")?,
    })
}

impl Store {
    /// The secret parameters of `row`, opened (none when it has none).
    pub fn open_secrets(&self, row: &Pending) -> Result<SecretParams, OpenError> {
        self.keys.open_params(TABLE, &row.id, row.secrets.as_ref())
    }

    /// Seals the secrets rows written before sealing kept in clear (see
    /// [`sportello_platform::sealed::seal_cleartext_rows`]).
    pub async fn seal_cleartext_outbox(&self) -> Result<u64, sqlx::Error> {
        sportello_platform::sealed::seal_cleartext_rows(&self.db.pool, &self.keys, TABLE).await
    }

    /// Claims up to `limit` due rows for `lease_ms`: one statement, so two relays never hold the
    /// same row (PostgreSQL skips rows another relay is claiming; SQLite has one writer).
    pub async fn claim_outbox(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<Pending>, sqlx::Error> {
        let now = now_millis();
        let sql = sportello_platform::db::lease_sql(
            self.db.backend,
            "outbox",
            "attempts = attempts + 1",
            "done_at IS NULL AND next_attempt_at <= $2",
            "next_attempt_at, id",
            PENDING_COLUMNS,
        );
        let rows = sqlx::query(&sql)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(pending).collect()
    }

    /// notify-svc has the message: the row is done, its secret forgotten, and the PIN request it
    /// belongs to points at the message.
    pub async fn outbox_sent(&self, row: &Pending, message_id: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE outbox SET done_at = $2, message_id = $3, secret_params = NULL, \
             secrets_key = NULL, leased_until = NULL, last_error = NULL WHERE id = $1",
        )
        .bind(&row.id)
        .bind(now_millis())
        .bind(message_id)
        .execute(&mut *tx)
        .await?;
        if let Some((request_id, half)) = &row.request {
            let sql = match half {
                Half::First => "UPDATE pin_requests SET first_half_message = $2 WHERE id = $1",
                Half::Second => "UPDATE pin_requests SET second_half_message = $2 WHERE id = $1",
            };
            sqlx::query(sql).bind(request_id).bind(message_id).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Sending failed for now: try again at `retry_at`.
    pub async fn outbox_retry(
        &self,
        id: &str,
        retry_at: i64,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = $2, leased_until = NULL, last_error = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(retry_at)
        .bind(error)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// notify-svc refused the message for good: the row is done without a message, and its
    /// secret is forgotten.
    pub async fn outbox_failed(&self, id: &str, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE outbox SET done_at = $2, secret_params = NULL, secrets_key = NULL, \
             leased_until = NULL, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(now_millis())
        .bind(error)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Forgets rows notify-svc acknowledged before `before` (notify keeps the messages) and
    /// rate-limit windows that ended before it.
    pub async fn purge_outbox(&self, before: i64) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        sqlx::query("DELETE FROM outbox WHERE done_at < $1")
            .bind(before)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
            .bind(before)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// Counts one use of `kind` for `fiscal_code` in a fixed window of `window_ms`, unless `max` are
/// used already; returns whether this use is allowed. One statement on the caller's transaction,
/// so concurrent callers cannot overshoot.
pub async fn take_allowance(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    kind: &str,
    max: i64,
    window_ms: i64,
) -> Result<bool, sqlx::Error> {
    if max <= 0 {
        return Ok(false);
    }
    let now = now_millis();
    let row = sqlx::query(
        "INSERT INTO rate_limits (fiscal_code, kind, window_start, used) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (fiscal_code, kind) DO UPDATE SET \
         used = CASE WHEN rate_limits.window_start <= $4 THEN 1 ELSE rate_limits.used + 1 END, \
         window_start = CASE WHEN rate_limits.window_start <= $4 THEN $3 \
         ELSE rate_limits.window_start END \
         WHERE rate_limits.window_start <= $4 OR rate_limits.used < $5 RETURNING used",
    )
    .bind(fiscal_code)
    .bind(kind)
    .bind(now)
    .bind(now.saturating_sub(window_ms))
    .bind(max)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}
