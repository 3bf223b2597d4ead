//! notify-svc's part of a citizen's "who looked at my data" and "take my data with me": the
//! contact center's lookups of the citizen's messages, the automatic steps of sending and
//! delivering each message, and every message with its delivery state and its text with any
//! secret masked. For the gateway only.

use crate::domain::channel_from_name;
use crate::store::Store;
use crate::templates::Templates;
use futures::TryStreamExt;
use sportello_platform::citizen_data::{
    self as data, unavailable, Failed, Kind, Lines, Tie, TrailQuery,
};
use sportello_proto::notify::v1::Channel;
use sportello_proto::privacy::v1::citizen_data_service_server::CitizenDataService;
use sportello_proto::privacy::v1::{
    AccessEntry, ActorRole, ExportCitizenDataRequest, ExportCitizenDataResponse,
    ListAccessEntriesRequest, ListAccessEntriesResponse, Source,
};
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// How the records name this service.
const SOURCE: &str = "notify";

const MESSAGES: Kind = Kind {
    name: "message",
    sql: "SELECT id, channel, address, template, params, status, attempts, last_error, \
          fallback_channel, fallback_address, created_at, sent_at, delivered_at, updated_at \
          FROM messages WHERE fiscal_code = $1 ORDER BY created_at, id",
    json: &["params"],
};

/// The automatic steps of a message's life the citizen's list shows: when it was handed to its
/// channel, when the channel confirmed delivery, when it failed for good. Keyed `prefix` + the
/// message's id.
struct Step {
    prefix: &'static str,
    action: &'static str,
    /// The column holding the step's time, and the condition for it to have happened.
    at: &'static str,
    happened: &'static str,
}

const STEPS: &[Step] = &[
    Step {
        prefix: "sent/",
        action: "MESSAGE_SENT",
        at: "sent_at",
        happened: "sent_at IS NOT NULL",
    },
    Step {
        prefix: "delivered/",
        action: "MESSAGE_DELIVERED",
        at: "delivered_at",
        happened: "delivered_at IS NOT NULL",
    },
    Step {
        prefix: "failed/",
        action: "MESSAGE_FAILED",
        at: "updated_at",
        happened: "status = 'FAILED'",
    },
];

#[derive(Clone)]
pub struct CitizenData {
    store: Store,
    templates: Arc<Templates>,
}

impl CitizenData {
    pub fn new(store: Store, templates: Arc<Templates>) -> Self {
        Self { store, templates }
    }

    /// The newest steps of kind `step` after the cursor: those of earlier milliseconds by one
    /// bounded query, and those of the cursor's own millisecond (a handful) by another.
    async fn steps(&self, q: &TrailQuery, step: &Step) -> Result<Vec<AccessEntry>, sqlx::Error> {
        let columns = format!(
            "SELECT id, {at} AS at, template, channel, last_error FROM messages \
             WHERE fiscal_code = $1 AND {happened} AND {at} >= $2 AND {at} < $3",
            at = step.at,
            happened = step.happened
        );
        let older = format!("{columns} AND {at} < $4 ORDER BY {at} DESC LIMIT $5", at = step.at);
        let pool = &self.store.db().pool;
        let mut rows = sqlx::query(&older)
            .bind(&q.fiscal_code)
            .bind(q.since)
            .bind(q.until)
            .bind(q.before_ms())
            .bind(q.limit)
            .fetch_all(pool)
            .await?;
        let tie = q.tie(Source::Notify, step.prefix);
        if tie != Tie::Nothing {
            let same = format!("{columns} AND {at} = $4", at = step.at);
            let tied = sqlx::query(&same)
                .bind(&q.fiscal_code)
                .bind(q.since)
                .bind(q.until)
                .bind(q.before_ms())
                .fetch_all(pool)
                .await?;
            rows.extend(tied.into_iter().filter(|row| match &tie {
                Tie::Below(id) => row.try_get::<String, _>("id").is_ok_and(|own| own < *id),
                _ => true,
            }));
        }
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let template: String = row.try_get("template")?;
                let channel: String = row.try_get("channel")?;
                let error: Option<String> = row.try_get("last_error")?;
                Ok(AccessEntry {
                    at: Some(data::timestamp(row.try_get("at")?)),
                    source: Source::Notify as i32,
                    key: format!("{}{id}", step.prefix),
                    actor_role: ActorRole::System as i32,
                    actor_id: String::new(),
                    action: step.action.to_owned(),
                    reason: format!("{template} via {channel}"),
                    outcome: error.filter(|_| step.prefix == "failed/").unwrap_or("OK".into()),
                })
            })
            .collect()
    }

    /// Streams every message of `fiscal_code`, each with its text as sent (secrets masked).
    async fn messages(
        store: &Store,
        templates: &Templates,
        lines: &mut Lines<ExportCitizenDataResponse>,
        fiscal_code: &str,
    ) -> Result<(), Failed> {
        let mut rows = sqlx::query(MESSAGES.sql).bind(fiscal_code).fetch(&store.db().pool);
        while let Some(row) = rows.try_next().await? {
            let mut record = data::record(&row, SOURCE, &MESSAGES);
            let template: String = row.try_get("template")?;
            let channel: String = row.try_get("channel")?;
            let params: BTreeMap<String, String> =
                serde_json::from_str(&row.try_get::<String, _>("params")?).unwrap_or_default();
            let channel = channel_from_name(&channel).unwrap_or(Channel::Unspecified);
            if let Some(text) = templates.render_without_secrets(&template, channel, &params) {
                record["subject"] = text.subject.into();
                record["text"] = text.text.into();
            }
            lines.push(&record).await?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl CitizenDataService for CitizenData {
    async fn list_access_entries(
        &self,
        request: Request<ListAccessEntriesRequest>,
    ) -> Result<Response<ListAccessEntriesResponse>, Status> {
        let q = data::trail_query(&request)?;
        let rows =
            data::audit_rows(self.store.db(), &q, Source::Notify).await.map_err(unavailable)?;
        // Only the contact center looks messages up.
        let mut entries = data::entries(&rows, Source::Notify, |row| {
            data::recorded_role(row).unwrap_or(ActorRole::Operator)
        });
        for step in STEPS {
            entries.extend(self.steps(&q, step).await.map_err(unavailable)?);
        }
        let entries = data::newest(entries, q.limit);
        Ok(Response::new(ListAccessEntriesResponse { entries }))
    }

    type ExportCitizenDataStream = data::ExportStream;

    async fn export_citizen_data(
        &self,
        request: Request<ExportCitizenDataRequest>,
    ) -> Result<Response<Self::ExportCitizenDataStream>, Status> {
        let fiscal_code = data::export_of(&request)?;
        let (store, templates) = (self.store.clone(), self.templates.clone());
        let place = data::export_place()?;
        Ok(Response::new(data::export(place, move |mut lines| async move {
            let done = Self::messages(&store, &templates, &mut lines, &fiscal_code).await;
            (lines, done)
        })))
    }
}
