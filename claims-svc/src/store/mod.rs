//! claims-svc's tables: the catalogue, the insured-positions registry, claims, mandates, the
//! outbox of notices and the audit trail. Every write of a claim goes through one group-commit
//! writer ([`GroupCommit::start_batched`]): concurrent submissions share a transaction (one
//! fsync), and the hot rows they all touch (a benefit's ceiling, the protocol counter) are
//! locked once per batch.

mod claims;
mod mandates;
mod outbox;
mod registry;

pub use claims::{ClaimRecord, ClaimsOf, Decided, Filer, Submission, Submitted};
pub use mandates::MandateRecord;
pub use outbox::{Notice, Pending};
pub use registry::Written;

use crate::domain::eligibility::BenefitCode;
use crate::domain::{parse_level, Benefit, Group};
use sportello_platform::audit::Entry;
use sportello_platform::db::Database;
use sportello_platform::group_commit::GroupCommit;
use sqlx::any::AnyRow;
use sqlx::Row;

/// Claims committed together at most.
const MAX_BATCH: usize = 256;

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    writer: GroupCommit,
}

const BENEFIT_COLUMNS: &str = "code, title, legal_basis, amount_cents, ceiling_cents, \
    reserved_cents, opens_at, min_level, incompatibility_group, conditions, \
    increased_amount_cents, increased_amount_condition";

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} in the database").into())
}

fn benefit(row: &AnyRow) -> Result<Benefit, sqlx::Error> {
    let code: String = row.try_get("code")?;
    let conditions: String = row.try_get("conditions")?;
    Ok(Benefit {
        code: BenefitCode::parse(&code).ok_or_else(|| corrupt("benefit code"))?,
        title: row.try_get("title")?,
        legal_basis: row.try_get("legal_basis")?,
        amount_cents: row.try_get("amount_cents")?,
        ceiling_cents: row.try_get("ceiling_cents")?,
        reserved_cents: row.try_get("reserved_cents")?,
        opens_at: row.try_get("opens_at")?,
        min_level: parse_level(&row.try_get::<String, _>("min_level")?)
            .ok_or_else(|| corrupt("credential level"))?,
        group: Group::parse(&row.try_get::<String, _>("incompatibility_group")?)
            .ok_or_else(|| corrupt("incompatibility group"))?,
        conditions: conditions.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect(),
        increased_amount_cents: row.try_get("increased_amount_cents")?,
        increased_amount_condition: row.try_get("increased_amount_condition")?,
    })
}

/// A back-office change to a benefit: only what is `Some` changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenefitChange {
    pub amount_cents: Option<i64>,
    pub ceiling_cents: Option<i64>,
    pub opens_at: Option<i64>,
}

impl Store {
    pub fn new(db: Database) -> Self {
        let writer = GroupCommit::start_batched(&db, MAX_BATCH);
        Self { db, writer }
    }

    /// The catalogue, in the order it is presented.
    pub async fn benefits(&self) -> Result<Vec<Benefit>, sqlx::Error> {
        let sql = format!("SELECT {BENEFIT_COLUMNS} FROM benefits ORDER BY position");
        let rows = sqlx::query(&sql).fetch_all(&self.db.pool).await?;
        rows.iter().map(benefit).collect()
    }

    /// Changes a benefit and audits the change, in one transaction; `None` when there is no
    /// such benefit. A ceiling is never set below what is already reserved against it.
    pub async fn update_benefit(
        &self,
        code: BenefitCode,
        change: BenefitChange,
        by: &str,
        reason: &str,
    ) -> Result<Option<Result<Benefit, i64>>, sqlx::Error> {
        let code = code.as_str();
        let (by, reason) = (by.to_owned(), reason.to_owned());
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let sql = format!("SELECT {BENEFIT_COLUMNS} FROM benefits WHERE code = $1");
                    let Some(row) = sqlx::query(&sql).bind(code).fetch_optional(&mut *conn).await?
                    else {
                        return Ok(None);
                    };
                    let before = benefit(&row)?;
                    if let Some(ceiling) = change.ceiling_cents {
                        if ceiling != 0 && ceiling < before.reserved_cents {
                            return Ok(Some(Err(before.reserved_cents)));
                        }
                    }
                    sqlx::query(
                        "UPDATE benefits SET amount_cents = $2, ceiling_cents = $3, opens_at = $4 \
                         WHERE code = $1",
                    )
                    .bind(code)
                    .bind(change.amount_cents.unwrap_or(before.amount_cents))
                    .bind(change.ceiling_cents.unwrap_or(before.ceiling_cents))
                    .bind(change.opens_at.unwrap_or(before.opens_at))
                    .execute(&mut *conn)
                    .await?;
                    let detail = format!(
                        "{code}: amount {} -> {}, ceiling {} -> {}, opens_at {} -> {}; {reason}",
                        before.amount_cents,
                        change.amount_cents.unwrap_or(before.amount_cents),
                        before.ceiling_cents,
                        change.ceiling_cents.unwrap_or(before.ceiling_cents),
                        before.opens_at,
                        change.opens_at.unwrap_or(before.opens_at),
                    );
                    let entry = Entry {
                        operator_id: &by,
                        action: "UpdateBenefit",
                        fiscal_code: "",
                        outcome: "OK",
                        detail: &detail,
                    };
                    sportello_platform::audit::append(conn, &entry).await?;
                    let row = sqlx::query(&sql).bind(code).fetch_one(&mut *conn).await?;
                    Ok(Some(Ok(benefit(&row)?)))
                })
            }))
            .await
    }

    /// Appends an audit event on its own (a staff read).
    pub async fn audit(&self, entry: &Entry<'_>) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        sportello_platform::audit::append(&mut conn, entry).await
    }

    /// Audit events concerning `fiscal_code`, oldest first (for tests and operators).
    pub async fn audit_of(&self, fiscal_code: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT operator_id, action FROM audit_events WHERE fiscal_code = $1 ORDER BY id",
        )
        .bind(fiscal_code)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("operator_id")?, r.try_get("action")?))).collect()
    }
}
