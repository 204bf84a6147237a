//! Rule 1: the layering of the workspace's crates.
//!
//! Every workspace crate has a row in [`LAYERS`] saying which other workspace crates its
//! `[dependencies]` may name (dev-dependencies are free: tests may drive a crate from
//! above). A crate missing from the table fails too, so a new crate gets its place
//! decided. The table is mirrored in `docs/ARCHITECTURE.md` (Layers); change both
//! together.

use std::fmt;

use crate::{Crate, DepKind};

/// What a crate may depend on among the workspace's crates.
#[derive(Debug, Clone, Copy)]
pub enum Allowed {
    /// Only these crates.
    Only(&'static [&'static str]),
    /// Any workspace crate: binaries at the edge that drive the whole system.
    Anything,
}

/// The allowed arrows, by package name.
pub const LAYERS: &[(&str, Allowed)] = &[
    ("supervisor-model", Allowed::Only(&[])),
    // Recording spans and metrics is everybody's; setting them up is the server's.
    ("supervisor-telemetry", Allowed::Only(&[])),
    ("supervisor-store", Allowed::Only(&["supervisor-telemetry"])),
    ("supervisor-workflow", Allowed::Only(&["supervisor-model"])),
    (
        "supervisor-engine",
        Allowed::Only(&[
            "supervisor-model",
            "supervisor-store",
            "supervisor-workflow",
            "supervisor-telemetry",
        ]),
    ),
    (
        "supervisor-providers",
        // The proto crate for the plugin contract (supervisor.plugin.v1).
        Allowed::Only(&[
            "supervisor-model",
            "supervisor-telemetry",
            "supervisor-proto",
        ]),
    ),
    ("supervisor-proto", Allowed::Only(&["supervisor-model"])),
    (
        "supervisor-node",
        Allowed::Only(&[
            "supervisor-model",
            "supervisor-store",
            "supervisor-engine",
            "supervisor-providers",
            "supervisor-telemetry",
        ]),
    ),
    (
        "supervisor-server",
        Allowed::Only(&[
            "supervisor-model",
            "supervisor-store",
            "supervisor-engine",
            "supervisor-providers",
            "supervisor-node",
            "supervisor-proto",
            "supervisor-workflow",
            "supervisor-telemetry",
        ]),
    ),
    (
        "supervisor-client",
        Allowed::Only(&[
            "supervisor-proto",
            "supervisor-model",
            "supervisor-workflow",
        ]),
    ),
    (
        "supervisor-cli",
        Allowed::Only(&[
            "supervisor-client",
            "supervisor-proto",
            "supervisor-model",
            "supervisor-server",
        ]),
    ),
    ("supervisor-bench", Allowed::Anything),
    ("supervisor-chaos", Allowed::Anything),
    ("xtask", Allowed::Anything),
];

/// A broken layering rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `from` depends on workspace crate `to`, which its row does not allow.
    Arrow {
        /// The depending crate.
        from: String,
        /// The crate depended on.
        to: String,
        /// What `from` may depend on.
        allowed: &'static [&'static str],
    },
    /// The crate has no row in [`LAYERS`].
    Unlisted(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Arrow { from, to, allowed } => {
                let allowed = if allowed.is_empty() {
                    "no workspace crate".to_string()
                } else {
                    allowed.join(", ")
                };
                write!(
                    f,
                    "{from} depends on {to}, which its layer may not use (allowed: {allowed})"
                )
            }
            Violation::Unlisted(name) => write!(
                f,
                "{name} has no row in the layer table (xtask/src/layers.rs); add one, and \
                 to docs/ARCHITECTURE.md"
            ),
        }
    }
}

/// Checks the `[dependencies]` of `crates` on one another against [`LAYERS`].
pub fn check(crates: &[Crate]) -> Vec<Violation> {
    check_with(crates, LAYERS)
}

fn check_with(crates: &[Crate], layers: &[(&str, Allowed)]) -> Vec<Violation> {
    let is_member = |name: &str| crates.iter().any(|c| c.name == name);
    let mut found = Vec::new();
    for krate in crates {
        let Some((_, allowed)) = layers.iter().find(|(name, _)| *name == krate.name) else {
            found.push(Violation::Unlisted(krate.name.clone()));
            continue;
        };
        let Allowed::Only(allowed) = *allowed else {
            continue;
        };
        for dep in &krate.deps {
            if dep.kind == DepKind::Normal
                && is_member(&dep.package)
                && !allowed.contains(&dep.package.as_str())
            {
                found.push(Violation::Arrow {
                    from: krate.name.clone(),
                    to: dep.package.clone(),
                    allowed,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dep;

    fn krate(name: &str, deps: &[(&str, DepKind)]) -> Crate {
        Crate {
            name: name.into(),
            dir: Default::default(),
            deps: deps
                .iter()
                .map(|(dep, kind)| Dep {
                    key: dep.to_string(),
                    package: dep.to_string(),
                    kind: *kind,
                })
                .collect(),
        }
    }

    const TABLE: &[(&str, Allowed)] = &[
        ("low", Allowed::Only(&[])),
        ("mid", Allowed::Only(&["low"])),
        ("top", Allowed::Only(&["mid", "low"])),
        ("edge", Allowed::Anything),
    ];

    /// A crate, its dependencies, and the arrows refused.
    type ArrowCase<'a> = (&'a str, &'a [(&'a str, DepKind)], &'a [&'a str]);

    #[test]
    fn arrows_are_checked_against_the_table() {
        use DepKind::*;
        let cases: &[ArrowCase] = &[
            ("mid", &[("low", Normal), ("serde", Normal)], &[]),
            ("low", &[("mid", Normal)], &["mid"]),
            (
                "mid",
                &[("top", Normal), ("edge", Normal)],
                &["top", "edge"],
            ),
            // Tests and build scripts may use anything.
            ("low", &[("top", Dev), ("mid", Build)], &[]),
            ("edge", &[("top", Normal), ("low", Normal)], &[]),
        ];
        for (name, deps, refused) in cases {
            let mut crates = vec![krate(name, deps)];
            for other in ["low", "mid", "top", "edge"] {
                if other != *name {
                    crates.push(krate(other, &[]));
                }
            }
            let found: Vec<String> = check_with(&crates, TABLE)
                .into_iter()
                .map(|v| match v {
                    Violation::Arrow { to, .. } => to,
                    other => panic!("{other}"),
                })
                .collect();
            assert_eq!(found, *refused, "{name} -> {deps:?}");
        }
    }

    #[test]
    fn a_crate_without_a_row_fails_and_messages_name_the_fix() {
        let crates = [krate("new", &[]), krate("low", &[("mid", DepKind::Normal)])];
        let crates = [&crates[..], &[krate("mid", &[])]].concat();
        let found = check_with(&crates, TABLE);
        assert_eq!(found[0], Violation::Unlisted("new".into()));
        assert!(found[0].to_string().contains("docs/ARCHITECTURE.md"));
        assert_eq!(
            found[1].to_string(),
            "low depends on mid, which its layer may not use (allowed: no workspace crate)"
        );
    }

    #[test]
    fn the_table_names_each_crate_once_and_only_listed_crates() {
        for (i, (name, allowed)) in LAYERS.iter().enumerate() {
            assert!(
                LAYERS[i + 1..].iter().all(|(other, _)| other != name),
                "{name} twice"
            );
            if let Allowed::Only(allowed) = allowed {
                for dep in *allowed {
                    assert!(LAYERS.iter().any(|(n, _)| n == dep), "{name} -> {dep}");
                    assert_ne!(dep, name, "{name} allows itself");
                }
            }
        }
    }
}
