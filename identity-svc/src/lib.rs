//! identity-svc: who citizens are and how they prove it. It owns the PIN lifecycle of
//! DOMAIN.md §4 (request, issuance in two halves, first access, change, ripristino, revocation,
//! unlocking) and the contact center's view of it; stores PINs only as argon2id hashes; and
//! sends PIN halves and notices through notify-svc.

pub mod api;
pub mod config;
pub mod contact_center;
pub mod domain;
pub mod error;
pub mod hashing;
pub mod notifier;
pub mod operator_auth;
pub mod pins;
pub mod store;

pub use config::Config;

use sportello_platform::client;
use sportello_platform::db::Migrations;
use sportello_platform::health::Dependency;
use sportello_platform::server::Storage;
use sportello_proto::identity::v1::contact_center_service_server::{
    self, ContactCenterServiceServer,
};
use sportello_proto::identity::v1::identity_service_server::{self, IdentityServiceServer};
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

static MIGRATIONS: Migrations = sportello_platform::embed_migrations!();

/// Runs identity-svc on `listener` until `shutdown` is cancelled and in-flight calls have drained.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let notify = client::channel(&config.notify_url)?;
    let hasher = hashing::Hasher::new(&config.pin_hash)?;
    let decoy = hasher.hash(uuid::Uuid::new_v4().to_string()).await?;
    let dependencies = vec![Dependency {
        service: "sportello.notify.v1.NotifyService".into(),
        channel: notify.clone(),
    }];
    let auth = operator_auth::OperatorAuth::new(config.operator_api_keys.clone());
    sportello_platform::server::serve_with_store(
        Storage { name: "identity", settings: &config.store, migrations: &MIGRATIONS },
        &[identity_service_server::SERVICE_NAME, contact_center_service_server::SERVICE_NAME],
        listener,
        &config.server,
        dependencies,
        shutdown,
        move |db| {
            let pins = pins::Pins {
                store: store::Store::new(db),
                hasher,
                notifier: notifier::Notifier::new(NotifyServiceClient::new(client::traced(notify))),
                rules: config.pins.clone(),
                decoy,
            };
            Routes::new(IdentityServiceServer::new(api::Identity::new(pins.clone()))).add_service(
                ContactCenterServiceServer::with_interceptor(api::ContactCenter::new(pins), auth),
            )
        },
    )
    .await
}
