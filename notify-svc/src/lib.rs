//! notify-svc: accepts messages for citizens (SMS, email, PEC, postal letter) from the other
//! Sportello services and keeps each one durably until it has been delivered. A message is stored
//! before `EnqueueMessage` answers, so nothing accepted is ever lost; the caller's idempotency key
//! makes retries safe.

pub mod api;
pub mod citizen_data;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod store;
pub mod templates;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod transport;

pub use config::Config;

use sportello_platform::auth::{follow_identity, Authenticate, Verifier};
use sportello_platform::db::Migrations;
use sportello_platform::health::Needs;
use sportello_platform::server::Storage;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::notify::v1::notify_service_server::{self, NotifyServiceServer};
use sportello_proto::privacy::v1::citizen_data_service_server::{
    self as citizen_data_service_server, CitizenDataServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

static MIGRATIONS: Migrations = sportello_platform::embed_migrations!();

/// notify-svc's name as a service: its key file, and what identity-svc trusts it as.
pub const NAME: &str = "notify";

/// Publishes, every second until `stop`, each channel's queue: messages waiting to go
/// (`sportello_notify_queue_depth`) and how long the oldest has waited
/// (`sportello_notify_oldest_waiting_seconds`), zero for a channel with none.
async fn follow_queues(store: store::Store, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(queues) = store.queues().await else { continue };
        let now = sportello_platform::now_millis();
        for channel in ["SMS", "EMAIL", "PEC", "POST"] {
            let (waiting, oldest) = queues
                .iter()
                .find(|(c, _, _)| c == channel)
                .map_or((0, now), |(_, n, oldest)| (*n, *oldest));
            metrics::gauge!("sportello_notify_queue_depth", "channel" => channel)
                .set(waiting as f64);
            metrics::gauge!("sportello_notify_oldest_waiting_seconds", "channel" => channel)
                .set((now - oldest).max(0) as f64 / 1000.0);
        }
    }
}

/// Runs notify-svc on `listener` until `shutdown` is cancelled and in-flight calls have drained.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Citizens' tokens are checked with identity-svc's keys and list of ended sessions, fetched
    // in the background; notify does not wait for them to store messages, so identity is not a
    // health dependency.
    let verifier = Verifier::default();
    for (service, public_key) in &config.trusted_services {
        verifier.trust_service(service, public_key).map_err(|e| {
            anyhow::anyhow!("trusted_services.{service}: not an Ed25519 public key: {e}")
        })?;
    }
    let identity = sportello_platform::client::backend(
        "sportello.identity.v1.IdentityService",
        &config.identity_url,
        config.server.health_interval,
        shutdown.clone(),
    )?;
    follow_identity(
        &verifier,
        identity.channel,
        ServiceKey::load_or_generate(&config.store.data_dir, NAME)?,
        shutdown.clone(),
    );
    // Built before serving, so that a bad relay URL or provider setting stops the start.
    let (transports, sink_receipts) = transport::build(&config)?;
    let keys = sportello_platform::sealed::Keyring::load_or_generate(&config.store.data_dir)?;
    let dispatch = config.dispatch.clone();
    let dispatch_shutdown = shutdown.clone();
    let watch_shutdown = shutdown.clone();
    let queues_shutdown = shutdown.clone();
    let receipts_shutdown = shutdown.clone();
    sportello_platform::server::serve_with_store(
        Storage { name: "notify", settings: &config.store, migrations: &MIGRATIONS },
        &[notify_service_server::SERVICE_NAME, citizen_data_service_server::SERVICE_NAME],
        listener,
        &config.server,
        // Ready once it can check the tokens of the services and citizens that call it.
        Needs { dependencies: Vec::new(), condition: Some(verifier.ready_condition()) },
        shutdown,
        |db| async move {
            let templates = std::sync::Arc::new(templates::Templates::builtin());
            let store = store::Store::new(db, keys);
            store.seal_cleartext_messages().await?;
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            if dispatch.enabled {
                let dispatcher = dispatch::Dispatcher::new(
                    store.clone(),
                    templates.clone(),
                    transports,
                    dispatch,
                );
                tokio::spawn(dispatcher.run(wake.clone(), dispatch_shutdown));
                if let Some(owing) = sink_receipts {
                    let report = transport::sink_receipts::report(
                        owing,
                        store.clone(),
                        wake.clone(),
                        receipts_shutdown,
                    );
                    tokio::spawn(report);
                }
            } else {
                tracing::warn!(
                    "dispatch is paused (notify.dispatch.enabled = false): messages wait in QUEUED"
                );
            }
            tokio::spawn(follow_queues(store.clone(), queues_shutdown));
            let citizen_data = citizen_data::CitizenData::new(store.clone(), templates.clone());
            let notify = api::Notify::new(store, templates, wake, watch_shutdown);
            let authenticate = Authenticate { verifier };
            Ok(Routes::new(NotifyServiceServer::with_interceptor(notify, authenticate.clone()))
                .add_service(CitizenDataServiceServer::with_interceptor(
                    citizen_data,
                    authenticate,
                )))
        },
    )
    .await
}
