//! The local SMS and email sinks behave as providers do (`[notify.sinks]`), so that a message's
//! whole life can be watched on `sportello up`: an address matching `fail_addresses` is refused
//! for good at once, as a provider refuses an invalid number (the message is FAILED and its
//! fallback queued: a receipt could not do that, as a message's secrets are gone once SENT);
//! any other message is reported DELIVERED `receipt_delay` after the sink wrote it, through the
//! store call `ReportDelivery` makes. The receipts are kept in memory only: after a restart, a
//! message sent just before stays SENT, as with a provider that lost its callback.

use super::{Accepted, Outgoing, SendError, Transport};
use crate::config::SinkSettings;
use crate::store::{Receipt, Store};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Tries at a receipt the dispatcher has not recorded the send of yet (it records SENT once the
/// sink has answered), half a second apart.
const TRIES: u32 = 20;

/// A receipt a sink owes: the message as the provider knows it, and when it is due.
#[derive(Debug)]
pub struct Owed {
    provider: String,
    provider_message_id: String,
    due: Instant,
}

/// The receipts owed, in the order the sinks wrote their messages.
pub type Owing = mpsc::UnboundedReceiver<Owed>;

/// What makes sinks behave as providers, shared by the SMS and the email sink.
#[derive(Clone)]
pub struct AsProviders {
    fail: Arc<[glob::Pattern]>,
    delay: Duration,
    owed: Option<mpsc::UnboundedSender<Owed>>,
}

impl AsProviders {
    /// From the settings; the receipts the sinks will owe come out of the second half, for
    /// [`report`] (none when `report_delivery` is off).
    pub fn new(settings: &SinkSettings) -> anyhow::Result<(Self, Option<Owing>)> {
        let fail = settings
            .fail_addresses
            .iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| anyhow::anyhow!("notify.sinks.fail_addresses: {p:?}: {e}"))
            })
            .collect::<anyhow::Result<Arc<[_]>>>()?;
        let (owed, owing) = if settings.report_delivery {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        Ok((Self { fail, delay: settings.receipt_delay, owed }, owing))
    }

    /// `sink`, refusing the failing addresses and owing a receipt for every message it writes.
    pub fn wrap(&self, sink: impl Transport) -> Arc<dyn Transport> {
        Arc::new(AsProvider { sink: Box::new(sink), behaviour: self.clone() })
    }
}

struct AsProvider {
    sink: Box<dyn Transport>,
    behaviour: AsProviders,
}

impl Transport for AsProvider {
    fn send<'a>(&'a self, message: &'a Outgoing<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let AsProviders { fail, delay, owed } = &self.behaviour;
            if fail.iter().any(|p| p.matches(message.address)) {
                // The reason is shown to operators: it names the setting, never the address.
                return Err(SendError::Permanent(
                    "refused by the local sink (notify.sinks.fail_addresses)".into(),
                ));
            }
            let accepted = self.sink.send(message).await?;
            if let (Some(owed), Some(id)) = (owed, &accepted.provider_message_id) {
                // Nobody left to report it only when notify-svc is stopping.
                let _ = owed.send(Owed {
                    provider: accepted.provider.clone(),
                    provider_message_id: id.clone(),
                    due: Instant::now() + *delay,
                });
            }
            Ok(accepted)
        })
    }
}

/// Records the sinks' receipts as they fall due, until `stop`; `wake` is told after each, as
/// `ReportDelivery` tells it.
pub async fn report(mut owing: Owing, store: Store, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let owed = tokio::select! {
            () = stop.cancelled() => return,
            owed = owing.recv() => match owed {
                Some(owed) => owed,
                None => return,
            },
        };
        let (store, wake, stop) = (store.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = deliver(owed, &store, &wake) => {}
            }
        });
    }
}

async fn deliver(owed: Owed, store: &Store, wake: &Notify) {
    tokio::time::sleep_until(owed.due).await;
    for _ in 0..TRIES {
        match store.receipt(&owed.provider, &owed.provider_message_id, &Receipt::Delivered).await {
            Ok(Some(message)) => {
                wake.notify_one();
                tracing::info!(message_id = %message.id, status = %message.status, "delivery receipt from the local sink");
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the local sink's receipt is not recorded yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!(provider = %owed.provider, "a local sink's receipt found no sent message");
}
