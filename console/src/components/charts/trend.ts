// GetTrend's points as chart series, and the tick and tooltip formats of their units.
import { Granularity, type Stats, type TrendPoint } from "../../gen/supervisor/v1/analytics_pb";
import { date } from "../../lib/format";
import type { ChartPoint, Period, Series } from "./scale";

export function periodOf(g: Granularity): Period {
  return g === Granularity.MINUTE ? "minute" : g === Granularity.DAY ? "day" : "hour";
}

export const FINISHED_SERIES: Series[] = [
  { key: "succeeded", label: "succeeded", color: "var(--ok)" },
  { key: "failed", label: "failed", color: "var(--bad)" },
  { key: "cancelled", label: "cancelled", color: "var(--idle)" },
];

export const LATENCY_SERIES: Series[] = [
  { key: "p50", label: "p50", color: "var(--info)" },
  { key: "p90", label: "p90", color: "var(--warn)", dash: "6 3" },
  { key: "p99", label: "p99", color: "var(--bad)", dash: "2 3" },
];

export const COST_SERIES: Series[] = [{ key: "cost", label: "cost", color: "var(--accent)" }];

export const TOKEN_SERIES: Series[] = [
  { key: "input", label: "input tokens", color: "var(--info)" },
  { key: "output", label: "output tokens", color: "var(--warn)" },
];

function points(trend: TrendPoint[], values: (s: Stats) => Record<string, number | null>): ChartPoint[] {
  return trend.map((p) => ({
    start: date(p.start) ?? new Date(0),
    values: p.stats ? values(p.stats) : {},
  }));
}

/** Succeeded, failed and cancelled tasks per period. */
export const finishedPoints = (trend: TrendPoint[]) =>
  points(trend, (s) => ({ succeeded: Number(s.succeeded), failed: Number(s.failed), cancelled: Number(s.cancelled) }));

/** Latency quantiles per period in ms; none for periods where nothing finished (the API
 * sends 0 there). */
export const latencyPoints = (trend: TrendPoint[]) =>
  points(trend, (s) =>
    s.finished > 0n
      ? { p50: Number(s.latencyP50Ms), p90: Number(s.latencyP90Ms), p99: Number(s.latencyP99Ms) }
      : { p50: null, p90: null, p99: null },
  );

/** Cost per period, in US dollars (from the exact micro-dollars). */
export const costPoints = (trend: TrendPoint[]) => points(trend, (s) => ({ cost: Number(s.costMicros) / 1e6 }));

/** Input and output tokens per period. */
export const tokenPoints = (trend: TrendPoint[]) =>
  points(trend, (s) => ({ input: Number(s.inputTokens), output: Number(s.outputTokens) }));

/** What a trend's periods add up to (counts, tokens and cost; quantiles do not add up). */
export function sumTrend(trend: TrendPoint[]) {
  const t = { finished: 0n, succeeded: 0n, failed: 0n, cancelled: 0n, inputTokens: 0n, outputTokens: 0n, costMicros: 0n };
  for (const p of trend) {
    const s = p.stats;
    if (!s) continue;
    t.finished += s.finished;
    t.succeeded += s.succeeded;
    t.failed += s.failed;
    t.cancelled += s.cancelled;
    t.inputTokens += s.inputTokens;
    t.outputTokens += s.outputTokens;
    t.costMicros += s.costMicros;
  }
  return t;
}

/** Succeeded out of succeeded and failed; null when there is neither. */
export function successRate(succeeded: bigint, failed: bigint): number | null {
  const d = succeeded + failed;
  return d > 0n ? Number(succeeded) / Number(d) : null;
}

const trim = (s: string) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);

/** Axis ticks of counts: "12", "1.5k", "2M". */
export function countTick(v: number): string {
  if (v >= 1e6) return `${trim((v / 1e6).toFixed(1))}M`;
  if (v >= 1e4) return `${trim((v / 1e3).toFixed(0))}k`;
  if (v >= 1e3) return `${trim((v / 1e3).toFixed(1))}k`;
  return trim(v.toFixed(2));
}

/** Axis ticks of dollars: "$0", "$0.0025", "$1.5", "$1,200". */
export function usdTick(v: number): string {
  if (v === 0) return "$0";
  if (v >= 1000) return `$${Math.round(v).toLocaleString("en-US")}`;
  return `$${trim(v.toPrecision(3).includes("e") ? v.toFixed(6) : Number(v.toPrecision(3)).toString())}`;
}

/** A dollar amount to the micro-dollar: "$0.000125", "$1.25". */
export function usdExact(v: number): string {
  const s = v.toFixed(6).replace(/0+$/, "");
  const [whole, frac = ""] = s.split(".");
  return `$${Number(whole).toLocaleString("en-US")}.${frac.padEnd(2, "0")}`;
}

/** Axis ticks of milliseconds: "500 ms", "2.5 s", "3 min", "1.5 h". */
export function msTick(v: number): string {
  if (v === 0) return "0";
  if (v < 1000) return `${trim(v.toFixed(0))} ms`;
  if (v < 60_000) return `${trim((v / 1000).toFixed(1))} s`;
  if (v < 3_600_000) return `${trim((v / 60_000).toFixed(1))} min`;
  return `${trim((v / 3_600_000).toFixed(1))} h`;
}

/** Milliseconds exactly, with a reading: "12,400 ms (12.4 s)". */
export function msExact(v: number): string {
  const n = `${Math.round(v).toLocaleString("en-US")} ms`;
  return v >= 1000 ? `${n} (${msTick(v)})` : n;
}

/** A count exactly: "1,234". */
export const countExact = (v: number) => Math.round(v).toLocaleString("en-US");
