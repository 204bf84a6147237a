//! Validation: everything wrong with a definition, found before a run starts.
//!
//! A definition is written by hand and run unattended, so every mistake that can be seen
//! statically is reported at once, each with a stable code, the step at fault and a
//! message that says what to change: structure (ids, dependencies, cycles, named in
//! order), references (placeholders and conditions may only read variables that exist and
//! steps that are ancestors, whose values exist by the time the step starts), conditions
//! (syntax with offsets, types, status names), steps that can never run, and the task
//! fields' limits from `supervisor-model`.
//!
//! What cannot be checked here: whether a prompt fits
//! [`supervisor_model::MAX_PROMPT_BYTES`] once outputs are inserted (only its literal text
//! is checked); [`crate::template::render_task`] checks the rendered task at run time.
//!
//! Warnings are kept few and meant to be acted on: a `max_concurrency` of 0 (read as no
//! cap), a dependency listed twice, a variable nothing uses.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use supervisor_model::{MAX_PROMPT_BYTES, NewTask, RoutingPrefs};

use crate::context::{MAX_VARS, MAX_VARS_BYTES, Ref, is_valid_var_name, vars_bytes};
use crate::definition::{StepDef, When, WorkflowDef};
use crate::expr::{CheckError, Expression};
use crate::template::Template;

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 10_000;
/// Longest step id, in bytes.
pub const MAX_STEP_ID_BYTES: usize = 64;
/// Longest workflow name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest workflow description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Most issues one list of a [`Report`] holds; the rest are counted in a last issue
/// with code [`codes::MORE`] ("and 99900 more warnings").
pub const MAX_REPORTED_ISSUES: usize = 100;
/// Longest `policy.deadline` a run may have: 30 days.
pub const MAX_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The stable codes of validation issues.
pub mod codes {
    /// The workflow's name is empty.
    pub const EMPTY_NAME: &str = "empty_name";
    /// The workflow's name or description is too long or holds characters it may not
    /// (see `supervisor_model::check_name`).
    pub const INVALID_NAME: &str = "invalid_name";
    /// The workflow has no steps.
    pub const NO_STEPS: &str = "no_steps";
    /// More than [`super::MAX_STEPS`] steps.
    pub const TOO_MANY_STEPS: &str = "too_many_steps";
    /// A variable name is not 1 to 64 of `A-Z a-z 0-9 _ -`, or its value holds NUL.
    pub const INVALID_VAR_NAME: &str = "invalid_var_name";
    /// More than [`crate::context::MAX_VARS`] variables, or more than
    /// [`crate::context::MAX_VARS_BYTES`] of them.
    pub const TOO_MANY_VARS: &str = "too_many_vars";
    /// A policy value is unusable (a zero deadline).
    pub const INVALID_POLICY: &str = "invalid_policy";
    /// The schedule's cron expression or time zone is wrong.
    pub const INVALID_SCHEDULE: &str = "invalid_schedule";
    /// A step id is not 1 to 64 of `a-z 0-9 _ -`.
    pub const INVALID_STEP_ID: &str = "invalid_step_id";
    /// Two steps share an id.
    pub const DUPLICATE_STEP: &str = "duplicate_step";
    /// A step needs a step that does not exist.
    pub const UNKNOWN_DEPENDENCY: &str = "unknown_dependency";
    /// A step needs itself.
    pub const SELF_DEPENDENCY: &str = "self_dependency";
    /// Steps need each other in a circle.
    pub const CYCLE: &str = "cycle";
    /// A `{{ ... }}` placeholder is malformed.
    pub const INVALID_PLACEHOLDER: &str = "invalid_placeholder";
    /// A placeholder or condition reads an undeclared variable.
    pub const UNKNOWN_VARIABLE: &str = "unknown_variable";
    /// A placeholder or condition reads a step that does not exist.
    pub const UNKNOWN_STEP_REFERENCE: &str = "unknown_step_reference";
    /// A placeholder or condition reads a step that is not an ancestor, whose value could
    /// not exist yet.
    pub const NOT_AN_ANCESTOR: &str = "not_an_ancestor";
    /// A condition does not parse.
    pub const INVALID_EXPRESSION: &str = "invalid_expression";
    /// A condition combines values of the wrong types.
    pub const EXPRESSION_TYPE: &str = "expression_type";
    /// A condition compares a status with a name no status has.
    pub const UNKNOWN_STATUS: &str = "unknown_status";
    /// A step's conditions can never all hold, so it would always be skipped.
    pub const UNREACHABLE_STEP: &str = "unreachable_step";
    /// A task field breaks a limit of `supervisor-model` (or the prompt is empty).
    pub const INVALID_TASK: &str = "invalid_task";

    /// Warning: `max_concurrency: 0`, read as no cap.
    pub const MAX_CONCURRENCY_ZERO: &str = "max_concurrency_zero";
    /// Warning: a step lists the same dependency with the same condition twice.
    pub const DUPLICATE_DEPENDENCY: &str = "duplicate_dependency";
    /// Warning: a declared variable is used nowhere.
    pub const UNUSED_VARIABLE: &str = "unused_variable";

    /// The last issue of a list cut at [`super::MAX_REPORTED_ISSUES`]: how many more
    /// there are (in neither [`ERRORS`] nor [`WARNINGS`]).
    pub const MORE: &str = "more";

    /// Every error code.
    pub const ERRORS: &[&str] = &[
        EMPTY_NAME,
        INVALID_NAME,
        NO_STEPS,
        TOO_MANY_STEPS,
        INVALID_VAR_NAME,
        TOO_MANY_VARS,
        INVALID_POLICY,
        INVALID_SCHEDULE,
        INVALID_STEP_ID,
        DUPLICATE_STEP,
        UNKNOWN_DEPENDENCY,
        SELF_DEPENDENCY,
        CYCLE,
        INVALID_PLACEHOLDER,
        UNKNOWN_VARIABLE,
        UNKNOWN_STEP_REFERENCE,
        NOT_AN_ANCESTOR,
        INVALID_EXPRESSION,
        EXPRESSION_TYPE,
        UNKNOWN_STATUS,
        UNREACHABLE_STEP,
        INVALID_TASK,
    ];
    /// Every warning code.
    pub const WARNINGS: &[&str] = &[MAX_CONCURRENCY_ZERO, DUPLICATE_DEPENDENCY, UNUSED_VARIABLE];
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Its stable code (see [`codes`]).
    pub code: &'static str,
    /// The step at fault, if one is.
    pub step: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "[{}] step {step}: {}", self.code, self.message),
            None => write!(f, "[{}] {}", self.code, self.message),
        }
    }
}

/// Everything validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Problems that stop the workflow from running: at most [`MAX_REPORTED_ISSUES`],
    /// then one issue with code [`codes::MORE`] counting the rest.
    pub errors: Vec<Issue>,
    /// Likely mistakes that do not, cut the same way.
    pub warnings: Vec<Issue>,
}

impl Report {
    /// Whether there are no errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors in one line for a refusal: the first `shown`, then how many more there
    /// are (`ValidateWorkflow` lists them all).
    pub fn errors_line(&self, shown: usize) -> String {
        let real: Vec<&Issue> = self
            .errors
            .iter()
            .filter(|i| i.code != codes::MORE)
            .collect();
        let omitted: usize = self
            .errors
            .iter()
            .filter(|i| i.code == codes::MORE)
            .filter_map(|i| i.message.split(' ').nth(1)?.parse::<usize>().ok())
            .sum();
        let mut line = real
            .iter()
            .take(shown)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let more = real.len().saturating_sub(shown) + omitted;
        if more > 0 {
            line.push_str(&format!(
                "; and {more} more errors (`supervisor workflow validate` lists them)"
            ));
        }
        line
    }

    /// Whether an error or warning with this code was found.
    pub fn has(&self, code: &str) -> bool {
        self.errors
            .iter()
            .chain(&self.warnings)
            .any(|i| i.code == code)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error(s), {} warning(s)",
            self.errors.len(),
            self.warnings.len()
        )?;
        for e in &self.errors {
            write!(f, "\nerror: {e}")?;
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Whether `id` is a valid step id: 1 to 64 of `a-z 0-9 _ -`.
pub fn is_valid_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STEP_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

struct Checker<'a> {
    def: &'a WorkflowDef,
    report: Report,
    /// Errors and warnings found past [`MAX_REPORTED_ISSUES`].
    omitted: (usize, usize),
    /// First position of each step id.
    index: HashMap<&'a str, usize>,
    /// Ancestor bitsets by step position, when the graph is acyclic.
    ancestors: Option<Vec<Vec<u64>>>,
    used_vars: BTreeSet<String>,
}

impl<'a> Checker<'a> {
    fn error(&mut self, code: &'static str, step: Option<&str>, message: String) {
        if self.report.errors.len() == MAX_REPORTED_ISSUES {
            self.omitted.0 += 1;
            return;
        }
        self.report.errors.push(Issue {
            code,
            step: step.map(str::to_string),
            message,
        });
    }

    fn warning(&mut self, code: &'static str, step: Option<&str>, message: String) {
        if self.report.warnings.len() == MAX_REPORTED_ISSUES {
            self.omitted.1 += 1;
            return;
        }
        self.report.warnings.push(Issue {
            code,
            step: step.map(str::to_string),
            message,
        });
    }

    /// The report, each list ending with how many issues it left out, if any.
    fn finish(mut self) -> Report {
        let more = |n: usize, what: &str| Issue {
            code: codes::MORE,
            step: None,
            message: format!("and {n} more {what} like those above"),
        };
        if self.omitted.0 > 0 {
            self.report.errors.push(more(self.omitted.0, "errors"));
        }
        if self.omitted.1 > 0 {
            self.report.warnings.push(more(self.omitted.1, "warnings"));
        }
        self.report
    }

    fn is_ancestor(&self, of: usize, candidate: usize) -> Option<bool> {
        let sets = self.ancestors.as_ref()?;
        let words = sets.get(of)?;
        Some(
            words
                .get(candidate / 64)
                .is_some_and(|w| w >> (candidate % 64) & 1 == 1),
        )
    }

    /// Checks the references of a template or condition of step `pos`; `place` names where
    /// they are (`prompt`, `task.context.key`, `needs[0].when`).
    fn check_refs(&mut self, pos: usize, place: &str, refs: &[Ref]) {
        let step = &self.def.steps[pos];
        for r in refs {
            match r {
                Ref::Var(name) => {
                    self.used_vars.insert(name.clone());
                    if !self.def.vars.contains_key(name) {
                        let known = list(self.def.vars.keys().map(String::as_str));
                        self.error(
                            codes::UNKNOWN_VARIABLE,
                            Some(&step.id),
                            format!("{place} reads `{r}`, but vars declares {known}"),
                        );
                    }
                }
                Ref::Step { step: target, .. } => {
                    let Some(&t) = self.index.get(target.as_str()) else {
                        self.error(
                            codes::UNKNOWN_STEP_REFERENCE,
                            Some(&step.id),
                            format!("{place} reads `{r}`, but there is no step `{target}`"),
                        );
                        continue;
                    };
                    if t == pos || self.index.get(step.id.as_str()) == Some(&t) {
                        self.error(
                            codes::NOT_AN_ANCESTOR,
                            Some(&step.id),
                            format!(
                                "{place} reads `{r}`, a value of this very step, which does not exist before it runs"
                            ),
                        );
                    } else if self.is_ancestor(pos, t) == Some(false) {
                        self.error(
                            codes::NOT_AN_ANCESTOR,
                            Some(&step.id),
                            format!(
                                "{place} reads `{r}`, but `{target}` is not among the steps this one needs (directly or through others), so its value may not exist yet; add `{target}` to needs"
                            ),
                        );
                    }
                }
            }
        }
    }
}

fn list<'s>(names: impl Iterator<Item = &'s str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "no variables".to_string()
    } else {
        names.join(", ")
    }
}

/// Checks a definition, returning every problem at once.
pub fn validate(def: &WorkflowDef) -> Report {
    let mut c = Checker {
        def,
        report: Report::default(),
        omitted: (0, 0),
        index: HashMap::new(),
        ancestors: None,
        used_vars: BTreeSet::new(),
    };

    if def.name.trim().is_empty() {
        c.error(
            codes::EMPTY_NAME,
            None,
            "the workflow needs a name: add `name: <name>`".into(),
        );
    } else if def.name.len() > MAX_NAME_BYTES {
        c.error(
            codes::INVALID_NAME,
            None,
            format!(
                "the name is {} bytes; the limit is {MAX_NAME_BYTES} bytes",
                def.name.len()
            ),
        );
    } else if let Err(e) = supervisor_model::check_name("name", "the name", &def.name) {
        c.error(codes::INVALID_NAME, None, e.message);
    }
    if let Some(description) = &def.description {
        if description.len() > MAX_DESCRIPTION_BYTES {
            c.error(
                codes::INVALID_NAME,
                None,
                format!(
                    "the description is {} bytes; the limit is {MAX_DESCRIPTION_BYTES} bytes",
                    description.len()
                ),
            );
        } else if let Err(e) =
            supervisor_model::check_text("description", "the description", description)
        {
            c.error(codes::INVALID_NAME, None, e.message);
        }
    }
    if def.steps.is_empty() {
        c.error(
            codes::NO_STEPS,
            None,
            "the workflow has no steps: add at least one under `steps:`".into(),
        );
    }
    if def.steps.len() > MAX_STEPS {
        c.error(
            codes::TOO_MANY_STEPS,
            None,
            format!("{} steps; at most {MAX_STEPS} are allowed", def.steps.len()),
        );
    }
    if def.vars.len() > MAX_VARS {
        c.error(
            codes::TOO_MANY_VARS,
            None,
            format!(
                "{} variables; at most {MAX_VARS} are allowed",
                def.vars.len()
            ),
        );
    } else if vars_bytes(&def.vars) > MAX_VARS_BYTES {
        c.error(
            codes::TOO_MANY_VARS,
            None,
            format!(
                "the variables take {} bytes; the limit is {MAX_VARS_BYTES} bytes",
                vars_bytes(&def.vars)
            ),
        );
    }
    for (name, value) in &def.vars {
        if !is_valid_var_name(name) {
            c.error(
                codes::INVALID_VAR_NAME,
                None,
                format!(
                    "variable name {} must be 1 to 64 of A-Z a-z 0-9 _ - to be referenced as vars.<name>",
                    supervisor_model::quote(name)
                ),
            );
        } else if let Err(e) =
            supervisor_model::check_text("vars", &format!("variable `{name}`"), value)
        {
            c.error(codes::INVALID_VAR_NAME, None, e.message);
        }
    }
    if def.policy.deadline.is_some_and(|d| d.is_zero()) {
        c.error(
            codes::INVALID_POLICY,
            None,
            "policy.deadline is zero, so every run would fail at once; give a positive duration such as \"2h\" or remove it".into(),
        );
    }
    if let Some(deadline) = def.policy.deadline.filter(|d| *d > MAX_DEADLINE) {
        c.error(
            codes::INVALID_POLICY,
            None,
            format!(
                "policy.deadline is {}; the limit is {} (30 days)",
                humantime::format_duration(deadline),
                humantime::format_duration(MAX_DEADLINE)
            ),
        );
    }
    if def.policy.max_concurrency == Some(0) {
        c.warning(
            codes::MAX_CONCURRENCY_ZERO,
            None,
            "policy.max_concurrency is 0, which means no cap; remove it to say so, or give a positive number".into(),
        );
    }
    if let Some(schedule) = &def.schedule
        && let Err(e) = schedule.compile()
    {
        c.error(codes::INVALID_SCHEDULE, None, format!("schedule: {e}"));
    }

    // Ids.
    for (pos, step) in def.steps.iter().enumerate() {
        if !is_valid_step_id(&step.id) {
            c.error(
                codes::INVALID_STEP_ID,
                Some(&step.id),
                format!(
                    "step id {} must be 1 to {MAX_STEP_ID_BYTES} of a-z 0-9 _ - (steps[{pos}])",
                    supervisor_model::quote(&step.id)
                ),
            );
        }
        if let Some(first) = c.index.get(step.id.as_str()) {
            c.error(
                codes::DUPLICATE_STEP,
                Some(&step.id),
                format!("steps[{pos}] reuses the id of steps[{first}]; step ids must be unique"),
            );
        } else {
            c.index.insert(&step.id, pos);
        }
    }

    // Dependencies and the graph (edges point from a step to what it needs).
    let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(def.steps.len(), 0);
    for _ in &def.steps {
        graph.add_node(());
    }
    for (pos, step) in def.steps.iter().enumerate() {
        let mut seen: Vec<(&str, &When)> = Vec::new();
        for need in &step.needs {
            if need.step == step.id {
                c.error(
                    codes::SELF_DEPENDENCY,
                    Some(&step.id),
                    "the step needs itself; remove it from its own needs".into(),
                );
                continue;
            }
            let Some(&dep) = c.index.get(need.step.as_str()) else {
                c.error(
                    codes::UNKNOWN_DEPENDENCY,
                    Some(&step.id),
                    format!("needs `{}`, but there is no such step", need.step),
                );
                continue;
            };
            if seen.contains(&(need.step.as_str(), &need.when)) {
                c.warning(
                    codes::DUPLICATE_DEPENDENCY,
                    Some(&step.id),
                    format!("needs `{}` ({}) twice; list it once", need.step, need.when),
                );
            }
            seen.push((&need.step, &need.when));
            graph.add_edge(NodeIndex::new(pos), NodeIndex::new(dep), ());
        }
    }

    // Cycles: one issue per strongly connected component, naming one cycle in order.
    let mut sccs: Vec<Vec<usize>> = tarjan_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let mut v: Vec<usize> = scc.into_iter().map(NodeIndex::index).collect();
            v.sort_unstable();
            v
        })
        .collect();
    sccs.sort();
    for scc in &sccs {
        let cycle = find_cycle(&graph, scc);
        let names: Vec<&str> = cycle.iter().map(|&i| def.steps[i].id.as_str()).collect();
        c.error(
            codes::CYCLE,
            names.first().copied(),
            format!(
                "cycle: {} (each step needs the next); remove one of these needs",
                names.join(" -> ")
            ),
        );
    }
    // Execution order (dependencies first), when there is one.
    let order: Option<Vec<usize>> = toposort(&graph, None).ok().map(|mut o| {
        o.reverse();
        o.into_iter().map(NodeIndex::index).collect()
    });
    if let Some(order) = &order {
        c.ancestors = Some(ancestor_sets(def, &c.index, order));
    }

    // References, conditions and task fields.
    for (pos, step) in def.steps.iter().enumerate() {
        check_task(&mut c, pos, step);
        for (k, need) in step.needs.iter().enumerate() {
            let When::Expr(src) = &need.when else {
                continue;
            };
            let place = format!("needs[{k}].when");
            match Expression::parse(src) {
                Err(e) => {
                    let message = if is_single_word(src) {
                        format!(
                            "{place} `{src}` is not a condition: use on_success, on_failure, always, or an expression such as steps.<id>.output contains \"text\""
                        )
                    } else {
                        format!("{place} `{src}`: {e}")
                    };
                    c.error(codes::INVALID_EXPRESSION, Some(&step.id), message);
                }
                Ok(expr) => {
                    match expr.check() {
                        Ok(()) => {}
                        Err(e @ CheckError::Type { .. }) => c.error(
                            codes::EXPRESSION_TYPE,
                            Some(&step.id),
                            format!("{place} `{src}`: {e}"),
                        ),
                        Err(e @ CheckError::UnknownStatus { .. }) => c.error(
                            codes::UNKNOWN_STATUS,
                            Some(&step.id),
                            format!("{place} `{src}`: {e}"),
                        ),
                    }
                    c.check_refs(pos, &place, &expr.refs());
                }
            }
        }
    }

    // Steps that can never run.
    if let Some(order) = &order {
        check_reachability(&mut c, order);
    }

    let unused: Vec<String> = def
        .vars
        .keys()
        .filter(|k| !c.used_vars.contains(*k))
        .cloned()
        .collect();
    for name in unused {
        c.warning(
            codes::UNUSED_VARIABLE,
            None,
            format!("variable `{name}` is used by no prompt, context or condition"),
        );
    }
    c.finish()
}

fn is_single_word(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The shortest cycle through the lowest-numbered step of `scc`, in needs order, with the
/// first step repeated at the end.
fn find_cycle(graph: &DiGraph<(), ()>, scc: &[usize]) -> Vec<usize> {
    let start = scc[0];
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut found = None;
    'bfs: while let Some(at) = queue.pop_front() {
        let mut next: Vec<usize> = graph
            .neighbors(NodeIndex::new(at))
            .map(NodeIndex::index)
            .filter(|n| scc.binary_search(n).is_ok())
            .collect();
        next.sort_unstable();
        next.dedup();
        for n in next {
            if n == start {
                found = Some(at);
                break 'bfs;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(n) {
                e.insert(at);
                queue.push_back(n);
            }
        }
    }
    // Walk back from the last step before `start` to `start`.
    let mut path = vec![start];
    let mut at = found.unwrap_or(start);
    while at != start {
        path.push(at);
        at = prev.get(&at).copied().unwrap_or(start);
    }
    path[1..].reverse();
    path.push(start);
    path
}

fn ancestor_sets(
    def: &WorkflowDef,
    index: &HashMap<&str, usize>,
    order: &[usize],
) -> Vec<Vec<u64>> {
    let n = def.steps.len();
    let words = n.div_ceil(64);
    let mut sets = vec![vec![0u64; words]; n];
    for &pos in order {
        let mut acc = vec![0u64; words];
        for need in &def.steps[pos].needs {
            if let Some(&dep) = index.get(need.step.as_str())
                && dep != pos
            {
                for (a, d) in acc.iter_mut().zip(&sets[dep]) {
                    *a |= d;
                }
                acc[dep / 64] |= 1 << (dep % 64);
            }
        }
        sets[pos] = acc;
    }
    sets
}

fn check_task(c: &mut Checker<'_>, pos: usize, step: &StepDef) {
    let task = &step.task;
    let mut templates: Vec<(String, &str)> = vec![("prompt".to_string(), task.prompt.as_str())];
    for (k, v) in &task.context {
        templates.push((format!("task.context.{k}"), v.as_str()));
    }
    for (place, src) in templates {
        match Template::parse(src) {
            Err(e) => c.error(
                codes::INVALID_PLACEHOLDER,
                Some(&step.id),
                format!("{place}: {e}"),
            ),
            Ok(t) => {
                if place == "prompt" && t.literal_len() > MAX_PROMPT_BYTES {
                    c.error(
                        codes::INVALID_TASK,
                        Some(&step.id),
                        format!(
                            "prompt: its text alone is {} bytes; the limit is {MAX_PROMPT_BYTES} bytes",
                            t.literal_len()
                        ),
                    );
                }
                c.check_refs(pos, &place, &t.refs());
            }
        }
    }
    if task.prompt.trim().is_empty() {
        c.error(
            codes::INVALID_TASK,
            Some(&step.id),
            "prompt: the prompt is empty".into(),
        );
    }
    if task.timeout.is_some_and(|t| t.is_zero()) {
        c.error(
            codes::INVALID_TASK,
            Some(&step.id),
            "timeout: must be positive, e.g. \"10m\"".into(),
        );
    } else if let Some(t) = task
        .timeout
        .filter(|t| t.as_millis() > u128::from(supervisor_model::MAX_TIMEOUT_MS))
    {
        c.error(
            codes::INVALID_TASK,
            Some(&step.id),
            format!(
                "timeout: {} is over the limit of 24h ({} ms)",
                humantime::format_duration(t),
                supervisor_model::MAX_TIMEOUT_MS
            ),
        );
    }
    if let Err(e) = supervisor_model::check_text("prompt", "the prompt", &task.prompt) {
        c.error(codes::INVALID_TASK, Some(&step.id), e.to_string());
    }
    // The remaining limits are the model's own; the prompt was checked above (its length
    // depends on outputs only known at run time), and so was the timeout (in its own
    // words).
    let probe = NewTask {
        task_type: Some(task.task_type),
        prompt: "-".into(),
        priority: task.priority.unwrap_or_default(),
        labels: task.labels.clone(),
        idempotency_key: None,
        context: task.context.clone(),
        max_attempts: task.max_attempts,
        timeout_ms: None,
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
    if let Err(e) = probe.validate() {
        c.error(codes::INVALID_TASK, Some(&step.id), e.to_string());
    }
}

/// Marks steps whose conditions can never all hold: contradictory conditions on one
/// dependency, a condition that is constantly false, or a need for the success or failure
/// of a step that itself never runs.
fn check_reachability(c: &mut Checker<'_>, order: &[usize]) {
    let def = c.def;
    let mut never = vec![false; def.steps.len()];
    for &pos in order {
        let step = &def.steps[pos];
        let mut reason = None;
        for need in &step.needs {
            let Some(&dep) = c.index.get(need.step.as_str()) else {
                continue;
            };
            match &need.when {
                When::OnSuccess | When::OnFailure => {
                    let opposite = if need.when == When::OnSuccess {
                        When::OnFailure
                    } else {
                        When::OnSuccess
                    };
                    if step
                        .needs
                        .iter()
                        .any(|n| n.step == need.step && n.when == opposite)
                    {
                        reason = Some(format!(
                            "it needs `{}` both on_success and on_failure, which cannot both hold",
                            need.step
                        ));
                    } else if never[dep] {
                        reason = Some(format!(
                            "it needs `{}` to {}, but `{}` can never run",
                            need.step,
                            if need.when == When::OnSuccess {
                                "succeed"
                            } else {
                                "fail"
                            },
                            need.step
                        ));
                    }
                }
                When::Expr(src) => {
                    if let Ok(e) = Expression::parse(src)
                        && e.constant() == Some(false)
                    {
                        reason = Some(format!(
                            "its condition on `{}` is `{src}`, which is always false",
                            need.step
                        ));
                    }
                }
                When::Always => {}
            }
            if reason.is_some() {
                break;
            }
        }
        if let Some(reason) = reason {
            never[pos] = true;
            c.error(
                codes::UNREACHABLE_STEP,
                Some(&step.id),
                format!("the step can never run: {reason}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(yaml: &str) -> Report {
        let def = WorkflowDef::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        validate(&def)
    }

    fn codes_of(issues: &[Issue]) -> Vec<&'static str> {
        issues.iter().map(|i| i.code).collect()
    }

    /// A step with a prompt, for building test definitions.
    fn step(id: &str, needs: &str, prompt: &str) -> String {
        format!(
            "  - id: {id}\n    needs: {needs}\n    task: {{ type: testing, prompt: '{prompt}' }}\n"
        )
    }

    #[test]
    fn the_example_of_the_brief_is_valid() {
        let r = report(crate::definition::tests::FIX_AND_REVIEW);
        assert!(r.is_ok(), "{r}");
        assert!(r.warnings.is_empty(), "{r}");
    }

    #[test]
    fn a_cycle_is_named_in_order() {
        let yaml = format!(
            "name: x\nsteps:\n{}{}{}{}",
            step("start", "[]", "p"),
            step("a", "[start, b]", "p"),
            step("b", "[c]", "p"),
            step("c", "[a]", "p"),
        );
        let r = report(&yaml);
        assert_eq!(codes_of(&r.errors), [codes::CYCLE], "{r}");
        assert!(
            r.errors[0].message.starts_with("cycle: a -> b -> c -> a"),
            "{r}"
        );
        assert_eq!(r.errors[0].step.as_deref(), Some("a"));
    }

    #[test]
    fn the_shortest_cycle_through_the_first_step_is_named() {
        // a needs b and d; b needs c; c needs a; d needs a: two cycles through a, one
        // shorter.
        let yaml = format!(
            "name: x\nsteps:\n{}{}{}{}",
            step("a", "[b, d]", "p"),
            step("b", "[c]", "p"),
            step("c", "[a]", "p"),
            step("d", "[a]", "p"),
        );
        let r = report(&yaml);
        assert_eq!(codes_of(&r.errors), [codes::CYCLE], "{r}");
        assert!(r.errors[0].message.starts_with("cycle: a -> d -> a"), "{r}");
    }

    #[test]
    fn every_error_code_has_a_case() {
        let s = |id: &str, needs: &str, prompt: &str| step(id, needs, prompt);
        let cases: Vec<(&str, String)> = vec![
            (
                codes::EMPTY_NAME,
                format!("name: ''\nsteps:\n{}", s("a", "[]", "p")),
            ),
            (codes::NO_STEPS, "name: x\nsteps: []\n".into()),
            (
                codes::INVALID_NAME,
                format!("name: \"a\\u001bb\"\nsteps:\n{}", s("a", "[]", "p")),
            ),
            (
                codes::INVALID_VAR_NAME,
                format!(
                    "name: x\nvars: {{ 'a b': v }}\nsteps:\n{}",
                    s("a", "[]", "p")
                ),
            ),
            (
                codes::TOO_MANY_VARS,
                format!(
                    "name: x\nvars: {{ {} }}\nsteps:\n{}",
                    (0..=MAX_VARS)
                        .map(|i| format!("v{i}: x"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    s("a", "[]", "p")
                ),
            ),
            (
                codes::INVALID_POLICY,
                format!(
                    "name: x\npolicy: {{ deadline: 0s }}\nsteps:\n{}",
                    s("a", "[]", "p")
                ),
            ),
            (
                codes::INVALID_SCHEDULE,
                format!(
                    "name: x\nschedule: {{ cron: '0 2 * *', timezone: UTC }}\nsteps:\n{}",
                    s("a", "[]", "p")
                ),
            ),
            (
                codes::INVALID_SCHEDULE,
                format!(
                    "name: x\nschedule: {{ cron: '0 2 * * *', timezone: Mars/Olympus }}\nsteps:\n{}",
                    s("a", "[]", "p")
                ),
            ),
            (
                codes::INVALID_STEP_ID,
                format!("name: x\nsteps:\n{}", s("Fix It", "[]", "p")),
            ),
            (
                codes::DUPLICATE_STEP,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[]", "p"),
                    s("a", "[]", "p")
                ),
            ),
            (
                codes::UNKNOWN_DEPENDENCY,
                format!("name: x\nsteps:\n{}", s("a", "[nope]", "p")),
            ),
            (
                codes::SELF_DEPENDENCY,
                format!("name: x\nsteps:\n{}", s("a", "[a]", "p")),
            ),
            (
                codes::CYCLE,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[b]", "p"),
                    s("b", "[a]", "p")
                ),
            ),
            (
                codes::INVALID_PLACEHOLDER,
                format!("name: x\nsteps:\n{}", s("a", "[]", "see {{ vars.x")),
            ),
            (
                codes::UNKNOWN_VARIABLE,
                format!("name: x\nsteps:\n{}", s("a", "[]", "in {{ vars.repo }}")),
            ),
            (
                codes::UNKNOWN_STEP_REFERENCE,
                format!("name: x\nsteps:\n{}", s("a", "[]", "{{ steps.zz.output }}")),
            ),
            (
                codes::NOT_AN_ANCESTOR,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[]", "p"),
                    s("b", "[]", "{{ steps.a.output }}")
                ),
            ),
            (
                codes::INVALID_EXPRESSION,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[]", "p"),
                    s("b", "[{ step: a, when: 'steps.a.output contains' }]", "p")
                ),
            ),
            (
                codes::EXPRESSION_TYPE,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[]", "p"),
                    s("b", "[{ step: a, when: 'steps.a.attempts > \"2\"' }]", "p")
                ),
            ),
            (
                codes::UNKNOWN_STATUS,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[]", "p"),
                    s(
                        "b",
                        "[{ step: a, when: 'steps.a.status == \"done\"' }]",
                        "p"
                    )
                ),
            ),
            (
                codes::UNREACHABLE_STEP,
                format!(
                    "name: x\nsteps:\n{}{}",
                    s("a", "[]", "p"),
                    s("b", "[a, { step: a, when: on_failure }]", "p")
                ),
            ),
            (
                codes::INVALID_TASK,
                format!("name: x\nsteps:\n{}", s("a", "[]", " ")),
            ),
        ];
        let mut covered: BTreeSet<&str> = BTreeSet::new();
        for (code, yaml) in &cases {
            let r = report(yaml);
            assert!(
                r.errors.iter().any(|i| i.code == *code),
                "expected {code}:\n{yaml}\n{r}"
            );
            covered.insert(code);
        }
        // TOO_MANY_STEPS is built directly (a YAML text of 10,001 steps is slow to write).
        let mut def = WorkflowDef::from_yaml(&format!("name: x\nsteps:\n{}", s("a", "[]", "p")))
            .expect("parses");
        let template = def.steps[0].clone();
        def.steps = (0..=MAX_STEPS)
            .map(|i| {
                let mut st = template.clone();
                st.id = format!("s{i}");
                st
            })
            .collect();
        let r = validate(&def);
        assert_eq!(codes_of(&r.errors), [codes::TOO_MANY_STEPS], "{r}");
        covered.insert(codes::TOO_MANY_STEPS);
        let all: BTreeSet<&str> = codes::ERRORS.iter().copied().collect();
        assert_eq!(covered, all);
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let yaml = format!(
            "name: ''\nvars: {{ used: v }}\nsteps:\n{}{}{}",
            step("a", "[nope]", "{{ vars.used }} {{ vars.missing }}"),
            step("b", "[b]", "{{ steps.c.output }}"),
            step("c", "[{ step: a, when: 'on_sucess' }]", "p"),
        );
        let r = report(&yaml);
        assert_eq!(
            codes_of(&r.errors),
            [
                codes::EMPTY_NAME,
                codes::UNKNOWN_DEPENDENCY,
                codes::SELF_DEPENDENCY,
                codes::UNKNOWN_VARIABLE,
                codes::NOT_AN_ANCESTOR,
                codes::INVALID_EXPRESSION,
            ],
            "{r}"
        );
        let expr = &r.errors[5];
        assert_eq!(expr.step.as_deref(), Some("c"));
        assert!(
            expr.message.contains("`on_sucess` is not a condition"),
            "{expr}"
        );
        assert!(
            expr.message.contains("on_success, on_failure, always"),
            "{expr}"
        );
        assert!(r.errors[3].message.contains("`vars.missing`"), "{r}");
        assert!(r.errors[3].message.contains("`used`"), "{r}");
    }

    #[test]
    fn references_must_be_ancestors_even_indirectly() {
        let yaml = format!(
            "name: x\nsteps:\n{}{}{}{}",
            step("a", "[]", "p"),
            step("b", "[a]", "p"),
            step("c", "[b]", "{{ steps.a.output }}"),
            step(
                "d",
                "[b, { step: c, when: 'steps.a.status == \"failed\"' }]",
                "{{ steps.d.output }}"
            ),
        );
        let r = report(&yaml);
        assert_eq!(codes_of(&r.errors), [codes::NOT_AN_ANCESTOR], "{r}");
        assert!(r.errors[0].message.contains("this very step"), "{r}");
        let yaml = format!(
            "name: x\nsteps:\n{}{}{}",
            step("a", "[]", "p"),
            step("b", "[]", "p"),
            step("c", "[{ step: a, when: 'steps.b.output == \"\"' }]", "p"),
        );
        let r = report(&yaml);
        assert_eq!(codes_of(&r.errors), [codes::NOT_AN_ANCESTOR], "{r}");
        assert!(r.errors[0].message.contains("needs[0].when"), "{r}");
        assert!(r.errors[0].message.contains("add `b` to needs"), "{r}");
    }

    #[test]
    fn unreachable_steps_and_their_dependents() {
        let yaml = format!(
            "name: x\nsteps:\n{}{}{}{}{}",
            step("a", "[]", "p"),
            step("never", "[{ step: a, when: 'false' }]", "p"),
            step("after", "[never]", "p"),
            step("cleanup", "[{ step: never, when: always }]", "p"),
            step("both", "[a, { step: a, when: on_failure }]", "p"),
        );
        let r = report(&yaml);
        let bad: Vec<_> = r
            .errors
            .iter()
            .map(|i| (i.code, i.step.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(
            bad,
            [
                (codes::UNREACHABLE_STEP, "never"),
                (codes::UNREACHABLE_STEP, "after"),
                (codes::UNREACHABLE_STEP, "both"),
            ],
            "{r}"
        );
        assert!(r.errors[0].message.contains("always false"), "{r}");
        assert!(r.errors[1].message.contains("can never run"), "{r}");
    }

    #[test]
    fn warnings_are_few_and_specific() {
        let yaml = format!(
            "name: x\nvars: {{ used: u, spare: s }}\npolicy: {{ max_concurrency: 0 }}\nsteps:\n{}{}",
            step("a", "[]", "{{ vars.used }}"),
            step("b", "[a, a]", "p"),
        );
        let r = report(&yaml);
        assert!(r.is_ok(), "{r}");
        assert_eq!(
            codes_of(&r.warnings),
            [
                codes::MAX_CONCURRENCY_ZERO,
                codes::DUPLICATE_DEPENDENCY,
                codes::UNUSED_VARIABLE
            ],
            "{r}"
        );
        assert!(r.warnings[2].message.contains("`spare`"), "{r}");
        let all: BTreeSet<&str> = codes::WARNINGS.iter().copied().collect();
        assert_eq!(all, codes_of(&r.warnings).into_iter().collect());
    }

    #[test]
    fn task_limits_come_from_the_model() {
        let yaml = format!(
            "name: x\nsteps:\n  - id: a\n    task: {{ type: testing, prompt: p, max_attempts: 0, timeout: 0s }}\n  - id: b\n    task: {{ type: testing, prompt: '{}' }}\n",
            "x".repeat(MAX_PROMPT_BYTES + 1)
        );
        let r = report(&yaml);
        let msgs: Vec<&str> = r.errors.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(codes_of(&r.errors), [codes::INVALID_TASK; 3], "{r}");
        assert!(msgs[0].starts_with("timeout:"), "{r}");
        assert!(msgs[1].starts_with("max_attempts:"), "{r}");
        assert!(msgs[2].contains("the limit is"), "{r}");
    }

    #[test]
    fn absurd_values_and_forbidden_characters_are_named() {
        let yaml = format!(
            "name: \"{}\"\ndescription: \"nul\\0\"\nvars: {{ repo: \"a\\0b\" }}\npolicy: {{ deadline: 100y }}\nsteps:\n  - id: a\n    task: {{ type: testing, prompt: \"{{{{ vars.repo }}}}\\0\", timeout: 100y, labels: [\"x\\u202ey\"] }}\n",
            "n".repeat(MAX_NAME_BYTES + 1)
        );
        let r = report(&yaml);
        let msgs: Vec<String> = r.errors.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            codes_of(&r.errors),
            [
                codes::INVALID_NAME,
                codes::INVALID_NAME,
                codes::INVALID_VAR_NAME,
                codes::INVALID_POLICY,
                codes::INVALID_TASK,
                codes::INVALID_TASK,
                codes::INVALID_TASK,
            ],
            "{r}"
        );
        for (i, needle) in [
            "the limit is 128 bytes",
            "U+0000",
            "variable `repo` holds U+0000",
            "the limit is 30days",
            "over the limit of 24h",
            "prompt: the prompt holds U+0000",
            "U+202E",
        ]
        .iter()
        .enumerate()
        {
            assert!(msgs[i].contains(needle), "{} lacks {needle}", msgs[i]);
        }
    }

    #[test]
    fn too_many_variables_are_an_error_and_the_lists_are_cut() {
        let vars: Vec<String> = (0..100_000).map(|i| format!("v{i}: x")).collect();
        let yaml = format!(
            "name: x\nvars:\n  {}\nsteps:\n{}",
            vars.join("\n  "),
            step("a", "[]", "p")
        );
        let r = report(&yaml);
        assert_eq!(codes_of(&r.errors), [codes::TOO_MANY_VARS], "{r}");
        assert!(r.errors[0].message.contains("at most 256"), "{r}");
        assert_eq!(r.warnings.len(), MAX_REPORTED_ISSUES + 1);
        let last = r.warnings.last().expect("a last warning");
        assert_eq!(last.code, codes::MORE);
        assert_eq!(last.message, "and 99900 more warnings like those above");
        let steps: String = (0..300)
            .map(|i| step(&format!("s{i}"), "[nope]", "p"))
            .collect();
        let r = report(&format!("name: x\nsteps:\n{steps}"));
        assert_eq!(r.errors.len(), MAX_REPORTED_ISSUES + 1);
        let line = r.errors_line(2);
        assert!(
            line.ends_with("; and 298 more errors (`supervisor workflow validate` lists them)"),
            "{line}"
        );
        assert_eq!(line.matches("unknown_dependency").count(), 2, "{line}");
        let big = format!(
            "name: x\nvars: {{ a: '{}' }}\nsteps:\n{}",
            "x".repeat(MAX_VARS_BYTES),
            step("a", "[]", "{{ vars.a }}")
        );
        let r = report(&big);
        assert_eq!(codes_of(&r.errors), [codes::TOO_MANY_VARS], "{r}");
    }

    #[test]
    fn placeholders_in_context_values_are_checked_too() {
        let yaml = "name: x\nsteps:\n  - id: a\n    task: { type: testing, prompt: p, context: { repo: '{{ vars.repo }}' } }\n";
        let r = report(yaml);
        assert_eq!(codes_of(&r.errors), [codes::UNKNOWN_VARIABLE], "{r}");
        assert!(r.errors[0].message.starts_with("task.context.repo"), "{r}");
    }
}
