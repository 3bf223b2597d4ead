//! Atomic side effects: a PIN, its request record, its two messages and its audit row commit
//! together, and the outbox relay delivers every committed message exactly once — whatever the
//! client's deadline, and across a kill -9 of identity-svc.

use crate::helpers::*;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sqlx::Row;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic_health::pb::health_check_response::ServingStatus;

/// argon2 parameters tests can afford (tests are not attackers).
fn cheap_hashing() -> identity_svc::hashing::HashParams {
    identity_svc::hashing::HashParams { memory_kib: 1024, iterations: 1, ..Default::default() }
}

/// The `n`th of many distinct citizens (born on successive days).
fn nth_citizen(n: i64) -> id::RequestPinRequest {
    let born =
        chrono::NaiveDate::from_ymd_opt(1950, 1, 1).expect("date") + chrono::Duration::days(n);
    use chrono::Datelike;
    citizen_request("Ferrari", "Anna", (born.year(), born.month(), born.day()), id::Sex::Female).1
}

/// Every credential has exactly one issued request, whose two halves are each exactly one
/// message in notify-svc, and notify holds no other PIN message. Returns the citizens counted.
async fn assert_every_pin_has_its_request_and_two_messages(db: &TestDb) -> usize {
    db.outbox_relayed().await;
    let identity = db.pool("identity").await;
    let citizens: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT fiscal_code FROM {}",
        db.table("identity", "citizens")
    ))
    .fetch_all(&identity)
    .await
    .expect("citizens");
    let sql = format!(
        "SELECT fiscal_code, first_half_message, second_half_message FROM {} \
         WHERE outcome = 'ISSUED'",
        db.table("identity", "pin_requests")
    );
    let mut requests: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
    for row in sqlx::query(&sql).fetch_all(&identity).await.expect("requests") {
        let previous = requests.insert(
            row.get("fiscal_code"),
            (row.get("first_half_message"), row.get("second_half_message")),
        );
        assert!(previous.is_none(), "one issued request per citizen");
    }
    let notify = db.pool("notify").await;
    let sql = format!(
        "SELECT id, fiscal_code, template FROM {} WHERE template IN \
         ('PIN_FIRST_HALF', 'PIN_SECOND_HALF_LETTER')",
        db.table("notify", "messages")
    );
    let mut messages: HashMap<String, (String, String)> = HashMap::new();
    for row in sqlx::query(&sql).fetch_all(&notify).await.expect("messages") {
        messages.insert(row.get("id"), (row.get("fiscal_code"), row.get("template")));
    }
    assert_eq!(requests.len(), citizens.len(), "every credential has its request record");
    assert_eq!(messages.len(), 2 * citizens.len(), "exactly two messages per PIN, no more");
    for cf in &citizens {
        let (first, second) = requests.get(cf).expect("request of this credential");
        let first = first.as_deref().expect("first half sent");
        let second = second.as_deref().expect("letter sent");
        assert_eq!(messages.get(first), Some(&(cf.clone(), "PIN_FIRST_HALF".to_owned())));
        assert_eq!(messages.get(second), Some(&(cf.clone(), "PIN_SECOND_HALF_LETTER".to_owned())));
    }
    citizens.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pin_request_commits_its_record_and_two_messages_whatever_the_client_deadline() {
    let suite = spawn_suite_with(|c| c.identity.pin_hash = cheap_hashing()).await;
    suite.db.register_residents(&(0..500).map(nth_citizen).collect::<Vec<_>>()).await;
    let channel = connect(suite.identity.addr).await;
    // A few calls in flight at once, so that deadlines land at every step of the handler (not
    // all in the hashing queue).
    let in_flight = Arc::new(tokio::sync::Semaphore::new(8));
    let mut calls = JoinSet::new();
    for n in 0..500 {
        let mut client = IdentityServiceClient::new(channel.clone());
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        // Spread over 1..=50 ms, the same way on every run.
        let deadline = Duration::from_millis(1 + (n * 7919 % 50) as u64);
        calls.spawn(async move {
            let mut request = tonic::Request::new(nth_citizen(n));
            request.set_timeout(deadline);
            // The client hangs up at its deadline too, so the handler's future is dropped.
            let answer = tokio::time::timeout(deadline, client.request_pin(request)).await;
            drop(permit);
            matches!(answer, Ok(Ok(_)))
        });
    }
    let mut answered = 0;
    while let Some(ok) = calls.join_next().await {
        answered += usize::from(ok.expect("call task"));
    }
    let issued = assert_every_pin_has_its_request_and_two_messages(&suite.db).await;
    eprintln!("500 calls: {answered} answered in time, {issued} PINs issued and sent");
    assert!(issued >= answered, "every answered request committed ({issued} < {answered})");
}

/// `sportello identity` as an operator runs it, on `addr`, against the test's database.
fn identity_process(db: &TestDb, addr: SocketAddr, notify: SocketAddr) -> tokio::process::Child {
    let mut cmd = service_process(db, "identity", addr);
    cmd.env("SPORTELLO_IDENTITY__NOTIFY_URL", url(notify))
        .env("SPORTELLO_IDENTITY__PIN_HASH__MEMORY_KIB", "1024")
        .env("SPORTELLO_IDENTITY__PIN_HASH__ITERATIONS", "1");
    // Trusts notify-svc's key, as `sportello up` arranges.
    let notify_key = ServiceKey::load_or_generate(db.data_dir(), "notify").expect("notify's key");
    cmd.env("SPORTELLO_IDENTITY__TRUSTED_SERVICES__NOTIFY", notify_key.public_key());
    cmd.spawn().expect("sportello identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_identity_restarted_on_its_database_sends_every_committed_pin() {
    let db = TestDb::new().await;
    let ports = Ports::reserve().await;
    let (identity_listener, identity_addr) = ports.identity;
    drop(identity_listener);
    let configs =
        Configs::new(&db, [ports.gateway.1, identity_addr, ports.claims.1, ports.notify.1]);
    let notify = Running::start(ports.notify, |l, s| notify_svc::serve(configs.notify, l, s));
    let mut identity = identity_process(&db, identity_addr, notify.addr);
    wait_for_status(identity_addr, IDENTITY, ServingStatus::Serving).await;
    db.register_residents(&(0..400).map(nth_citizen).collect::<Vec<_>>()).await;

    let channel = connect(identity_addr).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut flood = JoinSet::new();
    for n in 0..400 {
        let mut client = IdentityServiceClient::new(channel.clone());
        let answered = answered.clone();
        flood.spawn(async move {
            if client.request_pin(nth_citizen(n)).await.is_ok() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    eventually("the flood to be under way", Duration::from_secs(30), || async {
        answered.load(Ordering::SeqCst) >= 20
    })
    .await;
    identity.start_kill().expect("kill -9");
    identity.wait().await.expect("killed");
    while flood.join_next().await.is_some() {}
    let before_restart = answered.load(Ordering::SeqCst);
    assert!(before_restart < 400, "killed in the middle of the flood");

    let mut restarted = identity_process(&db, identity_addr, notify.addr);
    wait_for_status(identity_addr, IDENTITY, ServingStatus::Serving).await;
    let issued = assert_every_pin_has_its_request_and_two_messages(&db).await;
    eprintln!("killed after {before_restart} answers of 400; {issued} PINs issued and sent");
    assert!(
        issued >= before_restart,
        "every answered request survived ({issued} < {before_restart})"
    );
    restarted.start_kill().expect("stop");
    notify.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identity_instances_relay_one_outbox_each_row_once() {
    let suite = spawn_suite_with(|c| c.identity.pin_hash = cheap_hashing()).await;
    let second = identity_svc::Config {
        server: server_settings(),
        store: store_settings(&suite.db, "identity"),
        notify_url: url(suite.notify.addr),
        pin_hash: cheap_hashing(),
        ..Default::default()
    };
    let other = Running::start(listener().await, |l, s| identity_svc::serve(second, l, s));
    wait_for_status(other.addr, IDENTITY, ServingStatus::Serving).await;
    suite.db.register_residents(&(0..120).map(nth_citizen).collect::<Vec<_>>()).await;
    let instances = [connect(suite.identity.addr).await, connect(other.addr).await];
    let mut calls = JoinSet::new();
    for n in 0..120 {
        let mut client = IdentityServiceClient::new(instances[n as usize % 2].clone());
        calls.spawn(async move { client.request_pin(nth_citizen(n)).await.is_ok() });
    }
    let mut answered = 0;
    while let Some(ok) = calls.join_next().await {
        answered += usize::from(ok.expect("call task"));
    }
    let issued = assert_every_pin_has_its_request_and_two_messages(&suite.db).await;
    assert!(issued >= answered);
    let claimed_twice = suite.db.count("identity", "outbox", "attempts <> 1").await;
    assert_eq!(claimed_twice, 0, "no row was claimed by both relays");
    other.shut_down().await;
}

/// Whether the pool's one connection is inside a transaction nobody holds: on PostgreSQL two
/// statements then share one transaction id, on SQLite `BEGIN` fails inside another.
async fn inside_a_stale_transaction(db: &sportello_platform::db::Database) -> bool {
    use sportello_platform::db::Backend;
    match db.backend {
        Backend::Postgres => {
            let xid = || sqlx::query_scalar::<_, i64>("SELECT txid_current()").fetch_one(&db.pool);
            xid().await.expect("xid") == xid().await.expect("xid")
        }
        Backend::Sqlite => sqlx::raw_sql("BEGIN; ROLLBACK").execute(&db.pool).await.is_err(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_while_its_transaction_begins_leaves_no_transaction_open() {
    let test = TestDb::new().await;
    let url = test.url("identity");
    sqlx::any::install_default_drivers();
    let pool =
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.expect("pool");
    let db = sportello_platform::db::Database {
        pool,
        backend: sportello_platform::db::Backend::of(&url),
    };
    assert!(!inside_a_stale_transaction(&db).await, "a fresh connection is in no transaction");
    // Hang up at every moment of the round trip, as a client's deadline would.
    for micros in (0..400).step_by(5) {
        let begun = tokio::time::timeout(Duration::from_micros(micros), db.begin()).await;
        drop(begun);
        // Whatever the caller left behind has been let go of by now.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(
            !inside_a_stale_transaction(&db).await,
            "a caller gone after {micros} µs left its connection in a transaction"
        );
    }
}
