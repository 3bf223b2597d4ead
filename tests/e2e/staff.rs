//! Staff accounts without editing TOML by hand: `sportello up` on embedded defaults makes demo
//! accounts (their passwords in a file only the user reads), and `sportello staff add` writes an
//! account into the configuration file that the suite then loads.

use crate::helpers::*;
use crate::tracing_across_services::sportello_up_with;
use sportello_platform::config::ServiceConfig as _;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt as _;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn sportello_up_on_defaults_makes_demo_staff_and_its_operator_logs_in() {
    let db = TestDb::new().await;
    let up = sportello_up_with(&db, &[]).await;
    wait_for_status(up.gateway, "", ServingStatus::Serving).await;

    let file = db.data_dir().join("demo-staff.txt");
    let mode = std::fs::metadata(&file).expect("demo-staff.txt").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the user reads the passwords");
    let text = std::fs::read_to_string(&file).expect("read");
    let account = |role: &str| -> (String, String) {
        let line = text.lines().find(|l| l.starts_with(role)).expect("listed");
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[1].to_owned(), fields[2].to_owned())
    };
    let mut identity = IdentityServiceClient::new(connect(up.gateway).await);
    for (role, expected) in [
        ("operator", id::PrincipalRole::Operator),
        ("patronato", id::PrincipalRole::Patronato),
        ("backoffice", id::PrincipalRole::Backoffice),
    ] {
        let (username, password) = account(role);
        let session = identity
            .login_staff(id::LoginStaffRequest { username, password })
            .await
            .expect("the demo account logs in")
            .into_inner()
            .session
            .expect("session");
        assert_eq!(session.role, expected as i32);
    }
    let (stopped, _) = up.stop().await;
    assert!(stopped, "a clean stop");
}

/// `sportello staff add` with the password on standard input.
async fn staff_add(config: &Path, username: &str, password: &str, extra: &[&str]) -> (i32, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"))
        .args(["staff", "add", username, "--role", "operator", "--config"])
        .arg(config)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sportello staff add starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(format!("{password}\n").as_bytes()).await.expect("password");
    drop(stdin);
    let out = child.wait_with_output().await.expect("ends");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().expect("exited"), said)
}

#[tokio::test]
async fn staff_add_writes_an_account_into_the_configuration_that_the_suite_logs_in_with() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("sportello.toml");
    std::fs::write(&config, "# the institute's settings\n[identity]\nstaff_lockout = \"20m\"\n")
        .expect("config");
    let (code, said) = staff_add(&config, "op.nuovo", "a first long password", &[]).await;
    assert_eq!(code, 0, "{said}");
    let (code, said) = staff_add(&config, "op.nuovo", "another long password", &[]).await;
    assert_eq!(code, 1, "an existing account stays without --force: {said}");
    assert!(said.contains("--force"), "{said}");
    let (code, said) = staff_add(&config, "op.nuovo", "another long password", &["--force"]).await;
    assert_eq!(code, 0, "{said}");

    let text = std::fs::read_to_string(&config).expect("read");
    assert!(text.starts_with("# the institute's settings\n"), "the rest stays: {text}");
    assert!(text.contains("[identity.staff.\"op.nuovo\"]"), "{text}");
    assert!(!text.contains("long password"), "only the hash is written: {text}");
    let loaded = identity_svc::Config::load(&config).expect("the suite loads it");
    assert_eq!(loaded.staff_lockout, std::time::Duration::from_secs(20 * 60));
    let suite = spawn_suite_with(|c| c.identity.staff.extend(loaded.staff)).await;
    let session = suite.login_staff("op.nuovo", "another long password").await;
    assert_eq!(session.role, id::PrincipalRole::Operator as i32);

    // A new file is made, readable by the user only.
    let fresh = dir.path().join("new.toml");
    assert_eq!(staff_add(&fresh, "op.altro", "a third long password", &[]).await.0, 0);
    let mode = std::fs::metadata(&fresh).expect("made").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
