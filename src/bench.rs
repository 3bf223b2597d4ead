//! `sportello bench`: a closed-loop load generator for any Sportello deployment. Each scenario
//! runs the same load once straight at the service and once through the gateway, and prints
//! throughput, latency percentiles and the gateway/direct ratio. Bounded in time and in clients,
//! and meant for loopback or a test deployment, never production.

use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::claims::v1::ListBenefitsRequest;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to drive.
    #[arg(value_enum, default_value = "list-benefits")]
    scenario: Scenario,
    /// The service itself (for list-benefits: claims-svc).
    #[arg(long, default_value = "http://127.0.0.1:50053")]
    direct: String,
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    gateway: String,
    /// Concurrent clients, each with one call in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long each target is measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Unmeasured load before each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Scenario {
    /// ClaimsService/ListBenefits, a cheap read.
    ListBenefits,
}

/// What one measurement found.
#[derive(Debug)]
struct Figures {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true).connect().await?);
    }
    Ok(out)
}

async fn drive(url: &str, args: &BenchArgs, run_for: Duration) -> anyhow::Result<Figures> {
    let channels = channels(url, args.connections).await?;
    let start = Instant::now();
    let until = start + run_for;
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let mut client = ClaimsServiceClient::new(channels[i % channels.len()].clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < until {
                    let t0 = Instant::now();
                    match client.list_benefits(ListBenefitsRequest {}).await {
                        Ok(_) => {
                            ok += 1;
                            lat.push(t0.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (ok, errors, lat)
            })
        })
        .collect();
    let mut figures =
        Figures { ok: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    for w in workers {
        let (ok, errors, lat) = w.await?;
        figures.ok += ok;
        figures.errors += errors;
        figures.latencies_us.extend(lat);
    }
    figures.elapsed = start.elapsed();
    figures.latencies_us.sort_unstable();
    Ok(figures)
}

async fn measure(label: &str, url: &str, args: &BenchArgs) -> anyhow::Result<Figures> {
    drive(url, args, args.warmup).await?;
    let f = drive(url, args, args.duration).await?;
    println!(
        "{label:<8} {url:<26} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2}",
        f.ok,
        f.errors,
        f.rate(),
        f.percentile_ms(0.50),
        f.percentile_ms(0.99)
    );
    Ok(f)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!(
            "{:?}: {} concurrent clients over {} connections, {:?} per target (after {:?} warm-up)",
            args.scenario, args.concurrency, args.connections, args.duration, args.warmup
        );
        println!(
            "{:<8} {:<26} {:>9} {:>7} {:>10} {:>9} {:>9}",
            "target", "address", "requests", "errors", "req/s", "p50 ms", "p99 ms"
        );
        let direct = measure("direct", &args.direct, &args).await?;
        let gateway = measure("gateway", &args.gateway, &args).await?;
        println!("gateway/direct throughput: {:.1}%", 100.0 * gateway.rate() / direct.rate());
        Ok(())
    })
}
