//! Embeds the web console (`console/dist`, built by `scripts/build-console` and committed)
//! into the binary: one `(path, bytes)` entry per file. Without `console/dist` the table
//! is empty and the node says how to build it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let dist = manifest.join("../../console/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut found = Vec::new();
    files(&dist, &mut found);
    found.sort();
    let mut table = String::from(
        "/// The console's files by URL path.\npub(crate) static FILES: &[(&str, &[u8])] = &[\n",
    );
    for path in &found {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path.strip_prefix(&dist).expect("walked under dist");
        let url: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let abs = path.canonicalize().expect("a file just listed");
        writeln!(
            table,
            "    ({:?}, include_bytes!({:?})),",
            format!("/{}", url.join("/")),
            abs
        )
        .expect("writing to a String");
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("console_files.rs");
    std::fs::write(out, table).expect("writing console_files.rs to OUT_DIR");
}
