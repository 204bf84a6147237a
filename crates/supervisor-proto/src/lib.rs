//! The gRPC contract of Supervisor (protobuf package `supervisor.v1`).
//!
//! The messages, enums, clients and servers are generated at build time from the
//! `.proto` files under the workspace's `proto/` folder (compiled with `protox`, so no
//! system `protoc` is needed). [`convert`] adds small pure helpers: snake_case names
//! of the enums and timestamp conversions.

#![warn(missing_docs)]

pub mod convert;

/// Generated code, one module per protobuf package.
pub mod supervisor {
    /// The `supervisor.v1` package: tasks, events, stats and providers.
    #[allow(
        missing_docs,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rustdoc::all
    )]
    pub mod v1 {
        tonic::include_proto!("supervisor.v1");
    }

    /// The `supervisor.plugin.v1` package: the service a provider plugin serves.
    pub mod plugin {
        /// Version 1.
        #[allow(
            missing_docs,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            rustdoc::all
        )]
        pub mod v1 {
            tonic::include_proto!("supervisor.plugin.v1");
        }
    }
}

pub use supervisor::plugin;

pub use supervisor::v1;

/// The encoded `google.protobuf.FileDescriptorSet` of every Supervisor `.proto` file
/// and of their imports (for `tonic-reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/supervisor_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::FILE_DESCRIPTOR_SET;

    #[test]
    fn descriptor_set_decodes_and_names_the_services() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|file| file.package() == "supervisor.v1")
            .flat_map(|file| file.service.iter().map(|s| s.name().to_owned()))
            .collect();
        assert!(services.contains(&"TaskService".to_owned()), "{services:?}");
        assert!(
            services.contains(&"ProviderService".to_owned()),
            "{services:?}"
        );
        assert!(
            fds.file
                .iter()
                .any(|file| file.name() == "google/protobuf/timestamp.proto"),
            "imports are included for reflection"
        );
    }
}
