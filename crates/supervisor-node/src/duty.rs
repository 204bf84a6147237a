//! Singleton duties: work that one node of the cluster does at a time (sweeping timers,
//! firing schedules, rolling up analytics). Every node runs one [`Duty`] actor per duty;
//! only the holder of the duty's store lease works, under the lease's fencing token
//! (checked by the engine in every transaction of the work), and the others stand by to
//! take over when the lease passes on. This module holds the lease and the sleeping; a
//! [`Work`] says what one round does and when the next is due.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_engine::{Engine, NodeIdentity};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;

/// When the next round is due, as one round says.
pub enum Round {
    /// At once (more work is waiting).
    Again,
    /// After this long, or earlier when [`Work::early`] resolves.
    After(Duration),
    /// After this long, taking the lease afresh (the round failed: the token may be stale).
    Retry(Duration),
    /// The lease passed to another node during the round: look again at once.
    LostDuty,
}

/// A future resolving when a round may be due early.
pub type Early = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a duty does.
pub trait Work: Send + Sync + 'static {
    /// The duty's name in the store.
    fn key(&self) -> &'static str;
    /// One round under the duty's fencing token `fence`.
    fn round(&mut self, engine: &Engine, fence: u64) -> impl Future<Output = Round> + Send;
    /// Another node holds the duty (forget what only the holder keeps).
    fn stand_by(&mut self) {}
    /// Resolves when a round may be due before its sleep ends (default: never).
    fn early(&self, _engine: &Engine) -> Option<Early> {
        None
    }
}

/// Messages of a duty actor.
pub struct Tick;

impl ractor::Message for Tick {}

/// Arguments of a duty actor.
pub struct DutyArgs<W> {
    /// The engine.
    pub engine: Engine,
    /// This node's current identity (the duty is held in its name).
    pub node: watch::Receiver<NodeIdentity>,
    /// How long the lease lasts without renewal; it is renewed every third of it, and a
    /// standby looks as often.
    pub lease: Duration,
    /// Times the sleeps.
    pub clock: Clock,
    /// What the duty does.
    pub work: W,
}

/// What every duty actor of a node shares: [`DutyArgs`] but the work.
#[derive(Clone)]
pub struct DutyContext {
    /// The engine.
    pub engine: Engine,
    /// This node's current identity.
    pub node: watch::Receiver<NodeIdentity>,
    /// The duties' lease.
    pub lease: Duration,
    /// Times the sleeps.
    pub clock: Clock,
}

impl DutyContext {
    /// The arguments of the actor doing `work`.
    pub fn args<W>(&self, work: W) -> DutyArgs<W> {
        DutyArgs {
            engine: self.engine.clone(),
            node: self.node.clone(),
            lease: self.lease,
            clock: self.clock.clone(),
            work,
        }
    }
}

/// The actor running the duty `W`.
pub struct Duty<W>(PhantomData<fn() -> W>);

impl<W> Duty<W> {
    /// The actor.
    pub fn new() -> Self {
        Duty(PhantomData)
    }
}

impl<W> Clone for Duty<W> {
    fn clone(&self) -> Self {
        Duty(PhantomData)
    }
}

/// Its state.
pub struct DutyState<W> {
    args: DutyArgs<W>,
    sleeper: Option<JoinHandle<()>>,
    /// The lease's fencing token and when it was last renewed, while held.
    held: Option<(u64, Instant)>,
}

impl<W: Work> DutyState<W> {
    /// The lease's fencing token if this node holds it, renewing it when due.
    async fn fence(&mut self) -> Result<Option<u64>, ()> {
        if let Some((fence, at)) = self.held
            && self.args.clock.since(at) < self.args.lease / 3
        {
            return Ok(Some(fence));
        }
        let node = self.args.node.borrow().clone();
        let key = self.args.work.key();
        match self
            .args
            .engine
            .acquire_singleton(key, &node, self.args.lease)
            .await
        {
            Ok(Some(fence)) => {
                if self.held.is_none_or(|(f, _)| f != fence) {
                    tracing::info!(fence, duty = key, "this node now holds the duty");
                }
                self.held = Some((fence, self.args.clock.now()));
                Ok(Some(fence))
            }
            Ok(None) => {
                self.held = None;
                Ok(None)
            }
            Err(err) => {
                tracing::warn!(error = %err, duty = key, "could not take the duty's lease; retrying shortly");
                self.held = None;
                Err(())
            }
        }
    }
}

impl<W: Work> Actor for Duty<W> {
    type Msg = Tick;
    type State = DutyState<W>;
    type Arguments = DutyArgs<W>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DutyArgs<W>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(Tick)?;
        Ok(DutyState {
            args,
            sleeper: None,
            held: None,
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
        _msg: Tick,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(s) = state.sleeper.take() {
            s.abort();
        }
        let standby = state.args.lease / 3;
        let round = match state.fence().await {
            Ok(Some(fence)) => {
                let engine = state.args.engine.clone();
                state.args.work.round(&engine, fence).await
            }
            Ok(None) => {
                state.args.work.stand_by();
                Round::After(standby)
            }
            Err(()) => Round::After(Duration::from_secs(1)),
        };
        let sleep_for = match round {
            Round::Again => Duration::ZERO,
            Round::LostDuty => {
                state.held = None;
                Duration::ZERO
            }
            Round::Retry(wait) => {
                state.held = None;
                wait
            }
            Round::After(wait) => wait.min(standby),
        };
        if sleep_for.is_zero() {
            myself.cast(Tick)?;
            return Ok(());
        }
        let sleep = state.args.clock.sleep(sleep_for);
        let early = state.args.work.early(&state.args.engine);
        state.sleeper = Some(tokio::spawn(async move {
            match early {
                Some(early) => {
                    tokio::select! {
                        _ = sleep => {}
                        _ = early => {}
                    }
                }
                None => sleep.await,
            }
            let _ = myself.cast(Tick);
        }));
        Ok(())
    }
}
