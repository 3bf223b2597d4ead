//! A request whose bytes cannot be read is the caller's error: INVALID_ARGUMENT, never INTERNAL.
//!
//! tonic answers INTERNAL when it cannot read a request: a message that does not decode
//! (invalid UTF-8 in a string, a wrong wire type, bytes cut short), a frame cut short, no
//! message at all, a compression flag without an encoding. gRPC's status guide files those under
//! INTERNAL; for Sportello a caller's bytes must never look like a failure of ours, because
//! INTERNAL is what the alerts count and what says "a bug to look into". `sportello chaos hostile`
//! found every service answering INTERNAL to such requests, directly and through the gateway.
//!
//! tonic has no hook for its own answers, so they are recognised here by the messages tonic
//! gives them (the tests below break if a tonic upgrade rewords one). A handler's own INTERNAL
//! always says "internal error" and is left alone.
//!
//! tonic also takes a request that ends right after a frame's header, its message missing, for
//! a stream that ended cleanly: an import would commit without its last chunk (and with the
//! row that chunk completed cut short). So the request body's gRPC framing is followed here,
//! and a body that ends inside a frame ends with an INVALID_ARGUMENT error instead.

use bytes::Bytes;
use http_body::Frame;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::{Code, Status};
use tower::Service;

/// How tonic's answers to a request it could not read begin.
const UNREADABLE: &[&str] = &[
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "protocol error: received message with",
];

/// The INVALID_ARGUMENT that replaces tonic's INTERNAL answer in `headers`, if it is one.
fn refusal(headers: &http::HeaderMap) -> Option<Status> {
    let status = Status::from_header_map(headers)?;
    let unreadable = UNREADABLE.iter().any(|p| status.message().starts_with(p));
    (status.code() == Code::Internal && unreadable).then(|| {
        Status::invalid_argument(format!("the request cannot be read: {}", status.message()))
    })
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct RequestFaults<S> {
    inner: S,
}

impl<S> RequestFaults<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

type Reply = http::Response<tonic::body::Body>;

/// A request body whose gRPC framing is followed, so that its end inside a frame is an error.
struct Framed {
    inner: tonic::body::Body,
    /// The header of the frame being read, as far as it has come.
    header: Vec<u8>,
    /// Bytes of the current frame's message still to come.
    left: u64,
}

/// A gRPC frame's header: the compression flag and the message's length.
const HEADER: usize = 5;

impl Framed {
    fn follow(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = data.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(HEADER - self.header.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == HEADER {
                let len = [self.header[1], self.header[2], self.header[3], self.header[4]];
                self.left = u64::from(u32::from_be_bytes(len));
                self.header.clear();
            }
        }
    }

    fn cut_short(&self) -> bool {
        !self.header.is_empty() || self.left > 0
    }
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.follow(data);
                }
            }
            Poll::Ready(None) if self.cut_short() => {
                // Once: the body is over.
                self.header.clear();
                self.left = 0;
                return Poll::Ready(Some(Err(Status::invalid_argument(
                    "the request cannot be read: its last message is cut short",
                ))));
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && !self.cut_short()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for RequestFaults<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Reply>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let req =
            req.map(|inner| tonic::body::Body::new(Framed { inner, header: Vec::new(), left: 0 }));
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut reply = answer.await?;
            // tonic answers a request it cannot read before any message goes out: the status
            // is in the headers (a trailers-only response).
            if let Some(refusal) = refusal(reply.headers()) {
                let headers = reply.headers_mut();
                for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                    headers.remove(name);
                }
                if refusal.add_header(headers).is_err() {
                    tracing::warn!("could not rewrite an unreadable request's answer");
                }
            }
            Ok(reply)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use sportello_proto::identity::v1 as id;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    /// A residents service whose import reads every message (as identity-svc's does) and whose
    /// lookup answers at once.
    #[derive(Clone, Default)]
    struct Residents;

    #[tonic::async_trait]
    impl id::residents_service_server::ResidentsService for Residents {
        async fn import_residents(
            &self,
            request: tonic::Request<tonic::Streaming<id::ImportResidentsRequest>>,
        ) -> Result<tonic::Response<id::ImportResidentsResponse>, Status> {
            let mut stream = request.into_inner();
            while stream.message().await?.is_some() {}
            Ok(tonic::Response::new(id::ImportResidentsResponse::default()))
        }

        async fn batch_get_resident_names(
            &self,
            _: tonic::Request<id::BatchGetResidentNamesRequest>,
        ) -> Result<tonic::Response<id::BatchGetResidentNamesResponse>, Status> {
            Ok(tonic::Response::new(id::BatchGetResidentNamesResponse::default()))
        }
    }

    async fn serve() -> (tonic::transport::Channel, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let routes = tonic::service::Routes::new(
            id::residents_service_server::ResidentsServiceServer::new(Residents),
        );
        let settings = crate::server::ServerSettings::on(addr);
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { crate::server::run("test", listener, routes, &settings, shutdown).await }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        (channel, shutdown)
    }

    /// Posts `body` as the request of `path`; the gRPC code of the answer.
    async fn post(channel: &tonic::transport::Channel, path: &str, body: &[u8]) -> Code {
        use http_body_util::BodyExt;
        let request = http::Request::post(path)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            ))))
            .expect("request");
        let mut channel = channel.clone();
        futures::future::poll_fn(|cx| Service::poll_ready(&mut channel, cx)).await.expect("ready");
        let reply = Service::call(&mut channel, request).await.expect("an answer");
        if let Some(status) = Status::from_header_map(reply.headers()) {
            return status.code();
        }
        let trailers = reply.into_body().collect().await.expect("body").trailers().cloned();
        Status::from_header_map(&trailers.expect("trailers")).expect("a status").code()
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    const LOOKUP: &str = "/sportello.identity.v1.ResidentsService/BatchGetResidentNames";
    const IMPORT: &str = "/sportello.identity.v1.ResidentsService/ImportResidents";

    #[tokio::test]
    async fn a_fiscal_code_of_invalid_utf8_is_the_callers_error_not_an_internal_one() {
        let (channel, shutdown) = serve().await;
        // fiscal_codes (field 1) = bytes that are not UTF-8.
        let invalid = frame(&[0x0a, 0x03, b'R', 0xff, 0xfe]);
        assert_eq!(post(&channel, LOOKUP, &invalid).await, Code::InvalidArgument);
        assert_eq!(post(&channel, LOOKUP, &frame(&[])).await, Code::Ok, "a valid message");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_request_cut_short_or_missing_or_wrongly_flagged_is_refused_as_invalid() {
        let (channel, shutdown) = serve().await;
        let cut = &frame(&[0x0a, 0x10, b'R', b'S'])[..4];
        let mut flagged = frame(&[]);
        flagged[0] = 1; // compressed, with no grpc-encoding
        for (what, body) in [("cut short", cut), ("no message", &[][..]), ("flagged", &flagged)] {
            assert_eq!(post(&channel, LOOKUP, body).await, Code::InvalidArgument, "{what}");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_import_whose_second_message_does_not_decode_is_refused_as_invalid() {
        let (channel, shutdown) = serve().await;
        // ImportResidentsRequest.residents (1) -> ResidentRecord.fiscal_code (2): not UTF-8.
        let mut body = frame(&[]);
        body.extend_from_slice(&frame(&[0x0a, 0x04, 0x12, 0x02, 0xc3, 0x28]));
        assert_eq!(post(&channel, IMPORT, &body).await, Code::InvalidArgument);
        let mut cut = frame(&[]);
        cut.extend_from_slice(&[0, 0, 0]); // half a frame header, then the end of the stream
        assert_eq!(post(&channel, IMPORT, &cut).await, Code::InvalidArgument);
        let whole: Vec<u8> = futures::stream::iter([frame(&[]), frame(&[])]).concat().await;
        assert_eq!(post(&channel, IMPORT, &whole).await, Code::Ok);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_import_that_ends_after_its_last_frames_header_is_refused_not_taken_as_complete() {
        // Found by chaos hostile's broken wire: tonic reads a stream that ends right after a
        // frame's header as one that ended cleanly, and the import would commit without it.
        let (channel, shutdown) = serve().await;
        let mut body = frame(&[]);
        body.extend_from_slice(&[0, 0, 0, 0, 40]); // a 40-byte message announced, never sent
        assert_eq!(post(&channel, IMPORT, &body).await, Code::InvalidArgument);
        let mut half = frame(&[]);
        half.extend_from_slice(&frame(&[0x0a, 0x02, 0x12, 0x00])[..7]);
        assert_eq!(post(&channel, IMPORT, &half).await, Code::InvalidArgument);
        // And a unary call whose only message is announced but missing.
        assert_eq!(post(&channel, LOOKUP, &[0, 0, 0, 0, 9]).await, Code::InvalidArgument);
        shutdown.cancel();
    }
}
