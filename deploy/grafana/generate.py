#!/usr/bin/env python3
"""Generates the Supervisor Grafana dashboards (the JSON next to this file is its output).

    python3 deploy/grafana/generate.py     # then scripts/check-deploy-monitoring

Edit the panels here, not the JSON. Every expression may use only the metrics of the
catalog listed in scripts/check-deploy-monitoring (which checks it).
"""
import json
import os
import pathlib

OUT = pathlib.Path(os.environ.get("GRAFANA_OUT") or pathlib.Path(__file__).resolve().parent)
DS = {"type": "prometheus", "uid": "${datasource}"}
N = 'job=~"$job",instance=~"$instance"'  # per-node series, filtered by the variables
C = 'job=~"$job"'  # cluster-wide series: every node reports the same value, take max()


def q(metric, q_, by="", sel=N, rng="5m"):
    """histogram_quantile(q, sum by (le, ...) (rate(metric_bucket{sel}[rng])))"""
    return f"histogram_quantile({q_}, sum by (le{by}) (rate({metric}_bucket{{{sel}}}[{rng}])))"


def quantiles(metric, by="", legend=""):
    return [(q(metric, x, by), f"p{int(x * 100)}{legend}") for x in (0.5, 0.95, 0.99)]


def panel(title, targets, unit="short", kind="timeseries", w=12, h=8, desc="", **extra):
    if isinstance(targets, str):
        targets = [(targets, "")]
    p = {
        "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": lf or "__auto",
             "range": kind != "table", "instant": kind == "table",
             **({"format": "table"} if kind == "table" else {})}
            for i, (e, lf) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit, **extra.pop("defaults", {})}, "overrides": []},
        "options": extra.pop("options", {}),
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"].setdefault("custom", {"fillOpacity": 10, "showPoints": "never"})
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}, **p["options"]}
    p.update(extra)
    return p


def stat(title, expr, unit="short", w=4, desc="", thresholds=None, legend="", base="green"):
    steps = [{"color": base, "value": None}] + [
        {"color": c, "value": v} for v, c in (thresholds or [])]
    return panel(title, [(expr, legend)], unit, "stat", w, 4, desc,
                 defaults={"thresholds": {"mode": "absolute", "steps": steps}},
                 options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background",
                          "graphMode": "area", "textMode": "auto"})


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1},
            "panels": []}


BREAKER = {"mappings": [{"type": "value", "options": {
    "0": {"text": "closed", "color": "green"}, "1": {"text": "half-open", "color": "yellow"},
    "2": {"text": "open", "color": "red"}}}],
    "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
    "color": {"mode": "thresholds"}}
SERVING = {"mappings": [{"type": "value", "options": {
    "0": {"text": "not serving", "color": "red"}, "1": {"text": "serving", "color": "green"}}}],
    "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
    "color": {"mode": "thresholds"}}


def var_query(name, query, label, multi=True, hide=0):
    return {"type": "query", "name": name, "label": label, "datasource": DS, "hide": hide,
            "query": query, "definition": query, "refresh": 2,
            "multi": multi, "includeAll": True, "allValue": ".*", "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}


def dashboard(uid, title, panels, extra_vars=()):
    x = y = rowh = 0
    for i, p in enumerate(panels):  # lay the panels out left to right, wrapping at 24
        g = p["gridPos"]
        if p["type"] == "row" or x + g["w"] > 24:
            x, y, rowh = 0, y + rowh, 0
        g.update(x=x, y=y)
        p["id"] = i + 1
        x, rowh = x + g["w"], max(rowh, g["h"])
        if p["type"] == "row":
            x, y, rowh = 0, y + 1, 0
    variables = [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        var_query("job", "label_values(supervisor_node_serving, job)", "Job", multi=False),
        var_query("instance", 'label_values(supervisor_node_serving{job=~"$job"}, instance)', "Node"),
        *extra_vars,
    ]
    variables[1]["includeAll"] = False
    variables[1]["current"] = {"text": "supervisor", "value": "supervisor"}
    return {"uid": uid, "title": title, "tags": ["supervisor"], "schemaVersion": 39,
            "version": 1, "editable": True, "graphTooltip": 1, "timezone": "",
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
            "templating": {"list": variables}, "annotations": {"list": []}, "links": [
                {"type": "dashboards", "tags": ["supervisor"], "asDropdown": True,
                 "title": "Supervisor", "includeVars": True, "keepTime": True}],
            "panels": panels}


def rate(metric, by, sel=N, rng="5m"):
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{rng}]))"


FIN = "supervisor_tasks_finished_total"
def success(r, by=""):
    return (f'sum{by} (rate({FIN}{{{N},status="succeeded"}}[{r}])) / '
            f'sum{by} (rate({FIN}{{{N},status=~"succeeded|failed"}}[{r}]))')

overview = dashboard("supervisor-overview", "Supervisor / Overview", [
    stat("Nodes serving", f"sum(supervisor_node_serving{{{N}}})", thresholds=[(1, "green")], legend="serving", base="red",
         desc="Nodes whose supervision tree is whole (supervisor_node_serving == 1)."),
    stat("Queued", f'max(supervisor_tasks_current{{{C},status="queued"}})'),
    stat("Running", f'max(supervisor_tasks_current{{{C},status="running"}})'),
    stat("Oldest queued task", f"max(supervisor_queue_oldest_age_seconds{{{C}}})", "s",
         thresholds=[(300, "yellow"), (600, "red")]),
    stat("Success ratio (1h)", success("1h"), "percentunit", base="red", thresholds=[(0.8, "yellow"), (0.95, "green")],
         desc="succeeded / (succeeded + failed); cancelled tasks are left out."),
    stat("Submitted (24h)", f"sum(increase(supervisor_tasks_submitted_total{{{N}}}[1d]))"),
    row("Throughput"),
    panel("Submitted / s by task type", [(rate("supervisor_tasks_submitted_total", "task_type"), "{{task_type}}")], "reqps"),
    panel("Finished / s by status", [(rate(FIN, "status"), "{{status}}")], "reqps"),
    panel("Finished / s by task type and status", [(rate(FIN, "task_type, status"), "{{task_type}} {{status}}")], "reqps"),
    panel("Success ratio", [(success("5m"), "all"), (success("5m", " by (task_type)"), "{{task_type}}")],
        "percentunit", desc="succeeded / (succeeded + failed) over 5m; cancelled tasks are left out.",
        defaults={"min": 0, "max": 1}),
    panel("Submitted / s by tenant (top 10)", [(f"topk(10, {rate('supervisor_tasks_submitted_total', 'tenant')})", "{{tenant}}")],
          "reqps", desc="Tenants beyond the configured cap read `_other`."),
    panel("Finished / s by provider", [(rate(FIN, "provider, status"), "{{provider}} {{status}}")], "reqps"),
    row("Queue"),
    panel("Tasks by status (cluster)", [(f"max by (status) (supervisor_tasks_current{{{C}}})", "{{status}}")],
          desc="Cluster-wide, read from the store by every node: max across nodes."),
    panel("Queue depth by priority (cluster)", [(f"max by (priority) (supervisor_queue_depth{{{C}}})", "{{priority}}")],
          defaults={"custom": {"fillOpacity": 30, "stacking": {"mode": "normal"}, "showPoints": "never"}}),
    panel("Oldest queued task age", [(f"max(supervisor_queue_oldest_age_seconds{{{C}}})", "oldest")], "s"),
    panel("Running attempts by provider", [(f"sum by (provider) (supervisor_attempts_running{{{N}}})", "{{provider}}"),
                                           (f"sum(supervisor_attempts_running{{{N}}})", "total")]),
    panel("Running attempts by node", [(f"sum by (instance) (supervisor_attempts_running{{{N}}})", "{{instance}}")]),
    row("Latency"),
    panel("Task duration (submit → terminal)", quantiles("supervisor_task_duration_seconds"), "s"),
    panel("Task duration p95 by task type", [(q("supervisor_task_duration_seconds", 0.95, ", task_type"), "{{task_type}}")], "s"),
    panel("Queue wait (submit → first start)", quantiles("supervisor_task_queue_wait_seconds"), "s"),
    panel("Queue wait p95 by task type", [(q("supervisor_task_queue_wait_seconds", 0.95, ", task_type"), "{{task_type}}")], "s"),
    panel("Task duration p95 by status", [(q("supervisor_task_duration_seconds", 0.95, ", status"), "{{status}}")], "s"),
    panel("Queue wait p95 by tenant (top 10)", [(f'topk(10, {q("supervisor_task_queue_wait_seconds", 0.95, ", tenant")})', "{{tenant}}")], "s"),
])

PR = 'job=~"$job",instance=~"$instance",provider=~"$provider"'
REQ, COST = "supervisor_provider_requests_total", "supervisor_provider_cost_usd_total"
providers = dashboard("supervisor-providers", "Supervisor / Providers", [
    stat("Requests / s", f"sum(rate({REQ}{{{PR}}}[5m]))", "reqps"),
    stat("Error ratio (5m)", f'sum(rate({REQ}{{{PR},outcome="error"}}[5m])) / sum(rate({REQ}{{{PR}}}[5m]))',
         "percentunit", thresholds=[(0.05, "yellow"), (0.2, "red")]),
    stat("Open breakers", f"count(supervisor_provider_breaker_state{{{PR}}} == 2) or vector(0)",
         thresholds=[(1, "red")], desc="(node, provider) pairs whose breaker is open."),
    stat("Tokens / s", f"sum(rate(supervisor_provider_tokens_total{{{PR}}}[5m]))"),
    stat("Spend, last hour", f"sum(increase({COST}{{{PR}}}[1h]))", "currencyUSD"),
    stat("Spend, last 24h", f"sum(increase({COST}{{{PR}}}[1d]))", "currencyUSD"),
    row("Requests and errors"),
    panel("Requests / s by provider and outcome", [(rate(REQ, "provider, outcome", PR), "{{provider}} {{outcome}}")], "reqps"),
    panel("Requests / s by model", [(rate(REQ, "provider, model", PR), "{{provider}} {{model}}")], "reqps"),
    panel("Errors / s by kind", [(rate("supervisor_provider_errors_total", "provider, kind", PR), "{{provider}} {{kind}}")], "reqps",
          defaults={"custom": {"fillOpacity": 30, "stacking": {"mode": "normal"}, "showPoints": "never"}}),
    panel("Error ratio by provider", [(
        f'sum by (provider) (rate({REQ}{{{PR},outcome="error"}}[5m])) / sum by (provider) (rate({REQ}{{{PR}}}[5m]))',
        "{{provider}}")], "percentunit", defaults={"min": 0, "max": 1}),
    panel("Request latency by provider", [
        (q("supervisor_provider_request_duration_seconds", x, ", provider", PR), f"{{{{provider}}}} p{int(x * 100)}")
        for x in (0.5, 0.95, 0.99)], "s"),
    panel("Breaker state (0 closed, 1 half-open, 2 open)", [(f"max by (instance, provider) (supervisor_provider_breaker_state{{{PR}}})",
                                                             "{{provider}} @ {{instance}}")], kind="state-timeline",
          defaults=BREAKER, options={"showValue": "auto", "mergeValues": True}),
    row("Tokens and cost"),
    panel("Tokens / s by provider and type", [(rate("supervisor_provider_tokens_total", "provider, type", PR), "{{provider}} {{type}}")]),
    panel("Tokens / s by model", [(rate("supervisor_provider_tokens_total", "provider, model", PR), "{{provider}} {{model}}")]),
    panel("Cost per hour (current rate)", [(f"{rate(COST, 'provider, model', PR)} * 3600", "{{provider}} {{model}}")], "currencyUSD",
          desc="USD per hour at the rate of the last 5 minutes."),
    panel("Cost per day (rolling 24h)", [(f"sum by (provider, model) (increase({COST}{{{PR}}}[1d]))", "{{provider}} {{model}}")],
          "currencyUSD", desc="USD spent in the 24 hours before each point."),
    row("Budgets"),
    panel("Budget used ratio", [(f'max by (tenant, scope, metric, period) (supervisor_budget_used_ratio{{{C},tenant=~"$tenant"}})',
                                 "{{tenant}} {{scope}} {{metric}}/{{period}}")], "percentunit", kind="bargauge", w=12, h=10,
          desc="Spend / hard (or soft) limit, cluster-wide (max across nodes). 100% = at the limit.",
          defaults={"min": 0, "max": 1.2, "thresholds": {"mode": "absolute", "steps": [
              {"color": "green", "value": None}, {"color": "yellow", "value": 0.9}, {"color": "red", "value": 1}]}},
          options={"displayMode": "gradient", "orientation": "horizontal", "reduceOptions": {"calcs": ["lastNotNull"]}}),
    panel("Budget used ratio over time", [(f'max by (tenant, scope, metric, period) (supervisor_budget_used_ratio{{{C},tenant=~"$tenant"}})',
                                           "{{tenant}} {{scope}} {{metric}}/{{period}}")], "percentunit", h=10),
], extra_vars=[
    var_query("provider", 'label_values(supervisor_provider_requests_total{job=~"$job"}, provider)', "Provider"),
    var_query("tenant", 'label_values(supervisor_budget_used_ratio{job=~"$job"}, tenant)', "Tenant (budgets)"),
])

cluster = dashboard("supervisor-cluster", "Supervisor / Cluster", [
    stat("Targets up", f"sum(up{{{N}}})", legend="up", base="red", thresholds=[(1, "green")]),
    stat("Nodes serving", f"sum(supervisor_node_serving{{{N}}})", legend="serving", base="red", thresholds=[(1, "green")]),
    stat("Active members", f'max(supervisor_cluster_nodes{{{N},state="active"}})'),
    stat("Fenced members", f'max(supervisor_cluster_nodes{{{N},state="fenced"}})', thresholds=[(1, "yellow")]),
    stat("Fencing refusals (1h)", f"sum(increase(supervisor_lease_fencing_refusals_total{{{N}}}[1h]))", thresholds=[(1, "red")]),
    stat("Spans dropped (1h)", f"sum(increase(supervisor_telemetry_spans_dropped_total{{{N}}}[1h]))", thresholds=[(1, "yellow")]),
    row("Membership"),
    panel("Scrape target up", [(f"up{{{N}}}", "{{instance}}")], kind="state-timeline", defaults=SERVING,
          options={"showValue": "never", "mergeValues": True}, desc="1: Prometheus scraped the node; 0: it did not answer."),
    panel("Serving (supervision tree whole)", [(f"supervisor_node_serving{{{N}}}", "{{instance}}")], kind="state-timeline",
          defaults=SERVING, options={"showValue": "never", "mergeValues": True}),
    panel("Members by state, as each node sees them", [(f"sum by (instance, state) (supervisor_cluster_nodes{{{N}}})",
                                                        "{{instance}}: {{state}}")]),
    panel("Membership disagreement (max - min across nodes)", [(
        f"max by (state) (supervisor_cluster_nodes{{{N}}}) - min by (state) (supervisor_cluster_nodes{{{N}}})", "{{state}}")],
        desc="Non-zero while nodes see different memberships (normal for a few seconds after a change)."),
    panel("Node epoch", [(f"max by (instance, node) (supervisor_node_epoch{{{N}}})", "{{node}} ({{instance}})")],
          desc="Bumped when a node is fenced and rejoins."),
    panel("Node info", [(f"target_info{{{N}}}", "")], kind="table", desc="Resource attributes of each node (target_info)."),
    row("Leases"),
    panel("Leases granted / s by node", [(rate("supervisor_leases_granted_total", "instance"), "{{instance}}")], "ops"),
    panel("Lease renewals / s by outcome", [(rate("supervisor_lease_renewals_total", "outcome"), "{{outcome}}"),
                                            (rate("supervisor_lease_renewals_total", "instance", N + ',outcome="lost"'), "lost @ {{instance}}")], "ops"),
    panel("Lease reclaims / s by reason", [(rate("supervisor_lease_reclaims_total", "reason"), "{{reason}}")], "ops"),
    panel("Fencing refusals (per 5m)", [(f"sum by (instance, operation) (increase(supervisor_lease_fencing_refusals_total{{{N}}}[5m]))",
                                         "{{instance}} {{operation}}")],
          desc="Writes of a fenced or stale holder that the store refused: a node kept writing after it was fenced."),
    row("Telemetry"),
    panel("Spans dropped / s by node", [(rate("supervisor_telemetry_spans_dropped_total", "instance"), "{{instance}}")], "ops",
          desc="Spans not exported: the export queue was full or the collector unreachable."),
])

ST = 'job=~"$job",instance=~"$instance",backend=~"$backend"'
DUR, BATCH = "supervisor_store_commit_duration_seconds", "supervisor_store_commit_batch_size"
store = dashboard("supervisor-store", "Supervisor / Store", [
    stat("Commits / s", f"sum(rate({DUR}_count{{{ST}}}[5m]))", "ops"),
    stat("Transactions / s", f"sum(rate({BATCH}_sum{{{ST}}}[5m]))", "ops"),
    stat("Commit p99", q(DUR, 0.99, "", ST), "s", thresholds=[(0.1, "yellow"), (0.5, "red")]),
    stat("Conflicts / s", f"sum(rate(supervisor_store_conflicts_total{{{ST}}}[5m]))", "ops"),
    row("Commits"),
    panel("Commit latency by backend", [(q(DUR, x, ", backend", ST), f"{{{{backend}}}} p{int(x * 100)}") for x in (0.5, 0.95, 0.99)], "s"),
    panel("Commit latency p99 by node", [(q(DUR, 0.99, ", instance", ST), "{{instance}}")], "s"),
    panel("Commits / s (group commits)", [(rate(f"{DUR}_count", "instance, backend", ST), "{{instance}} {{backend}}")], "ops"),
    panel("Mean commit latency", [(f"sum by (backend) (rate({DUR}_sum{{{ST}}}[5m])) / sum by (backend) (rate({DUR}_count{{{ST}}}[5m]))",
                                   "{{backend}}")], "s"),
    row("Group commit batching"),
    panel("Batch size (transactions per group commit)", [(q(BATCH, x, ", backend", ST), f"{{{{backend}}}} p{int(x * 100)}") for x in (0.5, 0.95, 0.99)] +
          [(f"sum by (backend) (rate({BATCH}_sum{{{ST}}}[5m])) / sum by (backend) (rate({BATCH}_count{{{ST}}}[5m]))", "{{backend}} mean")]),
    panel("Transactions / s (sum of batch sizes)", [(rate(f"{BATCH}_sum", "instance, backend", ST), "{{instance}} {{backend}}")], "ops"),
    row("Conflicts"),
    panel("Conflicts / s", [(rate("supervisor_store_conflicts_total", "instance, backend", ST), "{{instance}} {{backend}}")], "ops"),
    panel("Conflicts per transaction", [(f"sum by (backend) (rate(supervisor_store_conflicts_total{{{ST}}}[5m])) / "
                                         f"sum by (backend) (rate({BATCH}_sum{{{ST}}}[5m]))", "{{backend}}")], "percentunit"),
], extra_vars=[var_query("backend", 'label_values(supervisor_store_commit_duration_seconds_count{job=~"$job"}, backend)', "Backend")])

for d in (overview, providers, cluster, store):
    (OUT / f"{d['uid']}.json").write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {d['uid']}.json ({len(d['panels'])} panels)")
