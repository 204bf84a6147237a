//! Errors starting or stopping a node.

use supervisor_engine::EngineError;

/// Errors starting or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The engine failed (registering the node, reclaiming leases).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// An actor could not start.
    #[error("could not start the node's actors: {0}")]
    Spawn(String),
    /// No provider was configured.
    #[error("no provider is configured; configure at least one under [providers]")]
    NoProvider,
    /// The configuration does not hold together.
    #[error("invalid configuration: {0}")]
    Config(String),
}
