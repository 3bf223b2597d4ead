//! gateway: Sportello's only public entry point. A generic gRPC reverse proxy that routes each
//! call by its package to the backend service that owns it, so a service can add RPCs without
//! the gateway changing; it serves health (overall and per backend service) and reflection for
//! the whole contract, bounds concurrency and deadlines, and carries one trace across the hop.

pub mod cns;
pub mod config;
pub mod guard;
pub mod overload;
pub mod policy;
pub mod proxy;
pub mod reflection;
pub mod stack;

pub use config::Config;

use sportello_platform::health::{self, Readiness};
use sportello_platform::server;
use sportello_platform::service_identity::ServiceKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The gateway's name as a service: its key file, and what identity-svc trusts it as.
pub const NAME: &str = "gateway";

/// Runs the gateway on `listener` until `shutdown` is cancelled and in-flight calls have drained.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backends = proxy::Backends::connect(&config)?;
    let contract = reflection::public_contract(sportello_proto::FILE_DESCRIPTOR_SET)?;
    let exposed = reflection::service_names(&contract);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness {
        own: vec![String::new()],
        // Every service the gateway exposes has a health entry, asked of its backend.
        dependencies: backends.dependencies(exposed.iter().map(String::as_str)),
        mirror: true,
        condition: None,
    };
    health::starting(&reporter, &readiness).await;
    tokio::spawn(health::track(
        reporter,
        readiness,
        config.server.health_interval,
        shutdown.clone(),
    ));
    let guard = guard::Guard::new(&config.limits);
    let identity = sportello_platform::client::channel(&config.identity_url)?;
    let me = ServiceKey::load_or_generate(&config.data_dir, NAME)?;
    sportello_platform::auth::follow_identity(
        &guard.verifier,
        identity,
        me.clone(),
        shutdown.clone(),
    );
    let cns = cns::Vouch::new(me);
    tokio::spawn(guard.clone().tidy(shutdown.clone()));
    let streaming = overload::streaming_requests(sportello_proto::FILE_DESCRIPTOR_SET)?;
    let proxy = stack::build(&config, &guard, backends, streaming, cns);
    // Health and reflection are the gateway's own; every other path is somebody else's RPC.
    let router = reflection::serve(Routes::new(health_service), &contract)
        .into_axum_router()
        .fallback_service(proxy);
    server::run(listener, Routes::from(router), &config.server, shutdown).await?;
    Ok(())
}
