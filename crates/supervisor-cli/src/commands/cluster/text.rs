//! Nodes as text: the table of `cluster status`.

use std::time::Duration;

use supervisor_proto::v1::{NodeLiveness, NodeStatus};

use crate::commands::output::{Table, elapsed, or_dash};

pub fn liveness_name(value: i32) -> &'static str {
    match NodeLiveness::try_from(value) {
        Ok(NodeLiveness::Alive) => "alive",
        Ok(NodeLiveness::Suspect) => "suspect",
        Ok(NodeLiveness::Self_) => "self",
        _ => "-",
    }
}

/// The node table of `cluster status`.
pub fn nodes_table(nodes: &[NodeStatus]) -> String {
    let mut table = Table::new(&[
        "NODE",
        "STATE",
        "EPOCH",
        "LIVENESS",
        "SILENT",
        "LEASES",
        "ADDRESS",
        "PROVIDERS",
        "LINK",
        "NOTE",
    ]);
    for n in nodes {
        let mut state = n.state.clone();
        if n.drain_requested && n.state == "active" {
            state.push_str(" (drain requested)");
        }
        table.row(vec![
            n.id.clone(),
            state,
            n.epoch.to_string(),
            liveness_name(n.liveness).into(),
            if n.silent_for_ms == 0 {
                "-".into()
            } else {
                elapsed(Duration::from_millis(n.silent_for_ms))
            },
            format!("{}/{}", n.leases_held, n.max_in_flight),
            n.address.clone(),
            n.providers.join(","),
            or_dash(&n.link),
            n.note.clone(),
        ]);
    }
    table.render()
}
