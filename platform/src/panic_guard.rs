//! The panic guard every server wears: a handler or layer that panics costs its caller one
//! INTERNAL answer, never the connection or the process. The log names the RPC that panicked and
//! nothing of its request or of the panic's message (which may quote what the request held).

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What a caller gets when a handler panics: INTERNAL with a neutral message, as a proper gRPC
/// answer (trailers-only).
fn answer_panic(rpc: &http::Uri) -> http::Response<tonic::body::Body> {
    tracing::error!(rpc = rpc.path(), "a handler panicked; answered INTERNAL");
    tonic::Status::internal("internal error").into_http()
}

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct PanicGuardLayer;

impl<S> Layer<S> for PanicGuardLayer {
    type Service = PanicGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PanicGuard { inner }
    }
}

/// See [`PanicGuardLayer`].
#[derive(Clone, Debug)]
pub struct PanicGuard<S> {
    inner: S,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for PanicGuard<S>
where
    S: Service<http::Request<B>, Response = Reply>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A `Uri` clone shares its bytes: naming the RPC costs no copy on the happy path.
        let rpc = req.uri().clone();
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(call) => Box::pin(
                AssertUnwindSafe(call)
                    .catch_unwind()
                    .map(move |outcome| outcome.unwrap_or_else(|_| Ok(answer_panic(&rpc)))),
            ),
            Err(_) => Box::pin(futures::future::ready(Ok(answer_panic(&rpc)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn grpc_status(reply: &Reply) -> Option<&str> {
        reply.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_handler_that_panics_while_answering_gets_internal() {
        let handler = tower::service_fn(|_req: http::Request<()>| async {
            if true {
                panic!("PIN 12345678");
            }
            Ok::<Reply, std::convert::Infallible>(http::Response::default())
        });
        let request = http::Request::builder().uri("/pkg.Svc/Method").body(()).expect("request");
        let reply = PanicGuardLayer.layer(handler).oneshot(request).await.expect("an answer");
        assert_eq!(grpc_status(&reply), Some("13"));
    }

    #[derive(Clone)]
    struct PanicsWhenCalled;

    impl Service<http::Request<()>> for PanicsWhenCalled {
        type Response = Reply;
        type Error = std::convert::Infallible;
        type Future = futures::future::Ready<Result<Reply, Self::Error>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: http::Request<()>) -> Self::Future {
            panic!("initial PIN AÀÀÀÀÀÀÀB")
        }
    }

    #[tokio::test]
    async fn a_layer_that_panics_before_answering_gets_internal() {
        let request = http::Request::builder().uri("/pkg.Svc/Method").body(()).expect("request");
        let reply = PanicGuardLayer.layer(PanicsWhenCalled).oneshot(request).await.expect("answer");
        assert_eq!(grpc_status(&reply), Some("13"));
    }
}
