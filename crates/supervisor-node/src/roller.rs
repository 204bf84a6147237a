//! The roller keeps the analytics rollups: it folds closed minutes into hour and day rows
//! and drops rows past their retention. Every node runs one, but only the holder of the
//! store's roller duty works; the others stand by and take over when the lease lapses.
//! It is its own duty rather than a step of the scheduler's so that a long fold never
//! delays a schedule's tick, and the engine makes each fold exactly once whoever runs it.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, NodeIdentity, ROLLER_DUTY};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;

/// How often the holder drops expired rows (folding happens at every tick).
const EXPIRE_EVERY: Duration = Duration::from_secs(600);

/// Messages of the roller.
pub enum RollerMsg {
    /// Take or renew the duty and fold what closed.
    Tick,
}

impl ractor::Message for RollerMsg {}

/// Arguments of the roller.
pub struct RollerArgs {
    /// The engine.
    pub engine: Engine,
    /// This node's current identity.
    pub node: watch::Receiver<NodeIdentity>,
    /// How long the duty lasts without renewal; the roller ticks every third of it.
    pub lease: Duration,
    /// Times its sleeps.
    pub clock: Clock,
}

/// The roller actor.
#[derive(Clone)]
pub struct Roller;

/// Its state.
pub struct RollerState {
    args: RollerArgs,
    sleeper: Option<JoinHandle<()>>,
    /// When this node last dropped expired rows.
    expired_at: Option<Instant>,
}

impl RollerState {
    /// Folds (and now and then expires) under the duty `fence`.
    async fn work(&mut self, fence: u64) {
        let engine = &self.args.engine;
        match engine.roll_analytics_as_roller(fence).await {
            Ok(roll) if roll.lost_duty => return,
            Ok(roll) => {
                if roll.minutes_folded > 0 {
                    tracing::debug!(minutes = roll.minutes_folded, "analytics minutes folded");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "folding the analytics rollups failed; retrying at the next tick");
                return;
            }
        }
        if self
            .expired_at
            .is_some_and(|at| self.args.clock.since(at) < EXPIRE_EVERY)
        {
            return;
        }
        match engine.expire_analytics(Some(fence)).await {
            Ok(_) => self.expired_at = Some(self.args.clock.now()),
            Err(err) => {
                tracing::warn!(error = %err, "dropping expired analytics rows failed; retrying at the next tick");
            }
        }
    }
}

impl Actor for Roller {
    type Msg = RollerMsg;
    type State = RollerState;
    type Arguments = RollerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RollerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(RollerMsg::Tick)?;
        Ok(RollerState {
            args,
            sleeper: None,
            expired_at: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(s) = state.sleeper.take() {
            s.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        _msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let node = state.args.node.borrow().clone();
        let every = state.args.lease / 3;
        let acquired = state
            .args
            .engine
            .acquire_singleton(ROLLER_DUTY, &node, state.args.lease)
            .await;
        let sleep_for = match acquired {
            Ok(Some(fence)) => {
                state.work(fence).await;
                every
            }
            Ok(None) => {
                state.expired_at = None;
                every
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not take the roller duty; retrying shortly");
                Duration::from_secs(1)
            }
        };
        state.sleeper = Some(state.args.clock.send_after(
            &myself,
            sleep_for.max(Duration::from_millis(10)),
            || RollerMsg::Tick,
        ));
        Ok(())
    }
}
