//! Pure conversions around the generated types.
//!
//! * Enum names: every protobuf enum of the API has a short snake_case name, the
//!   enum value with its prefix stripped and lowercased (`TASK_TYPE_BUG_FIX` is
//!   `bug_fix`, `TASK_STATUS_RETRY_WAIT` is `retry_wait`). [`EnumName`] maps both
//!   ways; parsing errors list the accepted names.
//! * Timestamps: unix microseconds (`i64`) to and from [`prost_types::Timestamp`].

use std::{borrow::Cow, fmt, time::SystemTime};

use prost_types::Timestamp;

use crate::v1::{Priority, TaskEventType, TaskStatus, TaskType};

/// A protobuf enum of the API with short snake_case names.
pub trait EnumName: Sized + Copy + PartialEq + TryFrom<i32> + 'static {
    /// What the enum is, for error messages ("task type").
    const KIND: &'static str;
    /// Prefix of the protobuf value names, with its trailing underscore (`TASK_TYPE_`).
    const PROTO_PREFIX: &'static str;
    /// Every value except `UNSPECIFIED`, in declaration order.
    const ALL: &'static [Self];

    /// The short name: `"bug_fix"`, `"retry_wait"`; `"unspecified"` for value 0.
    fn name(self) -> &'static str;

    /// Parses a short name. Case-insensitive; `-` is taken as `_`, and the full
    /// protobuf name (`TASK_TYPE_BUG_FIX`) is accepted too. `unspecified` is refused.
    fn from_name(input: &str) -> Result<Self, ParseNameError> {
        let normalized = input.trim().to_ascii_lowercase().replace('-', "_");
        let prefix = Self::PROTO_PREFIX.to_ascii_lowercase();
        let short = normalized.strip_prefix(&prefix).unwrap_or(&normalized);
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.name() == short)
            .ok_or_else(|| ParseNameError {
                kind: Self::KIND,
                input: input.to_owned(),
                accepted: Self::ALL.iter().map(|value| value.name()).collect(),
            })
    }

    /// The short name of a raw protobuf value; unknown values read as their number.
    fn name_of(value: i32) -> Cow<'static, str> {
        match Self::try_from(value) {
            Ok(known) => Cow::Borrowed(known.name()),
            Err(_) => Cow::Owned(value.to_string()),
        }
    }

    /// The accepted names, comma-separated (for help texts).
    fn accepted_names() -> String {
        Self::ALL
            .iter()
            .map(|value| value.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A name that is not one of an enum's short names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNameError {
    /// What was being parsed ("task type").
    pub kind: &'static str,
    /// The text given.
    pub input: String,
    /// Every accepted name.
    pub accepted: Vec<&'static str>,
}

impl fmt::Display for ParseNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?}; expected one of: {}",
            self.kind,
            self.input,
            self.accepted.join(", ")
        )
    }
}

impl std::error::Error for ParseNameError {}

macro_rules! enum_names {
    (
        $ty:ident, $kind:literal, $prefix:literal,
        unspecified: $unspecified:ident,
        [$($variant:ident => $name:literal),+ $(,)?]
    ) => {
        impl EnumName for $ty {
            const KIND: &'static str = $kind;
            const PROTO_PREFIX: &'static str = $prefix;
            const ALL: &'static [Self] = &[$($ty::$variant),+];

            fn name(self) -> &'static str {
                match self {
                    $ty::$unspecified => "unspecified",
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = ParseNameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty as EnumName>::from_name(s)
            }
        }
    };
}

enum_names!(TaskType, "task type", "TASK_TYPE_", unspecified: Unspecified, [
    PrReview => "pr_review",
    IssueSummary => "issue_summary",
    CodeAnalysis => "code_analysis",
    Refactor => "refactor",
    BugFix => "bug_fix",
    Feature => "feature",
    Documentation => "documentation",
    Testing => "testing",
    Deployment => "deployment",
    SecurityAudit => "security_audit",
]);

enum_names!(TaskStatus, "task status", "TASK_STATUS_", unspecified: Unspecified, [
    Queued => "queued",
    Running => "running",
    RetryWait => "retry_wait",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
]);

enum_names!(Priority, "priority", "PRIORITY_", unspecified: Unspecified, [
    Low => "low",
    Normal => "normal",
    High => "high",
    Urgent => "urgent",
    Critical => "critical",
]);

enum_names!(TaskEventType, "task event type", "TASK_EVENT_TYPE_", unspecified: Unspecified, [
    Submitted => "submitted",
    Started => "started",
    Output => "output",
    RetryScheduled => "retry_scheduled",
    Requeued => "requeued",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    Activity => "activity",
]);

impl TaskStatus {
    /// Whether a task in this status will never change again
    /// (`succeeded`, `failed` or `cancelled`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl TaskEventType {
    /// Whether this event ends a task's log (`succeeded`, `failed` or `cancelled`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const NANOS_PER_MICRO: i64 = 1_000;

/// The timestamp at `micros` microseconds after the unix epoch (negative: before).
pub fn timestamp_from_micros(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(MICROS_PER_SECOND),
        // rem_euclid is in 0..1_000_000, so the product fits an i32 (< 1e9).
        nanos: (micros.rem_euclid(MICROS_PER_SECOND) * NANOS_PER_MICRO) as i32,
    }
}

/// Microseconds after the unix epoch of `ts`; sub-microsecond digits are truncated
/// toward the past, out-of-range values saturate. Unnormalized timestamps (nanos
/// outside `0..1e9`) are read as their sum.
pub fn micros_from_timestamp(ts: &Timestamp) -> i64 {
    let from_seconds = ts.seconds.saturating_mul(MICROS_PER_SECOND);
    let from_nanos = i64::from(ts.nanos).div_euclid(NANOS_PER_MICRO);
    from_seconds.saturating_add(from_nanos)
}

/// The current time as a timestamp.
pub fn timestamp_now() -> Timestamp {
    Timestamp::from(SystemTime::now())
}

/// The current time in microseconds after the unix epoch.
pub fn now_micros() -> i64 {
    micros_from_timestamp(&timestamp_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every enum value, `UNSPECIFIED` included, from its raw number, until the first
    /// unknown number.
    fn every_value<E: EnumName>() -> Vec<E> {
        (0..).map_while(|n| E::try_from(n).ok()).collect()
    }

    /// The name derived from the protobuf value name, as the contract defines it.
    fn derived_name(proto_name: &str, prefix: &str) -> String {
        proto_name
            .strip_prefix(prefix)
            .expect("value has its enum's prefix")
            .to_ascii_lowercase()
    }

    macro_rules! check_names_match_proto {
        ($ty:ty) => {{
            let values = every_value::<$ty>();
            assert_eq!(values.len(), <$ty>::ALL.len() + 1, "ALL misses a value");
            for value in values {
                let expected = derived_name(value.as_str_name(), <$ty>::PROTO_PREFIX);
                assert_eq!(value.name(), expected);
                if expected != "unspecified" {
                    assert_eq!(<$ty>::from_name(&expected), Ok(value));
                    assert_eq!(<$ty>::from_name(value.as_str_name()), Ok(value));
                }
            }
        }};
    }

    #[test]
    fn names_follow_the_proto_value_names() {
        check_names_match_proto!(TaskType);
        check_names_match_proto!(TaskStatus);
        check_names_match_proto!(Priority);
        check_names_match_proto!(TaskEventType);
    }

    #[test]
    fn names_examples() {
        assert_eq!(TaskType::BugFix.name(), "bug_fix");
        assert_eq!(TaskType::PrReview.to_string(), "pr_review");
        assert_eq!(TaskStatus::RetryWait.name(), "retry_wait");
        assert_eq!(TaskEventType::RetryScheduled.name(), "retry_scheduled");
        assert_eq!(Priority::Critical.name(), "critical");
    }

    #[test]
    fn parsing_is_lenient_about_case_and_dashes() {
        assert_eq!(TaskType::from_name("Bug-Fix"), Ok(TaskType::BugFix));
        assert_eq!(" high ".parse::<Priority>(), Ok(Priority::High));
        assert_eq!(
            TaskStatus::from_name("task_status_retry_wait"),
            Ok(TaskStatus::RetryWait)
        );
    }

    #[test]
    fn parse_error_lists_accepted_names() {
        let err = TaskType::from_name("bugfix").expect_err("not a name");
        assert_eq!(err.kind, "task type");
        let text = err.to_string();
        assert!(text.starts_with("unknown task type \"bugfix\"; expected one of: "));
        assert!(text.contains("pr_review, issue_summary"), "{text}");
        assert!(text.ends_with("security_audit"), "{text}");
        assert!(!text.contains("unspecified"), "{text}");
        assert!(TaskStatus::from_name("unspecified").is_err());
        assert!(Priority::from_name("").is_err());
    }

    #[test]
    fn name_of_raw_values() {
        assert_eq!(TaskStatus::name_of(4), "succeeded");
        assert_eq!(TaskStatus::name_of(0), "unspecified");
        assert_eq!(TaskStatus::name_of(99), "99");
        assert_eq!(
            Priority::accepted_names(),
            "low, normal, high, urgent, critical"
        );
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = TaskStatus::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.name())
            .collect();
        assert_eq!(terminal, ["succeeded", "failed", "cancelled"]);
        assert!(TaskEventType::Cancelled.is_terminal());
        assert!(!TaskEventType::Output.is_terminal());
    }

    #[test]
    fn timestamps_round_trip() {
        for micros in [
            0,
            1,
            999_999,
            1_000_000,
            1_700_000_000_123_456,
            -1,
            -1_000_001,
        ] {
            let ts = timestamp_from_micros(micros);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ts:?}");
            assert_eq!(micros_from_timestamp(&ts), micros);
        }
        assert_eq!(
            timestamp_from_micros(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_999_000
            }
        );
    }

    #[test]
    fn timestamps_truncate_nanos_and_saturate() {
        let ts = Timestamp {
            seconds: 1,
            nanos: 1_999,
        };
        assert_eq!(micros_from_timestamp(&ts), 1_000_001);
        let huge = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(micros_from_timestamp(&huge), i64::MAX);
        assert!(now_micros() > 1_600_000_000_000_000);
    }
}
