//! The life of one service process: runtime, telemetry, configuration, listener, signals.
//! Shared by each service's own binary and by `sportello <service>`.

use crate::config::ServiceConfig;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The line a service prints on stdout once it listens: `sportello-listening <name> <addr>`.
/// `sportello up` reads it to learn the address of a service started on port 0.
pub const LISTENING: &str = "sportello-listening";

/// Flags of a service binary run on its own.
#[derive(Clone, Debug, Default, clap::Parser)]
pub struct ServiceArgs {
    /// Configuration file (TOML); default `$SPORTELLO_CONFIG` or `./sportello.toml`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on, overriding the configuration (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Also stop (draining, as on SIGTERM) when standard input closes: `sportello up` holds
    /// its children's standard input open, so that they stop with it however it ends, even
    /// killed with SIGKILL, rather than serve on with nobody to supervise them.
    #[arg(long, hide = true)]
    pub until_stdin_closes: bool,
}

/// Parses the command line and runs one service until SIGINT/SIGTERM.
pub fn run_service<C, Fut>(
    serve: impl FnOnce(C, TcpListener, CancellationToken) -> Fut,
) -> anyhow::Result<()>
where
    C: ServiceConfig,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_service_with(&<ServiceArgs as clap::Parser>::parse(), serve)
}

/// Runs one service with the given flags until SIGINT/SIGTERM.
pub fn run_service_with<C, Fut>(
    args: &ServiceArgs,
    serve: impl FnOnce(C, TcpListener, CancellationToken) -> Fut,
) -> anyhow::Result<()>
where
    C: ServiceConfig,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = C::NAME;
    let config = C::load(&crate::config::file(args.config.as_deref())).map_err(|e| {
        anyhow::anyhow!("{name}: invalid configuration: {}", crate::config::describe(&e))
    })?;
    config.server().apply_nice().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.server().worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let _telemetry = crate::telemetry::init(&format!("sportello-{name}"))?;
        let addr = args.listen.unwrap_or(config.server().listen);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        tracing::info!(%local, "{name} listening");
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{LISTENING} {name} {local}")?;
            out.flush()?;
        }
        let shutdown = crate::shutdown::on_signal();
        if args.until_stdin_closes {
            crate::shutdown::on_stdin_closed(shutdown.clone());
        }
        serve(config, listener, shutdown).await
    })
}
