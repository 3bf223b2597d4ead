//! Several instances of one service behind one setting. A backend is named by one URL or a
//! comma-separated list of them; each URL's host is resolved again and again (a Kubernetes
//! headless Service's name resolves to one address per ready pod), every address found is an
//! instance, and each instance's own health is followed, so that calls go only to instances that
//! say SERVING. Among those, a call goes to the less busy of two picked at random (the "power of
//! two choices"), which spreads load as well as least-busy-of-all without a scan or a lock.

use crate::health::{self, Dependency, Seen};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One `scheme://host:port` a backend setting names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: http::uri::Scheme,
    pub host: String,
    pub port: u16,
}

/// Parses a backend setting: one URL, or several separated by commas.
pub fn targets(urls: &str) -> Result<Vec<Target>, String> {
    let targets: Vec<Target> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|url| {
            let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                return Err(format!("{url}: not an absolute URL"));
            };
            let port = authority.port_u16().unwrap_or(if *scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
            let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
            Ok(Target { scheme: scheme.clone(), host, port })
        })
        .collect::<Result<_, _>>()?;
    if targets.is_empty() {
        return Err(format!("{urls:?}: no URL"));
    }
    Ok(targets)
}

/// How long one name's lookup may take before the last answer is kept.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How a pool finds and watches its instances.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// The health name asked of each instance ("" for the instance as a whole).
    pub health_name: String,
    /// How often names are resolved again.
    pub resolve_every: Duration,
    /// The longest wait between two attempts at an instance's health that could not be reached.
    pub health_interval: Duration,
}

/// One instance of a backend, and what the pool knows of it.
pub struct Instance<T> {
    pub addr: SocketAddr,
    /// `host:port` for a call's URI.
    pub authority: http::uri::Authority,
    /// What the pool's owner calls the instance with.
    pub conn: T,
    /// The setting's URL it was found under.
    pub target: Target,
    serving: AtomicBool,
    /// Answering health checks, whatever it says.
    reachable: AtomicBool,
    in_flight: AtomicUsize,
    stop: CancellationToken,
}

impl<T> Instance<T> {
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// `scheme://address:port`, to reach this very instance.
    pub fn url(&self) -> String {
        format!("{}://{}", self.target.scheme, self.authority)
    }
}

/// An instance chosen for one call, counted as busy until dropped.
pub struct Picked<T>(Arc<Instance<T>>);

impl<T> std::ops::Deref for Picked<T> {
    type Target = Instance<T>;
    fn deref(&self) -> &Instance<T> {
        &self.0
    }
}

impl<T> Drop for Picked<T> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type Make<T> = dyn Fn(SocketAddr) -> T + Send + Sync;

/// The instances a balancer of its own should hold, by address, with the URL to reach each.
pub type Wanted = std::collections::BTreeMap<SocketAddr, String>;

/// The instances of one backend.
pub struct Pool<T> {
    targets: Vec<Target>,
    settings: PoolSettings,
    make: Box<Make<T>>,
    instances: RwLock<Arc<Vec<Arc<Instance<T>>>>>,
    any_serving: watch::Sender<bool>,
    wanted: watch::Sender<Wanted>,
    shutdown: CancellationToken,
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("targets", &self.targets).finish_non_exhaustive()
    }
}

/// The instances calls should go to: the SERVING ones, or while none is, those that answer.
fn preferred<'a, T>(
    instances: impl Iterator<Item = &'a Arc<Instance<T>>> + Clone,
) -> Vec<&'a Arc<Instance<T>>> {
    let serving: Vec<_> = instances.clone().filter(|i| i.is_serving()).collect();
    if !serving.is_empty() {
        return serving;
    }
    instances.filter(|i| i.reachable.load(Ordering::Relaxed)).collect()
}

impl<T: Send + Sync + 'static> Pool<T> {
    /// A pool of the instances `urls` names, each reached through what `make` builds for its
    /// address; found and followed until `shutdown`.
    pub fn new(
        urls: &str,
        settings: PoolSettings,
        make: impl Fn(SocketAddr) -> T + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let targets = targets(urls).map_err(anyhow::Error::msg)?;
        let pool = Arc::new(Self {
            targets,
            settings,
            make: Box::new(make),
            instances: RwLock::default(),
            any_serving: watch::channel(false).0,
            wanted: watch::channel(Wanted::new()).0,
            shutdown,
        });
        // Addresses written as such are instances at once; names wait for the first lookup.
        let literal: Vec<(SocketAddr, Target)> = pool
            .targets
            .iter()
            .filter_map(|t| Some((SocketAddr::new(t.host.parse().ok()?, t.port), t.clone())))
            .collect();
        pool.update(literal);
        if pool.targets.iter().any(|t| t.host.parse::<std::net::IpAddr>().is_err()) {
            tokio::spawn(pool.clone().resolve_until_shutdown());
        }
        Ok(pool)
    }

    /// Whether any instance is SERVING, as it changes.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.any_serving.subscribe()
    }

    /// The instances a balancer of its own (tonic's) should hold, as they change: those that
    /// are SERVING, or while none is, those that answer at all (a service calls the others also
    /// while they are not ready: notify fetches identity's keys, which identity needs notify
    /// ready to be ready itself).
    pub fn wanted(&self) -> watch::Receiver<Wanted> {
        self.wanted.subscribe()
    }

    /// A health dependency on this backend: up while any instance is.
    pub fn dependency(&self, service: impl Into<String>) -> Dependency {
        Dependency::signal(service, self.serving())
    }

    /// The less busy of two SERVING instances picked at random, leaving out `tried`. When none
    /// is SERVING, the instances that answer at all, and when none answers, any: a backend's own
    /// refusal says more than the gateway's guess, and an instance back from a restart takes
    /// calls before its health is asked again (Envoy's "panic routing", for the same reasons).
    /// `None` when every instance has been tried.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Picked<T>> {
        let all = self.instances.read().unwrap_or_else(|p| p.into_inner()).clone();
        let untried = || all.iter().filter(|i| !tried.contains(&i.addr));
        let mut candidates = preferred(untried());
        if candidates.is_empty() {
            candidates = untried().collect();
        }
        let chosen = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            n => {
                use rand::Rng;
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let load = |i: usize| candidates[i].in_flight.load(Ordering::Relaxed);
                candidates[if load(b) < load(a) { b } else { a }]
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked(chosen.clone()))
    }

    async fn resolve_until_shutdown(self: Arc<Self>) {
        // What each name last resolved to: a lookup that fails says nothing about the
        // instances, so a DNS hiccup keeps them rather than dropping them.
        let mut last: Vec<Vec<SocketAddr>> = vec![Vec::new(); self.targets.len()];
        loop {
            for (target, known) in self.targets.iter().zip(&mut last) {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => *known = addrs.collect(),
                    Ok(Err(e)) => {
                        tracing::warn!(host = %target.host, error = %e, "backend name not resolved")
                    }
                    Err(_) => tracing::warn!(host = %target.host, "backend name lookup timed out"),
                }
            }
            let found = self
                .targets
                .iter()
                .zip(&last)
                .flat_map(|(t, addrs)| addrs.iter().map(move |a| (*a, t.clone())))
                .collect();
            self.update(found);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(self.settings.resolve_every) => {}
            }
        }
    }

    /// Makes `found` the pool's instances: new addresses get an instance (and a health follower),
    /// gone ones are stopped; calls already on them finish.
    fn update(self: &Arc<Self>, found: Vec<(SocketAddr, Target)>) {
        let mut instances = self.instances.write().unwrap_or_else(|p| p.into_inner());
        let mut old: HashMap<SocketAddr, Arc<Instance<T>>> =
            instances.iter().map(|i| (i.addr, i.clone())).collect();
        let mut next = Vec::with_capacity(found.len());
        for (addr, target) in found {
            if next.iter().any(|i: &Arc<Instance<T>>| i.addr == addr) {
                continue;
            }
            if let Some(kept) = old.remove(&addr) {
                next.push(kept);
                continue;
            }
            let Ok(authority) = addr.to_string().parse::<http::uri::Authority>() else {
                continue;
            };
            let instance = Arc::new(Instance {
                addr,
                authority,
                conn: (self.make)(addr),
                target,
                serving: AtomicBool::new(false),
                reachable: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                stop: self.shutdown.child_token(),
            });
            self.follow(&instance);
            tracing::info!(%addr, "backend instance found");
            next.push(instance);
        }
        for gone in old.values() {
            tracing::info!(addr = %gone.addr, "backend instance gone");
            gone.stop.cancel();
        }
        *instances = Arc::new(next);
        drop(instances);
        self.recount();
    }

    fn follow(self: &Arc<Self>, instance: &Arc<Instance<T>>) {
        let Ok(channel) = crate::client::channel(&instance.url()) else {
            return;
        };
        let dep = Dependency::peer(self.settings.health_name.clone(), channel);
        // The follower keeps the pool alive until shutdown: it may be the pool's only owner (a
        // service's readiness holds just the pool's signal).
        let pool = self.clone();
        let watched = Arc::downgrade(instance);
        let report = move |seen: Seen| {
            let Some(instance) = watched.upgrade() else {
                return;
            };
            let reachable = seen != Seen::Unreachable;
            let up = seen == Seen::Serving;
            let was_reachable = instance.reachable.swap(reachable, Ordering::Relaxed);
            if instance.serving.swap(up, Ordering::Relaxed) != up || was_reachable != reachable {
                tracing::info!(addr = %instance.addr, ?seen, "backend instance health");
                pool.recount();
            }
        };
        tokio::spawn(health::follow(
            dep,
            report,
            self.settings.health_interval,
            instance.stop.clone(),
        ));
    }

    /// Publishes what the instances now say. Read inside the senders' closures, so that of two
    /// reports racing, the later publication is of the later state.
    fn recount(&self) {
        let current = || self.instances.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.any_serving.send_if_modified(|v| {
            let up = current().iter().any(|i| i.is_serving());
            std::mem::replace(v, up) != up
        });
        self.wanted.send_if_modified(|v| {
            let all = current();
            let wanted: Wanted =
                preferred(all.iter()).into_iter().map(|i| (i.addr, i.url())).collect();
            let changed = *v != wanted;
            *v = wanted;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_names_one_backend_or_several_separated_by_commas() {
        let one = targets("http://127.0.0.1:50051").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].host.as_str(), one[0].port), ("127.0.0.1", 50051));
        let many = targets("http://a:1, http://identity.sportello.svc:50051,").unwrap();
        assert_eq!(
            many.iter().map(|t| (t.host.as_str(), t.port)).collect::<Vec<_>>(),
            [("a", 1), ("identity.sportello.svc", 50051)]
        );
        assert_eq!(targets("http://[::1]:7").unwrap()[0].host, "::1");
        assert!(targets("").is_err());
        assert!(targets("identity:50051").is_err());
    }

    /// How many instances the pool knows, and how many of them are SERVING.
    fn census<T>(pool: &Pool<T>) -> (usize, usize) {
        let all = pool.instances.read().unwrap().clone();
        (all.len(), all.iter().filter(|i| i.is_serving()).count())
    }

    /// A pool's settings in a test: names resolved every `resolve_every`, health not retried.
    fn settings(resolve_every: Duration) -> PoolSettings {
        PoolSettings {
            health_name: String::new(),
            resolve_every,
            health_interval: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn calls_go_to_serving_instances_first_and_to_the_less_busy_of_two() {
        let stop = CancellationToken::new();
        let settings = settings(Duration::from_secs(60));
        let pool =
            Pool::new("http://127.0.0.1:1,http://127.0.0.1:2", settings, |a| a, stop.clone())
                .unwrap();
        assert_eq!(census(&pool), (2, 0));
        let all = pool.instances.read().unwrap().clone();
        // Nothing known to answer: any instance is tried rather than none.
        assert!(pool.pick(&[]).is_some());
        all[1].reachable.store(true, Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(pool.pick(&[]).unwrap().addr, all[1].addr, "one that answers first");
        }
        all[0].serving.store(true, Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(pool.pick(&[]).unwrap().addr, all[0].addr, "one that is SERVING first");
        }
        all[1].serving.store(true, Ordering::Relaxed);
        let busy = pool.pick(&[all[1].addr]).unwrap();
        assert_eq!(busy.addr, all[0].addr);
        // With the first one busy, the less busy of the two is always the second.
        for _ in 0..20 {
            assert_eq!(pool.pick(&[]).unwrap().addr, all[1].addr);
        }
        drop(busy);
        assert!(pool.pick(&[all[0].addr, all[1].addr]).is_none());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_balancer_of_its_own_holds_the_serving_instances_or_while_none_is_those_that_answer()
    {
        let stop = CancellationToken::new();
        let urls = "http://127.0.0.1:1,http://127.0.0.1:2";
        let pool =
            Pool::new(urls, settings(Duration::from_secs(60)), |_| (), stop.clone()).unwrap();
        let wanted = pool.wanted();
        let held = || wanted.borrow().keys().map(|a| a.port()).collect::<Vec<_>>();
        assert!(held().is_empty(), "nothing answers yet");
        let all = pool.instances.read().unwrap().clone();
        all[0].reachable.store(true, Ordering::Relaxed);
        all[1].reachable.store(true, Ordering::Relaxed);
        pool.recount();
        assert_eq!(held(), [1, 2], "starting: both answer, neither is SERVING");
        assert!(!*pool.serving().borrow());
        all[1].serving.store(true, Ordering::Relaxed);
        pool.recount();
        assert_eq!(held(), [2], "only the SERVING one");
        assert!(*pool.serving().borrow());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_host_name_stands_for_every_address_it_resolves_to() {
        let stop = CancellationToken::new();
        let settings = settings(Duration::from_millis(50));
        let pool = Pool::new("http://localhost:7", settings, |a| a, stop.clone()).unwrap();
        assert_eq!(census(&pool).0, 0, "a name waits for its lookup");
        for _ in 0..100 {
            if census(&pool).0 > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all = pool.instances.read().unwrap().clone();
        assert!(!all.is_empty(), "localhost resolved");
        assert!(all.iter().all(|i| i.addr.ip().is_loopback() && i.addr.port() == 7));
        stop.cancel();
    }
}
