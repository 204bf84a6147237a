// Helpers of the Providers, Cluster and Budgets pages: days for GetSpend, tones for states,
// and how a budget limit's figures read.
import { NodeLiveness } from "../gen/supervisor/v1/cluster_pb";
import type { SpendRow } from "../gen/supervisor/v1/providers_pb";
import { count, usdMicros } from "./format";

export type Tone = "ok" | "warn" | "bad" | "info" | "idle";

/** A date as GetSpend's day, YYYY-MM-DD in UTC. */
export function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** The last `n` days up to today (UTC), oldest first, as GetSpend's days. */
export function lastDays(n: number, now = new Date()): string[] {
  const days: string[] = [];
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (let i = n - 1; i >= 0; i--) days.push(utcDay(new Date(today - i * 86_400_000)));
  return days;
}

/** What one day's spend rows add up to (the day has no row when nothing ran: all zero). */
export interface DaySpend {
  day: string;
  attempts: number;
  inputTokens: number;
  outputTokens: number;
  costMicros: number;
}

/** GetSpend's rows summed per day, for every day of `days` (in that order). */
export function spendByDay(rows: SpendRow[], days: string[]): DaySpend[] {
  const by = new Map<string, DaySpend>(days.map((day) => [day, { day, attempts: 0, inputTokens: 0, outputTokens: 0, costMicros: 0 }]));
  for (const r of rows) {
    const d = by.get(r.day);
    if (!d) continue;
    d.attempts += Number(r.attempts);
    d.inputTokens += Number(r.inputTokens);
    d.outputTokens += Number(r.outputTokens);
    d.costMicros += Number(r.costMicros);
  }
  return days.map((day) => by.get(day)!);
}

export function livenessName(l: NodeLiveness): string {
  switch (l) {
    case NodeLiveness.ALIVE:
      return "alive";
    case NodeLiveness.SUSPECT:
      return "suspect";
    case NodeLiveness.SELF:
      return "self";
    case NodeLiveness.UNKNOWN:
      return "not judged";
    default:
      return "—";
  }
}

export function livenessTone(l: NodeLiveness): Tone {
  if (l === NodeLiveness.ALIVE) return "ok";
  if (l === NodeLiveness.SELF) return "info";
  if (l === NodeLiveness.SUSPECT) return "warn";
  return "idle";
}

/** A node's (or NodeResources') state: active, draining, left, fenced. */
export function nodeStateTone(state: string): Tone {
  if (state === "active") return "ok";
  if (state === "draining") return "warn";
  if (state === "fenced") return "bad";
  return "idle";
}

/** Circuit breaker: closed (works), half_open (trying), open (refusing). */
export function circuitTone(circuit: string): Tone {
  if (circuit === "closed") return "ok";
  if (circuit === "half_open") return "warn";
  if (circuit === "open") return "bad";
  return "idle";
}

/** How full a meter is: ok below `warnAt`, warn from it, bad from `badAt` (shares of 1). */
export function fillTone(ratio: number, warnAt = 0.8, badAt = 1): Tone {
  if (!Number.isFinite(ratio)) return "idle";
  if (ratio >= badAt) return "bad";
  if (ratio >= warnAt) return "warn";
  return "ok";
}

/** A budget limit's amount: micro-dollars for "usd", a count for "tokens". */
export function limitAmount(metric: string, value: bigint | number): string {
  return metric === "usd" ? usdMicros(value) : `${count(value)} tokens`;
}

/** Milliseconds as "850 ms", "1.24 s"; "—" for -1 (no samples yet). */
export function millis(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** Dollars typed in a form as micro-dollars; null when empty; throws on what is not an amount. */
export function microsFromUsd(text: string | number | null | undefined): bigint | null {
  const t = String(text ?? "").trim().replace(/^\$/, "");
  if (!t) return null;
  const v = Number(t);
  if (!Number.isFinite(v) || v < 0) throw new Error(`"${text}" is not an amount of dollars`);
  return BigInt(Math.round(v * 1e6));
}

/** A whole number typed in a form; null when empty. */
export function wholeNumber(text: string | number | null | undefined, what: string): bigint | null {
  const t = String(text ?? "").trim().replace(/[_,\s]/g, "");
  if (!t) return null;
  if (!/^\d+$/.test(t)) throw new Error(`${what}: "${text}" is not a whole number`);
  return BigInt(t);
}

/** A retention period in seconds: "30 days", "12 h 0 min"; 0 means kept forever. */
export function retention(seconds: bigint | number): string {
  const s = Number(seconds);
  if (s <= 0) return "kept forever";
  if (s % 86_400 === 0) return `${s / 86_400} day${s === 86_400 ? "" : "s"}`;
  if (s % 3_600 === 0) return `${s / 3_600} h`;
  return `${s} s`;
}

/** An attempt's work directory name "<task id>-a<n>" split, or null for anything else. */
export function attemptOf(name: string): { taskId: string; attempt: number } | null {
  const m = /^(.+)-a(\d+)$/.exec(name);
  return m ? { taskId: m[1], attempt: Number(m[2]) } : null;
}

/** Whether a key press belongs to a form field (page shortcuts ignore those). */
export function typing(event: KeyboardEvent): boolean {
  const el = event.target as HTMLElement | null;
  return !!el?.closest?.("input, textarea, select, [contenteditable]") || event.metaKey || event.ctrlKey || event.altKey;
}

/**
 * Whether the signed-in principal administers the whole cluster (an admin of the default
 * tenant): WhoAmI lists the cluster-only RPCs (ListTenants, GetStoreStats, SetQuota...)
 * for it alone.
 */
export function clusterAdmin(identity: { methods: Set<string> } | null | undefined): boolean {
  return identity?.methods.has("/supervisor.v1.AuthService/ListTenants") ?? false;
}

/** An action that moves the keyboard focus to its element when it appears (confirm steps). */
export function focusOnMount(node: HTMLElement): void {
  node.focus();
}
