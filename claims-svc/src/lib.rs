//! claims-svc: the benefits citizens can claim (the COVID-19 indemnities of DL 18/2020), the
//! insured-positions registry eligibility is decided on, the claims themselves with the spending
//! ceilings that bound them, patronato mandates, and the decisions on claims.

pub mod api;
pub mod background;
pub mod catalogue;
pub mod citizen_data;
pub mod config;
pub mod decider;
pub mod domain;
pub mod error;
pub mod register;
pub mod relay;
pub mod store;
pub mod watch;

pub use config::Config;

use sportello_platform::auth::{follow_identity, Authenticate, Verifier};
use sportello_platform::client;
use sportello_platform::db::Migrations;
use sportello_platform::health::Needs;
use sportello_platform::server::Storage;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::claims::v1::claims_back_office_service_server::{
    self, ClaimsBackOfficeServiceServer,
};
use sportello_proto::claims::v1::claims_service_server::{self, ClaimsServiceServer};
use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::privacy::v1::citizen_data_service_server::{
    self as citizen_data_service_server, CitizenDataServiceServer,
};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// claims-svc's schema, for tools and tests that open its database.
pub static MIGRATIONS: Migrations = sportello_platform::embed_migrations!();

/// How often the SQLite change log is read for changes made by other processes on the file
/// (this process's own are read as they commit).
const CHANGES_CATCH_UP: std::time::Duration = std::time::Duration::from_millis(250);

/// claims-svc's name as a service: its key file, and what identity-svc trusts it as.
pub const NAME: &str = "claims";

/// Runs claims-svc on `listener` until `shutdown` is cancelled and in-flight calls have drained.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Callers' tokens are checked with identity-svc's keys and list of ended sessions.
    let verifier = Verifier::default();
    // The gateway asks for a citizen's own data with a token of its own key.
    for (service, public_key) in &config.trusted_services {
        verifier.trust_service(service, public_key).map_err(|e| {
            anyhow::anyhow!("trusted_services.{service}: not an Ed25519 public key: {e}")
        })?;
    }
    let url = config.store.database_url_for(NAME)?;
    let me = ServiceKey::load_or_generate(&config.store.data_dir, NAME)?;
    // Claims look citizens up in identity-svc and send receipts through notify-svc.
    let backend = |service: &str, urls: &str| {
        client::backend(service, urls, config.server.health_interval, shutdown.clone())
    };
    let identity = backend("sportello.identity.v1.IdentityService", &config.identity_url)?;
    let notify = backend("sportello.notify.v1.NotifyService", &config.notify_url)?;
    follow_identity(&verifier, identity.channel.clone(), me.clone(), shutdown.clone());
    let dependencies = vec![identity.dependency, notify.dependency];
    let (identity, notify) = (identity.channel, notify.channel);
    let check = sportello_platform::provider::Provider::configured(
        &config.account_verification_url,
        config.account_verification_timeout,
    )?
    .map(decider::AccountCheck);
    sportello_platform::server::serve_with_store(
        Storage { name: "claims", settings: &config.store, migrations: &MIGRATIONS },
        &[
            claims_service_server::SERVICE_NAME,
            claims_back_office_service_server::SERVICE_NAME,
            citizen_data_service_server::SERVICE_NAME,
        ],
        listener,
        &config.server,
        // Ready once it can tell a valid session from an ended one.
        Needs { dependencies, condition: Some(verifier.ready_condition()) },
        shutdown.clone(),
        |db| async move {
            let store = store::Store::new(db);
            // Changes of claims reach the citizens watching them on every instance.
            let every = CHANGES_CATCH_UP;
            let pool = store.pool().clone();
            store.changes().follow(&url, pool, store::CHANGES, every, shutdown.clone());
            if config.demo_registry {
                register::load_demo(&store).await?;
            }
            let catalogue = catalogue::Catalogue::load(store.clone()).await?;
            tokio::spawn(catalogue.clone().refresh(config.catalogue_refresh, shutdown.clone()));
            let (relay_wake, decide_wake) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
            if config.background {
                let relay = relay::Relay {
                    store: store.clone(),
                    notify: NotifyServiceClient::new(client::traced(notify)),
                    me: me.clone(),
                };
                tokio::spawn(relay.run(relay_wake.clone(), shutdown.clone()));
                let decider =
                    decider::Decider { store: store.clone(), check, relay: relay_wake.clone() };
                tokio::spawn(decider.run(decide_wake.clone(), shutdown));
            }
            let wakes = (relay_wake, decide_wake);
            let register = register::Register {
                identity: ResidentsServiceClient::new(client::traced(identity)),
                me: me.clone(),
            };
            let citizen_data = citizen_data::CitizenData::new(store.clone());
            let claims =
                api::Claims::new(catalogue, store, config.payments.clone(), register, wakes)
                    .ending_streams_with(verifier.revoked());
            let authenticate = Authenticate { verifier };
            Ok(Routes::new(ClaimsServiceServer::with_interceptor(
                claims.clone(),
                authenticate.clone(),
            ))
            .add_service(CitizenDataServiceServer::with_interceptor(
                citizen_data,
                authenticate.clone(),
            ))
            .add_service(ClaimsBackOfficeServiceServer::with_interceptor(claims, authenticate)))
        },
    )
    .await
}
