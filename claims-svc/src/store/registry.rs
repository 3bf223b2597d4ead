//! The insured-positions registry: bulk upserts that leave identical rows alone, and lookups.

use super::Store;
use crate::domain::registry::Registered;
use sportello_platform::audit::{append, Entry};
use sportello_platform::now_millis;

/// Rows per INSERT statement (3 parameters each, well within both databases' limits).
const ROWS_PER_STATEMENT: usize = 500;

/// What a batch of the registry changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub changed: u64,
    pub unchanged: u64,
}

pub(super) fn decode(json: &str) -> Result<Registered, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// Writes `positions` (fiscal codes distinct) in one transaction with its audit row (as
    /// `by`): new ones added, changed ones replaced, identical ones left as they were.
    pub async fn put_positions(
        &self,
        positions: Vec<(String, Registered)>,
        by: &str,
    ) -> Result<Written, sqlx::Error> {
        let by = by.to_owned();
        let encoded: Vec<(String, String)> = positions
            .into_iter()
            .map(|(cf, r)| serde_json::to_string(&r).map(|json| (cf, json)))
            .collect::<Result<_, _>>()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let total = encoded.len() as u64;
        self.writer
            .run(Box::new(move |conn| {
                Box::pin(async move {
                    let now = now_millis();
                    let mut changed = 0;
                    for rows in encoded.chunks(ROWS_PER_STATEMENT) {
                        let values: Vec<String> = (0..rows.len())
                            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                            .collect();
                        let sql = format!(
                            "INSERT INTO insured_positions (fiscal_code, position, imported_at) \
                             VALUES {} ON CONFLICT (fiscal_code) DO UPDATE SET \
                             position = excluded.position, imported_at = excluded.imported_at \
                             WHERE insured_positions.position <> excluded.position",
                            values.join(", ")
                        );
                        let mut query = sqlx::query(&sql);
                        for (cf, json) in rows {
                            query = query.bind(cf).bind(json).bind(now);
                        }
                        changed += query.execute(&mut *conn).await?.rows_affected();
                    }
                    let detail = format!(
                        "batch of {total}: changed {changed}, unchanged {}",
                        total - changed
                    );
                    let entry = Entry {
                        operator_id: &by,
                        action: "ImportRegistry",
                        fiscal_code: "",
                        outcome: "OK",
                        detail: &detail,
                    };
                    append(conn, &entry).await?;
                    Ok(Written { changed, unchanged: total - changed })
                })
            }))
            .await
    }

    /// What the registry holds for `fiscal_code`.
    pub async fn position(&self, fiscal_code: &str) -> Result<Option<Registered>, sqlx::Error> {
        let json: Option<String> =
            sqlx::query_scalar("SELECT position FROM insured_positions WHERE fiscal_code = $1")
                .bind(fiscal_code)
                .fetch_optional(&self.db.pool)
                .await?;
        json.as_deref().map(decode).transpose()
    }
}
