//! Rule 2: every dependency a crate declares is mentioned by its code.
//!
//! A dependency counts as used when its name (with `-` as `_`) appears as a whole
//! identifier in the crate's Rust code: `src/`, `tests/`, `benches/`, `examples/` and
//! `build.rs`, strings included (`#[serde(with = "humantime_serde")]` uses
//! `humantime-serde`), comments excluded (a doc comment that names a crate does not use
//! it). This holds for every table (`[dependencies]`, `[dev-dependencies]`,
//! `[build-dependencies]`).
//!
//! [`IGNORED`] lists the dependencies that are used without being named, each with why.

use std::fmt;
use std::path::Path;

use crate::{Crate, Dep, Error};

/// Dependencies used without their name appearing in the crate's code:
/// `(crate, dependency, why)`.
pub const IGNORED: &[(&str, &str, &str)] = &[(
    "supervisor-proto",
    "tonic-prost",
    "the gRPC code build.rs generates (included from OUT_DIR) calls tonic_prost::ProstCodec",
)];

/// A dependency no code of its crate mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unused {
    /// The crate declaring it.
    pub krate: String,
    /// The dependency.
    pub dep: Dep,
}

impl fmt::Display for Unused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} declares {} in [{}] but its code never mentions {}; remove it (or, if it is \
             used without being named, add it to IGNORED in xtask/src/unused.rs)",
            self.krate,
            self.dep.key,
            self.dep.kind.table(),
            ident(&self.dep.key)
        )
    }
}

/// The dependencies of `krate` that `sources` (its Rust files' contents) never mention.
pub fn check(krate: &Crate, sources: &[String]) -> Vec<Unused> {
    let code: Vec<String> = sources.iter().map(|s| strip_comments(s)).collect();
    krate
        .deps
        .iter()
        .filter(|dep| {
            !IGNORED
                .iter()
                .any(|(c, d, _)| *c == krate.name && *d == dep.key)
        })
        .filter(|dep| !code.iter().any(|text| mentions(text, &ident(&dep.key))))
        .map(|dep| Unused {
            krate: krate.name.clone(),
            dep: dep.clone(),
        })
        .collect()
}

/// The contents of the crate's Rust files that count: under `src/`, `tests/`, `benches/`,
/// `examples/`, and `build.rs`.
pub fn crate_sources(dir: &Path) -> Result<Vec<String>, Error> {
    let mut paths = Vec::new();
    for sub in ["src", "tests", "benches", "examples"] {
        rust_files(&dir.join(sub), &mut paths)?;
    }
    let build = dir.join("build.rs");
    if build.is_file() {
        paths.push(build);
    }
    paths.iter().map(|p| crate::read(p)).collect()
}

/// Every `.rs` file under `dir` (none when it does not exist), in a stable order.
pub fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), Error> {
    crate::files_with_extension(dir, "rs", out)
}

/// The name code uses for a dependency: `-` becomes `_`.
fn ident(key: &str) -> String {
    key.replace('-', "_")
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `name` appears in `text` as a whole identifier (not inside a longer one:
/// `humantime` is not mentioned by `humantime_serde`).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
    })
}

/// `text` without its comments (`//` to the end of the line, nested `/* */`), keeping
/// string and character literals whole, so that a `//` inside a string is not taken for a
/// comment. Lifetimes (`'a`) are told from character literals (`'a'`).
fn strip_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(c) = at(i) {
        let prev_ident = i > 0 && is_ident_char(chars[i - 1]);
        if c == '/' && at(i + 1) == Some('/') {
            while at(i).is_some_and(|c| c != '\n') {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            while let Some(c) = at(i) {
                if c == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if c == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let (false, Some((body, hashes))) = (prev_ident, raw_string_start(&chars, i)) {
            // r"..", r#".."#, br#".."#: up to a quote followed by as many hashes.
            let mut end = chars.len();
            for j in body..chars.len() {
                if chars[j] == '"' && chars[j + 1..].starts_with(&vec!['#'; hashes]) {
                    end = j + 1 + hashes;
                    break;
                }
            }
            out.extend(&chars[i..end]);
            i = end;
        } else if c == '"' {
            let mut j = i + 1;
            while let Some(c) = at(j) {
                j += if c == '\\' { 2 } else { 1 };
                if c == '"' {
                    break;
                }
            }
            let end = j.min(chars.len());
            out.extend(&chars[i..end]);
            i = end;
        } else if c == '\'' && (at(i + 1) == Some('\\') || at(i + 2) == Some('\'')) {
            // A character literal ('x', '\n', '\'', '\u{1F600}'), not a lifetime ('a).
            let mut j = if at(i + 1) == Some('\\') {
                i + 3
            } else {
                i + 2
            };
            while at(j).is_some_and(|c| c != '\'') {
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            out.extend(&chars[i..end]);
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a raw string starts at `i` (`r"`, `r#"`, `br"`, ...): where its text starts and
/// the number of its hashes.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some((j + hashes + 1, hashes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DepKind;

    #[test]
    fn a_dependency_counts_as_used_only_when_code_names_it() {
        // (source, dependency, used?)
        let cases = [
            ("use tokio::sync::Notify;", "tokio", true),
            (
                "fn main() { serde_json::to_string(&1); }",
                "serde-json",
                true,
            ),
            (
                "#[serde(with = \"humantime_serde\")]",
                "humantime-serde",
                true,
            ),
            ("#[tokio::main]\nasync fn main() {}", "tokio", true),
            // A longer identifier is not a mention.
            ("use humantime_serde::re::humantime;", "humantime", true),
            ("#[serde(with = \"humantime_serde\")]", "humantime", false),
            ("let random = 4;", "rand", false),
            ("x.operand()", "rand", false),
            // Comments do not count, whatever their kind.
            (
                "/// Uses [`tracing`] for logs.\nfn f() {}",
                "tracing",
                false,
            ),
            ("//! See `uuid`.", "uuid", false),
            ("fn f() {} // tracing::info!", "tracing", false),
            ("/* outer /* inner */ uuid */ fn f() {}", "uuid", false),
            // A `//` inside a string is not a comment; nor a `'` in a lifetime a char.
            ("let u = \"http://x\"; uuid::Uuid::nil();", "uuid", true),
            (
                "let s = r#\"a \" // b\"#; rand::random::<u8>();",
                "rand",
                true,
            ),
            (
                "fn f<'a>(x: &'a str) {} rand::random::<u8>();",
                "rand",
                true,
            ),
            ("let c = '\"'; rand::random::<u8>();", "rand", true),
            (
                "let c = '\\''; let s = \"//\"; rand::random::<u8>();",
                "rand",
                true,
            ),
            ("let c = '/'; let d = '/'; uuid::Uuid::nil();", "uuid", true),
            ("let s = \"a \\\" // b\"; uuid::Uuid::nil();", "uuid", true),
        ];
        for (source, dep, used) in cases {
            let krate = Crate {
                name: "c".into(),
                dir: Default::default(),
                deps: vec![Dep {
                    key: dep.into(),
                    package: dep.into(),
                    kind: DepKind::Normal,
                }],
            };
            let unused = check(&krate, &[source.to_string()]);
            assert_eq!(unused.is_empty(), used, "{dep} in {source:?}");
        }
    }

    #[test]
    fn ignored_dependencies_are_not_reported_and_reports_name_the_table() {
        let krate = Crate {
            name: "supervisor-proto".into(),
            dir: Default::default(),
            deps: ["tonic-prost", "prost"]
                .map(|key| Dep {
                    key: key.into(),
                    package: key.into(),
                    kind: DepKind::Build,
                })
                .to_vec(),
        };
        let unused = check(&krate, &[]);
        assert_eq!(unused.len(), 1);
        assert_eq!(unused[0].dep.key, "prost");
        assert!(
            unused[0]
                .to_string()
                .starts_with("supervisor-proto declares prost in [build-dependencies]"),
            "{}",
            unused[0]
        );
    }
}
