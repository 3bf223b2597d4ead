//! Sportello's gRPC contract: the Rust types and tonic clients/servers generated from the
//! `.proto` files under `proto/sportello`, and the file descriptor set that reflection serves.

/// `sportello.identity.v1`: citizens' credentials.
pub mod identity {
    /// Version 1 of the identity contract.
    pub mod v1 {
        tonic::include_proto!("sportello.identity.v1");
    }
}

/// `sportello.claims.v1`: benefits and claims.
pub mod claims {
    /// Version 1 of the claims contract.
    pub mod v1 {
        tonic::include_proto!("sportello.claims.v1");
    }
}

/// `sportello.notify.v1`: notifications.
pub mod notify {
    /// Version 1 of the notify contract.
    pub mod v1 {
        tonic::include_proto!("sportello.notify.v1");
    }
}

/// `sportello.privacy.v1`: what is held about a citizen and who touched it.
pub mod privacy {
    /// Version 1 of the privacy contract.
    pub mod v1 {
        tonic::include_proto!("sportello.privacy.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Sportello service, for tonic-reflection; it also holds
/// `google/rpc/status.proto` and `google/rpc/error_details.proto`, so that clients can decode the
/// error details (BadRequest, ErrorInfo, RetryInfo…) our statuses carry.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sportello_descriptor");

/// Fully-qualified names of Sportello's public gRPC services, as routed by the gateway.
pub const SERVICE_NAMES: &[&str] = &[
    "sportello.identity.v1.IdentityService",
    "sportello.claims.v1.ClaimsService",
    "sportello.claims.v1.ClaimsBackOfficeService",
    "sportello.notify.v1.NotifyService",
    "sportello.privacy.v1.PrivacyService",
];
