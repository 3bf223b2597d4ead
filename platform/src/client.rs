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
        .http2_keep_alive_interval(Duration::from_secs(30))
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
/// host names (resolved again every few seconds), whose instances are each followed and called
/// only while they answer (tonic's power-of-two-choices balancer over them), ready while any of
/// them is SERVING.
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
    let (channel, changes) = Channel::balance_channel(64);
    let settings = PoolSettings {
        health_name: service.to_owned(),
        resolve_every: Duration::from_secs(5),
        health_interval,
    };
    let on_reachable = move |addr: std::net::SocketAddr, target: &crate::balance::Target, up| {
        let change = if up {
            match endpoint(&format!("{}://{addr}", target.scheme)) {
                Ok(endpoint) => Change::Insert(addr, endpoint),
                Err(_) => return,
            }
        } else {
            Change::Remove(addr)
        };
        // Changes are few (an instance coming or going); a full queue means the balancer has
        // stopped, with the service.
        let _ = changes.try_send(change);
    };
    let pool = Pool::watched(urls, settings, on_reachable, shutdown)?;
    Ok(Backend { channel, dependency: pool.dependency(service) })
}

/// Wraps a channel so that its calls are traced.
pub fn traced(channel: Channel) -> TracedChannel {
    RpcTraceLayer::client().layer(channel)
}
