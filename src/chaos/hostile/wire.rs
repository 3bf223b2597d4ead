//! The wire broken below the messages: gRPC frames cut short or flagged wrongly, the wrong
//! content-type, and HTTP/2 garbage on a raw connection.

use bytes::Bytes;
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::Service;
use tonic::transport::Channel;

/// How a hand-made HTTP/2 request ended.
#[derive(Debug)]
pub struct Outcome {
    pub what: &'static str,
    pub http: Option<u16>,
    pub grpc: Option<i32>,
    pub message: String,
}

impl Outcome {
    /// An answer that blames the server for the client's bytes.
    pub fn is_failure(&self) -> bool {
        matches!(self.grpc, Some(2 | 13 | 14 | 15)) || self.http.is_some_and(|s| s >= 500)
    }

    pub fn code_name(&self) -> String {
        match (self.grpc, self.http) {
            (Some(code), _) => format!("{:?}", tonic::Code::from_i32(code)),
            (None, Some(http)) => format!("HTTP {http}"),
            (None, None) => "stream reset".into(),
        }
    }
}

/// What a hand-made request is, its content-type, its other headers and its body.
type HttpCase<'a> = (&'static str, Option<&'a str>, Vec<(&'a str, String)>, Bytes);

fn frame(flag: u8, declared: u32, payload: &[u8]) -> Bytes {
    let mut out = vec![flag];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out.into()
}

/// Requests to `path` whose framing or headers are wrong.
pub async fn http_cases(channel: &Channel, path: &str, rng: &mut StdRng) -> Vec<Outcome> {
    let junk: Vec<u8> = (0..32).map(|_| rng.random()).collect();
    let grpc = "application/grpc";
    let cases: Vec<HttpCase<'_>> = vec![
        (
            "content-type application/json",
            Some("application/json"),
            vec![],
            Bytes::from_static(b"{}"),
        ),
        ("content-type text/plain", Some("text/plain"), vec![], Bytes::from_static(b"hello")),
        ("no content-type", None, vec![], frame(0, 0, b"")),
        (
            "content-type application/grpc+json",
            Some("application/grpc+json"),
            vec![],
            frame(0, 2, b"{}"),
        ),
        ("an empty body (no message)", Some(grpc), vec![], Bytes::new()),
        ("half a frame header", Some(grpc), vec![], Bytes::from_static(&[0, 0, 0])),
        ("a frame cut short", Some(grpc), vec![], frame(0, 1000, &junk[..10])),
        ("a message announced and never sent", Some(grpc), vec![], frame(0, 40, b"")),
        ("a frame declaring 4 GiB", Some(grpc), vec![], frame(0, u32::MAX, &junk)),
        ("a compressed frame without grpc-encoding", Some(grpc), vec![], frame(1, 32, &junk)),
        ("compression flag 7", Some(grpc), vec![], frame(7, 0, b"")),
        ("gzip garbage", Some(grpc), vec![("grpc-encoding", "gzip".into())], frame(1, 32, &junk)),
        (
            "an unknown grpc-encoding",
            Some(grpc),
            vec![("grpc-encoding", "zstd-9000".into())],
            frame(1, 32, &junk),
        ),
        ("garbage protobuf", Some(grpc), vec![], frame(0, 32, &junk)),
        ("two messages to a unary method", Some(grpc), vec![], {
            let mut b = frame(0, 0, b"").to_vec();
            b.extend_from_slice(&frame(0, 0, b""));
            b.into()
        }),
        ("a message and trailing bytes", Some(grpc), vec![], {
            let mut b = frame(0, 0, b"").to_vec();
            b.extend_from_slice(&[0, 0]);
            b.into()
        }),
        (
            "grpc-timeout garbage",
            Some(grpc),
            vec![("grpc-timeout", "99999999999H".into())],
            frame(0, 0, b""),
        ),
        (
            "a negative grpc-timeout",
            Some(grpc),
            vec![("grpc-timeout", "-1S".into())],
            frame(0, 0, b""),
        ),
        (
            "an authorization header of 12 KB",
            Some(grpc),
            vec![("authorization", format!("Bearer {}", "A".repeat(12 << 10)))],
            frame(0, 0, b""),
        ),
        (
            "authorization without Bearer",
            Some(grpc),
            vec![("authorization", "Basic Zm9vOmJhcg==".into())],
            frame(0, 0, b""),
        ),
        ("a 1 MB junk header", Some(grpc), vec![("x-junk", "j".repeat(1 << 20))], frame(0, 0, b"")),
    ];
    let mut out = Vec::new();
    for (what, content_type, headers, body) in cases {
        let mut builder =
            http::Request::builder().method(http::Method::POST).uri(path).header("te", "trailers");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let Ok(req) = builder.body(tonic::body::Body::new(http_body_util::Full::new(body))) else {
            continue;
        };
        out.push(send(channel.clone(), what, req).await);
    }
    let wrong_method = http::Request::builder()
        .method(http::Method::GET)
        .uri(path)
        .body(tonic::body::Body::empty())
        .expect("a request");
    out.push(send(channel.clone(), "GET instead of POST", wrong_method).await);
    out
}

async fn send(
    mut channel: Channel,
    what: &'static str,
    req: http::Request<tonic::body::Body>,
) -> Outcome {
    let call = async {
        futures::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        let response = channel.call(req).await?;
        let http = response.status().as_u16();
        let header = |h: &http::HeaderMap, name: &str| {
            h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let mut grpc = header(response.headers(), "grpc-status");
        let mut message = header(response.headers(), "grpc-message");
        if grpc.is_none() {
            if let Ok(collected) = response.into_body().collect().await {
                if let Some(trailers) = collected.trailers() {
                    grpc = header(trailers, "grpc-status");
                    message = header(trailers, "grpc-message");
                }
            }
        }
        Ok::<_, tonic::transport::Error>((http, grpc.and_then(|g| g.parse().ok()), message))
    };
    match tokio::time::timeout(Duration::from_secs(15), call).await {
        Ok(Ok((http, grpc, message))) => Outcome {
            what,
            http: Some(http),
            grpc,
            message: message.unwrap_or_default().chars().take(160).collect(),
        },
        Ok(Err(e)) => Outcome { what, http: None, grpc: None, message: e.to_string() },
        Err(_) => Outcome { what, http: None, grpc: None, message: "no answer in 15 s".into() },
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Raw connections that are not HTTP/2, or break it after the preface; each is closed by the
/// server or left after a second. Returns how each ended.
pub async fn garbage(addr: SocketAddr, rng: &mut StdRng) -> Vec<String> {
    let random: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    let mut cases: Vec<Vec<u8>> = vec![
        random.clone(),
        b"GET / HTTP/1.1\r\nHost: sportello\r\n\r\n".to_vec(),
        [PREFACE, &random[..1024]].concat(),
        // A SETTINGS frame declaring more than it carries, then silence.
        [PREFACE, &[0, 0, 0xff, 4, 0, 0, 0, 0, 0]].concat(),
        // HEADERS on stream 1 with an HPACK block of garbage.
        [PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0], &[0, 0, 16, 1, 5, 0, 0, 0, 1], &random[..16]]
            .concat(),
        // DATA on a stream never opened.
        [PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0], &[0, 0, 4, 0, 1, 0, 0, 0, 7], &random[..4]]
            .concat(),
        // A WINDOW_UPDATE of zero, which the protocol forbids.
        [PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0], &[0, 0, 4, 8, 0, 0, 0, 0, 0], &[0, 0, 0, 0]]
            .concat(),
        // The preface cut short.
        PREFACE[..10].to_vec(),
    ];
    // And a run of random frames after a proper preface and SETTINGS.
    let mut frames = [PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat();
    for _ in 0..20 {
        let len: usize = rng.random_range(0..64);
        frames.extend_from_slice(&[0, 0, len as u8, rng.random_range(0..10), rng.random()]);
        frames.extend_from_slice(&rng.random::<u32>().to_be_bytes());
        frames.extend_from_slice(&random[..len]);
    }
    cases.push(frames);
    let mut out = Vec::new();
    for bytes in cases {
        let ended = async {
            let mut conn = tokio::net::TcpStream::connect(addr).await?;
            conn.write_all(&bytes).await?;
            let mut sink = vec![0u8; 8192];
            loop {
                if conn.read(&mut sink).await? == 0 {
                    return Ok::<_, std::io::Error>("closed by the server");
                }
            }
        };
        let what = match tokio::time::timeout(Duration::from_secs(1), ended).await {
            Ok(Ok(what)) => what,
            Ok(Err(_)) => "reset by the server",
            Err(_) => "left open",
        };
        out.push(what.to_owned());
    }
    out
}
