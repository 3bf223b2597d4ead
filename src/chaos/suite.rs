//! The suite a scenario runs against: `sportello up` started as a child of the harness, on its
//! own temporary data directory, on SQLite or on a PostgreSQL database made for the run, with the
//! demo register, registry and staff; its four services found by the addresses `up` prints and
//! by their processes (children of `up`).

use crate::staff::DemoAccount;
use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sportello_platform::cli::LISTENING;
use sqlx::{Connection, Executor};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;

/// The services of a suite, as `up` names them.
pub const SERVICES: [&str; 4] = ["gateway", "identity", "claims", "notify"];

pub struct Suite {
    dir: tempfile::TempDir,
    up: Child,
    addrs: HashMap<String, SocketAddr>,
    /// The PostgreSQL database made for the run, and the server's admin URL to drop it with.
    postgres: Option<(String, String)>,
    staff: Vec<DemoAccount>,
}

impl Suite {
    /// Starts a suite; `tweak` may set variables or flags of `sportello up` (limits a scenario
    /// needs) before it starts.
    pub async fn start(
        options: &super::Options,
        tweak: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let data = dir.path().join("data");
        let postgres = match &options.database_url {
            Some(admin) => Some(create_database(admin).await?),
            None => None,
        };
        // Made before `up` starts, so that the harness knows the passwords `up` reads back.
        let (staff, _) = crate::staff::demo_accounts(&data)?;
        let exe = std::env::current_exe().context("locating the sportello binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("up").arg("--data-dir").arg(&data).arg("--listen").arg("127.0.0.1:0");
        // No configuration file of the working directory leaks into the run.
        cmd.arg("--config").arg(dir.path().join("sportello.toml"));
        if let Some((url, _)) = &postgres {
            cmd.arg("--database-url").arg(url);
        }
        cmd.env("RUST_LOG", "warn");
        // Every service on a free port: others on the machine may hold the default ones.
        for service in ["IDENTITY", "CLAIMS", "NOTIFY"] {
            cmd.env(format!("SPORTELLO_{service}__LISTEN"), "127.0.0.1:0");
        }
        tweak(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut up = cmd.spawn().context("starting sportello up")?;
        // The suite's log, kept beside its data for a violation to be looked into.
        let log_path = dir.path().join("up.log");
        let stderr = up.stderr.take().context("up's stderr")?;
        tokio::spawn(async move {
            let Ok(mut log) = tokio::fs::File::create(&log_path).await else { return };
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                use tokio::io::AsyncWriteExt;
                let _ = log.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
        let stdout = up.stdout.take().context("up's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = HashMap::new();
        let started = tokio::time::timeout(Duration::from_secs(120), async {
            while addrs.len() < SERVICES.len() {
                let Some(line) = lines.next_line().await? else {
                    bail!("sportello up exited before the suite listened")
                };
                if let Some(rest) = line.strip_prefix(LISTENING) {
                    let mut words = rest.split_whitespace();
                    let (Some(name), Some(addr)) = (words.next(), words.next()) else { continue };
                    addrs.insert(name.to_owned(), addr.parse()?);
                }
            }
            Ok(())
        })
        .await;
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the suite did not listen within 120 s"),
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut suite = Self { dir, up, addrs, postgres, staff };
        // `up` prints the addresses before the databases are migrated and before each service has
        // learnt identity-svc's keys: a scenario's first call would be refused UNAVAILABLE.
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        for name in SERVICES {
            while !serving(suite.addr(name)).await {
                let ended = suite.up.try_wait().ok().flatten();
                if ended.is_some() || tokio::time::Instant::now() > until {
                    suite.print_log_tail(40);
                    match ended {
                        Some(status) => bail!("sportello up ended ({status}) before {name} served"),
                        None => bail!("{name} was not serving within 120 s"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(suite)
    }

    /// Where service `name` listens.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// `http://…` of service `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// The suite's data directory (databases on SQLite, sinks, spool, keys).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `up`'s log (every service's stderr).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("up.log")
    }

    /// Prints the last `lines` lines of the suite's log (which goes with the suite's temporary
    /// directory when it stops), for a failed run to be looked into.
    pub fn print_log_tail(&self, lines: usize) {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        eprintln!("last lines of the suite's log:");
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }

    /// The demo staff accounts (operator, patronato, back office) and their passwords.
    pub fn staff(&self) -> &[DemoAccount] {
        &self.staff
    }

    /// The database URL the services use: PostgreSQL's, or `None` on SQLite.
    pub fn database_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(url, _)| url.as_str())
    }

    /// The process id of `sportello up` itself.
    pub fn up_pid(&self) -> Option<u32> {
        self.up.id()
    }

    /// The process id of service `name` as `up` runs it now (a restarted one has a new id).
    pub fn pid(&self, name: &str) -> Option<u32> {
        children(self.up_pid()?).into_iter().find(|&pid| service_of(pid).as_deref() == Some(name))
    }

    /// Peak resident memory of service `name`'s current process, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self, name: &str) -> Option<u64> {
        crate::cpu::status_kib(self.pid(name)?, "VmHWM:")
    }

    /// Stops the suite (SIGTERM, each service drains) and drops the run's database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.up.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.up.wait()).await.is_err() {
            self.kill_all();
        }
        if let Some((url, admin)) = &self.postgres {
            drop_database(admin, url).await?;
        }
        Ok(())
    }

    /// SIGKILL to the services and then to `up` (which cannot pass on a SIGKILL of its own).
    fn kill_all(&mut self) {
        if let Some(up) = self.up.id() {
            for pid in children(up) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let _ = self.up.start_kill();
    }
}

impl Drop for Suite {
    /// A scenario that failed or panicked leaves no service running.
    fn drop(&mut self) {
        if matches!(self.up.try_wait(), Ok(None)) {
            self.kill_all();
        }
    }
}

/// Whether the process at `addr` says SERVING (a gateway says it once every backend does).
pub async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else { return false };
    let Ok(channel) = endpoint.connect_timeout(Duration::from_millis(200)).connect().await else {
        return false;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest { service: String::new() };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), health.check(check)).await,
        Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32
    )
}

/// The process ids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())
        .collect()
}

/// The service a `sportello SERVICE …` process runs: its first argument.
fn service_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let arg = cmdline.split(|&b| b == 0).nth(1)?;
    Some(String::from_utf8_lossy(arg).into_owned())
}

/// Makes a database of its own for the run on the server of `admin`; returns its URL and the
/// admin URL.
async fn create_database(admin: &str) -> anyhow::Result<(String, String)> {
    sqlx::any::install_default_drivers();
    let name = format!("chaos_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(admin).await.context("connecting to PostgreSQL")?;
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    conn.close().await?;
    let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
    Ok((format!("{base}/{name}"), admin.to_owned()))
}

async fn drop_database(admin: &str, url: &str) -> anyhow::Result<()> {
    let name = url.rsplit('/').next().unwrap_or_default();
    let mut conn = sqlx::AnyConnection::connect(admin).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
    conn.close().await?;
    Ok(())
}
