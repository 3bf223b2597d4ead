//! A fake SMS provider's HTTP API: records each request and answers as told (an id, an HTTP
//! error status, or nothing at all).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request as the provider got it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The id the provider answered with.
    pub id: String,
    pub authorization: String,
    pub body: serde_json::Value,
}

/// How the provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `200 {"id": "..."}`.
    Accept,
    /// This status, no id.
    Status(u16),
    /// No answer until the client gives up.
    Hang,
}

#[derive(Clone)]
pub struct FakeSmsProvider {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    reply: Arc<Mutex<Reply>>,
}

impl FakeSmsProvider {
    /// Listens on 127.0.0.1, port 0, until the runtime ends.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let fake = Self {
            addr: listener.local_addr().expect("address"),
            received: Arc::default(),
            reply: Arc::new(Mutex::new(Reply::Accept)),
        };
        let shared = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let fake = fake.clone();
                        async move { fake.answer(request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    /// The API's URL.
    pub fn url(&self) -> String {
        format!("http://{}/v1/sms", self.addr)
    }

    pub fn reply(&self, reply: Reply) {
        *self.reply.lock().expect("lock") = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = request.into_body().collect().await?.to_bytes();
        let reply = *self.reply.lock().expect("lock");
        let status = match reply {
            Reply::Accept => 200,
            Reply::Status(status) => status,
            Reply::Hang => {
                std::future::pending::<()>().await;
                unreachable!("pending never ends")
            }
        };
        let id = format!("prov-{}", uuid::Uuid::new_v4());
        if status == 200 {
            self.received.lock().expect("lock").push(Received {
                id: id.clone(),
                authorization,
                body: serde_json::from_slice(&body).unwrap_or_default(),
            });
        }
        let answer =
            if status == 200 { serde_json::json!({ "id": id }).to_string() } else { String::new() };
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer)))
            .expect("a valid response"))
    }
}
