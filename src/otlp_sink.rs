//! `sportello otlp-sink`: an OTLP trace receiver for measuring the cost of tracing, in a process
//! of its own as a collector would be. It accepts every export, counts the spans by the
//! `service.name` that sent them, and prints the counts every second and at the end, so that a
//! bench run with `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at it shows whether every span arrived.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Where to receive OTLP over gRPC.
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: SocketAddr,
    /// Stop after this long (default: until interrupted).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<Mutex<BTreeMap<String, u64>>>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut counts = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let n: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
            *counts.entry(service).or_default() += n as u64;
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!("receiving OTLP traces on {}", listener.local_addr()?);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let report = async {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let counts = sink.spans.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let line: Vec<String> = counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
                println!("{:>5.0}s spans {}", started.elapsed().as_secs_f64(), line.join(" "));
                if args.duration.is_some_and(|d| started.elapsed() >= d) {
                    return;
                }
            }
        };
        tokio::select! {
            served = server => served?,
            () = report => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}
