//! Every workflow under the repository's `examples/` parses, validates without errors or
//! warnings, compiles into a plan and survives the JSON round trip the engine stores.

use std::path::{Path, PathBuf};

use supervisor_workflow::{MapContext, Plan, RunStatus, StepStates, WorkflowDef, validate};

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_parses_and_validates() {
    let files = example_files();
    assert!(files.len() >= 3, "examples: {files:?}");
    for path in files {
        let name = path.display();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let def = if path.extension().is_some_and(|e| e == "json") {
            WorkflowDef::from_json(&text)
        } else {
            WorkflowDef::from_yaml(&text)
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));

        let report = validate(&def);
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{name}: {report}"
        );

        let json = def.to_json().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(WorkflowDef::from_json(&json).as_ref(), Ok(&def), "{name}");

        if let Some(schedule) = &def.schedule {
            schedule.compile().unwrap_or_else(|e| panic!("{name}: {e}"));
        }

        let plan = Plan::new(&def).unwrap_or_else(|r| panic!("{name}: {r}"));
        let first = plan
            .advance(
                &StepStates::new(),
                &MapContext::with_vars(def.vars.clone()),
                &def.policy,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!first.start.is_empty(), "{name}: nothing starts");
        assert_eq!(first.run_status, RunStatus::Running, "{name}");
    }
}
