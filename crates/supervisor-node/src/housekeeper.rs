//! The housekeeper vests retries and takes back lapsed leases. One node at a time does
//! it, the holder of the reaper duty (a store lease with a fencing token, checked in
//! every sweep's transaction); the others stand by to take over. It sleeps until the
//! earliest timer is due (or a local commit arms an earlier one), never on a fixed poll;
//! `max_idle` only bounds the sleep so timers armed by other nodes are not missed.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, NodeIdentity, REAPER_DUTY};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;

/// Messages of the housekeeper.
pub enum HousekeeperMsg {
    /// Handle what is due now.
    Sweep,
}

impl ractor::Message for HousekeeperMsg {}

/// Arguments of the housekeeper.
pub struct HousekeeperArgs {
    /// The engine.
    pub engine: Engine,
    /// Longest sleep between sweeps.
    pub max_idle: Duration,
    /// Most timers handled per transaction.
    pub batch: usize,
    /// This node's current identity (the reaper duty is held in its name).
    pub node: watch::Receiver<NodeIdentity>,
    /// Lease of the reaper duty; renewed every third of it.
    pub duty_lease: Duration,
    /// Times sleeps between sweeps and duty renewals.
    pub clock: Clock,
}

/// The housekeeper actor.
#[derive(Clone)]
pub struct Housekeeper;

/// Its state.
pub struct HousekeeperState {
    args: HousekeeperArgs,
    sleeper: Option<JoinHandle<()>>,
    /// The reaper duty's fencing token and when it was last renewed, while held.
    duty: Option<(u64, std::time::Instant)>,
}

impl HousekeeperState {
    /// The duty's fencing token if this node holds it (renewing it when due).
    async fn duty(&mut self) -> Option<u64> {
        let renew_every = self.args.duty_lease / 3;
        if let Some((fence, at)) = self.duty
            && self.args.clock.since(at) < renew_every
        {
            return Some(fence);
        }
        let node = self.args.node.borrow().clone();
        match self
            .args
            .engine
            .acquire_singleton(REAPER_DUTY, &node, self.args.duty_lease)
            .await
        {
            Ok(Some(fence)) => {
                if self.duty.is_none_or(|(f, _)| f != fence) {
                    tracing::info!(fence, "this node now sweeps timers (reaper duty)");
                }
                self.duty = Some((fence, self.args.clock.now()));
                Some(fence)
            }
            Ok(None) => {
                self.duty = None;
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not take the reaper duty");
                self.duty = None;
                None
            }
        }
    }
}

impl Actor for Housekeeper {
    type Msg = HousekeeperMsg;
    type State = HousekeeperState;
    type Arguments = HousekeeperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HousekeeperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(HousekeeperMsg::Sweep)?;
        Ok(HousekeeperState {
            args,
            sleeper: None,
            duty: None,
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
        if let Some(s) = state.sleeper.take() {
            s.abort();
        }
        let engine = state.args.engine.clone();
        let Some(fence) = state.duty().await else {
            // Another node sweeps; stand by to take over when its duty passes on.
            let standby = state.args.duty_lease / 3;
            state.sleeper = Some(
                state
                    .args
                    .clock
                    .send_after(&myself, standby, || HousekeeperMsg::Sweep),
            );
            return Ok(());
        };
        let sleep_for = match engine.sweep_timers_as_reaper(state.args.batch, fence).await {
            Ok(sweep) if sweep.lost_duty => {
                state.duty = None;
                Duration::ZERO
            }
            Ok(sweep) if sweep.retries_vested + sweep.leases_reclaimed >= state.args.batch => {
                Duration::ZERO
            }
            Ok(sweep) => {
                if sweep.retries_vested + sweep.leases_reclaimed > 0 {
                    tracing::debug!(
                        vested = sweep.retries_vested,
                        reclaimed = sweep.leases_reclaimed,
                        "timers handled"
                    );
                }
                match sweep.next_due {
                    Some(due) => {
                        let wait = due.saturating_sub(engine.now_micros()).max(0) as u64;
                        Duration::from_micros(wait).min(state.args.max_idle)
                    }
                    None => state.args.max_idle,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "timer sweep failed; retrying shortly");
                Duration::from_millis(500)
            }
        };
        if sleep_for.is_zero() {
            myself.cast(HousekeeperMsg::Sweep)?;
            return Ok(());
        }
        let sleep = state.args.clock.sleep(sleep_for);
        state.sleeper = Some(tokio::spawn(async move {
            tokio::select! {
                _ = sleep => {}
                _ = engine.timers_notified() => {}
            }
            let _ = myself.cast(HousekeeperMsg::Sweep);
        }));
        Ok(())
    }
}
