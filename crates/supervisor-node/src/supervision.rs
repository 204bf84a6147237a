//! The restart behaviour every supervisor of the node uses. ractor reports a child's
//! failure to its parent but restarts nothing; this module adds one-for-one restarts with
//! a restart budget (at most N restarts within a window, else give up and escalate) and
//! exponential backoff between restarts of the same child.
//!
//! A supervisor's children are a list of [`ChildSpec`]s, each declared in one expression:
//! its name, the actor and the arguments it starts (and restarts) with, and whether it is
//! registered under its name. Every child is restarted whenever it stops, under the
//! supervisor's [`RestartPolicy`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::sync::watch;

use crate::backoff;
use crate::clock::Clock;
use crate::config::RestartPolicy;

/// What to do about a child that stopped unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart it after this delay.
    Restart(Duration),
    /// The budget is spent: stop the supervisor and let its own parent decide.
    Escalate,
}

/// Counts restarts per child and applies the policy. Pure logic, tested on its own.
#[derive(Debug, Default)]
pub struct RestartBudget {
    policy: RestartPolicy,
    history: HashMap<String, VecDeque<Instant>>,
}

impl RestartBudget {
    /// A budget under `policy`.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            history: HashMap::new(),
        }
    }

    /// Records a failure of `child` at `now` and decides.
    pub fn on_failure(&mut self, child: &str, now: Instant) -> Decision {
        let window = self.policy.window;
        let history = self.history.entry(child.to_string()).or_default();
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            history.pop_front();
        }
        if history.len() as u32 >= self.policy.max_restarts {
            return Decision::Escalate;
        }
        let earlier = history.len();
        history.push_back(now);
        // The n-th restart inside the window waits the n-th delay of the backoff.
        let delay = backoff::exponential(self.policy.initial_backoff, self.policy.max_backoff)
            .nth(earlier)
            .unwrap_or(self.policy.max_backoff);
        Decision::Restart(delay)
    }
}

/// The future a child spec returns: the started child.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Starts a child linked to the supervisor cell, under the registered name if any.
type StartFn = dyn Fn(ActorCell, Option<String>) -> StartFuture + Send + Sync;

/// How to start (and restart) one child, linked to its supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Stable name of the child (used in logs, the restart budget and, when registered,
    /// the actor registry).
    pub name: String,
    /// Whether the actor is registered under `name`.
    pub register: bool,
    start: Arc<StartFn>,
}

impl ChildSpec {
    /// An unregistered child running `actor`, started (and restarted) with the arguments
    /// `args` builds each time.
    pub fn actor<A>(
        name: impl Into<String>,
        actor: A,
        args: impl Fn() -> A::Arguments + Send + Sync + 'static,
    ) -> ChildSpec
    where
        A: Actor + Clone,
    {
        ChildSpec {
            name: name.into(),
            register: false,
            start: Arc::new(move |sup, registered| {
                let actor = actor.clone();
                let arguments = args();
                Box::pin(async move {
                    let (child, _) = Actor::spawn_linked(registered, actor, arguments, sup).await?;
                    Ok(child.get_cell())
                })
            }),
        }
    }

    /// The same child, registered under its name (others find it with
    /// `ractor::registry::where_is`; a restarted child takes the name over).
    pub fn registered(mut self) -> ChildSpec {
        self.register = true;
        self
    }

    fn start(&self, supervisor: ActorCell) -> StartFuture {
        (self.start)(supervisor, self.register.then(|| self.name.clone()))
    }
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("register", &self.register)
            .finish()
    }
}

/// Whether a supervised tree is whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeHealth {
    /// Every child is running.
    Serving,
    /// A child is down and waiting for its restart.
    Restarting(String),
    /// The supervisor gave up (restart budget spent) or stopped.
    Stopped(String),
}

/// Messages of a [`OneForOne`] supervisor.
pub enum SupervisorMsg {
    /// Restart the named child now (sent to itself after a backoff).
    Restart(String),
}

impl ractor::Message for SupervisorMsg {}

/// A one-for-one supervisor: starts its children in order, restarts one that stops
/// under the restart budget, and stops itself (escalating) when the budget is spent.
#[derive(Clone)]
pub struct OneForOne;

/// Arguments of [`OneForOne`].
pub struct OneForOneArgs {
    /// Children, started in this order.
    pub children: Vec<ChildSpec>,
    /// The restart policy.
    pub policy: RestartPolicy,
    /// Where the supervisor publishes the tree's health.
    pub health: watch::Sender<TreeHealth>,
    /// Times restarts and backoffs.
    pub clock: Clock,
}

/// State of a [`OneForOne`] supervisor.
pub struct OneForOneState {
    specs: HashMap<String, ChildSpec>,
    running: HashMap<ractor::ActorId, String>,
    budget: RestartBudget,
    health: watch::Sender<TreeHealth>,
    clock: Clock,
    stopping: bool,
}

impl OneForOneState {
    fn publish(&self) {
        if self.stopping {
            // The escalation reason stays visible.
            return;
        }
        let next = if self.running.len() == self.specs.len() {
            TreeHealth::Serving
        } else {
            let down: Vec<&str> = self
                .specs
                .keys()
                .filter(|n| !self.running.values().any(|r| r == *n))
                .map(String::as_str)
                .collect();
            TreeHealth::Restarting(down.join(", "))
        };
        self.health.send_replace(next);
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut OneForOneState,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    let spec = state
        .specs
        .get(name)
        .cloned()
        .ok_or_else(|| format!("no child named {name}"))?;
    let cell = spec.start(myself.get_cell()).await?;
    state.running.insert(cell.get_id(), name.to_string());
    tracing::debug!(child = name, "child started");
    Ok(())
}

impl Actor for OneForOne {
    type Msg = SupervisorMsg;
    type State = OneForOneState;
    type Arguments = OneForOneArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: OneForOneArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let order: Vec<String> = args.children.iter().map(|c| c.name.clone()).collect();
        let mut state = OneForOneState {
            specs: args
                .children
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
            running: HashMap::new(),
            budget: RestartBudget::new(args.policy),
            health: args.health,
            clock: args.clock,
            stopping: false,
        };
        for name in order {
            start_child(&myself, &mut state, &name).await?;
        }
        state.publish();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(*state.health.borrow(), TreeHealth::Stopped(_)) {
            state
                .health
                .send_replace(TreeHealth::Stopped("stopped".into()));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(name) => {
                if state.stopping {
                    return Ok(());
                }
                if let Err(err) = start_child(&myself, state, &name).await {
                    tracing::error!(child = %name, error = %err, "restart failed");
                    decide(&myself, state, &name, &format!("restart failed: {err}"));
                }
                state.publish();
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
        let (cell, why) = match &event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "stopped: {}",
                    reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            _ => return Ok(()),
        };
        let Some(name) = state.running.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping {
            return Ok(());
        }
        tracing::warn!(child = %name, %why, "supervised child went down");
        decide(&myself, state, &name, &why);
        state.publish();
        Ok(())
    }
}

fn decide(myself: &ActorRef<SupervisorMsg>, state: &mut OneForOneState, name: &str, why: &str) {
    match state.budget.on_failure(name, state.clock.now()) {
        Decision::Restart(delay) => {
            tracing::info!(child = %name, ?delay, "restarting child");
            let name = name.to_string();
            state
                .clock
                .send_after(myself, delay, move || SupervisorMsg::Restart(name));
        }
        Decision::Escalate => {
            let reason = format!("child {name} exceeded its restart budget (last: {why})");
            tracing::error!(%reason, "supervisor giving up");
            state.stopping = true;
            state
                .health
                .send_replace(TreeHealth::Stopped(reason.clone()));
            myself.stop(Some(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_budget_escalates() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        let mut budget = RestartBudget::new(policy);
        let t0 = Instant::now();
        assert_eq!(
            budget.on_failure("a", t0),
            Decision::Restart(Duration::from_millis(100))
        );
        assert_eq!(
            budget.on_failure("a", t0),
            Decision::Restart(Duration::from_millis(200))
        );
        assert_eq!(
            budget.on_failure("a", t0),
            Decision::Restart(Duration::from_millis(250))
        );
        assert_eq!(budget.on_failure("a", t0), Decision::Escalate);
        // Other children have their own budget.
        assert_eq!(
            budget.on_failure("b", t0),
            Decision::Restart(Duration::from_millis(100))
        );
        // Outside the window the budget is back.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            budget.on_failure("a", later),
            Decision::Restart(Duration::from_millis(100))
        );
    }

    /// A child that fails whenever it is told to.
    #[derive(Clone)]
    struct Fragile;

    impl Actor for Fragile {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<()>,
            _: (),
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Err("told to fail".into())
        }
    }

    fn fragile_spec(name: &'static str) -> ChildSpec {
        ChildSpec::actor(name, Fragile, || ()).registered()
    }

    async fn wait_for(
        rx: &mut watch::Receiver<TreeHealth>,
        want: impl Fn(&TreeHealth) -> bool,
    ) -> TreeHealth {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| want(h))).await;
        got.expect("health reached the expected state in time")
            .expect("sender alive")
            .clone()
    }

    /// Makes the named child fail; returns the id it had.
    fn fail_child(name: &str) -> ractor::ActorId {
        let cell = ractor::registry::where_is(name).expect("child registered");
        let id = cell.get_id();
        let child: ActorRef<()> = cell.into();
        child.cast(()).expect("cast");
        id
    }

    /// Waits until a different actor is registered under `name`.
    async fn wait_replaced(name: &str, old: ractor::ActorId) {
        for _ in 0..500 {
            if ractor::registry::where_is(name).is_some_and(|c| c.get_id() != old) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} was not restarted");
    }

    #[tokio::test]
    async fn failed_child_is_restarted_and_a_spent_budget_escalates() {
        let (tx, mut rx) = watch::channel(TreeHealth::Restarting("starting".into()));
        let policy = RestartPolicy {
            max_restarts: 2,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        };
        let (sup, handle) = Actor::spawn(
            None,
            OneForOne,
            OneForOneArgs {
                children: vec![fragile_spec("test-fragile"), fragile_spec("test-steady")],
                policy,
                health: tx,
                clock: Clock::system(),
            },
        )
        .await
        .expect("supervisor starts");
        wait_for(&mut rx, |h| *h == TreeHealth::Serving).await;
        let steady = ractor::registry::where_is("test-steady")
            .expect("steady")
            .get_id();
        for _ in 0..2 {
            let old = fail_child("test-fragile");
            wait_replaced("test-fragile", old).await;
            wait_for(&mut rx, |h| *h == TreeHealth::Serving).await;
        }
        // One-for-one: the sibling was never touched.
        assert_eq!(
            ractor::registry::where_is("test-steady").map(|c| c.get_id()),
            Some(steady)
        );
        // The third failure inside the window spends the budget.
        fail_child("test-fragile");
        let last = wait_for(&mut rx, |h| matches!(h, TreeHealth::Stopped(_))).await;
        assert!(
            matches!(last, TreeHealth::Stopped(ref why) if why.contains("test-fragile")),
            "{last:?}"
        );
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("supervisor stops")
            .ok();
        drop(sup);
    }

    #[tokio::test]
    async fn a_restart_waits_its_backoff_on_the_supervisors_clock() {
        let (clock, hand) = Clock::manual();
        let (tx, mut rx) = watch::channel(TreeHealth::Restarting("starting".into()));
        let policy = RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        };
        let (sup, handle) = Actor::spawn(
            None,
            OneForOne,
            OneForOneArgs {
                children: vec![fragile_spec("clocked-fragile")],
                policy,
                health: tx,
                clock,
            },
        )
        .await
        .expect("supervisor starts");
        wait_for(&mut rx, |h| *h == TreeHealth::Serving).await;
        let old = fail_child("clocked-fragile");
        wait_for(
            &mut rx,
            |h| matches!(h, TreeHealth::Restarting(n) if n == "clocked-fragile"),
        )
        .await;
        while hand.sleepers() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Nothing happens until the clock has moved a whole backoff.
        hand.advance(Duration::from_millis(999));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            ractor::registry::where_is("clocked-fragile").is_none(),
            "restarted before its backoff ended"
        );
        hand.advance(Duration::from_millis(1));
        wait_replaced("clocked-fragile", old).await;
        wait_for(&mut rx, |h| *h == TreeHealth::Serving).await;
        sup.stop(None);
        handle.await.ok();
    }
}
