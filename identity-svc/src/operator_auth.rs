//! Who is calling the contact-center RPCs. The one place that decides it, so that the API key of
//! today can be swapped for staff session tokens without touching a handler.

use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// An authenticated contact-center operator, put in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
}

/// Checks `authorization: Bearer <key>` against the configured operators' keys.
#[derive(Clone, Debug)]
pub struct OperatorAuth {
    keys: Arc<BTreeMap<String, String>>,
}

impl OperatorAuth {
    pub fn new(keys: BTreeMap<String, String>) -> Self {
        Self { keys: Arc::new(keys) }
    }

    fn operator_for(&self, presented: &str) -> Option<Operator> {
        // Compare against every key in constant time, so timing reveals neither which key nor
        // how much of it matched.
        let mut found = None;
        for (id, key) in self.keys.iter() {
            if bool::from(key.as_bytes().ct_eq(presented.as_bytes())) && !key.is_empty() {
                found = Some(Operator { id: id.clone() });
            }
        }
        found
    }
}

impl Interceptor for OperatorAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        match self.operator_for(presented) {
            Some(operator) => {
                request.extensions_mut().insert(operator);
                Ok(request)
            }
            None => Err(Status::unauthenticated("operator credentials required")),
        }
    }
}

/// The operator of a request that passed [`OperatorAuth`].
pub fn operator<T>(request: &Request<T>) -> Result<Operator, Status> {
    request
        .extensions()
        .get::<Operator>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("operator credentials required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> OperatorAuth {
        OperatorAuth::new(BTreeMap::from([("op.rossi".into(), "s3cret-key".into())]))
    }

    fn call(header: Option<&str>) -> Result<Request<()>, Status> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().expect("ascii"));
        }
        auth().call(request)
    }

    #[test]
    fn an_operator_with_a_configured_key_is_let_through_and_named() {
        let request = call(Some("Bearer s3cret-key")).expect("authenticated");
        assert_eq!(operator(&request).expect("operator").id, "op.rossi");
    }

    #[test]
    fn a_missing_or_wrong_key_is_unauthenticated() {
        for header in [None, Some("Bearer wrong"), Some("s3cret-key"), Some("Bearer ")] {
            let status = call(header).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header:?}");
        }
    }

    #[test]
    fn an_empty_configured_key_never_matches() {
        let mut auth = OperatorAuth::new(BTreeMap::from([("op".into(), String::new())]));
        let mut request = Request::new(());
        request.metadata_mut().insert("authorization", "Bearer ".parse().expect("ascii"));
        assert!(auth.call(request).is_err());
    }
}
