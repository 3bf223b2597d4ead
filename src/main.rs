//! `sportello`: the command users run. `sportello up` starts the whole suite (one child process
//! per service, so each exports its own telemetry as its own `service.name`); `sportello <service>`
//! runs one service; `sportello import residents FILE` loads the register of residents;
//! `sportello bench` drives load against any deployment and prints figures; `sportello backup DIR`
//! copies a running suite's data; `sportello operator …` is the contact center's client.

mod atomic_file;
mod backup;
mod bench;
mod chaos;
mod clickday;
mod cpu;
mod export_bench;
mod gateway_addr;
mod import;
mod import_registry;
mod keys;
mod operator;
mod otlp_sink;
mod staff;
mod stdout;
mod supervisor;
mod upload_bench;
mod watch_bench;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, read from the environment when a process starts (the image sets them
/// too; a variable set by the user wins). By default mimalloc commits its arenas whole and keeps
/// freed memory until it next allocates: an idle service held ~20 MB it never used, and
/// identity-svc the 19 MiB of an argon2 hash long done. With these the whole suite idles in
/// ~51 MB (summed PSS) rather than ~120 MB, at no cost in CPU per call that a bench can see.
const ALLOCATOR_ENV: [(&str, &str); 2] =
    [("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "100")];
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
    /// Load data in bulk through the gateway: `sportello import residents FILE`.
    Import(import::ImportArgs),
    /// Drive load against a running deployment and print throughput and latency.
    Bench(bench::BenchArgs),
    /// The reliability harness: start a suite of its own and put it through overload, crashes,
    /// hostile input or an isolation check; prints figures, exits non-zero on a violation.
    Chaos(chaos::ChaosArgs),
    /// Copy a running suite's SQLite databases (one consistent snapshot each), keys and upload
    /// files into a new directory, to start a suite on later.
    Backup(backup::BackupArgs),
    /// Make (or keep) the session, service and data keys under DIR/keys and print the
    /// environment that makes the services trust each other when they run as separate
    /// processes; `keys rotate-secrets DIR` adds a new data key for secrets at rest.
    Keys(keys::KeysArgs),
    /// Receive OTLP traces and count the spans each service sends, to measure tracing's cost
    /// (point `OTEL_EXPORTER_OTLP_ENDPOINT` at it).
    OtlpSink(otlp_sink::SinkArgs),
    /// Read a staff password from standard input and print only its argon2id hash, the value
    /// of `password_hash` under `[identity.staff.<username>]` (`sportello staff add` writes the
    /// whole account into the configuration instead).
    HashPassword,
    /// The contact center's work through the gateway: log in, file a caller's PIN request,
    /// look a credential up, the 12-hour queue, re-send, revoke, unlock, the audit trail.
    Operator(operator::OperatorArgs),
    /// Administer staff accounts in identity-svc's database.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Print the text of a letter from the print spool (`data/spool/<id>.pdf`), as the citizen
    /// reads it: on `sportello up`, how the second half of a PIN arrives.
    Letter {
        /// The letter's PDF file.
        file: std::path::PathBuf,
    },
    /// Read one uploaded file from standard input under hard limits and say what it is (run by
    /// identity-svc as a child process, never by hand).
    #[command(name = "file-probe", hide = true)]
    FileProbe,
}

#[derive(Debug, Subcommand)]
enum StaffCommand {
    /// Add (or with --force replace) the account USERNAME with ROLE in the configuration file,
    /// the password read from the terminal or standard input; the suite uses it once restarted.
    Add(staff::AddArgs),
    /// Lift the lockout of USERNAME at once; the audit trail records who did it.
    Unlock {
        username: String,
        /// Configuration file (TOML); default `$SPORTELLO_CONFIG` or `./sportello.toml`.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up(args) => supervisor::up(args),
        Command::Gateway(args) => run_service_with(&args, gateway::serve),
        Command::Identity(args) => run_service_with(&args, identity_svc::serve),
        Command::Claims(args) => run_service_with(&args, claims_svc::serve),
        Command::Notify(args) => run_service_with(&args, notify_svc::serve),
        Command::Import(args) => import::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Operator(args) => operator::run(args),
        Command::OtlpSink(args) => otlp_sink::run(args),
        Command::HashPassword => staff::hash_password(),
        Command::Staff(StaffCommand::Add(args)) => staff::add(args),
        Command::Staff(StaffCommand::Unlock { username, config }) => {
            unlock_staff(&username, config)
        }
        Command::Letter { file } => {
            let pdf = std::fs::read(&file)?;
            let text = sportello_platform::pdf::text_of(&pdf)
                .map_err(|e| anyhow::anyhow!("{}: not a readable PDF: {e}", file.display()))?;
            println!("{}", text.trim_end());
            Ok(())
        }
        Command::FileProbe => std::process::exit(sportello_platform::probe::child_main()),
    }
}

fn unlock_staff(username: &str, config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use sportello_platform::config::ServiceConfig;
    let file = sportello_platform::config::file(config.as_deref());
    let config = identity_svc::Config::load(&file)
        .map_err(|e| anyhow::anyhow!("{}", sportello_platform::config::describe(&e)))?;
    let by = format!("admin:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let found = runtime.block_on(identity_svc::unlock_staff(&config, username, &by))?;
    anyhow::ensure!(found, "no staff account {username:?}");
    stdout::outln!("{username}: unlocked");
    Ok(())
}
