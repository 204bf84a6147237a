//! Reading workflow definitions from files, for [`Client::validate_workflow`],
//! [`Client::submit_workflow`] and [`Client::create_schedule`].
//!
//! The server parses and checks the text; the client only picks YAML or JSON from the
//! file's extension, so that the server's errors (with line and column) are about the
//! text the user wrote. It reads one part itself: the `schedule:` block
//! ([`schedule_block`]), so a command can say when its flags override it.
//!
//! [`Client::validate_workflow`]: crate::Client::validate_workflow
//! [`Client::submit_workflow`]: crate::Client::submit_workflow
//! [`Client::create_schedule`]: crate::Client::create_schedule

use std::{
    fmt, io,
    io::Read as _,
    path::{Path, PathBuf},
};

use supervisor_proto::v1::{WorkflowSource, workflow_source::Source};

/// The path that stands for standard input.
const STDIN: &str = "-";

/// The language of a workflow definition's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// YAML (`.yaml`, `.yml`, and standard input).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl SourceFormat {
    /// The format of a definition file, from its extension (case-insensitive):
    /// `.yaml` and `.yml` are YAML, `.json` is JSON, and `-` (standard input) is YAML.
    pub fn from_path(path: &Path) -> Result<Self, SourceError> {
        if path.as_os_str() == STDIN {
            return Ok(Self::Yaml);
        }
        let extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("yaml" | "yml") => Ok(Self::Yaml),
            Some("json") => Ok(Self::Json),
            _ => Err(SourceError::UnknownExtension {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The format's name (`"yaml"`, `"json"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yaml => "yaml",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a workflow definition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file's extension says neither YAML nor JSON.
    #[error(
        "cannot tell the format of the workflow file {}: expected a .yaml, .yml or .json \
         file (or - for YAML on standard input)",
        path.display()
    )]
    UnknownExtension {
        /// The file as given.
        path: PathBuf,
    },
    /// The file (or standard input) could not be read, or is not UTF-8. The I/O error
    /// is the [`source`](std::error::Error::source).
    #[error("could not read {}", origin(path))]
    Read {
        /// The file as given (`-`: standard input).
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("{} is empty", origin(path))]
    Empty {
        /// The file as given (`-`: standard input).
        path: PathBuf,
    },
}

impl SourceError {
    /// The file as given (`-` for standard input).
    pub fn path(&self) -> &Path {
        match self {
            Self::UnknownExtension { path } | Self::Read { path, .. } | Self::Empty { path } => {
                path
            }
        }
    }
}

/// Where a definition comes from, in messages: `the workflow file flow.yaml`, or
/// `the workflow on standard input` for `-`.
fn origin(path: &Path) -> String {
    if path.as_os_str() == STDIN {
        "the workflow on standard input".to_owned()
    } else {
        format!("the workflow file {}", path.display())
    }
}

/// A workflow source holding `text` in `format`, for the server to parse.
pub fn workflow_source(text: String, format: SourceFormat) -> WorkflowSource {
    let source = match format {
        SourceFormat::Yaml => Source::Yaml(text),
        SourceFormat::Json => Source::Json(text),
    };
    WorkflowSource {
        source: Some(source),
    }
}

/// Reads a workflow definition file into a [`WorkflowSource`]: YAML for `.yaml` and
/// `.yml`, JSON for `.json` (see [`SourceFormat::from_path`]); `-` reads YAML from
/// standard input.
///
/// Fails, naming the file, on another extension, on a file that cannot be read or is
/// not UTF-8, and on an empty file. The definition itself is checked by the server.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use supervisor_client::{Client, read_workflow_source};
///
/// let client = Client::connect("127.0.0.1:50051").await?;
/// let source = read_workflow_source("examples/fix-and-review.yaml".as_ref())?;
/// let run = client.submit_workflow(source, Default::default()).await?;
/// println!("started run {}", run.id);
/// # Ok(())
/// # }
/// ```
pub fn read_workflow_source(path: &Path) -> Result<WorkflowSource, SourceError> {
    let format = SourceFormat::from_path(path)?;
    let read_error = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = if path.as_os_str() == STDIN {
        let mut text = String::new();
        io::stdin()
            .lock()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(read_error)?
    };
    if text.trim().is_empty() {
        return Err(SourceError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(workflow_source(text, format))
}

/// The `schedule:` block of a workflow definition, as `CreateSchedule` reads it when the
/// request leaves its fields empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleBlock {
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone (`UTC` when the block names none).
    pub timezone: String,
    /// The missed-tick policy as the API names it (`skip`, `catch_up_one`).
    pub missed: &'static str,
}

/// The `schedule:` block of the definition in `source`, if it has one. `None` too when
/// the definition does not parse: the server says why when it is sent.
pub fn schedule_block(source: &WorkflowSource) -> Option<ScheduleBlock> {
    use supervisor_workflow::{Missed, WorkflowDef};
    let def = match source.source.as_ref()? {
        Source::Yaml(text) => WorkflowDef::from_yaml(text).ok()?,
        Source::Json(text) => WorkflowDef::from_json(text).ok()?,
        Source::Definition(_) => return None,
    };
    let block = def.schedule?;
    Some(ScheduleBlock {
        cron: block.cron,
        timezone: block.timezone,
        missed: match block.missed {
            Missed::Skip => "skip",
            Missed::CatchUpOne => "catch_up_one",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("supervisor-client-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn formats_follow_the_extension() {
        let format = |path: &str| SourceFormat::from_path(Path::new(path));
        assert_eq!(format("flow.yaml").ok(), Some(SourceFormat::Yaml));
        assert_eq!(format("dir.v2/flow.YML").ok(), Some(SourceFormat::Yaml));
        assert_eq!(format("flow.Json").ok(), Some(SourceFormat::Json));
        assert_eq!(format("-").ok(), Some(SourceFormat::Yaml));
        for bad in ["flow.toml", "flow", "yaml", "flow.yaml.bak", "./-"] {
            let err = format(bad).expect_err(bad);
            assert!(
                matches!(&err, SourceError::UnknownExtension { path } if path == Path::new(bad)),
                "{err:?}"
            );
        }
        assert_eq!(
            format("flow.toml").expect_err("toml").to_string(),
            "cannot tell the format of the workflow file flow.toml: expected a .yaml, .yml \
             or .json file (or - for YAML on standard input)"
        );
    }

    #[test]
    fn files_are_read_as_yaml_or_json() {
        let dir = TempDir::new("read");
        let yaml = dir.path().join("flow.yml");
        std::fs::write(&yaml, "name: x\n").expect("write");
        let json = dir.path().join("flow.json");
        std::fs::write(&json, "{\"name\": \"x\"}").expect("write");

        let source = read_workflow_source(&yaml).expect("yaml");
        assert_eq!(source.source, Some(Source::Yaml("name: x\n".into())));
        let source = read_workflow_source(&json).expect("json");
        assert_eq!(
            source.source,
            Some(Source::Json("{\"name\": \"x\"}".into()))
        );
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = TempDir::new("errors");
        let missing = dir.path().join("missing.yaml");
        let err = read_workflow_source(&missing).expect_err("missing");
        assert_eq!(err.path(), missing);
        assert_eq!(
            err.to_string(),
            format!("could not read the workflow file {}", missing.display())
        );
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause.is_some_and(|cause| cause.contains("No such file")),
            "{err:?}"
        );

        let blank = dir.path().join("blank.json");
        std::fs::write(&blank, " \n").expect("write");
        let err = read_workflow_source(&blank).expect_err("blank");
        assert_eq!(
            err.to_string(),
            format!("the workflow file {} is empty", blank.display())
        );

        let binary = dir.path().join("binary.yaml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        let err = read_workflow_source(&binary).expect_err("not UTF-8");
        assert!(matches!(err, SourceError::Read { .. }), "{err:?}");

        // The extension is checked before the file is read.
        let err = read_workflow_source(Path::new("/nope/flow.txt")).expect_err("extension");
        assert!(
            matches!(err, SourceError::UnknownExtension { .. }),
            "{err:?}"
        );
        assert_eq!(origin(Path::new("-")), "the workflow on standard input");
    }

    #[test]
    fn the_schedule_block_is_read_from_yaml_and_json() {
        let yaml = workflow_source(
            "name: n\nschedule: { cron: \"30 2 * * *\", missed: catch_up_one }\nsteps: []\n".into(),
            SourceFormat::Yaml,
        );
        assert_eq!(
            schedule_block(&yaml),
            Some(ScheduleBlock {
                cron: "30 2 * * *".into(),
                timezone: "UTC".into(),
                missed: "catch_up_one",
            })
        );
        let json = workflow_source(
            r#"{"name":"n","schedule":{"cron":"0 3 * * *","timezone":"Europe/Paris"}}"#.into(),
            SourceFormat::Json,
        );
        let block = schedule_block(&json).expect("a block");
        assert_eq!(
            (block.timezone.as_str(), block.missed),
            ("Europe/Paris", "skip")
        );
        let none = workflow_source("name: n\nsteps: []\n".into(), SourceFormat::Yaml);
        assert_eq!(schedule_block(&none), None);
        let broken = workflow_source("name: [".into(), SourceFormat::Yaml);
        assert_eq!(schedule_block(&broken), None);
    }
}
