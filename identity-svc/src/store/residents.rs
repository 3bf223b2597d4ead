//! The register of residents, and what the register said about each PIN request.

use super::Store;
use crate::domain::codice_fiscale::Sex;
use crate::domain::pin_request::{FormRecord, PersonalData, Residence};
use crate::domain::residents::{place, sex_letter, RegisterChange, RegisterCheck, Resident};
use chrono::NaiveDate;
use sportello_platform::now_millis;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

/// Entries written per statement. Small on purpose: SQLite looks `$n` parameters up by name, a
/// cost that grows with the square of a statement's parameters (500 rows a statement loaded
/// 15 times slower than 20); a transaction per batch keeps the commits few.
pub const BATCH_ROWS: usize = 20;

const COLUMNS: [&str; 14] = [
    "fiscal_code",
    "surname",
    "given_name",
    "birth_date",
    "sex",
    "birthplace",
    "street",
    "street_number",
    "postal_code",
    "province",
    "municipality",
    "country",
    "foreign_address",
    "updated_at",
];

/// How a batch went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// New entries, or entries whose data changed.
    pub written: u64,
    /// Entries already on the register exactly as given.
    pub unchanged: u64,
}

/// `INSERT … VALUES ($1, …), … ON CONFLICT DO UPDATE … WHERE something differs`: an entry loaded
/// again as it was is not touched (not even `updated_at`), so a re-import changes nothing.
fn upsert_sql(rows: usize) -> String {
    let n = COLUMNS.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let data = &COLUMNS[1..n - 1];
    let set: Vec<String> = COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    let differs: Vec<String> = data
        .iter()
        .map(|c| format!("COALESCE(residents.{c}, '') <> COALESCE(excluded.{c}, '')"))
        .collect();
    format!(
        "INSERT INTO residents ({}) VALUES {} ON CONFLICT (fiscal_code) DO UPDATE SET {} WHERE {}",
        COLUMNS.join(", "),
        values.join(", "),
        set.join(", "),
        differs.join(" OR ")
    )
}

/// The columns of an entry, in [`COLUMNS`] order (less `updated_at`).
fn columns(r: &Resident) -> [Option<String>; 13] {
    let pd = &r.personal_data;
    let (italy, abroad) = match &r.residence {
        Residence::Italy { street, street_number, postal_code, province, municipality } => (
            [
                Some(street.clone()),
                Some(street_number.clone()),
                Some(postal_code.clone()),
                Some(province.clone()),
                Some(municipality.code.to_owned()),
            ],
            [None, None],
        ),
        Residence::Abroad { country, address } => {
            (Default::default(), [Some(country.code.to_owned()), Some(address.clone())])
        }
    };
    let [street, number, cap, province, municipality] = italy;
    let [country, address] = abroad;
    [
        Some(r.fiscal_code.clone()),
        Some(pd.surname.clone()),
        Some(pd.given_name.clone()),
        Some(pd.birth_date.to_string()),
        Some(sex_letter(pd.sex).to_owned()),
        Some(pd.birthplace.code.to_owned()),
        street,
        number,
        cap,
        province,
        municipality,
        country,
        address,
    ]
}

fn resident(row: &AnyRow) -> Result<Resident, sqlx::Error> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("residents: bad {what}").into());
    let birth_date: NaiveDate =
        row.try_get::<String, _>("birth_date")?.parse().map_err(|_| corrupt("birth_date"))?;
    let today = chrono::Utc::now().date_naive();
    let code = |col: &str, on: NaiveDate| -> Result<_, sqlx::Error> {
        place(&row.try_get::<String, _>(col)?, on).ok_or_else(|| corrupt(col))
    };
    let residence = match row.try_get::<Option<String>, _>("country")? {
        Some(_) => Residence::Abroad {
            country: code("country", today)?,
            address: row.try_get("foreign_address")?,
        },
        None => Residence::Italy {
            street: row.try_get("street")?,
            street_number: row.try_get("street_number")?,
            postal_code: row.try_get("postal_code")?,
            province: row.try_get("province")?,
            municipality: code("municipality", today)?,
        },
    };
    Ok(Resident {
        fiscal_code: row.try_get("fiscal_code")?,
        personal_data: PersonalData {
            surname: row.try_get("surname")?,
            given_name: row.try_get("given_name")?,
            birth_date,
            sex: if row.try_get::<String, _>("sex")? == "F" { Sex::Female } else { Sex::Male },
            birthplace: code("birthplace", birth_date)?,
        },
        residence,
    })
}

/// The entries already on the register for the fiscal codes of `batch`, read on `conn` (the
/// import's transaction) before they are overwritten.
async fn residents_on(
    conn: &mut sqlx::AnyConnection,
    batch: &[Resident],
) -> Result<HashMap<String, Resident>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM residents WHERE fiscal_code IN ({})",
        COLUMNS.join(", "),
        sportello_platform::db::numbered(1, batch.len())
    );
    let mut query = sqlx::query(&sql);
    for r in batch {
        query = query.bind(&r.fiscal_code);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(|row| resident(row).map(|r| (r.fiscal_code.clone(), r))).collect()
}

/// The audit row and the notice of a changed entry, on the import's transaction.
async fn record_change(
    conn: &mut sqlx::AnyConnection,
    fiscal_code: &str,
    actor: &str,
    change: &RegisterChange,
) -> Result<(), sqlx::Error> {
    let entry = super::Entry {
        operator_id: actor,
        action: "RegisterChange",
        fiscal_code,
        outcome: change.outcome(),
        detail: &change.detail,
    };
    super::audit(&mut *conn, &entry).await?;
    if let Some(credential) = super::credential_on(&mut *conn, fiscal_code).await? {
        crate::pins::queue_notice(conn, fiscal_code, &credential.contacts, "RESIDENCE_CHANGED")
            .await?;
    }
    Ok(())
}

/// A PIN request that issued nothing (pending the contact center's validation, or refused on
/// the register's word), to record with its form.
#[derive(Debug)]
pub struct HeldRequest<'a> {
    pub id: &'a str,
    pub fiscal_code: &'a str,
    pub channel: crate::domain::pin_request::Channel,
    pub filed_by: &'a str,
    /// Who the audit row names: the operator, or the citizen themselves.
    pub actor: &'a str,
    pub form: &'a FormRecord,
    pub check: RegisterCheck,
}

fn form_json(form: &FormRecord) -> String {
    serde_json::to_string(form).expect("a form serialises")
}

impl Store {
    /// Writes a batch of entries in one transaction; returns how many changed the register.
    /// The batch must not name a fiscal code twice (PostgreSQL refuses to update a row twice in
    /// one statement). An entry whose residence or anagrafica changed is the citizen's event:
    /// on the same transaction, an audit row under their fiscal code (by `actor`, old and new
    /// masked) and a `RESIDENCE_CHANGED` notice to their contacts on file, if they hold a PIN.
    pub async fn put_residents(
        &self,
        batch: &[Resident],
        actor: &str,
    ) -> Result<Written, sqlx::Error> {
        let mut tx = self.begin().await?;
        // A write first, so that SQLite takes its write lock before the reads below: a
        // transaction that has read and then writes fails at once (the busy timeout does not
        // apply) when another connection wrote in between.
        sqlx::query("UPDATE residents SET fiscal_code = fiscal_code WHERE 1 = 0")
            .execute(&mut *tx)
            .await?;
        let now = now_millis();
        let mut written = 0;
        for chunk in batch.chunks(BATCH_ROWS) {
            let before = residents_on(&mut tx, chunk).await?;
            let sql = upsert_sql(chunk.len());
            let mut query = sqlx::query(&sql);
            for r in chunk {
                for value in columns(r) {
                    query = query.bind(value);
                }
                query = query.bind(now);
            }
            written += query.execute(&mut *tx).await?.rows_affected();
            for r in chunk {
                let Some(old) = before.get(&r.fiscal_code) else { continue };
                if let Some(change) = RegisterChange::between(old, r) {
                    record_change(&mut tx, &r.fiscal_code, actor, &change).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(Written { written, unchanged: batch.len() as u64 - written })
    }

    /// The register's entry for a (canonical) fiscal code.
    pub async fn resident(&self, fiscal_code: &str) -> Result<Option<Resident>, sqlx::Error> {
        let sql = format!("SELECT {} FROM residents WHERE fiscal_code = $1", COLUMNS.join(", "));
        sqlx::query(&sql)
            .bind(fiscal_code)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|row| resident(&row))
            .transpose()
    }

    /// The names on the register of (canonical) `fiscal_codes`: (given name, surname) by code;
    /// codes not on the register are left out.
    pub async fn names(
        &self,
        fiscal_codes: &[String],
    ) -> Result<HashMap<String, (String, String)>, sqlx::Error> {
        let mut names = HashMap::new();
        for chunk in fiscal_codes.chunks(BATCH_ROWS) {
            let sql = format!(
                "SELECT fiscal_code, given_name, surname FROM residents WHERE fiscal_code IN ({})",
                sportello_platform::db::numbered(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for cf in chunk {
                query = query.bind(cf);
            }
            for row in query.fetch_all(&self.db.pool).await? {
                names.insert(
                    row.try_get("fiscal_code")?,
                    (row.try_get("given_name")?, row.try_get("surname")?),
                );
            }
        }
        Ok(names)
    }

    /// Records a request that issued nothing, with its form and audit row, in one transaction.
    pub async fn record_held_request(
        &self,
        r: &HeldRequest<'_>,
        outcome: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO pin_requests (id, fiscal_code, outcome, first_half_channel, filed_by, \
             created_at, form, register_check, pending_reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.id)
        .bind(r.fiscal_code)
        .bind(outcome)
        .bind(r.channel.as_str())
        .bind(r.filed_by)
        .bind(now_millis())
        .bind(form_json(r.form))
        .bind(r.check.as_str())
        .bind(r.check.pending_reason())
        .execute(&mut *tx)
        .await?;
        let entry = super::Entry {
            operator_id: r.actor,
            action: "RegisterCheck",
            fiscal_code: r.fiscal_code,
            outcome: r.check.as_str(),
            detail: r.id,
        };
        super::audit(&mut tx, &entry).await?;
        tx.commit().await
    }
}

/// Adds the form and the register's word to a request that issued a PIN, with the audit row, on
/// the transaction that issues it.
pub async fn note_register_check(
    conn: &mut sqlx::AnyConnection,
    request_id: &str,
    fiscal_code: &str,
    actor: &str,
    form: &FormRecord,
    check: RegisterCheck,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE pin_requests SET form = $2, register_check = $3 WHERE id = $1")
        .bind(request_id)
        .bind(form_json(form))
        .bind(check.as_str())
        .execute(&mut *conn)
        .await?;
    let entry = super::Entry {
        operator_id: actor,
        action: "RegisterCheck",
        fiscal_code,
        outcome: check.as_str(),
        detail: request_id,
    };
    super::audit(conn, &entry).await
}

/// Marks a request that waited for validation as validated by `operator` and issued (the relay
/// records the messages carrying its halves); false when it no longer waits (another operator
/// won).
pub async fn issue_validated(
    conn: &mut sqlx::AnyConnection,
    request_id: &str,
    operator: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE pin_requests SET outcome = 'ISSUED', validated_by = $2, validated_at = $3, \
         pending_reason = NULL \
         WHERE id = $1 AND outcome = 'PENDING_VALIDATION' AND validated_at IS NULL",
    )
    .bind(request_id)
    .bind(operator)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
