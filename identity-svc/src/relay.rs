//! The outbox relay: hands the messages that committed with their change to notify-svc, with the
//! outbox row id as idempotency key, until notify-svc acknowledges each. Rows are claimed with a
//! lease (`Store::claim_outbox`), so any number of identity instances may relay at once; a relay
//! that dies mid-send leaves its rows to be claimed again when the lease runs out, and notify-svc
//! keeps the first copy of a message sent twice. A row's secret is opened only to be sent; one
//! that does not open (its key is gone) is refused for good, like any message notify refuses.

use crate::error::IdentityError;
use crate::notifier::Notifier;
use crate::store::{Pending, Store};
use secrecy::ExposeSecret;
use sportello_platform::now_millis;
use sportello_platform::trace_context::deferred_span;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Rows claimed at once, and sent concurrently.
const BATCH: i64 = 32;
/// How long a claimed row is ours: well beyond a notify call's time (bounded by `SEND_TIMEOUT`),
/// and short, because rows claimed by a relay that died wait this long for another.
const LEASE_MS: i64 = 10_000;
/// The most one send to notify-svc may take before it counts as failed and is retried.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the outbox is looked at when nobody says it has something new (retries coming due,
/// rows written by another instance, rows left by a relay that died).
const POLL: Duration = Duration::from_millis(500);
/// How long acknowledged rows are kept (for operators looking into a delivery), and how often
/// old ones are purged.
const KEEP_MS: i64 = 7 * 24 * 3_600_000;
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// The longest wait between two attempts at one message.
const MAX_BACKOFF_MS: i64 = 60_000;

/// The idempotency key of an outbox row at notify-svc.
pub fn idempotency_key(id: &str) -> String {
    format!("identity:outbox:{id}")
}

/// Exponential backoff with jitter: ~0.5 s, 1 s, 2 s… up to a minute.
fn backoff_ms(attempts: i64) -> i64 {
    sportello_platform::backoff::backoff_ms(attempts, 500, MAX_BACKOFF_MS)
}

/// Runs until `shutdown`: relays due rows whenever `wake` is notified (a handler committed
/// messages) or every [`POLL`].
pub async fn run(store: Store, notifier: Notifier, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut purged_at = tokio::time::Instant::now();
    loop {
        if purged_at.elapsed() >= PURGE_EVERY {
            purged_at = tokio::time::Instant::now();
            if let Err(e) = store.purge_outbox(now_millis().saturating_sub(KEEP_MS)).await {
                tracing::warn!(error = %e, "outbox purge failed");
            }
        }
        let full = match relay_once(&store, &notifier).await {
            Ok(claimed) => claimed == BATCH,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay could not claim rows");
                false
            }
        };
        if full {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Claims one batch of due rows and sends them; returns how many were claimed.
pub async fn relay_once(store: &Store, notifier: &Notifier) -> Result<i64, sqlx::Error> {
    let rows = store.claim_outbox(BATCH, LEASE_MS).await?;
    let claimed = rows.len() as i64;
    let mut sends = JoinSet::new();
    for row in rows {
        let (store, notifier) = (store.clone(), notifier.clone());
        // Delivery joins the trace of the action that wrote the row.
        let span = deferred_span("outbox relay", row.traceparent.as_deref());
        sends.spawn(
            async move {
                let sent = send(&store, &notifier, &row);
                let result = match tokio::time::timeout(SEND_TIMEOUT, sent).await {
                    Ok(result) => result,
                    Err(_) => Err(IdentityError::Dependency {
                        service: "notify-svc",
                        status: tonic::Status::deadline_exceeded("notify-svc did not answer"),
                    }),
                };
                settle(&store, &row, result).await
            }
            .instrument(span),
        );
    }
    while let Some(done) = sends.join_next().await {
        if let Ok(Err(e)) = done {
            // The lease runs out and another pass sends the row again: notify keeps one copy.
            tracing::warn!(error = %e, "outbox row sent but not recorded");
        }
    }
    Ok(claimed)
}

async fn send(store: &Store, notifier: &Notifier, row: &Pending) -> Result<String, IdentityError> {
    let key = idempotency_key(&row.id);
    match &row.resend_of {
        Some(original) => notifier.resend(key, original, Some(&row.to)).await,
        None => {
            let opened = store.open_secrets(row).map_err(|e| {
                tracing::error!(outbox = %row.id, error = %e, "secret parameters do not open");
                IdentityError::Precondition {
                    reason: "SECRETS_UNREADABLE",
                    message: "the message's secret parameters do not open",
                }
            })?;
            let secrets: HashMap<String, String> =
                opened.expose_secret().0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let to = (&row.to, row.fallback.as_ref());
            notifier.enqueue(key, &row.fiscal_code, to, &row.template, secrets).await
        }
    }
}

/// Records how a send went: done, to be retried, or refused for good.
async fn settle(
    store: &Store,
    row: &Pending,
    result: Result<String, IdentityError>,
) -> Result<(), sqlx::Error> {
    match result {
        Ok(message_id) => store.outbox_sent(row, &message_id).await,
        Err(e) if is_permanent(&e) => {
            tracing::error!(outbox = %row.id, template = %row.template, code = ?e.code(), "message refused for good");
            store.outbox_failed(&row.id, &format!("{:?}", e.code())).await
        }
        Err(e) => {
            let retry_at = now_millis().saturating_add(backoff_ms(row.attempts));
            tracing::debug!(outbox = %row.id, attempts = row.attempts, code = ?e.code(), "message to retry");
            store.outbox_retry(&row.id, retry_at, &format!("{:?}", e.code())).await
        }
    }
}

/// Refusals no retry can change: the request itself is wrong, or what it re-sends is gone.
fn is_permanent(e: &IdentityError) -> bool {
    match e {
        IdentityError::Precondition { .. } | IdentityError::NotFound(_) => true,
        IdentityError::Dependency { status, .. } => status.code() == tonic::Code::InvalidArgument,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn retries_back_off_exponentially_up_to_a_minute() {
        for attempts in 1..20 {
            let base = (500_i64 << (attempts.min(8) - 1)).min(60_000);
            let wait = backoff_ms(attempts);
            assert!((base / 2..=base).contains(&wait), "attempt {attempts}: {wait} ms");
        }
    }
}
