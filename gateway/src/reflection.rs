//! Reflection as outside callers see the contract: only the methods they may call. Internal
//! methods (service-to-service only) would be refused anyway; listing them would only advertise
//! them.

use crate::policy::{self, Access};
use prost::Message;
use prost_types::FileDescriptorSet;
use tonic::service::Routes;

/// `encoded` with every internal method removed, and every service left without methods; files
/// and message types stay (other files and error details refer to them).
pub fn public_contract(encoded: &[u8]) -> Result<FileDescriptorSet, prost::DecodeError> {
    let mut set = FileDescriptorSet::decode(encoded)?;
    for file in &mut set.file {
        let package = file.package().to_owned();
        for service in &mut file.service {
            let prefix = match package.as_str() {
                "" => format!("/{}/", service.name()),
                package => format!("/{package}.{}/", service.name()),
            };
            service
                .method
                .retain(|m| policy::access(&format!("{prefix}{}", m.name())) != Access::Internal);
        }
        file.service.retain(|s| !s.method.is_empty());
    }
    Ok(set)
}

/// The fully-qualified names of the services in `set`.
pub fn service_names(set: &FileDescriptorSet) -> Vec<String> {
    set.file
        .iter()
        .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
        .collect()
}

/// Adds reflection for `contract` (and health) to `routes`, in both `grpc.reflection.v1` and the
/// older `v1alpha` that Python's grpcio-reflection and older grpcurl builds still speak.
pub fn serve(routes: Routes, contract: &FileDescriptorSet) -> Routes {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(contract.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes
        .add_service(builder().build_v1().expect("the public contract is a valid descriptor set"))
        .add_service(
            builder().build_v1alpha().expect("the public contract is a valid descriptor set"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};

    fn contract() -> FileDescriptorSet {
        public_contract(sportello_proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
    }

    #[test]
    fn internal_methods_are_not_listed() {
        for file in contract().file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert_ne!(policy::access(&path), Access::Internal, "{path} is listed");
                }
            }
        }
        let full = FileDescriptorSet::decode(sportello_proto::FILE_DESCRIPTOR_SET).expect("set");
        let count = |set: &FileDescriptorSet| {
            set.file.iter().flat_map(|f| &f.service).map(|s| s.method.len()).sum::<usize>()
        };
        assert!(count(&contract()) < count(&full), "some methods are internal");
    }

    #[test]
    fn every_service_outside_callers_may_use_is_listed() {
        let names = service_names(&contract());
        for service in [
            "sportello.identity.v1.IdentityService",
            "sportello.identity.v1.ContactCenterService",
            "sportello.claims.v1.ClaimsService",
            "sportello.claims.v1.ClaimsBackOfficeService",
            "sportello.notify.v1.NotifyService",
        ] {
            assert!(names.iter().any(|n| n == service), "{service} missing from {names:?}");
        }
    }

    #[test]
    fn services_left_empty_go_and_files_without_services_stay() {
        let method =
            |name: &str| MethodDescriptorProto { name: Some(name.into()), ..Default::default() };
        let set = FileDescriptorSet {
            file: vec![
                FileDescriptorProto {
                    name: Some("google/rpc/status.proto".into()),
                    package: Some("google.rpc".into()),
                    ..Default::default()
                },
                FileDescriptorProto {
                    name: Some("sportello/notify/v1/notify.proto".into()),
                    package: Some("sportello.notify.v1".into()),
                    service: vec![
                        ServiceDescriptorProto {
                            name: Some("NotifyService".into()),
                            method: vec![method("EnqueueMessage"), method("ListMyMessages")],
                            ..Default::default()
                        },
                        ServiceDescriptorProto {
                            name: Some("BackOfficeOnly".into()),
                            method: vec![method("Anything")],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
            ],
        };
        let public = public_contract(&set.encode_to_vec()).expect("filtered");
        assert_eq!(public.file.len(), 2, "the google.rpc file stays");
        assert_eq!(service_names(&public), ["sportello.notify.v1.NotifyService"]);
        let methods: Vec<&str> =
            public.file[1].service[0].method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["ListMyMessages"]);
    }
}
