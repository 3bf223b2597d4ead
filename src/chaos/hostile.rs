//! The `hostile` scenario: every RPC of the contract (walked from the descriptor set, so a new
//! RPC is covered without new code), unary and streaming, through the gateway and straight at
//! the service that owns it, as nobody, as a citizen logged in with a real PIN, as each demo
//! staff role, as a service and with forged tokens, fed malformed and boundary messages
//! ([`generate`]); then the wire itself broken ([`wire`]): truncated frames, wrong content-type,
//! HTTP/2 garbage, client streams that stop half-way. Honest calls go in between.
//!
//! Violations: a panic in the suite's log; INTERNAL, UNKNOWN, UNAVAILABLE or DATA_LOSS in answer
//! to a request; INVALID_ARGUMENT to a well-formed message without the fields it refuses
//! (google.rpc.BadRequest); an honest call that fails; a forged token let in where nobody is.

mod generate;
mod wire;

use super::suite::Suite;
use super::{Options, Report};
use crate::staff::StaffRole;
use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sportello_platform::raw_codec::RawCodec;
use sportello_proto::claims::v1 as cl;
use sportello_proto::identity::v1 as id;
use sportello_proto::notify::v1 as nt;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_types::StatusExt as _;

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Caller {
    Anonymous,
    Citizen,
    Operator,
    Patronato,
    Backoffice,
    /// A service token, as the services call each other.
    Service,
    /// A token that is not one: garbage, unsigned, or a real one with its signature altered.
    Forged,
}

const CALLERS: [Caller; 7] = [
    Caller::Anonymous,
    Caller::Citizen,
    Caller::Operator,
    Caller::Patronato,
    Caller::Backoffice,
    Caller::Service,
    Caller::Forged,
];

/// The demo resident whose honest calls are checked throughout (demo-residents.csv).
const ROSSI: &str = "RSSMRA85T10A562S";
/// The PIN Rossi chooses at first access.
const ROSSI_PIN: &str = "K734912Q";

/// How a call ended: its code, and for INVALID_ARGUMENT whether it named fields.
#[derive(Debug)]
struct Answer {
    code: Code,
    message: String,
    names_fields: bool,
}

impl Answer {
    fn of(result: Result<(), tonic::Status>) -> Self {
        match result {
            Ok(()) => Self { code: Code::Ok, message: String::new(), names_fields: false },
            Err(status) => {
                let names_fields = status.get_details_bad_request().is_some_and(|b| {
                    !b.field_violations.is_empty()
                        && b.field_violations.iter().all(|v| !v.field.is_empty())
                });
                let message: String = status.message().chars().take(160).collect();
                Self { code: status.code(), message, names_fields }
            }
        }
    }
}

fn is_failure(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss)
}

fn is_door(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

/// A request carrying `message`, as `token`'s holder.
fn request<T>(message: T, token: Option<&str>, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Some(token) = token {
        if let Ok(bearer) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", bearer);
        }
    }
    request
}

/// Calls `method` at `path` with `messages` (one, unless the client streams), reads what comes
/// back (a server stream for at most a few seconds) and says how it ended.
async fn send(
    channel: &Channel,
    method: &MethodDescriptor,
    path: &str,
    messages: Vec<Bytes>,
    token: Option<&str>,
) -> Answer {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    if let Err(e) = grpc.ready().await {
        return Answer::of(Err(tonic::Status::unavailable(format!("channel: {e}"))));
    }
    let timeout = Duration::from_secs(30);
    let path: http::uri::PathAndQuery = path.parse().expect("a gRPC path");
    let result = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => {
            let message = messages.into_iter().next().unwrap_or_default();
            grpc.unary(request(message, token, timeout), path, RawCodec).await.map(drop)
        }
        (false, true) => {
            let message = messages.into_iter().next().unwrap_or_default();
            match grpc.server_streaming(request(message, token, timeout), path, RawCodec).await {
                Ok(response) => drain(response.into_inner()).await,
                Err(status) => Err(status),
            }
        }
        (true, server_streams) => {
            let stream = futures::stream::iter(messages);
            if server_streams {
                match grpc.streaming(request(stream, token, timeout), path, RawCodec).await {
                    Ok(response) => drain(response.into_inner()).await,
                    Err(status) => Err(status),
                }
            } else {
                grpc.client_streaming(request(stream, token, timeout), path, RawCodec)
                    .await
                    .map(drop)
            }
        }
    };
    Answer::of(result)
}

/// Reads a server stream to its end, for at most three seconds (a watch may go on for long).
async fn drain(mut stream: tonic::Streaming<Bytes>) -> Result<(), tonic::Status> {
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(until, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(status)) => return Err(status),
        }
    }
}

/// The sessions the fuzzer calls with (any of them may be logged out by a fuzzed Logout, and is
/// then renewed) and the honest citizen's and operator's, which only honest calls use.
struct Sessions {
    fuzz: HashMap<Caller, String>,
    honest_citizen: String,
    honest_operator: String,
    forged: Vec<String>,
    renewed: u64,
}

async fn login_citizen(channel: &Channel) -> anyhow::Result<String> {
    let reply = id::identity_service_client::IdentityServiceClient::new(channel.clone())
        .login_with_pin(id::LoginWithPinRequest {
            fiscal_code: ROSSI.into(),
            pin: ROSSI_PIN.into(),
        })
        .await
        .context("Rossi's PIN login")?;
    Ok(reply.into_inner().session.context("no session")?.access_token)
}

async fn login_staff(channel: &Channel, username: &str, password: &str) -> anyhow::Result<String> {
    let reply = id::identity_service_client::IdentityServiceClient::new(channel.clone())
        .login_staff(id::LoginStaffRequest { username: username.into(), password: password.into() })
        .await
        .with_context(|| format!("{username}'s login"))?;
    Ok(reply.into_inner().session.context("no session")?.access_token)
}

fn staff_caller(role: StaffRole) -> Caller {
    match role {
        StaffRole::Operator => Caller::Operator,
        StaffRole::Patronato => Caller::Patronato,
        StaffRole::Backoffice => Caller::Backoffice,
    }
}

/// Mario Rossi (on the demo register) asks for a PIN, reads the first half in the SMS sink and
/// the second in the spooled letter, as he would, and chooses his own at first access.
async fn first_access(suite: &Suite, gateway: &Channel) -> anyhow::Result<()> {
    let mut identity = id::identity_service_client::IdentityServiceClient::new(gateway.clone());
    identity.request_pin(rossi_pin_request()).await.context("Rossi's PIN request")?;
    let data = suite.data_dir();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first, second) = loop {
        let first = std::fs::read_to_string(data.join("outbox/sms.jsonl"))
            .ok()
            .and_then(|lines| {
                lines
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find_map(|l| l["message_id"].as_str().map(str::to_owned))
            })
            .and_then(|id| crate::bench::delivered_sms_half(&data, &id).ok());
        let letter = std::fs::read_dir(data.join("spool")).ok().and_then(|dir| {
            dir.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "pdf"))
        });
        let second = letter.and_then(|path| {
            let id = path.file_stem()?.to_str()?.to_owned();
            crate::bench::spooled_letter_half(&data, &id).ok()
        });
        if let (Some(first), Some(second)) = (first, second) {
            break (first, second);
        }
        anyhow::ensure!(Instant::now() < deadline, "Rossi's PIN halves not delivered in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: format!("{first}{second}"),
            new_pin: ROSSI_PIN.into(),
        })
        .await
        .context("Rossi's first access")?;
    Ok(())
}

fn rossi_pin_request() -> id::RequestPinRequest {
    identity_svc::residents::demo_pin_request(ROSSI)
}

impl Sessions {
    async fn open(suite: &Suite, gateway: &Channel) -> anyhow::Result<Self> {
        first_access(suite, gateway).await?;
        let mut fuzz = HashMap::new();
        fuzz.insert(Caller::Citizen, login_citizen(gateway).await?);
        let mut honest_operator = String::new();
        for account in suite.staff() {
            let token = login_staff(gateway, &account.username, &account.password).await?;
            fuzz.insert(staff_caller(account.role), token);
            if matches!(account.role, StaffRole::Operator) {
                honest_operator =
                    login_staff(gateway, &account.username, &account.password).await?;
            }
        }
        let key = suite.data_dir().join("keys/session-ed25519.der");
        if key.exists() {
            let signer = identity_svc::keys::Signer::load_or_generate(&key)?;
            fuzz.insert(Caller::Service, signer.service_token("chaos")?);
        }
        let real = fuzz[&Caller::Citizen].clone();
        let mut altered = real.clone().into_bytes();
        if let Some(last) = altered.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        let unsigned = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let payload = real.split('.').nth(1).unwrap_or_default().to_owned();
            format!("{}.{payload}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#))
        };
        Ok(Self {
            honest_citizen: login_citizen(gateway).await?,
            honest_operator,
            forged: vec![
                String::from_utf8(altered).unwrap_or_default(),
                unsigned,
                "not.a.token".into(),
                "x".repeat(6000),
            ],
            fuzz,
            renewed: 0,
        })
    }

    fn token(&self, caller: Caller, rng: &mut StdRng) -> Option<String> {
        match caller {
            Caller::Anonymous => None,
            Caller::Forged => Some(self.forged[rng.random_range(0..self.forged.len())].clone()),
            other => self.fuzz.get(&other).cloned(),
        }
    }

    /// Logs in again whoever a fuzzed call logged out (Logout, a revocation).
    async fn renew(&mut self, suite: &Suite, gateway: &Channel) -> anyhow::Result<()> {
        for caller in [Caller::Citizen, Caller::Operator, Caller::Patronato, Caller::Backoffice] {
            let Some(token) = self.fuzz.get(&caller) else { continue };
            let answer = Answer::of(profile(gateway, token).await);
            if answer.code != Code::Unauthenticated {
                continue;
            }
            let fresh = match caller {
                Caller::Citizen => login_citizen(gateway).await?,
                staff => {
                    let account = suite
                        .staff()
                        .iter()
                        .find(|a| staff_caller(a.role) == staff)
                        .context("a demo account per role")?;
                    login_staff(gateway, &account.username, &account.password).await?
                }
            };
            self.fuzz.insert(caller, fresh);
            self.renewed += 1;
        }
        Ok(())
    }
}

async fn profile(channel: &Channel, token: &str) -> Result<(), tonic::Status> {
    let mut client = id::identity_service_client::IdentityServiceClient::new(channel.clone());
    client.get_profile(request(id::GetProfileRequest {}, Some(token), TEN_S)).await.map(drop)
}

/// Hostile calls in flight at once.
const CONCURRENCY: usize = 4;

const TEN_S: Duration = Duration::from_secs(10);

/// The honest calls made between the hostile ones: each must succeed.
struct Honest {
    gateway: Channel,
    identity: Channel,
    claims: Channel,
    notify: Channel,
    calls: u64,
    /// Honest calls a fairness bound refused first and let through after its RetryInfo delay.
    waited: u64,
}

/// How often an honest call is tried when a fairness bound refuses it.
const HONEST_TRIES: u32 = 5;

impl Honest {
    /// Makes `call` as a well-behaved client: a RESOURCE_EXHAUSTED carrying RetryInfo is a
    /// fairness bound (per citizen, per staff member, per address) that the fuzzer, calling
    /// with the same Rossi's and operator's sessions from the same address, may well have spent;
    /// it is waited out as told. Any other failure counts at once.
    async fn patiently<F, Fut>(&mut self, mut call: F) -> Answer
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), tonic::Status>>,
    {
        for _ in 1..HONEST_TRIES {
            match call().await {
                Err(status) if status.code() == Code::ResourceExhausted => {
                    let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay)
                    else {
                        return Answer::of(Err(status));
                    };
                    self.waited += 1;
                    tokio::time::sleep(delay.min(Duration::from_secs(2))).await;
                }
                other => return Answer::of(other),
            }
        }
        Answer::of(call().await)
    }

    async fn round(&mut self, sessions: &Sessions, report: &mut Report, after: &str) {
        let citizen = Some(sessions.honest_citizen.as_str());
        let operator = Some(sessions.honest_operator.as_str());
        let gateway = self.gateway.clone();
        let through_gateway = gateway.clone();
        let identity = id::identity_service_client::IdentityServiceClient::new(gateway.clone());
        let claims = cl::claims_service_client::ClaimsServiceClient::new(gateway.clone());
        let direct_claims =
            cl::claims_service_client::ClaimsServiceClient::new(self.claims.clone());
        let notify = nt::notify_service_client::NotifyServiceClient::new(self.notify.clone());
        let contact = id::contact_center_service_client::ContactCenterServiceClient::new(gateway);
        let straight_at_identity = self.identity.clone();
        let mut results: Vec<(&str, Answer)> = Vec::new();
        let login = self
            .patiently(|| {
                let mut identity = identity.clone();
                async move {
                    let login = id::LoginWithPinRequest {
                        fiscal_code: ROSSI.into(),
                        pin: ROSSI_PIN.into(),
                    };
                    identity.login_with_pin(request(login, None, TEN_S)).await.map(drop)
                }
            })
            .await;
        results.push(("Rossi logs in with his PIN", login));
        let own = self.patiently(|| profile(&through_gateway, &sessions.honest_citizen)).await;
        results.push(("Rossi reads his profile", own));
        let staff =
            self.patiently(|| profile(&straight_at_identity, &sessions.honest_operator)).await;
        results.push(("the operator reads their profile (straight at identity-svc)", staff));
        let benefits = self
            .patiently(|| {
                let mut claims = claims.clone();
                async move {
                    let list = request(cl::ListBenefitsRequest::default(), None, TEN_S);
                    claims.list_benefits(list).await.map(drop)
                }
            })
            .await;
        results.push(("anyone lists the benefits", benefits));
        let mine = self
            .patiently(|| {
                let mut claims = direct_claims.clone();
                async move {
                    let list = request(cl::ListClaimsRequest::default(), citizen, TEN_S);
                    claims.list_claims(list).await.map(drop)
                }
            })
            .await;
        results.push(("Rossi lists his claims (straight at claims-svc)", mine));
        let messages = self
            .patiently(|| {
                let mut notify = notify.clone();
                async move {
                    let list = request(nt::ListMyMessagesRequest::default(), citizen, TEN_S);
                    notify.list_my_messages(list).await.map(drop)
                }
            })
            .await;
        results.push(("Rossi lists his messages (straight at notify-svc)", messages));
        let lookup = self
            .patiently(|| {
                let mut contact = contact.clone();
                async move {
                    let lookup = id::LookupCredentialRequest { fiscal_code: ROSSI.into() };
                    contact.lookup_credential(request(lookup, operator, TEN_S)).await.map(drop)
                }
            })
            .await;
        results.push(("the operator looks Rossi up", lookup));
        for (what, answer) in results {
            self.calls += 1;
            if answer.code != Code::Ok {
                report.violation(format!(
                    "honest call failed after {after}: {what}: {:?} {}",
                    answer.code, answer.message
                ));
            }
        }
    }
}

async fn connect(url: String) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url)?.tcp_nodelay(true).connect().await?)
}

/// The processes that answer `service`: the gateway (which forwards what it routes and refuses
/// the rest) and the process that serves it. privacy.v1's PrivacyService is the gateway's own;
/// its CitizenDataService is each service's part of a citizen's data, asked by the gateway
/// only.
fn routes(service: &prost_reflect::ServiceDescriptor) -> &'static [&'static str] {
    match (service.package_name().split('.').nth(1), service.name()) {
        (Some("identity"), _) => &["gateway", "identity"],
        (Some("claims"), _) => &["gateway", "claims"],
        (Some("notify"), _) => &["gateway", "notify"],
        (Some("privacy"), "PrivacyService") => &["gateway"],
        (Some("privacy"), _) => &["gateway", "identity", "claims", "notify"],
        _ => &[],
    }
}

/// What the run counted.
#[derive(Default)]
struct Tally {
    per_rpc: BTreeMap<String, u64>,
    by_code: BTreeMap<String, u64>,
    /// Violations by kind (path, route, code, what was sent), with how often each happened.
    failures: BTreeMap<String, (u64, String)>,
    calls: u64,
}

impl Tally {
    fn record(
        &mut self,
        path: &str,
        route: &str,
        caller: Caller,
        what: &str,
        well_formed: bool,
        answer: &Answer,
    ) {
        self.calls += 1;
        *self.per_rpc.entry(path.to_owned()).or_default() += 1;
        *self.by_code.entry(format!("{:?}", answer.code)).or_default() += 1;
        let kind = if is_failure(answer.code) {
            Some(format!("{path} ({route}, {caller:?}): {what} answered {:?}", answer.code))
        } else if answer.code == Code::InvalidArgument && well_formed && !answer.names_fields {
            Some(format!(
                "{path} ({route}, {caller:?}): {what} refused INVALID_ARGUMENT without field paths"
            ))
        } else {
            None
        };
        if let Some(kind) = kind {
            let entry = self.failures.entry(kind).or_insert((0, answer.message.clone()));
            entry.0 += 1;
        }
    }
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let seed = options.seed.unwrap_or_default();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let suite = Suite::start(options, |cmd| {
        // Wrong PINs are this scenario's daily bread: a locked PIN would hide what comes after,
        // and cheap hashes keep the many logins quick.
        cmd.env("SPORTELLO_IDENTITY__PINS__MAX_FAILED_ATTEMPTS", "1000000");
        cmd.env("SPORTELLO_IDENTITY__PIN_HASH__MEMORY_KIB", "1024");
        cmd.env("SPORTELLO_IDENTITY__PIN_HASH__ITERATIONS", "1");
    })
    .await?;
    let outcome = fuzz(options, &suite, &mut rng, started).await;
    let stopped = suite.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn fuzz(
    options: &Options,
    suite: &Suite,
    rng: &mut StdRng,
    started: Instant,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let gateway = connect(suite.url("gateway")).await?;
    let mut channels = HashMap::from([("gateway", gateway.clone())]);
    for name in ["identity", "claims", "notify"] {
        channels.insert(name, connect(suite.url(name)).await?);
    }
    let pool = DescriptorPool::decode(sportello_proto::FILE_DESCRIPTOR_SET)?;
    let mut sessions = Sessions::open(suite, &gateway).await?;
    let mut honest = Honest {
        gateway: gateway.clone(),
        identity: channels["identity"].clone(),
        claims: channels["claims"].clone(),
        notify: channels["notify"].clone(),
        calls: 0,
        waited: 0,
    };
    honest.round(&sessions, &mut report, "the suite started").await;
    report
        .figure(format!("suite up and sessions open in {:.1} s", started.elapsed().as_secs_f64()));

    // Cases per (method, route, caller): more for callers the door lets in.
    let (admitted_cases, refused_cases) = if options.short { (3, 1) } else { (60, 4) };
    let processes = ["gateway", "identity", "claims", "notify"];
    let pids: Vec<Option<u32>> = processes.iter().map(|p| suite.pid(p)).collect();
    let cpu_before: Vec<_> = pids.iter().map(|p| p.and_then(crate::cpu::cpu_time)).collect();
    let fuzz_started = Instant::now();
    let mut tally = Tally::default();
    let mut methods = 0;
    let mut since_honest = 0;
    let mut skipped = 0;
    // The time the fuzzing may take, shared out among the methods (what one leaves goes to the
    // next): every method's door is tried and at least its first cases sent; the rest of its
    // cases are made (so that a seed replays the same messages) but sent only in its time.
    let budget = options.duration.unwrap_or(if options.short {
        Duration::from_secs(50)
    } else {
        Duration::from_secs(900)
    });
    let total_methods = pool
        .services()
        .filter(|s| !routes(s).is_empty())
        .map(|s| s.methods().len())
        .sum::<usize>()
        .max(1);
    for service in pool.services() {
        let routes = routes(&service);
        if routes.is_empty() {
            continue;
        }
        for method in service.methods() {
            methods += 1;
            let method_deadline =
                fuzz_started + budget.mul_f64(methods as f64 / total_methods as f64);
            let path = format!("/{}/{}", service.full_name(), method.name());
            let input = method.input();
            for (route, channel) in routes.iter().map(|r| (*r, &channels[r])) {
                // The door: which callers is a plausible message let in for?
                let mut probes = Vec::new();
                for caller in CALLERS {
                    let probe = generate::plausible_case(&input, rng);
                    let messages = stream_of(&method, &probe, &input, rng);
                    probes.push((caller, probe, messages, sessions.token(caller, rng)));
                }
                let answers =
                    futures::future::join_all(probes.iter().map(|(_, _, messages, token)| {
                        send(channel, &method, &path, messages.clone(), token.as_deref())
                    }))
                    .await;
                let mut calls = Vec::new();
                for ((caller, probe, _, _), answer) in probes.into_iter().zip(answers) {
                    tally.record(&path, route, caller, &probe.what, true, &answer);
                    if caller == Caller::Forged && answer.code == Code::Ok {
                        let messages = stream_of(&method, &probe, &input, rng);
                        let anonymous = send(channel, &method, &path, messages, None).await;
                        if is_door(anonymous.code) {
                            report.violation(format!(
                                "{path} ({route}): a forged token is let in where nobody is"
                            ));
                        }
                    }
                    let admitted = !is_door(answer.code) && caller != Caller::Forged;
                    let n = if admitted { admitted_cases } else { refused_cases };
                    for _ in 0..n {
                        let case = generate::case(&input, rng);
                        let messages = stream_of(&method, &case, &input, rng);
                        calls.push((caller, case, messages, sessions.token(caller, rng)));
                    }
                }
                // The cases, a few at a time (the messages were all made first, in order, so
                // that a seed replays them).
                let (m, p) = (&method, &path);
                let answers: Vec<Option<Answer>> = futures::stream::iter(
                    calls.iter().enumerate().map(|(i, (_, _, messages, token))| async move {
                        if i >= CONCURRENCY && Instant::now() > method_deadline {
                            return None;
                        }
                        Some(send(channel, m, p, messages.clone(), token.as_deref()).await)
                    }),
                )
                .buffered(CONCURRENCY)
                .collect()
                .await;
                for ((caller, case, _, _), answer) in calls.iter().zip(answers) {
                    let Some(answer) = answer else {
                        skipped += 1;
                        continue;
                    };
                    tally.record(&path, route, *caller, &case.what, case.well_formed, &answer);
                    since_honest += 1;
                }
                if since_honest >= 60 {
                    honest.round(&sessions, &mut report, &path).await;
                    since_honest = 0;
                }
            }
            // A client stream that stops half-way: the client goes away after two messages.
            if method.is_client_streaming() {
                for (route, channel) in routes.iter().map(|r| (*r, &channels[r])) {
                    for caller in [Caller::Anonymous, Caller::Citizen, Caller::Backoffice] {
                        let token = sessions.token(caller, rng);
                        let first = generate::plausible_case(&input, rng).bytes;
                        let stream = futures::stream::iter(vec![first.clone(), first])
                            .chain(futures::stream::pending());
                        let mut grpc = tonic::client::Grpc::new(channel.clone());
                        let _ = grpc.ready().await;
                        let call = grpc.client_streaming(
                            request(stream, token.as_deref(), TEN_S),
                            path.parse::<http::uri::PathAndQuery>()?,
                            RawCodec,
                        );
                        let ended = tokio::time::timeout(Duration::from_millis(300), call).await;
                        let answer = match ended {
                            Ok(result) => Answer::of(result.map(drop)),
                            Err(_) => Answer {
                                code: Code::Cancelled,
                                message: String::new(),
                                names_fields: false,
                            },
                        };
                        tally.record(
                            &path,
                            route,
                            caller,
                            "a client stream stopped half-way",
                            false,
                            &answer,
                        );
                    }
                }
                honest
                    .round(&sessions, &mut report, &format!("{path} streams stopped half-way"))
                    .await;
            }
            sessions.renew(suite, &gateway).await?;
        }
    }
    let elapsed = fuzz_started.elapsed();
    let cpu_after: Vec<_> = pids.iter().map(|p| p.and_then(crate::cpu::cpu_time)).collect();

    // The wire itself.
    let mut targets = vec![("gateway".to_owned(), suite.addr("gateway"), gateway.clone())];
    for name in ["identity", "claims", "notify"] {
        targets.push((name.to_owned(), suite.addr(name), channels[name].clone()));
    }
    let mut wire_cases = 0;
    for (name, addr, channel) in &targets {
        let path = match name.as_str() {
            "claims" | "gateway" => "/sportello.claims.v1.ClaimsService/ListBenefits",
            "notify" => "/sportello.notify.v1.NotifyService/ListTemplates",
            _ => "/sportello.identity.v1.IdentityService/GetPinRequestStatus",
        };
        for outcome in wire::http_cases(channel, path, rng).await {
            wire_cases += 1;
            *tally.by_code.entry(outcome.code_name()).or_default() += 1;
            if outcome.is_failure() {
                let kind =
                    format!("{name} {path}: {} answered {}", outcome.what, outcome.code_name());
                tally.failures.entry(kind).or_insert((0, outcome.message.clone())).0 += 1;
            }
        }
        for what in wire::garbage(*addr, rng).await {
            wire_cases += 1;
            *tally.by_code.entry(format!("connection: {what}")).or_default() += 1;
        }
        honest.round(&sessions, &mut report, &format!("broken HTTP/2 at {name}")).await;
    }

    // What the suite said.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = std::fs::read_to_string(suite.log()).unwrap_or_default();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();

    report.figure(format!(
        "{methods} RPCs, {} calls fuzzed in {:.0} s ({:.0} calls/s; {skipped} more made but not sent in the time), {wire_cases} broken-wire cases, {} honest calls ({} waited out a fairness bound first), {} sessions renewed",
        tally.calls,
        elapsed.as_secs_f64(),
        tally.calls as f64 / elapsed.as_secs_f64(),
        honest.calls,
        honest.waited,
        sessions.renewed
    ));
    let cpu: Vec<String> = processes
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .filter_map(|(name, (before, after))| {
            let used = after.as_ref()?.saturating_sub(*before.as_ref()?);
            Some(format!("{name} {:.0}", used.as_micros() as f64 / tally.calls.max(1) as f64))
        })
        .collect();
    report.figure(format!("CPU µs per fuzzed call: {}", cpu.join(", ")));
    report.figure(format!(
        "outcomes by code: {}",
        tally.by_code.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ")
    ));
    report.figure("calls fuzzed per RPC:");
    for (path, n) in &tally.per_rpc {
        report.figure(format!("  {n:>6}  {path}"));
    }
    for (kind, (n, message)) in &tally.failures {
        report.violation(format!("{kind} ×{n} ({message})"));
    }
    report.figure(format!("panics in the suite's log: {}", panics.len()));
    for line in panics.iter().take(5) {
        report.violation(format!("panic: {line}"));
    }
    if panics.len() > 5 {
        report.violation(format!("… and {} more panics", panics.len() - 5));
    }
    Ok(report)
}

/// The messages of one call: the case alone, or for a client stream the case among a few
/// other messages.
fn stream_of(
    method: &MethodDescriptor,
    case: &generate::Case,
    input: &prost_reflect::MessageDescriptor,
    rng: &mut StdRng,
) -> Vec<Bytes> {
    if !method.is_client_streaming() {
        return vec![case.bytes.clone()];
    }
    let mut messages: Vec<Bytes> =
        (0..rng.random_range(0..3)).map(|_| generate::plausible_case(input, rng).bytes).collect();
    let at = rng.random_range(0..=messages.len());
    messages.insert(at, case.bytes.clone());
    messages
}
