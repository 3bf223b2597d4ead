//! The benefit catalogue is served from memory, and a change to it shows without a restart.

use crate::helpers::*;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::claims::v1::ListBenefitsRequest;
use std::time::Duration;

async fn titles(suite: &Suite) -> Vec<String> {
    let mut claims = ClaimsServiceClient::new(suite.gateway_channel().await);
    let reply = claims.list_benefits(ListBenefitsRequest {}).await.expect("benefits");
    reply.into_inner().benefits.into_iter().map(|b| b.title).collect()
}

#[tokio::test]
async fn a_change_to_the_catalogue_reaches_citizens_within_the_refresh_interval() {
    let suite = spawn_suite_with(|c| c.claims.catalogue_refresh = Duration::from_millis(100)).await;
    let before = titles(&suite).await;
    assert_eq!(before.len(), 6, "the six benefits of DL 18/2020: {before:?}");

    // A back-office change, made straight in the database as another instance would.
    let sql = format!(
        "UPDATE {} SET title = $1 WHERE code = 'AGRICOLI'",
        suite.db.table("claims", "benefits")
    );
    let pool = suite.db.pool("claims").await;
    sqlx::query(&sql).bind("Indennità operai agricoli").execute(&pool).await.expect("update");

    eventually("the new title to be served", Duration::from_secs(5), || async {
        titles(&suite).await.iter().any(|t| t == "Indennità operai agricoli")
    })
    .await;
}
