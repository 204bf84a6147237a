//! The cost ledger: what each tenant spent on each provider each day (UTC), kept with
//! atomic adds in the same transaction that records the attempt, so concurrent
//! completions never lose an update and the ledger never disagrees with the tasks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use supervisor_model::FieldError;
use supervisor_model::{Metric, Period, Task, Usage};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::counter;
use crate::{Engine, EngineError, keyspace};

/// One day of one provider for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerRow {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The provider.
    pub provider: String,
    /// Attempts that ended.
    pub attempts: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in millionths of a dollar.
    pub cost_micros: u64,
}

/// The UTC day of a unix-microseconds time, as `YYYY-MM-DD`. Times beyond what a calendar
/// date can hold (about 262,000 years either side of 1970) are clamped to the first or
/// last representable day.
pub fn utc_day(micros: i64) -> String {
    let time = DateTime::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    time.format("%Y-%m-%d").to_string()
}

/// Charges one ended attempt to the ledger (atomic adds: no read, no conflict).
pub(crate) fn charge(
    txn: &mut Transaction<'_>,
    tenant: &str,
    provider: &str,
    now: i64,
    usage: &Usage,
    cost_micros: u64,
) {
    let day = utc_day(now);
    let key = |field| keyspace::ledger(tenant, &day, provider, field);
    txn.atomic_add(&key("attempts"), 1);
    txn.atomic_add(&key("input_tokens"), usage.input_tokens as i64);
    txn.atomic_add(&key("output_tokens"), usage.output_tokens as i64);
    txn.atomic_add(&key("cost_micros"), cost_micros as i64);
}

/// The calendar period containing `micros` in time zone `tz`: `d2026-12-02` for a day,
/// `m2026-12` for a month. An unknown zone counts in UTC (budgets are validated when set).
pub(crate) fn period_id(period: Period, tz: &str, micros: i64) -> String {
    let zone: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::UTC);
    let time = DateTime::from_timestamp_micros(micros)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .with_timezone(&zone);
    match period {
        Period::Day => time.format("d%Y-%m-%d").to_string(),
        Period::Month => time.format("m%Y-%m").to_string(),
    }
}

/// When the period containing `micros` ends in time zone `tz` (unix microseconds).
pub(crate) fn period_end(period: Period, tz: &str, micros: i64) -> i64 {
    use chrono::{Datelike, NaiveDate, TimeZone};
    let zone: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::UTC);
    let Some(time) = DateTime::from_timestamp_micros(micros) else {
        return i64::MAX;
    };
    let local = time.with_timezone(&zone).date_naive();
    let next = match period {
        Period::Day => local.succ_opt(),
        Period::Month => {
            let (y, m) = if local.month() == 12 {
                (local.year() + 1, 1)
            } else {
                (local.year(), local.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)
        }
    };
    next.and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|midnight| zone.from_local_datetime(&midnight).earliest())
        .map_or(i64::MAX, |t| t.timestamp_micros())
}

/// Charges an attempt's real spend to every budget its task reserved from, in the period
/// (of each budget's time zone) it ended in. Atomic adds: no read, no conflict.
pub(crate) fn charge_budgets(
    txn: &mut Transaction<'_>,
    task: &Task,
    now: i64,
    usage: &Usage,
    cost_micros: u64,
) {
    let tokens = usage.input_tokens.saturating_add(usage.output_tokens) as i64;
    for r in &task.holds.reservations {
        let (kind, name) = r.scope.parts();
        for period in [Period::Day, Period::Month] {
            let id = period_id(period, &r.time_zone, now);
            let key =
                |metric: Metric| keyspace::spend(&task.tenant, kind, name, &id, metric.as_str());
            txn.atomic_add(&key(Metric::CostMicros), cost_micros as i64);
            txn.atomic_add(&key(Metric::Tokens), tokens);
        }
    }
}

impl Engine {
    /// The tenant's ledger for days `from..=to` (`YYYY-MM-DD`), by day then provider.
    /// Fails with `InvalidArgument` on a day that is not a date and on a range of more
    /// than `MAX_SPEND_DAYS` days.
    pub async fn ledger(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<LedgerRow>, EngineError> {
        let day = |field: &'static str, text: &str| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                FieldError::new(
                    field,
                    format!(
                        "{} is not a day like 2026-11-24",
                        supervisor_model::quote(text)
                    ),
                )
            })
        };
        let days = (day("to_day", to)? - day("from_day", from)?).num_days() + 1;
        if days > i64::from(supervisor_model::MAX_SPEND_DAYS) {
            return Err(EngineError::InvalidArgument(FieldError::new(
                "to_day",
                format!(
                    "{from} to {to} is {days} days; one query covers at most {} days",
                    supervisor_model::MAX_SPEND_DAYS
                ),
            )));
        }
        let (begin, end) = keyspace::ledger_days(tenant, from, to);
        let mut txn = self.db().begin().await?;
        let kvs = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?;
        let mut rows: BTreeMap<(String, String), LedgerRow> = BTreeMap::new();
        for kv in kvs {
            let Some((day, provider, field)) = keyspace::parse_ledger(&kv.key) else {
                return Err(EngineError::Corrupt(
                    "a ledger key could not be parsed".into(),
                ));
            };
            let row = rows
                .entry((day.clone(), provider.clone()))
                .or_insert_with(|| LedgerRow {
                    day,
                    provider,
                    ..LedgerRow::default()
                });
            let v = counter(Some(&kv.value)).max(0) as u64;
            match field.as_str() {
                "attempts" => row.attempts = v,
                "input_tokens" => row.input_tokens = v,
                "output_tokens" => row.output_tokens = v,
                "cost_micros" => row.cost_micros = v,
                _ => {}
            }
        }
        Ok(rows.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::utc_day;

    #[test]
    fn utc_days_from_micros() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000_000), "2000-02-29");
        assert_eq!(
            utc_day(1_795_478_400_000_000 + 86_399_999_999),
            "2026-11-24"
        );
        // Before 1970, and around the last microsecond of a day.
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(utc_day(-86_400_000_000), "1969-12-31");
        assert_eq!(utc_day(-86_400_000_001), "1969-12-30");
        assert_eq!(utc_day(86_399_999_999), "1970-01-01");
        assert_eq!(utc_day(86_400_000_000), "1970-01-02");
        assert_eq!(utc_day(4_107_542_400_000_000), "2100-03-01");
    }
}
