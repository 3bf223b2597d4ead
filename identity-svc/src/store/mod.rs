//! identity-svc's tables, one module per aggregate. Rules that must hold under concurrency are
//! single statements: issuing a PIN is one conditional upsert, every PIN attempt is reserved by
//! one conditional increment before the (slow) hash comparison, and a recovery code is consumed
//! by one conditional delete. Changes that must agree with each other (a state change, the
//! messages announcing it, its audit row) share one transaction: [`Store::begin`].

mod audit;
mod credentials;
mod id_tokens;
mod recoveries;
mod requests;
mod sessions;
mod staff;

pub use audit::AuditEvent;
pub use credentials::{Account, Credential, PinStage};
pub use recoveries::Recovery;
pub use requests::{NewRequest, Outcome, RequestRow};
pub use sessions::{end_sessions_of, SessionRow};
pub use staff::StaffRow;

use sportello_platform::db::Database;

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

/// A transaction on the service's pool: what must commit together is written through one.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

fn decode_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.db.pool.begin().await
    }
}
