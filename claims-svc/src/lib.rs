//! claims-svc: the benefits citizens can claim (the COVID-19 indemnities of DL 18/2020 first),
//! the claims themselves, the spending ceilings that bound them, and their payment.

pub mod api;
pub mod catalogue;
pub mod config;
pub mod domain;
pub mod error;
pub mod store;

pub use config::Config;

use sportello_platform::auth::{follow_identity, Authenticate, Verifier};
use sportello_platform::client;
use sportello_platform::db::Migrations;
use sportello_platform::health::Dependency;
use sportello_platform::server::Storage;
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::claims::v1::claims_service_server::{self, ClaimsServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

static MIGRATIONS: Migrations = sportello_platform::embed_migrations!();

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
    follow_identity(
        &verifier,
        client::channel(&config.identity_url)?,
        ServiceKey::load_or_generate(&config.store.data_dir, NAME)?,
        shutdown.clone(),
    );
    // Claims look citizens up in identity-svc and send receipts through notify-svc.
    let dependencies = vec![
        Dependency {
            service: "sportello.identity.v1.IdentityService".into(),
            channel: client::channel(&config.identity_url)?,
        },
        Dependency {
            service: "sportello.notify.v1.NotifyService".into(),
            channel: client::channel(&config.notify_url)?,
        },
    ];
    sportello_platform::server::serve_with_store(
        Storage { name: "claims", settings: &config.store, migrations: &MIGRATIONS },
        &[claims_service_server::SERVICE_NAME],
        listener,
        &config.server,
        dependencies.into(),
        shutdown.clone(),
        |db| async move {
            let catalogue = catalogue::Catalogue::load(store::Store::new(db)).await?;
            tokio::spawn(catalogue.clone().refresh(config.catalogue_refresh, shutdown));
            let claims = api::Claims::new(catalogue);
            let authenticate = Authenticate { verifier };
            Ok(Routes::new(ClaimsServiceServer::with_interceptor(claims, authenticate)))
        },
    )
    .await
}
