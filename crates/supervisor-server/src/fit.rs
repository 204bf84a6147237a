//! Keeping every response under the 4 MiB that gRPC clients accept by default
//! ([`MAX_RESPONSE_BYTES`]), whatever the store holds.
//!
//! Two tools. A single answer (a task with a large output, a run with a large
//! definition) is *fitted*: its largest texts are cut, and the message's
//! `truncated_fields` names each one, so a client never mistakes a cut text for the whole
//! (a task's `output_bytes` and an artifact's `size_bytes` keep the full lengths). A
//! listing is *paged by size* as well as by count: a page ends before the item that
//! would take it over the limit, with a token to continue from the last item it holds.

use prost::Message;
use supervisor_model::MAX_RESPONSE_BYTES;
use supervisor_proto::v1;

/// Bytes kept free in every response for what surrounds the fitted items (a page token,
/// framing).
const ROOM: usize = 4 * 1024;

/// The most one fitted item (a task, a run, a schedule) may take.
pub(crate) const ITEM_BUDGET: usize = MAX_RESPONSE_BYTES - ROOM;

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &mut String, max: usize) {
    text.truncate(supervisor_model::floor_char_boundary(text, max));
}

/// Shares `available` bytes among texts of the given lengths, smallest first: a text
/// that fits its share is kept whole and leaves the rest to the others ("water
/// filling"). Returns each text's allowance, in the order given.
fn shares(lengths: &[usize], mut available: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut out = vec![0; lengths.len()];
    for (done, &i) in order.iter().enumerate() {
        let share = available / (order.len() - done);
        out[i] = lengths[i].min(share);
        available -= out[i];
    }
    out
}

/// Fits a task into `budget` bytes: its output and artifacts' contents share what the
/// rest leaves, then, should that not be enough (a record from before the limits), its
/// error and prompt are cut to 1 KiB. Each cut field is named in `truncated_fields`
/// (`result.output`, `result.artifacts[changes.diff].content`, `error`, `prompt`).
pub(crate) fn task(task: &mut v1::Task, budget: usize) {
    if task.encoded_len() <= budget {
        return;
    }
    if let Some(result) = task.result.as_mut() {
        let mut texts: Vec<(String, String)> = vec![(
            "result.output".to_string(),
            std::mem::take(&mut result.output),
        )];
        for a in &mut result.artifacts {
            texts.push((
                format!("result.artifacts[{}].content", a.name),
                std::mem::take(&mut a.content),
            ));
        }
        // Each text costs a few bytes of framing besides its own, and its name in
        // `truncated_fields` should it be cut.
        let fixed =
            task.encoded_len() + texts.iter().map(|(name, _)| 16 + name.len()).sum::<usize>();
        let lengths: Vec<usize> = texts.iter().map(|(_, t)| t.len()).collect();
        let allowed = shares(&lengths, budget.saturating_sub(fixed));
        let mut cut_fields = Vec::new();
        for ((field, text), max) in texts.iter_mut().zip(allowed) {
            if text.len() > max {
                cut(text, max);
                cut_fields.push(field.clone());
            }
        }
        if let Some(result) = task.result.as_mut() {
            let mut texts = texts.into_iter().map(|(_, t)| t);
            result.output = texts.next().unwrap_or_default();
            for (a, content) in result.artifacts.iter_mut().zip(texts) {
                a.content = content;
            }
        }
        task.truncated_fields.extend(cut_fields);
    }
    if task.encoded_len() > budget && task.error.len() > 1024 {
        cut(&mut task.error, 1024);
        task.truncated_fields.push("error".into());
    }
    if task.encoded_len() > budget && task.prompt.len() > 1024 {
        cut(&mut task.prompt, 1024);
        task.truncated_fields.push("prompt".into());
    }
}

/// Fits a run into `budget` bytes. In order, until it fits: the definition JSON is left
/// out (a cut JSON text is of no use; `GetWorkflow` of a smaller run, or the file, has
/// it), variables are kept in name order while they fit, steps lose their output
/// summaries and have their failures cut to 200 bytes, and last the list of steps is cut.
/// Each is named in `truncated_fields` (`definition_json`, `vars`,
/// `steps.output_summary`, `steps.failure`, `steps`).
pub(crate) fn run(run: &mut v1::WorkflowRun, budget: usize) {
    if run.encoded_len() <= budget {
        return;
    }
    run.definition_json.clear();
    run.truncated_fields.push("definition_json".into());
    if run.encoded_len() <= budget {
        return;
    }
    let vars = std::mem::take(&mut run.vars);
    // Room for the variables, and for naming them in `truncated_fields`.
    let room = budget.saturating_sub(run.encoded_len() + 16);
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut used = 0;
    for name in names {
        let entry = name.len() + vars[name].len() + 16;
        if used + entry > room {
            run.truncated_fields.push("vars".into());
            break;
        }
        used += entry;
        run.vars.insert(name.clone(), vars[name].clone());
    }
    if run.encoded_len() <= budget {
        return;
    }
    if run.steps.iter().any(|s| !s.output_summary.is_empty()) {
        run.steps.iter_mut().for_each(|s| s.output_summary.clear());
        run.truncated_fields.push("steps.output_summary".into());
    }
    if run.steps.iter().any(|s| s.failure.len() > 200) {
        run.steps.iter_mut().for_each(|s| cut(&mut s.failure, 200));
        run.truncated_fields.push("steps.failure".into());
    }
    if run.encoded_len() <= budget {
        return;
    }
    run.truncated_fields.push("steps".into());
    let mut used = run.encoded_len() - run.steps.iter().map(framed).sum::<usize>();
    let keep = run
        .steps
        .iter()
        .take_while(|s| {
            used += framed(*s);
            used <= budget
        })
        .count();
    run.steps.truncate(keep);
}

/// Fits a schedule into `budget` bytes (records from before the limits may hold long
/// texts): its cron, time zone and workflow name are cut to 256 bytes and named in
/// `truncated_fields`.
pub(crate) fn schedule(schedule: &mut v1::Schedule, budget: usize) {
    if schedule.encoded_len() <= budget {
        return;
    }
    for (field, text) in [
        ("cron", &mut schedule.cron),
        ("timezone", &mut schedule.timezone),
        ("workflow_name", &mut schedule.workflow_name),
    ] {
        if text.len() > 256 {
            cut(text, 256);
            schedule.truncated_fields.push(field.to_string());
        }
    }
}

/// What an item adds to the message that holds it in a repeated field: its bytes and
/// their framing (a tag and a length).
fn framed<M: Message>(item: &M) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// The longest prefix of `items` that fits in [`MAX_RESPONSE_BYTES`] with room to
/// spare, at least one item. Returns whether items were left out: the page then ends
/// early, and its token continues after its last item.
pub(crate) fn page<M: Message>(items: &mut Vec<M>) -> bool {
    let mut used = 0;
    let keep = items
        .iter()
        .enumerate()
        .take_while(|(i, item)| {
            used += framed(*item);
            *i == 0 || used <= ITEM_BUDGET
        })
        .count();
    let cut = keep < items.len();
    items.truncate(keep);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big_task() -> v1::Task {
        v1::Task {
            id: "t".into(),
            prompt: "p".repeat(60_000),
            result: Some(v1::TaskResult {
                output: "é".repeat(5_000_000),
                output_bytes: 10_000_000,
                artifacts: vec![
                    v1::Artifact {
                        name: "changes.diff".into(),
                        content: "d".repeat(3_000_000),
                        size_bytes: 3_000_000,
                        ..Default::default()
                    },
                    v1::Artifact {
                        name: "notes.md".into(),
                        content: "n".repeat(1000),
                        size_bytes: 1000,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_too_large_shares_the_limit_among_its_texts_and_says_which_were_cut() {
        let mut t = big_task();
        task(&mut t, ITEM_BUDGET);
        assert!(t.encoded_len() <= ITEM_BUDGET, "{}", t.encoded_len());
        assert_eq!(
            t.truncated_fields,
            ["result.output", "result.artifacts[changes.diff].content"]
        );
        let r = t.result.as_ref().expect("result");
        assert_eq!(
            r.artifacts[1].content.len(),
            1000,
            "a small text is kept whole"
        );
        assert!(r.output.len() > 1_900_000 && r.artifacts[0].content.len() > 1_900_000);
        assert!(
            r.output.chars().all(|c| c == 'é'),
            "cut on a character boundary"
        );
        assert_eq!(r.output_bytes, 10_000_000, "the full length is kept");
        assert_eq!(t.prompt.len(), 60_000, "the prompt is untouched");
        // A task that fits is left alone.
        let mut small = v1::Task {
            prompt: "p".into(),
            ..Default::default()
        };
        task(&mut small, ITEM_BUDGET);
        assert!(small.truncated_fields.is_empty());
    }

    #[test]
    fn a_run_too_large_loses_its_definition_then_variables_then_steps() {
        let steps: Vec<v1::StepRun> = (0..10_000)
            .map(|i| v1::StepRun {
                id: format!("step-{i:0>58}"),
                state: "succeeded".into(),
                task_id: "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f".into(),
                output_summary: "s".repeat(200),
                failure: String::new(),
            })
            .collect();
        let mut r = v1::WorkflowRun {
            definition_json: "{}".repeat(1_000_000),
            vars: (0..100_000)
                .map(|i| (format!("v{i}"), "x".repeat(20)))
                .collect(),
            steps,
            ..Default::default()
        };
        run(&mut r, ITEM_BUDGET);
        assert!(r.encoded_len() <= ITEM_BUDGET, "{}", r.encoded_len());
        assert_eq!(r.truncated_fields[..2], ["definition_json", "vars"]);
        assert!(r.definition_json.is_empty());
        assert!(!r.vars.is_empty() && r.vars.len() < 100_000);
        assert_eq!(r.steps.len(), 10_000, "every step is still listed");
        // Without room for every step, the list itself is cut.
        let mut tight = r.clone();
        run(&mut tight, 100_000);
        assert!(tight.encoded_len() <= 100_000);
        assert!(tight.truncated_fields.contains(&"steps".to_string()));
        assert!(!tight.steps.is_empty());
    }

    #[test]
    fn a_page_ends_before_the_item_that_would_take_it_over_the_limit() {
        let task = |n: usize| v1::Task {
            id: n.to_string(),
            prompt: "p".repeat(60 * 1024),
            ..Default::default()
        };
        let mut tasks: Vec<v1::Task> = (0..100).map(task).collect();
        assert!(page(&mut tasks));
        let response = v1::ListTasksResponse {
            tasks: tasks.clone(),
            next_page_token: "x".repeat(36),
        };
        assert!(response.encoded_len() <= MAX_RESPONSE_BYTES);
        assert!(tasks.len() > 50 && tasks.len() < 100, "{}", tasks.len());
        let mut few: Vec<v1::Task> = (0..3).map(task).collect();
        assert!(!page(&mut few));
        assert_eq!(few.len(), 3);
    }
}
