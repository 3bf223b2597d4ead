//! The `sportello.identity.v1.IdentityService` handlers: parse the request, apply the rule, map
//! the outcome.

use crate::domain::pin::Pin;
use crate::domain::pin_request::{Channel, Contacts, PinRequest};
use crate::error::IdentityError;
use crate::hashing::Hasher;
use crate::store::{Outcome, RequestRecord, Store};
use sportello_platform::client::TracedChannel;
use sportello_proto::identity::v1::identity_service_server::IdentityService;
use sportello_proto::identity::v1::{RequestPinRequest, RequestPinResponse};
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{Channel as NotifyChannel, EnqueueMessageRequest};
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// The answer to every PIN request, whether or not the fiscal code already holds a PIN, so that
/// the public RPC reveals nothing about who is registered.
pub const NEUTRAL_ANSWER: &str = "Richiesta registrata. Riceverà le istruzioni ai recapiti \
    registrati per questo codice fiscale.";

#[derive(Clone, Debug)]
pub struct Identity {
    store: Store,
    hasher: Hasher,
    notify: NotifyServiceClient<TracedChannel>,
}

impl Identity {
    pub fn new(store: Store, hasher: Hasher, notify: NotifyServiceClient<TracedChannel>) -> Self {
        Self {
            store,
            hasher,
            notify,
        }
    }

    async fn enqueue(&self, message: EnqueueMessageRequest) -> Result<String, IdentityError> {
        self.notify
            .clone()
            .enqueue_message(message)
            .await
            .map(|r| r.into_inner().message_id)
            .map_err(|status| IdentityError::Dependency {
                service: "notify",
                status,
            })
    }

    /// Issues a new initial PIN and sends its first half.
    async fn issue(&self, request_id: &str, req: &PinRequest) -> Result<Outcome, IdentityError> {
        let cf = req.fiscal_code.canonical();
        let pin = Pin::generate_initial();
        let (full, simplified) = tokio::try_join!(
            self.hasher.hash(pin.expose().to_owned()),
            self.hasher.hash(pin.first_half().to_owned()),
        )?;
        if !self
            .store
            .claim_initial_pin(&cf, &full, &simplified)
            .await?
        {
            return self.already_has_pin(request_id, req).await;
        }
        let address = req
            .contacts
            .address(req.first_half_channel)
            .unwrap_or_default();
        let sent = self
            .enqueue(EnqueueMessageRequest {
                idempotency_key: format!("identity:{request_id}:first-half"),
                fiscal_code: cf.clone(),
                channel: notify_channel(req.first_half_channel) as i32,
                address: address.to_owned(),
                template: "PIN_FIRST_HALF".into(),
                params: HashMap::new(),
                secret_params: HashMap::from([(
                    "pin_half".to_owned(),
                    pin.first_half().to_owned(),
                )]),
            })
            .await;
        let message_id = match sent {
            Ok(id) => id,
            Err(e) => {
                self.store.release_initial_pin(&cf, &full).await?;
                return Err(e);
            }
        };
        self.store
            .record_request(&RequestRecord {
                id: request_id,
                fiscal_code: &cf,
                outcome: Outcome::Issued,
                channel: req.first_half_channel,
                contacts: &req.contacts,
                first_half_message: Some(&message_id),
            })
            .await?;
        Ok(Outcome::Issued)
    }

    /// Tells the contacts on file (not the ones in this request, which anyone could have typed)
    /// that a PIN already exists.
    async fn already_has_pin(
        &self,
        request_id: &str,
        req: &PinRequest,
    ) -> Result<Outcome, IdentityError> {
        let cf = req.fiscal_code.canonical();
        if let Some(on_file) = self.store.contacts_on_file(&cf).await? {
            for (channel, address) in written_contacts(&on_file) {
                self.enqueue(EnqueueMessageRequest {
                    idempotency_key: format!(
                        "identity:{request_id}:already-{}",
                        channel.as_str_name()
                    ),
                    fiscal_code: cf.clone(),
                    channel: channel as i32,
                    address: address.to_owned(),
                    template: "PIN_ALREADY_ISSUED".into(),
                    ..Default::default()
                })
                .await?;
            }
        }
        self.store
            .record_request(&RequestRecord {
                id: request_id,
                fiscal_code: &cf,
                outcome: Outcome::AlreadyHasPin,
                channel: req.first_half_channel,
                contacts: &req.contacts,
                first_half_message: None,
            })
            .await?;
        Ok(Outcome::AlreadyHasPin)
    }
}

fn notify_channel(channel: Channel) -> NotifyChannel {
    match channel {
        Channel::Sms => NotifyChannel::Sms,
        Channel::Email => NotifyChannel::Email,
        Channel::Pec => NotifyChannel::Pec,
    }
}

fn written_contacts(c: &Contacts) -> impl Iterator<Item = (NotifyChannel, &str)> {
    [
        (NotifyChannel::Email, c.email.as_deref()),
        (NotifyChannel::Pec, c.pec.as_deref()),
    ]
    .into_iter()
    .filter_map(|(ch, a)| a.map(|a| (ch, a)))
}

#[tonic::async_trait]
impl IdentityService for Identity {
    async fn request_pin(
        &self,
        request: Request<RequestPinRequest>,
    ) -> Result<Response<RequestPinResponse>, Status> {
        let today = chrono::Utc::now().date_naive();
        let req = PinRequest::parse(request.get_ref(), today).map_err(IdentityError::from)?;
        let request_id = uuid::Uuid::now_v7().to_string();
        let outcome = self.issue(&request_id, &req).await?;
        tracing::info!(%request_id, fiscal_code = %req.fiscal_code.masked(), ?outcome, "PIN request handled");
        Ok(Response::new(RequestPinResponse {
            request_id,
            message: NEUTRAL_ANSWER.into(),
        }))
    }
}
