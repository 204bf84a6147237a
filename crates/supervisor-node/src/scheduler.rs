//! The scheduler fires workflow schedules. Every node runs one, but only the holder of
//! the store's scheduler lease fires; the others stand by and take over when the lease
//! lapses. Each tick is fired in one transaction that also records it, so a tick starts
//! one run however many nodes try.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, NodeIdentity, SCHEDULER_DUTY};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;

/// Messages of the scheduler.
pub enum SchedulerMsg {
    /// Take or renew the lease and fire what is due.
    Tick,
}

impl ractor::Message for SchedulerMsg {}

/// Arguments of the scheduler.
pub struct SchedulerArgs {
    /// The engine.
    pub engine: Engine,
    /// This node's current identity.
    pub node: watch::Receiver<NodeIdentity>,
    /// How long the lease lasts without renewal (a dead holder delays ticks by at most
    /// this much).
    pub lease: Duration,
    /// Times its sleeps.
    pub clock: Clock,
}

/// The scheduler actor.
#[derive(Clone)]
pub struct Scheduler;

/// Its state.
pub struct SchedulerState {
    args: SchedulerArgs,
    sleeper: Option<JoinHandle<()>>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(SchedulerMsg::Tick)?;
        Ok(SchedulerState {
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
        let engine = &state.args.engine;
        // Renew well before the lease lapses; a standby looks again as often.
        let renew_every = state.args.lease / 3;
        let node = state.args.node.borrow().clone();
        let sleep_for = match engine
            .acquire_singleton(SCHEDULER_DUTY, &node, state.args.lease)
            .await
        {
            Ok(Some(fence)) => match engine.fire_due_schedules(fence).await {
                Ok((fired, next)) => {
                    if fired > 0 {
                        tracing::info!(fired, "scheduled workflow runs started");
                    }
                    let until_next = next
                        .map(|n| {
                            Duration::from_micros(
                                n.saturating_sub(engine.now_micros()).max(0) as u64
                            )
                        })
                        .unwrap_or(renew_every);
                    until_next.min(renew_every)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "firing schedules failed; retrying shortly");
                    Duration::from_secs(1)
                }
            },
            Ok(None) => renew_every,
            Err(err) => {
                tracing::warn!(error = %err, "could not take the scheduler lease; retrying shortly");
                Duration::from_secs(1)
            }
        };
        state.sleeper = Some(state.args.clock.send_after(
            &myself,
            sleep_for.max(Duration::from_millis(10)),
            || SchedulerMsg::Tick,
        ));
        Ok(())
    }
}
