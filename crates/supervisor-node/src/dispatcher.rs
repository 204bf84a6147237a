//! The dispatcher leases ready tasks and runs each in its own agent actor.
//!
//! It never polls: after a lease that found less than it asked for, it sleeps on the store
//! watch of the ready queue (which fires on any node's submit) and on the engine's local
//! notification (a submit on this node), whichever comes first. It also renews the leases
//! of running attempts, relays cancel notices from its inbox, fails the attempt of an agent
//! that panicked, and drains (finish or hand back) on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use supervisor_engine::{
    Engine, Finish, LeaseOptions, NodeIdentity, Outcome, RunnerWriteResult, TaskRef,
};
use supervisor_model::TaskId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::{Agent, AgentArgs};
use crate::clock::Clock;
use crate::rng::Rng;
use crate::routing::Router;

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Most attempts running at once on this node.
    pub max_in_flight: usize,
    /// Most tasks taken in one lease transaction.
    pub lease_batch: usize,
    /// How often agents write streamed output.
    pub flush_interval: Duration,
    /// Longest an agent waits for a provider to become available.
    pub route_wait: Duration,
    /// How long an idle dispatcher sleeps before re-checking the queue even without a
    /// wake-up (a safety net against a lost store watch, not the normal path).
    pub idle_recheck: Duration,
}

/// Pause before leasing again when the last lease held work back.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(500);
/// Pause before leasing again after a lease transaction failed (give or take half).
const LEASE_RETRY: Duration = Duration::from_millis(250);
/// Longest wait on the cancel inbox's watch before reading it again anyway.
const INBOX_RECHECK: Duration = Duration::from_secs(30);
/// Pause after reading the cancel inbox failed.
const INBOX_RETRY: Duration = Duration::from_secs(1);

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Attempts that finished during the drain.
    pub finished: usize,
    /// Attempts handed back to the queue for another node or a later start.
    pub handed_back: usize,
}

/// Messages of the dispatcher.
pub enum DispatcherMsg {
    /// Lease what is ready, up to free capacity.
    Pump,
    /// Results of a renewal: tasks whose lease was lost.
    LeasesLost(Vec<TaskId>),
    /// Abandon these attempts (they were cancelled).
    Abandon(Vec<TaskId>),
    /// Stop leasing; finish what runs within the timeout, hand back the rest.
    Drain(Duration, RpcReplyPort<DrainReport>),
    /// The drain's time is up.
    DrainDeadline,
    /// How many attempts are running.
    InFlight(RpcReplyPort<usize>),
    /// A peer fenced this node: its writes are refused from now on. Abandon every running
    /// attempt (their tasks are already back in the queue) and stop leasing.
    Fenced,
    /// The node rejoined under a new epoch: lease again.
    Rejoined,
}

impl ractor::Message for DispatcherMsg {}

/// Arguments of the dispatcher.
pub struct DispatcherArgs {
    /// The engine.
    pub engine: Engine,
    /// The node's providers.
    pub router: Arc<Router>,
    /// This node's current identity (its epoch changes when it rejoins after a fence).
    pub node: watch::Receiver<NodeIdentity>,
    /// Settings.
    pub settings: DispatcherSettings,
    /// Times renewals, retries and drains.
    pub clock: Clock,
    /// Spreads retries of a failed lease apart.
    pub rng: Rng,
    /// Set while a work disk is low: repository tasks are left to other nodes.
    pub low_on_disk: Arc<std::sync::atomic::AtomicBool>,
    /// The providers' cluster-wide limits, when nodes share a store.
    pub shared: Option<Arc<crate::routing::SharedLimits>>,
}

struct Running {
    task_ref: TaskRef,
    abandon: watch::Sender<bool>,
}

struct Draining {
    reply: Option<RpcReplyPort<DrainReport>>,
    finished: usize,
}

/// The dispatcher actor.
#[derive(Clone)]
pub struct Dispatcher;

/// Its state.
pub struct DispatcherState {
    engine: Engine,
    router: Arc<Router>,
    node: watch::Receiver<NodeIdentity>,
    settings: DispatcherSettings,
    running: HashMap<TaskId, Running>,
    by_actor: HashMap<ActorId, TaskId>,
    waiter: Option<JoinHandle<()>>,
    inbox: Option<JoinHandle<()>>,
    pump_queued: bool,
    draining: Option<Draining>,
    /// Fenced and not yet rejoined: lease nothing.
    fenced: bool,
    clock: Clock,
    rng: Rng,
    /// The periodic renewal, stopped with the dispatcher.
    renewer: Option<JoinHandle<()>>,
    /// The leases the renewer keeps alive: every running attempt's.
    leases: Leases,
    low_on_disk: Arc<std::sync::atomic::AtomicBool>,
    shared: Option<Arc<crate::routing::SharedLimits>>,
    /// What an attempt of a task is expected to spend, for budget reservations.
    estimator: supervisor_engine::Estimator,
}

impl DispatcherState {
    fn queue_pump(&mut self, myself: &ActorRef<DispatcherMsg>) {
        if !self.pump_queued && self.draining.is_none() && !self.fenced {
            self.pump_queued = true;
            let _ = myself.cast(DispatcherMsg::Pump);
        }
    }

    fn abandon(&mut self, ids: &[TaskId]) {
        for id in ids {
            if let Some(run) = self.running.get(id) {
                let _ = run.abandon.send(true);
            }
        }
    }
}

/// The leases of this node's running attempts, shared with the renewer.
type Leases = Arc<std::sync::Mutex<HashMap<TaskId, TaskRef>>>;

/// Renews every running attempt's lease every third of the lease duration, on a task of
/// its own: a dispatcher busy with thousands of agents' messages must not delay it, or
/// leases of a live node lapse under load. Lost leases go back to the dispatcher, which
/// abandons those attempts.
fn spawn_renewer(
    engine: Engine,
    leases: Leases,
    dispatcher: ActorRef<DispatcherMsg>,
    clock: Clock,
) -> JoinHandle<()> {
    let every = engine.config().lease_duration / 3;
    tokio::spawn(async move {
        // A fixed cadence: a renewal that took long (a slow store) is followed by the next
        // one at once rather than a whole interval later, so leases hold while renewing
        // them all takes up to half a lease.
        let mut next = clock.now() + every;
        loop {
            clock.sleep_until(next).await;
            next = (next + every).max(clock.now());
            let refs: Vec<TaskRef> = match leases.lock() {
                Ok(leases) => leases.values().cloned().collect(),
                Err(_) => return,
            };
            if refs.is_empty() {
                continue;
            }
            match engine.renew(&refs).await {
                Ok(kept) => {
                    count_renewals(&kept);
                    let lost: Vec<TaskId> = refs
                        .iter()
                        .zip(kept)
                        .filter(|(_, ok)| !ok)
                        .map(|(r, _)| r.id)
                        .collect();
                    if !lost.is_empty() && dispatcher.cast(DispatcherMsg::LeasesLost(lost)).is_err()
                    {
                        return;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "lease renewal failed; will retry"),
            }
        }
    })
}

/// Counts renewals by outcome (`supervisor_lease_renewals_total`).
fn count_renewals(kept: &[bool]) {
    if !supervisor_telemetry::metrics_on() {
        return;
    }
    let renewed = kept.iter().filter(|k| **k).count() as u64;
    let lost = kept.len() as u64 - renewed;
    let m = supervisor_telemetry::metrics();
    for (outcome, n) in [("renewed", renewed), ("lost", lost)] {
        if n > 0 {
            m.lease_renewals
                .add(n, &[opentelemetry::KeyValue::new("outcome", outcome)]);
        }
    }
}

async fn lease_and_spawn(
    myself: &ActorRef<DispatcherMsg>,
    state: &mut DispatcherState,
) -> Result<(), ActorProcessingErr> {
    // Lease no more than this node's providers can run at once: a task leased here but
    // waiting for a provider slot is a task another node could be running.
    let capacity: usize = state
        .router
        .providers()
        .iter()
        .map(|p| p.max_concurrency as usize)
        .sum();
    let free = state
        .settings
        .max_in_flight
        .min(capacity.max(1))
        .saturating_sub(state.running.len());
    if free == 0 {
        // A finishing agent queues the next pump.
        return Ok(());
    }
    let want = free.min(state.settings.lease_batch);
    let node = state.node.borrow().clone();
    let options = LeaseOptions {
        no_repository_tasks: state.low_on_disk.load(std::sync::atomic::Ordering::Relaxed),
        estimate: Some(state.estimator.clone()),
    };
    let batch = match state.engine.lease_with(&node, want, &options).await {
        Ok(b) => b,
        Err(err @ supervisor_engine::EngineError::Fenced { .. }) => {
            // Membership notices on its next heartbeat and rejoins; until then, nothing.
            tracing::warn!(error = %err, "this node was fenced; leasing stops until it rejoins");
            state.fenced = true;
            return Ok(());
        }
        Err(err) => {
            tracing::warn!(error = %err, "leasing failed; trying again shortly");
            let pause = state.rng.jitter(LEASE_RETRY, 0.5);
            state
                .clock
                .send_after(myself, pause, || DispatcherMsg::Pump);
            return Ok(());
        }
    };
    let got = batch.tasks.len();
    let leased_at = state.clock.now();
    if got > 0 && supervisor_telemetry::metrics_on() {
        supervisor_telemetry::metrics()
            .leases_granted
            .add(got as u64, &[]);
    }
    for leased in batch.tasks {
        let id = leased.task.id;
        // The lease as one moment of the task's trace, on the node that took it.
        drop(crate::spans::task(
            "supervisor.lease",
            &leased.task,
            &node.id,
        ));
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let task_ref = leased.task_ref.clone();
        let args = AgentArgs {
            leased,
            engine: state.engine.clone(),
            router: state.router.clone(),
            flush_interval: state.settings.flush_interval,
            route_wait: state.settings.route_wait,
            leased_at,
            abandon: abandon_rx,
            clock: state.clock.clone(),
            shared: state.shared.clone(),
        };
        match Actor::spawn_linked(None, Agent, args, myself.get_cell()).await {
            Ok((agent, _)) => {
                state.by_actor.insert(agent.get_id(), id);
                if let Ok(mut leases) = state.leases.lock() {
                    leases.insert(id, task_ref.clone());
                }
                state.running.insert(
                    id,
                    Running {
                        task_ref,
                        abandon: abandon_tx,
                    },
                );
            }
            Err(err) => {
                tracing::error!(task = %id, error = %err, "could not start an agent; handing the task back");
                let engine = state.engine.clone();
                tokio::spawn(async move {
                    let _ = engine.release(&task_ref, "agent could not start").await;
                });
            }
        }
    }
    if got == want {
        // There may be more ready right now.
        state.queue_pump(myself);
    } else if state.running.len() < state.settings.max_in_flight {
        // Sleep until something becomes ready.
        if let Some(old) = state.waiter.take() {
            old.abort();
        }
        let engine = state.engine.clone();
        let me = myself.clone();
        // Work held back by a quota or left for other nodes wakes no watch: look again
        // soon.
        let recheck = state.clock.sleep(if batch.held_back {
            HELD_BACK_RECHECK
        } else {
            state.settings.idle_recheck
        });
        let watch = batch.ready_watch;
        state.waiter = Some(tokio::spawn(async move {
            tokio::select! {
                _ = watch => {}
                _ = engine.ready_notified() => {}
                _ = recheck => {}
            }
            let _ = me.cast(DispatcherMsg::Pump);
        }));
    }
    Ok(())
}

fn spawn_inbox(
    engine: Engine,
    node: String,
    myself: ActorRef<DispatcherMsg>,
    clock: Clock,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match engine.take_inbox(&node).await {
                Ok((notices, watch)) => {
                    if !notices.is_empty() {
                        let ids = notices.into_iter().map(|(_, id)| id).collect();
                        if myself.cast(DispatcherMsg::Abandon(ids)).is_err() {
                            return;
                        }
                    }
                    let _ = clock.timeout(INBOX_RECHECK, watch).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading the cancel inbox failed; retrying");
                    clock.sleep(INBOX_RETRY).await;
                }
            }
        }
    })
}

fn finish_drain_if_idle(state: &mut DispatcherState) {
    if state.running.is_empty()
        && let Some(draining) = state.draining.as_mut()
        && let Some(reply) = draining.reply.take()
    {
        let _ = reply.send(DrainReport {
            finished: draining.finished,
            handed_back: 0,
        });
    }
}

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = DispatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DispatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let leases = Leases::default();
        let renewer = spawn_renewer(
            args.engine.clone(),
            leases.clone(),
            myself.clone(),
            args.clock.clone(),
        );
        let node_id = args.node.borrow().id.clone();
        let inbox = spawn_inbox(
            args.engine.clone(),
            node_id,
            myself.clone(),
            args.clock.clone(),
        );
        let estimator: supervisor_engine::Estimator = {
            let router = args.router.clone();
            Arc::new(move |task: &supervisor_model::Task| router.estimate(task))
        };
        let mut state = DispatcherState {
            engine: args.engine,
            router: args.router,
            node: args.node,
            settings: args.settings,
            running: HashMap::new(),
            by_actor: HashMap::new(),
            waiter: None,
            inbox: Some(inbox),
            pump_queued: false,
            draining: None,
            fenced: false,
            clock: args.clock,
            rng: args.rng,
            renewer: Some(renewer),
            leases,
            low_on_disk: args.low_on_disk,
            shared: args.shared,
            estimator,
        };
        state.queue_pump(&myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for handle in [
            state.waiter.take(),
            state.inbox.take(),
            state.renewer.take(),
        ]
        .into_iter()
        .flatten()
        {
            handle.abort();
        }
        // Agents are linked children and stop with us; their leases lapse or are
        // reclaimed, so nothing is lost.
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatcherMsg::Pump => {
                state.pump_queued = false;
                if state.draining.is_none() && !state.fenced {
                    lease_and_spawn(&myself, state).await?;
                }
            }
            DispatcherMsg::LeasesLost(ids) => {
                tracing::info!(count = ids.len(), "leases lost; abandoning those attempts");
                state.abandon(&ids);
            }
            DispatcherMsg::Abandon(ids) => state.abandon(&ids),
            DispatcherMsg::Drain(timeout, reply) => {
                if let Some(w) = state.waiter.take() {
                    w.abort();
                }
                state.draining = Some(Draining {
                    reply: Some(reply),
                    finished: 0,
                });
                state
                    .clock
                    .send_after(&myself, timeout, || DispatcherMsg::DrainDeadline);
                finish_drain_if_idle(state);
            }
            DispatcherMsg::DrainDeadline => {
                let Some(draining) = state.draining.as_mut() else {
                    return Ok(());
                };
                let Some(reply) = draining.reply.take() else {
                    return Ok(());
                };
                let finished = draining.finished;
                let refs: Vec<TaskRef> =
                    state.running.values().map(|r| r.task_ref.clone()).collect();
                for run in state.running.values() {
                    let _ = run.abandon.send(true);
                }
                let engine = state.engine.clone();
                tokio::spawn(async move {
                    let mut handed_back = 0;
                    for r in &refs {
                        match engine.release(r, "node draining").await {
                            Ok(RunnerWriteResult::Accepted(_)) => handed_back += 1,
                            Ok(RunnerWriteResult::Refused(_)) => {}
                            Err(err) => {
                                tracing::warn!(task = %r.id, error = %err, "hand-back failed; the lease will lapse instead")
                            }
                        }
                    }
                    let _ = reply.send(DrainReport {
                        finished,
                        handed_back,
                    });
                });
            }
            DispatcherMsg::InFlight(reply) => {
                let _ = reply.send(state.running.len());
            }
            DispatcherMsg::Fenced => {
                state.fenced = true;
                if let Some(waiter) = state.waiter.take() {
                    waiter.abort();
                }
                let ids: Vec<TaskId> = state.running.keys().copied().collect();
                if !ids.is_empty() {
                    tracing::warn!(
                        attempts = ids.len(),
                        "fenced: abandoning running attempts (their tasks are back in the queue)"
                    );
                }
                state.abandon(&ids);
            }
            DispatcherMsg::Rejoined => {
                state.fenced = false;
                state.queue_pump(&myself);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, panic) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let Some(run) = state.running.remove(&id) else {
            return Ok(());
        };
        if let Ok(mut leases) = state.leases.lock() {
            leases.remove(&id);
        }
        if let Some(err) = panic {
            tracing::error!(task = %id, error = %err, "agent panicked; failing the attempt");
            let engine = state.engine.clone();
            tokio::spawn(async move {
                let finish = Finish {
                    task_ref: run.task_ref,
                    provider: String::new(),
                    model: String::new(),
                    usage: Default::default(),
                    cost_micros: 0,
                    trailing: vec![],
                    outcome: Outcome::Failed {
                        error: format!("agent panicked: {err}"),
                        kind: "panicked".into(),
                        retryable: true,
                        retry_after: None,
                    },
                };
                if let Err(e) = engine.finish(finish).await {
                    tracing::error!(task = %id, error = %e, "could not record the panic; the lease will lapse");
                }
            });
        }
        if let Some(draining) = state.draining.as_mut() {
            draining.finished += 1;
            finish_drain_if_idle(state);
        } else {
            state.queue_pump(&myself);
        }
        Ok(())
    }
}
