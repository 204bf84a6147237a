//! Rule 4 and `cargo xtask api-docs`: the API reference `docs/api.md`, generated from the
//! comments of the `.proto` files under `proto/`.
//!
//! The protos are the contract and their comments its documentation. This module turns
//! them into one Markdown page a person reads on GitHub: each service with its RPCs
//! (request and response, streaming marked), each message with a table of its fields and
//! its oneofs, each enum with its values, every type a link to its section. The page is
//! committed, and `cargo xtask check` fails when it differs from what [`render`] makes of
//! the protos now ([`drift`]), so it cannot fall behind them.
//!
//! [`compile`] is the only part that reads files (with `protox`, keeping the comments);
//! the rest are pure functions over data: [`model`] reads what the page says out of the
//! descriptors (and [`undocumented`] what has no comment), [`render`] writes it as
//! Markdown, [`drift`] compares it with the committed page.

mod markdown;
mod model;

use std::path::Path;

use prost_types::FileDescriptorSet;
use protox::Compiler;

use crate::Error;

pub use markdown::render;
pub use model::{model, undocumented};

/// The generated page, relative to the workspace root.
pub const OUTPUT: &str = "docs/api.md";

/// The directory holding the protos, relative to the workspace root; also the include
/// root their imports are resolved from.
pub const PROTO_ROOT: &str = "proto";

/// The command that regenerates the page, as problems name it.
pub const REGENERATE: &str = "cargo xtask api-docs";

/// Compiles every `.proto` file under `proto_root` (imports resolved from it and from
/// protobuf's well-known types), keeping the comments. The set holds the files found, by
/// name, not their imports.
///
/// Fails when a file cannot be read or does not compile, naming it.
pub fn compile(proto_root: &Path) -> Result<FileDescriptorSet, Error> {
    let mut paths = Vec::new();
    crate::files_with_extension(proto_root, "proto", &mut paths)?;
    if paths.is_empty() {
        return Err(Error::Proto(format!(
            "no .proto file under {}",
            proto_root.display()
        )));
    }
    let mut compiler = Compiler::new([proto_root]).map_err(proto_error)?;
    descriptor_set(&mut compiler, &paths).map_err(proto_error)
}

/// The files `compiler` compiles from `paths` (names or paths under an include root),
/// with their comments, sorted by name.
pub fn descriptor_set(
    compiler: &mut Compiler,
    paths: &[impl AsRef<Path>],
) -> Result<FileDescriptorSet, protox::Error> {
    compiler
        .include_source_info(true)
        .include_imports(false)
        .open_files(paths)?;
    let mut set = compiler.file_descriptor_set();
    set.file.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(set)
}

fn proto_error(err: protox::Error) -> Error {
    let file = err.file().map(|f| format!("{f}: ")).unwrap_or_default();
    Error::Proto(format!(
        "{file}{err} (`cargo build -p supervisor-proto` shows where)"
    ))
}

/// Why the committed page (`None`: there is none) is not what the generator writes, or
/// `None` when it is. Line endings do not count (a checkout may turn them into CRLF).
pub fn drift(committed: Option<&str>, generated: &str) -> Option<String> {
    let Some(committed) = committed else {
        return Some(format!(
            "{OUTPUT} is out of date: run {REGENERATE} (the file does not exist)"
        ));
    };
    let committed = committed.replace("\r\n", "\n");
    if committed == generated {
        return None;
    }
    let mut old = committed.lines();
    let mut new = generated.lines();
    let mut line = 1;
    while old.next() == new.next() {
        line += 1;
    }
    Some(format!(
        "{OUTPUT} is out of date: run {REGENERATE} (line {line} differs from what the \
         comments in {PROTO_ROOT}/ give)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_protos::{DEMO, compile_sources, demo};

    #[test]
    fn a_page_matching_the_protos_passes_the_drift_check() {
        let page = render(&demo());
        assert_eq!(drift(Some(&page), &page), None);
        let crlf = page.replace('\n', "\r\n");
        assert_eq!(drift(Some(&crlf), &page), None, "line endings do not count");
    }

    #[test]
    fn a_changed_comment_fails_the_drift_check_naming_the_fix() {
        let committed = render(&demo());
        let edited = DEMO.replace("// Makes a thing.", "// Makes a thing, durably.");
        let generated = render(&compile_sources(&[("demo/v1/demo.proto", &edited)]));
        let problem = drift(Some(&committed), &generated).expect("the page is stale");
        assert!(
            problem.starts_with("docs/api.md is out of date: run cargo xtask api-docs"),
            "{problem}"
        );
        let line = generated
            .lines()
            .position(|l| l.contains("durably"))
            .expect("the new comment is on the page")
            + 1;
        assert!(
            problem.contains(&format!("line {line} differs")),
            "{problem}"
        );

        let missing = drift(None, &generated).expect("no page at all");
        assert!(missing.contains("run cargo xtask api-docs"), "{missing}");
    }
}

/// Protos compiled in memory, for the tests of every part.
#[cfg(test)]
pub(crate) mod test_protos {
    use prost_types::FileDescriptorSet;
    use protox::Compiler;
    use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

    /// Protos held in memory: (name, source).
    struct Sources(Vec<(String, String)>);

    impl FileResolver for Sources {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            match self.0.iter().find(|(n, _)| n == name) {
                Some((name, source)) => File::from_source(name, source),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }

    /// Compiles `sources` (name, source) in memory, imports of well-known types resolved.
    pub fn compile_sources(sources: &[(&str, &str)]) -> FileDescriptorSet {
        let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
        let owned = sources
            .iter()
            .map(|(name, source)| (name.to_string(), source.to_string()))
            .collect();
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(owned));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = Compiler::with_file_resolver(resolver);
        super::descriptor_set(&mut compiler, &names).expect("the test protos compile")
    }

    pub const DEMO: &str = r#"syntax = "proto3";

// The demo API: things and their kinds.
package demo.v1;

import "google/protobuf/timestamp.proto";

// Makes and follows things.
service ThingService {
  // Makes a thing.
  rpc MakeThing(MakeThingRequest) returns (Thing);
  rpc WatchThings(MakeThingRequest) returns (stream Thing);
}

// What a thing is.
enum Kind {
  KIND_UNSPECIFIED = 0;
  // A big one.
  KIND_BIG = 1;
}

// Asks for a thing.
message MakeThingRequest {
  // Its name: 1 to 64 bytes of
  // a-z; see `name | id`.
  string name = 1;
  Kind kind = 2; // Unspecified means small.
  map<string, Thing> parts = 3;
  repeated string tags = 4;
  optional uint32 size = 5;
  oneof origin {
    // Made by hand.
    string hand = 6;
    google.protobuf.Timestamp at = 7;
  }
}

message Thing {
  // The key: "svk_<id>_<secret>".
  string id = 1;
  Inner inner = 2;

  // Nested.
  message Inner {
    bool ok = 1 [deprecated = true];
  }
}
"#;

    /// `DEMO` compiled.
    pub fn demo() -> FileDescriptorSet {
        compile_sources(&[("demo/v1/demo.proto", DEMO)])
    }
}
