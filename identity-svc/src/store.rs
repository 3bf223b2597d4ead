//! identity-svc's tables.

use crate::domain::pin::PinHash;
use crate::domain::pin_request::{Channel, Contacts};
use sportello_platform::db::Database;
use sportello_platform::now_millis;
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
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "ISSUED",
            Outcome::AlreadyHasPin => "ALREADY_HAS_PIN",
        }
    }
}

/// A request row as written.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub id: &'a str,
    pub fiscal_code: &'a str,
    pub outcome: Outcome,
    pub channel: Channel,
    pub contacts: &'a Contacts,
    pub first_half_message: Option<&'a str>,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Gives `fiscal_code` a new initial PIN unless it holds one that is not revoked. Returns
    /// whether it did: one statement, so two concurrent requests cannot both issue.
    pub async fn claim_initial_pin(
        &self,
        fiscal_code: &str,
        pin: &PinHash,
        simplified: &PinHash,
    ) -> Result<bool, sqlx::Error> {
        let now = now_millis();
        let done = sqlx::query(
            "INSERT INTO citizens (fiscal_code, pin_state, pin_hash, simplified_hash, created_at, updated_at) \
             VALUES ($1, 'ISSUED', $2, $3, $4, $4) \
             ON CONFLICT (fiscal_code) DO UPDATE SET pin_state = 'ISSUED', pin_hash = $2, \
             simplified_hash = $3, updated_at = $4 WHERE citizens.pin_state = 'REVOKED'",
        )
        .bind(fiscal_code)
        .bind(pin.as_phc())
        .bind(simplified.as_phc())
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Undoes [`Store::claim_initial_pin`] when the PIN could not be sent, so the citizen can
    /// simply ask again.
    pub async fn release_initial_pin(
        &self,
        fiscal_code: &str,
        pin: &PinHash,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM citizens WHERE fiscal_code = $1 AND pin_hash = $2")
            .bind(fiscal_code)
            .bind(pin.as_phc())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The contacts given with the request that issued the citizen's current PIN.
    pub async fn contacts_on_file(
        &self,
        fiscal_code: &str,
    ) -> Result<Option<Contacts>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT contacts FROM pin_requests WHERE fiscal_code = $1 AND outcome = 'ISSUED' \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(fiscal_code)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => {
                let json: String = row.try_get("contacts")?;
                serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            }
            None => Ok(None),
        }
    }

    pub async fn record_request(&self, r: &RequestRecord<'_>) -> Result<(), sqlx::Error> {
        let contacts = serde_json::to_string(r.contacts).expect("contacts serialise");
        sqlx::query(
            "INSERT INTO pin_requests (id, fiscal_code, outcome, first_half_channel, contacts, \
             first_half_message, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.id)
        .bind(r.fiscal_code)
        .bind(r.outcome.as_str())
        .bind(r.channel.as_str())
        .bind(contacts)
        .bind(r.first_half_message)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}
