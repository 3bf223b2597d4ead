//! Readiness: a service reports SERVING only once it is ready and the services it calls answer
//! SERVING themselves, and goes back to NOT_SERVING when one of them stops answering.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// A service this one calls, by its fully-qualified gRPC service name.
#[derive(Clone, Debug)]
pub struct Dependency {
    pub service: String,
    pub source: Source,
}

/// Where a dependency's health comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Asked of the one peer behind this channel.
    Peer(Channel),
    /// Already followed elsewhere (a pool of instances says whether any of them is up).
    Signal(tokio::sync::watch::Receiver<bool>),
}

impl Dependency {
    /// `service` as the peer behind `channel` reports it.
    pub fn peer(service: impl Into<String>, channel: Channel) -> Self {
        Self { service: service.into(), source: Source::Peer(channel) }
    }

    /// `service`, up while `up` says so.
    pub fn signal(service: impl Into<String>, up: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { service: service.into(), source: Source::Signal(up) }
    }
}

/// What a service needs before it is ready, beyond its database: services that must answer
/// SERVING, and a condition of its own (e.g. "has the keys to check tokens").
#[derive(Clone, Default)]
pub struct Needs {
    pub dependencies: Vec<Dependency>,
    pub condition: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Needs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Needs").field("dependencies", &self.dependencies).finish_non_exhaustive()
    }
}

impl From<Vec<Dependency>> for Needs {
    fn from(dependencies: Vec<Dependency>) -> Self {
        Self { dependencies, condition: None }
    }
}

/// What the readiness loop reports, and on which names.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Names that are SERVING exactly when every dependency is: "" (the server as a whole) and
    /// the service's own gRPC service names.
    pub own: Vec<String>,
    /// The dependencies to check.
    pub dependencies: Vec<Dependency>,
    /// Also publish each dependency's status under its own name (the gateway does, so that a
    /// client can ask it about any backend service).
    pub mirror: bool,
    /// A condition of the service's own that must hold too.
    pub condition: Option<Condition>,
}

/// A readiness condition of a service's own.
#[derive(Clone)]
pub struct Condition(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition")
    }
}

/// The health name that is SERVING whenever the process answers at all, whatever its
/// dependencies: for liveness probes, which must not restart a service only because its
/// database or another service is down (readiness, on "", says that).
pub const LIVENESS: &str = "sportello.liveness";

/// Sets every name NOT_SERVING but [`LIVENESS`]; called before the server starts.
pub async fn starting(reporter: &HealthReporter, readiness: &Readiness) {
    reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
    for name in readiness.own.iter().chain(readiness.dependencies.iter().map(|d| &d.service)) {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
}

/// How soon a dependency that could not be reached is tried again, at first: quick, so that a
/// suite started all at once is SERVING as soon as its parts are, and doubled on every miss up
/// to the `interval` given to [`track`].
const FIRST_RETRY: Duration = Duration::from_millis(20);

/// How often a service's own readiness condition is re-evaluated while it does not hold (a
/// condition cannot announce itself; it is cheap to ask).
const CONDITION_POLL: Duration = Duration::from_millis(20);

/// Follows the dependencies' health and publishes the outcome until `shutdown`. Each dependency
/// is followed through a `grpc.health.v1.Health/Watch` stream, so a change there is a change
/// here at once, not at the next poll; a dependency that cannot be reached is retried with
/// backoff from 20 ms up to `interval`.
pub async fn track(
    reporter: HealthReporter,
    readiness: Readiness,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(vec![false; readiness.dependencies.len()]);
    let tx = Arc::new(tx);
    let followers = shutdown.child_token();
    for (i, dep) in readiness.dependencies.iter().enumerate() {
        let report = {
            let tx = tx.clone();
            move |up: bool| {
                tx.send_if_modified(|all| std::mem::replace(&mut all[i], up) != up);
            }
        };
        match &dep.source {
            Source::Peer(_) => {
                let report = move |seen: Seen| report(seen == Seen::Serving);
                tokio::spawn(follow(dep.clone(), report, interval, followers.clone()));
            }
            Source::Signal(up) => {
                tokio::spawn(relay_signal(up.clone(), report, followers.clone()));
            }
        }
    }
    let mut mirrored: Vec<Option<bool>> = vec![None; readiness.dependencies.len()];
    let mut last: Option<bool> = None;
    loop {
        let results = rx.borrow_and_update().clone();
        if readiness.mirror {
            for ((dep, up), seen) in readiness.dependencies.iter().zip(&results).zip(&mut mirrored)
            {
                if *seen != Some(*up) {
                    reporter.set_service_status(&dep.service, status(*up)).await;
                    *seen = Some(*up);
                }
            }
        }
        let own_ready = readiness.condition.as_ref().is_none_or(|Condition(holds)| holds());
        let all_up = own_ready && results.iter().all(|up| *up);
        if last != Some(all_up) {
            for name in &readiness.own {
                reporter.set_service_status(name, status(all_up)).await;
            }
            if all_up {
                tracing::info!("ready: SERVING");
            } else {
                let down: Vec<&str> = readiness
                    .dependencies
                    .iter()
                    .zip(&results)
                    .filter(|(_, up)| !**up)
                    .map(|(d, _)| d.service.as_str())
                    .collect();
                if own_ready {
                    tracing::warn!(?down, "NOT_SERVING: waiting for dependencies");
                } else {
                    tracing::warn!(?down, "NOT_SERVING: not ready itself yet");
                }
            }
            last = Some(all_up);
        }
        let recheck = if own_ready { interval } else { CONDITION_POLL };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rx.changed() => {}
            _ = tokio::time::sleep(recheck) => {}
        }
    }
    followers.cancel();
    // A draining server should receive no new traffic from load balancers.
    for name in &readiness.own {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
}

/// Reports what a signal says, as it changes, until `stop` or the signal's end.
async fn relay_signal(
    mut up: tokio::sync::watch::Receiver<bool>,
    report: impl Fn(bool),
    stop: CancellationToken,
) {
    loop {
        report(*up.borrow_and_update());
        tokio::select! {
            () = stop.cancelled() => return,
            changed = up.changed() => if changed.is_err() { return },
        }
    }
}

/// What following a peer's health saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Serving,
    /// The peer answers, and says it is not serving (starting, draining, or missing something).
    NotServing,
    /// The peer does not answer at all.
    Unreachable,
}

/// Follows one peer's health through a Watch stream, reporting every change, and opens a new
/// stream (with backoff) whenever it cannot be opened or ends. A [`Source::Signal`] dependency
/// reports nothing here.
pub async fn follow(
    dep: Dependency,
    report: impl Fn(Seen),
    max_backoff: Duration,
    stop: CancellationToken,
) {
    let Source::Peer(channel) = &dep.source else {
        return;
    };
    let mut backoff = FIRST_RETRY;
    // A peer that accepts connections but never answers must count as down, not hang us.
    let open_timeout = max_backoff.max(Duration::from_millis(500));
    loop {
        let mut client = HealthClient::new(channel.clone());
        let request = HealthCheckRequest { service: dep.service.clone() };
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = tokio::time::timeout(open_timeout, client.watch(request)) => opened,
        };
        match &opened {
            Ok(Err(e)) => {
                tracing::debug!(service = %dep.service, error = %e, "health watch refused")
            }
            Err(_) => tracing::debug!(service = %dep.service, "health watch timed out"),
            Ok(Ok(_)) => tracing::debug!(service = %dep.service, "health watch open"),
        }
        if let Ok(Ok(response)) = opened {
            let mut stream = response.into_inner();
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    message = stream.message() => message,
                };
                match message {
                    Ok(Some(reply)) => {
                        let up = reply.status == WireStatus::Serving as i32;
                        report(if up { Seen::Serving } else { Seen::NotServing });
                        if up {
                            backoff = FIRST_RETRY;
                        }
                    }
                    // The stream ended (the peer is stopping, or the connection broke).
                    _ => break,
                }
            }
        }
        report(Seen::Unreachable);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff.max(FIRST_RETRY));
    }
}

fn status(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
