//! The pure core of Supervisor's DAG workflows.

#![warn(missing_docs)]

pub mod context;
pub mod expr;
pub mod schedule;

pub use context::{Context, MapContext, Ref, StepField, StepStatus};
pub use expr::Expression;
pub use schedule::{Firing, Missed, Schedule, ScheduleDef, ScheduleError};
