//! The resource managers in the lease transaction: repository locks, budgets, running
//! limits and fair queueing, pinned with a real embedded store and a hand-moved clock.

use std::time::Duration;

use supervisor_model::{
    Budget, BudgetLimit, BudgetScope, ExceedPolicy, LockPolicy, Metric, NewTask, Period, Priority,
    TaskId, TaskStatus, TaskType, TenantQuota, Usage,
};

use crate::tests::{Fixture, events_of, finish, fixture, new_task, success};
use crate::*;

fn repo_task(prompt: &str, task_type: TaskType, git_ref: &str) -> NewTask {
    let mut t = new_task(prompt);
    t.task_type = Some(task_type);
    t.context.insert("repo".into(), "/src/app".into());
    t.context.insert("ref".into(), git_ref.into());
    t
}

async fn submit(f: &Fixture, tenant: &str, req: NewTask) -> TaskId {
    f.engine.submit(tenant, req).await.expect("submit").task.id
}

async fn lease(f: &Fixture, max: usize) -> Vec<LeasedTask> {
    f.engine.lease(&f.node, max).await.expect("lease").tasks
}

async fn task(f: &Fixture, tenant: &str, id: TaskId) -> supervisor_model::Task {
    f.engine.get(tenant, id).await.expect("get")
}

#[tokio::test]
async fn an_exclusive_lock_parks_the_second_writer_until_the_first_ends() {
    let f = fixture().await;
    let first = submit(&f, "default", repo_task("fix a", TaskType::BugFix, "main")).await;
    let second = submit(&f, "default", repo_task("fix b", TaskType::BugFix, "main")).await;
    // Another ref of the same repository is another lock.
    let other = submit(&f, "default", repo_task("fix c", TaskType::BugFix, "dev")).await;
    let leased = lease(&f, 10).await;
    let ids: Vec<_> = leased.iter().map(|t| t.task.id).collect();
    assert_eq!(ids, vec![first, other]);
    let waiting = task(&f, "default", second).await;
    assert_eq!(waiting.status, TaskStatus::Queued);
    let why = waiting.waiting_for.expect("it says what it waits for");
    assert!(
        why.contains(&first.to_string()) && why.contains("exclusive"),
        "{why}"
    );
    let allocations = f.engine.allocations(None).await.unwrap();
    assert_eq!(allocations.len(), 2);
    let listed = f.engine.waiting(Some("default")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].task, listed[0].resource.as_str()),
        (second, "lock")
    );
    // Leasing again changes nothing while the holder runs.
    assert!(lease(&f, 10).await.is_empty());
    assert_eq!(
        events_of(&f, second)
            .await
            .iter()
            .filter(|e| e.message.starts_with("waiting"))
            .count(),
        1,
        "the wait is recorded once"
    );
    let holder = &leased[0];
    f.engine
        .finish(finish(&holder.task_ref, success("done")))
        .await
        .unwrap();
    let next = lease(&f, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].task.id, second);
    assert_eq!(next[0].task.waiting_for, None);
    assert!(f.engine.waiting(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn readers_share_a_lock_and_a_writer_waits_for_all_of_them() {
    let f = fixture().await;
    let r1 = submit(&f, "default", repo_task("look", TaskType::PrReview, "main")).await;
    let r2 = submit(
        &f,
        "default",
        repo_task("audit", TaskType::SecurityAudit, "main"),
    )
    .await;
    let w = submit(
        &f,
        "default",
        repo_task("change", TaskType::Feature, "main"),
    )
    .await;
    let leased = lease(&f, 10).await;
    let ids: Vec<_> = leased.iter().map(|t| t.task.id).collect();
    assert_eq!(ids, vec![r1, r2]);
    for t in &leased {
        assert_eq!(
            t.task.holds.lock.as_ref().map(|l| l.mode),
            Some(supervisor_model::LockMode::Shared)
        );
    }
    assert!(task(&f, "default", w).await.waiting_for.is_some());
    f.engine
        .finish(finish(&leased[0].task_ref, success("ok")))
        .await
        .unwrap();
    assert!(lease(&f, 10).await.is_empty(), "one reader still holds it");
    f.engine
        .finish(finish(&leased[1].task_ref, success("ok")))
        .await
        .unwrap();
    let next = lease(&f, 10).await;
    assert_eq!(next.iter().map(|t| t.task.id).collect::<Vec<_>>(), vec![w]);
}

#[tokio::test]
async fn a_lapsed_lease_and_a_cancel_release_the_lock() {
    let f = fixture().await;
    let a = submit(&f, "default", repo_task("a", TaskType::BugFix, "main")).await;
    let b = submit(&f, "default", repo_task("b", TaskType::BugFix, "main")).await;
    assert_eq!(lease(&f, 10).await.len(), 1);
    // The holder's node goes silent: the lease lapses and the reaper takes it back.
    f.clock.advance(Duration::from_secs(11));
    assert_eq!(
        f.engine.sweep_timers(100).await.unwrap().leases_reclaimed,
        1
    );
    assert!(f.engine.allocations(None).await.unwrap().is_empty());
    // Both are queued again; the waiter was woken and one of them takes the lock.
    let next = lease(&f, 10).await;
    assert_eq!(next.len(), 1);
    let holder = next[0].task.id;
    let other = if holder == a { b } else { a };
    f.engine
        .cancel("default", holder, "no longer needed")
        .await
        .unwrap();
    let last = lease(&f, 10).await;
    assert_eq!(
        last.iter().map(|t| t.task.id).collect::<Vec<_>>(),
        vec![other]
    );
    // A cancelled waiter leaves the waiting list.
    let c = submit(&f, "default", repo_task("c", TaskType::BugFix, "main")).await;
    assert!(lease(&f, 10).await.is_empty());
    f.engine.cancel("default", c, "").await.unwrap();
    assert!(f.engine.waiting(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_reject_policy_refuses_at_submit_and_preempt_requeues_a_lower_priority_holder() {
    let f = fixture().await;
    f.engine
        .set_quota(
            "default",
            TenantQuota {
                lock_policy: LockPolicy::Reject,
                ..TenantQuota::default()
            },
        )
        .await
        .unwrap();
    submit(&f, "default", repo_task("a", TaskType::BugFix, "main")).await;
    let holder = lease(&f, 10).await.remove(0);
    let refused = f
        .engine
        .submit("default", repo_task("b", TaskType::BugFix, "main"))
        .await
        .expect_err("the lock is held");
    assert!(
        matches!(&refused, EngineError::FailedPrecondition(m) if m.contains(&holder.task.id.to_string()) && m.contains("reject")),
        "{refused}"
    );
    // A task of another ref is accepted.
    submit(&f, "default", repo_task("c", TaskType::BugFix, "dev")).await;

    f.engine
        .set_quota(
            "default",
            TenantQuota {
                lock_policy: LockPolicy::Preempt,
                ..TenantQuota::default()
            },
        )
        .await
        .unwrap();
    let mut urgent = repo_task("hotfix", TaskType::BugFix, "main");
    urgent.priority = Priority::Urgent;
    let urgent = submit(&f, "default", urgent).await;
    let leased = lease(&f, 10).await;
    assert!(leased.iter().any(|t| t.task.id == urgent));
    let victim = task(&f, "default", holder.task.id).await;
    assert_eq!(victim.status, TaskStatus::Queued);
    assert_eq!(victim.attempt, 0, "the preempted attempt does not count");
    // Its node is told to stop it, and its late result is refused.
    let (notices, _) = f.engine.take_inbox(&f.node.id).await.unwrap();
    assert!(notices.contains(&("default".to_string(), holder.task.id)));
    let late = f
        .engine
        .finish(finish(&holder.task_ref, success("late")))
        .await
        .unwrap();
    assert!(matches!(late, RunnerWriteResult::Refused(_)));
    // An equal priority does not preempt: it waits.
    let mut normal = repo_task("later", TaskType::BugFix, "main");
    normal.priority = Priority::Urgent;
    let normal = submit(&f, "default", normal).await;
    assert!(lease(&f, 10).await.iter().all(|t| t.task.id != normal));
}

fn usd_budget(scope: BudgetScope, per_day_micros: u64, on_exceed: ExceedPolicy) -> Budget {
    Budget {
        scope,
        limits: vec![BudgetLimit {
            metric: Metric::CostMicros,
            period: Period::Day,
            hard: per_day_micros,
        }],
        soft_percent: 50,
        on_exceed,
        time_zone: "Europe/Paris".into(),
        default_reserve_micros: supervisor_model::DEFAULT_RESERVE_MICROS,
        updated_at: 0,
        updated_by: "test".into(),
    }
}

fn costly(prompt: &str, max_cost_micros: u64) -> NewTask {
    let mut t = new_task(prompt);
    t.routing.max_cost_micros = Some(max_cost_micros);
    t
}

fn spent(cost_micros: u64) -> Finish {
    Finish {
        task_ref: TaskRef {
            tenant: String::new(),
            id: TaskId::generate(),
            fence: 0,
        },
        provider: "mock".into(),
        model: "m".into(),
        usage: Usage {
            input_tokens: 100,
            output_tokens: 50,
            ..Usage::default()
        },
        cost_micros,
        trailing: vec![],
        outcome: success("x"),
    }
}

#[tokio::test]
async fn a_budget_reserves_at_lease_settles_at_the_end_and_holds_back_what_does_not_fit() {
    let f = fixture().await;
    f.engine
        .set_budget(
            "acme",
            usd_budget(BudgetScope::Tenant, 1_000_000, ExceedPolicy::Wait),
        )
        .await
        .unwrap();
    let a = submit(&f, "acme", costly("a", 400_000)).await;
    let b = submit(&f, "acme", costly("b", 400_000)).await;
    let c = submit(&f, "acme", costly("c", 400_000)).await;
    let leased = lease(&f, 10).await;
    assert_eq!(
        leased.iter().map(|t| t.task.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    // Past the soft limit (50%), the second attempt's events say so.
    assert!(
        events_of_tenant(&f, "acme", b)
            .await
            .iter()
            .any(|e| e.message.contains("soft limit"))
    );
    let waiting = task(&f, "acme", c).await;
    let why = waiting.waiting_for.expect("it says why it waits");
    assert!(
        why.contains("$1.00 per day") && why.contains("$0.80"),
        "{why}"
    );
    let status = &f.engine.budgets("acme").await.unwrap()[0];
    assert_eq!(
        (status.limits[0].spent, status.limits[0].reserved),
        (0, 800_000)
    );
    // The first attempt really spent $0.10: its reservation settles to that.
    let mut done = spent(100_000);
    done.task_ref = leased[0].task_ref.clone();
    f.engine.finish(done).await.unwrap();
    let status = &f.engine.budgets("acme").await.unwrap()[0];
    assert_eq!(
        (status.limits[0].spent, status.limits[0].reserved),
        (100_000, 400_000)
    );
    // The parked task is looked at again by its timer, and fits now.
    for _ in 0..7 {
        // The second attempt keeps running (and holding its reservation).
        f.clock.advance(Duration::from_secs(9));
        assert_eq!(
            f.engine.renew(&[leased[1].task_ref.clone()]).await.unwrap(),
            vec![true]
        );
    }
    f.engine.sweep_timers(100).await.unwrap();
    let next = lease(&f, 10).await;
    assert_eq!(next.iter().map(|t| t.task.id).collect::<Vec<_>>(), vec![c]);
    assert!(f.engine.waiting(None).await.unwrap().is_empty());
}

async fn events_of_tenant(
    f: &Fixture,
    tenant: &str,
    id: TaskId,
) -> Vec<supervisor_model::TaskEvent> {
    f.engine.read_events(tenant, id, 0, 1000).await.unwrap().0
}

#[tokio::test]
async fn a_budget_with_the_fail_policy_fails_what_does_not_fit_and_scopes_count_their_own() {
    let f = fixture().await;
    f.engine
        .set_budget(
            "acme",
            usd_budget(
                BudgetScope::Label("team-x".into()),
                500_000,
                ExceedPolicy::Fail,
            ),
        )
        .await
        .unwrap();
    let mut labelled = costly("x", 400_000);
    labelled.labels = vec!["team-x".into()];
    let first = submit(&f, "acme", labelled.clone()).await;
    let second = submit(&f, "acme", labelled).await;
    // Unlabelled tasks are not counted by the label's budget.
    let free = submit(&f, "acme", costly("y", 400_000)).await;
    let leased = lease(&f, 10).await;
    assert_eq!(
        leased.iter().map(|t| t.task.id).collect::<Vec<_>>(),
        vec![first, free]
    );
    let failed = task(&f, "acme", second).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("label:team-x"),
        "{:?}",
        failed.error
    );
}

#[tokio::test]
async fn bad_budgets_are_refused_naming_the_field() {
    let f = fixture().await;
    let mut b = usd_budget(BudgetScope::Tenant, 1, ExceedPolicy::Wait);
    b.time_zone = "Mars/Olympus".into();
    let e = f.engine.set_budget("acme", b).await.unwrap_err();
    assert!(
        matches!(&e, EngineError::InvalidArgument(fe) if fe.field == "time_zone"),
        "{e}"
    );
    let mut b = usd_budget(BudgetScope::Tenant, 1, ExceedPolicy::Wait);
    b.limits.clear();
    let e = f.engine.set_budget("acme", b).await.unwrap_err();
    assert!(
        matches!(&e, EngineError::InvalidArgument(fe) if fe.field == "limits"),
        "{e}"
    );
    let e = f
        .engine
        .delete_budget("acme", &BudgetScope::Tenant)
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::FailedPrecondition(_)));
}

#[tokio::test]
async fn a_running_limit_holds_a_tenant_back_without_holding_others() {
    let f = fixture().await;
    f.engine
        .set_quota(
            "acme",
            TenantQuota {
                max_running: 2,
                ..TenantQuota::default()
            },
        )
        .await
        .unwrap();
    for i in 0..5 {
        submit(&f, "acme", new_task(&format!("a{i}"))).await;
    }
    let other = submit(&f, "globex", new_task("g")).await;
    let batch = f.engine.lease(&f.node, 10).await.unwrap();
    assert!(batch.held_back);
    let acme: Vec<_> = batch
        .tasks
        .iter()
        .filter(|t| t.task.tenant == "acme")
        .collect();
    assert_eq!(acme.len(), 2);
    assert!(batch.tasks.iter().any(|t| t.task.id == other));
    assert_eq!(f.engine.quota("acme").await.unwrap().running, 2);
    f.engine
        .finish(finish(&acme[0].task_ref, success("ok")))
        .await
        .unwrap();
    assert_eq!(lease(&f, 10).await.len(), 1);
}

#[tokio::test]
async fn a_tenant_with_a_backlog_does_not_delay_another_and_weights_set_the_ratio() {
    let f = fixture().await;
    for i in 0..300 {
        submit(&f, "big", new_task(&format!("b{i}"))).await;
    }
    for i in 0..5 {
        submit(&f, "small", new_task(&format!("s{i}"))).await;
    }
    // Equal weights: the two alternate, so all of the small tenant's tasks start within
    // the first 2 × 5 leases, whatever the big tenant's backlog.
    let mut order = Vec::new();
    for _ in 0..5 {
        for t in lease(&f, 2).await {
            order.push(t.task.tenant.clone());
        }
    }
    assert_eq!(
        order.iter().filter(|t| *t == "small").count(),
        5,
        "{order:?}"
    );

    // Weights 3:1 between two tenants with backlogs.
    let g = fixture().await;
    g.engine
        .set_quota(
            "heavy",
            TenantQuota {
                weight: 3,
                ..TenantQuota::default()
            },
        )
        .await
        .unwrap();
    for i in 0..100 {
        submit(&g, "heavy", new_task(&format!("h{i}"))).await;
        submit(&g, "light", new_task(&format!("l{i}"))).await;
    }
    let mut heavy = 0;
    for _ in 0..10 {
        heavy += lease(&g, 4)
            .await
            .iter()
            .filter(|t| t.task.tenant == "heavy")
            .count();
    }
    assert_eq!(
        heavy, 30,
        "3 of every 4 leases go to the tenant of weight 3"
    );
}

#[tokio::test]
async fn a_node_low_on_disk_leaves_repository_tasks_to_others() {
    let f = fixture().await;
    let repo = submit(&f, "default", repo_task("r", TaskType::BugFix, "main")).await;
    let plain = submit(&f, "default", new_task("p")).await;
    let options = LeaseOptions {
        no_repository_tasks: true,
        ..LeaseOptions::default()
    };
    let batch = f.engine.lease_with(&f.node, 10, &options).await.unwrap();
    assert_eq!(
        batch.tasks.iter().map(|t| t.task.id).collect::<Vec<_>>(),
        vec![plain]
    );
    assert!(batch.held_back);
    assert_eq!(
        lease(&f, 10)
            .await
            .iter()
            .map(|t| t.task.id)
            .collect::<Vec<_>>(),
        vec![repo]
    );
}

#[tokio::test]
async fn a_tenant_starts_no_more_attempts_per_minute_than_its_quota() {
    let f = fixture().await;
    f.engine
        .set_quota(
            "acme",
            TenantQuota {
                starts_per_minute: 3,
                ..TenantQuota::default()
            },
        )
        .await
        .unwrap();
    for i in 0..10 {
        submit(&f, "acme", new_task(&format!("a{i}"))).await;
    }
    let first = f.engine.lease(&f.node, 10).await.unwrap();
    assert_eq!(first.tasks.len(), 3);
    assert!(first.held_back);
    for t in &first.tasks {
        f.engine
            .finish(finish(&t.task_ref, success("ok")))
            .await
            .unwrap();
    }
    // Ending attempts does not make room: starts count per minute.
    assert!(lease(&f, 10).await.is_empty());
    f.clock.advance(Duration::from_secs(61));
    assert_eq!(lease(&f, 10).await.len(), 3);
}

#[tokio::test]
async fn tasks_queued_by_an_earlier_version_are_moved_when_a_node_registers() {
    let f = fixture().await;
    let task = f
        .engine
        .submit("acme", new_task("queued long ago"))
        .await
        .unwrap()
        .task;
    // Put its ready entry back in the single queue earlier versions kept.
    let mut txn = f.engine.db().begin().await.unwrap();
    txn.clear(&crate::keyspace::ready(
        "acme",
        task.priority.rank(),
        task.id,
    ));
    txn.clear(&crate::keyspace::ready_tenant("acme"));
    txn.set(
        &crate::keyspace::legacy_ready(task.priority.rank(), task.id),
        b"acme",
    );
    txn.commit().await.unwrap();
    assert!(
        lease(&f, 10).await.is_empty(),
        "the new queues do not see it"
    );
    let node = f
        .engine
        .register_node("node-a", &crate::NodeAnnouncement::default())
        .await
        .unwrap();
    let leased = f.engine.lease(&node, 10).await.unwrap().tasks;
    assert_eq!(
        leased.iter().map(|t| t.task.id).collect::<Vec<_>>(),
        vec![task.id]
    );
}
