//! The files of conversion uploads, accounted for in the database.
//!
//! An upload in progress is a `conversion_uploads` row: it counts the bytes received (a citizen's
//! uploads in progress are bounded) and names the files stored so far. A file is kept while an
//! upload in progress or a request names it, and deleted as soon as neither does — at once when
//! an upload fails or a request is withdrawn, by the sweep after a crash.
//!
//! Claiming a file and deciding that a file is unreferenced then deleting it both lock the file's
//! `upload_blobs` row first, so they cannot interleave: a claim waits for a deletion in progress
//! (and then stores the file afresh), a deletion that comes second sees the claim. The file is
//! placed under its name only after the claim commits.

use super::Store;
use sportello_platform::blobs::BlobStore;
use sportello_platform::now_millis;

/// Which file of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Form,
    Scan,
}

impl Slot {
    fn column(self) -> &'static str {
        match self {
            Slot::Form => "form_blob",
            Slot::Scan => "scan_blob",
        }
    }
}

/// Locks the name `digest` for the rest of the caller's transaction (a write, so that SQLite
/// takes its write lock here and PostgreSQL the row's lock).
async fn lock_name(conn: &mut sqlx::AnyConnection, digest: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO upload_blobs (digest, locked_at) VALUES ($1, $2) \
         ON CONFLICT (digest) DO UPDATE SET locked_at = EXCLUDED.locked_at",
    )
    .bind(digest)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Starts an upload by `fiscal_code`; its id.
    pub async fn begin_upload(&self, fiscal_code: &str) -> Result<String, sqlx::Error> {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO conversion_uploads (id, fiscal_code, bytes, started_at) \
             VALUES ($1, $2, 0, $3)",
        )
        .bind(&id)
        .bind(fiscal_code)
        .bind(now_millis())
        .execute(&self.db.pool)
        .await?;
        Ok(id)
    }

    /// Counts `more` bytes into upload `id`, provided the citizen's uploads in progress stay
    /// within `quota` bytes; false otherwise (or when the upload is gone).
    pub async fn grow_upload(
        &self,
        id: &str,
        fiscal_code: &str,
        more: i64,
        quota: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        // Locks the citizen's uploads first, so that two of them growing at once are counted one
        // after the other (SQLite's write lock does the same).
        sqlx::query("UPDATE conversion_uploads SET bytes = bytes WHERE fiscal_code = $1")
            .bind(fiscal_code)
            .execute(&mut *tx)
            .await?;
        let grown = sqlx::query(
            "UPDATE conversion_uploads SET bytes = bytes + $2 WHERE id = $1 AND \
             (SELECT SUM(bytes) FROM conversion_uploads WHERE fiscal_code = $3) + $2 <= $4",
        )
        .bind(id)
        .bind(more)
        .bind(fiscal_code)
        .bind(quota)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(grown.rows_affected() == 1)
    }

    /// Records that upload `id` holds file `digest` in `slot`, before the file is placed under
    /// that name; false when the upload is gone (swept as stale).
    pub async fn claim_file(
        &self,
        id: &str,
        slot: Slot,
        digest: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        lock_name(&mut tx, digest).await?;
        let sql = format!("UPDATE conversion_uploads SET {} = $2 WHERE id = $1", slot.column());
        let claimed = sqlx::query(&sql).bind(id).bind(digest).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Ends upload `id` without recording it; the files it had claimed.
    pub async fn abandon_upload(&self, id: &str) -> Result<Vec<String>, sqlx::Error> {
        let files: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "DELETE FROM conversion_uploads WHERE id = $1 RETURNING form_blob, scan_blob",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(files.into_iter().flat_map(|(a, b)| [a, b]).flatten().collect())
    }

    /// Uploads started before `before`: a process died under them.
    pub async fn stale_uploads(&self, before: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM conversion_uploads WHERE started_at < $1")
            .bind(before)
            .fetch_all(&self.db.pool)
            .await
    }

    /// Deletes file `digest` when no upload in progress and no request names it; whether it did.
    pub async fn delete_if_unreferenced(
        &self,
        digest: &str,
        blobs: &dyn BlobStore,
    ) -> Result<bool, anyhow::Error> {
        let mut tx = self.begin().await?;
        lock_name(&mut tx, digest).await?;
        let named: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM conversion_uploads WHERE form_blob = $1 OR scan_blob = $1 \
             UNION ALL SELECT 1 FROM pin_conversions \
             WHERE signed_form_blob = $1 OR document_blob = $1 LIMIT 1",
        )
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        if named.is_some() {
            tx.commit().await?;
            return Ok(false);
        }
        // Under the lock: nobody can claim the name until the file is gone.
        blobs.remove(digest).await?;
        sqlx::query("DELETE FROM upload_blobs WHERE digest = $1")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
