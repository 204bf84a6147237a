//! The pure core of Supervisor's DAG workflows: definitions, validation, conditions,
//! templates, readiness and schedules.
//!
//! A workflow is a DAG of tasks written in YAML or JSON ([`WorkflowDef`]). Everything here
//! is deterministic and free of I/O, clocks and async, so the engine can call it inside
//! the store transaction that records a step's completion (and enqueue the next steps in
//! the same transaction), and so every rule is unit-tested on its own:
//!
//! - [`definition`]: the serde types and their YAML/JSON parsing, with errors that name
//!   the field, line and column;
//! - [`validate()`]: every static problem at once, each with a stable code;
//! - [`expr`]: the small typed condition language of `when:`;
//! - [`template`]: `{{ vars.x }}` / `{{ steps.<id>.output }}` placeholders in prompts;
//! - [`plan`]: what to start, skip or cancel next, from a run's step states;
//! - [`schedule`]: cron schedules in IANA time zones, with a missed-run policy.
//!
//! ```
//! use supervisor_workflow::{MapContext, Plan, StepState, StepStates, WorkflowDef, validate};
//!
//! let def = WorkflowDef::from_yaml(r#"
//! name: fix
//! vars: { repo: /src/app }
//! steps:
//!   - id: analyse
//!     task: { type: code_analysis, prompt: "Analyse {{ vars.repo }}" }
//!   - id: fix
//!     needs: [analyse]
//!     task: { type: bug_fix, prompt: "Fix it: {{ steps.analyse.output }}" }
//! "#)?;
//! assert!(validate(&def).is_ok());
//!
//! let plan = Plan::new(&def)?;
//! let ctx = MapContext::with_vars(def.vars.clone());
//! let mut states = StepStates::new();
//! assert_eq!(plan.advance(&states, &ctx, &def.policy)?.start, ["analyse"]);
//! states.insert("analyse".into(), StepState::Succeeded);
//! assert_eq!(plan.advance(&states, &ctx, &def.policy)?.start, ["fix"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod context;
pub mod definition;
pub mod expr;
pub mod plan;
pub mod schedule;
pub mod template;
pub mod validate;

pub use context::{Context, MapContext, Ref, StepField, StepStatus, run_vars};
pub use definition::{
    DefinitionError, Need, OnFailure, Policy, StepDef, TaskTemplate, When, WorkflowDef,
};
pub use expr::Expression;
pub use plan::{
    Advance, Plan, PlanError, RunStatus, StepFailure, StepState, StepStates, advance, halt,
    retry_plan,
};
pub use schedule::{Firing, Missed, Schedule, ScheduleDef, ScheduleError};
pub use template::{RenderOptions, Template, placeholders, render, render_task};
pub use validate::{Issue, Report, codes, validate};
