//! Parsers of command-line values: enum names, `KEY=VALUE` pairs, durations.

use std::{collections::HashMap, ffi::OsStr, marker::PhantomData, time::Duration};

use clap::{
    Arg, Command,
    builder::{PossibleValue, TypedValueParser},
    error::ErrorKind,
};
use supervisor_proto::convert::EnumName;

/// Parses an API enum from its snake_case name (`bug_fix`); `--help` lists the names
/// and a wrong name gets an error that lists them too.
pub struct EnumArg<E>(PhantomData<fn() -> E>);

impl<E> EnumArg<E> {
    /// A parser of `E`'s names.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Clone for EnumArg<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<E> TypedValueParser for EnumArg<E>
where
    E: EnumName + Send + Sync,
{
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let arg_name = arg.map_or_else(|| "...".to_owned(), ToString::to_string);
        let Some(text) = value.to_str() else {
            let message = format!("invalid value for '{arg_name}': not UTF-8\n");
            return Err(clap::Error::raw(ErrorKind::InvalidUtf8, message).with_cmd(cmd));
        };
        E::from_name(text).map_err(|err| {
            let message = format!("invalid value '{text}' for '{arg_name}': {err}\n");
            clap::Error::raw(ErrorKind::InvalidValue, message).with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::ALL.iter().map(|value| PossibleValue::new(value.name())),
        ))
    }
}

/// Parses `KEY=VALUE` (split at the first `=`; the value may be empty, the key not).
pub fn parse_context(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.to_owned(), value.to_owned())),
        Some(_) => Err(format!(
            "invalid context {text:?}: the key before '=' is empty"
        )),
        None => Err(format!(
            "invalid context {text:?}: expected KEY=VALUE, for example repo=/src/app"
        )),
    }
}

/// Gathers `--context` pairs into a map, refusing a key given twice.
pub fn context_map(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if map.contains_key(&key) {
            return Err(format!("context key {key:?} is given more than once"));
        }
        map.insert(key, value);
    }
    Ok(map)
}

/// Parses a time limit such as `30s`, `5m`, `1h30m` or `250ms` (at least 1 ms).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        format!("invalid duration {text:?}: {err} (examples: 30s, 5m, 1h30m, 500ms)")
    })?;
    if duration < Duration::from_millis(1) {
        return Err(format!("invalid duration {text:?}: must be at least 1ms"));
    }
    Ok(duration)
}

/// A duration in whole milliseconds, saturating.
pub fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use supervisor_proto::v1::{Priority, TaskType};

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[arg(long = "type", value_parser = EnumArg::<TaskType>::new())]
        task_type: Option<TaskType>,
        #[arg(long, value_parser = EnumArg::<Priority>::new())]
        priority: Option<Priority>,
    }

    #[test]
    fn enum_args_parse_names() {
        let probe = Probe::try_parse_from(["probe", "--type", "bug_fix", "--priority", "HIGH"])
            .expect("valid names");
        assert_eq!(probe.task_type, Some(TaskType::BugFix));
        assert_eq!(probe.priority, Some(Priority::High));
    }

    #[test]
    fn enum_arg_errors_list_the_names() {
        let err = Probe::try_parse_from(["probe", "--type", "bugfix"]).expect_err("bad name");
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(
            text.contains("invalid value 'bugfix' for '--type <TASK_TYPE>'"),
            "{text}"
        );
        assert!(
            text.contains("expected one of: pr_review, issue_summary, code_analysis"),
            "{text}"
        );
    }

    #[test]
    fn enum_arg_help_lists_the_names() {
        use clap::CommandFactory as _;
        let help = Probe::command().render_long_help().to_string();
        assert!(help.contains("security_audit"), "{help}");
        assert!(help.contains("critical"), "{help}");
    }

    #[test]
    fn context_pairs() {
        assert_eq!(
            parse_context("repo=/src/app"),
            Ok(("repo".into(), "/src/app".into()))
        );
        assert_eq!(parse_context("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert_eq!(parse_context("empty="), Ok(("empty".into(), String::new())));
        let err = parse_context("repo").expect_err("no '='");
        assert!(err.contains("expected KEY=VALUE"), "{err}");
        let err = parse_context("=x").expect_err("empty key");
        assert!(err.contains("key before '=' is empty"), "{err}");
    }

    #[test]
    fn context_keys_must_be_unique() {
        let map = context_map(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
            .expect("distinct keys");
        assert_eq!(map.len(), 2);
        let err = context_map(vec![("a".into(), "1".into()), ("a".into(), "2".into())])
            .expect_err("duplicate");
        assert_eq!(err, "context key \"a\" is given more than once");
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        let err = parse_timeout("30").expect_err("unit needed");
        assert!(err.starts_with("invalid duration \"30\": "), "{err}");
        assert!(err.contains("examples: 30s"), "{err}");
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
        assert_eq!(duration_millis(Duration::from_secs(30)), 30_000);
        assert_eq!(duration_millis(Duration::MAX), u64::MAX);
    }
}
