//! A revoked key stops working on every node of a 3-node cluster (sharing a throwaway
//! PostgreSQL) once the nodes' key cache has lapsed: at most a second, however recently
//! each node checked and trusted the key.

mod common;

use std::time::Duration;

use common::{PgCluster, as_token};
use supervisor_client::v1;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_on_every_node_within_a_second() {
    let cluster = PgCluster::start(3, &[("SUPERVISOR_AUTH__ENABLED", "true")]).await;
    let (dirs, nodes) = (&cluster.dirs, &cluster.nodes);
    // The first node made the cluster's first admin key; the others found one.
    let admin_key = std::fs::read_to_string(dirs[0].path().join("admin.key")).expect("admin.key");
    assert!(!dirs[1].path().join("admin.key").exists());
    let admin = as_token(&nodes[0], admin_key.trim()).await;
    admin.create_tenant("team-a").await.unwrap();
    let made = admin
        .create_key(v1::CreateKeyRequest {
            tenant: "team-a".into(),
            role: "developer".into(),
            name: "ci".into(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap();
    // Every node checks the key and trusts it.
    let mut clients = Vec::new();
    for node in nodes {
        let client = as_token(node, &made.key).await;
        client.stats().await.expect("the key works on every node");
        clients.push(client);
    }
    let revoked_via = as_token(&nodes[1], admin_key.trim()).await;
    revoked_via
        .revoke_key(&made.info.expect("info").id)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (i, client) in clients.iter().enumerate() {
        let err = client.stats().await.expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "node n{}: {err}", i + 1);
        assert!(err.message().contains("revoked"), "node n{}: {err}", i + 1);
    }
}
