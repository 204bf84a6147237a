// How numbers, times and names read on every page.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { TaskStatus, TaskType, Priority } from "../gen/supervisor/v1/tasks_pb";
import { RunStatus } from "../gen/supervisor/v1/workflows_pb";

/** An enum value's name without its prefix, lower case: TASK_STATUS_RETRY_WAIT → "retry_wait". */
function enumName(names: Record<number, string>, value: number, prefix: string): string {
  const name = names[value] ?? String(value);
  return name.startsWith(prefix) ? name.slice(prefix.length).toLowerCase() : name.toLowerCase();
}

export const statusName = (s: TaskStatus) => enumName(TaskStatus, s, "TASK_STATUS_");
export const runStatusName = (s: RunStatus) => enumName(RunStatus, s, "RUN_STATUS_");
export const typeName = (t: TaskType) => enumName(TaskType, t, "TASK_TYPE_");
export const priorityName = (p: Priority) => enumName(Priority, p, "PRIORITY_");

/** The values of a proto enum except UNSPECIFIED, with their names. */
export function enumChoices<E extends number>(names: Record<number, string>, prefix: string): { value: E; name: string }[] {
  return Object.entries(names)
    .filter(([k, v]) => typeof v === "string" && !String(v).endsWith("UNSPECIFIED") && !Number.isNaN(Number(k)))
    .map(([k]) => ({ value: Number(k) as E, name: enumName(names, Number(k), prefix) }));
}

export function date(ts: Timestamp | undefined): Date | null {
  return ts ? timestampDate(ts) : null;
}

/** "2026-12-04 16:20:31" in the browser's time zone; "—" when unset. */
export function when(ts: Timestamp | undefined): string {
  const d = date(ts);
  if (!d) return "—";
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "4 s ago", "3 min ago", "2 h ago". */
export function ago(ts: Timestamp | undefined, now = Date.now()): string {
  const d = date(ts);
  if (!d) return "—";
  return `${duration((now - d.getTime()) / 1000)} ago`;
}

/** Seconds as "850 ms", "12.3 s", "4 min 10 s", "2 h 5 min". */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 59.5) return `${s.toFixed(s < 9.95 ? 1 : 0)} s`;
  // Rounded before splitting, so that 119.7 s reads "2 min 0 s", not "1 min 60 s".
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  const minutes = Math.round(s / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Between two timestamps, or from one to now. */
export function between(from: Timestamp | undefined, to: Timestamp | undefined): string {
  const a = date(from);
  if (!a) return "—";
  const b = date(to) ?? new Date();
  return duration((b.getTime() - a.getTime()) / 1000);
}

/** US dollars from micro-dollars: "$0.0123"; small amounts keep 4 decimals. */
export function usdMicros(micros: bigint | number): string {
  return usd(Number(micros) / 1e6);
}

export function usd(value: number): string {
  if (!Number.isFinite(value)) return "—";
  return value >= 100 ? `$${value.toFixed(2)}` : `$${value.toFixed(4)}`;
}

/** A count with thousands separators. */
export function count(n: bigint | number): string {
  return Number(n).toLocaleString("en-US");
}

/** A ratio as "97.5%"; "—" when there is nothing to divide. */
export function percent(ratio: number): string {
  return Number.isFinite(ratio) && ratio >= 0 ? `${(ratio * 100).toFixed(1)}%` : "—";
}

export function bytes(n: bigint | number): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 ** 2) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 ** 3) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  return `${(v / 1024 ** 3).toFixed(2)} GiB`;
}
