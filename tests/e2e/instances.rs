//! Several instances of each backend on one database behind one gateway: the gateway spreads
//! calls over the instances that say SERVING, and when one of each is killed with kill -9 in
//! the middle of the load, every call is either answered or refused with UNAVAILABLE, nothing
//! acknowledged is lost, and the survivors carry on alone.

use crate::claims::{claim_form, nth_cf, professional_row, registry, submit};
use crate::helpers::*;
use crate::metrics::{free_addr, scrape, value};
use futures::FutureExt;
use sportello_platform::auth::Level;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const FILERS: usize = 240;
const APPLICANTS: usize = 120;
const SECOND_WAVE: usize = 40;
/// Notify's dispatch lease: what a killed instance had claimed is sent by the other this soon.
const LEASE: &str = "2s";

/// A URL setting naming two instances.
fn both(a: SocketAddr, b: SocketAddr) -> String {
    format!("{},{}", url(a), url(b))
}

/// The second instance of every backend, each a `sportello <service>` process of its own on the
/// suite's database and keys, wired to both instances of what it calls.
struct Seconds {
    identity: tokio::process::Child,
    claims: tokio::process::Child,
    notify: tokio::process::Child,
}

struct Addrs {
    identity: [SocketAddr; 2],
    claims: [SocketAddr; 2],
    notify: [SocketAddr; 2],
    /// The second identity's and the second claims' metrics listeners.
    metrics: [SocketAddr; 2],
}

impl Seconds {
    fn spawn(db: &TestDb, a: &Addrs) -> Self {
        let key =
            |name| ServiceKey::load_or_generate(db.data_dir(), name).expect("key").public_key();
        let mut identity = service_process(db, "identity", a.identity[1]);
        identity.env("SPORTELLO_IDENTITY__NOTIFY_URL", both(a.notify[0], a.notify[1]));
        for name in [gateway::NAME, notify_svc::NAME, claims_svc::NAME] {
            let var = format!("SPORTELLO_IDENTITY__TRUSTED_SERVICES__{}", name.to_uppercase());
            identity.env(var, key(name));
        }
        let mut claims = Self::claims(db, a);
        identity.env("SPORTELLO_IDENTITY__METRICS_LISTEN", a.metrics[0].to_string());
        let mut notify = service_process(db, "notify", a.notify[1]);
        notify
            .env("SPORTELLO_NOTIFY__IDENTITY_URL", both(a.identity[0], a.identity[1]))
            .env("SPORTELLO_NOTIFY__DISPATCH__ENABLED", "true")
            .env("SPORTELLO_NOTIFY__DISPATCH__LEASE", LEASE)
            // As the first instance (the tests' configuration): sent messages stay SENT.
            .env("SPORTELLO_NOTIFY__SINKS__REPORT_DELIVERY", "false")
            .env("SPORTELLO_NOTIFY__TRUSTED_SERVICES__CLAIMS", key(claims_svc::NAME));
        Self {
            identity: identity.spawn().expect("sportello identity"),
            claims: claims.spawn().expect("sportello claims"),
            notify: notify.spawn().expect("sportello notify"),
        }
    }

    /// The second claims-svc, as started (again).
    fn claims(db: &TestDb, a: &Addrs) -> tokio::process::Command {
        let mut claims = service_process(db, "claims", a.claims[1]);
        claims
            .env("SPORTELLO_CLAIMS__IDENTITY_URL", both(a.identity[0], a.identity[1]))
            .env("SPORTELLO_CLAIMS__NOTIFY_URL", both(a.notify[0], a.notify[1]))
            .env("SPORTELLO_CLAIMS__METRICS_LISTEN", a.metrics[1].to_string());
        claims
    }

    async fn kill(mut self) {
        for child in [&mut self.identity, &mut self.claims, &mut self.notify] {
            child.start_kill().expect("kill -9");
        }
        for child in [&mut self.identity, &mut self.claims, &mut self.notify] {
            let _ = child.wait().await;
        }
    }
}

/// What one call came to: its citizen and, if answered, the claim id or PIN request id.
type Outcome = (String, Result<String, Code>);

async fn file_claim(channel: Channel, cf: String, token: String) -> Outcome {
    let form = claim_form("PROFESSIONISTI_COCOCO", &cf, &format!("balanced-{cf}"));
    let answer = submit(channel, &token, form).await;
    (cf, answer.map(|receipt| receipt.claim_id).map_err(|s| s.code()))
}

async fn request_pin(channel: Channel, form: id::RequestPinRequest) -> Outcome {
    let cf = form.fiscal_code.clone();
    let answer = IdentityServiceClient::new(channel).request_pin(form).await;
    (cf, answer.map(|r| r.into_inner().request_id).map_err(|s| s.code()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_each_backend_share_the_load_and_one_of_each_killed_loses_nothing() {
    // Ports for the second instances, told to the first ones before they start.
    let reserve = || async {
        let (l, a) = listener().await;
        drop(l);
        a
    };
    let addrs = Addrs {
        identity: [reserve().await, reserve().await],
        claims: [reserve().await, reserve().await],
        notify: [reserve().await, reserve().await],
        metrics: [free_addr(), free_addr()],
    };
    // The first instance of each runs in this process, the gateway too; all are told of both.
    let suite = spawn_suite_with(|c| {
        let (identity, claims, notify) = (
            c.gateway.identity_url.clone(),
            c.gateway.claims_url.clone(),
            c.gateway.notify_url.clone(),
        );
        let and = |first: &str, second| format!("{first},{}", url(second));
        c.gateway.identity_url = and(&identity, addrs.identity[1]);
        c.gateway.claims_url = and(&claims, addrs.claims[1]);
        c.gateway.notify_url = and(&notify, addrs.notify[1]);
        c.identity.notify_url = and(&notify, addrs.notify[1]);
        c.claims.identity_url = and(&identity, addrs.identity[1]);
        c.claims.notify_url = and(&notify, addrs.notify[1]);
        c.notify.identity_url = and(&identity, addrs.identity[1]);
        // Both notify instances send, sharing the queue.
        c.notify.dispatch.enabled = true;
        c.notify.dispatch.lease = humantime::parse_duration(LEASE).expect("lease");
    })
    .await;
    let addrs = Addrs {
        identity: [suite.identity.addr, addrs.identity[1]],
        claims: [suite.claims.addr, addrs.claims[1]],
        notify: [suite.notify.addr, addrs.notify[1]],
        metrics: addrs.metrics,
    };
    let citizens: Vec<String> = (0..(FILERS + SECOND_WAVE) as i64).map(nth_cf).collect();
    suite
        .import_registry(&registry(citizens.iter().map(|cf| professional_row(cf))))
        .await
        .expect("registry");
    let applicants: Vec<id::RequestPinRequest> = (0..APPLICANTS + SECOND_WAVE)
        .map(|n| {
            let born = (1950 + (n % 50) as i32, 1 + (n / 50 % 12) as u32, 1 + (n / 600) as u32);
            citizen_request("Ferrari", "Giulia", born, id::Sex::Female).1
        })
        .collect();
    suite.register_residents(&applicants.iter().collect::<Vec<_>>()).await;
    let seconds = Seconds::spawn(&suite.db, &addrs);
    for addr in [addrs.identity[1], addrs.claims[1], addrs.notify[1]] {
        wait_for_status(addr, "", ServingStatus::Serving).await;
    }
    let token = |cf: &str| suite.citizen_token(cf, Level::Simplified);
    let gateway = suite.gateway_channel().await;

    // Both instances of each backend take calls.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut calls: JoinSet<(bool, Outcome)> = JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    for n in 0..FILERS {
        let mut work = vec![(
            true,
            file_claim(gateway.clone(), citizens[n].clone(), token(&citizens[n])).boxed(),
        )];
        if n < APPLICANTS {
            work.push((false, request_pin(gateway.clone(), applicants[n].clone()).boxed()));
        }
        for (is_claim, call) in work {
            let (answered, limit) = (answered.clone(), limit.clone());
            calls.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("permit");
                let outcome = call.await;
                answered.fetch_add(1, Ordering::Relaxed);
                (is_claim, outcome)
            });
        }
    }
    // The gateway spreads the calls: the second instances take some (the gateway sees them
    // SERVING within its health interval of their start).
    let took = |text: &str, method: &str| value(text, "rpc_server_requests_total", &[method]);
    let seconds_took = || async {
        let identity = took(&scrape(addrs.metrics[0]).await, "\"RequestPin\"");
        (identity, took(&scrape(addrs.metrics[1]).await, "\"SubmitClaim\""))
    };
    eventually("the second instances to take calls", Duration::from_secs(60), || async {
        let (identity, claims) = seconds_took().await;
        identity > 0.0 && claims > 0.0 && answered.load(Ordering::Relaxed) >= 60
    })
    .await;
    let (identity_b, claims_b) = seconds_took().await;
    let at_kill = answered.load(Ordering::Relaxed);
    seconds.kill().await;
    assert!(at_kill < FILERS + APPLICANTS, "the kill came mid-load ({at_kill} answered)");

    let (mut claims_ok, mut pins_ok, mut unavailable) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = calls.join_next().await {
        let (is_claim, (cf, answer)) = done.expect("call");
        match answer {
            Ok(id) if is_claim => claims_ok.push((cf, id)),
            Ok(id) => pins_ok.push((cf, id)),
            Err(Code::Unavailable) => unavailable += 1,
            Err(code) => panic!("{cf}: {code:?}, neither an answer nor UNAVAILABLE"),
        }
    }
    eprintln!(
        "the second instances took {identity_b} PIN requests and {claims_b} claims before the \
         kill; {} claims and {} PIN requests answered in all, {unavailable} refused with \
         UNAVAILABLE",
        claims_ok.len(),
        pins_ok.len()
    );

    // Every acknowledged write is there.
    for (cf, claim_id) in &claims_ok {
        let filter = format!("id = '{claim_id}' AND fiscal_code = '{cf}'");
        assert_eq!(suite.db.count("claims", "claims", &filter).await, 1, "claim {claim_id} kept");
    }
    for (cf, request_id) in &pins_ok {
        let filter = format!("id = '{request_id}' AND fiscal_code = '{cf}'");
        assert_eq!(suite.db.count("identity", "pin_requests", &filter).await, 1, "{request_id}");
    }

    // The survivors carry on alone: every call now is answered.
    let mut calls = JoinSet::new();
    for cf in &citizens[FILERS..] {
        calls.spawn(file_claim(gateway.clone(), cf.clone(), token(cf)));
    }
    for form in &applicants[APPLICANTS..] {
        calls.spawn(request_pin(gateway.clone(), form.clone()));
    }
    while let Some(done) = calls.join_next().await {
        let (cf, answer) = done.expect("call");
        assert!(answer.is_ok(), "{cf} after the kill: {answer:?}");
    }
    // A killed instance started again takes calls again.
    let mut claims_again = Seconds::claims(&suite.db, &addrs).spawn().expect("sportello claims");
    wait_for_status(addrs.claims[1], "", ServingStatus::Serving).await;
    // And whoever was refused files again with the same key: one claim each, one receipt each.
    for cf in &citizens[..FILERS] {
        let (_, answer) = file_claim(gateway.clone(), cf.clone(), token(cf)).await;
        answer.expect("a retry is answered");
    }
    let retried = took(&scrape(addrs.metrics[1]).await, "\"SubmitClaim\"");
    assert!(retried > 0.0, "the restarted instance took calls again");
    claims_again.start_kill().expect("stop");
    let claims = (FILERS + SECOND_WAVE) as i64;
    assert_eq!(suite.db.count("claims", "claims", "1 = 1").await, claims);
    suite.db.outbox_relayed().await;
    let receipts = suite.db.count("notify", "messages", "template = 'CLAIM_RECEIPT'").await;
    assert_eq!(receipts, claims, "each receipt handed to notify once");

    // Both notify instances sent from one queue: every SMS went out, under its own id.
    eventually("every SMS sent", Duration::from_secs(60), || async {
        suite.db.count("notify", "messages", "channel = 'SMS' AND status <> 'SENT'").await == 0
    })
    .await;
    let sms = suite.db.count("notify", "messages", "channel = 'SMS'").await as usize;
    let lines = std::fs::read_to_string(suite.db.data_dir().join("outbox/sms.jsonl")).expect("sms");
    let ids: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .map(|l| l["message_id"].as_str().expect("message_id").to_owned())
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), sms, "each SMS in the sink");
    // Sent twice only if the killed instance sent it and died before recording so: at most
    // one dispatch batch, resent under the same id for the receiver to drop.
    assert!(ids.len() - distinct.len() <= 64, "{} sent twice", ids.len() - distinct.len());
}
