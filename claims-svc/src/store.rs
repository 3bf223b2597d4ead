//! claims-svc's tables.

use crate::domain::Benefit;
use sportello_platform::db::Database;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The catalogue, in the order it is presented.
    pub async fn benefits(&self) -> Result<Vec<Benefit>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT code, title, legal_basis, amount_cents, ceiling_cents, simplified_pin_allowed \
             FROM benefits ORDER BY position",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Benefit {
                    code: row.try_get("code")?,
                    title: row.try_get("title")?,
                    legal_basis: row.try_get("legal_basis")?,
                    amount_cents: row.try_get("amount_cents")?,
                    ceiling_cents: row.try_get("ceiling_cents")?,
                    simplified_pin_allowed: row.try_get::<i64, _>("simplified_pin_allowed")? != 0,
                })
            })
            .collect()
    }
}
