//! CPU time per call of the processes a bench drives, read from `/proc`: a figure that stays
//! stable on a noisy machine, where throughput and latency do not.
//!
//! Which processes: those given with `--pid name=PID`, the owners of the ports the bench calls
//! (found through `/proc/net/tcp*` and each process's open sockets), and, when such an owner is
//! a child of `sportello up`, every other service that `sportello up` started. Linux only;
//! elsewhere the bench just prints no CPU figures.

use std::collections::BTreeMap;
use std::time::Duration;

/// Linux reports process CPU time in USER_HZ ticks, which is 100 on every mainstream
/// architecture regardless of the kernel's own tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// A process whose CPU time is measured, by the name it is shown under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub pid: u32,
}

/// Parses `name=PID`.
pub fn parse_pid(s: &str) -> Result<Target, String> {
    let (name, pid) = s.split_once('=').ok_or("expected name=PID")?;
    let pid = pid.trim().parse().map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok(Target { name: name.trim().to_owned(), pid })
}

/// The fields of `/proc/<pid>/stat` after the command name, which may itself hold spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(ticks * 1_000_000 / TICKS_PER_SECOND))
}

/// A `/proc/<pid>/status` field given in kB (`VmHWM:`, `RssAnon:`, …).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect::<Vec<u32>>()
        })
        .unwrap_or_default()
}

/// The name a Sportello process goes by: `sportello claims` → "claims", `claims-svc` → "claims".
fn service_name(pid: u32) -> Option<String> {
    let args = cmdline(pid);
    let exe = std::path::Path::new(args.first()?).file_name()?.to_str()?.to_owned();
    let services = ["gateway", "identity", "claims", "notify"];
    if exe == "sportello" {
        let sub = args.get(1)?;
        return services.contains(&sub.as_str()).then(|| sub.clone());
    }
    let bare = exe.trim_end_matches("-svc");
    services.contains(&bare).then(|| bare.to_owned())
}

fn is_sportello_up(pid: u32) -> bool {
    let args = cmdline(pid);
    let exe = args.first().and_then(|a| std::path::Path::new(a).file_name()?.to_str());
    exe == Some("sportello") && args.get(1).map(String::as_str) == Some("up")
}

/// Socket inodes listening on `port` (IPv4 or IPv6).
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port =
                local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            // 0A is LISTEN.
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// The process listening on `port` on this machine, if one can be seen.
fn port_owner(port: u16) -> Option<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    pids().into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .any(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
        })
    })
}

/// The processes to measure for a bench calling `urls`, plus the explicit ones.
pub fn discover(urls: &[&str], explicit: &[Target]) -> Vec<Target> {
    let mut found: BTreeMap<u32, String> = BTreeMap::new();
    for t in explicit {
        found.insert(t.pid, t.name.clone());
    }
    for url in urls {
        let Some(port) = url
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.host(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1")))
            .and_then(|u| u.port_u16())
        else {
            continue;
        };
        let Some(owner) = port_owner(port) else { continue };
        let name = service_name(owner).unwrap_or_else(|| format!("port {port}"));
        found.entry(owner).or_insert(name);
        // Its siblings under the same `sportello up`: the services it calls cost CPU too.
        if let Some(up) = parent(owner).filter(|p| is_sportello_up(*p)) {
            for pid in pids() {
                if parent(pid) == Some(up) {
                    if let Some(name) = service_name(pid) {
                        found.entry(pid).or_insert(name);
                    }
                }
            }
        }
    }
    found.into_iter().map(|(pid, name)| Target { name, pid }).collect()
}

/// CPU time of each target at one instant.
pub fn snapshot(targets: &[Target]) -> Vec<Option<Duration>> {
    targets.iter().map(|t| cpu_time(t.pid)).collect()
}

/// Prints each target's CPU µs per call between two snapshots.
pub fn report(targets: &[Target], before: &[Option<Duration>], calls: u64, elapsed: Duration) {
    for (t, start) in targets.iter().zip(before) {
        let (Some(start), Some(end)) = (start, cpu_time(t.pid)) else { continue };
        let used = end.saturating_sub(*start);
        println!(
            "         cpu {:<22} {:>8.1} µs/call {:>6.2} cores",
            format!("{}[{}]", t.name, t.pid),
            used.as_micros() as f64 / calls.max(1) as f64,
            used.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_flag_names_a_process() {
        assert_eq!(parse_pid("claims=42"), Ok(Target { name: "claims".into(), pid: 42 }));
        assert!(parse_pid("claims").is_err());
        assert!(parse_pid("claims=x").is_err());
    }

    #[test]
    fn this_process_uses_cpu_and_owns_the_port_it_listens_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(port_owner(port), Some(std::process::id()));
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_time(std::process::id()).expect("own stat") > Duration::ZERO);
    }
}
