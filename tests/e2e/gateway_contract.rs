//! What the gateway shows outside callers of the contract: reflection lists only what they may
//! call, and health answers by name for every service it exposes.

use crate::helpers::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

async fn ask(
    suite: &Suite,
    request: MessageRequest,
) -> Result<ServerReflectionResponse, tonic::Status> {
    let mut client = ServerReflectionClient::new(suite.gateway_channel().await);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    Ok(stream.message().await?.expect("one message"))
}

async fn listed_services(suite: &Suite) -> Vec<String> {
    let reply = ask(suite, MessageRequest::ListServices(String::new())).await.expect("list");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

#[tokio::test]
async fn reflection_through_the_gateway_lists_no_internal_method() {
    use prost::Message;
    let suite = spawn_suite().await;
    let services = listed_services(&suite).await;
    let mut methods = Vec::new();
    for service in services.iter().filter(|s| s.starts_with("sportello.")) {
        let reply = ask(&suite, MessageRequest::FileContainingSymbol(service.clone()))
            .await
            .expect("the file of a listed service");
        let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
            panic!("no file for {service}");
        };
        for encoded in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(encoded.as_slice()).expect("file");
            for s in &file.service {
                for m in &s.method {
                    methods.push(format!("/{}.{}/{}", file.package(), s.name(), m.name()));
                }
            }
        }
    }
    assert!(methods.iter().any(|m| m.ends_with("NotifyService/ListMyMessages")), "{methods:?}");
    for method in &methods {
        assert_ne!(
            gateway::policy::access(method),
            gateway::policy::Access::Internal,
            "{method} is listed"
        );
    }
    let hidden = ask(
        &suite,
        MessageRequest::FileContainingSymbol(
            "sportello.notify.v1.NotifyService.EnqueueMessage".into(),
        ),
    )
    .await
    .expect_err("an internal method is unknown to outside callers");
    assert_eq!(hidden.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_through_the_gateway_answers_for_every_service_it_exposes() {
    let suite = spawn_suite().await;
    let services = listed_services(&suite).await;
    assert!(services.iter().any(|s| s == "sportello.identity.v1.ContactCenterService"));
    for service in services.iter().filter(|s| s.starts_with("sportello.")) {
        wait_for_status(suite.gateway.addr, service, ServingStatus::Serving).await;
    }
}

/// A public call through the gateway, as an anonymous portal visitor makes it.
async fn list_benefits(gateway: std::net::SocketAddr) -> Result<(), tonic::Status> {
    use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
    let request = sportello_proto::claims::v1::ListBenefitsRequest {};
    ClaimsServiceClient::new(connect(gateway).await).list_benefits(request).await.map(|_| ())
}

#[tokio::test]
async fn a_backend_that_stops_is_unavailable_through_the_gateway_and_served_again_once_back() {
    let db = TestDb::new().await;
    let ports = Ports::reserve().await;
    let (gateway_addr, claims_addr) = (ports.gateway.1, ports.claims.1);
    let configs = Configs::new(&db, [gateway_addr, ports.identity.1, claims_addr, ports.notify.1]);
    let claims_config = configs.claims.clone();
    let gateway = Running::start(ports.gateway, |l, s| gateway::serve(configs.gateway, l, s));
    let claims = Running::start(ports.claims, |l, s| claims_svc::serve(configs.claims, l, s));
    eventually("the catalogue served", std::time::Duration::from_secs(10), || async {
        list_benefits(gateway_addr).await.is_ok()
    })
    .await;

    claims.shut_down().await;
    let refused = list_benefits(gateway_addr).await.expect_err("claims-svc is down");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let listener = tokio::net::TcpListener::bind(claims_addr).await.expect("the same address");
    let claims =
        Running::start((listener, claims_addr), |l, s| claims_svc::serve(claims_config, l, s));
    eventually("the catalogue served again", std::time::Duration::from_secs(10), || async {
        list_benefits(gateway_addr).await.is_ok()
    })
    .await;
    claims.shut_down().await;
    gateway.shut_down().await;
}
