//! The dispatcher: claims due messages under a lease, renders each with its template, hands it to
//! its channel's transport, and records the outcome — SENT (secrets purged), QUEUED again after a
//! backoff when the failure is temporary, FAILED when it is permanent or attempts run out. Any
//! number of notify-svc instances may dispatch at once (`Store::claim_due`); an instance killed
//! mid-send leaves its messages to be claimed again when their lease runs out, and they go out
//! with the same Message-ID / provider reference, so the receiving side can drop the duplicate.

use crate::config::{ChannelRates, DispatchSettings};
use crate::store::{Due, Outcome, Store};
use crate::templates::Templates;
use crate::transport::{Outgoing, SendError, Transports};
use secrecy::ExposeSecret;
use sportello_platform::backoff::backoff_ms;
use sportello_platform::now_millis;
use sportello_proto::notify::v1::Channel;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The longest wait between two attempts at one message.
const MAX_BACKOFF_MS: i64 = 600_000;

/// What a dispatcher works with.
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Store,
    pub templates: Arc<Templates>,
    pub transports: Transports,
    pub settings: DispatchSettings,
    pub limits: Arc<Limits>,
}

type Limiter = governor::DefaultDirectRateLimiter;

/// Each channel's rate limit, shared by the dispatcher's concurrent sends.
#[derive(Debug, Default)]
pub struct Limits {
    sms: Option<Limiter>,
    email: Option<Limiter>,
    pec: Option<Limiter>,
    post: Option<Limiter>,
}

impl Limits {
    pub fn new(rates: &ChannelRates) -> Self {
        let limiter = |rate: Option<u32>| {
            let rate = std::num::NonZeroU32::new(rate?)?;
            Some(governor::RateLimiter::direct(governor::Quota::per_second(rate)))
        };
        Self {
            sms: limiter(rates.sms),
            email: limiter(rates.email),
            pec: limiter(rates.pec),
            post: limiter(rates.post),
        }
    }

    fn of(&self, channel: Channel) -> Option<&Limiter> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Email => self.email.as_ref(),
            Channel::Pec => self.pec.as_ref(),
            Channel::Post => self.post.as_ref(),
            Channel::Unspecified => None,
        }
    }

    /// Waits for `channel`'s turn, at most `patience`; `false` when it did not come in time.
    async fn turn(&self, channel: Channel, patience: std::time::Duration) -> bool {
        match self.of(channel) {
            None => true,
            Some(limiter) => tokio::time::timeout(patience, limiter.until_ready()).await.is_ok(),
        }
    }
}

impl Dispatcher {
    pub fn new(
        store: Store,
        templates: Arc<Templates>,
        transports: Transports,
        settings: DispatchSettings,
    ) -> Self {
        let limits = Arc::new(Limits::new(&settings.rate_limits));
        Self { store, templates, transports, settings, limits }
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Dispatcher {
    /// Runs until `shutdown`: dispatches whenever `wake` is notified (a message was just
    /// accepted here) or every `poll_interval` (retries coming due, messages accepted by another
    /// instance, messages left by a dispatcher that died).
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            let full = match self.dispatch_once().await {
                Ok(claimed) => claimed == self.settings.batch_size,
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher could not claim messages");
                    false
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Claims one batch and sends it, concurrently; returns how many messages it claimed.
    pub async fn dispatch_once(&self) -> Result<i64, sqlx::Error> {
        let batch =
            self.store.claim_due(self.settings.batch_size, millis(self.settings.lease)).await?;
        let claimed = batch.len() as i64;
        let mut sends = JoinSet::new();
        for due in batch {
            let this = self.clone();
            sends.spawn(async move {
                let outcome = this.attempt(&due).await;
                match this.store.settle(&due, &outcome).await {
                    Ok(true) => log(&due, &outcome),
                    Ok(false) => tracing::warn!(message_id = %due.id, "lease lost before the outcome was recorded"),
                    // The lease runs out and the message is sent again, with the same Message-ID.
                    Err(e) => tracing::warn!(message_id = %due.id, error = %e, "outcome not recorded"),
                }
            });
        }
        while sends.join_next().await.is_some() {}
        Ok(claimed)
    }

    async fn attempt(&self, due: &Due) -> Outcome {
        // A channel over its rate waits, but only for half the claim's lease (the send needs the
        // rest): a message that cannot have its turn in time goes back to the queue, unattempted.
        let patience = self.settings.lease / 2;
        if !self.limits.turn(due.channel, patience).await {
            return Outcome::Postponed { at: now_millis() };
        }
        let params = match self.store.params_of(due) {
            Ok(params) => params,
            Err(e) => return Outcome::Failed { reason: format!("secret parameters: {e}") },
        };
        let rendered = self.templates.render(&due.template, due.channel, &params.expose_secret().0);
        let sent = match rendered {
            Ok(content) => {
                let Some(transport) = self.transports.for_channel(due.channel) else {
                    return Outcome::Failed { reason: "no transport for the channel".into() };
                };
                let message = Outgoing {
                    message_id: &due.id,
                    channel: due.channel,
                    address: &due.address,
                    fiscal_code: &due.fiscal_code,
                    content: &content,
                };
                match tokio::time::timeout(self.settings.send_timeout, transport.send(&message))
                    .await
                {
                    Ok(sent) => sent,
                    Err(_) => Err(SendError::Temporary("timed out".into())),
                }
            }
            // Checked at enqueue, so only a template changed since can get here.
            Err(reason) => Err(SendError::Permanent(reason)),
        };
        match sent {
            Ok(accepted) => Outcome::Sent {
                provider: accepted.provider,
                provider_message_id: accepted.provider_message_id,
            },
            Err(SendError::Permanent(reason)) => Outcome::Failed { reason },
            Err(SendError::Temporary(reason)) if due.attempts + 1 >= self.settings.max_attempts => {
                Outcome::Failed {
                    reason: format!("{reason} (after {} attempts)", due.attempts + 1),
                }
            }
            Err(SendError::Temporary(reason)) => {
                let wait =
                    backoff_ms(due.attempts + 1, millis(self.settings.backoff), MAX_BACKOFF_MS);
                Outcome::RetryAt { at: now_millis().saturating_add(wait), reason }
            }
        }
    }
}

fn log(due: &Due, outcome: &Outcome) {
    let (id, template) = (&due.id, &due.template);
    match outcome {
        Outcome::Sent { provider, .. } => {
            tracing::info!(message_id = %id, %template, %provider, "message sent")
        }
        Outcome::RetryAt { reason, .. } => {
            tracing::warn!(message_id = %id, %template, %reason, "message will be retried")
        }
        Outcome::Postponed { .. } => {
            tracing::debug!(message_id = %id, %template, "channel over its rate: message postponed")
        }
        Outcome::Failed { reason } => {
            tracing::warn!(message_id = %id, %template, %reason, "message failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_channel_over_its_rate_waits_its_turn_and_gives_up_past_its_patience() {
        let limits = Limits::new(&ChannelRates { sms: Some(10), ..Default::default() });
        let start = Instant::now();
        // The burst a quota allows, then one every 100 ms.
        for _ in 0..12 {
            assert!(limits.turn(Channel::Sms, Duration::from_secs(1)).await);
        }
        assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
        for _ in 0..10 {
            limits.turn(Channel::Sms, Duration::from_millis(1)).await;
        }
        assert!(!limits.turn(Channel::Sms, Duration::from_millis(1)).await, "no turn in 1 ms");
        // Other channels have no limit configured.
        for _ in 0..1000 {
            assert!(limits.turn(Channel::Email, Duration::ZERO).await);
        }
    }
}
