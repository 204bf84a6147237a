//! Schedules as `--output json` prints them: an unset time zone reads `"UTC"` and an
//! unset missed-tick policy `"skip"`.

use serde::Serialize;
use supervisor_proto::v1::Schedule;

use super::text::{missed_name, timezone_name};
use crate::commands::output::{non_empty, optional_rfc3339};

/// A schedule of workflow runs.
#[derive(Debug, Serialize)]
pub struct ScheduleJson {
    name: String,
    cron: String,
    timezone: String,
    missed: String,
    paused: bool,
    workflow_name: Option<String>,
    next_fire_at: Option<String>,
    last_fired_at: Option<String>,
    last_run_id: Option<String>,
    runs_started: u64,
}

impl From<&Schedule> for ScheduleJson {
    fn from(schedule: &Schedule) -> Self {
        Self {
            name: schedule.name.clone(),
            cron: schedule.cron.clone(),
            timezone: timezone_name(&schedule.timezone).to_owned(),
            missed: missed_name(&schedule.missed).to_owned(),
            paused: schedule.paused,
            workflow_name: non_empty(&schedule.workflow_name),
            next_fire_at: optional_rfc3339(schedule.next_fire_at.as_ref()),
            last_fired_at: optional_rfc3339(schedule.last_fired_at.as_ref()),
            last_run_id: non_empty(&schedule.last_run_id),
            runs_started: schedule.runs_started,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;

    #[test]
    fn schedule_json_shape() {
        let schedule = Schedule {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            workflow_name: "audit".into(),
            next_fire_at: Some(timestamp_from_micros(0)),
            runs_started: 2,
            ..Default::default()
        };
        let value = serde_json::to_value(ScheduleJson::from(&schedule)).expect("serializes");
        assert_eq!(
            value,
            json!({
                "name": "nightly",
                "cron": "0 3 * * *",
                "timezone": "UTC",
                "missed": "skip",
                "paused": false,
                "workflow_name": "audit",
                "next_fire_at": "1970-01-01T00:00:00.000000Z",
                "last_fired_at": null,
                "last_run_id": null,
                "runs_started": 2,
            })
        );
    }
}
