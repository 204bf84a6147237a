//! The housekeeper vests retries and takes back lapsed leases. It sleeps until the
//! earliest timer is due (or a local commit arms an earlier one), never on a fixed poll;
//! `max_idle` only bounds the sleep so timers armed by other nodes are not missed.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::Engine;
use tokio::task::JoinHandle;

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
}

/// The housekeeper actor.
pub struct Housekeeper;

/// Its state.
pub struct HousekeeperState {
    args: HousekeeperArgs,
    sleeper: Option<JoinHandle<()>>,
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
        let sleep_for = match engine.sweep_timers(state.args.batch).await {
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
        state.sleeper = Some(tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(sleep_for) => {}
                _ = engine.timers_notified() => {}
            }
            let _ = myself.cast(HousekeeperMsg::Sweep);
        }));
        Ok(())
    }
}
