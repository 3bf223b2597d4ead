//! The `sportello.notify.v1.NotifyService` handlers: parse, store, answer.

use crate::domain::{channel_from_name, MessageIds, NewMessage, Resend};
use crate::error::NotifyError;
use crate::store::{Lookup, Receipt, Store, Summary};
use crate::templates::Templates;
use sportello_platform::auth::{principal, require_service, Role};
use sportello_platform::error::FieldViolations;
use sportello_proto::notify::v1::notify_service_server::NotifyService;
use sportello_proto::notify::v1::{
    BatchGetMessagesRequest, BatchGetMessagesResponse, Channel, DeliveryOutcome,
    EnqueueMessageRequest, EnqueueMessageResponse, GetMessageRequest, GetMessageResponse,
    GetMyMessageRequest, GetMyMessageResponse, ListMessagesRequest, ListMessagesResponse,
    ListMyMessagesRequest, ListMyMessagesResponse, ListTemplatesRequest, ListTemplatesResponse,
    Message, MessageStatus, ReportDeliveryRequest, ReportDeliveryResponse, ResendMessageRequest,
    ResendMessageResponse, Template, WatchMessageRequest, WatchMessageResponse,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// How often a watch looks at its message again. Reads the database, so that a change made by
/// any instance (a receipt, another dispatcher) is seen.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// How long one watch may last; the caller watches again if it still cares.
const WATCH_LIMIT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct Notify {
    store: Store,
    templates: Arc<Templates>,
    /// Tells this instance's dispatcher a message was just accepted.
    wake: Arc<tokio::sync::Notify>,
    /// Ends watches when the server shuts down, so they do not hold up the drain.
    shutdown: CancellationToken,
}

impl Notify {
    pub fn new(
        store: Store,
        templates: Arc<Templates>,
        wake: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) -> Self {
        Self { store, templates, wake, shutdown }
    }

    /// The message checked against its template, on its channel and on its fallback's: it will
    /// render when it is sent.
    fn renderable(&self, message: NewMessage) -> Result<NewMessage, NotifyError> {
        let m = &message;
        self.templates.check(&m.template, m.channel, &m.params, &m.secret_params)?;
        if let Some(fallback) = &m.fallback {
            if !self.templates.goes_on(&m.template, fallback.channel) {
                let mut v = FieldViolations::new();
                v.add("fallback.channel", "is not a channel this template goes on");
                return Err(v.into());
            }
        }
        Ok(message)
    }

    /// The message `id` as it stands, if it exists.
    async fn one(&self, id: String) -> Result<Option<Summary>, NotifyError> {
        let ids = MessageIds::try_from(BatchGetMessagesRequest { message_ids: vec![id] })
            .map_err(|_| single_id_violation())?;
        Ok(self.store.batch_get(&ids).await?.into_iter().next())
    }

    async fn resend(&self, resend: Resend) -> Result<ResendMessageResponse, NotifyError> {
        // A retried call answers with what the first one stored, even if the original's secrets
        // have been purged since.
        if let Some(stored) = self.store.by_idempotency_key(&resend.idempotency_key).await? {
            return Ok(ResendMessageResponse {
                status: wire_status(&stored.status) as i32,
                message_id: stored.id,
            });
        }
        let original =
            self.store.original(&resend.message_id).await?.ok_or(NotifyError::NotFound)?;
        let original_id = original.id.clone();
        let message = self.renderable(resend.copy_of(original)?)?;
        let stored = self.store.enqueue(&message).await?;
        self.wake.notify_one();
        tracing::info!(
            message_id = %stored.id,
            resend_of = %original_id,
            template = %message.template,
            "message resent"
        );
        Ok(ResendMessageResponse {
            status: wire_status(&stored.status) as i32,
            message_id: stored.id,
        })
    }
}

/// `message_id` is required (the batch form's `message_ids[0]` would name the wrong field).
fn single_id_violation() -> NotifyError {
    let mut v = FieldViolations::new();
    v.add("message_id", "is required");
    v.into()
}

/// The calling operator's username: operators' lookups are audited under it.
fn operator<T>(request: &Request<T>) -> Result<String, Status> {
    let claims = principal(request)?;
    if claims.role != Role::Operator {
        return Err(Status::permission_denied("for contact-center operators only"));
    }
    Ok(claims.sub)
}

/// The fiscal code of the calling citizen; other principals have no messages of their own.
fn citizen<T>(request: &Request<T>) -> Result<String, Status> {
    let claims = principal(request)?;
    if claims.role != Role::Citizen {
        return Err(Status::permission_denied("only citizens have messages of their own"));
    }
    Ok(claims.sub)
}

fn parse_cursor(token: &str) -> Result<Option<(i64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        let mut v = sportello_platform::error::FieldViolations::new();
        v.add("page_token", "is not a token this service returned");
        v.into_status()
    };
    let (at, id) = token.split_once(':').ok_or_else(bad)?;
    Ok(Some((at.parse().map_err(|_| bad())?, id.to_owned())))
}

fn wire_status(stored: &str) -> MessageStatus {
    MessageStatus::from_str_name(&format!("MESSAGE_STATUS_{stored}"))
        .unwrap_or(MessageStatus::Unspecified)
}

fn wire_time(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        // In 0..1_000_000_000, so it fits.
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn wire_message(summary: Summary) -> Message {
    let (fallback_message_id, fallback_channel) = summary.fallback.unwrap_or_default();
    Message {
        message_id: summary.id,
        fiscal_code: summary.fiscal_code,
        channel: channel_from_name(&summary.channel).unwrap_or(Channel::Unspecified) as i32,
        masked_address: summary.masked_address,
        template: summary.template,
        status: wire_status(&summary.status) as i32,
        failure_reason: summary.last_error.unwrap_or_default(),
        created_at: Some(wire_time(summary.created_at)),
        updated_at: Some(wire_time(summary.updated_at)),
        attempts: i32::try_from(summary.attempts).unwrap_or(i32::MAX),
        sent_at: summary.sent_at.map(wire_time),
        delivered_at: summary.delivered_at.map(wire_time),
        fallback_message_id,
        fallback_channel: channel_from_name(&fallback_channel).unwrap_or(Channel::Unspecified)
            as i32,
    }
}

/// One `WatchMessage` call: the state it last sent, read again every [`WATCH_POLL`].
struct Watch {
    notify: Notify,
    id: String,
    last: Option<(String, i64)>,
    /// The state read when the watch began, sent first without reading it again.
    first: Option<Summary>,
    until: tokio::time::Instant,
    /// A final state (or an error) was sent: the stream ends.
    done: bool,
}

impl Watch {
    /// The next state to send, once the message's state differs from the last one sent.
    async fn next(mut self) -> Option<(Result<WatchMessageResponse, Status>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let read = match self.first.take() {
                Some(first) => Ok(Some(first)),
                None => self.notify.one(self.id.clone()).await,
            };
            let now = match read {
                Ok(Some(now)) => now,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some((Err(e.into()), self));
                }
            };
            let seen = (now.status.clone(), now.updated_at);
            if self.last.as_ref() != Some(&seen) {
                self.last = Some(seen);
                self.done = now.is_final();
                let reply = WatchMessageResponse { message: Some(wire_message(now)) };
                return Some((Ok(reply), self));
            }
            tokio::select! {
                () = self.notify.shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(self.until) => return None,
                () = tokio::time::sleep(WATCH_POLL) => {}
            }
        }
    }
}

/// A page of a citizen's messages, newest first, and the token of the next page.
async fn page_of(
    store: &Store,
    fiscal_code: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<Message>, String), Status> {
    let limit = match page_size {
        n if n <= 0 => 50,
        n => i64::from(n.min(200)),
    };
    let cursor = parse_cursor(page_token)?;
    let found = store
        .of_citizen(fiscal_code, cursor.as_ref().map(|(at, id)| (*at, id.as_str())), limit)
        .await
        .map_err(NotifyError::from)?;
    let next_page_token = match found.last() {
        Some(last) if found.len() as i64 == limit => format!("{}:{}", last.created_at, last.id),
        _ => String::new(),
    };
    Ok((found.into_iter().map(wire_message).collect(), next_page_token))
}

/// A checked `ReportDelivery` call.
fn receipt(r: &ReportDeliveryRequest) -> Result<Receipt, NotifyError> {
    let mut v = FieldViolations::new();
    if r.provider.trim().is_empty() {
        v.add("provider", "is required");
    }
    if r.provider_message_id.trim().is_empty() {
        v.add("provider_message_id", "is required");
    }
    let receipt = match DeliveryOutcome::try_from(r.outcome) {
        Ok(DeliveryOutcome::Delivered) => Some(Receipt::Delivered),
        Ok(DeliveryOutcome::Failed) => Some(Receipt::Failed {
            reason: match r.reason.trim() {
                "" => "the provider reported it undelivered".to_owned(),
                reason => format!("undelivered: {}", reason.chars().take(200).collect::<String>()),
            },
        }),
        _ => {
            v.add("outcome", "must be DELIVERED or FAILED");
            None
        }
    };
    v.into_result(())?;
    Ok(receipt.expect("an outcome when there is no violation"))
}

#[tonic::async_trait]
impl NotifyService for Notify {
    async fn enqueue_message(
        &self,
        request: Request<EnqueueMessageRequest>,
    ) -> Result<Response<EnqueueMessageResponse>, Status> {
        require_service(&request)?;
        let message = NewMessage::try_from(request.into_inner()).map_err(NotifyError::from)?;
        let message = self.renderable(message)?;
        let stored = self.store.enqueue(&message).await.map_err(NotifyError::from)?;
        self.wake.notify_one();
        tracing::info!(message_id = %stored.id, template = %message.template, "message accepted");
        Ok(Response::new(EnqueueMessageResponse {
            status: wire_status(&stored.status) as i32,
            message_id: stored.id,
        }))
    }

    async fn batch_get_messages(
        &self,
        request: Request<BatchGetMessagesRequest>,
    ) -> Result<Response<BatchGetMessagesResponse>, Status> {
        require_service(&request)?;
        let ids = MessageIds::try_from(request.into_inner()).map_err(NotifyError::from)?;
        let found = self.store.batch_get(&ids).await.map_err(NotifyError::from)?;
        tracing::debug!(asked = ids.as_slice().len(), found = found.len(), "messages looked up");
        Ok(Response::new(BatchGetMessagesResponse {
            messages: found.into_iter().map(wire_message).collect(),
        }))
    }

    async fn resend_message(
        &self,
        request: Request<ResendMessageRequest>,
    ) -> Result<Response<ResendMessageResponse>, Status> {
        require_service(&request)?;
        let resend = Resend::try_from(request.into_inner()).map_err(NotifyError::from)?;
        Ok(Response::new(self.resend(resend).await?))
    }

    async fn list_my_messages(
        &self,
        request: Request<ListMyMessagesRequest>,
    ) -> Result<Response<ListMyMessagesResponse>, Status> {
        let citizen = citizen(&request)?;
        let r = request.into_inner();
        let (messages, next_page_token) =
            page_of(&self.store, &citizen, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListMyMessagesResponse { messages, next_page_token }))
    }

    async fn get_my_message(
        &self,
        request: Request<GetMyMessageRequest>,
    ) -> Result<Response<GetMyMessageResponse>, Status> {
        let citizen = citizen(&request)?;
        // Someone else's message is as absent as one that never existed.
        let message = self
            .one(request.into_inner().message_id)
            .await?
            .filter(|m| m.fiscal_code == citizen)
            .ok_or(NotifyError::NotFound)?;
        Ok(Response::new(GetMyMessageResponse { message: Some(wire_message(message)) }))
    }

    async fn list_templates(
        &self,
        request: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        require_service(&request)?;
        let templates = self
            .templates
            .list()
            .iter()
            .map(|t| Template {
                name: t.name.to_owned(),
                description: t.description.to_owned(),
                channels: t.channels.iter().map(|c| *c as i32).collect(),
                params: t.params.clone(),
                secret_params: t.secret_params.clone(),
            })
            .collect();
        Ok(Response::new(ListTemplatesResponse { templates }))
    }

    async fn report_delivery(
        &self,
        request: Request<ReportDeliveryRequest>,
    ) -> Result<Response<ReportDeliveryResponse>, Status> {
        require_service(&request)?;
        let r = request.into_inner();
        let receipt = receipt(&r)?;
        let message = self
            .store
            .receipt(r.provider.trim(), r.provider_message_id.trim(), &receipt)
            .await
            .map_err(NotifyError::from)?
            .ok_or(NotifyError::NotFound)?;
        // A failure may have queued the fallback message.
        self.wake.notify_one();
        tracing::info!(message_id = %message.id, status = %message.status, "delivery receipt");
        Ok(Response::new(ReportDeliveryResponse { message: Some(wire_message(message)) }))
    }

    type WatchMessageStream =
        Pin<Box<dyn futures::Stream<Item = Result<WatchMessageResponse, Status>> + Send>>;

    async fn watch_message(
        &self,
        request: Request<WatchMessageRequest>,
    ) -> Result<Response<Self::WatchMessageStream>, Status> {
        let claims = principal(&request)?;
        if !matches!(claims.role, Role::Operator | Role::Service) {
            return Err(Status::permission_denied("for operators and services only"));
        }
        let first =
            self.one(request.into_inner().message_id).await?.ok_or(NotifyError::NotFound)?;
        if claims.role == Role::Operator {
            self.store
                .audit(&Lookup {
                    operator_id: &claims.sub,
                    action: "WATCH_MESSAGE",
                    fiscal_code: &first.fiscal_code,
                    detail: &first.id,
                })
                .await
                .map_err(NotifyError::from)?;
        }
        let watch = Watch {
            notify: self.clone(),
            id: first.id.clone(),
            last: None,
            first: Some(first),
            until: tokio::time::Instant::now() + WATCH_LIMIT,
            done: false,
        };
        let changes = futures::stream::unfold(watch, Watch::next);
        Ok(Response::new(Box::pin(changes)))
    }

    async fn get_message(
        &self,
        request: Request<GetMessageRequest>,
    ) -> Result<Response<GetMessageResponse>, Status> {
        let operator = operator(&request)?;
        let message =
            self.one(request.into_inner().message_id).await?.ok_or(NotifyError::NotFound)?;
        self.store
            .audit(&Lookup {
                operator_id: &operator,
                action: "GET_MESSAGE",
                fiscal_code: &message.fiscal_code,
                detail: &message.id,
            })
            .await
            .map_err(NotifyError::from)?;
        Ok(Response::new(GetMessageResponse { message: Some(wire_message(message)) }))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let operator = operator(&request)?;
        let r = request.into_inner();
        let fiscal_code = r.fiscal_code.trim().to_ascii_uppercase();
        if fiscal_code.is_empty()
            || fiscal_code.len() > 16
            || !fiscal_code.chars().all(|c| c.is_ascii_alphanumeric())
        {
            let mut v = FieldViolations::new();
            v.add("fiscal_code", "must be a fiscal code (16 letters and digits, or 11 digits)");
            return Err(NotifyError::from(v).into());
        }
        let (messages, next_page_token) =
            page_of(&self.store, &fiscal_code, r.page_size, &r.page_token).await?;
        self.store
            .audit(&Lookup {
                operator_id: &operator,
                action: "LIST_MESSAGES",
                fiscal_code: &fiscal_code,
                detail: &format!("{} messages", messages.len()),
            })
            .await
            .map_err(NotifyError::from)?;
        Ok(Response::new(ListMessagesResponse { messages, next_page_token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_milliseconds_become_seconds_and_nanos() {
        let t = wire_time(1_585_000_123_456);
        assert_eq!((t.seconds, t.nanos), (1_585_000_123, 456_000_000));
    }

    #[test]
    fn milliseconds_before_the_epoch_keep_nanos_positive() {
        let t = wire_time(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_000_000));
    }

    #[test]
    fn stored_statuses_map_to_wire_statuses() {
        assert_eq!(wire_status("QUEUED"), MessageStatus::Queued);
        assert_eq!(wire_status("DELIVERED"), MessageStatus::Delivered);
        assert_eq!(wire_status("SOMETHING_NEW"), MessageStatus::Unspecified);
    }
}
