//! Rule 3: the top-level modules of a crate's `src/` do not import each other in a cycle.
//!
//! The rule is textual, so it needs no compiler: module `a` (`src/a.rs` or `src/a/…`)
//! depends on module `b` when a file of `a` mentions `crate::b`, or when a top-level file
//! `src/a.rs` mentions `super::b`. Doc links count (a lower module's docs should not point
//! up either). The crate root (`lib.rs`, `main.rs`) is left out, and so is test code:
//! files under a `tests` directory, `tests.rs` and `*_tests.rs`, and everything from a
//! `#[cfg(test)] mod tests {` to the end of its file. A cycle is reported as the set of
//! modules that reach one another (a strongly connected component), with one path
//! through them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Component, Path};

use crate::Error;

/// Module name → the other modules of the same crate it mentions.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The Rust files under `src`, as (path relative to `src` with `/` separators, contents).
pub fn src_files(src: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut paths = Vec::new();
    crate::unused::rust_files(src, &mut paths)?;
    paths
        .iter()
        .map(|path| {
            let rel = path.strip_prefix(src).unwrap_or(path);
            let rel: Vec<String> = rel
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            Ok((rel.join("/"), crate::read(path)?))
        })
        .collect()
}

/// The graph of top-level modules from `files` (paths relative to `src/`).
pub fn module_graph(files: &[(String, String)]) -> Graph {
    let mut graph = Graph::new();
    for (rel, text) in files {
        let parts: Vec<&str> = rel.split('/').collect();
        let file = parts.last().copied().unwrap_or_default();
        if parts.contains(&"tests") || file == "tests.rs" || file.ends_with("_tests.rs") {
            continue;
        }
        let top = parts[0].strip_suffix(".rs").unwrap_or(parts[0]);
        if top == "lib" || top == "main" {
            continue;
        }
        let text = without_test_module(text);
        let mut mentioned = paths_after(text, "crate::");
        if parts.len() == 1 {
            mentioned.extend(paths_after(text, "super::"));
        }
        mentioned.remove(top);
        graph.entry(top.to_string()).or_default().extend(mentioned);
    }
    // Only mentions of modules that exist are edges (`crate::Error` is not a module).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// `text` up to its first `#[cfg(test)] mod tests {` (whitespace allowed between).
fn without_test_module(text: &str) -> &str {
    for (at, _) in text.match_indices("#[cfg(test)]") {
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let Some(rest) = rest.strip_prefix("mod") else {
            continue;
        };
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let Some(rest) = rest.trim_start().strip_prefix("tests") else {
            continue;
        };
        if rest.trim_start().starts_with('{') {
            return &text[..at];
        }
    }
    text
}

/// The lowercase names following `prefix` where `prefix` starts a path (`crate::x`, not
/// `mycrate::x`).
fn paths_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .filter_map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let first = name.chars().next()?;
            (first.is_ascii_lowercase() || first == '_').then_some(name)
        })
        .collect()
}

/// Modules that reach one another, with one path that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The modules, sorted.
    pub members: Vec<String>,
    /// A closed path through some of them, starting and ending at the first member.
    pub path: Vec<String>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cycle among {} (for example {})",
            self.members.join(", "),
            self.path.join(" -> ")
        )
    }
}

/// The cycles of `graph`: its strongly connected components of more than one module.
pub fn find(graph: &Graph) -> Vec<Cycle> {
    let mut cycles = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        let from = reachable(graph, start, false);
        let to = reachable(graph, start, true);
        let members: Vec<String> = from.intersection(&to).cloned().collect();
        seen.extend(members.iter().cloned());
        if members.len() > 1 {
            let path = closed_path(graph, &members);
            cycles.push(Cycle { members, path });
        }
    }
    cycles
}

/// The modules reachable from `start` (including it), along edges or against them.
fn reachable(graph: &Graph, start: &str, reverse: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::from([start.to_string()]);
    let mut queue = VecDeque::from([start.to_string()]);
    while let Some(node) = queue.pop_front() {
        let next: Vec<&String> = if reverse {
            graph
                .iter()
                .filter(|(_, deps)| deps.contains(&node))
                .map(|(m, _)| m)
                .collect()
        } else {
            graph.get(&node).into_iter().flatten().collect()
        };
        for n in next {
            if found.insert(n.clone()) {
                queue.push_back(n.clone());
            }
        }
    }
    found
}

/// The shortest path from the first of `members` back to it, inside `members`.
fn closed_path(graph: &Graph, members: &[String]) -> Vec<String> {
    let start = &members[0];
    let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flatten() {
            if !members.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![start.clone()];
                let mut at = node;
                while at != start {
                    path.push(at.clone());
                    at = parent[at];
                }
                path.push(start.clone());
                path.reverse();
                return path;
            }
            if !parent.contains_key(next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    vec![start.clone()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        module_graph(&files)
    }

    fn edges(g: &Graph) -> Vec<String> {
        g.iter()
            .flat_map(|(m, deps)| deps.iter().map(move |d| format!("{m}->{d}")))
            .collect()
    }

    /// Files of a crate's `src/` (path, contents), and the edges expected.
    type GraphCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

    #[test]
    fn what_counts_as_a_dependency() {
        let cases: &[GraphCase] = &[
            (&[("a.rs", "use crate::b::X;"), ("b.rs", "")], &["a->b"]),
            // A file below a module belongs to it; doc links count.
            (
                &[
                    ("a/mod.rs", ""),
                    ("a/x.rs", "/// See [`crate::b`]."),
                    ("b.rs", ""),
                ],
                &["a->b"],
            ),
            // super:: counts from a top-level file only (elsewhere it stays inside).
            (
                &[
                    ("a.rs", "use super::b;"),
                    ("b/mod.rs", ""),
                    ("b/c.rs", "use super::a;"),
                ],
                &["a->b"],
            ),
            // The root, test files and test modules are left out; so are names that are
            // not modules, mentions of a module by itself, and longer paths.
            (
                &[
                    ("lib.rs", "use crate::a; use crate::b;"),
                    (
                        "a.rs",
                        "use crate::Error; use crate::a::x; mycrate::b::y();",
                    ),
                    (
                        "b.rs",
                        "fn f() {}\n#[cfg(test)]\nmod tests {\n use crate::a;\n}",
                    ),
                    ("b_tests.rs", "use crate::a;"),
                    ("tests.rs", "use crate::a;"),
                    ("tests/x.rs", "use crate::a;"),
                ],
                &[],
            ),
            // Only a `mod tests` block is cut, not any #[cfg(test)] item.
            (
                &[
                    ("a.rs", "#[cfg(test)]\nfn helper() {}\nuse crate::b;"),
                    ("b.rs", ""),
                ],
                &["a->b"],
            ),
        ];
        for (files, expected) in cases {
            assert_eq!(edges(&graph(files)), *expected, "{files:?}");
        }
    }

    #[test]
    fn cycles_are_found_with_a_path_through_them() {
        // (edges as "from:to,to", the cycles expected as "members / path")
        let cases: &[(&[&str], &[&str])] = &[
            (&["a:b", "b:c", "c:"], &[]),
            (&["a:b", "b:a"], &["a,b / a->b->a"]),
            (
                &[
                    "definition:validate",
                    "template:definition",
                    "validate:definition,template",
                ],
                &["definition,template,validate / definition->validate->definition"],
            ),
            (
                &["a:b", "b:c", "c:a", "x:y", "y:x", "z:a"],
                &["a,b,c / a->b->c->a", "x,y / x->y->x"],
            ),
        ];
        for (spec, expected) in cases {
            let mut g = Graph::new();
            for line in *spec {
                let (from, to) = line.split_once(':').unwrap_or((line, ""));
                let deps = to.split(',').filter(|s| !s.is_empty()).map(String::from);
                g.entry(from.to_string()).or_default().extend(deps);
            }
            let found: Vec<String> = find(&g)
                .iter()
                .map(|c| format!("{} / {}", c.members.join(","), c.path.join("->")))
                .collect();
            assert_eq!(found, *expected, "{spec:?}");
        }
        let cycle = &find(&graph(&[
            ("a.rs", "use crate::b;"),
            ("b.rs", "use crate::a;"),
        ]))[0];
        assert_eq!(
            cycle.to_string(),
            "cycle among a, b (for example a -> b -> a)"
        );
    }
}
