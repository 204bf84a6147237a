//! The resource manager: the node's actor for what the engine's resource managers need
//! from a node. Every second it settles the slices of cluster-wide limits that expired
//! (what was not used goes back to the other nodes); every few seconds it measures the
//! machine, publishes the measurement for the heartbeat and the API, and raises or
//! lowers the low-on-disk flag the dispatcher obeys. Locks, budgets and quotas themselves
//! live in the store and are taken in the lease transaction, so this actor holds nothing
//! a crash could lose: restarted by its supervisor, it simply measures again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, NodeResources};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::machine::Sampler;
use crate::routing::SharedLimits;

/// How often expired slices are settled.
const TICK: Duration = Duration::from_secs(1);
/// How often the machine is measured.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

/// Messages of the resource manager.
pub enum ResourceManagerMsg {
    /// Settle expired slices; measure when due.
    Tick,
}

impl ractor::Message for ResourceManagerMsg {}

/// What the resource manager shares with the rest of the node.
#[derive(Clone)]
pub struct ResourceShare {
    /// The last measurement (the heartbeat carries it).
    pub measured: Arc<RwLock<NodeResources>>,
    /// Set while a work disk is below its floor.
    pub low_on_disk: Arc<AtomicBool>,
}

/// Arguments of the resource manager.
pub struct ResourceManagerArgs {
    /// The engine (its clock dates the measurements).
    pub engine: Engine,
    /// Measures the machine.
    pub sampler: Arc<Mutex<Sampler>>,
    /// Where measurements are published.
    pub share: ResourceShare,
    /// The providers' cluster-wide limits, when nodes share a store.
    pub shared: Option<Arc<SharedLimits>>,
    /// Times the ticks.
    pub clock: Clock,
}

/// The resource manager actor.
#[derive(Clone)]
pub struct ResourceManager;

/// Its state.
pub struct ResourceManagerState {
    args: ResourceManagerArgs,
    ticker: Option<JoinHandle<()>>,
    measured_at: Option<Instant>,
}

impl ResourceManagerState {
    fn measure(&mut self) {
        let now = self.args.clock.now();
        if self
            .measured_at
            .is_some_and(|at| now.saturating_duration_since(at) < MEASURE_EVERY)
        {
            return;
        }
        self.measured_at = Some(now);
        let wall = self.args.engine.now_micros();
        let resources = match self.args.sampler.lock() {
            Ok(mut sampler) => sampler.sample(wall),
            Err(_) => return,
        };
        let was_low = self
            .args
            .share
            .low_on_disk
            .swap(resources.low_on_disk, Ordering::Relaxed);
        if resources.low_on_disk && !was_low {
            tracing::warn!(
                "a work disk is below its free-space floor (node.min_free_disk_mb): this node takes no repository tasks until it has room"
            );
        } else if was_low && !resources.low_on_disk {
            tracing::info!("work disks have room again: this node takes repository tasks");
        }
        if let Ok(mut published) = self.args.share.measured.write() {
            *published = resources;
        }
    }
}

impl Actor for ResourceManager {
    type Msg = ResourceManagerMsg;
    type State = ResourceManagerState;
    type Arguments = ResourceManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ResourceManagerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker = args
            .clock
            .send_interval(&myself, TICK, || ResourceManagerMsg::Tick);
        let mut state = ResourceManagerState {
            args,
            ticker: Some(ticker),
            measured_at: None,
        };
        state.measure();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ResourceManagerMsg::Tick => {
                if let Some(shared) = &state.args.shared {
                    shared.settle_expired().await;
                }
                state.measure();
            }
        }
        Ok(())
    }
}
