//! `spawn_suite()` and friends: a fresh database per test, every service on its own port.

use sportello_platform::server::{ServerSettings, StoreSettings};
use sportello_platform::service_identity::ServiceKey;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sqlx::{AnyPool, Connection, Executor};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub const IDENTITY: &str = "sportello.identity.v1.IdentityService";
pub const CLAIMS: &str = "sportello.claims.v1.ClaimsService";
pub const NOTIFY: &str = "sportello.notify.v1.NotifyService";

/// A database for one test: a temporary directory of SQLite files, or a new PostgreSQL
/// database when `SPORTELLO_TEST_DATABASE_URL` points at a server.
pub struct TestDb {
    dir: tempfile::TempDir,
    /// The suite's data directory: `dir` itself, or one in it that the suite makes.
    data: std::path::PathBuf,
    postgres: Option<String>,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().to_owned();
        Self::in_dir(dir, data).await
    }

    /// As [`TestDb::new`], with a data directory that does not exist yet: the suite makes it.
    pub async fn with_fresh_data_dir() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        Self::in_dir(dir, data).await
    }

    /// The directory the test may use beside the suite's data directory (when it is fresh).
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn in_dir(dir: tempfile::TempDir, data: std::path::PathBuf) -> Self {
        let postgres = match std::env::var("SPORTELLO_TEST_DATABASE_URL") {
            Ok(admin) if !admin.is_empty() => {
                sqlx::any::install_default_drivers();
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let mut conn =
                    sqlx::AnyConnection::connect(&admin).await.expect("admin connection");
                conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create db");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Some(format!("{base}/{name}"))
            }
            _ => None,
        };
        Self { dir, data, postgres }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data
    }

    /// The database URL to give service `svc`.
    pub fn url(&self, svc: &str) -> String {
        match &self.postgres {
            Some(url) => url.clone(),
            None => sportello_platform::db::sqlite_url(&self.data, svc),
        }
    }

    /// A pool on the database of `svc`, for the test to look at what the service stored.
    pub async fn pool(&self, svc: &str) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url(svc)).await.expect("test pool")
    }

    /// `table` of service `svc`, qualified by its schema where there is one.
    pub fn table(&self, svc: &str, table: &str) -> String {
        if self.is_postgres() {
            format!("{svc}.{table}")
        } else {
            table.to_owned()
        }
    }

    /// Puts the citizens of these forms on identity's register of residents, living where each
    /// form says, straight into its database (identity must have migrated it): for tests that
    /// run identity without a gateway or a back-office account.
    /// identity-svc's store on this database, beside the running service.
    pub async fn identity_store(&self) -> identity_svc::store::Store {
        let postgres = self.is_postgres();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if postgres {
                        // The service's tables live in its own schema.
                        conn.execute("SET search_path TO identity").await?;
                    }
                    Ok(())
                })
            })
            .connect(&self.url("identity"))
            .await
            .expect("identity pool");
        let backend = sportello_platform::db::Backend::of(&self.url("identity"));
        identity_svc::store::Store::new(
            sportello_platform::db::Database { pool, backend },
            self.keys(),
        )
    }

    pub async fn register_residents(&self, forms: &[id::RequestPinRequest]) {
        let store = self.identity_store().await;
        let records: Vec<_> =
            forms.iter().enumerate().map(|(i, f)| resident_record(i as i64 + 2, f)).collect();
        let mut import = identity_svc::residents::Import::new(&store, "test-register");
        import.batch(records).await.expect("register");
        assert_eq!(import.report.rejected, 0, "{:?}", import.report);
    }

    /// The data keys the services seal secrets at rest under, in the test's data directory.
    pub fn keys(&self) -> sportello_platform::sealed::Keyring {
        sportello_platform::sealed::Keyring::load_or_generate(self.data_dir()).expect("data keys")
    }

    /// The secret parameters of row `id` of `table` (`outbox`, `messages`), opened from `row`'s
    /// `secret_params` and `secrets_key`; `None` when it has none (purged).
    pub fn open_secrets(
        &self,
        table: &str,
        id: &str,
        row: &sqlx::any::AnyRow,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        use secrecy::ExposeSecret;
        let sealed = sportello_platform::sealed::Sealed::of_row(row).expect("sealed columns")?;
        let opened = self.keys().open_params(table, id, Some(&sealed)).expect("secrets open");
        Some(opened.expose_secret().0.clone())
    }

    pub async fn count(&self, svc: &str, table: &str, filter: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {filter}", self.table(svc, table));
        sqlx::query_scalar::<_, i64>(&sql).fetch_one(&self.pool(svc).await).await.expect("count")
    }
}

/// The fields a refusal's `BadRequest` names, in order.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    let details = status.get_details_bad_request().expect("BadRequest details");
    details.field_violations.into_iter().map(|v| v.field).collect()
}

/// `sportello <service>` as an operator runs it, on `addr`, against the test's database and data
/// directory, with no configuration file; the caller adds its own settings and spawns it.
pub fn service_process(db: &TestDb, service: &str, addr: SocketAddr) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sportello"));
    cmd.args([service, "--listen"]).arg(addr.to_string());
    if db.is_postgres() {
        cmd.env("SPORTELLO_DATABASE_URL", db.url(service));
    }
    cmd.env("SPORTELLO_CONFIG", db.data_dir().join("absent.toml"))
        .env("SPORTELLO_DATA_DIR", db.data_dir())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Settings for a server in a test: quick health checks, short drain.
pub fn server_settings() -> ServerSettings {
    let mut s = ServerSettings::on("127.0.0.1:0".parse().expect("addr"));
    s.health_interval = Duration::from_millis(100);
    s.drain_timeout = Duration::from_secs(2);
    s
}

pub fn store_settings(db: &TestDb, svc: &str) -> StoreSettings {
    StoreSettings {
        database_url: db.url(svc),
        data_dir: db.data_dir().to_owned(),
        ..StoreSettings::default()
    }
}

pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The addresses of the four services, reserved before any starts.
pub struct Ports {
    pub gateway: (TcpListener, SocketAddr),
    pub identity: (TcpListener, SocketAddr),
    pub claims: (TcpListener, SocketAddr),
    pub notify: (TcpListener, SocketAddr),
}

impl Ports {
    pub async fn reserve() -> Self {
        Self {
            gateway: listener().await,
            identity: listener().await,
            claims: listener().await,
            notify: listener().await,
        }
    }
}

/// Every service's configuration, wired to the others' addresses.
pub struct Configs {
    pub gateway: gateway::Config,
    pub identity: identity_svc::Config,
    pub claims: claims_svc::Config,
    pub notify: notify_svc::Config,
}

impl Configs {
    pub fn new(db: &TestDb, addrs: [SocketAddr; 4]) -> Self {
        let [gateway_addr, identity_addr, claims_addr, notify_addr] = addrs;
        let mut gateway = gateway::Config { server: server_settings(), ..Default::default() };
        gateway.server.listen = gateway_addr;
        gateway.identity_url = url(identity_addr);
        gateway.claims_url = url(claims_addr);
        gateway.notify_url = url(notify_addr);
        let mut identity = identity_svc::Config {
            server: server_settings(),
            store: store_settings(db, "identity"),
            ..Default::default()
        };
        identity.notify_url = url(notify_addr);
        // As `sportello up` does: the demo register lists Mario Rossi, whom most tests use.
        identity.demo_register = true;
        // Uploaded files are read by the suite's own binary, as a limited child process.
        identity.uploads.reader = Some(env!("CARGO_BIN_EXE_sportello").into());
        let mut claims = claims_svc::Config {
            server: server_settings(),
            store: store_settings(db, "claims"),
            ..Default::default()
        };
        claims.identity_url = url(identity_addr);
        claims.notify_url = url(notify_addr);
        let mut notify = notify_svc::Config {
            server: server_settings(),
            store: store_settings(db, "notify"),
            identity_url: url(identity_addr),
            ..Default::default()
        };
        // Most tests read a message's secrets where notify-svc stores them until it sends the
        // message; the delivery tests turn dispatch on (`spawn_suite_with`) and read what the
        // channels received instead.
        notify.dispatch.enabled = false;
        // A sent message stays SENT, as with a provider that sends no receipts, until a test
        // reports one; the tests of the sinks' own receipts turn them on.
        notify.sinks.report_delivery = false;
        gateway.data_dir = db.data_dir().to_owned();
        // As `sportello up` does: one data key for the services sharing the directory.
        db.keys();
        // As `sportello up` does: identity trusts the keys of the services that call it.
        for service in [gateway::NAME, notify_svc::NAME, claims_svc::NAME] {
            let key = ServiceKey::load_or_generate(db.data_dir(), service).expect("service key");
            identity.trusted_services.insert(service.into(), key.public_key());
        }
        let claims_key =
            ServiceKey::load_or_generate(db.data_dir(), claims_svc::NAME).expect("key");
        notify.trusted_services.insert(claims_svc::NAME.into(), claims_key.public_key());
        // As `sportello up` does: the gateway asks claims and notify for a citizen's own data.
        let gateway_key = ServiceKey::load_or_generate(db.data_dir(), gateway::NAME).expect("key");
        notify.trusted_services.insert(gateway::NAME.into(), gateway_key.public_key());
        claims.trusted_services.insert(gateway::NAME.into(), gateway_key.public_key());
        Self { gateway, identity, claims, notify }
    }
}

/// A service running in this test, stoppable on its own.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn start<F>(
        (listener, addr): (TcpListener, SocketAddr),
        serve: impl FnOnce(TcpListener, CancellationToken) -> F,
    ) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, stop.clone()));
        Self { addr, stop, task }
    }

    /// Stops the service and waits until it has drained.
    pub async fn shut_down(self) {
        self.stop.cancel();
        self.task.await.expect("task").expect("clean shutdown");
    }
}

/// The whole suite, in this process.
pub struct Suite {
    pub db: TestDb,
    pub gateway: Running,
    pub identity: Running,
    pub claims: Running,
    pub notify: Running,
    /// A session of the configured operator.
    pub operator_token: String,
}

pub async fn spawn_suite() -> Suite {
    spawn_suite_with(|_| {}).await
}

/// The suite with its configuration adjusted first.
pub async fn spawn_suite_with(adjust: impl FnOnce(&mut Configs)) -> Suite {
    spawn_suite_on(TestDb::new().await, adjust).await
}

/// The suite on `db`, with its configuration adjusted first.
pub async fn spawn_suite_on(db: TestDb, adjust: impl FnOnce(&mut Configs)) -> Suite {
    let ports = Ports::reserve().await;
    let mut c =
        Configs::new(&db, [ports.gateway.1, ports.identity.1, ports.claims.1, ports.notify.1]);
    c.identity.staff.insert(
        OPERATOR_ID.into(),
        identity_svc::config::StaffAccount {
            role: sportello_platform::auth::Role::Operator,
            password_hash: password_hash(OPERATOR_PASSWORD).await.into(),
        },
    );
    c.identity.staff.insert(
        PATRONATO_ID.into(),
        identity_svc::config::StaffAccount {
            role: sportello_platform::auth::Role::Patronato,
            password_hash: password_hash(PATRONATO_PASSWORD).await.into(),
        },
    );
    c.identity.staff.insert(
        BACKOFFICE_ID.into(),
        identity_svc::config::StaffAccount {
            role: sportello_platform::auth::Role::Backoffice,
            password_hash: password_hash(BACKOFFICE_PASSWORD).await.into(),
        },
    );
    adjust(&mut c);
    let tls_gateway = c.gateway.server.tls.is_some();
    let notify = Running::start(ports.notify, |l, s| notify_svc::serve(c.notify, l, s));
    let identity = Running::start(ports.identity, |l, s| identity_svc::serve(c.identity, l, s));
    let claims = Running::start(ports.claims, |l, s| claims_svc::serve(c.claims, l, s));
    let gateway = Running::start(ports.gateway, |l, s| gateway::serve(c.gateway, l, s));
    let mut suite = Suite { db, gateway, identity, claims, notify, operator_token: String::new() };
    if tls_gateway {
        // The helpers speak plaintext; a TLS gateway's tests make their own clients.
        wait_for_status(suite.claims.addr, "", ServingStatus::Serving).await;
        return suite;
    }
    wait_for_status(suite.gateway.addr, "", ServingStatus::Serving).await;
    // Straight at identity-svc: a test that tightens the gateway's limits must not fail here.
    let identity = connect(suite.identity.addr).await;
    suite.operator_token =
        login_staff_at(identity, OPERATOR_ID, OPERATOR_PASSWORD).await.access_token;
    suite
}

async fn login_staff_at(channel: Channel, username: &str, password: &str) -> id::Session {
    let request = id::LoginStaffRequest { username: username.into(), password: password.into() };
    let reply = IdentityServiceClient::new(channel).login_staff(request).await;
    reply.expect("staff login").into_inner().session.expect("session")
}

impl Suite {
    pub async fn gateway_channel(&self) -> Channel {
        connect(self.gateway.addr).await
    }

    /// A token of an internal Sportello service, minted with identity-svc's own key, for calling
    /// internal RPCs straight at a service as another service would.
    pub fn service_token(&self) -> String {
        let key = self.db.data_dir().join("keys/session-ed25519.der");
        let signer = identity_svc::keys::Signer::load_or_generate(&key).expect("identity's key");
        signer.service_token("test-service").expect("token")
    }

    /// A token of the gateway, minted as [`Suite::service_token`]: the one caller of each
    /// service's part of a citizen's data.
    pub fn gateway_token(&self) -> String {
        let key = self.db.data_dir().join("keys/session-ed25519.der");
        let signer = identity_svc::keys::Signer::load_or_generate(&key).expect("identity's key");
        signer.service_token(gateway::NAME).expect("token")
    }

    /// A session token of citizen `fiscal_code` at `level`, signed with identity-svc's own key
    /// as a login would sign it: for tests that need many citizens at once (a real login per
    /// citizen is what `sportello bench clickday` does).
    pub fn citizen_token(
        &self,
        fiscal_code: &str,
        level: sportello_platform::auth::Level,
    ) -> String {
        use sportello_platform::auth::{Amr, Claims, Role, ISSUER};
        let key = self.db.data_dir().join("keys/session-ed25519.der");
        let signer = identity_svc::keys::Signer::load_or_generate(&key).expect("identity's key");
        let now = sportello_platform::now_millis() / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: fiscal_code.into(),
            role: Role::Citizen,
            level,
            amr: Amr::Pin,
            sid: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + 3600,
            acr: None,
        };
        signer.sign(&claims).expect("token")
    }

    /// Loads `csv` into the insured-positions registry through the gateway as the back office,
    /// in small chunks (rows cross chunk boundaries).
    pub async fn import_registry(
        &self,
        csv: &str,
    ) -> Result<sportello_proto::claims::v1::ImportRegistryResponse, tonic::Status> {
        use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
        use sportello_proto::claims::v1::ImportRegistryRequest;
        let token = self.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
        let chunks: Vec<ImportRegistryRequest> = csv
            .as_bytes()
            .chunks(97)
            .map(|c| ImportRegistryRequest { chunk: c.to_vec() })
            .collect();
        let reply = ClaimsBackOfficeServiceClient::new(self.gateway_channel().await)
            .import_registry(with_token(&token, tokio_stream::iter(chunks)))
            .await?;
        Ok(reply.into_inner())
    }

    /// A request carrying the test operator's session.
    pub fn as_operator<T>(&self, message: T) -> tonic::Request<T> {
        with_token(&self.operator_token, message)
    }

    fn identity(channel: Channel) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(channel)
    }

    pub async fn login_staff(&self, username: &str, password: &str) -> id::Session {
        login_staff_at(self.gateway_channel().await, username, password).await
    }

    pub async fn login_with_pin(
        &self,
        fiscal_code: &str,
        pin: &str,
    ) -> Result<id::Session, tonic::Status> {
        let request = id::LoginWithPinRequest { fiscal_code: fiscal_code.into(), pin: pin.into() };
        let reply = Self::identity(self.gateway_channel().await).login_with_pin(request).await?;
        Ok(reply.into_inner().session.expect("session"))
    }
}

impl Suite {
    /// Puts the citizens of these forms on the register of residents, living where each form
    /// says, through the gateway as the back office would.
    pub async fn register_residents(
        &self,
        forms: &[&id::RequestPinRequest],
    ) -> id::ImportResidentsResponse {
        let records = forms.iter().enumerate().map(|(i, f)| resident_record(i as i64 + 2, f));
        self.import_residents(records.collect()).await.expect("imported")
    }

    /// Sends `records` to ImportResidents in one message, as the back office.
    pub async fn import_residents(
        &self,
        records: Vec<id::ResidentRecord>,
    ) -> Result<id::ImportResidentsResponse, tonic::Status> {
        use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient;
        let token = self.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
        let batch = id::ImportResidentsRequest { residents: records };
        let stream = tokio_stream::iter(vec![batch]);
        let reply = ResidentsServiceClient::new(self.gateway_channel().await)
            .import_residents(with_token(&token, stream))
            .await?;
        Ok(reply.into_inner())
    }
}

/// The register entry of the person a PIN request form describes, living where it says.
pub fn resident_record(line: i64, form: &id::RequestPinRequest) -> id::ResidentRecord {
    id::ResidentRecord {
        line,
        fiscal_code: form.fiscal_code.clone(),
        personal_data: form.personal_data.clone(),
        residence: form.residence.clone(),
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(url(addr)).expect("url").connect().await.expect("connect")
}

/// The health status `addr` reports for `service`, or None if it does not answer.
pub async fn health_of(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = Channel::from_shared(url(addr)).ok()?.connect_timeout(Duration::from_secs(1));
    let channel = channel.connect().await.ok()?;
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }),
    )
    .await
    .ok()?
    .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

/// Polls until `cond` holds, failing the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_for_status(addr: SocketAddr, service: &str, status: ServingStatus) {
    eventually(
        &format!("{addr} {service:?} to be {status:?}"),
        Duration::from_secs(20),
        || async { health_of(addr, service).await == Some(status) },
    )
    .await;
}

/// The contact-center operator configured in every suite.
pub const OPERATOR_ID: &str = "op.bianchi";
pub const OPERATOR_PASSWORD: &str = "correct horse battery staple";

/// The back-office account configured in every suite (it loads the register of residents).
pub const BACKOFFICE_ID: &str = "bo.neri";
pub const BACKOFFICE_PASSWORD: &str = "a register is a serious thing";

/// A patronato office configured in every suite (it files claims under mandates).
pub const PATRONATO_ID: &str = "pat.inca.roma1";
pub const PATRONATO_PASSWORD: &str = "mandates are signed on paper";

/// Mario Rossi, born 10/12/1985 in San Giuliano Terme (PI).
pub const ROSSI: &str = "RSSMRA85T10A562S";
pub const ROSSI_MOBILE: &str = "+393331234567";
pub const ROSSI_EMAIL: &str = "mario.rossi@example.it";

/// A complete, valid PIN request for Mario Rossi.
pub fn pin_request(fiscal_code: &str) -> sportello_proto::identity::v1::RequestPinRequest {
    identity_svc::residents::demo_pin_request(fiscal_code)
}

/// Another citizen, born in Rome: their fiscal code and a complete, valid PIN request.
pub fn citizen_request(
    surname: &str,
    given_name: &str,
    (year, month, day): (i32, u32, u32),
    sex: sportello_proto::identity::v1::Sex,
) -> (String, sportello_proto::identity::v1::RequestPinRequest) {
    use identity_svc::domain::codice_fiscale::{compute, Sex};
    let born = chrono::NaiveDate::from_ymd_opt(year, month, day).expect("date");
    let domain_sex =
        if sex == sportello_proto::identity::v1::Sex::Female { Sex::Female } else { Sex::Male };
    let cf = compute(surname, given_name, born, domain_sex, "H501");
    let mut request = pin_request(&cf);
    let person = request.personal_data.as_mut().expect("personal data");
    person.surname = surname.into();
    person.given_name = given_name.into();
    person.birth_date =
        Some(sportello_proto::identity::v1::Date { year, month: month as i32, day: day as i32 });
    person.sex = sex as i32;
    person.birth_province = "RM".into();
    person.birth_municipality = "Roma".into();
    (cf, request)
}

/// A request carrying a session token.
pub fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

/// An argon2id hash (cheap parameters: tests are not attackers) of a staff password.
pub async fn password_hash(password: &str) -> String {
    let params =
        identity_svc::hashing::HashParams { memory_kib: 1024, iterations: 1, ..Default::default() };
    let hasher = identity_svc::hashing::Hasher::new(&params).expect("params");
    hasher.hash(password.to_owned()).await.expect("hash").as_phc().to_owned()
}

/// One stored notify message, as the test reads it from notify's database.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub channel: String,
    pub address: String,
    /// Its secret parameters, opened; `None` once purged.
    pub secrets: Option<std::collections::BTreeMap<String, String>>,
}

impl StoredMessage {
    /// The value of secret parameter `key`.
    pub fn secret(&self, key: &str) -> String {
        let secrets = self.secrets.as_ref().expect("secrets");
        secrets.get(key).expect("secret present").clone()
    }
}

impl TestDb {
    /// Waits until the outbox relays of identity-svc and claims-svc have handed every committed
    /// message to notify-svc (messages leave after the RPC that wrote them has answered).
    pub async fn outbox_relayed(&self) {
        self.outbox_of_relayed("identity").await;
        self.outbox_of_relayed("claims").await;
    }

    async fn outbox_of_relayed(&self, svc: &str) {
        let sql =
            format!("SELECT COUNT(*) FROM {} WHERE done_at IS NULL", self.table(svc, "outbox"));
        let pool = self.pool(svc).await;
        // Rows a killed relay had claimed wait for its lease (10 s) to run out, and rows whose
        // sends failed while the machine was overloaded wait for their backoff (0.5 s doubling).
        let until = Instant::now() + Duration::from_secs(90);
        // No outbox table: no identity-svc in this test.
        while !sqlx::query_scalar::<_, i64>(&sql).fetch_one(&pool).await.map_or(true, |n| n == 0) {
            if Instant::now() > until {
                panic!(
                    "timed out waiting for {svc}'s outbox to be relayed: {}",
                    self.stuck(svc, &pool).await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the outbox rows not yet relayed are waiting for, to tell why a relay stalled.
    async fn stuck(&self, svc: &str, pool: &AnyPool) -> String {
        use sqlx::Row;
        let now = sportello_platform::now_millis();
        let sql = format!(
            "SELECT template, attempts, last_error, next_attempt_at, leased_until FROM {} \
             WHERE done_at IS NULL ORDER BY next_attempt_at LIMIT 20",
            self.table(svc, "outbox")
        );
        let rows = sqlx::query(&sql).fetch_all(pool).await.unwrap_or_default();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                let due: i64 = r.get("next_attempt_at");
                let leased: Option<i64> = r.get("leased_until");
                format!(
                    "{} attempts={} last_error={:?} due_in={}ms leased_for={:?}ms",
                    r.get::<String, _>("template"),
                    r.get::<i64, _>("attempts"),
                    r.get::<Option<String>, _>("last_error"),
                    due - now,
                    leased.map(|l| l - now)
                )
            })
            .collect();
        rows.join("; ")
    }

    /// Every message notify-svc stored with `template`, oldest first (once identity's outbox
    /// has been relayed).
    pub async fn messages(&self, template: &str) -> Vec<StoredMessage> {
        use sqlx::Row;
        self.outbox_relayed().await;
        let sql = format!(
            "SELECT id, channel, address, secret_params, secrets_key FROM {} WHERE template = $1 \
             ORDER BY created_at, id",
            self.table("notify", "messages")
        );
        let pool = self.pool("notify").await;
        sqlx::query(&sql)
            .bind(template)
            .fetch_all(&pool)
            .await
            .expect("messages")
            .iter()
            .map(|r| StoredMessage {
                channel: r.get("channel"),
                address: r.get("address"),
                secrets: self.open_secrets("messages", r.get("id"), r),
            })
            .collect()
    }

    /// The one message with `template`.
    pub async fn message(&self, template: &str) -> StoredMessage {
        let mut all = self.messages(template).await;
        assert_eq!(all.len(), 1, "exactly one {template} message");
        all.remove(0)
    }
}

/// A message as its channel delivered it: the text the citizen reads.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub message_id: String,
    pub channel: String,
    pub text: String,
}

impl Delivered {
    /// The secret the citizen reads in it: a letter's boxed line, or the word after "è" that
    /// ends a sentence (the templates say "il suo PIN è AB12CD34." and "il codice … è 123456.",
    /// and may say "il suo PIN è stato ripristinato" before).
    pub fn secret(&self) -> String {
        if self.channel == "POST" {
            // The boxed half closes the letter.
            let last = self.text.lines().rev().map(str::trim).find(|l| !l.is_empty());
            return last.expect("a boxed half").to_owned();
        }
        let words = self.text.split(" è ").skip(1);
        let secret = words.filter_map(|after| after.split_once('.')).map(|(word, _)| word);
        let secret = secret.into_iter().find(|word| !word.contains(char::is_whitespace));
        secret.expect("a secret in the text").to_owned()
    }
}

impl TestDb {
    /// Every message with `template`, oldest first, as its channel delivered it: waits until
    /// notify-svc has sent them all, then reads the local sinks under the data directory (SMS
    /// JSON lines, `.eml` files, the print spool).
    pub async fn delivered(&self, template: &str) -> Vec<Delivered> {
        use sqlx::Row;
        self.outbox_relayed().await;
        let sql = format!(
            "SELECT id, channel, status FROM {} WHERE template = $1 ORDER BY created_at, id",
            self.table("notify", "messages")
        );
        let pool = self.pool("notify").await;
        let rows = || async {
            let rows = sqlx::query(&sql).bind(template).fetch_all(&pool).await.expect("messages");
            rows.iter()
                .map(|r| {
                    (
                        r.get::<String, _>("id"),
                        r.get::<String, _>("channel"),
                        r.get::<String, _>("status"),
                    )
                })
                .collect::<Vec<_>>()
        };
        eventually(&format!("every {template} message sent"), Duration::from_secs(20), || async {
            let all = rows().await;
            !all.is_empty() && all.iter().all(|(_, _, status)| status == "SENT")
        })
        .await;
        let mut out = Vec::new();
        for (id, channel, _) in rows().await {
            let text = read_delivered(self.data_dir(), &id, &channel);
            out.push(Delivered { message_id: id, channel, text });
        }
        out
    }

    /// The one message with `template`, as delivered.
    pub async fn delivered_one(&self, template: &str) -> Delivered {
        let mut all = self.delivered(template).await;
        assert_eq!(all.len(), 1, "exactly one {template} message");
        all.remove(0)
    }
}

/// What the local sink of `channel` holds for message `id`.
pub fn read_delivered(data_dir: &std::path::Path, id: &str, channel: &str) -> String {
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    match channel {
        "SMS" => read(data_dir.join("outbox/sms.jsonl"))
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .find(|l| l["message_id"] == id)
            .and_then(|l| l["text"].as_str().map(str::to_owned))
            .expect("the SMS in the sink"),
        "EMAIL" | "PEC" => {
            let eml = read(data_dir.join(format!("outbox/{}/{id}.eml", channel.to_lowercase())));
            plain_text_part(&eml)
        }
        _ => {
            let path = data_dir.join(format!("spool/{id}.pdf"));
            let pdf = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            notify_svc::transport::letter::text_of_pdf(&pdf).expect("a readable letter")
        }
    }
}

/// The decoded text/plain part of an email as lettre writes it.
fn plain_text_part(eml: &str) -> String {
    let part = eml.split("Content-Type: text/plain").nth(1).expect("a text part");
    let (headers, body) = part.split_once("\r\n\r\n").expect("part headers");
    let body = body.split("\r\n--").next().expect("part body");
    if headers.contains("base64") {
        use base64::Engine;
        let compact: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD.decode(compact).expect("base64");
        String::from_utf8(bytes).expect("utf-8")
    } else if headers.contains("quoted-printable") {
        let joined = body.replace("=\r\n", "");
        let mut bytes = Vec::new();
        let mut rest = joined.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            match (b, tail.get(..2).and_then(|h| std::str::from_utf8(h).ok())) {
                (b'=', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                    bytes.push(u8::from_str_radix(hex, 16).expect("hex"));
                    rest = &tail[2..];
                }
                _ => {
                    bytes.push(b);
                    rest = tail;
                }
            }
        }
        String::from_utf8(bytes).expect("utf-8")
    } else {
        body.to_owned()
    }
}

/// What a fake authority (the document registry, the bank's check) was asked, in order.
pub type Questions = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A fake authority over real HTTP on 127.0.0.1: each JSON question gets `answer(question)`'s
/// verdict (MATCH, NO_MATCH, UNKNOWN) after its delay. Its URL, and what it was asked.
pub async fn fake_authority(
    answer: impl Fn(&serde_json::Value) -> (&'static str, Duration) + Send + Sync + 'static,
) -> (String, Questions) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let asked = Questions::default();
    let (log, answer) = (asked.clone(), std::sync::Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of JSON.
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_owned();
                        }
                    }
                };
                let question: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let (verdict, delay) = answer(&question);
                log.lock().expect("lock").push(question);
                tokio::time::sleep(delay).await;
                let json = format!("{{\"result\":\"{verdict}\"}}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/v1/documents/verify"), asked)
}
