//! Readiness: the state machine of a run, as a pure function of its step states.
//!
//! The engine keeps each step's [`StepState`] durably and, whenever one changes (a task
//! finished, a run started or resumed), calls [`Plan::advance`] in the same transaction to
//! learn what to do next: which steps to start, skip, fail or cancel, and the run's
//! status. Because the decision is a function of the definition and the stored states
//! only, replaying it after a crash gives the same answer, and it can be tested without a
//! store or a clock.
//!
//! Rules:
//!
//! - A step is decided once **every** dependency is terminal (succeeded, failed,
//!   cancelled or skipped) — so every ancestor is terminal too and conditions only ever
//!   read finished values. It is then ready if each dependency's condition holds
//!   (`on_success`: succeeded; `on_failure`: failed; `always`: any terminal state; an
//!   expression: evaluates to true), and skipped otherwise. Skips propagate within one
//!   call: dependents are decided in dependency order against the updated states.
//! - A condition that cannot be evaluated (possible only for a definition whose variables
//!   the context lacks) fails its step, with the reason, rather than silently skipping it.
//! - Ready steps start in definition order, at most `max_concurrency` running at once.
//! - A step's *handlers* are the steps that depend on it with `on_failure` or `always`,
//!   or with an expression that reads its `status` (the definition says which). A failure
//!   is *handled* while at least one of its handlers is not skipped: a handler still
//!   pending may yet run, and one that ran has dealt with it. So a failure with no
//!   handlers is unhandled at once, and one whose handlers were all skipped (their other
//!   conditions did not hold) becomes unhandled when the last of them is skipped. Under
//!   `fail_fast` an unhandled failure fails the run at once: nothing more starts, running
//!   steps are to be cancelled and pending ones are skipped. Under `continue` everything
//!   that can still run does, and the run fails at the end.
//! - A run ends when every step is terminal: failed if a failure went unhandled, else
//!   cancelled if a step was cancelled, else succeeded. Skipped steps are a normal outcome
//!   (the branch not taken).
//!
//! [`retry_plan`] resets the steps that did not succeed so re-running a failed run resumes
//! from where it failed; [`Plan::halt`] stops a run (user cancellation, deadline).

use std::collections::{BTreeMap, HashMap};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::context::{Context, Ref, StepField, StepStatus};
use crate::definition::{OnFailure, Policy, When, WorkflowDef};
use crate::expr::Expression;
use crate::validate::{Report, validate};

/// The state of one step within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Its task (this id) is queued or running.
    Running(String),
    /// Its task succeeded.
    Succeeded,
    /// Its task failed, or its condition could not be evaluated.
    Failed,
    /// Its task was cancelled.
    Cancelled,
    /// Not run: its conditions could not hold, or the run stopped first.
    Skipped,
}

impl StepState {
    /// The status without details.
    pub fn status(&self) -> StepStatus {
        match self {
            StepState::Pending => StepStatus::Pending,
            StepState::Running(_) => StepStatus::Running,
            StepState::Succeeded => StepStatus::Succeeded,
            StepState::Failed => StepStatus::Failed,
            StepState::Cancelled => StepStatus::Cancelled,
            StepState::Skipped => StepStatus::Skipped,
        }
    }
}

/// Step states by step id; a step with no entry is pending.
pub type StepStates = BTreeMap<String, StepState>;

/// The status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps remain to run or are running.
    Running,
    /// Every step is finished and no failure went unhandled.
    Succeeded,
    /// A failure went unhandled (or the run was halted as failed).
    Failed,
    /// A step was cancelled and no failure went unhandled (or the run was cancelled).
    Cancelled,
}

/// A step to mark failed without running it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The step.
    pub step: String,
    /// Why it failed (for the run's record).
    pub reason: String,
}

/// What to do next. Ids within each list are in definition order. `run_status` is the
/// run's status once these changes are applied (started steps count as running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// Steps to start now (enqueue their tasks).
    pub start: Vec<String>,
    /// Steps to mark skipped.
    pub skip: Vec<String>,
    /// Steps to mark failed without running.
    pub fail: Vec<StepFailure>,
    /// Running steps whose tasks to cancel (the run stopped under `fail_fast`).
    pub cancel: Vec<String>,
    /// The run's status after applying this.
    pub run_status: RunStatus,
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The definition has validation errors.
    #[error("the workflow is not valid: {0}")]
    Invalid(Report),
    /// The states name a step the definition does not have.
    #[error("the run's states name step {0:?}, which the workflow does not have")]
    UnknownStep(String),
}

#[derive(Debug, Clone)]
enum Cond {
    OnSuccess,
    OnFailure,
    Always,
    Expr(Expression),
}

/// A validated definition compiled for planning: dependency lists, a dependency order,
/// parsed conditions and each step's failure handlers. Build it once per definition.
#[derive(Debug, Clone)]
pub struct Plan {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    needs: Vec<Vec<(usize, Cond)>>,
    /// Positions with every step after the steps it needs.
    order: Vec<usize>,
    /// For each step, the dependents that handle its failure.
    handlers: Vec<Vec<usize>>,
}

impl Plan {
    /// Compiles a definition; fails with the validation report if it has errors.
    pub fn new(def: &WorkflowDef) -> Result<Plan, Report> {
        let report = validate(def);
        if !report.is_ok() {
            return Err(report);
        }
        let ids: Vec<String> = def.steps.iter().map(|s| s.id.clone()).collect();
        let index: HashMap<String, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(ids.len(), 0);
        for _ in &ids {
            graph.add_node(());
        }
        let mut needs = Vec::with_capacity(ids.len());
        let mut handlers: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
        for (pos, step) in def.steps.iter().enumerate() {
            let mut list = Vec::with_capacity(step.needs.len());
            for need in &step.needs {
                // Validation guarantees the step exists and the expression parses.
                let Some(&dep) = index.get(&need.step) else {
                    return Err(report);
                };
                let cond = match &need.when {
                    When::OnSuccess => Cond::OnSuccess,
                    When::OnFailure => Cond::OnFailure,
                    When::Always => Cond::Always,
                    When::Expr(src) => match Expression::parse(src) {
                        Ok(e) => Cond::Expr(e),
                        Err(_) => return Err(report),
                    },
                };
                let handles = match &cond {
                    Cond::OnFailure | Cond::Always => true,
                    Cond::Expr(e) => reads_status_of(e, &need.step),
                    Cond::OnSuccess => false,
                };
                if handles && !handlers[dep].contains(&pos) {
                    handlers[dep].push(pos);
                }
                graph.add_edge(NodeIndex::new(dep), NodeIndex::new(pos), ());
                list.push((dep, cond));
            }
            needs.push(list);
        }
        let Ok(order) = toposort(&graph, None) else {
            return Err(report);
        };
        Ok(Plan {
            ids,
            index,
            needs,
            order: order.into_iter().map(NodeIndex::index).collect(),
            handlers,
        })
    }

    /// The steps that handle a failure of `step` (`None` for an unknown step).
    pub fn failure_handlers(&self, step: &str) -> Option<Vec<&str>> {
        self.index.get(step).map(|&i| {
            self.handlers[i]
                .iter()
                .map(|&h| self.ids[h].as_str())
                .collect()
        })
    }

    /// Whether a failed step's failure is unhandled: none of its handlers is left that
    /// is not skipped.
    fn unhandled(&self, status: &[StepStatus], pos: usize) -> bool {
        status[pos] == StepStatus::Failed
            && self.handlers[pos]
                .iter()
                .all(|&h| status[h] == StepStatus::Skipped)
    }

    fn statuses(&self, states: &StepStates) -> Result<Vec<StepStatus>, PlanError> {
        let mut out = vec![StepStatus::Pending; self.ids.len()];
        for (id, state) in states {
            let &i = self
                .index
                .get(id)
                .ok_or_else(|| PlanError::UnknownStep(id.clone()))?;
            out[i] = state.status();
        }
        Ok(out)
    }

    /// Decides what to do next from the run's step states. `ctx` supplies variables,
    /// outputs and attempts for conditions; statuses come from `states`.
    pub fn advance(
        &self,
        states: &StepStates,
        ctx: &(impl Context + ?Sized),
        policy: &Policy,
    ) -> Result<Advance, PlanError> {
        let mut status = self.statuses(states)?;
        let mut ready = vec![false; self.ids.len()];
        let mut skip = vec![false; self.ids.len()];
        let mut fail: Vec<(usize, String)> = Vec::new();

        for &pos in &self.order {
            if status[pos] != StepStatus::Pending {
                continue;
            }
            if !self.needs[pos]
                .iter()
                .all(|(d, _)| status[*d].is_terminal())
            {
                continue;
            }
            let view = View {
                plan: self,
                status: &status,
                inner: ctx,
            };
            let mut holds = true;
            let mut error = None;
            for (dep, cond) in &self.needs[pos] {
                let ok = match cond {
                    Cond::OnSuccess => status[*dep] == StepStatus::Succeeded,
                    Cond::OnFailure => status[*dep] == StepStatus::Failed,
                    Cond::Always => true,
                    Cond::Expr(e) => match e.eval(&view) {
                        Ok(b) => b,
                        Err(err) => {
                            error = Some(format!(
                                "the condition `{e}` on `{}` could not be evaluated: {err}",
                                self.ids[*dep]
                            ));
                            break;
                        }
                    },
                };
                holds &= ok;
            }
            if let Some(reason) = error {
                status[pos] = StepStatus::Failed;
                fail.push((pos, reason));
            } else if holds {
                ready[pos] = true;
            } else {
                status[pos] = StepStatus::Skipped;
                skip[pos] = true;
            }
        }

        let unhandled_failure = (0..status.len()).any(|pos| self.unhandled(&status, pos));
        fail.sort_by_key(|(pos, _)| *pos);
        let fail: Vec<StepFailure> = fail
            .into_iter()
            .map(|(pos, reason)| StepFailure {
                step: self.ids[pos].clone(),
                reason,
            })
            .collect();

        if unhandled_failure && policy.on_failure == OnFailure::FailFast {
            for (pos, s) in status.iter().enumerate() {
                if *s == StepStatus::Pending {
                    skip[pos] = true;
                }
            }
            return Ok(Advance {
                start: Vec::new(),
                skip: self.names(&skip),
                fail,
                cancel: self.names_with(&status, StepStatus::Running),
                run_status: RunStatus::Failed,
            });
        }

        let running = status.iter().filter(|s| **s == StepStatus::Running).count();
        let room = policy
            .concurrency_cap()
            .map_or(usize::MAX, |cap| cap.saturating_sub(running));
        let start: Vec<String> = (0..self.ids.len())
            .filter(|&pos| ready[pos])
            .take(room)
            .map(|pos| self.ids[pos].clone())
            .collect();

        let run_status = if status.iter().all(|s| s.is_terminal()) {
            if unhandled_failure {
                RunStatus::Failed
            } else if status.contains(&StepStatus::Cancelled) {
                RunStatus::Cancelled
            } else {
                RunStatus::Succeeded
            }
        } else {
            RunStatus::Running
        };
        Ok(Advance {
            start,
            skip: self.names(&skip),
            fail,
            cancel: Vec::new(),
            run_status,
        })
    }

    /// Stops a run with `status` (a user's cancellation, a passed deadline): cancel what
    /// runs, skip what has not started.
    pub fn halt(&self, states: &StepStates, status: RunStatus) -> Result<Advance, PlanError> {
        let current = self.statuses(states)?;
        Ok(Advance {
            start: Vec::new(),
            skip: self.names_with(&current, StepStatus::Pending),
            fail: Vec::new(),
            cancel: self.names_with(&current, StepStatus::Running),
            run_status: status,
        })
    }

    fn names(&self, flags: &[bool]) -> Vec<String> {
        flags
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| self.ids[i].clone())
            .collect()
    }

    fn names_with(&self, status: &[StepStatus], want: StepStatus) -> Vec<String> {
        status
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == want)
            .map(|(i, _)| self.ids[i].clone())
            .collect()
    }
}

/// The caller's context, with statuses taken from the planner's working states.
struct View<'a, C: ?Sized> {
    plan: &'a Plan,
    status: &'a [StepStatus],
    inner: &'a C,
}

impl<C: Context + ?Sized> Context for View<'_, C> {
    fn var(&self, name: &str) -> Option<&str> {
        self.inner.var(name)
    }
    fn step_output(&self, step: &str) -> Option<&str> {
        self.inner.step_output(step)
    }
    fn step_attempts(&self, step: &str) -> Option<u32> {
        self.inner.step_attempts(step)
    }
    fn step_status(&self, step: &str) -> Option<StepStatus> {
        self.plan.index.get(step).map(|&i| self.status[i])
    }
}

/// Whether a condition of a need on `dep` inspects `dep`'s status (such a dependent handles
/// `dep`'s failure).
fn reads_status_of(expr: &Expression, dep: &str) -> bool {
    expr.refs()
        .iter()
        .any(|r| matches!(r, Ref::Step { step, field: StepField::Status } if step == dep))
}

/// [`Plan::advance`] for a definition not compiled yet.
pub fn advance(
    def: &WorkflowDef,
    states: &StepStates,
    ctx: &(impl Context + ?Sized),
    policy: &Policy,
) -> Result<Advance, PlanError> {
    Plan::new(def)
        .map_err(PlanError::Invalid)?
        .advance(states, ctx, policy)
}

/// [`Plan::halt`] for a definition not compiled yet.
pub fn halt(
    def: &WorkflowDef,
    states: &StepStates,
    status: RunStatus,
) -> Result<Advance, PlanError> {
    Plan::new(def)
        .map_err(PlanError::Invalid)?
        .halt(states, status)
}

/// The states to re-run a finished run with: failed, cancelled and skipped steps go back
/// to pending, succeeded steps keep their results, and anything still running is left
/// alone (its task may yet finish). Advancing the result resumes from the failures.
pub fn retry_plan(states: &StepStates) -> StepStates {
    states
        .iter()
        .map(|(id, s)| {
            let s = match s {
                StepState::Failed | StepState::Cancelled | StepState::Skipped => StepState::Pending,
                other => other.clone(),
            };
            (id.clone(), s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::MapContext;

    fn plan(yaml: &str) -> (WorkflowDef, Plan) {
        let def = WorkflowDef::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan::new(&def).unwrap_or_else(|r| panic!("{r}"));
        (def, plan)
    }

    fn states(list: &[(&str, StepState)]) -> StepStates {
        list.iter()
            .map(|(id, s)| (id.to_string(), s.clone()))
            .collect()
    }

    fn run(id: &str) -> StepState {
        StepState::Running(format!("task-{id}"))
    }

    fn adv(p: &Plan, def: &WorkflowDef, st: &StepStates) -> Advance {
        p.advance(st, &MapContext::with_vars(def.vars.clone()), &def.policy)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const DIAMOND: &str = r#"
name: diamond
steps:
  - { id: a, task: { type: code_analysis, prompt: analyse } }
  - { id: b, needs: [a], task: { type: bug_fix, prompt: "left {{ steps.a.output }}" } }
  - { id: c, needs: [a], task: { type: testing, prompt: "right {{ steps.a.output }}" } }
  - { id: d, needs: [b, c], task: { type: pr_review, prompt: "{{ steps.b.output }} {{ steps.c.output }}" } }
"#;

    #[test]
    fn a_diamond_runs_in_dependency_order() {
        let (def, p) = plan(DIAMOND);
        let a = adv(&p, &def, &StepStates::new());
        assert_eq!(a.start, ids(&["a"]));
        assert_eq!(a.run_status, RunStatus::Running);

        let a = adv(&p, &def, &states(&[("a", run("a"))]));
        assert!(a.start.is_empty());

        let a = adv(&p, &def, &states(&[("a", StepState::Succeeded)]));
        assert_eq!(a.start, ids(&["b", "c"]));

        let st = states(&[
            ("a", StepState::Succeeded),
            ("b", StepState::Succeeded),
            ("c", run("c")),
        ]);
        assert!(adv(&p, &def, &st).start.is_empty(), "d waits for c");

        let st = states(&[
            ("a", StepState::Succeeded),
            ("b", StepState::Succeeded),
            ("c", StepState::Succeeded),
        ]);
        assert_eq!(adv(&p, &def, &st).start, ids(&["d"]));

        let mut done = st.clone();
        done.insert("d".into(), StepState::Succeeded);
        let a = adv(&p, &def, &done);
        assert!(a.start.is_empty() && a.skip.is_empty());
        assert_eq!(a.run_status, RunStatus::Succeeded);
    }

    #[test]
    fn max_concurrency_counts_running_steps() {
        let (mut def, p) = plan(DIAMOND);
        def.policy.max_concurrency = Some(1);
        let a = adv(&p, &def, &states(&[("a", StepState::Succeeded)]));
        assert_eq!(a.start, ids(&["b"]), "definition order, one at a time");
        let a = adv(
            &p,
            &def,
            &states(&[("a", StepState::Succeeded), ("b", run("b"))]),
        );
        assert!(a.start.is_empty());
        def.policy.max_concurrency = Some(0); // no cap
        let a = adv(&p, &def, &states(&[("a", StepState::Succeeded)]));
        assert_eq!(a.start, ids(&["b", "c"]));
    }

    const BRANCH: &str = r#"
name: branch
steps:
  - { id: analyse, task: { type: code_analysis, prompt: p } }
  - { id: fix, needs: [analyse], task: { type: bug_fix, prompt: p } }
  - { id: report, needs: [{ step: analyse, when: on_failure }], task: { type: issue_summary, prompt: p } }
  - { id: review, needs: [fix], task: { type: pr_review, prompt: p } }
"#;

    #[test]
    fn on_failure_branch_runs_and_the_handled_failure_does_not_fail_the_run() {
        let (def, p) = plan(BRANCH);
        assert_eq!(def.policy.on_failure, OnFailure::FailFast);
        assert_eq!(p.failure_handlers("analyse"), Some(vec!["report"]));
        assert_eq!(p.failure_handlers("fix"), Some(vec![]));
        assert_eq!(p.failure_handlers("zz"), None);

        let a = adv(&p, &def, &states(&[("analyse", StepState::Failed)]));
        assert_eq!(a.start, ids(&["report"]));
        assert_eq!(a.skip, ids(&["fix", "review"]), "skips propagate");
        assert!(a.cancel.is_empty());
        assert_eq!(a.run_status, RunStatus::Running);

        let st = states(&[
            ("analyse", StepState::Failed),
            ("fix", StepState::Skipped),
            ("review", StepState::Skipped),
            ("report", StepState::Succeeded),
        ]);
        assert_eq!(adv(&p, &def, &st).run_status, RunStatus::Succeeded);

        // On success the failure branch is skipped instead.
        let a = adv(&p, &def, &states(&[("analyse", StepState::Succeeded)]));
        assert_eq!(a.start, ids(&["fix"]));
        assert_eq!(a.skip, ids(&["report"]));
    }

    const PARALLEL: &str = r#"
name: parallel
steps:
  - { id: a, task: { type: testing, prompt: p } }
  - { id: b, task: { type: testing, prompt: p } }
  - { id: c, needs: [a], task: { type: testing, prompt: p } }
  - { id: d, task: { type: testing, prompt: p } }
"#;

    #[test]
    fn fail_fast_stops_the_run_and_cancels_what_runs() {
        let (def, p) = plan(PARALLEL);
        let st = states(&[("a", StepState::Failed), ("b", run("b"))]);
        let a = adv(&p, &def, &st);
        assert_eq!(
            a,
            Advance {
                start: vec![],
                skip: ids(&["c", "d"]),
                fail: vec![],
                cancel: ids(&["b"]),
                run_status: RunStatus::Failed,
            }
        );
    }

    #[test]
    fn continue_runs_what_it_can_and_fails_at_the_end() {
        let (mut def, p) = plan(PARALLEL);
        def.policy.on_failure = OnFailure::Continue;
        let st = states(&[("a", StepState::Failed), ("b", run("b"))]);
        let a = adv(&p, &def, &st);
        assert_eq!(a.start, ids(&["d"]));
        assert_eq!(a.skip, ids(&["c"]));
        assert!(a.cancel.is_empty());
        assert_eq!(a.run_status, RunStatus::Running);
        let st = states(&[
            ("a", StepState::Failed),
            ("b", StepState::Succeeded),
            ("c", StepState::Skipped),
            ("d", StepState::Succeeded),
        ]);
        assert_eq!(adv(&p, &def, &st).run_status, RunStatus::Failed);
    }

    #[test]
    fn expressions_and_always_follow_the_example() {
        let (def, p) = plan(crate::definition::tests::FIX_AND_REVIEW);
        assert_eq!(
            p.failure_handlers("review"),
            Some(vec!["refactor"]),
            "the expression reads its status"
        );
        assert_eq!(p.failure_handlers("fix"), Some(vec!["review"]), "always");
        let vars = MapContext::with_vars(def.vars.clone());

        // fix failed: review still runs (always).
        let st = states(&[
            ("analyse", StepState::Succeeded),
            ("fix", StepState::Failed),
        ]);
        let a = p.advance(&st, &vars, &def.policy).expect("plans");
        assert_eq!(a.start, ids(&["review"]));

        // review succeeded without REJECT: refactor is skipped, and the run succeeds, since
        // fix's failure was handled by review (always).
        let mut st = states(&[
            ("analyse", StepState::Succeeded),
            ("fix", StepState::Failed),
            ("review", StepState::Succeeded),
        ]);
        let ctx = vars
            .clone()
            .step("review", StepStatus::Succeeded, "LGTM", 1);
        let a = p.advance(&st, &ctx, &def.policy).expect("plans");
        assert_eq!(a.skip, ids(&["refactor"]));
        assert_eq!(a.run_status, RunStatus::Succeeded);

        // review says REJECT: refactor runs.
        let ctx = vars
            .clone()
            .step("review", StepStatus::Succeeded, "REJECT: wrong layer", 1);
        let a = p.advance(&st, &ctx, &def.policy).expect("plans");
        assert_eq!(a.start, ids(&["refactor"]));

        // review failed: refactor runs too (status read from the states).
        st.insert("review".into(), StepState::Failed);
        let a = p.advance(&st, &vars, &def.policy).expect("plans");
        assert_eq!(a.start, ids(&["refactor"]));
    }

    #[test]
    fn always_runs_after_a_skipped_dependency() {
        let (def, p) = plan(
            r#"
name: cleanup
steps:
  - { id: a, task: { type: testing, prompt: p } }
  - { id: b, needs: [a], task: { type: testing, prompt: p } }
  - { id: cleanup, needs: [{ step: b, when: always }], task: { type: deployment, prompt: p } }
"#,
        );
        // a's failure is unhandled, so under fail_fast everything stops...
        let a = adv(&p, &def, &states(&[("a", StepState::Failed)]));
        assert_eq!(a.skip, ids(&["b", "cleanup"]));
        assert_eq!(a.run_status, RunStatus::Failed);
        // ...while under continue, b is skipped and cleanup runs after it.
        let mut def = def;
        def.policy.on_failure = OnFailure::Continue;
        let a = adv(&p, &def, &states(&[("a", StepState::Failed)]));
        assert_eq!(a.skip, ids(&["b"]));
        assert_eq!(a.start, ids(&["cleanup"]));
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_fails_its_step() {
        let (def, p) = plan(
            r#"
name: gate
vars: { env: prod }
steps:
  - { id: a, task: { type: testing, prompt: p } }
  - { id: deploy, needs: [{ step: a, when: 'vars.env == "prod"' }], task: { type: deployment, prompt: p } }
  - { id: after, needs: [deploy], task: { type: testing, prompt: p } }
"#,
        );
        let st = states(&[("a", StepState::Succeeded)]);
        // The engine's context lost the variable: the step fails, loudly.
        let a = p
            .advance(&st, &MapContext::default(), &def.policy)
            .expect("plans");
        assert_eq!(a.fail.len(), 1);
        assert_eq!(a.fail[0].step, "deploy");
        assert!(a.fail[0].reason.contains("vars.env"), "{:?}", a.fail);
        assert_eq!(a.skip, ids(&["after"]));
        assert_eq!(a.run_status, RunStatus::Failed);
        // With the variable it runs.
        let a = adv(&p, &def, &st);
        assert_eq!(a.start, ids(&["deploy"]));
    }

    #[test]
    fn a_failure_whose_handlers_are_all_skipped_is_unhandled() {
        let yaml = r#"
name: picky
policy: { on_failure: continue }
steps:
  - { id: a, task: { type: testing, prompt: p } }
  - { id: b, task: { type: testing, prompt: p } }
  - id: retry-report
    needs: [{ step: a, when: 'steps.a.status == "failed" && steps.a.attempts > 2' }]
    task: { type: issue_summary, prompt: p }
"#;
        let (mut def, p) = plan(yaml);
        assert_eq!(p.failure_handlers("a"), Some(vec!["retry-report"]));
        let st = states(&[("a", StepState::Failed), ("b", StepState::Succeeded)]);

        // a failed after one attempt: the handler's condition does not hold, so it is
        // skipped and the failure is unhandled after all.
        let once = MapContext::default().step("a", StepStatus::Failed, "", 1);
        let a = p.advance(&st, &once, &def.policy).expect("plans");
        assert_eq!(a.skip, ids(&["retry-report"]));
        assert_eq!(a.run_status, RunStatus::Failed);

        // After three attempts the handler runs, and the run can succeed.
        let thrice = MapContext::default().step("a", StepStatus::Failed, "", 3);
        let a = p.advance(&st, &thrice, &def.policy).expect("plans");
        assert_eq!(a.start, ids(&["retry-report"]));
        assert_eq!(a.run_status, RunStatus::Running);
        let mut done = st.clone();
        done.insert("retry-report".into(), StepState::Succeeded);
        assert_eq!(
            p.advance(&done, &thrice, &def.policy).map(|a| a.run_status),
            Ok(RunStatus::Succeeded)
        );

        // Under fail_fast the skipped handler stops the run in the same call.
        def.policy.on_failure = OnFailure::FailFast;
        let st = states(&[("a", StepState::Failed), ("b", run("b"))]);
        let a = p.advance(&st, &once, &def.policy).expect("plans");
        assert_eq!(a.skip, ids(&["retry-report"]));
        assert_eq!(a.cancel, ids(&["b"]));
        assert_eq!(a.run_status, RunStatus::Failed);
        // While the handler may still run, the failure does not stop the run.
        let a = p.advance(&st, &thrice, &def.policy).expect("plans");
        assert_eq!(a.start, ids(&["retry-report"]));
        assert!(a.cancel.is_empty());
    }

    #[test]
    fn cancelled_steps_end_the_run_cancelled() {
        let (def, p) = plan(BRANCH);
        let a = adv(&p, &def, &states(&[("analyse", StepState::Cancelled)]));
        assert_eq!(a.skip, ids(&["fix", "report", "review"]));
        assert_eq!(a.run_status, RunStatus::Cancelled);
    }

    #[test]
    fn halt_cancels_running_and_skips_pending() {
        let (_, p) = plan(DIAMOND);
        let st = states(&[("a", StepState::Succeeded), ("b", run("b"))]);
        let a = p.halt(&st, RunStatus::Cancelled).expect("halts");
        assert_eq!(a.cancel, ids(&["b"]));
        assert_eq!(a.skip, ids(&["c", "d"]));
        assert_eq!(a.run_status, RunStatus::Cancelled);
    }

    #[test]
    fn retry_resumes_from_the_failed_steps() {
        let (def, p) = plan(PARALLEL);
        let failed = states(&[
            ("a", StepState::Failed),
            ("b", StepState::Cancelled),
            ("c", StepState::Skipped),
            ("d", StepState::Succeeded),
        ]);
        let retry = retry_plan(&failed);
        assert_eq!(
            retry,
            states(&[
                ("a", StepState::Pending),
                ("b", StepState::Pending),
                ("c", StepState::Pending),
                ("d", StepState::Succeeded),
            ])
        );
        let a = adv(&p, &def, &retry);
        assert_eq!(a.start, ids(&["a", "b"]), "d is not run again");
        let running = states(&[("a", run("a"))]);
        assert_eq!(retry_plan(&running), running);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (def, p) = plan(DIAMOND);
        let st = states(&[("zz", StepState::Succeeded)]);
        assert_eq!(
            p.advance(&st, &MapContext::default(), &def.policy),
            Err(PlanError::UnknownStep("zz".into()))
        );
        let mut bad = def.clone();
        bad.steps[0].needs = vec![crate::definition::Need {
            step: "d".into(),
            when: When::OnSuccess,
        }];
        let err = advance(
            &bad,
            &StepStates::new(),
            &MapContext::default(),
            &bad.policy,
        )
        .expect_err("cycle");
        assert!(matches!(&err, PlanError::Invalid(r) if r.has(crate::validate::codes::CYCLE)));
        assert!(err.to_string().contains("cycle: a -> d -> b -> a"), "{err}");
    }

    #[test]
    fn a_workflow_at_the_step_limit_validates_and_plans() {
        use crate::definition::{Need, StepDef, TaskTemplate};
        use supervisor_model::TaskType;
        let steps: Vec<StepDef> = (0..crate::validate::MAX_STEPS)
            .map(|i| StepDef {
                id: format!("s{i}"),
                needs: if i == 0 {
                    vec![]
                } else {
                    vec![Need {
                        step: format!("s{}", i - 1),
                        when: When::OnSuccess,
                    }]
                },
                task: TaskTemplate {
                    task_type: TaskType::Testing,
                    prompt: if i == 0 {
                        "start".into()
                    } else {
                        format!("continue from {{{{ steps.s{}.output }}}}", i - 1)
                    },
                    specialty: None,
                    priority: None,
                    labels: vec![],
                    context: Default::default(),
                    max_attempts: None,
                    timeout: None,
                    preferred_providers: vec![],
                    excluded_providers: vec![],
                    strategy: None,
                },
            })
            .collect();
        let def = WorkflowDef {
            name: "chain".into(),
            description: None,
            vars: Default::default(),
            policy: Policy::default(),
            schedule: None,
            steps,
        };
        let p = Plan::new(&def).unwrap_or_else(|r| panic!("{r}"));
        // The first step fails: every other step is skipped in one call.
        let a = p
            .advance(
                &states(&[("s0", StepState::Failed)]),
                &MapContext::default(),
                &def.policy,
            )
            .expect("plans");
        assert_eq!(a.skip.len(), crate::validate::MAX_STEPS - 1);
        assert_eq!(a.run_status, RunStatus::Failed);
    }

    #[test]
    fn step_states_serialize_compactly() {
        let st = states(&[("a", run("a")), ("b", StepState::Skipped)]);
        let json = serde_json::to_string(&st).expect("serializes");
        assert_eq!(json, r#"{"a":{"running":"task-a"},"b":"skipped"}"#);
        assert_eq!(serde_json::from_str::<StepStates>(&json).ok(), Some(st));
    }
}
