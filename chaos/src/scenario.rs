//! The scenarios: each starts a clean cluster, puts it under steady load, injects one
//! kind of fault, lets the load run on, then drains and audits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use supervisor_engine::{Engine, NodeState};
use supervisor_model::EventKind;

use crate::audit::{self, Fault, Findings};
use crate::cluster::{Cluster, ClusterSpec, DATABASE, Timing};
use crate::load::{Load, LoadSettings};
use crate::now_micros;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `kill -9` of one node; it stays dead.
    Kill9,
    /// SIGSTOP of one node past the lease and the failure timeout, then SIGCONT.
    Sigstop,
    /// One node's network link cut past the failure timeout, then restored.
    Partition,
    /// PostgreSQL stopped (`pg_ctl -m fast stop`) under load, then started again.
    PgRestart,
    /// SIGTERM each node in turn, wait for its exit, start it again.
    Rolling,
    /// Five times the cluster's measured capacity offered for a while, then drained.
    Overload,
}

impl Scenario {
    /// Every scenario, in the order a full run takes them.
    pub const ALL: [Scenario; 6] = [
        Scenario::Kill9,
        Scenario::Sigstop,
        Scenario::Partition,
        Scenario::PgRestart,
        Scenario::Rolling,
        Scenario::Overload,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill9 => "kill9",
            Scenario::Sigstop => "sigstop",
            Scenario::Partition => "partition",
            Scenario::PgRestart => "pg-restart",
            Scenario::Rolling => "rolling",
            Scenario::Overload => "overload",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// How long and how hard a run is.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Submits per second over the whole cluster.
    pub rate: f64,
    /// Load before the first fault.
    pub warm_up: Duration,
    /// Load after the (last) fault is lifted.
    pub cool_down: Duration,
    /// How long PostgreSQL stays down in `pg-restart`.
    pub pg_down: Duration,
    /// Longest wait for the queue to drain before the audit.
    pub drain_limit: Duration,
    /// `overload`: tasks submitted at once to measure the cluster's capacity.
    pub burst: usize,
    /// `overload`: how long five times that capacity is offered.
    pub overload_for: Duration,
    /// `overload`: admission control's bound on queued tasks.
    pub overload_max_queued: u64,
}

/// What one scenario found.
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// The audit (None when the run failed before it).
    pub findings: Option<Findings>,
    /// Scenario-specific checks that passed, for the report.
    pub notes: Vec<String>,
    /// Why the run failed before or outside the audit.
    pub error: Option<String>,
    /// What the load generator did.
    pub submits: String,
    /// Wall time of the scenario, seconds.
    pub elapsed_s: f64,
}

impl Outcome {
    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.findings.as_ref().is_some_and(|f| f.passed())
    }
}

/// The node the faults hit (the second one, so the first keeps a stable address).
const VICTIM: usize = 1;

/// Runs one scenario from a clean cluster.
pub async fn run(
    scenario: Scenario,
    spec: &ClusterSpec,
    profile: &Profile,
    timing: Timing,
) -> Outcome {
    let started = std::time::Instant::now();
    let mut outcome = Outcome {
        scenario,
        findings: None,
        notes: Vec::new(),
        error: None,
        submits: String::new(),
        elapsed_s: 0.0,
    };
    if let Err(err) = run_inner(scenario, spec, profile, timing, &mut outcome).await {
        outcome.error = Some(format!("{err:#}"));
    }
    outcome.elapsed_s = started.elapsed().as_secs_f64();
    outcome
}

async fn run_inner(
    scenario: Scenario,
    spec: &ClusterSpec,
    profile: &Profile,
    timing: Timing,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut spec = ClusterSpec {
        namespaces: scenario == Scenario::Partition,
        work_dir: spec.work_dir.join(scenario.name()),
        ..spec.clone()
    };
    if scenario == Scenario::Overload {
        // Capacity bound by the engine and the store rather than by the mock's latency,
        // and a backlog bound low enough that admission control takes part.
        spec.env
            .retain(|(k, _)| k != MOCK_LATENCY && k != MAX_QUEUED);
        spec.env
            .push((MOCK_LATENCY.into(), OVERLOAD_MOCK_LATENCY.into()));
        spec.env
            .push((MAX_QUEUED.into(), profile.overload_max_queued.to_string()));
    }
    std::fs::create_dir_all(&spec.work_dir)?;
    let mut cluster = Cluster::start(&spec).await?;
    let engine = audit::open(&cluster.url).await?;
    if scenario == Scenario::Overload {
        return overload(&mut cluster, &engine, profile, outcome).await;
    }
    let load = Load::start(
        LoadSettings {
            rate: profile.rate,
            call_timeout: Duration::from_secs(2),
            give_up_after: Duration::from_secs(90),
            key_prefix: format!("chaos-{}-{}", scenario.name(), std::process::id()),
            max_attempts: 10,
            stop_retrying_when_stopped: false,
        },
        cluster.targets.clone(),
    );
    tokio::time::sleep(profile.warm_up).await;
    if load.accepted_so_far() == 0 {
        bail!(
            "no submit was accepted in the {:?} warm-up; node logs under {}",
            profile.warm_up,
            spec.work_dir.display()
        );
    }
    // Long enough that peers fence the node and its lease would have lapsed anyway.
    let hold =
        timing.lease.max(timing.failure_timeout) + timing.failure_timeout + Duration::from_secs(2);
    // Invariants the scenario itself checks (joined to the audit's).
    let mut problems = Vec::new();
    let epochs_before = epochs(&engine).await?;
    let faults = match scenario {
        Scenario::Kill9 => kill9(&mut cluster)?,
        Scenario::Sigstop | Scenario::Partition => {
            let before = epochs_before.get(VICTIM).map(|(_, e)| *e).unwrap_or(0);
            let faults = if scenario == Scenario::Sigstop {
                sigstop(&cluster, hold).await?
            } else {
                partition(&cluster, hold, timing, &mut outcome.notes).await?
            };
            match rejoined(&engine, &mut cluster, VICTIM, before, timing).await? {
                Ok(note) => outcome.notes.push(note),
                Err(problem) => problems.push(problem),
            }
            faults
        }
        Scenario::PgRestart => pg_restart(&cluster, profile.pg_down).await?,
        Scenario::Rolling => {
            rolling(&mut cluster, timing, &mut outcome.notes, &mut problems).await?
        }
        Scenario::Overload => Vec::new(),
    };
    tokio::time::sleep(profile.cool_down).await;
    // A fault on one node must not cost the others their epoch (a false fencing makes a
    // healthy node drop its work). A store outage may: it is reported, not judged.
    if scenario != Scenario::Rolling {
        let after = epochs(&engine).await?;
        for (i, (id, before)) in epochs_before.iter().enumerate() {
            let now = after.iter().find(|(n, _)| n == id).map(|(_, e)| *e);
            if now == Some(*before) || (i == VICTIM && scenario != Scenario::PgRestart) {
                continue;
            }
            let what = format!(
                "{id} (not faulted) was fenced: epoch {before} → {}",
                now.map(|e| e.to_string())
                    .unwrap_or_else(|| "absent".into())
            );
            if scenario == Scenario::PgRestart {
                outcome.notes.push(what);
            } else {
                problems.push(what);
            }
        }
    }
    let report = load.finish().await?;
    outcome.submits = format!(
        "{} accepted, {} given up, {} calls resent to another node",
        report.accepted.len(),
        report.given_up.len(),
        report.resent
    );
    if let Some(g) = report.given_up.first() {
        outcome.notes.push(format!(
            "{} submit(s) never accepted; the first, {}, last failed with: {}",
            report.given_up.len(),
            g.key,
            g.last_error
        ));
    }
    // A fresh connection pool: the first one may hold connections a PostgreSQL restart
    // broke.
    let engine = audit::open(&cluster.url).await?;
    audit::wait_drained(&engine, profile.drain_limit).await?;
    let observed = audit::observe(&engine).await?;
    let accepted: Vec<String> = report.accepted.iter().map(|a| a.id.clone()).collect();
    let mut findings = audit::audit(
        &observed,
        &accepted,
        &faults,
        (report.started_at, report.stopped_at),
    );
    findings.violations.append(&mut problems);
    let expected_down = usize::from(scenario == Scenario::Kill9);
    let exited = cluster.exited();
    if exited.len() != expected_down {
        findings.violations.push(format!(
            "{} node process(es) should have exited by the end, but these did: [{}]",
            expected_down,
            exited.join(", ")
        ));
    }
    outcome.findings = Some(findings);
    Ok(())
}

fn kill9(cluster: &mut Cluster) -> Result<Vec<Fault>> {
    let node = &mut cluster.nodes[VICTIM];
    let at = now_micros();
    node.kill9()?;
    Ok(vec![Fault {
        what: format!("kill -9 {}", node.id()),
        node: Some(node.id().to_string()),
        at,
        cleared: at,
    }])
}

async fn sigstop(cluster: &Cluster, hold: Duration) -> Result<Vec<Fault>> {
    let node = &cluster.nodes[VICTIM];
    let at = now_micros();
    node.stop()?;
    tokio::time::sleep(hold).await;
    node.resume()?;
    Ok(vec![Fault {
        what: format!("SIGSTOP {} for {hold:?}, then SIGCONT", node.id()),
        node: Some(node.id().to_string()),
        at,
        cleared: now_micros(),
    }])
}

async fn partition(
    cluster: &Cluster,
    hold: Duration,
    timing: Timing,
    notes: &mut Vec<String>,
) -> Result<Vec<Fault>> {
    let net = cluster
        .net
        .as_ref()
        .ok_or_else(|| anyhow!("the partition scenario runs without its network"))?;
    let node = &cluster.nodes[VICTIM];
    let at = now_micros();
    net.cut(VICTIM)?;
    // Past the failure timeout the peers should have fenced the node: what the store's
    // sessions are doing then tells whether anything holds the cluster up.
    let look = timing.failure_timeout + Duration::from_secs(1);
    tokio::time::sleep(look.min(hold)).await;
    match cluster.pg.sessions(DATABASE).await {
        Ok(s) => notes.push(format!(
            "PostgreSQL sessions {:?} into the partition: {s}",
            look.min(hold)
        )),
        Err(err) => notes.push(format!("could not read PostgreSQL's sessions: {err:#}")),
    }
    tokio::time::sleep(hold.saturating_sub(look)).await;
    net.heal(VICTIM)?;
    Ok(vec![Fault {
        what: format!(
            "link {} of {} down for {hold:?}, then up",
            net.host_link(VICTIM),
            node.id()
        ),
        node: Some(node.id().to_string()),
        at,
        cleared: now_micros(),
    }])
}

async fn pg_restart(cluster: &Cluster, down: Duration) -> Result<Vec<Fault>> {
    let at = now_micros();
    tokio::task::block_in_place(|| cluster.pg.stop_fast())?;
    tokio::time::sleep(down).await;
    tokio::task::block_in_place(|| cluster.pg.start_again())?;
    Ok(vec![Fault {
        what: format!("PostgreSQL stopped (fast) for {down:?}, then started"),
        node: None,
        at,
        cleared: now_micros(),
    }])
}

async fn rolling(
    cluster: &mut Cluster,
    timing: Timing,
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Result<Vec<Fault>> {
    let mut faults = Vec::new();
    // A drain may wait for running attempts to finish; a lease is the most it should take.
    let limit = timing.lease * 4 + Duration::from_secs(30);
    for i in 0..cluster.nodes.len() {
        let at = now_micros();
        let node = &mut cluster.nodes[i];
        let id = node.id().to_string();
        let status = tokio::task::block_in_place(|| node.terminate(limit))?;
        let exited_in = (now_micros() - at) as f64 / 1e6;
        if status.success() {
            notes.push(format!("{id} drained and exited 0 in {exited_in:.1}s"));
        } else {
            problems.push(format!(
                "node {id} exited with {status} after SIGTERM (a drain must exit 0); log {}",
                node.log().display()
            ));
        }
        cluster.restart(i)?;
        faults.push(Fault {
            what: format!("SIGTERM {id}, restart"),
            node: Some(id),
            at,
            cleared: now_micros(),
        });
        // Let the restarted node take work before the next one goes.
        tokio::time::sleep(timing.heartbeat * 3).await;
    }
    Ok(faults)
}

/// The mock provider's latency setting.
const MOCK_LATENCY: &str = "SUPERVISOR_PROVIDERS__MOCK__LATENCY";
/// The mock's latency in the overload scenario (whatever the run's `--latency`).
pub const OVERLOAD_MOCK_LATENCY: &str = "5ms";
/// Admission control's backlog bound.
const MAX_QUEUED: &str = "SUPERVISOR_ENGINE__ADMISSION__MAX_QUEUED";

/// How many times the measured capacity the overload offers.
const OVERLOAD_FACTOR: f64 = 5.0;
/// The least share of the measured capacity the backlog must drain at afterwards.
const DRAIN_SPEED_FLOOR: f64 = 0.6;

/// `overload`: measures the cluster's capacity with a burst, offers five times it for a
/// while, then checks that no live node lost a lease (no attempt was abandoned, no node
/// fenced), that every accepted task ran exactly once, and that the backlog drained at
/// (nearly) full speed.
async fn overload(
    cluster: &mut Cluster,
    engine: &Engine,
    profile: &Profile,
    outcome: &mut Outcome,
) -> Result<()> {
    let settings = |rate: f64, phase: &str| LoadSettings {
        rate,
        call_timeout: Duration::from_secs(2),
        give_up_after: Duration::from_secs(60),
        key_prefix: format!("chaos-overload-{phase}-{}", std::process::id()),
        max_attempts: 10,
        // The flood ends when its offering ends: refused and unanswered submits are not
        // tried again after that, or their retries would go on flooding (for up to
        // `give_up_after`) while the drain is being measured.
        stop_retrying_when_stopped: true,
    };
    let epochs_before = epochs(engine).await?;

    // Capacity: a burst submitted as fast as the nodes take it, completed from a backlog.
    let burst = Load::start(settings(2_000.0, "burst"), cluster.targets.clone());
    while (burst.accepted_so_far() as usize) < profile.burst {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst = burst.finish().await?;
    audit::wait_drained(engine, profile.drain_limit).await?;
    let first = audit::observe(engine).await?;
    let capacity = completion_rate(&first.tasks, i64::MIN)
        .ok_or_else(|| anyhow!("the capacity burst completed too few tasks to measure"))?;
    outcome.notes.push(format!(
        "capacity: {} tasks from a backlog completed at {capacity:.1}/s",
        burst.accepted.len()
    ));

    // Overload: five times that, open loop; refused submits retry after a pause.
    let rate = capacity * OVERLOAD_FACTOR;
    let started = now_micros();
    let load = Load::start(settings(rate, "flood"), cluster.targets.clone());
    tokio::time::sleep(profile.overload_for).await;
    let flood = load.finish().await?;
    // The drain is measured from when the offering stopped (the submits in flight then
    // got their last answer while the backlog was draining).
    let stopped = flood.stopped_at;
    outcome.submits = format!(
        "{} accepted in the burst; {} offered at {rate:.0}/s for {:?}: {} accepted, {} \
         refused with RESOURCE_EXHAUSTED and retried, {} given up",
        burst.accepted.len(),
        flood.accepted.len() + flood.given_up.len(),
        profile.overload_for,
        flood.accepted.len(),
        flood.refused,
        flood.given_up.len()
    );
    audit::wait_drained(engine, profile.drain_limit).await?;
    let observed = audit::observe(engine).await?;

    let mut problems = Vec::new();
    match completion_rate(&observed.tasks, stopped) {
        Some(drain) if drain >= capacity * DRAIN_SPEED_FLOOR => outcome.notes.push(format!(
            "the backlog left by the flood drained at {drain:.1}/s ({:.0}% of capacity)",
            drain / capacity * 100.0
        )),
        Some(drain) => problems.push(format!(
            "the backlog drained at {drain:.1}/s, under {:.0}% of the measured capacity \
             ({capacity:.1}/s)",
            DRAIN_SPEED_FLOOR * 100.0
        )),
        None => outcome
            .notes
            .push("the flood left no backlog to drain (every accepted task had finished)".into()),
    }
    // A live node's lease lapsing shows as an abandoned attempt (requeued by the reaper).
    let abandoned: Vec<&str> = observed
        .tasks
        .iter()
        .filter(|t| {
            t.events
                .iter()
                .any(|e| e.kind == EventKind::Requeued && e.message.contains("abandoned"))
        })
        .map(|t| t.id.as_str())
        .collect();
    if !abandoned.is_empty() {
        problems.push(format!(
            "{} task(s) lost their lease on a live node under overload (first: {})",
            abandoned.len(),
            abandoned[0]
        ));
    }
    let after = epochs(engine).await?;
    if after != epochs_before {
        problems.push(format!(
            "a node was fenced under overload: epochs {epochs_before:?} → {after:?}"
        ));
    }
    let accepted: Vec<String> = burst
        .accepted
        .iter()
        .chain(&flood.accepted)
        .map(|a| a.id.clone())
        .collect();
    let faults = vec![Fault {
        what: format!(
            "{OVERLOAD_FACTOR}× capacity ({rate:.0} submits/s) for {:?}",
            profile.overload_for
        ),
        node: None,
        at: started,
        cleared: stopped,
    }];
    let mut findings = audit::audit(&observed, &accepted, &faults, (started, stopped));

    findings.violations.append(&mut problems);
    let exited = cluster.exited();
    if !exited.is_empty() {
        findings.violations.push(format!(
            "node process(es) exited under overload: [{}]",
            exited.join(", ")
        ));
    }
    outcome.findings = Some(findings);
    Ok(())
}

/// Completions per second of the tasks that finished after `after` (unix microseconds),
/// from the first such completion to the last; `None` with fewer than 20 of them.
fn completion_rate(tasks: &[audit::TaskLog], after: i64) -> Option<f64> {
    let mut done: Vec<i64> = tasks
        .iter()
        .flat_map(|t| t.events.iter())
        .filter(|e| e.kind == EventKind::Succeeded && e.at > after)
        .map(|e| e.at)
        .collect();
    if done.len() < 20 {
        return None;
    }
    done.sort_unstable();
    let span = (done[done.len() - 1] - done[0]) as f64 / 1e6;
    (span > 0.0).then(|| (done.len() - 1) as f64 / span)
}

/// `(id, epoch)` of every node in the membership table, in id order (`n1`, `n2`...).
async fn epochs(engine: &Engine) -> Result<Vec<(String, u64)>> {
    let mut nodes: Vec<(String, u64)> = engine
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| (n.id, n.epoch))
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// After a stop or a partition: the node must have been fenced and come back, active
/// under a newer epoch, within a few failure timeouts. The inner result is the verdict (a
/// note, or the violation); the outer one, a failure to read the membership table.
async fn rejoined(
    engine: &Engine,
    cluster: &mut Cluster,
    i: usize,
    before: u64,
    timing: Timing,
) -> Result<Result<String, String>> {
    let id = cluster.nodes[i].id().to_string();
    let limit = timing.failure_timeout * 3 + timing.lease + Duration::from_secs(10);
    let start = tokio::time::Instant::now();
    loop {
        if let Some(status) = cluster.nodes[i].exited() {
            return Ok(Err(format!(
                "node {id} exited ({status}) after the fault instead of rejoining; log {}",
                cluster.nodes[i].log().display()
            )));
        }
        let nodes = engine.list_nodes().await?;
        if let Some(n) = nodes.iter().find(|n| n.id == id)
            && n.epoch > before
            && n.state == NodeState::Active
        {
            return Ok(Ok(format!(
                "{id} was fenced and rejoined: epoch {before} → {}, active {:.1}s after the fault was lifted",
                n.epoch,
                start.elapsed().as_secs_f64()
            )));
        }
        if start.elapsed() > limit {
            let state = nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| format!("epoch {}, {}", n.epoch, n.state.as_str()))
                .unwrap_or_else(|| "absent".into());
            return Ok(Err(format!(
                "node {id} did not rejoin with a new epoch within {limit:?} of the fault being lifted \
                 (before: epoch {before}; now: {state}); log {}",
                cluster.nodes[i].log().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
