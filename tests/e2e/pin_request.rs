//! The one real path of the foundation: a PIN request through the gateway, stored by
//! identity-svc, its first half stored as a message by notify-svc; and bad input refused.

use crate::helpers::*;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::claims::v1::ListBenefitsRequest;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sqlx::Row;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn a_pin_request_through_the_gateway_stores_the_request_and_the_first_half_message() {
    let suite = spawn_suite().await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);

    let reply = identity
        .request_pin(pin_request("RSSMRA85T10A562S"))
        .await
        .expect("request accepted")
        .into_inner();
    assert!(!reply.request_id.is_empty());

    let db = &suite.db;
    assert_eq!(
        db.count(
            "identity",
            "pin_requests",
            "fiscal_code = 'RSSMRA85T10A562S' AND outcome = 'ISSUED'"
        )
        .await,
        1
    );
    let pool = db.pool("identity").await;
    let citizen = sqlx::query(&format!(
        "SELECT pin_state, pin_hash, simplified_hash FROM {} WHERE fiscal_code = 'RSSMRA85T10A562S'",
        db.table("identity", "citizens")
    ))
    .fetch_one(&pool)
    .await
    .expect("citizen row");
    assert_eq!(citizen.get::<String, _>("pin_state"), "SIMPLIFIED_ONLY");
    assert!(citizen.get::<String, _>("pin_hash").starts_with("$argon2id$"));
    assert!(citizen.get::<String, _>("simplified_hash").starts_with("$argon2id$"));

    let first = db.message("PIN_FIRST_HALF").await;
    assert_eq!(first.channel, "SMS");
    assert_eq!(first.address, ROSSI_MOBILE);
    assert_eq!(first.secret("pin_half").len(), 8, "the first half travels as a secret");
    let letter = db.message("PIN_SECOND_HALF_LETTER").await;
    assert_eq!(letter.channel, "POST");
    assert!(letter.address.contains("56017"), "to the residence: {}", letter.address);
    assert_eq!(letter.secret("pin_half").len(), 8);
    assert_ne!(letter.secret("pin_half"), first.secret("pin_half"));
}

#[tokio::test]
async fn a_second_request_for_the_same_citizen_gets_the_same_neutral_answer() {
    let suite = spawn_suite().await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    let first =
        identity.request_pin(pin_request("RSSMRA85T10A562S")).await.expect("first").into_inner();
    let second =
        identity.request_pin(pin_request("RSSMRA85T10A562S")).await.expect("second").into_inner();
    assert_eq!(first.message, second.message, "nothing tells a caller the CF is registered");
    let mut told: Vec<String> =
        suite.db.messages("PIN_ALREADY_ISSUED").await.into_iter().map(|m| m.address).collect();
    // The relay may hand the two notices over in either order.
    told.sort();
    assert_eq!(told, [ROSSI_MOBILE, ROSSI_EMAIL], "the contacts on file are told instead");
    assert_eq!(suite.db.messages("PIN_FIRST_HALF").await.len(), 1, "no second PIN");
}

#[tokio::test]
async fn a_malformed_fiscal_code_is_invalid_argument_naming_the_field() {
    let suite = spawn_suite().await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);

    for bad in ["RSSMRA85T10A562", "RSSMRA85T10A562T", "not a fiscal code", ""] {
        let status = identity.request_pin(pin_request(bad)).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        let violations =
            status.get_details_bad_request().expect("BadRequest details").field_violations;
        assert_eq!(violations.len(), 1, "{bad:?}: {violations:?}");
        assert_eq!(violations[0].field, "fiscal_code");
        assert!(!status.message().contains(bad) || bad.is_empty(), "input not echoed");
    }
    assert_eq!(
        suite.db.count("identity", "pin_requests", "1 = 1").await,
        0,
        "nothing half-written"
    );
    assert_eq!(suite.db.count("notify", "messages", "1 = 1").await, 0);
}

#[tokio::test]
async fn missing_contacts_are_reported_field_by_field() {
    let suite = spawn_suite().await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    let mut req = pin_request("RSSMRA85T10A562S");
    req.contacts = None;
    let status = identity.request_pin(req).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(fields.contains(&"contacts".to_owned()), "{fields:?}");
}

#[tokio::test]
async fn the_six_covid_benefits_are_listed_through_the_gateway() {
    let suite = spawn_suite().await;
    let mut claims = ClaimsServiceClient::new(suite.gateway_channel().await);
    let benefits =
        claims.list_benefits(ListBenefitsRequest {}).await.expect("listed").into_inner().benefits;
    let codes: Vec<&str> = benefits.iter().map(|b| b.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "PROFESSIONISTI_COCOCO",
            "AUTONOMI_AGO",
            "STAGIONALI_TURISMO",
            "AGRICOLI",
            "SPETTACOLO",
            "BONUS_BABY_SITTING"
        ]
    );
    assert!(benefits.iter().all(|b| b.amount_cents == 60_000));
    assert_eq!(benefits[0].ceiling_cents, 20_340_000_000, "€203.4 M for art. 27");
}

#[tokio::test]
async fn an_unknown_service_through_the_gateway_is_unimplemented() {
    let suite = spawn_suite().await;
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(suite.gateway_channel().await);
    // The health client aimed at a path no backend owns: build the call by hand.
    let channel = suite.gateway_channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/acme.unknown.v1.Nothing/Do");
    let codec = tonic_prost::ProstCodec::<ListBenefitsRequest, ListBenefitsRequest>::default();
    let status = grpc
        .unary(tonic::Request::new(ListBenefitsRequest {}), path, codec)
        .await
        .expect_err("no such service");
    assert_eq!(status.code(), Code::Unimplemented);
    // The gateway is still fine afterwards.
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("healthy");
}
