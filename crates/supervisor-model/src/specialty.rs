//! Agent specialties: who should work on a task. Each has a system prompt, tool
//! permissions and the task types it serves; the analyzer picks one for a task from an
//! explicit choice, its labels, its content, or its type (every type has a default).

use serde::{Deserialize, Serialize};

use crate::TaskType;

named_enum!(
    /// The ten agent specialties.
    Specialty, "specialty", {
        /// Designs structure and boundaries.
        CodeArchitect => "code_architect",
        /// Reviews changes; reads, never writes.
        CodeReviewer => "code_reviewer",
        /// Finds and fixes defects.
        BugHunter => "bug_hunter",
        /// Measures and speeds up code.
        PerformanceOptimizer => "performance_optimizer",
        /// Audits for vulnerabilities; reads, never writes.
        SecurityAnalyst => "security_analyst",
        /// Writes tests.
        TestEngineer => "test_engineer",
        /// Writes documentation.
        DocumentationWriter => "documentation_writer",
        /// Restructures code without changing behaviour.
        RefactoringSpecialist => "refactoring_specialist",
        /// Explains the problem domain and summarises issues; reads, never writes.
        DomainExpert => "domain_expert",
        /// Builds features and does whatever else is asked.
        GeneralDeveloper => "general_developer",
    }
);

named_enum!(
    /// How a provider is chosen among those able to take a task.
    RoutingStrategy, "routing strategy", {
        /// Each in turn.
        RoundRobin => "round_robin",
        /// The one with the most free capacity.
        LeastLoaded => "least_loaded",
        /// The one with the lowest observed median latency.
        Fastest => "fastest",
        /// The one with the lowest estimated cost for the task.
        CostOptimized => "cost_optimized",
        /// The one whose capabilities fit the task best.
        Capability => "capability",
        /// The first available in the configured order.
        FailoverChain => "failover_chain",
    }
);

/// How a task wants to be routed; everything optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutingPrefs {
    /// The specialty to use instead of the analyzer's choice.
    pub specialty: Option<Specialty>,
    /// The strategy to use instead of the configured one.
    pub strategy: Option<RoutingStrategy>,
    /// Providers to try first, in this order, when they are available.
    pub preferred_providers: Vec<String>,
    /// Providers never to use for this task.
    pub excluded_providers: Vec<String>,
    /// Most an attempt may cost by the provider's estimate, in millionths of a dollar.
    pub max_cost_micros: Option<u64>,
}

/// What an agent of a specialty may do with tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPolicy {
    /// Whether it may change files or run commands.
    pub can_write: bool,
    /// Tools it may use (Claude Code names).
    pub allowed_tools: Vec<String>,
    /// Tools it must never use.
    pub disallowed_tools: Vec<String>,
    /// Claude Code permission mode (`plan` for read-only work, `acceptEdits` otherwise).
    pub permission_mode: String,
}

const READ_TOOLS: &[&str] = &["Read", "Grep", "Glob", "LS"];
const WRITE_TOOLS: &[&str] = &["Edit", "MultiEdit", "Write", "NotebookEdit"];

fn tools(can_write: bool, shell: bool) -> ToolPolicy {
    let mut allowed: Vec<String> = READ_TOOLS.iter().map(|t| t.to_string()).collect();
    let mut disallowed = Vec::new();
    if can_write {
        allowed.extend(WRITE_TOOLS.iter().map(|t| t.to_string()));
    } else {
        disallowed.extend(WRITE_TOOLS.iter().map(|t| t.to_string()));
    }
    if shell {
        allowed.push("Bash".into());
    } else {
        disallowed.push("Bash".into());
    }
    ToolPolicy {
        can_write,
        allowed_tools: allowed,
        disallowed_tools: disallowed,
        permission_mode: if can_write { "acceptEdits" } else { "plan" }.into(),
    }
}

impl Specialty {
    /// The specialty a task type goes to when nothing else decides.
    pub fn default_for(task_type: TaskType) -> Specialty {
        match task_type {
            TaskType::PrReview => Specialty::CodeReviewer,
            TaskType::IssueSummary => Specialty::DomainExpert,
            TaskType::CodeAnalysis => Specialty::CodeArchitect,
            TaskType::Refactor => Specialty::RefactoringSpecialist,
            TaskType::BugFix => Specialty::BugHunter,
            TaskType::Feature => Specialty::GeneralDeveloper,
            TaskType::Documentation => Specialty::DocumentationWriter,
            TaskType::Testing => Specialty::TestEngineer,
            TaskType::Deployment => Specialty::GeneralDeveloper,
            TaskType::SecurityAudit => Specialty::SecurityAnalyst,
        }
    }

    /// The task types it serves.
    pub fn serves(self) -> &'static [TaskType] {
        use TaskType::*;
        match self {
            Specialty::CodeArchitect => &[CodeAnalysis, Feature, Refactor, Deployment],
            Specialty::CodeReviewer => &[PrReview, CodeAnalysis],
            Specialty::BugHunter => &[BugFix, Testing],
            Specialty::PerformanceOptimizer => &[CodeAnalysis, BugFix, Refactor],
            Specialty::SecurityAnalyst => &[SecurityAudit, PrReview, CodeAnalysis],
            Specialty::TestEngineer => &[Testing, BugFix],
            Specialty::DocumentationWriter => &[Documentation, IssueSummary],
            Specialty::RefactoringSpecialist => &[Refactor, CodeAnalysis],
            Specialty::DomainExpert => &[IssueSummary, CodeAnalysis, Documentation],
            Specialty::GeneralDeveloper => TaskType::ALL,
        }
    }

    /// Its tool permissions. Reviewers, security analysts and domain experts read only.
    pub fn tools(self) -> ToolPolicy {
        match self {
            Specialty::CodeReviewer | Specialty::SecurityAnalyst | Specialty::DomainExpert => {
                tools(false, false)
            }
            Specialty::DocumentationWriter => tools(true, false),
            _ => tools(true, true),
        }
    }

    /// Its system prompt.
    pub fn system_prompt(self) -> &'static str {
        match self {
            Specialty::CodeArchitect => {
                "You are a software architect. Map the structure of the code, its boundaries and dependencies, and propose designs that keep modules small and their contracts explicit. Explain trade-offs briefly and concretely."
            }
            Specialty::CodeReviewer => {
                "You are a code reviewer. Read the change and its context; report correctness bugs first, then risks, then clarity, each with file and line. Do not modify files."
            }
            Specialty::BugHunter => {
                "You are a debugging specialist. Reproduce the defect, find its root cause, make the smallest correct fix, and add a test that fails without it."
            }
            Specialty::PerformanceOptimizer => {
                "You are a performance engineer. Measure before changing anything, find where the time or memory goes, fix the bottleneck, and show the numbers before and after."
            }
            Specialty::SecurityAnalyst => {
                "You are a security analyst. Look for injection, authentication and authorization flaws, secrets in code, unsafe deserialization, path traversal and dependency risks. Report each finding with its severity, location and a fix. Do not modify files."
            }
            Specialty::TestEngineer => {
                "You are a test engineer. Cover the behaviour that matters with fast, deterministic tests named after what they check; include edge cases and failure paths."
            }
            Specialty::DocumentationWriter => {
                "You are a technical writer. Explain what the code does and how to use it, for its readers, with short accurate examples. Keep documents next to the code they describe."
            }
            Specialty::RefactoringSpecialist => {
                "You are a refactoring specialist. Improve the structure without changing behaviour, in small steps, keeping the tests green after each."
            }
            Specialty::DomainExpert => {
                "You are a domain expert. Summarise the problem, the constraints and what is being asked, and point out what is unclear. Do not modify files."
            }
            Specialty::GeneralDeveloper => {
                "You are a senior software developer. Do what the task asks, completely and carefully, following the conventions of the code base, and verify your work."
            }
        }
    }
}

/// How the analyzer chose a specialty, for the task's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialtyChoice {
    /// The specialty.
    pub specialty: Specialty,
    /// Why, in a few words.
    pub reason: String,
}

/// Words in a label or the prompt that point at a specialty regardless of the task type.
const SIGNALS: &[(Specialty, &[&str])] = &[
    (
        Specialty::SecurityAnalyst,
        &[
            "security",
            "vulnerability",
            "vulnerabilities",
            "cve",
            "xss",
            "csrf",
            "injection",
            "exploit",
            "secrets",
        ],
    ),
    (
        Specialty::PerformanceOptimizer,
        &[
            "performance",
            "perf",
            "slow",
            "latency",
            "throughput",
            "optimize",
            "optimise",
            "profiling",
            "memory leak",
        ],
    ),
    (
        Specialty::TestEngineer,
        &["flaky", "coverage", "unit test", "test suite"],
    ),
    (
        Specialty::CodeArchitect,
        &["architecture", "design doc", "module boundaries"],
    ),
    (
        Specialty::DocumentationWriter,
        &["readme", "docstring", "tutorial"],
    ),
];

/// Picks the specialty for a task: an explicit choice wins; then a label naming a
/// specialty or carrying one of its signal words; then signal words in the prompt, but only
/// for a specialty that serves the task's type; then the type's default.
pub fn analyze(
    task_type: TaskType,
    labels: &[String],
    prompt: &str,
    explicit: Option<Specialty>,
) -> SpecialtyChoice {
    if let Some(s) = explicit {
        return SpecialtyChoice {
            specialty: s,
            reason: "named by the task".into(),
        };
    }
    for label in labels {
        if let Ok(s) = label.parse::<Specialty>() {
            return SpecialtyChoice {
                specialty: s,
                reason: format!("label {label:?}"),
            };
        }
        let l = label.to_ascii_lowercase();
        for (s, words) in SIGNALS {
            if words.iter().any(|w| l == *w) {
                return SpecialtyChoice {
                    specialty: *s,
                    reason: format!("label {label:?}"),
                };
            }
        }
    }
    let text = prompt.to_ascii_lowercase();
    let mut best: Option<(Specialty, usize, &str)> = None;
    for (s, words) in SIGNALS {
        if !s.serves().contains(&task_type) {
            continue;
        }
        let hits: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| contains_word(&text, w))
            .collect();
        if let Some(first) = hits.first()
            && best.is_none_or(|(_, n, _)| hits.len() > n)
        {
            best = Some((*s, hits.len(), first));
        }
    }
    if let Some((s, _, word)) = best {
        return SpecialtyChoice {
            specialty: s,
            reason: format!("prompt mentions {word:?}"),
        };
    }
    SpecialtyChoice {
        specialty: Specialty::default_for(task_type),
        reason: format!("default for {task_type}"),
    }
}

/// Whether `needle` occurs in `haystack` as whole words.
fn contains_word(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(i, _)| {
        let before = haystack[..i].chars().next_back();
        let after = haystack[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric()) && !after.is_some_and(|c| c.is_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_type_has_a_specialty_that_serves_it() {
        for t in TaskType::ALL {
            let s = Specialty::default_for(*t);
            assert!(s.serves().contains(t), "{s} does not serve {t}");
        }
    }

    #[test]
    fn reviewers_and_security_analysts_never_write() {
        for s in [
            Specialty::CodeReviewer,
            Specialty::SecurityAnalyst,
            Specialty::DomainExpert,
        ] {
            let t = s.tools();
            assert!(!t.can_write);
            assert!(t.disallowed_tools.iter().any(|x| x == "Edit"));
            assert!(t.disallowed_tools.iter().any(|x| x == "Bash"));
            assert!(!t.allowed_tools.iter().any(|x| x == "Write"));
            assert_eq!(t.permission_mode, "plan");
        }
        assert!(Specialty::BugHunter.tools().can_write);
    }

    #[test]
    fn analyzer_order_explicit_label_content_type() {
        let none: Vec<String> = vec![];
        assert_eq!(
            analyze(
                TaskType::BugFix,
                &none,
                "fix it",
                Some(Specialty::DomainExpert)
            )
            .specialty,
            Specialty::DomainExpert
        );
        assert_eq!(
            analyze(TaskType::Feature, &["security".into()], "add login", None).specialty,
            Specialty::SecurityAnalyst
        );
        assert_eq!(
            analyze(TaskType::Feature, &["test_engineer".into()], "x", None).specialty,
            Specialty::TestEngineer
        );
        let c = analyze(
            TaskType::CodeAnalysis,
            &none,
            "Why is the export so slow? Latency doubled.",
            None,
        );
        assert_eq!(c.specialty, Specialty::PerformanceOptimizer, "{c:?}");
        // Content only counts for specialties that serve the type.
        assert_eq!(
            analyze(
                TaskType::Documentation,
                &none,
                "document the slow path",
                None
            )
            .specialty,
            Specialty::DocumentationWriter
        );
        assert_eq!(
            analyze(TaskType::Deployment, &none, "roll out v2", None).specialty,
            Specialty::GeneralDeveloper
        );
        // Whole words only: "perfect" is not "perf".
        assert_eq!(
            analyze(TaskType::CodeAnalysis, &none, "a perfect module", None).specialty,
            Specialty::CodeArchitect
        );
    }
}
