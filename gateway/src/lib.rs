//! gateway: Sportello's only public entry point. A generic gRPC reverse proxy that routes each
//! call by its package to the backend service that owns it, so a service can add RPCs without
//! the gateway changing; it serves health (overall and per backend service) and reflection for
//! the whole contract, bounds concurrency and deadlines, and carries one trace across the hop.

pub mod adaptive;
pub mod cns;
pub mod config;
pub mod guard;
pub mod overload;
pub mod policy;
pub mod privacy;
pub mod proxy;
pub mod reflection;
pub mod stack;
pub mod streams;

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
    let mut backends = proxy::Backends::connect(&config, &shutdown)?;
    let contract = reflection::public_contract(sportello_proto::FILE_DESCRIPTOR_SET)?;
    let exposed = reflection::service_names(&contract);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let guard = guard::Guard::new(&config)?;
    let readiness = Readiness {
        // The privacy service is the gateway's own, and needs every backend: SERVING with them.
        own: vec![String::new(), privacy::SERVICE_NAME.to_owned()],
        // Every service the gateway exposes has a health entry, asked of its backend.
        dependencies: backends.dependencies(exposed.iter().map(String::as_str)),
        mirror: true,
        // And once it can tell a valid session from an ended one.
        condition: Some(health::Condition(guard.verifier.ready_condition())),
    };
    health::starting(&reporter, &readiness).await;
    tokio::spawn(health::track(
        reporter,
        readiness,
        config.server.health_interval,
        shutdown.clone(),
    ));
    let identity = sportello_platform::client::backend(
        "sportello.identity.v1.IdentityService",
        &config.identity_url,
        config.server.health_interval,
        shutdown.clone(),
    )?
    .channel;
    let me = ServiceKey::load_or_generate(&config.data_dir, NAME)?;
    sportello_platform::auth::follow_identity(
        &guard.verifier,
        identity,
        me.clone(),
        shutdown.clone(),
    );
    // The citizen's own data, which the gateway merges from every service's part itself.
    let privacy = privacy::Privacy::new(&config, me.clone(), &shutdown)?;
    backends.serve_own(privacy::DOMAIN, privacy.into_routes());
    let cns = cns::Vouch::new(me);
    tokio::spawn(guard.clone().tidy(shutdown.clone()));
    let streaming = overload::streaming_requests(sportello_proto::FILE_DESCRIPTOR_SET)?;
    let streams = streams::streaming_responses(sportello_proto::FILE_DESCRIPTOR_SET)?;
    let shed = overload::Shed::new(
        config.limits.max_in_flight,
        config.limits.max_in_flight_per_method,
        sportello_proto::FILE_DESCRIPTOR_SET,
    )?;
    let proxy = stack::build(&config, &guard, backends, streaming, streams, shed, cns);
    let own = reflection::serve(Routes::new(health_service), &contract).prepare();
    server::run_service(NAME, listener, Front { own, proxy }, &config.server, shutdown).await?;
    Ok(())
}

/// Health and reflection are the gateway's own; every other path is somebody else's RPC. Told
/// apart by a prefix test rather than a router: the forwarded call is the hot path, and a
/// router's matching and body conversions would cost it more than the proxy's own layers.
#[derive(Clone)]
struct Front<P> {
    own: Routes,
    proxy: P,
}

/// The services the gateway answers itself.
const OWN_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

impl<P> tower::Service<http::Request<tonic::body::Body>> for Front<P>
where
    P: tower::Service<
        http::Request<tonic::body::Body>,
        Response = stack::Reply,
        Error = std::convert::Infallible,
    >,
    P::Future: Send + 'static,
{
    type Response = stack::Reply;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        futures::future::BoxFuture<'static, Result<stack::Reply, std::convert::Infallible>>,
        P::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Which one the call needs is known only from the call: both must be ready.
        std::task::ready!(tower::Service::<http::Request<tonic::body::Body>>::poll_ready(
            &mut self.own,
            cx
        ))?;
        self.proxy.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        use futures::FutureExt;
        let path = req.uri().path();
        if OWN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            futures::future::Either::Left(self.own.call(req).boxed())
        } else {
            futures::future::Either::Right(self.proxy.call(req))
        }
    }
}
