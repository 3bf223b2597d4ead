//! Secrets at rest (issue 22): once PIN halves, recovery codes and session tokens have done their
//! work, no file the suite wrote gives one out — not in clear, base64 or hex, not in a database,
//! its log, a backup or, on PostgreSQL, a dump or the server's own files — and every file under
//! the data directory is its owner's alone, whatever the umask. Messages sealed under a data key
//! are still delivered after the key is rotated.

use crate::claims::{claim_form, professional_row, registry, submit};
use crate::helpers::*;
use aho_corasick::AhoCorasick;
use base64::Engine;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1::{Channel, EnqueueMessageRequest};
use sqlx::Row;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinSet;

/// Citizens who request a PIN, log in with it and file a claim.
const GIVEN_NAMES: [&str; 8] = ["Anna", "Bruno", "Carla", "Dario", "Elena", "Fabio", "Gina", "Ivo"];

/// Every secret the suite handled, by kind, to look for in its files.
#[derive(Default)]
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, kind: &'static str, value: &str) {
        assert!(!value.is_empty(), "an empty {kind}");
        self.0.push((kind, value.to_owned()));
    }

    fn session(&mut self, session: &id::Session) {
        self.add("access token", &session.access_token);
        self.add("refresh token", &session.refresh_token);
    }
}

/// The forms in which a secret could sit in a file: as it is, hex, and base64 (standard and
/// URL-safe) at each of the three alignments it could have inside a longer encoded value.
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let bytes = secret.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        ("clear".to_owned(), bytes.to_vec()),
        ("hex".to_owned(), hex.clone().into_bytes()),
        ("HEX".to_owned(), hex.to_ascii_uppercase().into_bytes()),
    ];
    for (name, engine) in [("base64", STANDARD), ("base64url", URL_SAFE)] {
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            // The characters made of the secret's bits alone.
            let (from, to) = ((8 * shift).div_ceil(6), 8 * (shift + bytes.len()) / 6);
            forms.push((format!("{name}@{shift}"), encoded.as_bytes()[from..to].to_vec()));
        }
    }
    forms
}

/// One automaton for every form of every secret.
struct Needles {
    automaton: AhoCorasick,
    labels: Vec<String>,
    /// A number in clear (a recovery code) counts only on its own: not as part of a longer run
    /// of digits, which timestamps and ids are full of.
    digits: Vec<bool>,
}

impl Needles {
    fn new(secrets: &Secrets) -> Self {
        let (mut patterns, mut labels, mut digits) = (Vec::new(), Vec::new(), Vec::new());
        for (kind, secret) in &secrets.0 {
            for (form, pattern) in encodings(secret) {
                digits.push(form == "clear" && secret.bytes().all(|b| b.is_ascii_digit()));
                labels.push(format!("{kind} ({form})"));
                patterns.push(pattern);
            }
        }
        Self { automaton: AhoCorasick::new(&patterns).expect("patterns"), labels, digits }
    }

    /// Where `bytes` (the content of `name`) holds a secret.
    fn find(&self, name: &str, bytes: &[u8]) -> Vec<String> {
        let digit_at =
            |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
        self.automaton
            .find_overlapping_iter(bytes)
            .filter(|m| {
                let i = m.pattern().as_usize();
                !self.digits[i] || !(digit_at(m.start().checked_sub(1)) || digit_at(Some(m.end())))
            })
            .map(|m| {
                format!("{name} at byte {}: {}", m.start(), self.labels[m.pattern().as_usize()])
            })
            .collect()
    }

    /// Where the files under `dir` (but those under `skip`) hold a secret.
    fn find_in_tree(&self, dir: &Path, skip: &[PathBuf]) -> Vec<String> {
        let mut found = Vec::new();
        for (path, is_dir) in tree(dir) {
            if is_dir || skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            // A file that went away meanwhile (a `.partial`, a log just truncated) held nothing.
            if let Ok(bytes) = std::fs::read(&path) {
                found.extend(self.find(&path.display().to_string(), &bytes));
            }
        }
        found
    }
}

/// Every file and directory under `dir` (itself excluded), with whether it is a directory.
fn tree(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut all = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return all;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            all.extend(tree(&path));
        }
        all.push((path, is_dir));
    }
    all
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

/// Files under `dir` that are not 0600, and directories (`dir` too) that are not 0700.
fn loose_modes(dir: &Path) -> Vec<String> {
    let mut loose = Vec::new();
    if mode(dir) != 0o700 {
        loose.push(format!("{} is {:o}", dir.display(), mode(dir)));
    }
    for (path, is_dir) in tree(dir) {
        let (got, want) = (mode(&path), if is_dir { 0o700 } else { 0o600 });
        // Zero: gone meanwhile (a `.partial` renamed into place).
        if got != want && got != 0 {
            loose.push(format!("{} is {got:o}", path.display()));
        }
    }
    loose
}

/// `(id, fiscal code)` of the messages with `template`, as notify-svc stored them.
async fn recipients(db: &TestDb, template: &str) -> BTreeMap<String, String> {
    let sql = format!(
        "SELECT id, fiscal_code FROM {} WHERE template = $1",
        db.table("notify", "messages")
    );
    let rows = sqlx::query(&sql).bind(template).fetch_all(&db.pool("notify").await).await;
    rows.expect("messages").iter().map(|r| (r.get("id"), r.get("fiscal_code"))).collect()
}

/// What each citizen was sent with `template`, read from the channel that delivered it.
async fn delivered_secrets(db: &TestDb, template: &str) -> BTreeMap<String, String> {
    let delivered = db.delivered(template).await;
    let to = recipients(db, template).await;
    delivered.iter().map(|d| (to[&d.message_id].clone(), d.secret())).collect()
}

/// Waits until notify-svc has nothing left to send.
async fn all_sent(db: &TestDb) {
    db.outbox_relayed().await;
    eventually("every message sent", Duration::from_secs(60), || async {
        db.count("notify", "messages", "status IN ('QUEUED', 'SENDING')").await == 0
    })
    .await;
}

/// The newest `pg_dump` installed (PostgreSQL's own directories first).
fn pg_dump() -> PathBuf {
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin/pg_dump"))
        .filter(|p| p.exists())
        .collect();
    installed.sort_by_key(|p| {
        let version = p.components().nth(4).map(|c| c.as_os_str().to_string_lossy().into_owned());
        version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    installed.pop().unwrap_or_else(|| PathBuf::from("pg_dump"))
}

/// On PostgreSQL: where a dump of the services' schemas, and the server's own files for this
/// database and its write-ahead log (when this process may read them), hold a secret.
async fn find_in_postgres(db: &TestDb, needles: &Needles) -> Vec<String> {
    let url = db.url("identity");
    let dump = tokio::process::Command::new(pg_dump())
        .args(["--schema=identity", "--schema=claims", "--schema=notify", "--dbname"])
        .arg(&url)
        .output()
        .await
        .expect("pg_dump runs (it comes with the PostgreSQL server)");
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    assert!(String::from_utf8_lossy(&dump.stdout).contains("CREATE TABLE notify.messages"));
    let mut found = needles.find("pg_dump", &dump.stdout);

    let pool = db.pool("identity").await;
    // What is in the server's memory reaches its files.
    sqlx::query("CHECKPOINT").execute(&pool).await.expect("checkpoint");
    let data: String =
        sqlx::query_scalar("SHOW data_directory").fetch_one(&pool).await.expect("data dir");
    let oid: i64 = sqlx::query_scalar(
        "SELECT oid::bigint FROM pg_database WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .expect("oid");
    let data = PathBuf::from(data);
    if std::fs::read_dir(data.join("pg_wal")).is_err() {
        eprintln!("{} is not readable here: only the dump was scanned", data.display());
        return found;
    }
    let files = needles.find_in_tree(&data.join(format!("base/{oid}")), &[]);
    assert!(tree(&data.join(format!("base/{oid}"))).len() > 10, "the database's files were read");
    found.extend(files);
    found.extend(needles.find_in_tree(&data.join("pg_wal"), &[]));
    found
}

/// `sportello backup` of the suite's data directory into `into`.
async fn backup(data_dir: &Path, into: &Path) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
        .arg("backup")
        .arg(into)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .await
        .expect("sportello backup runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn once_delivered_no_pin_half_code_or_token_is_readable_in_any_file_the_suite_writes() {
    // Whatever the umask: each file must be made 0600 on purpose.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let db = TestDb::with_fresh_data_dir().await;
    let suite = spawn_suite_on(db, |c| c.notify.dispatch.enabled = true).await;
    let mut secrets = Secrets::default();
    secrets.add("operator's access token", &suite.operator_token);

    // PINs for a few citizens on the register, both halves delivered.
    let forms: Vec<(String, id::RequestPinRequest)> = GIVEN_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| citizen_request("Marchi", name, (1970 + i as i32, 3, 5), id::Sex::Male))
        .collect();
    suite.register_residents(&forms.iter().map(|(_, f)| f).collect::<Vec<_>>()).await;
    let gateway = suite.gateway_channel().await;
    let mut identity = IdentityServiceClient::new(gateway.clone());
    for (_, form) in &forms {
        identity.request_pin(form.clone()).await.expect("PIN issued");
    }
    let firsts = delivered_secrets(&suite.db, "PIN_FIRST_HALF").await;
    let seconds = delivered_secrets(&suite.db, "PIN_SECOND_HALF_LETTER").await;
    assert_eq!((firsts.len(), seconds.len()), (forms.len(), forms.len()));
    for (cf, _) in &forms {
        secrets.add("first PIN half", &firsts[cf]);
        secrets.add("second PIN half", &seconds[cf]);
        secrets.add("initial PIN", &format!("{}{}", firsts[cf], seconds[cf]));
    }

    // Ripristino for the first citizen: first access, a code by email, a new PIN in two halves.
    let (cf, _) = &forms[0];
    let own = "QZ7W4KPX";
    let initial = format!("{}{}", firsts[cf], seconds[cf]);
    let first_access = |initial: String, own: &str| id::CompleteFirstAccessRequest {
        fiscal_code: cf.clone(),
        initial_pin: initial,
        new_pin: own.into(),
    };
    identity.complete_first_access(first_access(initial, own)).await.expect("first access");
    secrets.add("own PIN", own);
    let contacts = id::Contacts {
        mobile_phone: ROSSI_MOBILE.into(),
        email: ROSSI_EMAIL.into(),
        ..Default::default()
    };
    let start = id::StartPinRecoveryRequest { fiscal_code: cf.clone(), contacts: Some(contacts) };
    identity.start_pin_recovery(start).await.expect("recovery started");
    let code = suite.db.delivered_one("PIN_RECOVERY_CODE").await.secret();
    secrets.add("recovery code", &code);
    let confirm =
        id::ConfirmPinRecoveryRequest { fiscal_code: cf.clone(), confirmation_code: code };
    identity.confirm_pin_recovery(confirm).await.expect("recovery confirmed");
    let restored_first = suite.db.delivered_one("PIN_RESTORED_FIRST_HALF").await.secret();
    let restored_second = suite.db.delivered_one("PIN_RESTORED_SECOND_HALF").await.secret();
    secrets.add("restored first half", &restored_first);
    secrets.add("restored second half", &restored_second);
    let restored = format!("{restored_first}{restored_second}");
    secrets.add("restored PIN", &restored);
    let own_again = "W9K3TQ7M";
    identity.complete_first_access(first_access(restored, own_again)).await.expect("restored");
    secrets.add("own PIN", own_again);
    let session = suite.login_with_pin(cf, own_again).await.expect("login with own PIN");
    secrets.session(&session);

    // The others log in with their simplified PIN (one refreshes its session) and all file a
    // claim at once.
    let mut sessions = vec![(cf.clone(), session)];
    for (cf, _) in &forms[1..] {
        sessions.push((cf.clone(), suite.login_with_pin(cf, &firsts[cf]).await.expect("login")));
    }
    let refresh = id::RefreshSessionRequest { refresh_token: sessions[1].1.refresh_token.clone() };
    let refreshed = identity.refresh_session(refresh).await.expect("refreshed").into_inner();
    for (_, session) in &sessions {
        secrets.session(session);
    }
    secrets.session(&refreshed.session.expect("session"));
    suite
        .import_registry(&registry(forms.iter().map(|(cf, _)| professional_row(cf))))
        .await
        .expect("registry");
    let mut flood = JoinSet::new();
    for (cf, session) in sessions {
        let gateway = gateway.clone();
        flood.spawn(async move {
            let form = claim_form("PROFESSIONISTI_COCOCO", &cf, "secrets-at-rest");
            submit(gateway, &session.access_token, form).await.expect("claim accepted")
        });
    }
    while let Some(receipt) = flood.join_next().await {
        receipt.expect("claim task");
    }
    all_sent(&suite.db).await;
    let data_dir = suite.db.data_dir().to_owned();
    if !suite.db.is_postgres() {
        // Idle, the services leave no write-ahead log behind.
        eventually("the logs truncated once idle", Duration::from_secs(20), || async {
            ["identity", "claims", "notify"].iter().all(|svc| {
                let wal = data_dir.join(format!("{svc}.sqlite-wal"));
                std::fs::metadata(wal).map_or(true, |m| m.len() == 0)
            })
        })
        .await;
    }

    // Every byte of every file, the channels' own sinks (the delivery itself) aside.
    let needles = Needles::new(&secrets);
    let sinks = [data_dir.join("outbox"), data_dir.join("spool")];
    assert!(sinks.iter().all(|s| s.is_dir()), "the sinks are where the test thinks");
    let mut found = needles.find_in_tree(&data_dir, &sinks);
    // The needles find what is there: the SMS sink holds the first halves it delivered.
    let in_sinks = needles.find_in_tree(&data_dir.join("outbox"), &[]);
    let sms = in_sinks.iter().filter(|f| f.ends_with("first PIN half (clear)")).count();
    assert!(sms >= forms.len(), "{in_sinks:#?}");
    if suite.db.is_postgres() {
        found.extend(find_in_postgres(&suite.db, &needles).await);
    } else {
        let copy = suite.db.scratch_dir().join("backup");
        backup(&data_dir, &copy).await;
        assert!(copy.join("notify.sqlite").exists(), "the backup holds the databases");
        let keys: Vec<String> = tree(&copy.join("keys"))
            .into_iter()
            .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert!(
            !keys.iter().any(|k| k.starts_with("secrets-")),
            "no data key in a backup: {keys:?}"
        );
        found.extend(needles.find_in_tree(&copy, &[]));
        let loose = loose_modes(&copy);
        assert!(loose.is_empty(), "the backup is its owner's alone: {loose:#?}");
    }
    assert!(found.is_empty(), "secrets readable at rest: {found:#?}");

    let loose = loose_modes(&data_dir);
    assert!(loose.is_empty(), "files under the data directory for their owner only: {loose:#?}");
}

/// The data keys' ids, newest last.
fn key_ids(data_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = tree(&data_dir.join("keys"))
        .into_iter()
        .filter_map(|(path, _)| {
            let name = path.file_name()?.to_str()?;
            Some(name.strip_prefix("secrets-")?.strip_suffix(".key")?.to_owned())
        })
        .collect();
    ids.sort();
    ids
}

/// The key ids the waiting messages with `template` are sealed under.
async fn sealed_under(db: &TestDb, template: &str) -> Vec<String> {
    let sql = format!(
        "SELECT secrets_key FROM {} WHERE template = $1 AND status = 'QUEUED'",
        db.table("notify", "messages")
    );
    let rows = sqlx::query(&sql).bind(template).fetch_all(&db.pool("notify").await).await;
    rows.expect("messages").iter().map(|r| r.get("secrets_key")).collect()
}

/// A message to Mario Rossi carrying one secret parameter, as identity-svc sends them.
fn secret_message(
    key: &str,
    (channel, address): (Channel, &str),
    template: &str,
    (name, value): (&str, &str),
) -> EnqueueMessageRequest {
    EnqueueMessageRequest {
        idempotency_key: key.into(),
        fiscal_code: ROSSI.into(),
        channel: channel as i32,
        address: address.into(),
        template: template.into(),
        secret_params: [(name.to_owned(), value.to_owned())].into(),
        ..Default::default()
    }
}

/// Stops notify-svc and starts it again on its database and address, dispatching or not.
async fn restart_notify(mut suite: Suite, dispatch: bool) -> Suite {
    use tonic_health::pb::health_check_response::ServingStatus;
    let addrs = [suite.gateway.addr, suite.identity.addr, suite.claims.addr, suite.notify.addr];
    let mut config = Configs::new(&suite.db, addrs).notify;
    config.dispatch.enabled = dispatch;
    suite.notify.shut_down().await;
    let listener = tokio::net::TcpListener::bind(addrs[3]).await.expect("the same address");
    suite.notify = Running::start((listener, addrs[3]), |l, s| notify_svc::serve(config, l, s));
    wait_for_status(addrs[3], NOTIFY, ServingStatus::Serving).await;
    suite
}

#[tokio::test]
async fn messages_sealed_under_a_key_that_was_rotated_out_are_still_delivered() {
    // Dispatch paused: the PIN's halves wait in notify-svc, sealed under the only key.
    let suite = spawn_suite().await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    identity.request_pin(pin_request(ROSSI)).await.expect("PIN issued");
    suite.db.outbox_relayed().await;
    let data_dir = suite.db.data_dir().to_owned();
    let [old_key] = key_ids(&data_dir).try_into().expect("one data key");
    for template in ["PIN_FIRST_HALF", "PIN_SECOND_HALF_LETTER"] {
        assert_eq!(
            sealed_under(&suite.db, template).await,
            std::slice::from_ref(&old_key),
            "{template}"
        );
    }

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
        .args(["keys", "rotate-secrets"])
        .arg(&data_dir)
        .output()
        .await
        .expect("sportello keys rotate-secrets runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let [_, new_key] = key_ids(&data_dir).try_into().expect("two data keys");

    // A notify-svc started after the rotation seals with the new key...
    let suite = restart_notify(suite, false).await;
    let code = "48151623";
    let to = (Channel::Email, ROSSI_EMAIL);
    let message = secret_message("test:after-rotation", to, "PIN_RECOVERY_CODE", ("code", code));
    crate::notify::client(&suite).await.enqueue_message(message).await.expect("enqueued");
    assert_eq!(sealed_under(&suite.db, "PIN_RECOVERY_CODE").await, [new_key]);

    // ...and delivers what was sealed under either.
    let suite = restart_notify(suite, true).await;
    let first = suite.db.delivered_one("PIN_FIRST_HALF").await.secret();
    let second = suite.db.delivered_one("PIN_SECOND_HALF_LETTER").await.secret();
    assert_eq!(suite.db.delivered_one("PIN_RECOVERY_CODE").await.secret(), code);
    identity
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: ROSSI.into(),
            initial_pin: format!("{first}{second}"),
            new_pin: "RMX7K2QA".into(),
        })
        .await
        .expect("the halves sealed before the rotation are the PIN");
}

#[tokio::test]
async fn a_message_whose_data_key_is_gone_fails_naming_the_key_and_goes_nowhere_else() {
    use sportello_proto::notify::v1::Fallback;
    let suite = spawn_suite().await;
    let to = (Channel::Sms, ROSSI_MOBILE);
    let mut message =
        secret_message("test:key-gone", to, "PIN_FIRST_HALF", ("pin_half", "K7Q2M9XZ"));
    message.fallback =
        Some(Fallback { channel: Channel::Email as i32, address: ROSSI_EMAIL.into() });
    let mut notify = crate::notify::client(&suite).await;
    let id = notify.enqueue_message(message).await.expect("enqueued").into_inner().message_id;

    // The key it was sealed under is replaced, and the old one lost.
    let data_dir = suite.db.data_dir().to_owned();
    let [lost] = key_ids(&data_dir).try_into().expect("one data key");
    sportello_platform::sealed::Keyring::rotate(&data_dir).expect("rotated");
    std::fs::remove_file(data_dir.join(format!("keys/secrets-{lost}.key"))).expect("removed");
    let suite = restart_notify(suite, true).await;

    let sql = format!(
        "SELECT status, last_error, fallback_message_id FROM {} WHERE id = $1",
        suite.db.table("notify", "messages")
    );
    let pool = suite.db.pool("notify").await;
    let row = || async { sqlx::query(&sql).bind(&id).fetch_one(&pool).await.expect("message") };
    eventually("the message settled", Duration::from_secs(20), || async {
        row().await.get::<String, _>("status") == "FAILED"
    })
    .await;
    let row = row().await;
    let reason: String = row.get("last_error");
    assert!(reason.contains(&lost), "{reason}");
    assert_eq!(row.get::<Option<String>, _>("fallback_message_id"), None, "nothing sent elsewhere");
    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 1);
}
