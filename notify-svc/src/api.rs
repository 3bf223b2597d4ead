//! The `sportello.notify.v1.NotifyService` handlers: parse, store, answer.

use crate::domain::{channel_from_name, MessageIds, NewMessage, Resend};
use crate::error::NotifyError;
use crate::store::{Store, Summary};
use crate::templates::Templates;
use sportello_platform::auth::{principal, require_service, Role};
use sportello_proto::notify::v1::notify_service_server::NotifyService;
use sportello_proto::notify::v1::{
    BatchGetMessagesRequest, BatchGetMessagesResponse, Channel, EnqueueMessageRequest,
    EnqueueMessageResponse, GetMyMessageRequest, GetMyMessageResponse, ListMyMessagesRequest,
    ListMyMessagesResponse, ListTemplatesRequest, ListTemplatesResponse, Message, MessageStatus,
    ResendMessageRequest, ResendMessageResponse, Template,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone, Debug)]
pub struct Notify {
    store: Store,
    templates: Arc<Templates>,
    /// Tells this instance's dispatcher a message was just accepted.
    wake: Arc<tokio::sync::Notify>,
}

impl Notify {
    pub fn new(store: Store, templates: Arc<Templates>, wake: Arc<tokio::sync::Notify>) -> Self {
        Self { store, templates, wake }
    }

    /// The message checked against its template: it will render when it is sent.
    fn renderable(&self, message: NewMessage) -> Result<NewMessage, NotifyError> {
        let m = &message;
        self.templates.check(&m.template, m.channel, &m.params, &m.secret_params)?;
        Ok(message)
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
    }
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
        let limit = match r.page_size {
            n if n <= 0 => 50,
            n => i64::from(n.min(200)),
        };
        let cursor = parse_cursor(&r.page_token)?;
        let found = self
            .store
            .of_citizen(&citizen, cursor.as_ref().map(|(at, id)| (*at, id.as_str())), limit)
            .await
            .map_err(NotifyError::from)?;
        let next_page_token = match found.last() {
            Some(last) if found.len() as i64 == limit => format!("{}:{}", last.created_at, last.id),
            _ => String::new(),
        };
        Ok(Response::new(ListMyMessagesResponse {
            messages: found.into_iter().map(wire_message).collect(),
            next_page_token,
        }))
    }

    async fn get_my_message(
        &self,
        request: Request<GetMyMessageRequest>,
    ) -> Result<Response<GetMyMessageResponse>, Status> {
        let citizen = citizen(&request)?;
        let id = request.into_inner().message_id;
        let ids = MessageIds::try_from(BatchGetMessagesRequest { message_ids: vec![id] })
            .map_err(NotifyError::from)?;
        // Someone else's message is as absent as one that never existed.
        let message = self
            .store
            .batch_get(&ids)
            .await
            .map_err(NotifyError::from)?
            .into_iter()
            .find(|m| m.fiscal_code == citizen)
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
