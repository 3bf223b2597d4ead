//! Each service's part of what a citizen may learn about themselves (GDPR artt. 15 and 20): the
//! entries of its audit trail about one fiscal code, in the newest-first order the gateway merges
//! the three services' parts in, and the JSON Lines records of everything it holds, streamed from
//! its database in chunks so that an export of any size takes constant memory.

use crate::db::Database;
use futures::TryStreamExt;
use sportello_proto::privacy::v1 as wire;
use sqlx::{Column, Row};
use tonic::Status;

/// Entries answered per call at most, whatever the caller asks.
pub const MAX_PAGE: i64 = 501;

/// A chunk is sent once it holds this many bytes (always whole lines).
const CHUNK_BYTES: usize = 32 * 1024;

/// How long a chunk may wait for its reader before the export ends: an export reads the
/// database as it sends, and a reader that stops reading (a stalled client, a portal relaying
/// to a slow browser) must not hold a connection of the pool, nor the window of the HTTP/2
/// connection it shares with other calls, for longer.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Exports one process reads at once: each holds a database connection while it streams, and
/// the pool serves every other call too.
pub const MAX_EXPORTS: usize = 4;

/// What [`wire::ListAccessEntriesRequest`] asks, parsed.
#[derive(Clone, Debug)]
pub struct TrailQuery {
    pub fiscal_code: String,
    pub limit: i64,
    pub after: Option<Position>,
    /// Milliseconds since the epoch: entries with `since <= at < until`.
    pub since: i64,
    pub until: i64,
}

/// A place in the merged newest-first order: (time, source, key), compared in that order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub at: i64,
    pub source: i32,
    pub key: String,
}

impl Position {
    pub fn of(entry: &wire::AccessEntry) -> Self {
        Self { at: entry.at.map_or(0, millis), source: entry.source, key: entry.key.clone() }
    }

    pub fn to_wire(&self) -> wire::Cursor {
        wire::Cursor { at: Some(timestamp(self.at)), source: self.source, key: self.key.clone() }
    }

    pub fn from_wire(c: &wire::Cursor) -> Self {
        Self { at: c.at.map_or(0, millis), source: c.source, key: c.key.clone() }
    }
}

/// Which of a kind's entries of the cursor's millisecond come after the cursor: entries are
/// keyed `prefix` + id, and come after it when (source, key) is below the cursor's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tie {
    All,
    Nothing,
    /// Those whose id is below this one.
    Below(String),
}

impl TrailQuery {
    /// The request, checked: a fiscal code, a sane page, a period.
    pub fn parse(r: &wire::ListAccessEntriesRequest) -> Result<Self, Status> {
        Ok(Self {
            fiscal_code: fiscal_code_of(&r.fiscal_code)?,
            limit: i64::from(r.page_size).clamp(1, MAX_PAGE),
            after: r.after.as_ref().map(Position::from_wire),
            since: r.since.map_or(i64::MIN, millis),
            until: r.until.map_or(i64::MAX, millis),
        })
    }

    /// Entries strictly before this time (in newest-first order: after the cursor's time).
    pub fn before_ms(&self) -> i64 {
        self.after.as_ref().map_or(i64::MAX, |p| p.at)
    }

    /// For entries of `source` keyed `prefix` + id: which of the cursor's millisecond qualify.
    pub fn tie(&self, source: wire::Source, prefix: &str) -> Tie {
        let Some(after) = &self.after else { return Tie::Nothing };
        let source = source as i32;
        if source != after.source {
            return if source < after.source { Tie::All } else { Tie::Nothing };
        }
        match after.key.strip_prefix(prefix) {
            Some(id) => Tie::Below(id.to_owned()),
            None if after.key.as_str() > prefix => Tie::All,
            None => Tie::Nothing,
        }
    }
}

/// One row of a service's `audit_events`, with the role recorded beside it (NULL on rows
/// written before roles were).
#[derive(Clone, Debug)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub operator_id: String,
    pub actor_role: Option<String>,
    pub action: String,
    pub outcome: String,
    pub detail: String,
}

/// The key of audit row `id`: zero-padded, so that keys order like ids.
pub fn audit_key(id: i64) -> String {
    format!("audit/{id:020}")
}

const AUDIT_PREFIX: &str = "audit/";

/// The audit rows of `q`, newest first, as `source`'s entries.
pub async fn audit_rows(
    db: &Database,
    q: &TrailQuery,
    source: wire::Source,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let tie_below = match q.tie(source, AUDIT_PREFIX) {
        Tie::All => i64::MAX,
        Tie::Nothing => i64::MIN,
        Tie::Below(id) => id.parse().unwrap_or(i64::MIN),
    };
    let rows = sqlx::query(
        "SELECT id, at, operator_id, actor_role, action, outcome, detail FROM audit_events \
         WHERE fiscal_code = $1 AND at >= $2 AND at < $3 \
           AND (at < $4 OR (at = $4 AND id < $5)) \
         ORDER BY at DESC, id DESC LIMIT $6",
    )
    .bind(&q.fiscal_code)
    .bind(q.since)
    .bind(q.until)
    .bind(q.before_ms())
    .bind(tie_below)
    .bind(q.limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditRow {
                id: row.try_get("id")?,
                at: row.try_get("at")?,
                operator_id: row.try_get("operator_id")?,
                actor_role: row.try_get("actor_role")?,
                action: row.try_get("action")?,
                outcome: row.try_get("outcome")?,
                detail: row.try_get("detail")?,
            })
        })
        .collect()
}

/// `rows` as `source`'s entries, each with the role `role_of` tells for it; the account that
/// acted is kept only for staff (the gateway shows it as a pseudonym).
pub fn entries(
    rows: &[AuditRow],
    source: wire::Source,
    role_of: impl Fn(&AuditRow) -> wire::ActorRole,
) -> Vec<wire::AccessEntry> {
    rows.iter()
        .map(|row| {
            let role = role_of(row);
            let actor = if is_staff(role) { row.operator_id.as_str() } else { "" };
            entry(row, source, role, actor)
        })
        .collect()
}

/// The one service that asks for a citizen's data: the gateway, for the citizen its verified
/// session names. Another service's key, stolen or misused, reads nobody's data this way.
const ASKER: &str = "gateway";

fn require_asker<T>(request: &tonic::Request<T>) -> Result<(), Status> {
    let caller = crate::auth::require_service(request)?;
    if caller.sub != ASKER {
        return Err(Status::permission_denied("a citizen's data is asked for by the gateway only"));
    }
    Ok(())
}

/// A service's part of a request: only for the gateway. The query, checked.
pub fn trail_query(
    request: &tonic::Request<wire::ListAccessEntriesRequest>,
) -> Result<TrailQuery, Status> {
    require_asker(request)?;
    TrailQuery::parse(request.get_ref())
}

/// A service's part of an export: only for the gateway. The fiscal code asked.
pub fn export_of(
    request: &tonic::Request<wire::ExportCitizenDataRequest>,
) -> Result<String, Status> {
    require_asker(request)?;
    fiscal_code_of(&request.get_ref().fiscal_code)
}

/// The fiscal code a request names, parsed as the register keeps it; INVALID_ARGUMENT on
/// `fiscal_code` otherwise (the services' own callers send only codes from verified tokens, so
/// this refuses only what no citizen has).
fn fiscal_code_of(text: &str) -> Result<String, Status> {
    let today = chrono::Utc::now().date_naive();
    sportello_domain::codice_fiscale::CodiceFiscale::parse(text, today)
        .map(|cf| cf.as_str().to_owned())
        .map_err(|e| {
            let mut violations = crate::error::FieldViolations::new();
            violations.add("fiscal_code", e.to_string());
            violations.into_status()
        })
}

/// A database error as the gateway sees it: retry later.
pub fn unavailable(e: sqlx::Error) -> Status {
    tracing::warn!(error = %e, "citizen data: database error");
    Status::unavailable("the service is temporarily unavailable; retry")
}

/// `action` as a stable UPPER_SNAKE code: `DecideClaim` → `DECIDE_CLAIM`.
pub fn action_code(action: &str) -> String {
    let mut out = String::with_capacity(action.len() + 4);
    let mut previous_lower = false;
    for c in action.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// An audit row as an entry of `source`'s part of the list.
pub fn entry(
    row: &AuditRow,
    source: wire::Source,
    role: wire::ActorRole,
    actor_id: &str,
) -> wire::AccessEntry {
    wire::AccessEntry {
        at: Some(timestamp(row.at)),
        source: source as i32,
        key: audit_key(row.id),
        actor_role: role as i32,
        actor_id: actor_id.to_owned(),
        action: action_code(&row.action),
        reason: row.detail.clone(),
        outcome: row.outcome.clone(),
    }
}

/// The role a session's principal acts in, as the citizen's list shows it.
pub fn actor_role(role: crate::auth::Role) -> wire::ActorRole {
    use crate::auth::Role;
    match role {
        Role::Citizen => wire::ActorRole::Citizen,
        Role::Operator => wire::ActorRole::Operator,
        Role::Patronato => wire::ActorRole::Patronato,
        Role::Backoffice => wire::ActorRole::Backoffice,
        Role::Service => wire::ActorRole::System,
    }
}

/// Whether a role is staff's, whose account the citizen sees only as a pseudonym.
pub fn is_staff(role: wire::ActorRole) -> bool {
    use wire::ActorRole;
    matches!(role, ActorRole::Operator | ActorRole::Patronato | ActorRole::Backoffice)
}

/// The role recorded with an audit row, when one was.
pub fn recorded_role(row: &AuditRow) -> Option<wire::ActorRole> {
    row.actor_role.as_deref().and_then(wire::ActorRole::from_str_name)
}

/// The newest `limit` of `entries` (already each after the cursor), newest first.
pub fn newest(mut entries: Vec<wire::AccessEntry>, limit: i64) -> Vec<wire::AccessEntry> {
    entries.sort_by_key(|e| std::cmp::Reverse(Position::of(e)));
    entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    entries
}

/// Milliseconds since the epoch of a protobuf timestamp.
pub fn millis(t: prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000))
}

/// A protobuf timestamp of milliseconds since the epoch.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// RFC 3339 (UTC, milliseconds) of milliseconds since the epoch, as exports print times.
pub fn rfc3339(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else { return ms.to_string() };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Where an export's records go: JSON Lines, sent in chunks of whole lines.
pub struct Lines<T> {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<T, Status>>,
    wrap: fn(Vec<u8>) -> T,
    /// [`SEND_TIMEOUT`], shorter in tests.
    send_timeout: std::time::Duration,
}

/// The receiving end of [`Lines`], as a tonic response stream.
pub type LineStream<T> = tokio_stream::wrappers::ReceiverStream<Result<T, Status>>;

/// The caller went away: stop reading.
#[derive(Debug)]
pub struct Gone;

impl<T> Lines<T> {
    /// Lines wrapped into messages by `wrap`, and the stream they come out of. At most two
    /// chunks wait for a slow reader: the producer waits for it, holding no more.
    pub fn channel(wrap: fn(Vec<u8>) -> T) -> (Self, LineStream<T>) {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let buf = Vec::with_capacity(CHUNK_BYTES * 2);
        (Self { buf, tx, wrap, send_timeout: SEND_TIMEOUT }, LineStream::new(rx))
    }

    /// Appends one record; sends a chunk when it is full.
    pub async fn push(&mut self, record: &serde_json::Value) -> Result<(), Gone> {
        serde_json::to_writer(&mut self.buf, record).map_err(|_| Gone)?;
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Appends lines already written (whole lines), as a chunk of its own.
    pub async fn push_raw(&mut self, lines: Vec<u8>) -> Result<(), Gone> {
        self.flush().await?;
        self.send(Ok((self.wrap)(lines))).await
    }

    /// Sends what is buffered.
    pub async fn flush(&mut self) -> Result<(), Gone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES * 2));
        self.send(Ok((self.wrap)(chunk))).await
    }

    /// Hands one message to the reader, which is gone if it takes nothing for [`SEND_TIMEOUT`].
    async fn send(&mut self, message: Result<T, Status>) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_timeout, self.tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::info!(timeout = ?self.send_timeout, "an export's reader took nothing; ending it");
                Err(Gone)
            }
        }
    }

    /// Ends the stream with `status` after what was sent.
    pub async fn fail(mut self, status: Status) {
        let _ = self.flush().await;
        let _ = self.send(Err(status)).await;
    }

    /// Ends the stream after sending what is buffered.
    pub async fn finish(mut self) {
        let _ = self.flush().await;
    }
}

/// A service's export stream: its records, then its end.
pub type ExportStream = LineStream<wire::ExportCitizenDataResponse>;

/// One of the [`MAX_EXPORTS`] places of this process, taken before an export is recorded or
/// read; RESOURCE_EXHAUSTED with RetryInfo when all are taken.
pub fn export_place() -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    static PLACES: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    let places =
        PLACES.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_EXPORTS)));
    places.clone().try_acquire_owned().map_err(|_| {
        crate::error::retry_later(
            tonic::Code::ResourceExhausted,
            "troppe esportazioni in corso; riprova tra poco",
            "EXPORTS_AT_CAPACITY",
            "privacy.sportello",
            std::time::Duration::from_secs(5),
        )
    })
}

/// Runs `produce` in a task of its own, holding `place`, writing into the stream returned; a
/// database error ends the stream with UNAVAILABLE, and a caller who goes away (or stops
/// reading, [`SEND_TIMEOUT`]) stops it.
pub fn export<F, Fut>(place: tokio::sync::OwnedSemaphorePermit, produce: F) -> ExportStream
where
    F: FnOnce(Lines<wire::ExportCitizenDataResponse>) -> Fut,
    Fut: std::future::Future<Output = (Lines<wire::ExportCitizenDataResponse>, Result<(), Failed>)>
        + Send
        + 'static,
{
    let (lines, stream) = Lines::channel(|data| wire::ExportCitizenDataResponse { data });
    let task = produce(lines);
    tokio::spawn(async move {
        let _place = place;
        let (lines, done) = task.await;
        match done {
            Ok(()) => lines.finish().await,
            Err(Failed::Gone) => {}
            Err(Failed::Db(e)) => {
                tracing::warn!(error = %e, "an export failed");
                lines.fail(Status::unavailable("the export could not be completed; retry")).await
            }
        }
    });
    stream
}

/// [`export`] of `fiscal_code`'s rows of each of `kinds` in `db` (with the start of its period,
/// if it has one), in order, as records of `source`.
pub fn export_kinds(
    place: tokio::sync::OwnedSemaphorePermit,
    db: Database,
    source: &'static str,
    fiscal_code: String,
    kinds: Vec<(&'static Kind, Option<i64>)>,
) -> ExportStream {
    export(place, move |mut lines| async move {
        let done = stream_kinds(&db, &mut lines, source, &fiscal_code, &kinds).await;
        (lines, done)
    })
}

/// Why an export stopped early.
#[derive(Debug)]
pub enum Failed {
    Gone,
    Db(sqlx::Error),
}

impl From<Gone> for Failed {
    fn from(_: Gone) -> Self {
        Failed::Gone
    }
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Db(e)
    }
}

/// One kind of record, read by one query with the fiscal code as `$1`.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// The record's `kind` (e.g. `claim`).
    pub name: &'static str,
    /// The columns it shows (never a secret or a hash), with `$1` the fiscal code.
    pub sql: &'static str,
    /// Columns that hold JSON text, shown as JSON.
    pub json: &'static [&'static str],
}

/// Streams the rows of `kind` for `fiscal_code` (and `since`, as `$2`, when given) into `lines`, one record each, with `source`:
/// read row by row from the database, never all at once. Columns named `*_at` that hold
/// integers are times in milliseconds and are shown in RFC 3339.
pub async fn stream_kind<T>(
    db: &Database,
    lines: &mut Lines<T>,
    source: &str,
    fiscal_code: &str,
    kind: &Kind,
    since: Option<i64>,
) -> Result<(), Failed> {
    let query = sqlx::query(kind.sql).bind(fiscal_code);
    // Only kinds kept for a period take `$2`, the start of it.
    let query = match since {
        Some(since) => query.bind(since),
        None => query,
    };
    let mut rows = query.fetch(&db.pool);
    while let Some(row) = rows.try_next().await? {
        let record = record(&row, source, kind);
        lines.push(&record).await?;
    }
    Ok(())
}

/// [`stream_kind`] for each of `kinds` (with the start of its period, if it has one), in order.
pub async fn stream_kinds<T>(
    db: &Database,
    lines: &mut Lines<T>,
    source: &str,
    fiscal_code: &str,
    kinds: &[(&Kind, Option<i64>)],
) -> Result<(), Failed> {
    for (kind, since) in kinds {
        stream_kind(db, lines, source, fiscal_code, kind, *since).await?;
    }
    Ok(())
}

/// A row as a JSON object, led by its kind and source.
pub fn record(row: &sqlx::any::AnyRow, source: &str, kind: &Kind) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("kind".into(), kind.name.into());
    map.insert("source".into(), source.into());
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let value = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            match v {
                Some(ms) if name.ends_with("_at") => rfc3339(ms).into(),
                Some(n) => n.into(),
                None => serde_json::Value::Null,
            }
        } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            match v {
                Some(text) if kind.json.contains(&name) => {
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                }
                Some(text) => text.into(),
                None => serde_json::Value::Null,
            }
        } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
            v.map_or(serde_json::Value::Null, Into::into)
        } else {
            serde_json::Value::Null
        };
        map.insert(name.to_owned(), value);
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::Source;

    #[tokio::test]
    async fn a_reader_that_takes_nothing_ends_the_export_rather_than_hold_it_open() {
        let (mut lines, stream) = Lines::channel(|data| wire::ExportCitizenDataResponse { data });
        lines.send_timeout = std::time::Duration::from_millis(50);
        let record = serde_json::json!({ "kind": "message", "text": "x".repeat(40_000) });
        // Two chunks wait for the reader; the next finds nobody taking them.
        let mut pushed = 0;
        while lines.push(&record).await.is_ok() {
            pushed += 1;
            assert!(pushed < 10, "the export never gave up on its reader");
        }
        assert_eq!(pushed, 2, "two chunks wait, no more");
        drop(stream);
    }

    #[test]
    fn exports_beyond_the_places_of_a_process_are_refused_with_when_to_retry() {
        use tonic_types::StatusExt as _;
        let held: Vec<_> = (0..MAX_EXPORTS).map(|_| export_place().expect("a place")).collect();
        let refused = export_place().expect_err("no place left");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.get_details_retry_info().is_some());
        drop(held);
        let _again = export_place().expect("a place again once one ends");
    }

    fn after(at: i64, source: Source, key: &str) -> TrailQuery {
        TrailQuery {
            fiscal_code: "X".into(),
            limit: 10,
            after: Some(Position { at, source: source as i32, key: key.into() }),
            since: i64::MIN,
            until: i64::MAX,
        }
    }

    #[test]
    fn entries_of_the_cursors_millisecond_follow_it_only_below_it_in_source_then_key() {
        let q = after(5, Source::Claims, &audit_key(42));
        assert_eq!(q.tie(Source::Identity, AUDIT_PREFIX), Tie::All);
        assert_eq!(q.tie(Source::Notify, AUDIT_PREFIX), Tie::Nothing);
        assert_eq!(q.tie(Source::Claims, AUDIT_PREFIX), Tie::Below(format!("{:020}", 42)));
        // Keys order as text: audit/ < delivered/ < failed/ < sent/.
        let q = after(5, Source::Notify, "sent/abc");
        assert_eq!(q.tie(Source::Notify, AUDIT_PREFIX), Tie::All);
        assert_eq!(q.tie(Source::Notify, "delivered/"), Tie::All);
        assert_eq!(q.tie(Source::Notify, "sent/"), Tie::Below("abc".into()));
        let q = after(5, Source::Notify, "delivered/abc");
        assert_eq!(q.tie(Source::Notify, AUDIT_PREFIX), Tie::All);
        assert_eq!(q.tie(Source::Notify, "sent/"), Tie::Nothing);
        let q = after(5, Source::Notify, &audit_key(1));
        assert_eq!(q.tie(Source::Notify, "sent/"), Tie::Nothing);
        assert_eq!(q.tie(Source::Notify, "delivered/"), Tie::Nothing);
        assert_eq!(q.tie(Source::Notify, AUDIT_PREFIX), Tie::Below(format!("{:020}", 1)));
    }

    #[test]
    fn actions_get_stable_upper_snake_codes() {
        assert_eq!(action_code("DecideClaim"), "DECIDE_CLAIM");
        assert_eq!(action_code("RegisterCheck"), "REGISTER_CHECK");
        assert_eq!(action_code("EXPORT_MY_DATA"), "EXPORT_MY_DATA");
    }

    #[test]
    fn times_round_trip_through_timestamps() {
        for ms in [0, 1, 999, 1_000, 1_733_000_000_123] {
            assert_eq!(millis(timestamp(ms)), ms);
        }
        assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01.000Z");
    }
}
