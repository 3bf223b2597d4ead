//! CNS (Carta Nazionale dei Servizi) logins: the smart card's certificate, verified by the TLS
//! handshake against the configured CA, names the citizen in its subject.

use base64::Engine;
use sportello_platform::service_identity::{
    CnsAssertion, ServiceKey, CNS_ASSERTION_HEADER, CNS_CERTIFICATE_HEADER,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// How the gateway vouches for a CNS card to identity-svc: an assertion signed with its own
/// key, bound to the certificate's fingerprint, valid for a minute.
#[derive(Clone, Debug)]
pub struct Vouch {
    key: ServiceKey,
}

impl Vouch {
    pub fn new(key: ServiceKey) -> Self {
        Self { key }
    }

    /// Adds to `headers` the gateway's assertion of the fiscal code in `cert_der`, and the
    /// certificate it is bound to; adds nothing when the certificate names no fiscal code.
    /// Call only after the client's own `x-sportello-*` headers are gone.
    pub fn vouch(&self, cert_der: &[u8], headers: &mut http::HeaderMap) {
        let Some(cf) = fiscal_code_of(cert_der) else { return };
        let assertion = CnsAssertion::new(self.key.name(), &cf, cert_der);
        let cert = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cert_der);
        match (self.key.sign(&assertion).map(|a| a.parse()), cert.parse()) {
            (Ok(Ok(assertion)), Ok(cert)) => {
                headers.insert(CNS_ASSERTION_HEADER, assertion);
                headers.insert(CNS_CERTIFICATE_HEADER, cert);
            }
            _ => tracing::warn!("could not sign a CNS assertion"),
        }
    }
}

/// The fiscal code in a CNS certificate's subject: the `serialNumber` attribute
/// (`TINIT-<CF>`, `IT:<CF>` or the bare code), else a common name of the form `<CF>/<card id>`.
pub fn fiscal_code_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let subject = cert.subject();
    let candidates = subject
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .filter_map(|a| a.as_str().ok())
        .map(|s| s.trim().trim_start_matches("TINIT-").trim_start_matches("IT:").to_owned())
        .chain(
            subject
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .map(|cn| cn.split('/').next().unwrap_or_default().trim().to_owned()),
        );
    let found = candidates
        .map(|c| c.to_ascii_uppercase())
        .find(|c| c.len() == 16 && c.chars().all(|ch| ch.is_ascii_alphanumeric()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn the_fiscal_code_comes_from_the_serial_number_attribute() {
        let der = cert(&[
            (rcgen::DnType::CommonName, "Mario Rossi"),
            (rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "TINIT-RSSMRA85T10A562S"),
        ]);
        assert_eq!(fiscal_code_of(&der).as_deref(), Some("RSSMRA85T10A562S"));
    }

    #[test]
    fn or_from_a_cns_style_common_name() {
        let der = cert(&[(rcgen::DnType::CommonName, "RSSMRA85T10A562S/7420091000049623.FmM=")]);
        assert_eq!(fiscal_code_of(&der).as_deref(), Some("RSSMRA85T10A562S"));
    }

    #[test]
    fn a_certificate_naming_no_fiscal_code_names_nobody() {
        let der = cert(&[(rcgen::DnType::CommonName, "server.example.it")]);
        assert_eq!(fiscal_code_of(&der), None);
        assert_eq!(fiscal_code_of(b"not a certificate"), None);
    }
}
