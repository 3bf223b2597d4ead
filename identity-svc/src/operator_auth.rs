//! Who is calling the contact-center RPCs. The one place that decides it: a staff session token
//! of an operator (the API keys of the first release were swapped for this here, and nowhere
//! else).

use sportello_platform::auth::{Role, Verifier};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// An authenticated contact-center operator, put in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
}

/// Lets through requests with a valid operator session token.
#[derive(Clone, Debug)]
pub struct OperatorAuth {
    verifier: Verifier,
}

impl OperatorAuth {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl Interceptor for OperatorAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims = self.verifier.from_metadata(request.metadata())?;
        if claims.role != Role::Operator {
            return Err(Status::permission_denied("contact-center operators only"));
        }
        request.extensions_mut().insert(Operator { id: claims.sub });
        Ok(request)
    }
}

/// The operator of a request that passed [`OperatorAuth`].
pub fn operator<T>(request: &Request<T>) -> Result<Operator, Status> {
    request
        .extensions()
        .get::<Operator>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("operator session required"))
}
