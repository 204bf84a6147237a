//! Analytics rollups: what completions count, the roller folding each minute exactly once
//! (also concurrently with completions, and when a node's clock is late), retention,
//! tenant isolation, and the predictions learnt from them.

use std::sync::Arc;
use std::time::Duration;

use supervisor_model::{Dimension, Granularity, RollupGroup, TaskId, TaskStatus};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

use crate::tests::{Fixture, finish, fixture, new_task, success};
use crate::*;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn permanent_failure() -> Outcome {
    Outcome::Failed {
        error: "the request was refused".into(),
        kind: "bad_request".into(),
        retryable: false,
        retry_after: None,
    }
}

/// Submits a task of `tenant` on `engine`, lets `took` pass, then leases and ends it
/// with `outcome` (`None`: cancels it while queued).
async fn run_on(
    engine: &Engine,
    clock: &ManualClock,
    node: &NodeIdentity,
    tenant: &str,
    took: Duration,
    outcome: Option<Outcome>,
) -> TaskId {
    let id = engine
        .submit(tenant, new_task("fix the flaky retry test"))
        .await
        .expect("submit")
        .task
        .id;
    clock.advance(took);
    match outcome {
        None => {
            engine
                .cancel(tenant, id, "not needed")
                .await
                .expect("cancel");
        }
        Some(outcome) => {
            let mut batch = engine.lease(node, 1).await.expect("lease");
            assert_eq!(batch.tasks.len(), 1, "one task to lease");
            let leased = batch.tasks.remove(0);
            assert_eq!(leased.task.id, id);
            let res = engine
                .finish(finish(&leased.task_ref, outcome))
                .await
                .expect("finish");
            assert!(matches!(res, RunnerWriteResult::Accepted(_)), "{res:?}");
        }
    }
    id
}

async fn run(f: &Fixture, tenant: &str, took: Duration, outcome: Option<Outcome>) -> TaskId {
    run_on(&f.engine, &f.clock, &f.node, tenant, took, outcome).await
}

/// The last `back` up to a minute from now, for `tenant` (`None`: every tenant).
fn last(f: &Fixture, tenant: Option<&str>, back: Duration) -> AnalyticsQuery {
    let now = f.engine.now_micros();
    AnalyticsQuery {
        tenant: tenant.map(str::to_string),
        from_micros: now - back.as_micros() as i64,
        to_micros: now + 60_000_000,
        filter: RollupGroup::default(),
    }
}

async fn total(f: &Fixture, tenant: Option<&str>, back: Duration) -> supervisor_model::RollupStats {
    f.engine
        .analytics_summary(&last(f, tenant, back), &[])
        .await
        .expect("summary")
        .total
}

#[tokio::test]
async fn a_mix_of_outcomes_adds_up_to_counts_cost_and_quantiles() {
    let f = fixture().await;
    for secs in [1, 2, 4] {
        run(
            &f,
            "default",
            Duration::from_secs(secs),
            Some(success("ok")),
        )
        .await;
    }
    run(
        &f,
        "default",
        Duration::from_secs(8),
        Some(permanent_failure()),
    )
    .await;
    run(&f, "default", Duration::from_secs(16), None).await;

    let s = total(&f, Some("default"), HOUR).await;
    assert_eq!(
        (s.finished, s.succeeded, s.failed, s.cancelled),
        (5, 3, 1, 1)
    );
    assert_eq!(s.attempts, 4, "the cancelled task never started");
    assert_eq!((s.input_tokens, s.output_tokens), (30, 60));
    assert_eq!(s.cost_micros, 90);
    assert_eq!(s.success_rate(), Some(0.75));
    assert_eq!(s.latency.count(), 5);
    let p50 = s.latency.quantile(0.5).expect("p50");
    assert!((4_000..=4_800).contains(&p50), "p50 {p50}");
    let max = s.latency.quantile(1.0).expect("max");
    assert!((16_000..=19_200).contains(&max), "max {max}");

    // By provider: the cancelled task reached none.
    let by = f
        .engine
        .analytics_summary(&last(&f, Some("default"), HOUR), &[Dimension::Provider])
        .await
        .expect("summary");
    let groups: Vec<(Option<String>, u64)> = by
        .groups
        .iter()
        .map(|(g, s)| (g.provider.clone(), s.finished))
        .collect();
    assert_eq!(
        groups,
        vec![(Some("mock".into()), 4), (Some(String::new()), 1)]
    );
    // A filter keeps only what matches.
    let mut q = last(&f, Some("default"), HOUR);
    q.filter.provider = Some("mock".into());
    let s = f.engine.analytics_summary(&q, &[]).await.expect("summary");
    assert_eq!((s.total.finished, s.total.cancelled), (4, 0));
}

#[tokio::test]
async fn the_roller_folds_each_minute_exactly_once() {
    let f = fixture().await;
    for i in 0..4 {
        run(&f, "default", Duration::from_secs(20), Some(success("ok"))).await;
        if i % 2 == 1 {
            run(
                &f,
                "default",
                Duration::from_secs(5),
                Some(permanent_failure()),
            )
            .await;
        }
    }
    let minutes = |g| f.engine.rollup_rows_total(g, "default");
    let in_minutes = minutes(Granularity::Minute).await.unwrap();
    assert_eq!(in_minutes.finished, 6);
    assert_eq!(minutes(Granularity::Hour).await.unwrap().finished, 0);

    f.clock.advance(2 * MINUTE);
    let roll = f.engine.roll_analytics().await.expect("roll");
    assert!(roll.minutes_folded >= 2, "{roll:?}");
    assert_eq!(minutes(Granularity::Hour).await.unwrap(), in_minutes);
    assert_eq!(minutes(Granularity::Day).await.unwrap(), in_minutes);

    let again = f.engine.roll_analytics().await.expect("roll");
    assert_eq!(again.minutes_folded, 0);
    assert_eq!(minutes(Granularity::Hour).await.unwrap(), in_minutes);
    assert_eq!(minutes(Granularity::Day).await.unwrap(), in_minutes);
    // A window read from hour rows and one read from minute rows agree.
    assert_eq!(total(&f, Some("default"), 10 * HOUR).await, in_minutes);
    assert_eq!(total(&f, Some("default"), 10 * MINUTE).await, in_minutes);
}

#[tokio::test]
async fn rolling_while_tasks_complete_loses_and_doubles_nothing() {
    let f = fixture().await;
    let mut finished = 0;
    for _ in 0..6 {
        let mut leased = Vec::new();
        for _ in 0..5 {
            f.engine
                .submit("default", new_task("write the tests"))
                .await
                .expect("submit");
        }
        let batch = f.engine.lease(&f.node, 5).await.expect("lease");
        leased.extend(batch.tasks);
        let finishes = leased.iter().map(|l| {
            let engine = f.engine.clone();
            let task_ref = l.task_ref.clone();
            tokio::spawn(async move { engine.finish(finish(&task_ref, success("ok"))).await })
        });
        let rolls = (0..3).map(|_| {
            let engine = f.engine.clone();
            tokio::spawn(async move { engine.roll_analytics().await })
        });
        let finishes: Vec<_> = finishes.collect();
        let rolls: Vec<_> = rolls.collect();
        for h in finishes {
            h.await.expect("join").expect("finish");
            finished += 1;
        }
        for h in rolls {
            h.await.expect("join").expect("roll");
        }
        f.clock.advance(Duration::from_secs(40));
    }
    f.clock.advance(2 * MINUTE);
    f.engine.roll_analytics().await.expect("roll");
    for g in Granularity::ALL {
        let s = f.engine.rollup_rows_total(g, "default").await.unwrap();
        assert_eq!(s.finished, finished, "{g:?}");
        assert_eq!(s.succeeded, finished, "{g:?}");
        assert_eq!(s.cost_micros, 30 * finished, "{g:?}");
    }
}

#[tokio::test]
async fn a_completion_late_by_its_clock_is_folded_once_on_the_next_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("open");
    let start = 1_700_000_000_000_000;
    // The roller's node runs ten minutes ahead of the node finishing tasks.
    let (slow_clock, fast_clock) = (ManualClock::new(start), ManualClock::new(start));
    fast_clock.advance(10 * MINUTE);
    let cfg = EngineConfig::default();
    let slow = Engine::new(db.clone(), cfg.clone(), Arc::new(slow_clock.clone()));
    let fast = Engine::new(db, cfg, Arc::new(fast_clock.clone()));
    let node = slow
        .register_node("slow", &NodeAnnouncement::default())
        .await
        .expect("register");
    let second = Duration::from_secs(1);
    run_on(
        &slow,
        &slow_clock,
        &node,
        "default",
        second,
        Some(success("ok")),
    )
    .await;
    let roll = fast.roll_analytics().await.expect("roll");
    assert_eq!(roll.minutes_folded, 1);
    let minute_of = |micros: i64| Granularity::Minute.start_of(micros / 1000);
    assert!(
        roll.watermark_micros / 1000 > minute_of(slow_clock.now_micros()),
        "the slow node's minute is folded: {roll:?}"
    );
    let rows = |g| fast.rollup_rows_total(g, "default");
    assert_eq!(rows(Granularity::Hour).await.unwrap().finished, 1);

    // The slow node finishes another task in the minute already folded.
    run_on(
        &slow,
        &slow_clock,
        &node,
        "default",
        second,
        Some(success("ok")),
    )
    .await;
    assert_eq!(rows(Granularity::Minute).await.unwrap().finished, 2);
    assert_eq!(rows(Granularity::Hour).await.unwrap().finished, 1);

    let roll = fast.roll_analytics().await.expect("roll");
    assert_eq!(
        roll.minutes_folded, 1,
        "only the late minute is folded again"
    );
    for g in Granularity::ALL {
        assert_eq!(rows(g).await.unwrap().finished, 2, "{g:?}");
    }
    let roll = fast.roll_analytics().await.expect("roll");
    assert_eq!(roll.minutes_folded, 0);
    assert_eq!(rows(Granularity::Day).await.unwrap().finished, 2);
    let now = fast.now_micros();
    let summary = fast
        .analytics_summary(
            &AnalyticsQuery {
                tenant: Some("default".into()),
                from_micros: now - 24 * 3_600_000_000,
                to_micros: now,
                filter: RollupGroup::default(),
            },
            &[],
        )
        .await
        .expect("summary");
    assert_eq!(summary.total.finished, 2);
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_tasks() {
    let f = fixture().await;
    run(&f, "team-a", Duration::from_secs(1), Some(success("ok"))).await;
    run(
        &f,
        "team-a",
        Duration::from_secs(1),
        Some(permanent_failure()),
    )
    .await;
    run(&f, "team-b", Duration::from_secs(1), Some(success("ok"))).await;
    assert_eq!(total(&f, Some("team-a"), HOUR).await.finished, 2);
    assert_eq!(total(&f, Some("team-b"), HOUR).await.finished, 1);
    assert_eq!(total(&f, Some("team-c"), HOUR).await.finished, 0);
    assert_eq!(total(&f, None, HOUR).await.finished, 3);
    // Also once rolled, and grouped by tenant across the cluster.
    f.clock.advance(2 * MINUTE);
    f.engine.roll_analytics().await.expect("roll");
    assert_eq!(total(&f, Some("team-b"), DAY).await.finished, 1);
    let by = f
        .engine
        .analytics_summary(&last(&f, None, DAY), &[Dimension::Tenant])
        .await
        .expect("summary");
    let groups: Vec<(Option<String>, u64)> = by
        .groups
        .iter()
        .map(|(g, s)| (g.tenant.clone(), s.finished))
        .collect();
    assert_eq!(
        groups,
        vec![(Some("team-a".into()), 2), (Some("team-b".into()), 1)]
    );
    let trend = f
        .engine
        .analytics_trend(&last(&f, Some("team-a"), HOUR), Granularity::Hour)
        .await
        .expect("trend");
    let seen: u64 = trend.points.iter().map(|(_, s)| s.finished).sum();
    assert_eq!(seen, 2);
}

#[tokio::test]
async fn a_trend_has_every_period_and_refuses_what_is_no_longer_kept() {
    let f = fixture().await;
    let from = f.engine.now_micros();
    run(&f, "default", Duration::from_secs(1), Some(success("ok"))).await;
    f.clock.advance(2 * MINUTE);
    run(&f, "default", Duration::from_secs(1), Some(success("ok"))).await;
    run(&f, "default", Duration::from_secs(1), None).await;
    f.engine.roll_analytics().await.expect("roll");
    let q = AnalyticsQuery {
        tenant: Some("default".into()),
        from_micros: from,
        to_micros: f.engine.now_micros() + 1,
        filter: RollupGroup::default(),
    };
    let trend = f
        .engine
        .analytics_trend(&q, Granularity::Minute)
        .await
        .expect("trend");
    let counts: Vec<u64> = trend.points.iter().map(|(_, s)| s.finished).collect();
    assert_eq!(counts.iter().sum::<u64>(), 3);
    assert_eq!(counts.first(), Some(&1));
    assert_eq!(counts.last(), Some(&2));
    assert!(counts.len() >= 3, "{counts:?}");
    for pair in trend.points.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 60_000_000);
    }

    let old = AnalyticsQuery {
        from_micros: from - 3 * 86_400_000_000,
        ..q.clone()
    };
    let refused = f.engine.analytics_trend(&old, Granularity::Minute).await;
    assert!(
        matches!(&refused, Err(EngineError::InvalidArgument(e)) if e.message.contains("48 hours")),
        "{refused:?}"
    );
    let long = AnalyticsQuery {
        from_micros: from - 200 * 86_400_000_000,
        ..q.clone()
    };
    let refused = f.engine.analytics_trend(&long, Granularity::Hour).await;
    assert!(
        matches!(&refused, Err(EngineError::InvalidArgument(e)) if e.field == "window"),
        "{refused:?}"
    );
    let backwards = AnalyticsQuery {
        to_micros: from,
        from_micros: from + 1,
        ..q
    };
    assert!(matches!(
        f.engine.analytics_summary(&backwards, &[]).await,
        Err(EngineError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn old_rows_expire_but_day_rows_keep_the_counts() {
    let f = fixture().await;
    let from = f.engine.now_micros() - 3_600_000_000;
    run(&f, "default", Duration::from_secs(3), Some(success("ok"))).await;
    run(
        &f,
        "default",
        Duration::from_secs(3),
        Some(permanent_failure()),
    )
    .await;
    let rows = |g| f.engine.rollup_rows_total(g, "default");
    let since_start = |f: &Fixture| AnalyticsQuery {
        tenant: Some("default".into()),
        from_micros: from,
        to_micros: f.engine.now_micros(),
        filter: RollupGroup::default(),
    };

    f.clock.advance(3 * DAY);
    f.engine.roll_analytics().await.expect("roll");
    assert!(!f.engine.expire_analytics(None).await.expect("expire"));
    assert_eq!(rows(Granularity::Minute).await.unwrap().finished, 0);
    assert_eq!(rows(Granularity::Hour).await.unwrap().finished, 2);
    let s = f
        .engine
        .analytics_summary(&since_start(&f), &[])
        .await
        .expect("summary");
    assert_eq!((s.total.succeeded, s.total.failed), (1, 1));

    f.clock.advance(91 * DAY);
    f.engine.roll_analytics().await.expect("roll");
    f.engine.expire_analytics(None).await.expect("expire");
    assert_eq!(rows(Granularity::Hour).await.unwrap().finished, 0);
    assert_eq!(rows(Granularity::Day).await.unwrap().finished, 2);
    let s = f
        .engine
        .analytics_summary(&since_start(&f), &[])
        .await
        .expect("summary");
    assert_eq!(s.total.finished, 2);
    assert!(
        s.from_micros <= from && s.from_micros % 86_400_000_000 == 0,
        "rounded out to the day: {s:?}"
    );
}

#[tokio::test]
async fn only_the_holder_of_the_roller_duty_rolls() {
    let f = fixture().await;
    run(&f, "default", Duration::from_secs(1), Some(success("ok"))).await;
    f.clock.advance(2 * MINUTE);
    let fence = f
        .engine
        .acquire_singleton(ROLLER_DUTY, &f.node, Duration::from_secs(15))
        .await
        .expect("acquire")
        .expect("free");
    let stale = f
        .engine
        .roll_analytics_as_roller(fence + 1)
        .await
        .expect("roll");
    assert!(stale.lost_duty);
    assert_eq!(stale.minutes_folded, 0);
    let roll = f
        .engine
        .roll_analytics_as_roller(fence)
        .await
        .expect("roll");
    assert!(!roll.lost_duty);
    assert_eq!(roll.minutes_folded, 1);
}

#[tokio::test]
async fn predictions_learn_from_the_rollups() {
    let f = fixture().await;
    let queued = f
        .engine
        .submit("default", new_task("fix the flaky retry test"))
        .await
        .expect("submit")
        .task;
    assert_eq!(
        f.engine.predict_task(&queued).await.expect("predict"),
        None,
        "no history yet"
    );
    f.engine
        .cancel("default", queued.id, "later")
        .await
        .expect("cancel");
    for _ in 0..3 {
        run(&f, "default", Duration::from_secs(10), Some(success("ok"))).await;
    }
    run(
        &f,
        "default",
        Duration::from_secs(10),
        Some(permanent_failure()),
    )
    .await;
    // The predictor kept from the first call learnt nothing; train it again.
    f.engine.train_predictor().await.expect("train");
    let task = f.engine.get("default", queued.id).await.expect("get");
    assert_eq!(task.status, TaskStatus::Cancelled);
    let p = f
        .engine
        .predict_task(&task)
        .await
        .expect("predict")
        .expect("a prediction");
    assert!(p.based_on >= 4, "{p:?}");
    assert!((10_000..=12_000).contains(&p.duration_p50_ms), "{p:?}");
    assert!(
        p.failure_probability > 0.0 && p.failure_probability < 1.0,
        "{p:?}"
    );
}
