//! The CLI's command line.
//!
//! Arguments are passed as separate argv entries, never through a shell, so nothing in a
//! prompt or a context value can be read as a command.

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::ProviderRequest;
use crate::config::ClaudeCliConfig;

/// Context keys that configure the run instead of being shown to the model.
pub(super) const RUN_KEYS: &[&str] = &["repo", "ref"];

/// Tools that change files or run commands: never allowed to a read-only specialty.
const WRITE_TOOLS: &[&str] = &["Edit", "MultiEdit", "Write", "NotebookEdit", "Bash"];

/// The prompt with the task's context (except [`RUN_KEYS`]) appended as a `Context:` block.
pub(super) fn prompt_with_context(prompt: &str, context: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    // The CLI takes the prompt as a positional argument: one starting with `-` would be
    // read as an option, so it gets a leading newline, which the model does not mind.
    if prompt.starts_with('-') {
        out.push('\n');
    }
    out.push_str(prompt);
    let shown: Vec<_> = context
        .iter()
        .filter(|(k, _)| !RUN_KEYS.contains(&k.as_str()))
        .collect();
    if shown.is_empty() {
        return out;
    }
    out.push_str("\n\nContext:");
    for (key, value) in shown {
        let value = value.trim_end();
        if value.contains('\n') {
            out.push_str(&format!("\n- {key}:"));
            for line in value.lines() {
                out.push_str("\n    ");
                out.push_str(line);
            }
        } else {
            out.push_str(&format!("\n- {key}: {value}"));
        }
    }
    out
}

fn is_write_tool(tool: &str) -> bool {
    WRITE_TOOLS.iter().any(|w| {
        tool == *w
            || tool
                .strip_prefix(w)
                .is_some_and(|rest| rest.starts_with('('))
    })
}

/// The arguments after the binary, for one attempt of `request`: a new session with the
/// request's prompt, or with `resume` the CLI's session of that id, continued with only
/// the thread's new message.
///
/// A read-only request (`tools.can_write == false`) always runs in `plan` mode with the
/// write tools disallowed, whatever its policy lists.
pub(super) fn args(
    cfg: &ClaudeCliConfig,
    request: &ProviderRequest,
    resume: Option<&str>,
) -> Vec<OsString> {
    let policy = &request.tools;
    let mut allowed = policy.allowed_tools.clone();
    let mut disallowed = policy.disallowed_tools.clone();
    let mode = if policy.can_write {
        if policy.permission_mode.is_empty() {
            "acceptEdits".to_string()
        } else {
            policy.permission_mode.clone()
        }
    } else {
        allowed.retain(|t| !is_write_tool(t));
        for tool in WRITE_TOOLS {
            if !disallowed.iter().any(|t| t == tool) {
                disallowed.push((*tool).to_string());
            }
        }
        "plan".to_string()
    };

    let prompt = match (resume, &request.thread) {
        (Some(_), Some(turn)) => &turn.message,
        _ => &request.prompt,
    };
    let mut args: Vec<OsString> = vec![
        "-p".into(),
        prompt_with_context(prompt, &request.context).into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
    ];
    if let Some(session) = resume {
        args.push("--resume".into());
        args.push(session.into());
    }
    if !request.system_prompt.is_empty() {
        args.push("--append-system-prompt".into());
        args.push(request.system_prompt.clone().into());
    }
    if !allowed.is_empty() {
        args.push("--allowedTools".into());
        args.push(allowed.join(",").into());
    }
    if !disallowed.is_empty() {
        args.push("--disallowedTools".into());
        args.push(disallowed.join(",").into());
    }
    args.push("--permission-mode".into());
    args.push(mode.into());
    args.push("--max-turns".into());
    args.push(cfg.max_turns.to_string().into());
    if let Some(model) = cfg.model.as_deref().filter(|m| !m.is_empty()) {
        args.push("--model".into());
        args.push(model.into());
    }
    args.extend(cfg.extra_args.iter().map(OsString::from));
    args
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use supervisor_model::{Specialty, TaskType};

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn context_is_appended_except_run_keys() {
        let mut ctx = BTreeMap::new();
        ctx.insert("repo".to_string(), "/src/x".to_string());
        ctx.insert("ref".to_string(), "main".to_string());
        ctx.insert("issue".to_string(), "42".to_string());
        ctx.insert("log".to_string(), "a\nb\n".to_string());
        assert_eq!(
            prompt_with_context("Fix it", &ctx),
            "Fix it\n\nContext:\n- issue: 42\n- log:\n    a\n    b"
        );
        assert_eq!(prompt_with_context("--help", &BTreeMap::new()), "\n--help");
    }

    #[test]
    fn read_only_requests_run_in_plan_mode_without_write_tools() {
        let mut req = crate::ProviderRequest::simple(
            "t",
            TaskType::SecurityAudit,
            "audit",
            Duration::from_secs(1),
        );
        assert_eq!(req.specialty, Specialty::SecurityAnalyst);
        // Even a policy that lists write tools loses them when it cannot write.
        req.tools.allowed_tools.push("Bash(rm:*)".into());
        req.tools.permission_mode = "acceptEdits".into();
        let a = strings(&args(&ClaudeCliConfig::default(), &req, None));
        let at = |flag: &str| {
            a.iter()
                .position(|x| x == flag)
                .and_then(|i| a.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(at("--permission-mode"), "plan");
        assert_eq!(at("--allowedTools"), "Read,Grep,Glob,LS");
        assert_eq!(
            at("--disallowedTools"),
            "Edit,MultiEdit,Write,NotebookEdit,Bash"
        );
        assert!(!a.contains(&"--model".to_string()));
    }
}
