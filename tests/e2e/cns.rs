//! CNS logins: a smart card's TLS client certificate, issued by the configured CA, logs its
//! citizen in through the gateway; nothing a client sends can stand in for it.

use crate::helpers::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sportello_platform::server::TlsSettings;
use sportello_platform::service_identity::{
    CnsAssertion, ServiceKey, CNS_ASSERTION_HEADER, CNS_CERTIFICATE_HEADER,
};
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A certificate signed by `issuer`: (certificate PEM, key PEM).
fn issue(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: Vec<String>,
    dn: &[(DnType, &str)],
) -> (String, String) {
    let mut params = CertificateParams::new(names).expect("params");
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write");
    path
}

/// What a CNS test needs: the suite with a TLS gateway, and PEMs to make clients with.
struct Cns {
    suite: Suite,
    server_ca: String,
    citizen: (String, String),
    stranger: (String, String),
}

async fn cns_suite() -> Cns {
    let dir = tempfile::tempdir().expect("dir").keep();
    let server_ca = ca("Sportello test server CA");
    let cns_ca = ca("Test CNS issuer");
    let other_ca = ca("Someone else's CA");
    let (server_cert, server_key) =
        issue(&server_ca, vec!["localhost".into()], &[(DnType::CommonName, "localhost")]);
    let serial = DnType::CustomDnType(vec![2, 5, 4, 5]);
    let citizen = issue(
        &cns_ca,
        vec![],
        &[
            (DnType::CommonName, "RSSMRA85T10A562S/7420091000049623"),
            (serial.clone(), "TINIT-RSSMRA85T10A562S"),
        ],
    );
    let stranger = issue(&other_ca, vec![], &[(serial, "TINIT-RSSMRA85T10A562S")]);
    let tls = TlsSettings {
        cert_file: write(&dir, "server.pem", &server_cert),
        key_file: write(&dir, "server.key", &server_key),
        client_ca_file: Some(write(&dir, "cns-ca.pem", &cns_ca.pem())),
    };
    let suite = spawn_suite_with(|c| {
        c.gateway.server.tls = Some(tls);
    })
    .await;
    Cns { suite, server_ca: server_ca.pem(), citizen, stranger }
}

async fn tls_channel(
    cns: &Cns,
    client: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cns.server_ca))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", cns.suite.gateway.addr))?
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn a_cns_card_logs_its_citizen_in_at_the_dispositive_level() {
    let cns = cns_suite().await;
    let channel = tls_channel(&cns, Some(&cns.citizen)).await.expect("TLS with the card");
    let mut identity = IdentityServiceClient::new(channel);
    let session = identity
        .login_with_certificate(id::LoginWithCertificateRequest {})
        .await
        .expect("CNS login")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(session.method, id::AuthMethod::Cns as i32);
    assert_eq!(session.level, id::CredentialLevel::Dispositive as i32);
    let profile = identity
        .get_profile(with_token(&session.access_token, id::GetProfileRequest {}))
        .await
        .expect("profile")
        .into_inner();
    assert_eq!(profile.subject, ROSSI);
    assert_eq!(profile.login_description, "autenticato con CNS");
}

#[tokio::test]
async fn without_a_card_or_with_forged_headers_there_is_no_cns_login() {
    let cns = cns_suite().await;
    let channel = tls_channel(&cns, None).await.expect("TLS without a card still serves");
    let mut identity = IdentityServiceClient::new(channel);
    let der = pem_der(&cns.citizen.0);
    let gateway =
        ServiceKey::load_or_generate(cns.suite.db.data_dir(), gateway::NAME).expect("key");
    let genuine = CnsAssertion::new(gateway::NAME, ROSSI, &der);
    // Even a genuine assertion a client copied is stripped by the gateway.
    let forged = vouched(&gateway.sign(&genuine).expect("signed"), &der);
    let status = identity.login_with_certificate(forged).await.expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// A CNS login request carrying `assertion` and the certificate `der`.
fn vouched(assertion: &str, der: &[u8]) -> tonic::Request<id::LoginWithCertificateRequest> {
    use base64::Engine;
    let mut request = tonic::Request::new(id::LoginWithCertificateRequest {});
    let cert = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der);
    request.metadata_mut().insert(CNS_ASSERTION_HEADER, assertion.parse().expect("ascii"));
    request.metadata_mut().insert(CNS_CERTIFICATE_HEADER, cert.parse().expect("ascii"));
    request
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("PEM body")
}

#[tokio::test]
async fn identity_accepts_only_a_fresh_assertion_of_the_gateway_bound_to_the_certificate() {
    let suite = spawn_suite().await;
    let mut direct = IdentityServiceClient::new(connect(suite.identity.addr).await);
    let card = pem_der(&issue(&ca("CNS"), vec![], &[(DnType::CommonName, ROSSI)]).0);
    let other_card = pem_der(&issue(&ca("CNS"), vec![], &[(DnType::CommonName, ROSSI)]).0);
    let gateway = ServiceKey::load_or_generate(suite.db.data_dir(), gateway::NAME).expect("key");
    let elsewhere = tempfile::tempdir().expect("dir");
    let impostor = ServiceKey::load_or_generate(elsewhere.path(), gateway::NAME).expect("key");
    let fresh = CnsAssertion::new(gateway::NAME, ROSSI, &card);
    let expired = CnsAssertion { iat: fresh.iat - 600, exp: fresh.iat - 540, ..fresh.clone() };
    let too_long = CnsAssertion { exp: fresh.iat + 3600, ..fresh.clone() };
    let refused = [
        ("no assertion", tonic::Request::new(id::LoginWithCertificateRequest {})),
        ("a key the gateway does not hold", vouched(&impostor.sign(&fresh).expect("s"), &card)),
        ("expired", vouched(&gateway.sign(&expired).expect("s"), &card)),
        ("longer than a minute", vouched(&gateway.sign(&too_long).expect("s"), &card)),
        ("another certificate", vouched(&gateway.sign(&fresh).expect("s"), &other_card)),
        ("a session token's key", vouched(&suite.service_token(), &card)),
    ];
    for (what, request) in refused {
        let status = direct.login_with_certificate(request).await.expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    }
    let session = direct
        .login_with_certificate(vouched(&gateway.sign(&fresh).expect("s"), &card))
        .await
        .expect("the gateway's own fresh assertion")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(session.method, id::AuthMethod::Cns as i32);
}

#[tokio::test]
async fn a_card_from_another_issuer_is_refused_in_the_handshake() {
    let cns = cns_suite().await;
    let refused = match tls_channel(&cns, Some(&cns.stranger)).await {
        Err(_) => true,
        Ok(channel) => IdentityServiceClient::new(channel)
            .login_with_certificate(id::LoginWithCertificateRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a certificate the configured CA did not issue logs nobody in");
}
