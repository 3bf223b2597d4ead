//! identity-svc: who citizens are and how they prove it. It owns the PIN lifecycle of
//! DOMAIN.md §4 (request, issuance in two halves, first use, recovery, revocation), stores PINs
//! only as argon2id hashes, and sends PIN halves through notify-svc.

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod hashing;
pub mod store;

pub use config::Config;

use sportello_platform::client;
use sportello_platform::db::Migrations;
use sportello_platform::health::Dependency;
use sportello_platform::server::Storage;
use sportello_proto::identity::v1::identity_service_server::IdentityServiceServer;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// Runs identity-svc on `listener` until `shutdown` is cancelled and in-flight calls have drained.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let notify = client::channel(&config.notify_url)?;
    let hasher = hashing::Hasher::new(&config.pin_hash)?;
    let dependencies = vec![Dependency {
        service: "sportello.notify.v1.NotifyService".into(),
        channel: notify.clone(),
    }];
    sportello_platform::server::serve_with_store(
        Storage {
            name: "identity",
            settings: &config.store,
            migrations: &MIGRATIONS,
        },
        listener,
        &config.server,
        dependencies,
        shutdown,
        move |db| {
            let notify = NotifyServiceClient::new(client::traced(notify));
            IdentityServiceServer::new(api::Identity::new(store::Store::new(db), hasher, notify))
        },
    )
    .await
}
