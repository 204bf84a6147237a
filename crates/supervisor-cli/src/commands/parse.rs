//! Parsers of command-line values: enum names, `KEY=VALUE` pairs (context, workflow
//! variables), durations, dollar amounts, days and cron expressions.

use std::{collections::HashMap, ffi::OsStr, marker::PhantomData, str::FromStr, time::Duration};

use clap::{
    Arg, Command,
    builder::{PossibleValue, TypedValueParser},
    error::ErrorKind,
};
use supervisor_model::{ParseError, RoutingStrategy, Specialty};
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

/// A named enum of the domain model that the API carries as a string (specialties,
/// routing strategies). The server checks these names too; parsing them here gives the
/// same list of valid names before anything is sent.
pub trait ModelName: FromStr<Err = ParseError> + Copy + Send + Sync + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];

    /// The canonical snake_case name, as sent to the server.
    fn name(self) -> &'static str;
}

impl ModelName for Specialty {
    const ALL: &'static [Self] = Specialty::ALL;

    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl ModelName for RoutingStrategy {
    const ALL: &'static [Self] = RoutingStrategy::ALL;

    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// Parses a [`ModelName`] (case and `-` for `_` do not matter); `--help` lists the
/// names and a wrong name gets an error that lists them too.
pub struct ModelArg<E>(PhantomData<fn() -> E>);

impl<E> ModelArg<E> {
    /// A parser of `E`'s names.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Clone for ModelArg<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<E: ModelName> TypedValueParser for ModelArg<E> {
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
        text.parse::<E>().map_err(|err| {
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
/// `what` names the value in errors (`context`).
fn parse_pair(text: &str, what: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.to_owned(), value.to_owned())),
        Some(_) => Err(format!(
            "invalid {what} {text:?}: the key before '=' is empty"
        )),
        None => Err(format!(
            "invalid {what} {text:?}: expected KEY=VALUE, for example repo=/src/app"
        )),
    }
}

/// Gathers pairs into a map, refusing a key given twice. `what` names the keys in the
/// error (`context key`).
fn pair_map(pairs: Vec<(String, String)>, what: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if map.contains_key(&key) {
            return Err(format!("{what} {key:?} is given more than once"));
        }
        map.insert(key, value);
    }
    Ok(map)
}

/// Parses a `--context` value, `KEY=VALUE` (the value may be empty, the key not).
pub fn parse_context(text: &str) -> Result<(String, String), String> {
    parse_pair(text, "context")
}

/// Gathers `--context` pairs into a map, refusing a key given twice.
pub fn context_map(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    pair_map(pairs, "context key")
}

/// Parses a workflow `--var` value, `NAME=VALUE` (the value may be empty, the name not).
pub fn parse_var(text: &str) -> Result<(String, String), String> {
    parse_pair(text, "variable")
}

/// Gathers `--var` pairs into a map, refusing a variable given twice.
pub fn var_map(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    pair_map(pairs, "variable")
}

/// Checks the shape of a cron expression: 5 fields (minute hour day-of-month month
/// day-of-week) or 6 (seconds first). The server checks the fields themselves.
pub fn parse_cron(text: &str) -> Result<String, String> {
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "invalid cron {text:?}: expected 5 fields (minute hour day-of-month month \
             day-of-week) or 6 (seconds first), such as \"0 3 * * *\"; found {fields}"
        ));
    }
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Parses a duration such as `30s`, `5m`, `1h30m` or `250ms` (at least 1 ms).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        format!("invalid duration {text:?}: {err} (examples: 30s, 5m, 1h30m, 500ms)")
    })?;
    if duration < Duration::from_millis(1) {
        return Err(format!("invalid duration {text:?}: must be at least 1ms"));
    }
    Ok(duration)
}

/// Parses an attempt's time limit like [`parse_timeout`], at most the API's limit
/// ([`supervisor_model::MAX_TIMEOUT_MS`], 24h).
pub fn parse_attempt_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_timeout(text)?;
    let limit = Duration::from_millis(supervisor_model::MAX_TIMEOUT_MS);
    if duration > limit {
        return Err(format!(
            "invalid duration {text:?}: the limit is {} per attempt",
            humantime::format_duration(limit)
        ));
    }
    Ok(duration)
}

/// Parses a provider name (`--prefer`, `--exclude`): anything but blank. The server
/// checks it against the configured providers.
pub fn parse_provider(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("the provider name is empty".to_owned());
    }
    Ok(name.to_owned())
}

/// Parses an amount of US dollars such as `0.25` or `$2` (more than 0, at least one
/// millionth of a dollar, the unit costs are counted in, and at most the API's limit,
/// [`supervisor_model::MAX_COST_MICROS`]).
pub fn parse_dollars(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_prefix('$').unwrap_or(trimmed);
    let bad = |why: &str| format!("invalid amount {text:?}: {why}");
    let dollars: f64 = number
        .parse()
        .map_err(|_| bad("expected a number of US dollars, such as 0.25"))?;
    if !dollars.is_finite() {
        return Err(bad("expected a finite number of US dollars, such as 0.25"));
    }
    if dollars <= 0.0 {
        return Err(bad(
            "must be more than 0 (leave the option out for no limit)",
        ));
    }
    if dollars < 0.000_001 {
        return Err(bad("must be at least 0.000001 (one millionth of a dollar)"));
    }
    let max = supervisor_model::MAX_COST_MICROS / 1_000_000;
    if dollars > max as f64 {
        return Err(bad(&format!("the limit is ${max} per attempt")));
    }
    Ok(dollars)
}

/// Parses a day `YYYY-MM-DD` (a real date of the Gregorian calendar).
pub fn parse_day(text: &str) -> Result<String, String> {
    let day = text.trim();
    let bad = |why: &str| format!("invalid day {text:?}: {why}");
    let shape_ok = day.len() == 10
        && day.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(bad("expected YYYY-MM-DD, such as 2026-01-31"));
    }
    let number = |range: std::ops::Range<usize>| day[range].parse::<u32>().unwrap_or(0);
    let (year, month, day_of_month) = (number(0..4), number(5..7), number(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad("the month must be 01 to 12")),
    };
    if !(1..=days_in_month).contains(&day_of_month) {
        return Err(bad(&format!(
            "the day of the month must be 01 to {days_in_month}"
        )));
    }
    Ok(day.to_owned())
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
        #[arg(long, value_name = "NAME", value_parser = ModelArg::<Specialty>::new())]
        specialty: Option<Specialty>,
        #[arg(long, value_name = "NAME", value_parser = ModelArg::<RoutingStrategy>::new())]
        strategy: Option<RoutingStrategy>,
    }

    #[test]
    fn model_names_parse_and_errors_list_them() {
        let probe = Probe::try_parse_from([
            "probe",
            "--specialty",
            "Bug-Hunter",
            "--strategy",
            "cost_optimized",
        ])
        .expect("valid names");
        assert_eq!(probe.specialty, Some(Specialty::BugHunter));
        assert_eq!(probe.strategy, Some(RoutingStrategy::CostOptimized));

        let err = Probe::try_parse_from(["probe", "--specialty", "wizard"]).expect_err("bad");
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(
            text.contains("invalid value 'wizard' for '--specialty <NAME>': unknown specialty"),
            "{text}"
        );
        assert!(
            text.contains("expected one of: code_architect, code_reviewer, bug_hunter"),
            "{text}"
        );
        let err = Probe::try_parse_from(["probe", "--strategy", "random"]).expect_err("bad");
        assert!(
            err.to_string()
                .contains("round_robin, least_loaded, fastest, cost_optimized, capability"),
            "{err}"
        );
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
        assert!(help.contains("general_developer"), "{help}");
        assert!(help.contains("failover_chain"), "{help}");
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
    fn workflow_vars() {
        assert_eq!(
            parse_var("repo=/src/app"),
            Ok(("repo".into(), "/src/app".into()))
        );
        assert_eq!(
            parse_var("query=a=b c"),
            Ok(("query".into(), "a=b c".into()))
        );
        assert_eq!(parse_var("empty="), Ok(("empty".into(), String::new())));
        assert_eq!(
            parse_var("repo"),
            Err("invalid variable \"repo\": expected KEY=VALUE, for example repo=/src/app".into())
        );
        assert_eq!(
            parse_var(" =x"),
            Err("invalid variable \" =x\": the key before '=' is empty".into())
        );
        let map = var_map(vec![("a".into(), "1".into()), ("b".into(), "".into())])
            .expect("distinct names");
        assert_eq!(map.get("b").map(String::as_str), Some(""));
        assert_eq!(
            var_map(vec![("a".into(), "1".into()), ("a".into(), "2".into())]),
            Err("variable \"a\" is given more than once".into())
        );
    }

    #[test]
    fn cron_expressions_need_five_or_six_fields() {
        assert_eq!(parse_cron("0 3 * * *"), Ok("0 3 * * *".into()));
        assert_eq!(parse_cron(" 0  3 * * 1-5 "), Ok("0 3 * * 1-5".into()));
        assert_eq!(parse_cron("*/10 0 3 * * *"), Ok("*/10 0 3 * * *".into()));
        for bad in ["", "daily", "0 3 * *", "0 0 3 * * * 2026"] {
            let err = parse_cron(bad).expect_err(bad);
            assert!(err.starts_with(&format!("invalid cron {bad:?}: ")), "{err}");
            assert!(err.contains("such as \"0 3 * * *\""), "{err}");
        }
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
    fn providers_dollars_and_days() {
        assert_eq!(parse_provider(" mock "), Ok("mock".into()));
        assert_eq!(
            parse_provider(" "),
            Err("the provider name is empty".into())
        );

        assert_eq!(parse_dollars("0.25"), Ok(0.25));
        assert_eq!(parse_dollars("$2"), Ok(2.0));
        assert_eq!(parse_dollars("0.000001"), Ok(0.000_001));
        for (bad, why) in [
            ("cheap", "expected a number of US dollars"),
            ("", "expected a number of US dollars"),
            ("inf", "finite"),
            ("NaN", "finite"),
            ("0", "must be more than 0"),
            ("-1", "must be more than 0"),
            ("0.0000001", "at least 0.000001"),
            ("1e308", "the limit is $10000 per attempt"),
            ("10000.01", "the limit is $10000 per attempt"),
        ] {
            let err = parse_dollars(bad).expect_err(bad);
            assert!(
                err.starts_with(&format!("invalid amount {bad:?}: ")),
                "{err}"
            );
            assert!(err.contains(why), "{bad}: {err}");
        }

        assert_eq!(parse_day("2026-01-31"), Ok("2026-01-31".into()));
        assert_eq!(parse_day("2024-02-29"), Ok("2024-02-29".into()));
        for (bad, why) in [
            ("2026-1-31", "expected YYYY-MM-DD"),
            ("31-01-2026", "expected YYYY-MM-DD"),
            ("2026/01/31", "expected YYYY-MM-DD"),
            ("２０２６-01-31", "expected YYYY-MM-DD"),
            ("2026-13-01", "month must be 01 to 12"),
            ("2026-00-01", "month must be 01 to 12"),
            ("2026-04-31", "01 to 30"),
            ("2025-02-29", "01 to 28"),
            ("2026-01-00", "01 to 31"),
        ] {
            let err = parse_day(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
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
        assert_eq!(parse_timeout("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            parse_attempt_timeout("24h"),
            Ok(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_attempt_timeout("100y"),
            Err("invalid duration \"100y\": the limit is 1day per attempt".into())
        );
        assert!(parse_attempt_timeout("24h 1ms").is_err());
        assert!(parse_attempt_timeout("0s").is_err());
        assert_eq!(parse_dollars("10000"), Ok(10_000.0));
        assert_eq!(duration_millis(Duration::from_secs(30)), 30_000);
        assert_eq!(duration_millis(Duration::MAX), u64::MAX);
    }
}
