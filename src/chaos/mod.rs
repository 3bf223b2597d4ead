//! `sportello chaos SCENARIO`: the reliability harness. Each scenario starts a whole suite of its
//! own (`sportello up` as a child, on SQLite in a temporary directory or on a fresh PostgreSQL
//! database), drives it as click day would, prints its figures, and exits non-zero on any
//! violation of what Sportello promises. `--short` is the version `.ci/run` runs.

mod crash;
mod hostile;
mod isolation;
mod overload;
pub mod suite;

use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    options: Options,
}

/// What every scenario is told.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// `postgres://…` of a server where the scenario may create a database of its own (then
    /// dropped); default: SQLite files in a temporary directory.
    #[arg(long, global = true, env = "SPORTELLO_CHAOS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The short version, as CI runs it (a minute or so per scenario).
    #[arg(long, global = true)]
    pub short: bool,
    /// How long the scenario's main phase lasts (default: its own, shorter with --short).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the scenario's random choices, to replay a run (default: random, printed).
    #[arg(long, global = true)]
    pub seed: Option<u64>,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Offered load at 3× capacity, open-loop, through the portal's calling system: goodput,
    /// refusal latency, a cheap read's latency and each service's peak memory.
    Overload,
    /// kill -9 of each process in turn under a mixed load: everything acknowledged is durable,
    /// nothing half-written, ceilings exact, retries converge.
    Crash,
    /// Every RPC of the contract fed malformed and boundary messages from the descriptor set,
    /// with honest calls in between.
    Hostile,
    /// Randomised calls by many citizens, patronati and staff: no cross-citizen read or write,
    /// no staff action without its audit row.
    Isolation,
}

/// What a scenario found: its figures (printed as they are) and its violations (any one fails
/// the run).
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<String>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn figure(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("  {line}");
        self.figures.push(line);
    }

    pub fn violation(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("  VIOLATION: {line}");
        self.violations.push(line);
    }
}

pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.options.seed.unwrap_or_else(rand::random);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let options = Options { seed: Some(seed), ..args.options };
        let name = format!("{:?}", args.scenario).to_lowercase();
        let on = if options.database_url.is_some() { "PostgreSQL" } else { "SQLite" };
        println!(
            "chaos {name} on {on} (seed {seed}{})",
            if options.short { ", short" } else { "" }
        );
        match args.scenario {
            Scenario::Overload => overload::run(&options).await,
            Scenario::Crash => crash::run(&options).await,
            Scenario::Hostile => hostile::run(&options).await,
            Scenario::Isolation => isolation::run(&options).await,
        }
    })?;
    if report.violations.is_empty() {
        println!("PASSED");
        Ok(())
    } else {
        anyhow::bail!("{} violation(s); replay with --seed {seed}", report.violations.len())
    }
}
