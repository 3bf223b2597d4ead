//! Citizens' credentials: the PIN on file, its stage, its lock and failed attempts, contacts.

use super::{decode_json, Store};
use crate::domain::pin::PinHash;
use crate::domain::pin_request::Contacts;
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;

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

/// The citizen's credential, read on `conn` (inside the caller's transaction).
pub async fn credential_on(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
) -> Result<Option<Credential>, sqlx::Error> {
    let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM citizens WHERE fiscal_code = $1");
    sqlx::query(&sql)
        .bind(fiscal_code)
        .fetch_optional(conn)
        .await?
        .map(|row| credential(&row))
        .transpose()
}

impl Store {
    pub async fn credential(&self, fiscal_code: &str) -> Result<Option<Credential>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        credential_on(&mut conn, fiscal_code).await
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

    /// A reserved attempt failed: lock the account when it was the last one allowed, ending
    /// every session of its holder in the same transaction.
    pub async fn attempt_failed(&self, account: Account<'_>, max: i64) -> Result<(), sqlx::Error> {
        let (table, key, id) = account.parts();
        let sql = format!(
            "UPDATE {table} SET locked_at = $3 WHERE {key} = $1 AND failed_attempts >= $2 \
             AND locked_at IS NULL"
        );
        let mut tx = self.begin().await?;
        let done =
            sqlx::query(&sql).bind(id).bind(max).bind(now_millis()).execute(&mut *tx).await?;
        if done.rows_affected() == 1 {
            super::end_sessions_of(&mut tx, id, None).await?;
        }
        tx.commit().await
    }

    /// A reserved attempt succeeded: the count of consecutive failures starts again.
    /// A reserved attempt got no verdict (the PIN could not be checked): it is given back, so
    /// that what the service could not do never counts against the citizen as a wrong PIN.
    pub async fn attempt_released(&self, account: Account<'_>) -> Result<(), sqlx::Error> {
        let (table, key, id) = account.parts();
        let sql = format!(
            "UPDATE {table} SET failed_attempts = failed_attempts - 1 \
             WHERE {key} = $1 AND failed_attempts > 0"
        );
        sqlx::query(&sql).bind(id).execute(&self.db.pool).await?;
        Ok(())
    }

    pub async fn attempt_succeeded(&self, account: Account<'_>) -> Result<(), sqlx::Error> {
        let (table, key, id) = account.parts();
        let sql = format!("UPDATE {table} SET failed_attempts = 0 WHERE {key} = $1");
        sqlx::query(&sql).bind(id).execute(&self.db.pool).await?;
        Ok(())
    }
}

/// Gives `fiscal_code` a new initial PIN unless it holds one that is not revoked. Returns
/// whether it did: one statement, so two concurrent requests cannot both issue. Only a
/// citizen's first PIN carries a simplified half (DOMAIN.md §3: for whoever never had a
/// PIN): a row exists only for someone who was issued one, so a citizen whose PIN was revoked
/// — before first access or after — gets a full PIN only, and `pins_issued` keeps count.
pub async fn claim_initial_pin(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    pin: &PinHash,
    simplified: &PinHash,
    contacts: &Contacts,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO citizens (fiscal_code, pin_state, pin_hash, simplified_hash, contacts, \
         created_at, updated_at) VALUES ($1, 'SIMPLIFIED_ONLY', $2, $3, $4, $5, $5) \
         ON CONFLICT (fiscal_code) DO UPDATE SET \
         pin_state = 'ISSUED', pin_hash = $2, simplified_hash = NULL, \
         pins_issued = citizens.pins_issued + 1, contacts = $4, failed_attempts = 0, \
         locked_at = NULL, state_reason = NULL, updated_at = $5 \
         WHERE citizens.pin_state = 'REVOKED'",
    )
    .bind(fiscal_code)
    .bind(pin.as_phc())
    .bind(simplified.as_phc())
    .bind(contacts_json(contacts))
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    let issued = done.rows_affected() == 1;
    if issued {
        super::reset_level(conn, fiscal_code).await?;
    }
    Ok(issued)
}

/// Replaces the contacts on file.
pub async fn set_contacts(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    contacts: &Contacts,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE citizens SET contacts = $2, updated_at = $3 WHERE fiscal_code = $1")
            .bind(fiscal_code)
            .bind(contacts_json(contacts))
            .bind(now_millis())
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes `pin` the citizen's own PIN, provided the PIN on file is still `current` (a
/// concurrent change wins once, not twice).
pub async fn set_own_pin(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    current: &PinHash,
    pin: &PinHash,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE citizens SET pin_state = 'ACTIVE', pin_hash = $3, simplified_hash = NULL, \
         first_access_completed = 1, failed_attempts = 0, updated_at = $4 \
         WHERE fiscal_code = $1 AND pin_hash = $2 AND pin_state <> 'REVOKED'",
    )
    .bind(fiscal_code)
    .bind(current.as_phc())
    .bind(pin.as_phc())
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    let changed = done.rows_affected() == 1;
    if changed {
        // A request opened under the old PIN (perhaps by whoever knew it) must not convert
        // the new one; the level itself stays with the citizen who changed it.
        super::conversions::withdraw_open(conn, fiscal_code).await?;
    }
    Ok(changed)
}

/// Revokes a PIN; false when there was no PIN to revoke.
pub async fn revoke(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE citizens SET pin_state = 'REVOKED', simplified_hash = NULL, \
               state_reason = $2, updated_at = $3 WHERE fiscal_code = $1 AND pin_state <> 'REVOKED'";
    let revoked = with_reason(&mut *conn, sql, fiscal_code, reason).await?;
    if revoked {
        super::reset_level(conn, fiscal_code).await?;
    }
    Ok(revoked)
}

/// Unlocks a locked PIN; false when it was not locked.
pub async fn unlock(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE citizens SET locked_at = NULL, failed_attempts = 0, state_reason = $2, \
               updated_at = $3 WHERE fiscal_code = $1 AND locked_at IS NOT NULL";
    with_reason(conn, sql, fiscal_code, reason).await
}

/// An operator's change of state for a reason: `sql` binds the fiscal code, the reason and the
/// time, and changes one row or none.
async fn with_reason(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    fiscal_code: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query(sql).bind(fiscal_code).bind(reason).bind(now_millis()).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a restored 16-character PIN on file, awaiting first access, provided the PIN is still
/// one a recovery may restore: a revoked PIN stays revoked whatever recovery was pending.
pub async fn restore_pin(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    pin: &PinHash,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE citizens SET pin_state = 'ISSUED', pin_hash = $2, simplified_hash = NULL, \
         failed_attempts = 0, locked_at = NULL, updated_at = $3 WHERE fiscal_code = $1 \
         AND pin_state <> 'REVOKED' AND first_access_completed = 1",
    )
    .bind(fiscal_code)
    .bind(pin.as_phc())
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    let restored = done.rows_affected() == 1;
    if restored {
        super::reset_level(conn, fiscal_code).await?;
    }
    Ok(restored)
}
