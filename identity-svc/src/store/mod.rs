//! identity-svc's tables, one module per aggregate. Rules that must hold under concurrency are
//! single statements: issuing a PIN is one conditional upsert, every PIN attempt is reserved by
//! one conditional increment before the (slow) hash comparison, and a recovery code is consumed
//! by one conditional delete. Changes that must agree with each other (a state change, the
//! messages announcing it, its audit row) share one transaction: [`Store::begin`].

mod audit;
mod conversions;
mod credentials;
mod id_tokens;
mod outbox;
mod recoveries;
mod requests;
mod residents;
mod sessions;
mod staff;
mod uploads;

pub use audit::{audit, AuditEvent, Entry, Trail};
pub use conversions::{reset_level, Conversion, Decision, Opened, Uploaded};
pub use credentials::{
    claim_initial_pin, credential_on, restore_pin, revoke, set_contacts, set_own_pin, unlock,
    Account, Credential, PinStage,
};
pub use outbox::{enqueue, take_allowance, Half, NewMessage, Pending, Secret};
pub use recoveries::{cancel_recoveries, consume_recovery, put_recovery, Recovery};
pub use requests::{record_request, validate_request, NewRequest, Outcome, RequestRow};
pub use residents::{issue_validated, note_register_check, HeldRequest, Written, BATCH_ROWS};
pub use sessions::{end_sessions_of, SessionRow};
pub use staff::StaffRow;
pub use uploads::Slot;

use sportello_platform::db::Database;
use sportello_platform::sealed::Keyring;

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    /// What the outbox's secrets are sealed under.
    keys: Keyring,
}

/// A transaction on the service's pool: what must commit together is written through one.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl Store {
    /// The database's pool, for readers beside the writers.
    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.db.pool
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    pub fn new(db: Database, keys: Keyring) -> Self {
        Self { db, keys }
    }

    /// The database, for the queries [`sportello_platform`] shares between services.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The data keys the outbox's secrets are sealed under.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.db.begin().await
    }
}
