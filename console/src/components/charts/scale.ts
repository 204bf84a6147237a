// Scales, ticks and labels the hand-written charts share: a linear value axis with
// round ticks, and a time axis over regular periods labelled in the browser's time zone
// (UTC dates for day periods, which are UTC days).

/** A chart's series: its key in every point's values, its name, its colour (a CSS value
 * such as "var(--ok)") and, for lines, an optional dash pattern ("4 3"). */
export interface Series {
  key: string;
  label: string;
  color: string;
  dash?: string;
}

/** One period of a chart: when it starts and each series' value (null: no value). */
export interface ChartPoint {
  start: Date;
  values: Record<string, number | null>;
}

/** How long a chart's periods are. */
export type Period = "minute" | "hour" | "day";

export const PERIOD_MS: Record<Period, number> = {
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
};

/** Tick steps for durations in milliseconds: round in ms, seconds, minutes and hours. */
export const DURATION_STEPS_MS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
  900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
];

/** Round ticks from 0 to at least `max`: about `target` of them, steps of 1, 2 or 5 × 10^k
 * (whole numbers only when `integer`), or the first of `steps` that is large enough. */
export function niceTicks(max: number, target = 4, integer = false, steps?: number[]): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = steps?.find((s) => s >= raw) ?? [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  if (integer) step = Math.max(1, Math.ceil(step));
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 1e-9; v += step) ticks.push(round(v));
  if (ticks[ticks.length - 1] < max) ticks.push(round(ticks[ticks.length - 1] + step));
  return ticks;
}

function round(v: number): number {
  return Number(v.toPrecision(12));
}

const pad = (n: number) => String(n).padStart(2, "0");
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** "14:05" in local time. */
export function clock(d: Date): string {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "Dec 4" in local time, or in UTC. */
export function shortDate(d: Date, utc = false): string {
  return utc ? `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}` : `${MONTHS[d.getMonth()]} ${d.getDate()}`;
}

/** "2026-12-04" in local time, or in UTC. */
export function isoDate(d: Date, utc = false): string {
  return utc
    ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`
    : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** A period as people read it: "2026-12-04 14:05–14:06" (local), or "2026-12-04 (UTC day)". */
export function periodLabel(start: Date, period: Period): string {
  if (period === "day") return `${isoDate(start, true)} (UTC day)`;
  const end = new Date(start.getTime() + PERIOD_MS[period]);
  return `${isoDate(start)} ${clock(start)}–${clock(end)}`;
}

/** A tick on the time axis: the index of its period and one or two lines of label. */
export interface TimeTick {
  index: number;
  lines: string[];
}

// Tick spacings, in minutes, that divide a day (so they align in any whole-hour zone).
const STEPS_MIN = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720];
const STEPS_DAYS = [1, 2, 7, 14, 30, 60, 90, 180, 365];

/** At most `maxTicks` ticks over `starts` (regular periods of `period`), at round local
 * times; a tick carries the date when it is the first or the date changed. */
export function timeTicks(starts: Date[], period: Period, maxTicks: number): TimeTick[] {
  const n = starts.length;
  if (n === 0) return [];
  maxTicks = Math.max(2, maxTicks);
  const spanMin = (n * PERIOD_MS[period]) / 60_000;
  let indices: number[] = [];
  const stepMin = STEPS_MIN.find((s) => s * 60_000 >= PERIOD_MS[period] && spanMin / s <= maxTicks);
  if (period !== "day" && stepMin !== undefined) {
    indices = starts.map((d, i) => ((d.getHours() * 60 + d.getMinutes()) % stepMin === 0 ? i : -1)).filter((i) => i >= 0);
  } else {
    const spanDays = spanMin / 1440;
    const stepDays = STEPS_DAYS.find((s) => spanDays / s <= maxTicks) ?? Math.ceil(spanDays / maxTicks);
    const utc = period === "day";
    indices = starts
      .map((d, i) => {
        const midnight = utc ? d.getUTCHours() === 0 && d.getUTCMinutes() === 0 : d.getHours() === 0 && d.getMinutes() === 0;
        const day = Math.floor((d.getTime() - (utc ? 0 : d.getTimezoneOffset() * 60_000)) / 86_400_000);
        return midnight && day % stepDays === 0 ? i : -1;
      })
      .filter((i) => i >= 0);
  }
  if (indices.length < 2) {
    // Zones off the hour, or too few periods: evenly spaced ticks instead.
    const every = Math.max(1, Math.ceil(n / maxTicks));
    indices = [];
    for (let i = 0; i < n; i += every) indices.push(i);
  }
  let lastDate = "";
  return indices.map((i) => {
    const d = starts[i];
    if (period === "day") return { index: i, lines: [shortDate(d, true)] };
    const day = isoDate(d);
    const lines = [clock(d)];
    if (day !== lastDate) lines.push(shortDate(d));
    lastDate = day;
    return { index: i, lines };
  });
}

/** What BarChart and LineChart take. */
export interface ChartProps {
  series: Series[];
  points: ChartPoint[];
  period: Period;
  /** The chart's name, for people using a screen reader (and the tooltip's heading). */
  label: string;
  /** What the values are, shown above the value axis ("tasks per minute", "USD"). */
  unit?: string;
  /** Tick labels ("$0.05", "1.5 s"). */
  format?: (v: number) => string;
  /** Exact values in the tooltip (defaults to format). */
  exact?: (v: number) => string;
  /** Whole-number ticks only. */
  integer?: boolean;
  /** Allowed tick steps, smallest first (e.g. DURATION_STEPS_MS); default 1, 2, 5 × 10^k. */
  steps?: number[];
  /** For stacked bars: the name of the sum, shown in the tooltip ("finished"). */
  total?: string;
  /** What a null value means in the tooltip. */
  missing?: string;
  /** Shown instead of the chart when no value is above zero. */
  empty?: string;
  height?: number;
  testid?: string;
}
