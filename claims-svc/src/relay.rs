//! The outbox relay: hands the notices that committed with a claim's change (its receipt, its
//! decision) to notify-svc, with the outbox row id as idempotency key, until notify-svc
//! acknowledges each. Rows are claimed with a lease, so several instances may relay at once.

use crate::store::{Pending, Settled, Store};
use sportello_platform::client::TracedChannel;
use sportello_platform::now_millis;
use sportello_platform::service_identity::ServiceKey;
use sportello_platform::trace_context::deferred_span;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{Channel, EnqueueMessageRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const BATCH: i64 = 128;
const LEASE_MS: i64 = 10_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(500);

/// Sends notices to notify-svc as claims-svc.
#[derive(Clone, Debug)]
pub struct Relay {
    pub store: Store,
    pub notify: NotifyServiceClient<TracedChannel>,
    pub me: ServiceKey,
}

impl Relay {
    /// Runs until `shutdown`: relays whenever `wake` is notified or every [`POLL`].
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let store = self.store.clone();
        crate::background::keep_up(
            "claims outbox relay",
            &store,
            BATCH,
            POLL,
            wake,
            shutdown,
            || self.once(),
        )
        .await;
    }

    /// Claims one batch of due notices and sends them; returns how many were claimed.
    pub async fn once(&self) -> Result<i64, sqlx::Error> {
        let rows = self
            .store
            .claim_outbox(crate::background::batch_size(&self.store, BATCH), LEASE_MS)
            .await?;
        let claimed = rows.len() as i64;
        let mut sends = JoinSet::new();
        for row in rows {
            let relay = self.clone();
            let span = deferred_span("claims outbox relay", row.traceparent.as_deref());
            sends.spawn(async move { relay.deliver(&row).await }.instrument(span));
        }
        let mut outcomes = Vec::with_capacity(claimed as usize);
        while let Some(done) = sends.join_next().await {
            if let Ok(settled) = done {
                outcomes.push(settled);
            }
        }
        // All outcomes in one commit; if it fails, the leases run out and another pass sends
        // the notices again: notify keeps one copy of each.
        if let Err(e) = self.store.outbox_settle(outcomes).await {
            tracing::warn!(error = %e, "notices sent but not recorded");
        }
        Ok(claimed)
    }

    async fn deliver(&self, row: &Pending) -> Settled {
        let channel = match row.channel.as_str() {
            "EMAIL" => Channel::Email,
            _ => Channel::Sms,
        };
        let request = EnqueueMessageRequest {
            idempotency_key: format!("claims:outbox:{}", row.id),
            fiscal_code: row.fiscal_code.clone(),
            channel: channel as i32,
            address: row.address.clone(),
            template: row.template.clone(),
            params: row.params.clone().into_iter().collect(),
            secret_params: Default::default(),
            fallback: None,
        };
        let mut notify = self.notify.clone();
        let call = notify.enqueue_message(self.me.request(request));
        let outcome = match tokio::time::timeout(SEND_TIMEOUT, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner().message_id),
            Ok(Err(status)) => Err(status.code()),
            Err(_) => Err(tonic::Code::DeadlineExceeded),
        };
        let settled = |message_id, retry_at, error| Settled {
            id: row.id.clone(),
            message_id,
            retry_at,
            error,
        };
        match outcome {
            Ok(id) => settled(Some(id), None, None),
            // The notice itself is wrong: no retry changes that (logged, kept for operators).
            Err(code @ tonic::Code::InvalidArgument) => {
                tracing::error!(outbox = %row.id, template = %row.template, ?code, "notice refused for good");
                settled(None, None, Some(format!("{code:?}")))
            }
            Err(code) => {
                let wait = sportello_platform::backoff::backoff_ms(row.attempts, 500, 60_000);
                let at = now_millis().saturating_add(wait);
                settled(None, Some(at), Some(format!("{code:?}")))
            }
        }
    }
}
