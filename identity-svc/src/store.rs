//! identity-svc's tables. Rules that must hold under concurrency are single statements: issuing
//! a PIN is one conditional upsert, every PIN attempt is reserved by one conditional increment
//! before the (slow) hash comparison, and a recovery code is consumed by one conditional delete.

use crate::domain::pin::PinHash;
use crate::domain::pin_request::{Channel, Contacts};
use sportello_platform::db::Database;
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

/// What happened to a PIN request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new initial PIN was issued.
    Issued,
    /// The citizen already holds a PIN; they were told so on the contacts on file.
    AlreadyHasPin,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "ISSUED",
            Outcome::AlreadyHasPin => "ALREADY_HAS_PIN",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "ISSUED" {
            Outcome::Issued
        } else {
            Outcome::AlreadyHasPin
        }
    }
}

/// The life stage of a citizen's PIN (locking is separate: any stage can be locked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinStage {
    /// First PIN issued to someone who never had one; its first half works as a simplified PIN.
    SimplifiedOnly,
    /// A 16-character PIN from a recovery, awaiting first access.
    Issued,
    /// The citizen's own PIN.
    Active,
    Revoked,
}

impl PinStage {
    pub fn as_str(self) -> &'static str {
        match self {
            PinStage::SimplifiedOnly => "SIMPLIFIED_ONLY",
            PinStage::Issued => "ISSUED",
            PinStage::Active => "ACTIVE",
            PinStage::Revoked => "REVOKED",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "SIMPLIFIED_ONLY" => PinStage::SimplifiedOnly,
            "ISSUED" => PinStage::Issued,
            "ACTIVE" => PinStage::Active,
            _ => PinStage::Revoked,
        }
    }

    /// Whether the PIN on file is an initial one that must be replaced at first use.
    pub fn awaits_first_access(self) -> bool {
        matches!(self, PinStage::SimplifiedOnly | PinStage::Issued)
    }
}

/// Whose failed attempts are being counted.
#[derive(Clone, Copy, Debug)]
pub enum Account<'a> {
    Citizen(&'a str),
    Staff(&'a str),
}

impl Account<'_> {
    fn parts(&self) -> (&'static str, &'static str, &str) {
        match self {
            Account::Citizen(cf) => ("citizens", "fiscal_code", cf),
            Account::Staff(username) => ("staff", "username", username),
        }
    }
}

/// A session as stored.
#[derive(Clone, Debug)]
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

/// A staff account as stored.
#[derive(Clone, Debug)]
pub struct StaffRow {
    pub role: String,
    pub password_hash: PinHash,
}

/// A citizen's credential as stored.
#[derive(Clone, Debug)]
pub struct Credential {
    pub fiscal_code: String,
    pub stage: PinStage,
    pub pin_hash: PinHash,
    pub simplified_hash: Option<PinHash>,
    pub failed_attempts: i64,
    pub locked: bool,
    pub first_access_completed: bool,
    pub contacts: Contacts,
    /// Converted to PIN dispositivo.
    pub dispositive: bool,
}

/// A PIN request row.
#[derive(Clone, Debug)]
pub struct RequestRow {
    pub id: String,
    pub fiscal_code: String,
    pub outcome: Outcome,
    pub first_half_channel: Channel,
    pub first_half_message: Option<String>,
    pub second_half_message: Option<String>,
    pub filed_by: String,
    pub validated_by: Option<String>,
    pub created_at: i64,
}

/// A request row to write.
#[derive(Debug)]
pub struct NewRequest<'a> {
    pub id: &'a str,
    pub fiscal_code: &'a str,
    pub outcome: Outcome,
    pub channel: Channel,
    pub first_half_message: Option<&'a str>,
    pub second_half_message: Option<&'a str>,
    pub filed_by: &'a str,
}

/// A pending recovery.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub code_hash: PinHash,
    pub targets: String,
    pub expires_at: i64,
}

/// An audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub operator_id: String,
    pub action: String,
    pub fiscal_code: String,
    pub outcome: String,
    pub detail: String,
}

fn decode_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn contacts_json(contacts: &Contacts) -> String {
    serde_json::to_string(contacts).expect("contacts serialise")
}

const CREDENTIAL_COLUMNS: &str = "fiscal_code, pin_state, pin_hash, simplified_hash, \
    failed_attempts, locked_at, first_access_completed, contacts, pin_level";

fn credential(row: &AnyRow) -> Result<Credential, sqlx::Error> {
    Ok(Credential {
        fiscal_code: row.try_get("fiscal_code")?,
        stage: PinStage::parse(&row.try_get::<String, _>("pin_state")?),
        pin_hash: PinHash::from_phc(row.try_get("pin_hash")?),
        simplified_hash: row
            .try_get::<Option<String>, _>("simplified_hash")?
            .map(PinHash::from_phc),
        failed_attempts: row.try_get("failed_attempts")?,
        locked: row.try_get::<Option<i64>, _>("locked_at")?.is_some(),
        first_access_completed: row.try_get::<i64, _>("first_access_completed")? != 0,
        contacts: decode_json(&row.try_get::<String, _>("contacts")?)?,
        dispositive: row.try_get::<String, _>("pin_level")? == "DISPOSITIVE",
    })
}

const REQUEST_COLUMNS: &str = "id, fiscal_code, outcome, first_half_channel, first_half_message, \
    second_half_message, filed_by, validated_by, created_at";

fn request(row: &AnyRow) -> Result<RequestRow, sqlx::Error> {
    Ok(RequestRow {
        id: row.try_get("id")?,
        fiscal_code: row.try_get("fiscal_code")?,
        outcome: Outcome::parse(&row.try_get::<String, _>("outcome")?),
        first_half_channel: match row.try_get::<String, _>("first_half_channel")?.as_str() {
            "EMAIL" => Channel::Email,
            "PEC" => Channel::Pec,
            _ => Channel::Sms,
        },
        first_half_message: row.try_get("first_half_message")?,
        second_half_message: row.try_get("second_half_message")?,
        filed_by: row.try_get("filed_by")?,
        validated_by: row.try_get("validated_by")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn credential(&self, fiscal_code: &str) -> Result<Option<Credential>, sqlx::Error> {
        let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM citizens WHERE fiscal_code = $1");
        sqlx::query(&sql)
            .bind(fiscal_code)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|row| credential(&row))
            .transpose()
    }

    /// Gives `fiscal_code` a new initial PIN unless it holds one that is not revoked. Returns
    /// whether it did: one statement, so two concurrent requests cannot both issue. A citizen
    /// whose PIN was revoked gets a new one but keeps the record that they once completed first
    /// access, so the simplified half is not offered again (DOMAIN.md §3: never had a PIN).
    pub async fn claim_initial_pin(
        &self,
        fiscal_code: &str,
        pin: &PinHash,
        simplified: &PinHash,
        contacts: &Contacts,
    ) -> Result<bool, sqlx::Error> {
        let now = now_millis();
        let done = sqlx::query(
            "INSERT INTO citizens (fiscal_code, pin_state, pin_hash, simplified_hash, contacts, \
             created_at, updated_at) VALUES ($1, 'SIMPLIFIED_ONLY', $2, $3, $4, $5, $5) \
             ON CONFLICT (fiscal_code) DO UPDATE SET \
             pin_state = CASE WHEN citizens.first_access_completed = 1 THEN 'ISSUED' ELSE 'SIMPLIFIED_ONLY' END, \
             pin_hash = $2, \
             simplified_hash = CASE WHEN citizens.first_access_completed = 1 THEN NULL ELSE $3 END, \
             contacts = $4, failed_attempts = 0, locked_at = NULL, state_reason = NULL, updated_at = $5 \
             WHERE citizens.pin_state = 'REVOKED'",
        )
        .bind(fiscal_code)
        .bind(pin.as_phc())
        .bind(simplified.as_phc())
        .bind(contacts_json(contacts))
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Undoes [`Store::claim_initial_pin`] when the PIN could not be sent, so the citizen can
    /// simply ask again: the row goes back to revoked (a fresh row is removed).
    pub async fn release_initial_pin(
        &self,
        fiscal_code: &str,
        pin: &PinHash,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM citizens WHERE fiscal_code = $1 AND pin_hash = $2 AND first_access_completed = 0",
        )
        .bind(fiscal_code)
        .bind(pin.as_phc())
        .execute(&self.db.pool)
        .await?;
        sqlx::query(
            "UPDATE citizens SET pin_state = 'REVOKED', updated_at = $3 WHERE fiscal_code = $1 AND pin_hash = $2",
        )
        .bind(fiscal_code)
        .bind(pin.as_phc())
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn record_request(&self, r: &NewRequest<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO pin_requests (id, fiscal_code, outcome, first_half_channel, \
             first_half_message, second_half_message, filed_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.id)
        .bind(r.fiscal_code)
        .bind(r.outcome.as_str())
        .bind(r.channel.as_str())
        .bind(r.first_half_message)
        .bind(r.second_half_message)
        .bind(r.filed_by)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM pin_requests WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|row| request(&row))
            .transpose()
    }

    /// A citizen's requests, newest first.
    pub async fn requests_of(
        &self,
        fiscal_code: &str,
        limit: i64,
    ) -> Result<Vec<RequestRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM pin_requests WHERE fiscal_code = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(fiscal_code).bind(limit).fetch_all(&self.db.pool).await?;
        rows.iter().map(request).collect()
    }

    /// Issued, not yet validated requests filed before `cutoff`, oldest first, after the
    /// `(created_at, id)` position `after`.
    pub async fn unvalidated_requests(
        &self,
        cutoff: i64,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<RequestRow>, sqlx::Error> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM pin_requests \
             WHERE outcome = 'ISSUED' AND validated_at IS NULL AND created_at <= $1 \
             AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
             ORDER BY created_at, id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(cutoff)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(request).collect()
    }

    /// Marks a request validated by an operator, with the message that re-sent its first half.
    pub async fn validate_request(
        &self,
        id: &str,
        operator: &str,
        message_id: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE pin_requests SET validated_by = $2, validated_at = $3, first_half_message = $4 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(operator)
        .bind(now_millis())
        .bind(message_id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn set_contacts(
        &self,
        fiscal_code: &str,
        contacts: &Contacts,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE citizens SET contacts = $2, updated_at = $3 WHERE fiscal_code = $1")
            .bind(fiscal_code)
            .bind(contacts_json(contacts))
            .bind(now_millis())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Reserves one PIN attempt before the hash is compared: one atomic increment that fails
    /// once `max` consecutive failures are counted or the PIN is locked, so parallel guesses
    /// can never test more than `max` PINs. Returns the credential as it was, or None when
    /// there is none or no attempt is left.
    pub async fn reserve_attempt(
        &self,
        fiscal_code: &str,
        max: i64,
    ) -> Result<Option<Credential>, sqlx::Error> {
        let sql = format!(
            "UPDATE citizens SET failed_attempts = failed_attempts + 1 \
             WHERE fiscal_code = $1 AND locked_at IS NULL AND failed_attempts < $2 \
             AND pin_state <> 'REVOKED' RETURNING {CREDENTIAL_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(fiscal_code)
            .bind(max)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|row| credential(&row))
            .transpose()
    }

    /// A reserved attempt failed: lock the account when it was the last one allowed.
    pub async fn attempt_failed(&self, account: Account<'_>, max: i64) -> Result<(), sqlx::Error> {
        let (table, key, id) = account.parts();
        let sql = format!(
            "UPDATE {table} SET locked_at = $3 WHERE {key} = $1 AND failed_attempts >= $2 \
             AND locked_at IS NULL"
        );
        sqlx::query(&sql).bind(id).bind(max).bind(now_millis()).execute(&self.db.pool).await?;
        Ok(())
    }

    /// A reserved attempt succeeded: the count of consecutive failures starts again.
    pub async fn attempt_succeeded(&self, account: Account<'_>) -> Result<(), sqlx::Error> {
        let (table, key, id) = account.parts();
        let sql = format!("UPDATE {table} SET failed_attempts = 0 WHERE {key} = $1");
        sqlx::query(&sql).bind(id).execute(&self.db.pool).await?;
        Ok(())
    }

    /// Makes `pin` the citizen's own PIN, provided the PIN on file is still `current` (a
    /// concurrent change wins once, not twice).
    pub async fn set_own_pin(
        &self,
        fiscal_code: &str,
        current: &PinHash,
        pin: &PinHash,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE citizens SET pin_state = 'ACTIVE', pin_hash = $3, simplified_hash = NULL, \
             first_access_completed = 1, failed_attempts = 0, updated_at = $4 \
             WHERE fiscal_code = $1 AND pin_hash = $2",
        )
        .bind(fiscal_code)
        .bind(current.as_phc())
        .bind(pin.as_phc())
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a PIN; false when there was no PIN to revoke.
    pub async fn revoke(&self, fiscal_code: &str, reason: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE citizens SET pin_state = 'REVOKED', simplified_hash = NULL, state_reason = $2, \
             updated_at = $3 WHERE fiscal_code = $1 AND pin_state <> 'REVOKED'",
        )
        .bind(fiscal_code)
        .bind(reason)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Unlocks a locked PIN; false when it was not locked.
    pub async fn unlock(&self, fiscal_code: &str, reason: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE citizens SET locked_at = NULL, failed_attempts = 0, state_reason = $2, \
             updated_at = $3 WHERE fiscal_code = $1 AND locked_at IS NOT NULL",
        )
        .bind(fiscal_code)
        .bind(reason)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts (or restarts) a recovery for the citizen.
    pub async fn put_recovery(
        &self,
        fiscal_code: &str,
        code: &PinHash,
        targets: &str,
        expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO recoveries (fiscal_code, code_hash, targets, attempts, expires_at, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (fiscal_code) DO UPDATE SET \
             code_hash = $2, targets = $3, attempts = 0, expires_at = $4, created_at = $5",
        )
        .bind(fiscal_code)
        .bind(code.as_phc())
        .bind(targets)
        .bind(expires_at)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

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

    /// Consumes a recovery: true for exactly one caller, so a code works once.
    pub async fn consume_recovery(
        &self,
        fiscal_code: &str,
        code: &PinHash,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM recoveries WHERE fiscal_code = $1 AND code_hash = $2")
            .bind(fiscal_code)
            .bind(code.as_phc())
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts a restored 16-character PIN on file, awaiting first access.
    pub async fn restore_pin(&self, fiscal_code: &str, pin: &PinHash) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE citizens SET pin_state = 'ISSUED', pin_hash = $2, simplified_hash = NULL, \
             failed_attempts = 0, locked_at = NULL, updated_at = $3 WHERE fiscal_code = $1",
        )
        .bind(fiscal_code)
        .bind(pin.as_phc())
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Appends an audit event. There is deliberately no function to change or remove one.
    pub async fn audit(
        &self,
        operator_id: &str,
        action: &str,
        fiscal_code: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_events (at, operator_id, action, fiscal_code, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_millis())
        .bind(operator_id)
        .bind(action)
        .bind(fiscal_code)
        .bind(outcome)
        .bind(detail)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Audit events for a fiscal code, newest first, with ids below `before`.
    pub async fn audit_events(
        &self,
        fiscal_code: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, at, operator_id, action, fiscal_code, outcome, detail FROM audit_events \
             WHERE fiscal_code = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(fiscal_code)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    operator_id: row.try_get("operator_id")?,
                    action: row.try_get("action")?,
                    fiscal_code: row.try_get("fiscal_code")?,
                    outcome: row.try_get("outcome")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

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
        let row = sqlx::query(
            "SELECT id, subject, role, level, amr, acr, refresh_hash, created_at, \
             refresh_expires_at, previous_access_at, revoked_at FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|row| {
            Ok(SessionRow {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                role: row.try_get("role")?,
                level: row.try_get("level")?,
                amr: row.try_get("amr")?,
                acr: row.try_get("acr")?,
                refresh_hash: row.try_get("refresh_hash")?,
                created_at: row.try_get("created_at")?,
                refresh_expires_at: row.try_get("refresh_expires_at")?,
                previous_access_at: row.try_get("previous_access_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .transpose()
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
