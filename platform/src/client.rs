//! Channels to other Sportello services: lazy (a service starts even when its dependencies are
//! not up yet, and health says so), bounded in connect time, and traced.

use crate::trace_context::{RpcTrace, RpcTraceLayer};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tower::Layer;

/// A channel whose calls carry W3C trace context.
pub type TracedChannel = RpcTrace<Channel>;

/// Builds a lazily connecting channel to `url` (`http://host:port`).
pub fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Wraps a channel so that its calls are traced.
pub fn traced(channel: Channel) -> TracedChannel {
    RpcTraceLayer::client().layer(channel)
}
