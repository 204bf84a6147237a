//! Tenants, API keys, the audit log and per-tenant counts against a real store and a
//! hand-moved clock.

use std::sync::Arc;
use std::time::Duration;

use supervisor_model::{NewTask, Role, TaskStatus, TaskType};
use supervisor_store::embedded::{EmbeddedOptions, open_db};

use crate::*;

async fn engine() -> (Engine, ManualClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("db.redb"), EmbeddedOptions::default()).expect("store");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let engine = Engine::new(db, EngineConfig::default(), Arc::new(clock.clone()));
    (engine, clock, dir)
}

#[tokio::test]
async fn a_key_works_until_it_expires_or_is_revoked_and_only_with_its_secret() {
    let (engine, clock, _dir) = engine().await;
    engine.create_tenant("team-a", "test").await.unwrap();
    let in_an_hour = engine.now_micros() + 3_600_000_000;
    let made = engine
        .create_key("team-a", Role::Developer, "ci", Some(in_an_hour), "test")
        .await
        .unwrap();
    assert!(made.key.starts_with("svk_") && made.key.contains(&made.info.id));
    let ok = engine.verify_key(&made.key).await.unwrap().unwrap();
    assert_eq!((ok.tenant.as_str(), ok.role), ("team-a", Role::Developer));
    assert_eq!(principal_of(&ok).id, format!("key:{}", made.info.id));

    // A wrong secret, an unknown id, a malformed key: each says which, never the key.
    let mut wrong = made.key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let refusal = engine.verify_key(&wrong).await.unwrap().unwrap_err();
    assert_eq!(refusal, KeyRefusal::WrongSecret(made.info.id.clone()));
    assert!(!refusal.to_string().contains(&wrong[21..]));
    let unknown = format!("svk_ffffffffffffffff_{}", &made.key[21..]);
    assert!(matches!(
        engine.verify_key(&unknown).await.unwrap(),
        Err(KeyRefusal::Unknown(_))
    ));
    assert_eq!(
        engine.verify_key("Bearer nonsense").await.unwrap(),
        Err(KeyRefusal::Malformed)
    );

    clock.advance(Duration::from_secs(3601));
    assert_eq!(
        engine.verify_key(&made.key).await.unwrap(),
        Err(KeyRefusal::Expired(made.info.id.clone()))
    );

    let other = engine
        .create_key("team-a", Role::Viewer, "", None, "test")
        .await
        .unwrap();
    // Another tenant cannot see or revoke it.
    let hidden = engine.revoke_key(&other.info.id, Some("team-b")).await;
    assert!(matches!(hidden, Err(EngineError::KeyNotFound { .. })));
    let revoked = engine
        .revoke_key(&other.info.id, Some("team-a"))
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        engine.verify_key(&other.key).await.unwrap(),
        Err(KeyRefusal::Revoked(other.info.id.clone()))
    );
    // Listing never shows a secret, and records use.
    engine.record_key_use(&made.info.id).await.unwrap();
    let listed = engine.list_keys(Some("team-a")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].last_used_at.is_some());
    assert!(!engine.has_admin_key().await.unwrap());
}

#[tokio::test]
async fn tenants_are_named_plainly_and_keys_need_one() {
    let (engine, _clock, _dir) = engine().await;
    assert!(matches!(
        engine.create_tenant("Team A", "t").await,
        Err(EngineError::InvalidArgument(_))
    ));
    engine.create_tenant("team-a", "t").await.unwrap();
    assert!(matches!(
        engine.create_tenant("team-a", "t").await,
        Err(EngineError::AlreadyExists(_))
    ));
    assert!(matches!(
        engine
            .create_key("nobody", Role::Admin, "", None, "t")
            .await,
        Err(EngineError::FailedPrecondition(_))
    ));
    engine
        .create_key("default", Role::Admin, "root", None, "t")
        .await
        .unwrap();
    assert!(engine.has_admin_key().await.unwrap());
    let names: Vec<String> = engine
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["default", "team-a"]);
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_filters() {
    let (engine, clock, _dir) = engine().await;
    let t0 = engine.now_micros();
    for i in 0..7 {
        engine
            .audit(AuditEntry {
                at: engine.now_micros(),
                principal: if i % 2 == 0 { "key:a" } else { "key:b" }.into(),
                tenant: "default".into(),
                rpc: format!("TaskService/Call{i}"),
                targets: vec![],
                outcome: "ok".into(),
                peer: "127.0.0.1:1".into(),
            })
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let first = engine
        .list_audit(&AuditQuery {
            page_size: 3,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let rpcs: Vec<&str> = first.entries.iter().map(|e| e.rpc.as_str()).collect();
    assert_eq!(
        rpcs,
        [
            "TaskService/Call6",
            "TaskService/Call5",
            "TaskService/Call4"
        ]
    );
    let second = engine
        .list_audit(&AuditQuery {
            page_size: 3,
            page_token: first.next_page_token,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(second.entries[0].rpc, "TaskService/Call3");
    let only_b = engine
        .list_audit(&AuditQuery {
            page_size: 10,
            principal: Some("key:b".into()),
            since: Some(t0 + 2_000_000),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let rpcs: Vec<&str> = only_b.entries.iter().map(|e| e.rpc.as_str()).collect();
    assert_eq!(rpcs, ["TaskService/Call5", "TaskService/Call3"]);
    assert!(only_b.next_page_token.is_none());
}

#[tokio::test]
async fn stats_are_counted_per_tenant() {
    let (engine, _clock, _dir) = engine().await;
    let task = |p: &str| NewTask {
        task_type: Some(TaskType::Testing),
        prompt: p.into(),
        ..NewTask::default()
    };
    for i in 0..3 {
        engine
            .submit("default", task(&format!("d{i}")))
            .await
            .unwrap();
    }
    let a = engine.submit("team-a", task("a0")).await.unwrap().task.id;
    engine.submit("team-a", task("a1")).await.unwrap();
    engine.cancel("team-a", a, "no").await.unwrap();
    let mine = engine.tenant_status_counts("team-a").await.unwrap();
    assert_eq!(
        (
            mine.get(TaskStatus::Queued),
            mine.get(TaskStatus::Cancelled)
        ),
        (1, 1)
    );
    let default = engine.tenant_status_counts("default").await.unwrap();
    assert_eq!(
        (
            default.get(TaskStatus::Queued),
            default.get(TaskStatus::Cancelled)
        ),
        (3, 0)
    );
    let all = engine.status_counts().await.unwrap();
    assert_eq!(all.get(TaskStatus::Queued), 4);
    let nobody = engine.tenant_status_counts("team-b").await.unwrap();
    assert_eq!(nobody.get(TaskStatus::Queued), 0);
}
