//! Schedules as text: the list, and when one runs next.

use std::time::SystemTime;

use supervisor_proto::v1::Schedule;

use crate::commands::output::{Table, age, or_dash, rfc3339_seconds};

/// A schedule's time zone: `UTC` when unset.
pub fn timezone_name(timezone: &str) -> &str {
    if timezone.is_empty() { "UTC" } else { timezone }
}

/// A schedule's missed-tick policy: `skip` when unset.
pub fn missed_name(missed: &str) -> &str {
    if missed.is_empty() { "skip" } else { missed }
}

/// The schedules: name, cron, time zone, missed-tick policy, state, workflow, next
/// tick (none while paused), last tick, its run and the runs started.
pub fn schedule_table(schedules: &[Schedule], now: SystemTime) -> String {
    let mut table = Table::new(&[
        "NAME",
        "CRON",
        "TIMEZONE",
        "MISSED",
        "STATE",
        "WORKFLOW",
        "NEXT RUN",
        "LAST FIRED",
        "LAST RUN",
        "RUNS",
    ]);
    for schedule in schedules {
        let next = match &schedule.next_fire_at {
            Some(next) if !schedule.paused => rfc3339_seconds(next),
            _ => "-".to_owned(),
        };
        let last = match &schedule.last_fired_at {
            Some(last) => format!("{} ago", age(Some(last), now)),
            None => "-".to_owned(),
        };
        table.row(vec![
            schedule.name.clone(),
            schedule.cron.clone(),
            timezone_name(&schedule.timezone).to_owned(),
            missed_name(&schedule.missed).to_owned(),
            if schedule.paused { "paused" } else { "active" }.to_owned(),
            or_dash(&schedule.workflow_name),
            next,
            last,
            or_dash(&schedule.last_run_id),
            schedule.runs_started.to_string(),
        ]);
    }
    table.render()
}

/// `next run at 2026-01-02T02:00:00Z`, `paused`, or `no next run` for a schedule.
pub fn schedule_next(schedule: &Schedule) -> String {
    match &schedule.next_fire_at {
        _ if schedule.paused => "paused".to_owned(),
        Some(next) => format!("next run at {}", rfc3339_seconds(next)),
        None => "no next run".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;
    use crate::commands::harness::{T0, at};

    #[test]
    fn schedule_tables() {
        let schedules = [
            Schedule {
                name: "nightly".into(),
                cron: "0 3 * * *".into(),
                timezone: "Europe/Paris".into(),
                missed: "catch_up_one".into(),
                workflow_name: "audit".into(),
                next_fire_at: Some(timestamp_from_micros(T0 + 3_600_000_000)),
                last_fired_at: Some(timestamp_from_micros(T0 - 7_200_000_000)),
                last_run_id: "r9".into(),
                runs_started: 12,
                ..Default::default()
            },
            Schedule {
                name: "weekly".into(),
                cron: "0 0 * * 1".into(),
                paused: true,
                next_fire_at: Some(timestamp_from_micros(T0)),
                ..Default::default()
            },
        ];
        let lines: Vec<_> = schedule_table(&schedules, at(T0))
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines,
            [
                "NAME     CRON       TIMEZONE      MISSED        STATE   WORKFLOW  \
                 NEXT RUN              LAST FIRED  LAST RUN  RUNS",
                "nightly  0 3 * * *  Europe/Paris  catch_up_one  active  audit     \
                 2023-11-14T23:13:20Z  2h ago      r9        12",
                "weekly   0 0 * * 1  UTC           skip          paused  -         \
                 -                     -           -         0",
            ]
        );
        assert_eq!(
            schedule_next(&schedules[0]),
            "next run at 2023-11-14T23:13:20Z"
        );
        assert_eq!(schedule_next(&schedules[1]), "paused");
        assert_eq!(schedule_next(&Schedule::default()), "no next run");
    }
}
