//! The audit on made-up logs: each invariant it must catch, and the measurements.

use supervisor_engine::ProviderStats;
use supervisor_model::{EventKind, TaskEvent, TaskStatus};

use super::{Fault, Observed, TaskLog, audit};

const S: i64 = 1_000_000;

fn ev(seq: u64, at: i64, kind: EventKind, node: &str, fence: u64) -> TaskEvent {
    TaskEvent {
        seq,
        at,
        kind,
        status: TaskStatus::Queued,
        attempt: 0,
        message: String::new(),
        output: String::new(),
        node: node.into(),
        fence,
    }
}

/// A task submitted at `at`, leased by `node` 10 ms later and done 300 ms after that.
fn simple(id: &str, at: i64, node: &str) -> TaskLog {
    TaskLog {
        id: id.into(),
        status: TaskStatus::Succeeded,
        idempotency_key: Some(format!("key-{id}")),
        error: None,
        events: vec![
            ev(1, at, EventKind::Submitted, "", 0),
            ev(2, at + 10_000, EventKind::Started, node, 1),
            ev(3, at + 310_000, EventKind::Succeeded, node, 1),
        ],
    }
}

fn observed(tasks: Vec<TaskLog>) -> Observed {
    let n = tasks.len() as u64;
    Observed {
        tasks,
        stats: ProviderStats {
            completions_accepted: n,
            ..ProviderStats::default()
        },
        nodes: Vec::new(),
        counted: n,
    }
}

fn ids(o: &Observed) -> Vec<String> {
    o.tasks.iter().map(|t| t.id.clone()).collect()
}

#[test]
fn a_clean_run_passes() {
    let o = observed(
        (0..10)
            .map(|i| simple(&format!("t{i}"), i * S / 10, "n1"))
            .collect(),
    );
    let f = audit(&o, &ids(&o), &[], (0, 2 * S));
    assert!(f.passed(), "{:?}", f.violations);
    assert_eq!((f.tasks, f.succeeded, f.unacknowledged), (10, 10, 0));
}

#[test]
fn two_terminal_events_are_caught() {
    let mut t = simple("t1", 0, "n1");
    t.events.push(ev(4, S, EventKind::Succeeded, "n2", 2));
    let o = observed(vec![t]);
    let f = audit(&o, &ids(&o), &[], (0, 2 * S));
    assert!(
        f.violations.iter().any(|v| v.contains("2 terminal events")),
        "{:?}",
        f.violations
    );
}

#[test]
fn a_completion_under_a_stale_token_is_caught() {
    let mut t = simple("t1", 0, "n1");
    // Re-leased by n2 with fence 2, then n1 (fence 1) is recorded as the completer.
    t.events = vec![
        ev(1, 0, EventKind::Submitted, "", 0),
        ev(2, 10, EventKind::Started, "n1", 1),
        ev(3, 20, EventKind::Requeued, "", 1),
        ev(4, 30, EventKind::Started, "n2", 2),
        ev(5, 40, EventKind::Succeeded, "n1", 1),
    ];
    let o = observed(vec![t]);
    let f = audit(&o, &ids(&o), &[], (0, S));
    assert!(
        f.violations
            .iter()
            .any(|v| v.contains("stale fencing token")),
        "{:?}",
        f.violations
    );
}

#[test]
fn lost_tasks_duplicates_failures_and_miscounts_are_caught() {
    let mut failed = simple("t2", 0, "n1");
    failed.status = TaskStatus::Failed;
    failed.events[2].kind = EventKind::Failed;
    let mut dup = simple("t3", 0, "n1");
    dup.idempotency_key = Some("key-t1".into());
    let mut unfinished = simple("t4", 0, "n1");
    unfinished.status = TaskStatus::Running;
    unfinished.events.truncate(2);
    let mut o = observed(vec![simple("t1", 0, "n1"), failed, dup, unfinished]);
    o.stats.completions_accepted = 7;
    let mut accepted = ids(&o);
    accepted.push("t-lost".into());
    let f = audit(&o, &accepted, &[], (0, S));
    let has = |needle: &str| f.violations.iter().any(|v| v.contains(needle));
    assert!(has("t-lost is not in the store"), "{:?}", f.violations);
    assert!(has("t2 ended failed"), "{:?}", f.violations);
    assert!(has("key-t1 made 2 tasks"), "{:?}", f.violations);
    assert!(has("t4 has no terminal event"), "{:?}", f.violations);
    assert!(has("accepted completions (7)"), "{:?}", f.violations);
}

#[test]
fn a_task_nobody_acknowledged_is_counted_not_blamed() {
    let o = observed(vec![simple("t1", 0, "n1"), simple("t2", 0, "n2")]);
    let f = audit(&o, &["t1".to_string()], &[], (0, S));
    assert!(f.passed(), "{:?}", f.violations);
    assert_eq!(f.unacknowledged, 1);
}

#[test]
fn recovery_is_the_first_re_lease_of_an_orphan_elsewhere() {
    let fault_at = 10 * S;
    // Orphan: leased by n2 before the fault, re-leased by n3 7.5 s after it.
    let orphan = TaskLog {
        events: vec![
            ev(1, 9 * S, EventKind::Submitted, "", 0),
            ev(2, 9 * S + 500_000, EventKind::Started, "n2", 1),
            ev(3, fault_at + 7 * S, EventKind::Requeued, "", 1),
            ev(4, fault_at + 7 * S + 500_000, EventKind::Started, "n3", 2),
            ev(5, fault_at + 8 * S, EventKind::Succeeded, "n3", 2),
        ],
        ..simple("orphan", 0, "n2")
    };
    // Second orphan, re-leased later by n1.
    let mut late = orphan.clone();
    late.id = "late".into();
    late.idempotency_key = Some("key-late".into());
    late.events[3] = ev(4, fault_at + 9 * S, EventKind::Started, "n1", 2);
    late.events[4] = ev(5, fault_at + 9 * S + 300_000, EventKind::Succeeded, "n1", 2);
    // Finished on n2 before the fault: not an orphan.
    let done_before = simple("done", 8 * S, "n2");
    // Held by n1: not the faulted node's.
    let other = simple("other", fault_at - 100_000, "n1");
    let o = observed(vec![orphan, late, done_before, other]);
    let fault = Fault {
        what: "kill -9 n2".into(),
        node: Some("n2".into()),
        at: fault_at,
        cleared: fault_at,
    };
    let f = audit(&o, &ids(&o), &[fault], (0, 30 * S));
    assert!(f.passed(), "{:?}", f.violations);
    let r = &f.recoveries[0];
    assert_eq!(r.orphans, 2);
    assert_eq!(r.first_release_ms, Some(7_500.0));
    assert_eq!(r.all_released_ms, Some(9_000.0));
    // "other" finished on n1 210 ms after the fault.
    assert_eq!(r.first_completion_after_ms, Some(210.0));
    assert_eq!(f.released, 2);
}

#[test]
fn a_drained_task_finished_by_its_holder_is_no_orphan() {
    let fault_at = 5 * S;
    let t = TaskLog {
        events: vec![
            ev(1, 4 * S, EventKind::Submitted, "", 0),
            ev(2, 4 * S + 900_000, EventKind::Started, "n1", 1),
            ev(3, fault_at + 200_000, EventKind::Succeeded, "n1", 1),
        ],
        ..simple("t", 0, "n1")
    };
    let o = observed(vec![t]);
    let fault = Fault {
        what: "SIGTERM n1, restart".into(),
        node: Some("n1".into()),
        at: fault_at,
        cleared: fault_at + S,
    };
    let f = audit(&o, &ids(&o), &[fault], (0, 10 * S));
    assert_eq!(f.recoveries[0].orphans, 0);
    assert_eq!(f.recoveries[0].first_release_ms, None);
}

#[test]
fn throughput_is_measured_before_during_and_after_the_disruption() {
    // 10 completions/s for 10 s, none from 10 s to 13 s, 10/s again until 20 s.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let at = i * S / 10;
        if (10 * S..13 * S).contains(&(at + 310_000)) {
            continue;
        }
        tasks.push(simple(&format!("t{i}"), at, "n1"));
    }
    let o = observed(tasks);
    let fault = Fault {
        what: "PostgreSQL stopped".into(),
        node: None,
        at: 10 * S,
        cleared: 13 * S,
    };
    let f = audit(&o, &ids(&o), &[fault], (0, 20 * S));
    let t = &f.throughput;
    assert!((t.before - 10.0).abs() < 0.2, "{t:?}");
    assert_eq!(t.during, 0.0);
    assert!((t.after - 10.0).abs() < 0.5, "{t:?}");
    assert_eq!(t.worst_second, 0.0);
    assert_eq!(t.disruption_s, 3.0);
}
