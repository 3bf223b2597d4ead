//! Input crafted to break the parsers: whatever arrives, the answer is a refusal, never a panic.

use crate::helpers::*;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn an_initial_pin_of_sixteen_bytes_but_nine_characters_is_just_a_wrong_pin() {
    let suite = spawn_suite().await;
    let mut identity = IdentityServiceClient::new(suite.gateway_channel().await);
    identity.request_pin(pin_request(ROSSI)).await.expect("issued");
    for initial in ["AÀÀÀÀÀÀÀB", "ÀÀÀÀÀÀÀÀ", "\u{0}\u{7f}ABCDEFGHIJKLMN", ""] {
        let status = identity
            .complete_first_access(id::CompleteFirstAccessRequest {
                fiscal_code: ROSSI.into(),
                initial_pin: initial.into(),
                new_pin: "RMX7K2QA".into(),
            })
            .await
            .expect_err("not the initial PIN");
        assert_eq!(status.code(), Code::Unauthenticated, "{initial:?}: {status:?}");
    }
    // The service is still there.
    assert_eq!(health_of(suite.identity.addr, "").await, Some(ServingStatus::Serving));
}
