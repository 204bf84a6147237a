//! The report: one markdown document for a run, printed and written to a file.

use std::fmt::Write as _;

use crate::audit::Findings;
use crate::scenario::Outcome;

/// How many violations a section lists before it says how many more there are.
const MAX_LISTED: usize = 20;

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{:.0} ms", v))
        .unwrap_or_else(|| "—".into())
}

/// One row of the summary table.
fn summary_row(o: &Outcome) -> String {
    let verdict = if o.passed() { "PASS" } else { "FAIL" };
    match &o.findings {
        Some(f) => {
            let first = f
                .recoveries
                .iter()
                .filter_map(|r| r.first_release_ms)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            let t = &f.throughput;
            format!(
                "| {} | {verdict} | {} | {} / {} | {} | {:.1} → {:.1} → {:.1} | {:.0} s |",
                o.scenario,
                f.tasks,
                f.completions_accepted,
                f.completions_refused,
                ms(first),
                t.before,
                t.during,
                t.after,
                o.elapsed_s
            )
        }
        None => format!(
            "| {} | {verdict} | — | — | — | — | {:.0} s |",
            o.scenario, o.elapsed_s
        ),
    }
}

fn findings_section(out: &mut String, f: &Findings) {
    let _ = writeln!(
        out,
        "| tasks in store | accepted by the load | unacknowledged | succeeded | completions accepted | refused (stale token) | leased more than once |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        f.tasks,
        f.accepted,
        f.unacknowledged,
        f.succeeded,
        f.completions_accepted,
        f.completions_refused,
        f.released
    );
    let _ = writeln!(
        out,
        "| fault | orphaned tasks | first re-lease | all re-leased | first completion after it was lifted |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for r in &f.recoveries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.what,
            r.orphans,
            ms(r.first_release_ms),
            ms(r.all_released_ms),
            ms(r.first_completion_after_ms)
        );
    }
    let t = &f.throughput;
    let _ = writeln!(
        out,
        "\nCompletions per second: before {:.1}, during the disruption ({:.1} s) {:.1}, \
         after {:.1}; worst whole second during it: {:.0}.\n",
        t.before, t.disruption_s, t.during, t.after, t.worst_second
    );
    if !f.samples.is_empty() {
        let _ = writeln!(out, "Tasks leased more than once (times from the fault):\n");
        for line in &f.samples {
            let _ = writeln!(out, "- `{line}`");
        }
        out.push('\n');
    }
    if !f.violations.is_empty() {
        let _ = writeln!(out, "**Violations ({}):**\n", f.violations.len());
        for v in f.violations.iter().take(MAX_LISTED) {
            let _ = writeln!(out, "- {v}");
        }
        if f.violations.len() > MAX_LISTED {
            let _ = writeln!(out, "- … and {} more", f.violations.len() - MAX_LISTED);
        }
        out.push('\n');
    }
}

/// The whole report. `header` describes the run (binary, settings, machine).
pub fn render(title: &str, header: &[String], outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    for line in header {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "\n| scenario | result | tasks | completions accepted / refused | recovery (first re-lease, worst fault) | completions/s before → during → after | wall time |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for o in outcomes {
        let _ = writeln!(out, "{}", summary_row(o));
    }
    out.push('\n');
    for o in outcomes {
        let verdict = if o.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "## {} — {verdict}\n", o.scenario);
        if !o.submits.is_empty() {
            let _ = writeln!(out, "Load: {}.\n", o.submits);
        }
        if let Some(f) = &o.findings {
            findings_section(&mut out, f);
        }
        for note in &o.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !o.notes.is_empty() {
            out.push('\n');
        }
        if let Some(err) = &o.error {
            let _ = writeln!(out, "**The run failed:** {err}\n");
        }
    }
    out
}
