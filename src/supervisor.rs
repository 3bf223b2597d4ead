//! `sportello up`: starts one child process per service, in dependency order, wires each to the
//! addresses the others actually got, prints where everything listens, and on Ctrl-C/SIGTERM
//! stops them all, letting each drain. A child that dies (a crash, a kill, or an exit of its own
//! while the suite is not stopping) is started again on the same address after a backoff, while
//! the others keep serving (the gateway answers UNAVAILABLE for it, and its health shows the
//! gap, until it is back); one that dies more than `--max-restarts` times within
//! `--restart-window` stops the whole suite, and `up` exits non-zero naming it: a part that
//! cannot stay up is a fault to look at, not to hide.

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sportello_platform::cli::LISTENING;
use sportello_platform::config::ServiceConfig;
use sportello_platform::service_identity::ServiceKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Flags of `sportello up`; each overrides the configuration file and `SPORTELLO_*` variables.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Configuration file (TOML); default `$SPORTELLO_CONFIG` or `./sportello.toml`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the gateway listens (default 127.0.0.1:50051).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for SQLite files and local spools (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `postgres://…` to keep every service in PostgreSQL (one schema each) instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Do not load the demo register of residents (`identity-svc/data/demo-residents.csv`) and
    /// the demo insured-positions registry (`claims-svc/data/demo-registry.csv`), which `up`
    /// otherwise loads so that a first RequestPin and a first claim work end to end.
    #[arg(long)]
    no_demo_register: bool,
    /// Do not make demo staff accounts. On embedded defaults (no `[identity.staff]`
    /// configured), `up` otherwise makes an operator, a patronato and a back-office account
    /// with random passwords, written once to `<data dir>/demo-staff.txt` (mode 0600).
    #[arg(long)]
    no_demo_staff: bool,
    /// How many times one service may be restarted within `--restart-window`; one crash more
    /// stops the suite.
    #[arg(long, env = "SPORTELLO_UP__MAX_RESTARTS", default_value_t = 5)]
    max_restarts: usize,
    /// The window `--max-restarts` counts crashes in (e.g. `60s`, `5m`).
    #[arg(
        long,
        env = "SPORTELLO_UP__RESTART_WINDOW",
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    restart_window: Duration,
}

/// The first wait before a restart, doubled per crash in a row (each wait a random point in its
/// upper half: 250–500 ms, 500 ms–1 s, …), up to [`RESTART_BACKOFF_MAX_MS`].
const RESTART_BACKOFF_BASE_MS: i64 = 500;
const RESTART_BACKOFF_MAX_MS: i64 = 30_000;
/// A child that ran this long before it died starts its backoff over: it was healthy.
const RAN_WELL: Duration = Duration::from_secs(30);

const DEMO_REGISTER_ENV: &str = "SPORTELLO_IDENTITY__DEMO_REGISTER";
const DEMO_REGISTRY_ENV: &str = "SPORTELLO_CLAIMS__DEMO_REGISTRY";

/// The services `sportello up` runs on one runtime thread by default (see `start`).
const ONE_THREAD_UNDER_UP: [&str; 3] = ["gateway", "identity", "claims"];

/// How much lower than `up`'s own the CPU priority (nice) of identity, claims and notify is,
/// unless configured.
const BACKEND_NICE: i32 = 10;

/// Start order: each service after the ones it calls (their health says so anyway).
const ORDER: [&str; 4] = ["notify", "identity", "claims", "gateway"];

struct Running {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    /// The child's standard input, held open for as long as `up` runs (see `start`); kept
    /// apart from `child` because waiting for a child closes the input it still holds.
    _stdin: tokio::process::ChildStdin,
}

/// Where each service will listen: its configured address, with port 0 resolved to a free port
/// now, so that every service can be told every other's address before any starts (notify
/// needs identity's keys; identity needs notify).
fn plan_addresses(args: &UpArgs) -> anyhow::Result<Vec<(&'static str, SocketAddr)>> {
    let configured = |name: &str| -> anyhow::Result<SocketAddr> {
        Ok(match (name, args.listen) {
            ("gateway", Some(listen)) => listen,
            _ => server_settings(args, name)?.listen,
        })
    };
    ORDER
        .iter()
        .map(|&name| {
            let mut addr = configured(name)?;
            if addr.port() == 0 {
                // Bind and release: the port is free now, and the child binds it a moment later.
                addr = std::net::TcpListener::bind(addr)?.local_addr()?;
            }
            Ok((name, addr))
        })
        .collect()
}

/// The server settings service `name` is configured with (file and environment).
fn server_settings(
    args: &UpArgs,
    name: &str,
) -> anyhow::Result<sportello_platform::server::ServerSettings> {
    let file = sportello_platform::config::file(args.config.as_deref());
    let describe = |e: sportello_platform::config::ConfigError| {
        anyhow::anyhow!(
            "{name}: invalid configuration: {}",
            sportello_platform::config::describe(&e)
        )
    };
    Ok(match name {
        "notify" => notify_svc::Config::load(&file).map_err(describe)?.server,
        "identity" => identity_svc::Config::load(&file).map_err(describe)?.server,
        "claims" => claims_svc::Config::load(&file).map_err(describe)?.server,
        _ => gateway::Config::load(&file).map_err(describe)?.server,
    })
}

/// The public keys of the services that call identity-svc, generated now under each one's data
/// directory where absent (each child then loads its own), so that identity-svc trusts them
/// with no configuration. The data key secrets at rest are sealed under is made here too, in
/// identity's and notify's data directories, before the services start together: two sharing a
/// directory then find one key rather than each make their own.
fn service_keys(args: &UpArgs) -> anyhow::Result<Vec<(&'static str, String)>> {
    let file = sportello_platform::config::file(args.config.as_deref());
    let describe = |e: sportello_platform::config::ConfigError| {
        anyhow::anyhow!("invalid configuration: {}", sportello_platform::config::describe(&e))
    };
    let data_dir = |configured: PathBuf| args.data_dir.clone().unwrap_or(configured);
    let notify_dir = data_dir(notify_svc::Config::load(&file).map_err(describe)?.store.data_dir);
    let identity_dir =
        data_dir(identity_svc::Config::load(&file).map_err(describe)?.store.data_dir);
    for dir in [&identity_dir, &notify_dir] {
        sportello_platform::sealed::Keyring::load_or_generate(dir)?;
    }
    let dirs = [
        (gateway::NAME, data_dir(gateway::Config::load(&file).map_err(describe)?.data_dir)),
        (notify_svc::NAME, notify_dir),
        (
            claims_svc::NAME,
            data_dir(claims_svc::Config::load(&file).map_err(describe)?.store.data_dir),
        ),
    ];
    dirs.into_iter()
        .map(|(name, dir)| Ok((name, ServiceKey::load_or_generate(&dir, name)?.public_key())))
        .collect()
}

/// Variables to set for a child, name and value.
type Environment = Vec<(String, String)>;

/// The demo staff, when no staff is configured and `--no-demo-staff` is not given: the
/// environment that gives them to identity-svc, and what to print at start (the passwords the
/// first time, else where they are).
fn demo_staff(args: &UpArgs) -> anyhow::Result<(Environment, Vec<String>)> {
    let file = sportello_platform::config::file(args.config.as_deref());
    let identity = identity_svc::Config::load(&file).map_err(|e| {
        anyhow::anyhow!(
            "identity: invalid configuration: {}",
            sportello_platform::config::describe(&e)
        )
    })?;
    if args.no_demo_staff || !identity.staff.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let data_dir = args.data_dir.clone().unwrap_or(identity.store.data_dir);
    let (accounts, made_now) = crate::staff::demo_accounts(&data_dir)?;
    let path = crate::staff::demo_file(&data_dir);
    let mut said = vec![String::new()];
    if made_now {
        said.push(format!("Demo staff (shown once; kept in {}, mode 0600):", path.display()));
        for a in &accounts {
            said.push(format!("  {:<17} {}", a.username, a.password));
        }
        said.push("  sportello operator login --username demo-operator".into());
    } else {
        said.push(format!("Demo staff: usernames and passwords in {}", path.display()));
    }
    Ok((crate::staff::demo_env(&accounts)?, said))
}

/// Everything a child is started with, the first time and at each restart.
struct Launch {
    args: UpArgs,
    plan: Vec<(&'static str, SocketAddr)>,
    trusted: Vec<(&'static str, String)>,
    demo_staff: Environment,
}

async fn start(name: &'static str, launch: &Launch) -> anyhow::Result<Running> {
    let Launch { args, plan, trusted, demo_staff } = launch;
    let exe = std::env::current_exe().context("locating the sportello binary")?;
    let mut cmd = Command::new(exe);
    // Its standard input is a pipe `up` holds: when `up` ends, however it ends (SIGKILL
    // included), the pipe closes and the child drains and stops rather than serve unsupervised.
    cmd.arg(name).arg("--until-stdin-closes");
    if let Some(config) = &args.config {
        cmd.arg("--config").arg(config);
    }
    let section = name.to_ascii_uppercase();
    for (other, addr) in plan {
        if *other == name {
            cmd.arg("--listen").arg(addr.to_string());
        } else {
            cmd.env(
                format!("SPORTELLO_{section}__{}_URL", other.to_ascii_uppercase()),
                format!("http://{addr}"),
            );
        }
    }
    if let Some(dir) = &args.data_dir {
        cmd.env("SPORTELLO_DATA_DIR", dir);
    }
    // identity trusts every service that calls it; notify trusts claims-svc (its receipts);
    // claims and notify trust the gateway, which asks them for a citizen's own data.
    for (service, public_key) in trusted {
        let section = match name {
            "identity" => "IDENTITY",
            "notify" if *service == claims_svc::NAME => "NOTIFY",
            "notify" | "claims" if *service == gateway::NAME => &*section,
            _ => continue,
        };
        let service = service.to_ascii_uppercase();
        cmd.env(format!("SPORTELLO_{section}__TRUSTED_SERVICES__{service}"), public_key);
    }
    if let Some(url) = &args.database_url {
        cmd.env("SPORTELLO_DATABASE_URL", url);
    }
    // The services already run side by side as processes, so those whose calls are short
    // (forwarding, cheap reads; identity hashes on threads of its own) get one runtime thread,
    // unless the configuration says otherwise: a call then never hops between threads of a
    // process. notify-svc keeps one per CPU: it renders and sends beside its callers.
    let settings = server_settings(args, name)?;
    if ONE_THREAD_UNDER_UP.contains(&name) && settings.worker_threads.is_none() {
        cmd.env(format!("SPORTELLO_{section}__WORKER_THREADS"), "1");
    }
    // On one machine the gateway must keep the CPU to refuse the excess when the backends
    // saturate it (see `ServerSettings::nice`). Relative to `up`'s own priority: a process may
    // lower its priority but not raise it, so an `up` started with `nice` must not hand its
    // children a priority they cannot take.
    if name != gateway::NAME && settings.nice.is_none() {
        let own = rustix::process::getpriority_process(None).unwrap_or(0);
        let nice = (own + BACKEND_NICE).min(19);
        cmd.env(format!("SPORTELLO_{section}__NICE"), nice.to_string());
    }
    // Loading it is idempotent, so every start may; a variable set by the user wins.
    for (service, variable) in [("identity", DEMO_REGISTER_ENV), ("claims", DEMO_REGISTRY_ENV)] {
        if name == service && !args.no_demo_register && std::env::var_os(variable).is_none() {
            cmd.env(variable, "true");
        }
    }
    if name == "identity" {
        cmd.envs(demo_staff.iter().map(|(k, v)| (k, v)));
    }
    for (option, value) in crate::ALLOCATOR_ENV {
        if std::env::var_os(option).is_none() {
            cmd.env(option, value);
        }
    }
    // Each child names itself in traces (sportello-identity, …); one name for all would hide
    // the hops.
    cmd.env_remove("OTEL_SERVICE_NAME");
    // A group of its own: a terminal's Ctrl-C reaches `up` alone, which stops the children in
    // order; had they heard it too, one exiting first would look like a crash.
    cmd.process_group(0);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    // One terminal, four services: each log line says whose it is.
    let stdin = child.stdin.take().context("child stdin")?;
    let stderr = child.stderr.take().context("child stderr")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{name:>8} | {line}");
        }
    });
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(LISTENING) {
                let addr =
                    rest.split_whitespace().nth(1).context("listening line without address")?;
                return Ok::<SocketAddr, anyhow::Error>(addr.parse()?);
            }
        }
        bail!("{name} exited before listening")
    })
    .await
    .with_context(|| format!("{name} did not start listening within 30 s"))??;
    // Keep draining the child's stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Running { name, addr, child, _stdin: stdin })
}

fn print_banner(running: &[Running], demo_staff: &[String]) {
    for r in running {
        println!("{LISTENING} {} {}", r.name, r.addr);
    }
    let gateway = running.iter().find(|r| r.name == "gateway").map(|r| r.addr);
    println!();
    println!("Sportello is up:");
    for r in running {
        let role = if r.name == "gateway" { "  <- public entry point" } else { "" };
        println!("  {:<9} {}{role}", r.name, r.addr);
    }
    if let Some(gw) = gateway {
        println!();
        println!("Try:");
        println!("  grpcurl -plaintext {gw} list");
        println!("  grpcurl -plaintext {gw} sportello.claims.v1.ClaimsService/ListBenefits");
        println!("  grpcurl -plaintext {gw} grpc.health.v1.Health/Check");
    }
    for line in demo_staff {
        println!("{line}");
    }
    println!();
    println!("Ctrl-C stops everything.");
}

async fn stop_all(running: &mut [Running]) {
    for r in running.iter() {
        terminate(r);
    }
    for r in running.iter_mut() {
        reap(r).await;
    }
}

/// Asks child `r` to stop (SIGTERM: it drains its calls first).
fn terminate(r: &Running) {
    if let Some(pid) = r.child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
}

/// Waits for child `r` to stop, killing it if it takes too long.
async fn reap(r: &mut Running) {
    if tokio::time::timeout(Duration::from_secs(15), r.child.wait()).await.is_err() {
        eprintln!("{} did not stop in time; killing it", r.name);
        let _ = r.child.kill().await;
    }
}

/// How a child ended, as the log says it: "signal 9", "status 0".
fn describe_exit(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => format!("{s}"),
        },
        Err(e) => format!("not waitable: {e}"),
    }
}

/// The restart budget of one service: its crashes within the window, and how many came in a
/// row (each doubling the wait before the next start).
struct Budget {
    max_restarts: usize,
    window: Duration,
    crashes: std::collections::VecDeque<Instant>,
    in_a_row: i64,
}

impl Budget {
    fn new(args: &UpArgs) -> Self {
        Self {
            max_restarts: args.max_restarts,
            window: args.restart_window,
            crashes: Default::default(),
            in_a_row: 0,
        }
    }

    /// Counts a crash of `name` (which had run for `ran`) and says how long to wait before
    /// starting it again, or, when the budget is spent, the error that stops the suite.
    fn crashed(&mut self, name: &str, why: &str, ran: Duration) -> anyhow::Result<Duration> {
        let now = Instant::now();
        self.crashes.push_back(now);
        while self.crashes.front().is_some_and(|&t| now.duration_since(t) > self.window) {
            self.crashes.pop_front();
        }
        let window = format!("{} s", self.window.as_secs());
        let crashes = self.crashes.len();
        if crashes > self.max_restarts {
            let message = format!(
                "{name} crashed {crashes} times within {window} (last: {why}); stopping the suite"
            );
            eprintln!("{message}");
            bail!(message);
        }
        self.in_a_row = if ran >= RAN_WELL { 1 } else { self.in_a_row + 1 };
        let wait = Duration::from_millis(sportello_platform::backoff::backoff_ms(
            self.in_a_row,
            RESTART_BACKOFF_BASE_MS,
            RESTART_BACKOFF_MAX_MS,
        ) as u64);
        eprintln!(
            "{name} exited ({why}); restart {crashes} of {} within {window} in {} ms",
            self.max_restarts,
            wait.as_millis()
        );
        Ok(wait)
    }
}

/// Keeps child `r` running until `stop`: each time it dies, starts it again on the same
/// address after its backoff. Returns `Ok` once stopped (the child drained), or the error that
/// says its restart budget is spent (the child is gone then).
async fn supervise(
    mut r: Running,
    launch: Arc<Launch>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let name = r.name;
    let mut budget = Budget::new(&launch.args);
    loop {
        let started = Instant::now();
        let status = tokio::select! {
            status = r.child.wait() => status,
            _ = stop.cancelled() => {
                terminate(&r);
                reap(&mut r).await;
                return Ok(());
            }
        };
        // A child told to stop by someone else while the suite stops too is not a crash.
        if stop.is_cancelled() {
            return Ok(());
        }
        // Exiting at all while the suite is not stopping is a crash, whatever the status.
        let mut why = describe_exit(&status);
        let mut ran = started.elapsed();
        r = loop {
            let wait = budget.crashed(name, &why, ran)?;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return Ok(()),
            }
            // Dropped when the suite stops meanwhile: the half-started child is killed.
            let restarted = tokio::select! {
                restarted = start(name, &launch) => restarted,
                _ = stop.cancelled() => return Ok(()),
            };
            match restarted {
                Ok(r) => {
                    eprintln!("{name} restarted on {}", r.addr);
                    break r;
                }
                Err(e) => {
                    why = format!("failed to restart: {e:#}");
                    ran = Duration::ZERO;
                }
            }
        };
    }
}

pub fn up(args: UpArgs) -> anyhow::Result<()> {
    // Hashed before the suite's runtime starts (hashing runs one of its own).
    let (demo_staff, demo_said) = demo_staff(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let plan = plan_addresses(&args)?;
        let trusted = service_keys(&args)?;
        let launch = Arc::new(Launch { args, plan, trusted, demo_staff });
        let mut running: Vec<Running> = Vec::new();
        for name in ORDER {
            match start(name, &launch).await {
                Ok(r) => running.push(r),
                Err(e) => {
                    stop_all(&mut running).await;
                    return Err(e);
                }
            }
        }
        print_banner(&running, &demo_said);
        let stop = CancellationToken::new();
        let mut supervisors = tokio::task::JoinSet::new();
        for r in running {
            supervisors.spawn(supervise(r, launch.clone(), stop.clone()));
        }
        let mut outcome = tokio::select! {
            _ = sportello_platform::shutdown::signal() => Ok(()),
            Some(done) = supervisors.join_next() => {
                done.unwrap_or_else(|e| Err(anyhow::anyhow!("a supervisor failed: {e}")))
            }
        };
        // Every other child stops (and drains) now, whether asked to or because one is gone.
        stop.cancel();
        while let Some(done) = supervisors.join_next().await {
            if let (Ok(()), Ok(Err(e))) = (&outcome, done) {
                outcome = Err(e);
            }
        }
        println!("Sportello stopped.");
        outcome
    })
}
