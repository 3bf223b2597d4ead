//! `sportello`: the command users run. `sportello up` starts the whole suite (one child process
//! per service, so each exports its own telemetry as its own `service.name`); `sportello <service>`
//! runs one service; `sportello bench` drives load against any deployment and prints figures.

mod bench;
mod supervisor;

use clap::{Parser, Subcommand};
use sportello_platform::cli::{run_service_with, ServiceArgs};

#[derive(Debug, Parser)]
#[command(
    name = "sportello",
    version,
    about = "Sportello: identity, claims and notifications for a social-security institute"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole suite: notify, identity, claims and the gateway.
    Up(supervisor::UpArgs),
    /// Run the gateway alone.
    Gateway(ServiceArgs),
    /// Run identity-svc alone.
    Identity(ServiceArgs),
    /// Run claims-svc alone.
    Claims(ServiceArgs),
    /// Run notify-svc alone.
    Notify(ServiceArgs),
    /// Drive load against a running deployment and print throughput and latency.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up(args) => supervisor::up(args),
        Command::Gateway(args) => run_service_with(&args, gateway::serve),
        Command::Identity(args) => run_service_with(&args, identity_svc::serve),
        Command::Claims(args) => run_service_with(&args, claims_svc::serve),
        Command::Notify(args) => run_service_with(&args, notify_svc::serve),
        Command::Bench(args) => bench::run(args),
    }
}
