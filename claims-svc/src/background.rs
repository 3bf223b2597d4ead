//! The loop the background work of claims-svc runs in (receipts to notify-svc, automatic
//! decisions): a batch at a time, at once while batches come full, otherwise when woken or
//! every poll; and while claims arrive in a rush, one batch per [`RUSH_PAUSE`], so that
//! submissions have the machine (what waits is in the database, and follows the rush).

use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long background work waits between batches while claims arrive in a rush.
pub const RUSH_PAUSE: Duration = Duration::from_secs(1);
/// Items per batch of background work during a rush: a batch holds the writer that
/// submissions wait for, so it is kept short.
pub const RUSH_BATCH: i64 = 32;

/// How many items the next batch takes: `full`, or [`RUSH_BATCH`] during a rush.
pub fn batch_size(store: &Store, full: i64) -> i64 {
    if store.in_rush() {
        RUSH_BATCH.min(full)
    } else {
        full
    }
}

/// Runs `batch` (which returns how many items it took) until `shutdown`; `full` is the size
/// of a batch that may have left more behind.
pub async fn keep_up<F, Fut>(
    what: &'static str,
    store: &Store,
    full: i64,
    poll: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    mut batch: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<i64, sqlx::Error>>,
{
    loop {
        let more = match batch().await {
            Ok(taken) => taken == full,
            Err(e) => {
                tracing::warn!(error = %e, what, "background batch failed");
                false
            }
        };
        if store.in_rush() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RUSH_PAUSE) => continue,
            }
        }
        if more && !shutdown.is_cancelled() {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}
