//! Logins, sessions and the gateway as the guard: each login kind, each credential level against
//! the protected RPCs, lockout under concurrency, token tampering, expiry, wrong key, revoked
//! sessions, the cross-citizen matrix, rate limits and load shedding.

use crate::helpers::*;
use identity_svc::oidc::fake::FakeIdp;
use identity_svc::oidc::ProviderKind;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1 as nt;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

pub(crate) const OWN_PIN: &str = "RMX7K2QA";
pub(crate) const SPID_ISSUER: &str = "https://spid.example.it";
pub(crate) const AUDIENCE: &str = "sportello";

pub(crate) async fn identity(suite: &Suite) -> IdentityServiceClient<Channel> {
    IdentityServiceClient::new(suite.gateway_channel().await)
}

/// Files a PIN request for `request` and returns the 16-character initial PIN.
pub(crate) async fn initial_pin(suite: &Suite, request: id::RequestPinRequest) -> String {
    identity(suite).await.request_pin(request).await.expect("issued");
    let first = suite.db.messages("PIN_FIRST_HALF").await.pop().expect("first half sent");
    let second = suite.db.messages("PIN_SECOND_HALF_LETTER").await.pop().expect("letter sent");
    format!("{}{}", first.secret("pin_half"), second.secret("pin_half"))
}

/// A citizen who has completed first access with [`OWN_PIN`]; returns an ordinary session.
pub(crate) async fn active_citizen(suite: &Suite, request: id::RequestPinRequest) -> id::Session {
    let cf = request.fiscal_code.clone();
    let initial = initial_pin(suite, request).await;
    identity(suite)
        .await
        .complete_first_access(id::CompleteFirstAccessRequest {
            fiscal_code: cf.clone(),
            initial_pin: initial,
            new_pin: OWN_PIN.into(),
        })
        .await
        .expect("first access");
    suite.login_with_pin(&cf, OWN_PIN).await.expect("login")
}

pub(crate) async fn profile(
    suite: &Suite,
    token: &str,
) -> Result<id::GetProfileResponse, tonic::Status> {
    identity(suite)
        .await
        .get_profile(with_token(token, id::GetProfileRequest {}))
        .await
        .map(|r| r.into_inner())
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

#[tokio::test]
async fn the_first_half_logs_in_at_the_simplified_level_and_the_initial_pin_asks_for_a_change() {
    let suite = spawn_suite().await;
    let initial = initial_pin(&suite, pin_request(ROSSI)).await;

    let simplified = suite.login_with_pin(ROSSI, &initial[..8]).await.expect("simplified PIN");
    assert_eq!(simplified.level, id::CredentialLevel::Simplified as i32);
    let seen = profile(&suite, &simplified.access_token).await.expect("profile");
    assert_eq!(seen.login_description, "autenticato con PIN semplificato");

    let full = suite.login_with_pin(ROSSI, &initial).await.expect_err("change required");
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(reason(&full), "PIN_CHANGE_REQUIRED");
}

#[tokio::test]
async fn the_citizens_own_pin_logs_in_at_the_ordinary_level_and_the_profile_shows_the_previous_access(
) {
    let suite = spawn_suite().await;
    let first = active_citizen(&suite, pin_request(ROSSI)).await;
    assert_eq!(first.level, id::CredentialLevel::Ordinary as i32);
    let seen = profile(&suite, &first.access_token).await.expect("profile");
    assert_eq!(seen.login_description, "autenticato con PIN Non Dispositivo");
    assert_eq!(seen.subject, ROSSI);
    assert!(seen.previous_access_at.is_none(), "first session ever");

    let second = suite.login_with_pin(ROSSI, &OWN_PIN.to_lowercase()).await.expect("again");
    let seen = profile(&suite, &second.access_token).await.expect("profile");
    assert!(seen.previous_access_at.is_some(), "the previous access is shown");
    assert!(suite.login_with_pin(ROSSI, &first.access_token[..8]).await.is_err());
}

#[tokio::test]
async fn unknown_citizen_wrong_pin_and_locked_pin_look_the_same_but_the_audit_knows() {
    let suite = spawn_suite_with(|c| c.identity.pins.max_failed_attempts = 2).await;
    active_citizen(&suite, pin_request(ROSSI)).await;
    let unknown = suite.login_with_pin("MLLSNT82P65Z404U", OWN_PIN).await.expect_err("unknown");
    let wrong = suite.login_with_pin(ROSSI, "WRONG123").await.expect_err("wrong");
    suite.login_with_pin(ROSSI, "WRONG123").await.expect_err("wrong again: locks");
    let locked = suite.login_with_pin(ROSSI, OWN_PIN).await.expect_err("locked");
    for refused in [&unknown, &wrong, &locked] {
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), wrong.message());
        assert_eq!(reason(refused), "INVALID_CREDENTIALS");
    }
    let trail = crate::contact_center::audit_trail(&suite, ROSSI).await;
    let outcomes: Vec<&str> =
        trail.iter().filter(|e| e.action == "LoginWithPin").map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["PIN_LOCKED", "WRONG_PIN", "WRONG_PIN"]);
}

#[tokio::test]
async fn many_logins_of_one_citizen_at_once_with_the_right_pin_never_lock_it_nor_read_as_locked() {
    // As many attempts are checked at once as are left before the lock (each is reserved before
    // its check; one here); the right PIN beyond them is refused as any refusal is, and
    // operators read why, not "locked".
    let suite = spawn_suite_with(|c| c.identity.pins.max_failed_attempts = 1).await;
    active_citizen(&suite, pin_request(ROSSI)).await;
    let logins: Vec<_> = (0..24)
        .map(|_| {
            let suite_channel = suite.gateway_channel();
            async move {
                let mut client = IdentityServiceClient::new(suite_channel.await);
                let request =
                    id::LoginWithPinRequest { fiscal_code: ROSSI.into(), pin: OWN_PIN.into() };
                client.login_with_pin(request).await
            }
        })
        .collect();
    let answers = futures::future::join_all(logins).await;
    assert!(answers.iter().any(|a| a.is_ok()), "the right PIN logs in");
    assert!(answers.iter().any(|a| a.is_err()), "some were refused while another was checked");
    let trail = crate::contact_center::audit_trail(&suite, ROSSI).await;
    let refusals: Vec<&str> = trail
        .iter()
        .filter(|e| e.action == "LoginWithPin" && e.outcome != "OK")
        .map(|e| e.outcome.as_str())
        .collect();
    assert!(refusals.iter().all(|r| *r == "ATTEMPTS_IN_PROGRESS"), "{refusals:?}");
    let locked = suite.db.count("identity", "citizens", "locked_at IS NOT NULL").await;
    assert_eq!(locked, 0, "never locked by its own right PIN");
    suite.login_with_pin(ROSSI, OWN_PIN).await.expect("and it logs in after");
}

#[tokio::test]
async fn a_hundred_parallel_wrong_pins_never_count_more_than_the_limit() {
    let suite = spawn_suite().await;
    active_citizen(&suite, pin_request(ROSSI)).await;
    let channel = suite.gateway_channel().await;
    let guesses: Vec<_> = (0..100)
        .map(|i| {
            let mut client = IdentityServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let pin = format!("GUESS{i:03}");
                loop {
                    let request =
                        id::LoginWithPinRequest { fiscal_code: ROSSI.into(), pin: pin.clone() };
                    match client.login_with_pin(request).await {
                        // Refused for load, counting nothing: the guesser tries again.
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        answer => break answer,
                    }
                }
            })
        })
        .collect();
    for guess in guesses {
        let refused = guess.await.expect("task").expect_err("wrong");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let counted = suite
        .db
        .count("identity", "citizens", "failed_attempts = 5 AND locked_at IS NOT NULL")
        .await;
    assert_eq!(counted, 1, "exactly five attempts were ever checked, then the PIN locked");
    assert!(suite.login_with_pin(ROSSI, OWN_PIN).await.is_err(), "even the right PIN now");
}

#[tokio::test]
async fn spid_and_cie_logins_are_dispositive_and_say_so_in_the_profile() {
    let spid = FakeIdp::new(SPID_ISSUER, AUDIENCE);
    let cie = FakeIdp::new("https://cie.example.it", AUDIENCE);
    let providers = vec![
        spid.config("spid-test", ProviderKind::Spid),
        cie.config("cie-test", ProviderKind::Cie),
    ];
    let suite = spawn_suite_with(|c| c.identity.identity_providers = providers).await;
    let now = chrono::Utc::now().timestamp() as u64;

    let token = spid.id_token(ROSSI, "https://www.spid.gov.it/SpidL2", 300, now);
    let session = identity(&suite)
        .await
        .login_with_identity_provider(id::LoginWithIdentityProviderRequest { id_token: token })
        .await
        .expect("SPID login")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(session.level, id::CredentialLevel::Dispositive as i32);
    assert_eq!(session.method, id::AuthMethod::Spid as i32);
    let seen = profile(&suite, &session.access_token).await.expect("profile");
    assert_eq!(seen.login_description, "autenticato con SPID L2");

    let token = cie.id_token(ROSSI, "https://www.spid.gov.it/SpidL3", 300, now);
    let session = identity(&suite)
        .await
        .login_with_identity_provider(id::LoginWithIdentityProviderRequest { id_token: token })
        .await
        .expect("CIE login")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(session.method, id::AuthMethod::Cie as i32);

    for refused in [
        spid.id_token(ROSSI, "https://www.spid.gov.it/SpidL1", 300, now),
        spid.id_token(ROSSI, "https://www.spid.gov.it/SpidL2", -600, now),
        FakeIdp::new(SPID_ISSUER, AUDIENCE).id_token(
            ROSSI,
            "https://www.spid.gov.it/SpidL2",
            300,
            now,
        ),
        FakeIdp::new(SPID_ISSUER, "someone-else").id_token(
            ROSSI,
            "https://www.spid.gov.it/SpidL2",
            300,
            now,
        ),
    ] {
        let status = identity(&suite)
            .await
            .login_with_identity_provider(id::LoginWithIdentityProviderRequest {
                id_token: refused,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn staff_log_in_with_a_password_and_lock_like_citizens() {
    let suite = spawn_suite_with(|c| c.identity.pins.max_failed_attempts = 3).await;
    let session = suite.login_staff(OPERATOR_ID, OPERATOR_PASSWORD).await;
    assert_eq!(session.role, id::PrincipalRole::Operator as i32);
    assert_eq!(session.method, id::AuthMethod::Password as i32);
    let mut client = identity(&suite).await;
    let attempt = |password: &str| id::LoginStaffRequest {
        username: OPERATOR_ID.into(),
        password: password.into(),
    };
    for _ in 0..3 {
        let s = client.login_staff(attempt("guess")).await.expect_err("wrong");
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    let locked = client.login_staff(attempt(OPERATOR_PASSWORD)).await.expect_err("locked");
    assert_eq!(locked.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn each_credential_level_reaches_exactly_what_the_policy_allows() {
    let suite = spawn_suite().await;
    let initial = initial_pin(&suite, pin_request(ROSSI)).await;
    let simplified =
        suite.login_with_pin(ROSSI, &initial[..8]).await.expect("simplified").access_token;
    let channel = suite.gateway_channel().await;
    let mut ids = IdentityServiceClient::new(channel.clone());
    let mut cc = ContactCenterServiceClient::new(channel.clone());
    let mut notify = NotifyServiceClient::new(channel);

    profile(&suite, &simplified).await.expect("own profile");
    notify
        .list_my_messages(with_token(&simplified, nt::ListMyMessagesRequest::default()))
        .await
        .expect("own messages");
    let change = ids
        .change_pin(with_token(
            &simplified,
            id::ChangePinRequest {
                fiscal_code: ROSSI.into(),
                current_pin: initial[..8].into(),
                new_pin: OWN_PIN.into(),
            },
        ))
        .await
        .expect_err("needs an ordinary PIN");
    assert_eq!(
        (change.code(), reason(&change).as_str()),
        (Code::PermissionDenied, "INSUFFICIENT_CREDENTIAL_LEVEL")
    );
    let lookup = cc
        .lookup_credential(with_token(
            &simplified,
            id::LookupCredentialRequest { fiscal_code: ROSSI.into() },
        ))
        .await
        .expect_err("operators only");
    assert_eq!(
        (lookup.code(), reason(&lookup).as_str()),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED")
    );
    let internal = notify
        .enqueue_message(with_token(&suite.operator_token, nt::EnqueueMessageRequest::default()))
        .await
        .expect_err("internal");
    assert_eq!(
        (internal.code(), reason(&internal).as_str()),
        (Code::PermissionDenied, "INTERNAL_METHOD")
    );
    let anonymous = cc
        .lookup_credential(id::LookupCredentialRequest { fiscal_code: ROSSI.into() })
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    cc.lookup_credential(
        suite.as_operator(id::LookupCredentialRequest { fiscal_code: ROSSI.into() }),
    )
    .await
    .expect("an operator may");
}

#[tokio::test]
async fn tampered_foreign_and_expired_tokens_are_refused() {
    let suite = spawn_suite_with(|c| c.identity.sessions.access_ttl = Duration::from_secs(1)).await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let token = session.access_token.clone();

    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(base64_url_decode(&parts[1]))
        .expect("utf8")
        .replace(ROSSI, "MLLSNT82P65Z404U");
    parts[1] = base64_url_encode(payload.as_bytes());
    let tampered = parts.join(".");
    let other_key =
        identity_svc::keys::Signer::load_or_generate(&suite.db.data_dir().join("other.der"))
            .expect("key");
    let now = chrono::Utc::now().timestamp();
    let foreign = other_key
        .sign(&sportello_platform::auth::Claims {
            iss: sportello_platform::auth::ISSUER.into(),
            sub: ROSSI.into(),
            role: sportello_platform::auth::Role::Operator,
            level: sportello_platform::auth::Level::Dispositive,
            amr: sportello_platform::auth::Amr::Pin,
            sid: "forged".into(),
            iat: now,
            exp: now + 600,
            acr: None,
        })
        .expect("signed");
    for bad in [tampered.as_str(), foreign.as_str(), "not-a-token"] {
        let status = profile(&suite, bad).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{bad}");
    }
    // Past its lifetime (and the verifier's few seconds of leeway for clock skew).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let expired = profile(&suite, &token).await.expect_err("expired");
    assert_eq!(
        (expired.code(), reason(&expired).as_str()),
        (Code::Unauthenticated, "TOKEN_EXPIRED")
    );
    // The refresh token still renews the session, once.
    let mut ids = identity(&suite).await;
    let renewed = ids
        .refresh_session(id::RefreshSessionRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("refreshed")
        .into_inner()
        .session
        .expect("session");
    profile(&suite, &renewed.access_token).await.expect("renewed token works");
    let replay = ids
        .refresh_session(id::RefreshSessionRequest { refresh_token: session.refresh_token })
        .await
        .expect_err("a refresh token works once");
    assert_eq!(replay.code(), Code::FailedPrecondition);
}

fn base64_url_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("base64")
}

fn base64_url_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test]
async fn a_logged_out_session_stops_working_everywhere() {
    let suite = spawn_suite().await;
    let session = active_citizen(&suite, pin_request(ROSSI)).await;
    let token = session.access_token;
    profile(&suite, &token).await.expect("works");
    identity(&suite)
        .await
        .logout(with_token(&token, id::LogoutRequest {}))
        .await
        .expect("logged out");
    // identity-svc knows at once, whatever the gateway has heard yet, and says it as the
    // gateway will: the token no longer authenticates anyone.
    let straight = IdentityServiceClient::new(connect(suite.identity.addr).await)
        .get_profile(with_token(&token, id::GetProfileRequest {}))
        .await
        .expect_err("identity-svc refuses the ended session");
    assert_eq!(
        (straight.code(), reason(&straight).as_str()),
        (Code::Unauthenticated, "TOKEN_EXPIRED")
    );
    let mut notify = NotifyServiceClient::new(suite.gateway_channel().await);
    eventually("the gateway to refuse the session", Duration::from_secs(5), || {
        let request = with_token(&token, nt::ListMyMessagesRequest::default());
        let mut notify = notify.clone();
        async move {
            notify.list_my_messages(request).await.is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;
    let status = profile(&suite, &token).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    let refresh = identity(&suite)
        .await
        .refresh_session(id::RefreshSessionRequest { refresh_token: session.refresh_token })
        .await
        .expect_err("the refresh token died with it");
    assert_eq!(refresh.code(), Code::FailedPrecondition);
    let _ = notify.list_my_messages(nt::ListMyMessagesRequest::default()).await;
}

#[tokio::test]
async fn a_citizen_never_reaches_another_citizens_data_whatever_ids_they_send() {
    let suite = spawn_suite().await;
    let (bianchi_cf, bianchi_form) =
        citizen_request("Bianchi", "Laura", (1990, 1, 1), id::Sex::Female);
    suite.register_residents(&[&bianchi_form]).await;
    let rossi = active_citizen(&suite, pin_request(ROSSI)).await.access_token;
    let bianchi_request = identity(&suite)
        .await
        .request_pin(bianchi_form)
        .await
        .expect("filed")
        .into_inner()
        .request_id;

    let channel = suite.gateway_channel().await;
    let mut notify = NotifyServiceClient::new(channel.clone());
    let mut ids = IdentityServiceClient::new(channel);
    let rossis: Vec<nt::Message> = notify
        .list_my_messages(with_token(&rossi, nt::ListMyMessagesRequest::default()))
        .await
        .expect("own")
        .into_inner()
        .messages;
    assert!(!rossis.is_empty());
    assert!(rossis.iter().all(|m| m.fiscal_code == ROSSI), "only his own");

    // Messages leave identity's outbox after the RPC that wrote them has answered.
    suite.db.outbox_relayed().await;
    let bianchi_messages: Vec<String> = {
        use sqlx::Row;
        let sql = format!(
            "SELECT id FROM {} WHERE fiscal_code = $1",
            suite.db.table("notify", "messages")
        );
        sqlx::query(&sql)
            .bind(&bianchi_cf)
            .fetch_all(&suite.db.pool("notify").await)
            .await
            .expect("ids")
            .iter()
            .map(|r| r.get::<String, _>("id"))
            .collect()
    };
    assert!(!bianchi_messages.is_empty());
    // Through the gateway and straight at notify-svc alike: the service checks ownership itself.
    let direct = NotifyServiceClient::new(connect(suite.notify.addr).await);
    for client in [notify.clone(), direct] {
        for message_id in &bianchi_messages {
            let status = client
                .clone()
                .get_my_message(with_token(
                    &rossi,
                    nt::GetMyMessageRequest { message_id: message_id.clone() },
                ))
                .await
                .expect_err("someone else's message");
            assert_eq!(status.code(), Code::NotFound);
        }
    }
    let change = ids
        .change_pin(with_token(
            &rossi,
            id::ChangePinRequest {
                fiscal_code: bianchi_cf.clone(),
                current_pin: OWN_PIN.into(),
                new_pin: "N3WP1N9Z".into(),
            },
        ))
        .await
        .expect_err("someone else's PIN");
    assert_eq!(change.code(), Code::PermissionDenied);
    let status = ids
        .get_pin_request_status(id::GetPinRequestStatusRequest {
            fiscal_code: ROSSI.into(),
            request_id: bianchi_request,
        })
        .await
        .expect_err("someone else's request");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn too_many_calls_from_one_principal_are_refused_with_retry_info() {
    use crate::helpers::*;
    let suite = spawn_suite_with(|c| {
        c.gateway.limits.per_principal = gateway::config::RateLimit { per_second: 1, burst: 2 };
    })
    .await;
    let token = suite.operator_token.clone();
    let mut cc = ContactCenterServiceClient::new(suite.gateway_channel().await);
    let mut refused = None;
    for _ in 0..5 {
        let call = cc
            .lookup_credential(with_token(
                &token,
                id::LookupCredentialRequest { fiscal_code: ROSSI.into() },
            ))
            .await;
        if let Err(status) = call {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("the bucket ran dry");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "RATE_LIMITED");
    assert!(
        status.get_details_retry_info().and_then(|r| r.retry_delay).is_some(),
        "says when to retry"
    );
}

#[tokio::test]
async fn too_many_calls_from_one_address_are_refused_even_without_a_session() {
    let suite = spawn_suite_with(|c| {
        c.gateway.limits.per_address = gateway::config::RateLimit { per_second: 1, burst: 3 };
    })
    .await;
    let mut claims = sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient::new(
        suite.gateway_channel().await,
    );
    let mut codes = Vec::new();
    for _ in 0..6 {
        let call = claims.list_benefits(sportello_proto::claims::v1::ListBenefitsRequest {}).await;
        codes.push(call.err().map(|s| s.code()));
    }
    assert!(codes.contains(&Some(Code::ResourceExhausted)), "{codes:?}");
}

#[tokio::test]
async fn overload_is_shed_at_once_rather_than_queued() {
    let suite = spawn_suite_with(|c| c.gateway.limits.max_in_flight = 1).await;
    let channel = suite.gateway_channel().await;
    // PIN requests take tens of milliseconds of hashing each: many at once overflow one slot.
    let calls: Vec<_> = (0..20u32)
        .map(|i| {
            let mut client = IdentityServiceClient::new(channel.clone());
            let (_, form) =
                citizen_request("Verdi", "Giuseppe", (1960, 1, 1 + i % 28), id::Sex::Male);
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = client.request_pin(form).await;
                (result.err().map(|s| s.code()), started.elapsed())
            })
        })
        .collect();
    let mut shed = 0;
    for call in calls {
        let (code, took) = call.await.expect("task");
        if code == Some(Code::ResourceExhausted) {
            shed += 1;
            assert!(took < Duration::from_secs(1), "refused fast, not after queueing: {took:?}");
        }
    }
    assert!(shed > 0, "some calls were shed");
}

#[tokio::test]
async fn a_long_or_absent_deadline_is_capped_by_the_gateway() {
    let suite = spawn_suite_with(|c| {
        c.gateway.limits.max_deadline = Duration::from_millis(150);
        // Ten times OWASP's iterations: a PIN request now takes far longer than the cap.
        c.identity.pin_hash.iterations = 20;
    })
    .await;
    let mut client = IdentityServiceClient::new(suite.gateway_channel().await);
    let (_, form) = citizen_request("Neri", "Anna", (1970, 5, 5), id::Sex::Female);
    let mut request = tonic::Request::new(form.clone());
    request.set_timeout(Duration::from_secs(60));
    let status = client.request_pin(request).await.expect_err("capped");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let status = client.request_pin(form).await.expect_err("no deadline: the cap applies");
    assert_eq!(status.code(), Code::DeadlineExceeded);
}

/// A fake provider's JWKS endpoint: a plain HTTP/1.1 server answering every request with it.
pub(crate) async fn serve_jwks(jwks: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = jwks.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test]
async fn a_providers_keys_can_come_from_its_jwks_url() {
    let spid = FakeIdp::new(SPID_ISSUER, AUDIENCE);
    let mut provider = spid.config("spid-remote", ProviderKind::Spid);
    provider.jwks = None;
    provider.jwks_url = Some(serve_jwks(spid.jwks()).await);
    let suite = spawn_suite_with(|c| {
        c.identity.identity_providers = vec![provider];
        c.identity.jwks_fetch.allow_http = true;
    })
    .await;
    let now = chrono::Utc::now().timestamp() as u64;
    let token = spid.id_token(ROSSI, "https://www.spid.gov.it/SpidL3", 300, now);
    let session = identity(&suite)
        .await
        .login_with_identity_provider(id::LoginWithIdentityProviderRequest { id_token: token })
        .await
        .expect("SPID login with fetched keys")
        .into_inner()
        .session
        .expect("session");
    let seen = profile(&suite, &session.access_token).await.expect("profile");
    assert_eq!(seen.login_description, "autenticato con SPID L3");
}

#[tokio::test]
async fn logins_refused_for_load_never_count_as_wrong_pins() {
    // One hashing thread, three hashes waiting at most (so that fewer right PINs are checked
    // at once than the five attempts allowed): of many right PINs at once, most are refused
    // for load. None of them may cost the citizen an attempt.
    let suite = spawn_suite_with(|c| {
        c.identity.pin_hash.workers = 1;
        c.identity.pin_hash.max_queued = 3;
    })
    .await;
    active_citizen(&suite, pin_request(ROSSI)).await;
    let channel = suite.gateway_channel().await;
    let logins: Vec<_> = (0..20)
        .map(|_| {
            let mut client = IdentityServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let request =
                    id::LoginWithPinRequest { fiscal_code: ROSSI.into(), pin: OWN_PIN.into() };
                client.login_with_pin(request).await.map(|_| ())
            })
        })
        .collect();
    let mut refused = 0;
    for login in logins {
        if let Err(status) = login.await.expect("task") {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.get_details_retry_info().is_some(), "it says when to retry");
            refused += 1;
        }
    }
    assert!(refused >= 2, "the load was refused ({refused} of 20)");
    suite.login_with_pin(ROSSI, OWN_PIN).await.expect("the PIN is not locked");
}

#[tokio::test]
async fn logins_the_citizen_gave_up_on_never_count_as_wrong_pins() {
    let suite = spawn_suite_with(|c| c.identity.pins.max_failed_attempts = 2).await;
    active_citizen(&suite, pin_request(ROSSI)).await;
    let mut client = identity(&suite).await;
    // Deadlines that end while the PIN is being checked: the caller is gone before the verdict.
    for ms in (1..=20).step_by(2) {
        let mut request = tonic::Request::new(id::LoginWithPinRequest {
            fiscal_code: ROSSI.into(),
            pin: OWN_PIN.into(),
        });
        request.set_timeout(Duration::from_millis(ms));
        let _ = client.login_with_pin(request).await;
    }
    // Every abandoned login was decided all the same (right PIN: no attempt counted).
    eventually("the abandoned logins to be decided", Duration::from_secs(10), || async {
        suite.login_with_pin(ROSSI, OWN_PIN).await.is_ok()
    })
    .await;
    let locked: i64 = suite
        .db
        .count(
            "identity",
            "citizens",
            &format!("fiscal_code = '{ROSSI}' AND locked_at IS NOT NULL"),
        )
        .await;
    assert_eq!(locked, 0, "the PIN was never locked");
}
