//! The web console's files, built into the binary from `console/dist` (see `build.rs`);
//! the node's HTTP side serves them.

include!(concat!(env!("OUT_DIR"), "/console_files.rs"));

/// One file of the console.
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Its bytes.
    pub content: &'static [u8],
    /// Its media type, from its extension.
    pub content_type: &'static str,
    /// Whether its name carries a hash of its content (Vite's `assets/`), so browsers
    /// may keep it for good.
    pub immutable: bool,
}

/// The file at URL `path` (`/` is `/index.html`).
pub fn file(path: &str) -> Option<File> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(p, content)| File {
            content,
            content_type: content_type(p),
            immutable: p.starts_with("/assets/"),
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_known_type_and_the_page_is_there() {
        assert!(
            !FILES.is_empty(),
            "console/dist is missing: run scripts/build-console"
        );
        assert!(file("/").is_some(), "console/dist has no index.html");
        for (path, _) in FILES {
            assert_ne!(content_type(path), "application/octet-stream", "{path}");
        }
    }
}
