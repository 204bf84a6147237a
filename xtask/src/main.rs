//! Repository automation, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! `cargo xtask check` keeps the workspace true to its documentation; it reads files only
//! (no build) and fails when any of four rules is broken:
//!
//! 1. [`layers`]: a crate's `[dependencies]` name only the workspace crates its layer may
//!    use (the table in `layers.rs`, mirrored in `docs/ARCHITECTURE.md`);
//! 2. [`unused`]: every dependency a crate declares is mentioned by its code;
//! 3. [`cycles`]: the top-level modules of a crate's `src/` do not import each other in a
//!    cycle;
//! 4. [`api_docs`]: `docs/api.md` is what `cargo xtask api-docs` generates from the
//!    comments of the protos under `proto/`.
//!
//! Each rule is a pure function over data read here, so its tests need no files.

mod api_docs;
mod cycles;
mod layers;
mod unused;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  check      fail when a crate depends on a workspace crate its layer may not use, declares
             a dependency its code never mentions, or has top-level modules in a cycle, or
             when docs/api.md is out of date
  api-docs   write docs/api.md, the API reference, from the comments in proto/";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["check"] => match check(&workspace_root()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("xtask: {err}");
                ExitCode::FAILURE
            }
        },
        ["api-docs"] => match write_api_docs(&workspace_root()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("xtask: {err}");
                ExitCode::FAILURE
            }
        },
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("xtask: unknown command {args:?}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root directory: the parent of this crate's.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Runs every rule over the workspace at `root` and prints what each found. Returns
/// whether all passed.
fn check(root: &Path) -> Result<bool, Error> {
    let crates = load_workspace(root)?;
    let mut problems = 0;

    let arrows = layers::check(&crates);
    report("layers", &arrows, &mut problems);

    let mut unused_deps = Vec::new();
    for krate in &crates {
        let sources = unused::crate_sources(&krate.dir)?;
        unused_deps.extend(unused::check(krate, &sources));
    }
    report("unused dependencies", &unused_deps, &mut problems);

    let mut module_cycles = Vec::new();
    for krate in &crates {
        let files = cycles::src_files(&krate.dir.join("src"))?;
        for cycle in cycles::find(&cycles::module_graph(&files)) {
            module_cycles.push(format!("{}: {cycle}", krate.name));
        }
    }
    report("module cycles", &module_cycles, &mut problems);
    if problems > 0 {
        println!("see docs/ARCHITECTURE.md (Layers) for the structural rules");
    }

    let generated = api_docs::render(&api_docs::compile(&root.join(api_docs::PROTO_ROOT))?);
    let committed = read_if_exists(&root.join(api_docs::OUTPUT))?;
    let stale = api_docs::drift(committed.as_deref(), &generated);
    report("api docs", stale.as_slice(), &mut problems);

    if problems > 0 {
        println!("xtask check: {problems} problem(s)");
    }
    Ok(problems == 0)
}

/// Writes `docs/api.md` from the protos under `root` (unless it is already what they
/// give), and lists the elements that have no comment.
fn write_api_docs(root: &Path) -> Result<(), Error> {
    let set = api_docs::compile(&root.join(api_docs::PROTO_ROOT))?;
    let page = api_docs::render(&set);
    let path = root.join(api_docs::OUTPUT);
    if read_if_exists(&path)?.is_some_and(|old| old == page) {
        println!("{} is up to date", api_docs::OUTPUT);
    } else {
        std::fs::write(&path, &page).map_err(|e| Error::Write(path.clone(), e))?;
        println!("wrote {} ({} bytes)", api_docs::OUTPUT, page.len());
    }
    let missing = api_docs::undocumented(&api_docs::model(&set));
    let (minor, major): (Vec<_>, Vec<_>) = missing
        .iter()
        .partition(|item| matches!(item.kind, "field" | "value" | "oneof"));
    if !major.is_empty() {
        println!("services, RPCs, messages and enums without a comment in the protos:");
        for item in &major {
            println!("  {item}");
        }
    }
    if !minor.is_empty() {
        println!(
            "{} fields, oneofs and enum values have no comment either",
            minor.len()
        );
    }
    Ok(())
}

/// The file's text, or `None` when it does not exist.
fn read_if_exists(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(path.to_path_buf(), e)),
    }
}

fn report(rule: &str, found: &[impl fmt::Display], problems: &mut usize) {
    if found.is_empty() {
        println!("{rule}: ok");
        return;
    }
    println!("{rule}: {} problem(s)", found.len());
    for problem in found {
        println!("  {problem}");
    }
    *problems += found.len();
}

/// One workspace crate, as its `Cargo.toml` declares it.
#[derive(Debug, Clone)]
pub struct Crate {
    /// The package name (`supervisor-engine`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Every dependency it declares, of every kind.
    pub deps: Vec<Dep>,
}

/// One declared dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// The name the crate's code uses (the key in `Cargo.toml`, `-` for `_`).
    pub key: String,
    /// The package depended on (`package = ...`, or the key).
    pub package: String,
    /// The table that declares it.
    pub kind: DepKind,
}

/// Which table declares a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    /// `[dependencies]`
    Normal,
    /// `[dev-dependencies]`
    Dev,
    /// `[build-dependencies]`
    Build,
}

impl DepKind {
    const ALL: [DepKind; 3] = [DepKind::Normal, DepKind::Dev, DepKind::Build];

    /// The table's name in `Cargo.toml`.
    pub fn table(self) -> &'static str {
        match self {
            DepKind::Normal => "dependencies",
            DepKind::Dev => "dev-dependencies",
            DepKind::Build => "build-dependencies",
        }
    }
}

/// Why the workspace could not be read.
#[derive(Debug)]
pub enum Error {
    /// A file or directory could not be read.
    Io(PathBuf, std::io::Error),
    /// A `Cargo.toml` is not what the xtask understands.
    Manifest(PathBuf, String),
    /// A file could not be written.
    Write(PathBuf, std::io::Error),
    /// The protos do not compile; says which file and why.
    Proto(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(path, err) => write!(f, "could not read {}: {err}", path.display()),
            Error::Manifest(path, why) => write!(f, "{}: {why}", path.display()),
            Error::Write(path, err) => write!(f, "could not write {}: {err}", path.display()),
            Error::Proto(why) => write!(f, "could not compile the protos: {why}"),
        }
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))
}

fn parse_manifest(path: &Path) -> Result<toml::Table, Error> {
    toml::from_str(&read(path)?).map_err(|e| Error::Manifest(path.to_path_buf(), e.to_string()))
}

/// Reads the root manifest's `[workspace] members` (plain paths; globs are refused) and
/// each member's manifest.
fn load_workspace(root: &Path) -> Result<Vec<Crate>, Error> {
    let manifest = root.join("Cargo.toml");
    let table = parse_manifest(&manifest)?;
    let bad = |why: &str| Error::Manifest(manifest.clone(), why.to_string());
    let members = table
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .ok_or_else(|| bad("no [workspace] members list"))?;
    let mut crates = Vec::new();
    for member in members {
        let member = member
            .as_str()
            .ok_or_else(|| bad("a workspace member is not a string"))?;
        if member.contains(['*', '?', '[']) {
            return Err(bad(&format!(
                "workspace member {member:?} is a glob; list crates one by one"
            )));
        }
        crates.push(load_crate(&root.join(member))?);
    }
    Ok(crates)
}

fn load_crate(dir: &Path) -> Result<Crate, Error> {
    let path = dir.join("Cargo.toml");
    let table = parse_manifest(&path)?;
    let name = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| Error::Manifest(path.clone(), "no [package] name".into()))?
        .to_string();
    // The top-level tables, then those of `[target.'cfg(...)'.dependencies]` and the like.
    let mut scopes = vec![&table];
    if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
        scopes.extend(targets.values().filter_map(toml::Value::as_table));
    }
    let mut deps = Vec::new();
    for (scope, kind) in scopes
        .iter()
        .flat_map(|scope| DepKind::ALL.map(|kind| (scope, kind)))
    {
        let Some(entries) = scope.get(kind.table()).and_then(toml::Value::as_table) else {
            continue;
        };
        for (key, spec) in entries {
            let package = spec
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key);
            deps.push(Dep {
                key: key.clone(),
                package: package.to_string(),
                kind,
            });
        }
    }
    Ok(Crate {
        name,
        dir: dir.to_path_buf(),
        deps,
    })
}

/// Every file under `dir` whose name ends in `.ext`, recursively and in a stable order
/// (none when `dir` does not exist).
fn files_with_extension(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    if !dir.is_dir() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    let mut paths = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    paths.sort();
    for path in paths {
        if path.is_dir() {
            files_with_extension(&path, ext, out)?;
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(())
}
