// What the overview derives from the API's state: the nodes up, and the alerts (each
// naming the page that shows more). Nothing here invents a number: every alert is a fact
// one of the RPCs returned.
import type { BudgetStatus } from "../gen/supervisor/v1/resources_pb";
import { NodeLiveness, type NodeStatus } from "../gen/supervisor/v1/cluster_pb";
import type { ProviderInfo } from "../gen/supervisor/v1/providers_pb";
import { count, duration, percent, usdMicros } from "./format";

export interface Alert {
  /** Stable across refreshes (keys the list). */
  key: string;
  level: "bad" | "warn";
  text: string;
  /** The page concerned. */
  href: string;
}

/** Providers of the answering node whose health check failed or whose breaker is not closed. */
export function providerAlerts(list: ProviderInfo[]): Alert[] {
  const out: Alert[] = [];
  for (const p of list) {
    if (!p.healthy) {
      out.push({
        key: `provider-unhealthy:${p.name}`,
        level: "bad",
        text: `Provider ${p.name} is unhealthy${p.healthDetail ? `: ${p.healthDetail}` : ""}`,
        href: "/providers",
      });
    }
    if (p.circuit === "open" || p.circuit === "half_open") {
      out.push({
        key: `provider-circuit:${p.name}`,
        level: p.circuit === "open" ? "bad" : "warn",
        text: `Provider ${p.name}: circuit breaker ${p.circuit === "open" ? "open" : "half open (probing)"}`,
        href: "/providers",
      });
    }
  }
  return out;
}

const serving = (n: NodeStatus) => n.state === "active" || n.state === "draining";

/** Nodes that should be running but are not seen alive: suspected (heartbeat silent), or
 * fenced (declared dead and not back since). */
export function nodeAlerts(nodes: NodeStatus[]): Alert[] {
  const out: Alert[] = [];
  for (const n of nodes) {
    const href = `/cluster/nodes/${encodeURIComponent(n.id)}`;
    if (serving(n) && n.liveness === NodeLiveness.SUSPECT) {
      out.push({
        key: `node-suspect:${n.id}`,
        level: "bad",
        text: `Node ${n.id} is not answering: no heartbeat for ${duration(Number(n.silentForMs) / 1000)}`,
        href,
      });
    } else if (n.state === "fenced") {
      out.push({
        key: `node-fenced:${n.id}`,
        level: "warn",
        text: `Node ${n.id} was fenced${n.note ? ` (${n.note})` : ""} and has not come back`,
        href,
      });
    }
  }
  return out;
}

/** Nodes up (active or draining, and judged alive), and how many are in each state. */
export function nodeCounts(nodes: NodeStatus[]) {
  const byState = new Map<string, number>();
  let up = 0;
  let unjudged = 0;
  for (const n of nodes) {
    byState.set(n.state, (byState.get(n.state) ?? 0) + 1);
    if (!serving(n)) continue;
    if (n.liveness === NodeLiveness.ALIVE || n.liveness === NodeLiveness.SELF) up++;
    else if (n.liveness !== NodeLiveness.SUSPECT) unjudged++;
  }
  return { up, unjudged, serving: nodes.filter(serving).length, byState: [...byState.entries()] };
}

function amount(metric: string, v: bigint): string {
  return metric === "usd" ? usdMicros(v) : `${count(v)} tokens`;
}

/** Budget limits whose settled spend this period reached their soft limit (warn) or their
 * hard limit (bad). */
export function budgetAlerts(budgets: BudgetStatus[]): Alert[] {
  const out: Alert[] = [];
  for (const b of budgets) {
    const scope = b.budget?.scope ?? "?";
    for (const use of b.limits) {
      const lim = use.limit;
      if (!lim || lim.hard === 0n) continue;
      const share = percent(Number(use.spent) / Number(lim.hard));
      const what = `${lim.metric === "usd" ? "USD" : "tokens"} per ${lim.period}`;
      const spent = amount(lim.metric, use.spent);
      if (use.spent >= lim.hard) {
        out.push({
          key: `budget:${b.tenant}:${scope}:${lim.metric}:${lim.period}`,
          level: "bad",
          text: `Budget ${scope} (${what}): ${spent} spent, at or over its limit of ${amount(lim.metric, lim.hard)} (${share})`,
          href: "/budgets",
        });
      } else if (use.soft > 0n && use.spent >= use.soft) {
        out.push({
          key: `budget:${b.tenant}:${scope}:${lim.metric}:${lim.period}`,
          level: "warn",
          text: `Budget ${scope} (${what}): ${spent} spent, past its warning threshold of ${amount(lim.metric, use.soft)} (${share} of ${amount(lim.metric, lim.hard)})`,
          href: "/budgets",
        });
      }
    }
  }
  return out;
}

/** Tasks that failed in the window the trend covers. */
export function failedAlerts(failed: bigint, window: string): Alert[] {
  if (failed === 0n) return [];
  return [
    {
      key: "tasks-failed",
      level: "warn",
      text: `${count(failed)} ${failed === 1n ? "task" : "tasks"} failed in the ${window}`,
      href: "/tasks?status=failed",
    },
  ];
}
