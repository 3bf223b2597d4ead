//! `sportello.privacy.v1.PrivacyService`, which the gateway answers itself: a citizen's "who
//! looked at my data" and "take my data with me" (GDPR artt. 15 and 20). Each service answers
//! for its own part (`CitizenDataService`, for services only); the gateway is the one place that
//! already calls all three, so it merges them here: asking identity-svc to do it would make a
//! cycle (claims and notify call identity). The citizen is always the one the verified session
//! token names, never one a request could name. Staff accounts are shown by a pseudonym of the
//! citizen's own (HMAC-SHA256 under a key outside every database, of the fiscal code and the
//! account): two rows by one operator read alike, and the operator is not named.

use crate::config::Config;
use base64::Engine;
use hmac::{Hmac, Mac};
use sportello_platform::auth::{Claims, Level, Role};
use sportello_platform::citizen_data::{self as data, Lines, Position};
use sportello_platform::error::FieldViolations;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::privacy::v1::citizen_data_service_client::CitizenDataServiceClient;
use sportello_proto::privacy::v1::privacy_service_server::{PrivacyService, PrivacyServiceServer};
use sportello_proto::privacy::v1::{
    AccessEntry, ActorRole, DataAccess, ExportCitizenDataRequest, ExportMyDataRequest,
    ExportMyDataResponse, ListAccessEntriesRequest, ListMyDataAccessRequest,
    ListMyDataAccessResponse, Source,
};
use std::path::Path;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

type Traced = sportello_platform::trace_context::RpcTrace<Channel>;

pub use sportello_proto::privacy::v1::privacy_service_server::SERVICE_NAME;

/// The package the gateway serves itself, as the router names packages.
pub const DOMAIN: &str = "sportello.privacy";

/// The internal service each backend answers for its own part.
const PART_SERVICE: &str = "sportello.privacy.v1.CitizenDataService";

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;
/// How many entries the export reads per page of the access list (the most a part answers).
const EXPORT_PAGE: i64 = MAX_PAGE;

/// Where the pseudonym key lives under the data directory (shared by the gateway's instances,
/// like every other key).
pub fn key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("keys/pseudonyms.key")
}

/// The pseudonym key at `path`, 32 random bytes made (mode 0600) on first use.
pub fn load_or_generate_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => anyhow::bail!("{}: a pseudonym key has at least 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = path.parent() {
        sportello_platform::files::create_dir(dir)?;
    }
    let mut key = vec![0u8; 32];
    rand::fill(&mut key[..]);
    match sportello_platform::files::options().write(true).create_new(true).open(path) {
        Ok(mut file) => file.write_all(&key)?,
        // Another instance made it first: theirs stands.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    Ok(std::fs::read(path)?)
}

/// The gateway's privacy service, and its clients of the three services' parts.
#[derive(Clone)]
pub struct Privacy {
    parts: Vec<(Source, CitizenDataServiceClient<Traced>)>,
    /// The same services over connections of their own for exports: a citizen who reads an
    /// export slowly fills its HTTP/2 windows, which must not hold up everyone's lists.
    export_parts: Vec<CitizenDataServiceClient<Traced>>,
    me: ServiceKey,
    key: std::sync::Arc<Vec<u8>>,
}

impl Privacy {
    pub fn new(
        config: &Config,
        me: ServiceKey,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut export_parts = Vec::new();
        for (source, url) in [
            (Source::Identity, &config.identity_url),
            (Source::Claims, &config.claims_url),
            (Source::Notify, &config.notify_url),
        ] {
            let client = || -> anyhow::Result<_> {
                let backend = sportello_platform::client::backend(
                    PART_SERVICE,
                    url,
                    config.server.health_interval,
                    shutdown.clone(),
                )?;
                let channel = sportello_platform::client::traced(backend.channel);
                Ok(CitizenDataServiceClient::new(channel))
            };
            parts.push((source, client()?));
            export_parts.push(client()?);
        }
        let key = load_or_generate_key(&key_path(&config.data_dir))?;
        Ok(Self { parts, export_parts, me, key: std::sync::Arc::new(key) })
    }

    /// The tonic service, for the router.
    pub fn into_routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(PrivacyServiceServer::new(self))
    }

    /// The operator's pseudonym in `fiscal_code`'s list.
    fn pseudonym(&self, fiscal_code: &str, operator: &str) -> String {
        let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(&self.key).expect("any key length");
        mac.update(fiscal_code.as_bytes());
        mac.update(&[0x1f]);
        mac.update(operator.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().take(5).map(|b| format!("{b:02X}")).collect();
        format!("OP-{hex}")
    }

    /// One page of the merged list: the newest `limit` entries after `after` among the parts
    /// in `sources`, and whether there are more.
    async fn page(
        &self,
        fiscal_code: &str,
        q: &Query,
        after: Option<&Position>,
    ) -> Result<(Vec<AccessEntry>, bool), Status> {
        let calls = self.parts.iter().filter(|(s, _)| q.sources.contains(s)).map(|(_, c)| {
            let mut client = c.clone();
            let request = self.me.request(ListAccessEntriesRequest {
                fiscal_code: fiscal_code.to_owned(),
                // One more than the page: whether there is another page shows without a call.
                page_size: i32::try_from(q.limit + 1).unwrap_or(i32::MAX),
                after: after.map(Position::to_wire),
                since: q.since,
                until: q.until,
            });
            async move { client.list_access_entries(request).await }
        });
        let mut all = Vec::new();
        for answer in futures::future::join_all(calls).await {
            all.extend(answer.map_err(part_failed)?.into_inner().entries);
        }
        let more = all.len() as i64 > q.limit;
        Ok((data::newest(all, q.limit), more))
    }

    /// An entry as the citizen sees it.
    fn shown(&self, fiscal_code: &str, e: AccessEntry) -> DataAccess {
        let role = ActorRole::try_from(e.actor_role).unwrap_or(ActorRole::System);
        let source = Source::try_from(e.source).unwrap_or(Source::Unspecified);
        let pseudonym = if data::is_staff(role) && !e.actor_id.is_empty() {
            self.pseudonym(fiscal_code, &e.actor_id)
        } else {
            String::new()
        };
        DataAccess {
            at: e.at,
            source: e.source,
            actor_role: e.actor_role,
            office: office(role, source).to_owned(),
            operator_pseudonym: pseudonym,
            action_label: action_label(&e.action).to_owned(),
            action: e.action,
            reason: e.reason,
            outcome_label: outcome_label(&e.outcome),
            outcome: e.outcome,
            actor_role_label: role_label(role).to_owned(),
        }
    }
}

/// A part that failed makes the whole answer fail: a list with a service's part missing would
/// say that nobody from that service looked.
fn part_failed(status: Status) -> Status {
    // A bound on the citizen's own calls (exports per hour) is theirs to know, with its
    // RetryInfo; anything else is the service's failure, said without its cause.
    if status.code() == tonic::Code::ResourceExhausted {
        return status;
    }
    tracing::warn!(code = ?status.code(), "a service's part of a citizen's data failed");
    Status::unavailable("il servizio non è al momento disponibile; riprovi tra poco")
}

/// The citizen the verified session names: the gateway's authentication put its claims on the
/// request; the policy table already refused staff, and this refuses them again.
fn citizen<T>(request: &Request<T>, min_level: Level) -> Result<String, Status> {
    let claims = request
        .extensions()
        .get::<Claims>()
        .ok_or_else(|| Status::unauthenticated("session required"))?;
    if claims.role != Role::Citizen {
        return Err(Status::permission_denied("solo il cittadino può consultare i propri dati"));
    }
    if claims.level < min_level {
        return Err(Status::permission_denied(
            "serve un PIN ordinario o dispositivo, SPID, CIE o CNS",
        ));
    }
    Ok(claims.sub.clone())
}

/// What a ListMyDataAccess asks, checked.
struct Query {
    limit: i64,
    sources: Vec<Source>,
    since: Option<prost_types::Timestamp>,
    until: Option<prost_types::Timestamp>,
}

impl Query {
    fn all(limit: i64) -> Self {
        Self {
            limit,
            sources: vec![Source::Identity, Source::Claims, Source::Notify],
            since: None,
            until: None,
        }
    }
}

fn parse(r: &ListMyDataAccessRequest) -> Result<(Query, Option<Position>), Status> {
    let mut violations = FieldViolations::new();
    let limit = match i64::from(r.page_size) {
        0 => DEFAULT_PAGE,
        n if (1..=MAX_PAGE).contains(&n) => n,
        _ => {
            violations.add("page_size", format!("deve essere tra 1 e {MAX_PAGE}"));
            DEFAULT_PAGE
        }
    };
    let mut sources = Vec::new();
    for (i, s) in r.sources.iter().enumerate() {
        match Source::try_from(*s) {
            Ok(s) if s != Source::Unspecified => sources.push(s),
            _ => violations.add(format!("sources[{i}]"), "non è un servizio di Sportello"),
        }
    }
    if sources.is_empty() {
        sources = Query::all(limit).sources;
    }
    if let (Some(since), Some(until)) = (r.since, r.until) {
        if data::millis(since) >= data::millis(until) {
            violations.add("until", "deve essere successivo a since");
        }
    }
    let after = match r.page_token.as_str() {
        "" => None,
        token => {
            let parsed = decode_token(token);
            if parsed.is_none() {
                violations.add("page_token", "non è un page_token di una risposta precedente");
            }
            parsed
        }
    };
    violations.into_result(()).map_err(FieldViolations::into_status)?;
    Ok((Query { limit, sources, since: r.since, until: r.until }, after))
}

/// A page token: where the last page ended, as `at.source.key`, base64url.
fn encode_token(p: &Position) -> String {
    let raw = format!("{}.{}.{}", p.at, p.source, p.key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_token(token: &str) -> Option<Position> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let mut parts = raw.splitn(3, '.');
    let at = parts.next()?.parse().ok()?;
    let source = parts.next()?.parse().ok()?;
    let key = parts.next()?.to_owned();
    // Keys are the services' own (digits, ids): anything else is forged, and a control
    // character would only be refused by the service, as if the service had failed.
    let plausible =
        !key.is_empty() && key.len() <= 200 && key.bytes().all(|b| b.is_ascii_graphic());
    plausible.then_some(Position { at, source, key })
}

fn role_label(role: ActorRole) -> &'static str {
    match role {
        ActorRole::Citizen => "cittadino",
        ActorRole::Operator => "operatore del Contact Center",
        ActorRole::Patronato => "patronato",
        ActorRole::Backoffice => "back office",
        ActorRole::System | ActorRole::Unspecified => "sistema",
    }
}

fn office(role: ActorRole, source: Source) -> &'static str {
    match (role, source) {
        (ActorRole::Citizen, _) => "Portale INPS",
        (ActorRole::Operator, _) => "Contact Center INPS",
        (ActorRole::Patronato, _) => "Patronato",
        (ActorRole::Backoffice, _) => "Sede INPS - back office",
        (_, Source::Identity) => "Sistema - credenziali",
        (_, Source::Claims) => "Sistema - domande",
        (_, Source::Notify) => "Sistema - comunicazioni",
        (_, Source::Unspecified) => "Sistema",
    }
}

/// The Italian label of each action code; a code not listed reads as a generic operation.
const ACTION_LABELS: &[(&str, &str)] = &[
    ("REQUEST_PIN", "Richiesta del PIN dal portale"),
    ("REQUEST_PIN_FOR_CALLER", "Richiesta del PIN tramite il Contact Center"),
    ("COMPLETE_FIRST_ACCESS", "Primo accesso e scelta del PIN"),
    ("CHANGE_PIN", "Modifica del PIN"),
    ("START_PIN_RECOVERY", "Avvio del ripristino del PIN"),
    ("CONFIRM_PIN_RECOVERY", "Conferma del ripristino del PIN"),
    ("LOGIN_WITH_PIN", "Accesso con PIN"),
    ("LOOKUP_CREDENTIAL", "Consultazione dello stato del PIN"),
    ("LIST_AUDIT_EVENTS", "Consultazione del registro delle operazioni"),
    ("LIST_UNDELIVERED_PIN_REQUESTS", "Consultazione delle richieste di PIN non recapitate"),
    ("RESEND_FIRST_HALF", "Nuovo invio della prima parte del PIN"),
    ("VALIDATE_PENDING_PIN_REQUEST", "Convalida della richiesta di PIN"),
    ("REVOKE_PIN", "Revoca del PIN"),
    ("UNLOCK_PIN", "Sblocco del PIN"),
    ("UPDATE_CONTACTS", "Modifica dei recapiti"),
    ("REGISTER_CHANGE", "Aggiornamento dell'anagrafe dei residenti"),
    ("REGISTER_CHECK", "Verifica sull'anagrafe dei residenti"),
    ("IMPORT_RESIDENTS", "Caricamento dell'anagrafe dei residenti"),
    ("START_PIN_CONVERSION", "Richiesta del PIN dispositivo"),
    ("UPLOAD_CONVERSION_DOCUMENTS", "Invio dei documenti per il PIN dispositivo"),
    ("APPROVE_CONVERSION", "Approvazione del PIN dispositivo"),
    ("REJECT_CONVERSION", "Rifiuto del PIN dispositivo"),
    ("REVOKE_CONVERSION", "Revoca del PIN dispositivo"),
    ("WITHDRAW_PIN_CONVERSION", "Ritiro della richiesta di PIN dispositivo"),
    ("DOWNLOAD_CONVERSION_FILE", "Consultazione dei documenti per il PIN dispositivo"),
    ("LIST_PENDING_CONVERSIONS", "Consultazione delle richieste da esaminare"),
    ("LIST_REVIEW_QUEUE", "Consultazione delle richieste da esaminare"),
    ("EXPORT_MY_DATA", "Esportazione dei propri dati"),
    ("SUBMIT_CLAIM", "Presentazione della domanda"),
    ("GET_CLAIM", "Consultazione della domanda"),
    ("LIST_CLAIMS", "Consultazione dell'elenco delle domande"),
    ("DECIDE_CLAIM", "Decisione sulla domanda"),
    ("WITHDRAW_CLAIM", "Ritiro della domanda"),
    ("UPDATE_PAYMENT_DETAILS", "Modifica delle modalità di pagamento"),
    ("REDEEM_BABY_SITTING_BONUS", "Utilizzo del bonus baby-sitting"),
    ("REGISTER_MANDATE", "Registrazione del mandato al patronato"),
    ("CREATE_PAYMENT_BATCH", "Disposizione del pagamento"),
    ("CONFIRM_PAYMENT_BATCH", "Conferma del pagamento"),
    ("CANCEL_PAYMENT_BATCH", "Annullamento della disposizione di pagamento"),
    ("IMPORT_REGISTRY", "Caricamento delle posizioni assicurative"),
    ("GET_MESSAGE", "Consultazione di un messaggio"),
    ("LIST_MESSAGES", "Consultazione dei messaggi"),
    ("WATCH_MESSAGE", "Verifica del recapito di un messaggio"),
    ("MESSAGE_SENT", "Invio di un messaggio"),
    ("MESSAGE_DELIVERED", "Recapito di un messaggio"),
    ("MESSAGE_FAILED", "Messaggio non recapitato"),
];

fn action_label(code: &str) -> &'static str {
    ACTION_LABELS.iter().find(|(c, _)| *c == code).map_or("Operazione sui dati", |(_, label)| label)
}

fn outcome_label(outcome: &str) -> String {
    match outcome {
        "OK" => "Eseguita".into(),
        "ON_REGISTER" => "Dati confermati dall'anagrafe".into(),
        "ANAGRAFICA_MISMATCH" => "Dati diversi da quelli dell'anagrafe".into(),
        "NOT_ON_REGISTER" => "Non presente nell'anagrafe".into(),
        "FOREIGN_RESIDENCE" => "Residente all'estero".into(),
        _ => "Non eseguita".into(),
    }
}

/// An entry of the access list as a line of the export.
fn export_record(entry: &DataAccess) -> serde_json::Value {
    let source = Source::try_from(entry.source).unwrap_or(Source::Unspecified);
    serde_json::json!({
        "kind": "data_access",
        "source": source.as_str_name().trim_start_matches("SOURCE_").to_ascii_lowercase(),
        "at": entry.at.map(|t| data::rfc3339(data::millis(t))),
        "role": entry.actor_role_label,
        "office": entry.office,
        "operator": entry.operator_pseudonym,
        "action": entry.action,
        "action_label": entry.action_label,
        "reason": entry.reason,
        "outcome": entry.outcome,
        "outcome_label": entry.outcome_label,
    })
}

type ExportStream = data::LineStream<ExportMyDataResponse>;

#[tonic::async_trait]
impl PrivacyService for Privacy {
    async fn list_my_data_access(
        &self,
        request: Request<ListMyDataAccessRequest>,
    ) -> Result<Response<ListMyDataAccessResponse>, Status> {
        let fiscal_code = citizen(&request, Level::Simplified)?;
        let (q, after) = parse(request.get_ref())?;
        let (entries, more) = self.page(&fiscal_code, &q, after.as_ref()).await?;
        let next_page_token = match entries.last() {
            Some(last) if more => encode_token(&Position::of(last)),
            _ => String::new(),
        };
        let entries = entries.into_iter().map(|e| self.shown(&fiscal_code, e)).collect();
        Ok(Response::new(ListMyDataAccessResponse { entries, next_page_token }))
    }

    type ExportMyDataStream = ExportStream;

    async fn export_my_data(
        &self,
        request: Request<ExportMyDataRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let fiscal_code = citizen(&request, Level::Ordinary)?;
        // identity-svc audits the export and tells the citizen before it sends a record: its
        // part is opened first, and a failure there refuses the export before anything is sent.
        let identity = self.open_part(0, &fiscal_code).await?;
        let (lines, stream) = Lines::channel(|data| ExportMyDataResponse { data });
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(status) = this.export(lines, &fiscal_code, identity).await {
                tracing::debug!(code = ?status.code(), "an export ended early");
            }
        });
        Ok(Response::new(stream))
    }
}

type Part = tonic::Streaming<sportello_proto::privacy::v1::ExportCitizenDataResponse>;

impl Privacy {
    /// Opens the export of part `i` (identity, claims, notify).
    async fn open_part(&self, i: usize, fiscal_code: &str) -> Result<Part, Status> {
        let client = &self.export_parts[i];
        let request =
            self.me.request(ExportCitizenDataRequest { fiscal_code: fiscal_code.to_owned() });
        let part = client.clone().export_citizen_data(request).await.map_err(part_failed)?;
        Ok(part.into_inner())
    }

    /// Copies every part's records into `lines`, one part after the other (no service holds a
    /// stream open while another is read), then the access list. A failed part ends the stream
    /// with UNAVAILABLE after what was sent; a citizen who hangs up stops it.
    async fn export(
        &self,
        mut lines: Lines<ExportMyDataResponse>,
        fiscal_code: &str,
        identity: Part,
    ) -> Result<(), Status> {
        let mut next = Some(identity);
        for i in 0..self.export_parts.len() {
            let mut part = match next.take() {
                Some(opened) => opened,
                None => match self.open_part(i, fiscal_code).await {
                    Ok(part) => part,
                    Err(status) => return fail(lines, status).await,
                },
            };
            loop {
                match part.message().await {
                    Ok(Some(chunk)) => {
                        if lines.push_raw(chunk.data).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(status) => return fail(lines, part_failed(status)).await,
                }
            }
        }
        let q = Query::all(EXPORT_PAGE);
        let mut after = None;
        loop {
            let (entries, more) = match self.page(fiscal_code, &q, after.as_ref()).await {
                Ok(page) => page,
                Err(status) => return fail(lines, status).await,
            };
            after = entries.last().map(Position::of);
            for entry in entries {
                let shown = self.shown(fiscal_code, entry);
                if lines.push(&export_record(&shown)).await.is_err() {
                    return Ok(());
                }
            }
            if !more {
                break;
            }
        }
        lines.finish().await;
        Ok(())
    }
}

async fn fail(lines: Lines<ExportMyDataResponse>, status: Status) -> Result<(), Status> {
    lines.fail(status.clone()).await;
    Err(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_round_trips_and_junk_is_refused() {
        let p =
            Position { at: 1_733_000_000_123, source: 2, key: "audit/00000000000000000042".into() };
        assert_eq!(decode_token(&encode_token(&p)), Some(p));
        assert_eq!(decode_token("not a token"), None);
        assert_eq!(decode_token(""), None);
        let forged = |raw: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(decode_token(&forged("9223372036854775807.3.sent/\u{0}")), None, "NUL in key");
        assert_eq!(decode_token(&forged("1.1.a b")), None, "space in key");
    }

    #[test]
    fn an_operator_has_one_pseudonym_per_citizen_and_another_for_another_citizen() {
        let dir = tempfile::tempdir().expect("dir");
        let key = load_or_generate_key(&key_path(dir.path())).expect("key");
        assert_eq!(key, load_or_generate_key(&key_path(dir.path())).expect("same key"));
        let privacy = |key: Vec<u8>| Privacy {
            parts: Vec::new(),
            export_parts: Vec::new(),
            me: ServiceKey::load_or_generate(dir.path(), "gateway").expect("service key"),
            key: std::sync::Arc::new(key),
        };
        let p = privacy(key);
        let rossi = p.pseudonym("RSSMRA85T10A562S", "demo-operator");
        assert_eq!(rossi, p.pseudonym("RSSMRA85T10A562S", "demo-operator"));
        assert_ne!(rossi, p.pseudonym("VRDGPP80A01H501U", "demo-operator"));
        assert_ne!(rossi, p.pseudonym("RSSMRA85T10A562S", "another-operator"));
        assert!(!rossi.contains("demo"), "{rossi}");
    }

    #[test]
    fn every_action_the_services_record_has_an_italian_label_of_its_own() {
        for (code, label) in ACTION_LABELS {
            assert_eq!(*code, data::action_code(code), "{code} is a stable code");
            assert_ne!(action_label(code), "Operazione sui dati", "{label}");
        }
    }
}
