//! The pure core of Supervisor's DAG workflows.

#![warn(missing_docs)]

pub mod context;
pub mod definition;
pub mod expr;
pub mod schedule;
pub mod template;
pub mod validate;

pub use context::{Context, MapContext, Ref, StepField, StepStatus};
pub use definition::{
    DefinitionError, Need, OnFailure, Policy, StepDef, TaskTemplate, When, WorkflowDef,
};
pub use expr::Expression;
pub use schedule::{Firing, Missed, Schedule, ScheduleDef, ScheduleError};
pub use template::{RenderOptions, Template, placeholders, render, render_task};
pub use validate::{Issue, Report, codes, validate};
