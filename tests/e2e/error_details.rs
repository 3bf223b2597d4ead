//! Rich error details are readable by any client: every service's reflection, and the
//! gateway's, serves `google/rpc/error_details.proto` and `google/rpc/status.proto`, so that
//! grpcurl renders BadRequest, ErrorInfo and RetryInfo instead of an opaque blob.

use crate::helpers::*;
use std::net::SocketAddr;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// The names of the files `addr`'s reflection returns for `symbol` (the file and its imports).
async fn files_for(addr: SocketAddr, symbol: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(connect(addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = stream.message().await.expect("reply").expect("one message");
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("{addr} does not know {symbol}: {:?}", reply.message_response);
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            let file: prost_types::FileDescriptorProto =
                prost::Message::decode(bytes.as_slice()).expect("a file descriptor");
            file.name().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_service_and_the_gateway_describe_bad_request_status_and_retry_info() {
    let suite = spawn_suite().await;
    for addr in [suite.gateway.addr, suite.identity.addr, suite.claims.addr, suite.notify.addr] {
        for symbol in ["google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.RetryInfo"] {
            let files = files_for(addr, symbol).await;
            assert!(files.iter().any(|f| f == "google/rpc/error_details.proto"), "{files:?}");
        }
        let files = files_for(addr, "google.rpc.Status").await;
        assert!(files.iter().any(|f| f == "google/rpc/status.proto"), "{files:?}");
    }
}
