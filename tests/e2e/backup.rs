//! Operations (issue 13): `sportello backup DIR` (a copy taken while claims pour in holds every
//! claim acknowledged before it began, each with its receipt, in databases that check out
//! whole) and `sportello keys DIR` (the trust separate processes need).

use crate::claims::{claim_form, nth_cf, professional_row, registry, submit};
use crate::helpers::*;
use sportello_platform::auth::Level;
use sqlx::ConnectOptions as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[tokio::test]
async fn a_backup_taken_under_load_holds_every_claim_acknowledged_before_it_whole() {
    let suite = spawn_suite().await;
    if suite.db.is_postgres() {
        // PostgreSQL is backed up with pg_dump (README); the command copies SQLite files.
        return;
    }
    let citizens: Vec<String> = (0..400).map(|n| nth_cf(1_000 + n)).collect();
    suite
        .import_registry(&registry(citizens.iter().map(|cf| professional_row(cf))))
        .await
        .expect("registry");
    // Claims answered OK, and when.
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let gateway = suite.gateway_channel().await;
    let mut flood = Vec::new();
    for chunk in citizens.chunks(50) {
        let (chunk, acknowledged, gateway) =
            (chunk.to_vec(), acknowledged.clone(), gateway.clone());
        let tokens: Vec<String> =
            chunk.iter().map(|cf| suite.citizen_token(cf, Level::Simplified)).collect();
        flood.push(tokio::spawn(async move {
            for (cf, token) in chunk.iter().zip(tokens) {
                let form = claim_form("PROFESSIONISTI_COCOCO", cf, "backup");
                if let Ok(receipt) = submit(gateway.clone(), &token, form).await {
                    acknowledged.lock().expect("lock").push((receipt.claim_id, Instant::now()));
                }
            }
        }));
    }
    // Some claims are in before the copy starts; the others keep coming while it runs.
    eventually("the first claims", std::time::Duration::from_secs(10), || async {
        acknowledged.lock().expect("lock").len() >= 50
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let target = dir.path().join("backup");
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
        .arg("backup")
        .arg(&target)
        .arg("--data-dir")
        .arg(suite.db.data_dir())
        .output()
        .await
        .expect("sportello backup runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for task in flood {
        task.await.expect("flood");
    }
    let before: Vec<String> = acknowledged
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(id, _)| id.clone())
        .collect();
    let during = acknowledged.lock().expect("lock").len() - before.len();
    assert!(
        before.len() >= 50 && during > 0,
        "{} before the copy, {during} while it ran",
        before.len()
    );

    for service in ["identity", "claims", "notify"] {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(target.join(format!("{service}.sqlite")))
            .read_only(true)
            .connect()
            .await
            .expect("a backup database opens");
        let check: String =
            sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.expect("check");
        assert_eq!(check, "ok", "{service}");
        if service != "claims" {
            continue;
        }
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM claims").fetch_all(&mut conn).await.expect("ids");
        let missing: Vec<&String> = before.iter().filter(|id| !ids.contains(id)).collect();
        assert!(missing.is_empty(), "acknowledged before the copy but not in it: {missing:?}");
        let receipts: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE template = 'CLAIM_RECEIPT'")
                .fetch_one(&mut conn)
                .await
                .expect("receipts");
        assert_eq!(receipts as usize, ids.len(), "each claim in the copy with its receipt");
    }
    assert!(target.join("keys").is_dir(), "the keys that verify sessions are copied too");
}

#[tokio::test]
async fn sportello_keys_prints_the_trust_that_separate_processes_need() {
    let dir = tempfile::tempdir().expect("dir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
        .arg("keys")
        .arg(dir.path())
        .output()
        .await
        .expect("sportello keys runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let key = |name| {
        sportello_platform::service_identity::ServiceKey::load_or_generate(dir.path(), name)
            .expect("the key it made")
            .public_key()
    };
    for expected in [
        format!("SPORTELLO_IDENTITY__TRUSTED_SERVICES__GATEWAY={}", key(gateway::NAME)),
        format!("SPORTELLO_IDENTITY__TRUSTED_SERVICES__CLAIMS={}", key(claims_svc::NAME)),
        format!("SPORTELLO_NOTIFY__TRUSTED_SERVICES__CLAIMS={}", key(claims_svc::NAME)),
        format!("SPORTELLO_CLAIMS__TRUSTED_SERVICES__GATEWAY={}", key(gateway::NAME)),
        format!("SPORTELLO_NOTIFY__TRUSTED_SERVICES__GATEWAY={}", key(gateway::NAME)),
    ] {
        assert!(printed.lines().any(|l| l == expected), "{expected} in {printed}");
    }
    assert!(dir.path().join("keys/session-ed25519.der").is_file());
}
