//! Channels to other Sportello services: lazy (a service starts even when its dependencies are
//! not up yet, and health says so), bounded in connect time, and traced. A setting may name
//! several instances, or a name that resolves to several ([`crate::balance`]): calls are then
//! spread over those that report SERVING.

use crate::balance::{Pool, PoolSettings};
use crate::health::Dependency;
use crate::trace_context::{RpcTrace, RpcTraceLayer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tower::Layer;

/// A channel whose calls carry W3C trace context.
pub type TracedChannel = RpcTrace<Channel>;

/// Builds a lazily connecting channel to one instance at `url` (`http://host:port`).
pub fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(url)?.connect_lazy())
}

fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        // A peer gone without a reset (a node lost) is noticed in seconds, not in a minute.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// Another Sportello service as this one calls it: the channel, and the readiness dependency
/// on it.
#[derive(Clone, Debug)]
pub struct Backend {
    pub channel: Channel,
    pub dependency: Dependency,
}

/// The service `service` (its fully-qualified gRPC name, asked of each instance's health) at
/// `urls`: one URL with an address, called and followed as the one peer; or several URLs, or
/// host names (resolved again every 5 s), whose instances are each followed and called through
/// tonic's power-of-two-choices balancer over those that are SERVING (or, while none is, those
/// that answer), ready while any of them is SERVING.
pub fn backend(
    service: &str,
    urls: &str,
    health_interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Backend> {
    let targets = crate::balance::targets(urls).map_err(anyhow::Error::msg)?;
    if let [one] = targets.as_slice() {
        if one.host.parse::<std::net::IpAddr>().is_ok() {
            let channel = channel(urls.trim().trim_end_matches(','))?;
            let dependency = Dependency::peer(service, channel.clone());
            return Ok(Backend { channel, dependency });
        }
    }
    let (channel, changes) = Channel::balance_channel(16);
    let settings = PoolSettings {
        health_name: service.to_owned(),
        resolve_every: Duration::from_secs(5),
        health_interval,
    };
    let pool = Pool::new(urls, settings, |_| (), shutdown.clone())?;
    tokio::spawn(feed_balancer(pool.wanted(), changes, shutdown));
    Ok(Backend { channel, dependency: pool.dependency(service) })
}

/// Keeps tonic's balancer holding what the pool wants, sending it the difference whenever that
/// changes. The balancer takes changes only while it has calls to route, so a send may wait:
/// the wanted set is read afresh after each one, and the balancer ends up with the latest.
async fn feed_balancer(
    mut wanted: tokio::sync::watch::Receiver<crate::balance::Wanted>,
    changes: tokio::sync::mpsc::Sender<Change<std::net::SocketAddr, Endpoint>>,
    shutdown: CancellationToken,
) {
    let mut held = crate::balance::Wanted::new();
    loop {
        let now = wanted.borrow_and_update().clone();
        let gone: Vec<_> = held.keys().filter(|a| !now.contains_key(a)).copied().collect();
        let new: Vec<_> = now.iter().filter(|(a, _)| !held.contains_key(a)).collect();
        for (addr, url) in new {
            let Ok(endpoint) = endpoint(url) else { continue };
            tokio::select! {
                () = shutdown.cancelled() => return,
                sent = changes.send(Change::Insert(*addr, endpoint)) => if sent.is_err() { return },
            }
            held.insert(*addr, url.clone());
        }
        for addr in gone {
            tokio::select! {
                () = shutdown.cancelled() => return,
                sent = changes.send(Change::Remove(addr)) => if sent.is_err() { return },
            }
            held.remove(&addr);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = wanted.changed() => if changed.is_err() { return },
        }
    }
}

/// Wraps a channel so that its calls are traced.
pub fn traced(channel: Channel) -> TracedChannel {
    RpcTraceLayer::client().layer(channel)
}
