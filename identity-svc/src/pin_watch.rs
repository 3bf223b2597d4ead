//! WatchMyPinRequest: the progress of a citizen's latest PIN request, live — issued, first half
//! sent, delivered, letter printed, first access. Changes of identity's own rows (the request,
//! the credential) are announced by the triggers of migration 0014 and followed as claims-svc
//! follows claims ([`sportello_platform::changes`]); the delivery of the two halves is
//! notify-svc's to know, so one follower per process ([`Deliveries`]) asks notify-svc, in one
//! batched call every second, about the messages that some watcher waits on and that are not
//! delivered yet, and wakes the watchers of those whose status moved.

use crate::contact_center::RequestView;
use crate::notifier::Notifier;
use crate::pins::Pins;
use crate::store::Outcome;
use sportello_platform::changes::{Changes, Snapshot, Source};
use sportello_proto::identity::v1 as wire;
use sportello_proto::identity::v1::DeliveryStatus;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Where the triggers of migration 0014 announce a change of a citizen's PIN request or
/// credential.
pub const CHANGES: Source =
    Source { channel: "sportello_identity_changes", log: "identity_changes" };

/// A stage and how the portal says it.
fn stage(view: Option<&RequestView>, first_access: bool) -> (wire::PinRequestStage, &'static str) {
    use wire::PinRequestStage as S;
    let Some(view) = view else { return (S::Unspecified, "Nessuna richiesta di PIN") };
    if view.row.outcome != Outcome::Issued {
        return (S::NotIssued, "Richiesta ricevuta: nessun PIN emesso per ora");
    }
    let delivered = |s| s == DeliveryStatus::Delivered;
    let first_delivered =
        delivered(view.first_half) || view.first_half_fallback.is_some_and(|(_, s)| delivered(s));
    if first_access {
        (S::FirstAccess, "Primo accesso completato: il PIN è attivo")
    } else if matches!(view.second_half, DeliveryStatus::Sent | DeliveryStatus::Delivered) {
        // The letter is sent when the print spool has it: printed, for the post.
        (S::LetterPrinted, "Lettera con la seconda parte del PIN stampata e spedita")
    } else if first_delivered {
        (S::FirstHalfDelivered, "Prima parte del PIN consegnata")
    } else if matches!(view.first_half, DeliveryStatus::Sent) {
        (S::FirstHalfSent, "Prima parte del PIN inviata")
    } else {
        (S::Issued, "PIN emesso: invio della prima parte in corso")
    }
}

/// A delivery notify-svc may still change.
fn pending(status: DeliveryStatus) -> bool {
    matches!(status, DeliveryStatus::Queued | DeliveryStatus::Sent | DeliveryStatus::Unspecified)
}

/// A message's delivery and that of its fallback, as last seen.
type Seen = (DeliveryStatus, Option<DeliveryStatus>);

/// A message waited on: whose it is, how many watchers wait, and its delivery as last seen.
type Waited = (String, usize, Option<Seen>);

/// The messages watchers wait on, each with the watchers' fiscal code, how many wait, and the
/// status last seen.
#[derive(Clone, Debug, Default)]
pub struct Deliveries {
    waited: Arc<Mutex<HashMap<String, Waited>>>,
}

/// One watcher's wait on some messages; dropping it ends the wait.
#[derive(Debug)]
pub struct Waiting {
    deliveries: Deliveries,
    ids: Vec<String>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waited = self.deliveries.waited.lock().unwrap_or_else(|p| p.into_inner());
        for id in &self.ids {
            if let Some(entry) = waited.get_mut(id) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    waited.remove(id);
                }
            }
        }
    }
}

impl Deliveries {
    /// Waits on messages, each with the delivery the watcher last saw: the follower wakes the
    /// citizen's watchers as soon as notify-svc says otherwise.
    fn wait(&self, fiscal_code: &str, seen: Vec<(String, Seen)>) -> Waiting {
        let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids = Vec::with_capacity(seen.len());
        for (id, status) in seen {
            let entry =
                waited.entry(id.clone()).or_insert_with(|| (fiscal_code.to_owned(), 0, None));
            entry.1 += 1;
            entry.2 = Some(status);
            ids.push(id);
        }
        Waiting { deliveries: self.clone(), ids }
    }

    /// Asks notify-svc every `every` about the messages waited on, and touches in `changes`
    /// the citizens whose messages moved.
    pub async fn follow(
        self,
        notifier: Notifier,
        changes: Changes,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let ids: Vec<String> = {
                let waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
                waited.keys().cloned().collect()
            };
            if ids.is_empty() {
                continue;
            }
            let statuses = match notifier.statuses(ids).await {
                Ok(statuses) => statuses,
                Err(e) => {
                    tracing::debug!(error = %e, "deliveries not available from notify-svc");
                    continue;
                }
            };
            let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
            for (id, delivery) in statuses {
                let Some((cf, _, last)) = waited.get_mut(&id) else { continue };
                let now = (delivery.status, delivery.fallback.map(|(_, s)| s));
                if *last != Some(now) {
                    changes.touch(cf);
                }
                *last = Some(now);
            }
        }
    }
}

/// One citizen's latest PIN request as last sent to one watcher.
#[derive(Debug)]
pub struct MyPinRequest {
    pins: Pins,
    deliveries: Deliveries,
    fiscal_code: String,
    last: Option<wire::WatchMyPinRequestResponse>,
    waiting: Option<Waiting>,
}

impl MyPinRequest {
    pub fn new(pins: Pins, deliveries: Deliveries, fiscal_code: String) -> Self {
        Self { pins, deliveries, fiscal_code, last: None, waiting: None }
    }
}

impl Snapshot for MyPinRequest {
    type Message = wire::WatchMyPinRequestResponse;

    async fn next(&mut self, first: bool) -> Result<Option<Self::Message>, Status> {
        let rows = self
            .pins
            .store
            .requests_of(&self.fiscal_code, 1)
            .await
            .map_err(crate::error::IdentityError::from)?;
        let credential = self
            .pins
            .store
            .credential(&self.fiscal_code)
            .await
            .map_err(crate::error::IdentityError::from)?;
        let first_access = credential.is_some_and(|c| c.first_access_completed);
        let views = self.pins.with_statuses(rows).await?;
        let view = views.first();
        // Waiting on the halves notify-svc may still deliver, until the citizen's first access.
        let undelivered: Vec<(String, Seen)> = view
            .filter(|_| !first_access)
            .map(|v| {
                let first = (v.first_half, v.first_half_fallback.map(|(_, s)| s));
                let halves = [
                    (&v.row.first_half_message, first),
                    (&v.row.second_half_message, (v.second_half, None)),
                ];
                halves
                    .into_iter()
                    .filter(|(_, (status, _))| pending(*status))
                    .filter_map(|(id, seen)| Some((id.clone()?, seen)))
                    .collect()
            })
            .unwrap_or_default();
        // The previous wait ends only once the new one holds.
        self.waiting = Some(self.deliveries.wait(&self.fiscal_code, undelivered));
        let (stage, label) = stage(view, first_access);
        let message = wire::WatchMyPinRequestResponse {
            request_id: view.map(|v| v.row.id.clone()).unwrap_or_default(),
            requested_at: view.map(|v| crate::api::timestamp(v.row.created_at)),
            stage: stage as i32,
            stage_label: label.to_owned(),
            first_half: view.map_or(DeliveryStatus::Unspecified, |v| v.first_half) as i32,
            second_half: view.map_or(DeliveryStatus::Unspecified, |v| v.second_half) as i32,
            first_access_completed: first_access,
        };
        if !first && self.last.as_ref() == Some(&message) {
            return Ok(None);
        }
        self.last = Some(message.clone());
        Ok(Some(message))
    }
}
