//! Prompt templates: `{{ vars.x }}` and `{{ steps.<id>.output }}` placeholders.
//!
//! Steps pass results to later steps by text: a prompt names an ancestor's output and the
//! engine inserts it when it enqueues the step's task. The syntax is deliberately tiny —
//! a placeholder holds exactly one reference (`vars.<name>` or
//! `steps.<id>.output|status|attempts`, spaces inside the braces optional), with no
//! filters or logic, so validation can see every reference ([`placeholders`]) and reject
//! unknown ones before a run starts.
//!
//! Every `{{` opens a placeholder; a prompt that needs literal braces (a Jinja or GitHub
//! Actions snippet) writes `\{{`, which renders as `{{`. A malformed placeholder is an
//! error, never passed through, so a typo cannot silently reach a model.
//!
//! Outputs can be large, so each inserted output is cut to
//! [`RenderOptions::max_output_bytes`] (default 32 KiB, on a character boundary) and
//! followed by a marker saying how much was dropped. Whether the rendered prompt fits
//! [`supervisor_model::MAX_PROMPT_BYTES`] depends on the outputs, so it can only be checked
//! at run time: [`render_task`] does it.

use std::fmt::Write as _;

use supervisor_model::{FieldError, NewTask, RoutingPrefs};

use crate::context::{Context, Ref, StepField, StepStatus};
use crate::definition::TaskTemplate;

/// Default cap on one inserted output, in bytes.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 32 * 1024;

/// A malformed template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {message}")]
pub struct TemplateError {
    /// Byte offset of the `{{` that opens the bad placeholder.
    pub offset: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A template that could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template is malformed.
    #[error("invalid template {0}")]
    Syntax(#[from] TemplateError),
    /// The context has no such variable.
    #[error("unknown variable vars.{0}")]
    UnknownVar(String),
}

/// A step's task could not be built from its template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A field did not render.
    #[error("{field}: {error}")]
    Render {
        /// The field (`prompt`, or `context.<key>`).
        field: String,
        /// Why.
        error: RenderError,
    },
    /// The rendered task breaks a limit (for example a prompt over `MAX_PROMPT_BYTES`).
    #[error("{0}")]
    Invalid(#[from] FieldError),
}

/// How to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Most bytes of one inserted step output; longer outputs are cut and marked.
    pub max_output_bytes: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Ref(Ref),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses a template, reporting the first malformed placeholder.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < src.len() {
            let rest = &src[i..];
            if rest.starts_with("\\{{") {
                text.push_str("{{");
                i += 3;
            } else if let Some(after) = rest.strip_prefix("{{") {
                let Some(close) = after.find("}}") else {
                    return Err(TemplateError {
                        offset: i,
                        message: "`{{` is never closed by `}}`; write \\{{ for literal braces"
                            .into(),
                    });
                };
                let inner = after[..close].trim();
                let r = Ref::parse(inner).map_err(|why| TemplateError {
                    offset: i,
                    message: format!("invalid placeholder {why}; write \\{{{{ for literal braces"),
                })?;
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Ref(r));
                i += 2 + close + 2;
            } else {
                let ch = rest.chars().next().unwrap_or_default();
                text.push(ch);
                i += ch.len_utf8();
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Template { segments })
    }

    /// Every reference, in order of appearance, without repeats.
    pub fn refs(&self) -> Vec<Ref> {
        let mut out: Vec<Ref> = Vec::new();
        for s in &self.segments {
            if let Segment::Ref(r) = s
                && !out.contains(r)
            {
                out.push(r.clone());
            }
        }
        out
    }

    /// Bytes of literal text, which the rendered result can never be shorter than.
    pub fn literal_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Text(t) => t.len(),
                Segment::Ref(_) => 0,
            })
            .sum()
    }

    /// Renders with values from `ctx`. Missing step values render as documented on
    /// [`Context`] (output `""`, attempts `0`, status `pending`); a missing variable is an
    /// error.
    pub fn render(
        &self,
        ctx: &(impl Context + ?Sized),
        opts: &RenderOptions,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Ref(Ref::Var(name)) => out.push_str(
                    ctx.var(name)
                        .ok_or_else(|| RenderError::UnknownVar(name.clone()))?,
                ),
                Segment::Ref(Ref::Step { step, field }) => match field {
                    StepField::Output => {
                        let output = ctx.step_output(step).unwrap_or_default();
                        push_truncated(&mut out, output, step, opts.max_output_bytes);
                    }
                    StepField::Status => out.push_str(
                        ctx.step_status(step)
                            .unwrap_or(StepStatus::Pending)
                            .as_str(),
                    ),
                    StepField::Attempts => {
                        let _ = write!(out, "{}", ctx.step_attempts(step).unwrap_or(0));
                    }
                },
            }
        }
        Ok(out)
    }
}

/// Appends `output`, cut to at most `max` bytes on a character boundary and followed by a
/// marker when cut. A NUL (which no prompt may hold, and a provider's output might)
/// becomes U+FFFD, so an odd output cannot make the next step's task invalid.
fn push_truncated(out: &mut String, output: &str, step: &str, max: usize) {
    let push = |out: &mut String, text: &str| {
        if text.contains('\0') {
            out.push_str(&text.replace('\0', "\u{fffd}"));
        } else {
            out.push_str(text);
        }
    };
    if output.len() <= max {
        push(out, output);
        return;
    }
    let cut = supervisor_model::floor_char_boundary(output, max);
    push(out, &output[..cut]);
    let _ = write!(
        out,
        "\n[... output of step {step} truncated: {cut} of {} bytes shown]",
        output.len()
    );
}

/// The references in a template, in order of appearance and without repeats (for
/// validation).
pub fn placeholders(src: &str) -> Result<Vec<Ref>, TemplateError> {
    Template::parse(src).map(|t| t.refs())
}

/// Parses and renders `src` in one go.
pub fn render(
    src: &str,
    ctx: &(impl Context + ?Sized),
    opts: &RenderOptions,
) -> Result<String, RenderError> {
    Template::parse(src)?.render(ctx, opts)
}

/// Builds the task a step enqueues: renders its prompt and context values and checks the
/// result against the model's limits ([`NewTask::validate`]), which is where a prompt
/// grown past `MAX_PROMPT_BYTES` by inserted outputs is caught.
///
/// The idempotency key is left for the engine to set (it knows the run).
pub fn render_task(
    task: &TaskTemplate,
    ctx: &(impl Context + ?Sized),
    opts: &RenderOptions,
) -> Result<NewTask, BuildError> {
    let prompt = render(&task.prompt, ctx, opts).map_err(|error| BuildError::Render {
        field: "prompt".into(),
        error,
    })?;
    let mut context = std::collections::BTreeMap::new();
    for (key, value) in &task.context {
        let rendered = render(value, ctx, opts).map_err(|error| BuildError::Render {
            field: format!("context.{key}"),
            error,
        })?;
        context.insert(key.clone(), rendered);
    }
    let new = NewTask {
        task_type: Some(task.task_type),
        prompt,
        priority: task.priority.unwrap_or_default(),
        labels: task.labels.clone(),
        idempotency_key: None,
        context,
        max_attempts: task.max_attempts,
        timeout_ms: task
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        routing: RoutingPrefs {
            specialty: task.specialty,
            strategy: task.strategy,
            preferred_providers: task.preferred_providers.clone(),
            excluded_providers: task.excluded_providers.clone(),
            max_cost_micros: None,
        },
        submitted_by: None,
        trace: None,
    };
    new.validate()?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::MapContext;

    fn ctx() -> MapContext {
        MapContext::default().var("repo", "/src/app").step(
            "analyse",
            StepStatus::Succeeded,
            "the retry loop races",
            2,
        )
    }

    #[test]
    fn renders_vars_and_outputs_with_or_without_spaces() {
        let out = render(
            "Fix {{vars.repo}}: {{ steps.analyse.output }} ({{  steps.analyse.attempts }} tries, {{ steps.analyse.status }})",
            &ctx(),
            &RenderOptions::default(),
        );
        assert_eq!(
            out.as_deref(),
            Ok("Fix /src/app: the retry loop races (2 tries, succeeded)")
        );
    }

    #[test]
    fn placeholders_lists_references_once_in_order() {
        let refs = placeholders("{{ steps.b.output }} {{ vars.x }} {{steps.b.output}}")
            .map(|r| r.iter().map(|r| r.to_string()).collect::<Vec<_>>());
        assert_eq!(
            refs,
            Ok(vec!["steps.b.output".to_string(), "vars.x".to_string()])
        );
        assert_eq!(placeholders("no placeholders"), Ok(vec![]));
    }

    #[test]
    fn escaped_braces_stay_literal() {
        let src = r"Keep \{{ steps.build.outputs.tag }} as is; repo {{ vars.repo }}";
        assert_eq!(placeholders(src).map(|r| r.len()), Ok(1));
        assert_eq!(
            render(src, &ctx(), &RenderOptions::default()).as_deref(),
            Ok("Keep {{ steps.build.outputs.tag }} as is; repo /src/app")
        );
        // A lone `}}` or `{` is plain text.
        assert_eq!(
            render("a } }} { b", &ctx(), &RenderOptions::default()).as_deref(),
            Ok("a } }} { b")
        );
    }

    #[test]
    fn malformed_placeholders_are_errors_with_offsets() {
        let e = placeholders("abc {{ vars.repo ").expect_err("unclosed");
        assert_eq!(e.offset, 4);
        assert!(e.message.contains("never closed"), "{e}");
        let e = placeholders("é {{ steps.a.outputs }}").expect_err("bad field");
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("status, output or attempts"), "{e}");
        assert!(e.message.contains(r"\{{"), "{e}");
        assert!(placeholders("{{ repo }}").is_err());
        assert!(placeholders("{{}}").is_err());
    }

    #[test]
    fn long_outputs_are_truncated_with_a_marker() {
        let big = "é".repeat(10); // 20 bytes
        let ctx = MapContext::default().step("a", StepStatus::Succeeded, &big, 1);
        let opts = RenderOptions {
            max_output_bytes: 7,
        };
        let out = render("<{{ steps.a.output }}>", &ctx, &opts).expect("renders");
        assert_eq!(
            out,
            "<ééé\n[... output of step a truncated: 6 of 20 bytes shown]>"
        );
        let exact = RenderOptions {
            max_output_bytes: 20,
        };
        assert_eq!(
            render("{{ steps.a.output }}", &ctx, &exact).as_deref(),
            Ok(big.as_str())
        );
    }

    #[test]
    fn render_task_builds_the_model_task_and_checks_the_rendered_prompt() {
        let def =
            crate::definition::WorkflowDef::from_yaml(crate::definition::tests::FIX_AND_REVIEW)
                .expect("parses");
        let vars = MapContext::with_vars(def.vars.clone());
        let task =
            render_task(&def.steps[0].task, &vars, &RenderOptions::default()).expect("renders");
        assert_eq!(task.prompt, "Analyse /src/app for flaky retry test");
        assert_eq!(task.context["repo"], "/src/app");
        assert_eq!(
            task.task_type,
            Some(supervisor_model::TaskType::CodeAnalysis)
        );
        assert_eq!(task.priority, supervisor_model::Priority::High);
        assert_eq!(task.timeout_ms, Some(600_000));
        assert_eq!(task.max_attempts, Some(2));
        assert_eq!(task.routing.preferred_providers, ["claude"]);
        assert_eq!(task.idempotency_key, None);

        // Inserted outputs can push the prompt past the model's limit: caught here.
        let huge = "x".repeat(supervisor_model::MAX_PROMPT_BYTES);
        let ctx = vars
            .clone()
            .step("analyse", StepStatus::Succeeded, &huge, 1);
        let opts = RenderOptions {
            max_output_bytes: usize::MAX,
        };
        let err = render_task(&def.steps[1].task, &ctx, &opts).expect_err("too long");
        assert!(
            matches!(&err, BuildError::Invalid(e) if e.field == "prompt"),
            "{err}"
        );
        // With the default cap the output is cut and the task fits.
        assert!(render_task(&def.steps[1].task, &ctx, &RenderOptions::default()).is_ok());

        // A context value that does not render names its key.
        let mut bad = def.steps[0].task.clone();
        bad.context.insert("x".into(), "{{ vars.nope }}".into());
        let err = render_task(&bad, &vars, &RenderOptions::default()).expect_err("unknown var");
        assert_eq!(err.to_string(), "context.x: unknown variable vars.nope");
    }

    #[test]
    fn a_nul_in_an_output_does_not_reach_the_next_prompt() {
        let ctx = MapContext::default().step("a", StepStatus::Succeeded, "x\0y", 1);
        let def = crate::definition::WorkflowDef::from_yaml(
            "name: n\nsteps:\n  - id: b\n    task: { type: testing, prompt: \"see {{ steps.a.output }}\" }\n",
        )
        .expect("parses");
        let task =
            render_task(&def.steps[0].task, &ctx, &RenderOptions::default()).expect("a valid task");
        assert_eq!(task.prompt, "see x\u{fffd}y");
    }

    #[test]
    fn missing_values_render_as_documented() {
        let out = render(
            "[{{ steps.skipped.output }}|{{ steps.skipped.attempts }}|{{ steps.skipped.status }}]",
            &ctx(),
            &RenderOptions::default(),
        );
        assert_eq!(out.as_deref(), Ok("[|0|pending]"));
        assert_eq!(
            render("{{ vars.nope }}", &ctx(), &RenderOptions::default()),
            Err(RenderError::UnknownVar("nope".into()))
        );
    }
}
