//! What the four Sportello binaries share, and nothing else: telemetry set-up, W3C trace-context
//! propagation across gRPC hops, the server bootstrap (health, reflection, graceful drain),
//! readiness of dependencies, storage connection and migrations, layered configuration, and the
//! helpers that turn domain errors into rich `tonic::Status` values.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod balance;
pub mod blobs;
pub mod changes;
pub mod citizen_data;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod deadline;
pub mod error;
pub mod files;
pub mod group_commit;
pub mod health;
/// Masking of contacts (moved to the shared domain crate; the path stays for its callers).
pub use sportello_domain::mask;
pub mod metrics;
pub mod panic_guard;
pub mod pdf;
pub mod probe;
pub mod provider;
pub mod raw_codec;
pub mod request_faults;
pub mod revocation;
pub mod sealed;
pub mod server;
pub mod service_identity;
pub mod shutdown;
pub mod telemetry;
pub mod text_guard;
pub mod trace_context;

/// Milliseconds since the Unix epoch: the one timestamp format stored by every service, because it
/// is portable between SQLite and PostgreSQL and sorts correctly as an integer.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
