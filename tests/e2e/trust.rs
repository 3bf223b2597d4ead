//! Sessions that end with what they were built on, everywhere: services called directly follow
//! the ended sessions; internal RPCs answer Sportello's services only; sessions have an absolute
//! lifetime; lockouts end sessions and (for staff) expire; staff removed from the configuration
//! are disabled.

use crate::auth::{active_citizen, identity, profile, serve_jwks, AUDIENCE, OWN_PIN, SPID_ISSUER};
use crate::helpers::*;
use identity_svc::oidc::fake::FakeIdp;
use identity_svc::oidc::ProviderKind;
use identity_svc::provider_keys::{fetch, FetchRules};
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1 as nt;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use std::time::Duration;
use tonic::Code;

async fn refresh(suite: &Suite, refresh_token: &str) -> Result<id::Session, tonic::Status> {
    let request = id::RefreshSessionRequest { refresh_token: refresh_token.into() };
    let reply = identity(suite).await.refresh_session(request).await?;
    Ok(reply.into_inner().session.expect("session"))
}

/// Waits until notify-svc, called directly (not through the gateway), refuses `token`.
async fn notify_refuses_directly(suite: &Suite, token: &str, within: Duration) {
    let notify = NotifyServiceClient::new(connect(suite.notify.addr).await);
    eventually("notify-svc called directly to refuse the session", within, || {
        let request = with_token(token, nt::ListMyMessagesRequest::default());
        let mut notify = notify.clone();
        async move {
            notify.list_my_messages(request).await.is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;
}

#[tokio::test]
async fn a_logged_out_session_is_refused_by_a_service_called_directly_within_seconds() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let token = session.access_token;
    let mut notify = NotifyServiceClient::new(connect(suite.notify.addr).await);
    let mine = with_token(&token, nt::ListMyMessagesRequest::default());
    notify.list_my_messages(mine).await.expect("accepted while the session is open");
    identity(&suite)
        .await
        .logout(with_token(&token, id::LogoutRequest {}))
        .await
        .expect("logged out");
    notify_refuses_directly(&suite, &token, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_service_started_after_a_logout_never_lets_the_ended_session_in_not_even_at_its_first_call(
) {
    // A process just (re)started has learnt nothing yet: it must not take a session the citizen
    // ended for a live one while it asks identity-svc which sessions ended.
    let mut later = None;
    let suite = spawn_suite_with(|c| later = Some(c.notify.clone())).await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let token = session.access_token;
    identity(&suite)
        .await
        .logout(with_token(&token, id::LogoutRequest {}))
        .await
        .expect("logged out");
    let config = later.expect("notify's configuration");
    let started = Running::start(listener().await, |l, s| notify_svc::serve(config, l, s));
    let mut notify = NotifyServiceClient::new(connect(started.addr).await);
    let mut answers = Vec::new();
    loop {
        let request = with_token(&token, nt::ListMyMessagesRequest::default());
        let code = notify.list_my_messages(request).await.map_or_else(|s| s.code(), |_| Code::Ok);
        answers.push(code);
        // Until it knows, it says so (UNAVAILABLE, retry shortly); then it refuses the session.
        if code != Code::Unavailable || answers.len() > 2_000 {
            break;
        }
    }
    assert_eq!(answers.last(), Some(&Code::Unauthenticated), "{answers:?}");
    assert!(!answers.contains(&Code::Ok), "the ended session was let in: {answers:?}");
}

#[tokio::test]
async fn identitys_internal_rpcs_answer_only_sportello_services() {
    let suite = spawn_suite().await;
    let mut direct = IdentityServiceClient::new(connect(suite.identity.addr).await);
    let anonymous = direct.get_signing_keys(id::GetSigningKeysRequest {}).await;
    assert_eq!(anonymous.expect_err("anonymous").code(), Code::Unauthenticated);
    let anonymous = direct.list_revoked_sessions(id::ListRevokedSessionsRequest::default()).await;
    assert_eq!(anonymous.expect_err("anonymous").code(), Code::Unauthenticated);
    let citizen = active_citizen(&suite, pin_request(ROSSI)).await.access_token;
    let as_citizen =
        direct.get_signing_keys(with_token(&citizen, id::GetSigningKeysRequest {})).await;
    assert_eq!(as_citizen.expect_err("a citizen").code(), Code::PermissionDenied);
    // An untrusted key naming itself "gateway" is nobody.
    let elsewhere = tempfile::tempdir().expect("dir");
    let impostor = ServiceKey::load_or_generate(elsewhere.path(), gateway::NAME).expect("key");
    let forged = direct.get_signing_keys(impostor.request(id::GetSigningKeysRequest {})).await;
    assert_eq!(forged.expect_err("untrusted key").code(), Code::Unauthenticated);
    let gateway = ServiceKey::load_or_generate(suite.db.data_dir(), gateway::NAME).expect("key");
    let keys = direct.get_signing_keys(gateway.request(id::GetSigningKeysRequest {})).await;
    assert!(keys.expect("the gateway's own key").into_inner().jwks.contains("OKP"));
}

#[tokio::test]
async fn refreshing_never_extends_a_session_past_its_absolute_lifetime() {
    let suite = spawn_suite_with(|c| {
        c.identity.sessions.max_lifetime = Duration::from_secs(3);
    })
    .await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let renewed = refresh(&suite, &session.refresh_token).await.expect("within the lifetime");
    let ends = renewed.refresh_token_expires_at.expect("expiry");
    let started = session.access_token_expires_at.expect("expiry");
    assert!(ends.seconds <= started.seconds + 3, "capped at the absolute lifetime");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let late = refresh(&suite, &renewed.refresh_token).await.expect_err("past the lifetime");
    assert_eq!(late.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn the_wrong_pin_that_locks_a_credential_ends_every_session_of_the_citizen() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    for _ in 0..5 {
        let wrong = suite.login_with_pin(ROSSI, "WRNGPIN2").await.expect_err("wrong PIN");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let locked = suite.login_with_pin(ROSSI, OWN_PIN).await.expect_err("locked");
    assert_eq!(locked.code(), Code::Unauthenticated);
    notify_refuses_directly(&suite, &session.access_token, Duration::from_secs(3)).await;
    // The gateway follows the ended sessions on its own, within the same few seconds (until it
    // has, identity-svc refuses the call itself: the credential is locked).
    eventually("the gateway to refuse the ended session", Duration::from_secs(3), || async {
        let status = profile(&suite, &session.access_token).await.expect_err("refused");
        status.code() == Code::Unauthenticated
    })
    .await;
    let refused = refresh(&suite, &session.refresh_token).await.expect_err("ended");
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn staff_removed_from_the_configuration_are_refused_and_their_sessions_end() {
    const LEAVER: &str = "op.leaver";
    let hash = password_hash(OPERATOR_PASSWORD).await;
    let account = identity_svc::config::StaffAccount {
        role: sportello_platform::auth::Role::Operator,
        password_hash: hash.into(),
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut suite = spawn_suite_with({
        let account = account.clone();
        move |c| {
            c.identity.staff.insert(LEAVER.into(), account);
        }
    })
    .await;
    let session = suite.login_staff(LEAVER, OPERATOR_PASSWORD).await;
    // identity-svc restarts with the leaver gone from its configuration.
    let addr = suite.identity.addr;
    let running = std::mem::replace(
        &mut suite.identity,
        Running::start(listener().await, |_, _| async { Ok(()) }),
    );
    running.shut_down().await;
    let mut configs =
        Configs::new(&suite.db, [suite.gateway.addr, addr, suite.claims.addr, suite.notify.addr]);
    configs.identity.staff.insert(OPERATOR_ID.into(), account);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("same port again");
    suite.identity =
        Running::start((listener, addr), |l, s| identity_svc::serve(configs.identity, l, s));
    wait_for_status(suite.identity.addr, IDENTITY, ServingStatus::Serving).await;
    // The gateway reconnects to the restarted identity-svc on its own time.
    eventually("the leaver's login to be refused", Duration::from_secs(5), || async {
        let login = identity(&suite)
            .await
            .login_staff(id::LoginStaffRequest {
                username: LEAVER.into(),
                password: OPERATOR_PASSWORD.into(),
            })
            .await;
        login.is_err_and(|s| s.code() == Code::Unauthenticated)
    })
    .await;
    let refused = refresh(&suite, &session.refresh_token).await.expect_err("ended");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    eventually("the gateway to refuse the leaver's session", Duration::from_secs(5), || {
        let token = session.access_token.clone();
        let suite = &suite;
        async move { profile(suite, &token).await.is_err_and(|s| s.code() == Code::Unauthenticated) }
    })
    .await;
    suite.login_staff(OPERATOR_ID, OPERATOR_PASSWORD).await;
}

#[tokio::test]
async fn a_staff_lockout_expires_and_an_administrator_can_lift_it_on_the_record() {
    let suite = spawn_suite_with(|c| {
        c.identity.pins.max_failed_attempts = 3;
        c.identity.staff_lockout = Duration::from_secs(1);
    })
    .await;
    let config = Configs::new(
        &suite.db,
        [suite.gateway.addr, suite.identity.addr, suite.claims.addr, suite.notify.addr],
    )
    .identity;
    let mut client = identity(&suite).await;
    let attempt = |username: &str, password: &str| id::LoginStaffRequest {
        username: username.into(),
        password: password.into(),
    };
    // Anyone typing the username differently still counts against the one account.
    for _ in 0..3 {
        let s = client.login_staff(attempt(" OP.Bianchi ", "guess")).await.expect_err("wrong");
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    let locked = client.login_staff(attempt(OPERATOR_ID, OPERATOR_PASSWORD)).await;
    assert_eq!(locked.expect_err("locked").code(), Code::Unauthenticated);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client.login_staff(attempt(OPERATOR_ID, OPERATOR_PASSWORD)).await.expect("the lock expired");
    for _ in 0..3 {
        let _ = client.login_staff(attempt(OPERATOR_ID, "guess")).await;
    }
    let locked = client.login_staff(attempt(OPERATOR_ID, OPERATOR_PASSWORD)).await;
    assert_eq!(locked.expect_err("locked again").code(), Code::Unauthenticated);
    assert!(identity_svc::unlock_staff(&config, " OP.BIANCHI", "admin:test")
        .await
        .expect("unlock"));
    client.login_staff(attempt(OPERATOR_ID, OPERATOR_PASSWORD)).await.expect("unlocked");
    let audited = suite
        .db
        .count(
            "identity",
            "audit_events",
            "action = 'UnlockStaff' AND operator_id = 'admin:test' \
             AND detail = 'staff account op.bianchi'",
        )
        .await;
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn an_id_token_logs_in_once() {
    let spid = FakeIdp::new(SPID_ISSUER, AUDIENCE);
    let provider = spid.config("spid-test", ProviderKind::Spid);
    let suite = spawn_suite_with(|c| c.identity.identity_providers = vec![provider]).await;
    let now = chrono::Utc::now().timestamp() as u64;
    let token = spid.id_token(ROSSI, "https://www.spid.gov.it/SpidL2", 300, now);
    let login = || id::LoginWithIdentityProviderRequest { id_token: token.clone() };
    identity(&suite).await.login_with_identity_provider(login()).await.expect("first use");
    let replayed = identity(&suite).await.login_with_identity_provider(login()).await;
    assert_eq!(replayed.expect_err("replayed").code(), Code::Unauthenticated);
    // Another instance sharing the database knows it too: the memory is the database's.
    let used = suite.db.count("identity", "used_id_tokens", "1 = 1").await;
    assert_eq!(used, 1);
}

fn remote_provider(url: String) -> identity_svc::oidc::ProviderConfig {
    let mut provider =
        FakeIdp::new(SPID_ISSUER, AUDIENCE).config("spid-remote", ProviderKind::Spid);
    provider.jwks = None;
    provider.jwks_url = Some(url);
    provider
}

#[tokio::test]
async fn provider_keys_come_only_over_https_in_time_and_within_a_size_bound() {
    let spid = FakeIdp::new(SPID_ISSUER, AUDIENCE);
    let plain = remote_provider(serve_jwks(spid.jwks()).await);
    let testing = FetchRules { allow_http: true, ..FetchRules::default() };
    fetch(std::slice::from_ref(&plain), &testing).await.expect("plain http in tests only");
    let refused = fetch(std::slice::from_ref(&plain), &FetchRules::default()).await;
    assert!(refused.is_err(), "http refused unless the test-only switch is on");

    let huge = format!("{{\"keys\": [], \"padding\": \"{}\"}}", "x".repeat(300 * 1024));
    let oversized = remote_provider(serve_jwks(huge).await);
    let err = fetch(&[oversized], &testing).await.expect_err("too big");
    assert!(err.to_string().contains("larger than"), "{err}");

    // A provider that accepts the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let slow = remote_provider(format!("http://{addr}/jwks.json"));
    let quick = FetchRules { timeout: Duration::from_millis(300), ..testing };
    let started = std::time::Instant::now();
    fetch(&[slow], &quick).await.expect_err("timed out");
    assert!(started.elapsed() < Duration::from_secs(3));
}
