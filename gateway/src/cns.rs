//! CNS (Carta Nazionale dei Servizi) logins: the smart card's certificate, verified by the TLS
//! handshake against the configured CA, names the citizen in its subject.

use x509_parser::prelude::{FromDer, X509Certificate};

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

/// Tells identity-svc, in the request's headers, that the gateway verified a CNS card of the
/// citizen with `fiscal_code`; only the gateway knows `secret`, and it strips these headers from
/// whatever a client sends before calling this.
pub fn vouch(headers: &mut http::HeaderMap, fiscal_code: &str, secret: &str) {
    if let (Ok(cf), Ok(secret)) =
        (http::HeaderValue::from_str(fiscal_code), http::HeaderValue::from_str(secret))
    {
        headers.insert("x-sportello-cns-fiscal-code", cf);
        headers.insert("x-sportello-gateway-secret", secret);
    }
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
