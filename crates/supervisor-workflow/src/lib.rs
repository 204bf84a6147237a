//! The pure core of Supervisor's DAG workflows.

#![warn(missing_docs)]

pub mod context;
pub mod expr;

pub use context::{Context, MapContext, Ref, StepField, StepStatus};
pub use expr::Expression;
