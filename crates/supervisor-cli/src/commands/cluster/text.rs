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

/// The node table of `cluster status`. A node that left holds no leases and keeps no
/// link, so both read `-` (the JSON keeps what the server sent).
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
        let left = n.state == "left";
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
            if left {
                "-".to_owned()
            } else {
                format!("{}/{}", n.leases_held, n.max_in_flight)
            },
            n.address.clone(),
            n.providers.join(","),
            if left {
                "-".to_owned()
            } else {
                or_dash(&n.link)
            },
            n.note.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: &str) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            state: state.into(),
            epoch: 2,
            liveness: NodeLiveness::Alive as i32,
            leases_held: 3,
            max_in_flight: 64,
            address: "10.0.0.1:50051".into(),
            providers: vec!["mock".into()],
            link: "down".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_that_left_shows_no_leases_and_no_link() {
        let text = nodes_table(&[node("w1", "active"), node("w2", "left")]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NODE  STATE   EPOCH  LIVENESS  SILENT  LEASES  ADDRESS         PROVIDERS  LINK  NOTE",
                "w1    active  2      alive     -       3/64    10.0.0.1:50051  mock       down",
                "w2    left    2      alive     -       -       10.0.0.1:50051  mock       -",
            ]
        );
    }

    #[test]
    fn hostile_notes_stay_on_their_row() {
        let mut n = node("w1", "fenced");
        n.note = "fenced\n\x1b[31mred".into();
        let text = nodes_table(&[n]);
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(text.contains("fenced\\n\\e[31mred"), "{text:?}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }
}
