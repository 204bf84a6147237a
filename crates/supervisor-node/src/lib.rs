//! The actor side of a Supervisor node: the supervision tree that leases tasks, runs them in
//! agent actors on provider actors, keeps timers moving and watches its peers.
//!
//! ```text
//! <node>#<epoch>/node (OneForOne: restart budget + backoff)
//! ├── provider:<name>   ProviderActor per provider: health probe; serves other nodes' calls
//! ├── dispatcher        leases ready tasks, renews leases, relays cancels
//! │   └── agents        one per attempt: route, run, stream output, write the fenced outcome
//! ├── housekeeper       vests retries, takes back lapsed leases (holder of the reaper duty)
//! ├── scheduler         fires workflow schedules (holder of the scheduler duty)
//! ├── roller            folds analytics minutes into hours and days (holder of the roller duty)
//! └── membership        heartbeat, peers' silences, fencing, rejoin after a fence, drain
//! ```
//!
//! With `cluster.listen` set, [`Node`] also links to its peers over ractor_cluster, so a
//! task can run on a provider only another node has.
//!
//! All durable state lives in the engine (and so in the store). Killing the process at any
//! point loses nothing: on the next start the node takes a new epoch and reclaims the
//! leases its previous incarnation held.
//!
//! # Inside the crate
//! Modules depend on the ones listed before them, never on later ones:
//! `config`, `error`, `clock`, `rng`, `backoff` (settings and seams) ← `supervision` (the restart
//! behaviour) ← `routing` (providers' live state and the choice among them; pure, no
//! actors) ← `wire` (what crosses between nodes) ← `provider_actor` ← `agent` ←
//! `dispatcher` ← `housekeeper`, `scheduler`, `roller`, `membership` ← `cluster` (links to peers,
//! remote providers) ← `node` (the assembly). Everything is private but the API below.

#![warn(missing_docs)]

mod agent;
mod backoff;
mod clock;
mod cluster;
mod config;
mod dispatcher;
mod duty;
mod error;
mod housekeeper;
mod machine;
mod membership;
mod node;
mod provider_actor;
mod resource_manager;
mod rng;
mod roller;
mod routing;
mod scheduler;
mod spans;
mod supervision;
mod sweeper;
mod wire;

pub use clock::{Clock, ManualClock};
pub use cluster::SessionInfo;
pub use config::{ClusterConfig, ClusterTls, NodeConfig, RestartPolicy, RoutingConfig};
pub use dispatcher::DrainReport;
pub use error::NodeError;
pub use membership::{Liveness, PeerView};
pub use node::{Node, NodeSetup, ProviderSpec};
pub use rng::Rng;
pub use routing::ProviderSnapshot;
pub use supervision::TreeHealth;

/// The crate's internals, for its own tests of the network between nodes (which drive a
/// cluster listener, provider actors and a router by hand). Not part of the API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::cluster::{ClusterNet, Peer, RemoteProviderInfo};
    pub use crate::membership::LivePeer;
    pub use crate::provider_actor::{ProviderActor, ProviderArgs};
    pub use crate::routing::{ProviderHandle, RouteError, RouteRequest, Router};
}
