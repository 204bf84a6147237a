// Helpers of the task pages: short ids, filters by name, merging a reloaded first page
// into the pages already loaded, routing lines of the event log, and unified diffs.
import { TaskEventType, TaskStatus, TaskType, type Task, type TaskEvent, type TaskStats } from "../gen/supervisor/v1/tasks_pb";
import { enumChoices } from "./format";

/** The end of a task id (`…4f2a9c1d`): ids are UUIDv7, whose first digits are a timestamp. */
export function shortId(id: string): string {
  return id.length <= 9 ? id : `…${id.slice(-8)}`;
}

export const statusChoices = enumChoices<TaskStatus>(TaskStatus, "TASK_STATUS_");
export const typeChoices = enumChoices<TaskType>(TaskType, "TASK_TYPE_");

/** A status by its short name ("retry_wait"); UNSPECIFIED (any) when unknown or empty. */
export function statusByName(name: string): TaskStatus {
  return statusChoices.find((c) => c.name === name)?.value ?? TaskStatus.UNSPECIFIED;
}

/** A type by its short name ("bug_fix"); UNSPECIFIED (any) when unknown or empty. */
export function typeByName(name: string): TaskType {
  return typeChoices.find((c) => c.name === name)?.value ?? TaskType.UNSPECIFIED;
}

export function isTerminal(status: TaskStatus): boolean {
  return status === TaskStatus.SUCCEEDED || status === TaskStatus.FAILED || status === TaskStatus.CANCELLED;
}

/** TaskStats as (status name, count) pairs in lifecycle order. */
export function statsCounts(s: TaskStats): { status: string; count: bigint }[] {
  return [
    { status: "queued", count: s.queued },
    { status: "running", count: s.running },
    { status: "retry_wait", count: s.retryWait },
    { status: "succeeded", count: s.succeeded },
    { status: "failed", count: s.failed },
    { status: "cancelled", count: s.cancelled },
  ];
}

/** Whether two TaskStats say the same (the per-status counts and the queued-by-priority map). */
export function sameStats(a: TaskStats | null, b: TaskStats): boolean {
  if (!a) return false;
  const ca = statsCounts(a);
  const cb = statsCounts(b);
  if (ca.some((c, i) => c.count !== cb[i].count)) return false;
  const ka = Object.keys(a.queuedByPriority);
  const kb = Object.keys(b.queuedByPriority);
  return ka.length === kb.length && ka.every((k) => a.queuedByPriority[k] === b.queuedByPriority[k]);
}

/**
 * Merges a freshly loaded first page (ids descending, as ListTasks returns them) into the
 * tasks already loaded: the page replaces everything in its id range (tasks that left the
 * filter disappear, changed ones are updated), older loaded tasks stay after it. Returns
 * the merged list and the page token to continue from.
 */
export function mergeFirstPage(
  loaded: Task[],
  loadedToken: string,
  page: Task[],
  pageToken: string,
): { tasks: Task[]; nextPageToken: string } {
  // The page is everything there is, or nothing was loaded beyond it.
  if (!pageToken || page.length === 0 || loaded.length === 0) return { tasks: page, nextPageToken: pageToken };
  const oldest = page[page.length - 1].id;
  const inPage = new Set(page.map((t) => t.id));
  const older = loaded.filter((t) => t.id < oldest && !inPage.has(t.id));
  if (older.length === 0) return { tasks: page, nextPageToken: pageToken };
  // The loaded pages reached further than the new page: continue where they stopped.
  return { tasks: page.concat(older), nextPageToken: loadedToken };
}

/** A routing decision the node recorded as an ACTIVITY event when an attempt started. */
export interface RoutingDecision {
  seq: bigint;
  at: TaskEvent["at"];
  attempt: number;
  node: string;
  /** Parsed parts; empty when the line has another shape (then `message` says it all). */
  specialty: string;
  specialtyReason: string;
  provider: string;
  providerReason: string;
  message: string;
}

// "attempt 1: specialty bug_hunter (analyzer: ...); provider mock (round_robin ...)"
const ROUTING_LINE = /^attempt (\d+): specialty (\S+) \((.*)\); provider (\S+) \((.*)\)$/s;

/** The routing decisions among a task's events. */
export function routingDecisions(events: TaskEvent[]): RoutingDecision[] {
  const out: RoutingDecision[] = [];
  for (const ev of events) {
    if (ev.type !== TaskEventType.ACTIVITY) continue;
    const m = ROUTING_LINE.exec(ev.message);
    if (!m) continue;
    out.push({
      seq: ev.seq,
      at: ev.at,
      attempt: Number(m[1]),
      node: ev.node,
      specialty: m[2],
      specialtyReason: m[3],
      provider: m[4],
      providerReason: m[5],
      message: ev.message,
    });
  }
  return out;
}

export function isDiffArtifact(name: string, mediaType: string): boolean {
  const n = name.toLowerCase();
  return mediaType.split(";")[0].trim().toLowerCase() === "text/x-diff" || mediaType.toLowerCase() === "text/x-patch" || n.endsWith(".diff") || n.endsWith(".patch");
}

// ---- Unified diffs ---------------------------------------------------------------------

export type DiffLineKind = "add" | "del" | "ctx" | "note";

export interface DiffLine {
  kind: DiffLineKind;
  oldNo: number | null;
  newNo: number | null;
  text: string;
}

export interface DiffHunk {
  header: string;
  lines: DiffLine[];
}

export interface DiffFile {
  /** The path shown: the new path, or the old one when the file was deleted. */
  path: string;
  oldPath: string;
  newPath: string;
  /** "diff --git", "index", "new file mode"... lines, and anything unexpected before the hunks. */
  meta: string[];
  hunks: DiffHunk[];
  added: number;
  removed: number;
  binary: boolean;
}

export interface ParsedDiff {
  /** Text before the first file (a commit message, say). */
  preamble: string[];
  files: DiffFile[];
  /** Lines that fit nowhere (a hunk longer than it said, garbage); shown, never dropped. */
  stray: number;
  lines: number;
}

const HUNK = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$/;

function stripPrefix(path: string): string {
  const p = path.split("\t")[0];
  if (p === "/dev/null") return p;
  return p.startsWith("a/") || p.startsWith("b/") ? p.slice(2) : p;
}

function newFile(): DiffFile {
  return { path: "", oldPath: "", newPath: "", meta: [], hunks: [], added: 0, removed: 0, binary: false };
}

function finish(file: DiffFile) {
  const newPath = file.newPath && file.newPath !== "/dev/null" ? file.newPath : "";
  const oldPath = file.oldPath && file.oldPath !== "/dev/null" ? file.oldPath : "";
  file.path = newPath || oldPath || "(unnamed file)";
}

/** Reads a unified diff (git's or plain `diff -u`); never throws: what it can't place it keeps as notes. */
export function parseDiff(text: string): ParsedDiff {
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const out: ParsedDiff = { preamble: [], files: [], stray: 0, lines: lines.length };
  let file: DiffFile | null = null;
  let hunk: DiffHunk | null = null;
  let oldNo = 0;
  let newNo = 0;
  let oldLeft = 0;
  let newLeft = 0;

  // Closes the current file and opens another.
  const startFile = (): DiffFile => {
    if (file) finish(file);
    const f = newFile();
    out.files.push(f);
    return f;
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (hunk && file && (oldLeft > 0 || newLeft > 0)) {
      const h: DiffHunk = hunk;
      const c = line[0];
      if (c === " " || (line === "" && oldLeft > 0 && newLeft > 0)) {
        h.lines.push({ kind: "ctx", oldNo, newNo, text: line.slice(1) });
        oldNo++;
        newNo++;
        oldLeft--;
        newLeft--;
        continue;
      }
      if (c === "-" && oldLeft > 0) {
        h.lines.push({ kind: "del", oldNo, newNo: null, text: line.slice(1) });
        oldNo++;
        oldLeft--;
        file.removed++;
        continue;
      }
      if (c === "+" && newLeft > 0) {
        h.lines.push({ kind: "add", oldNo: null, newNo, text: line.slice(1) });
        newNo++;
        newLeft--;
        file.added++;
        continue;
      }
      if (c === "\\") {
        h.lines.push({ kind: "note", oldNo: null, newNo: null, text: line });
        continue;
      }
      // The hunk said it had more lines than it has: close it and read the line afresh.
      oldLeft = 0;
      newLeft = 0;
    }
    if (line.startsWith("\\") && hunk) {
      hunk.lines.push({ kind: "note", oldNo: null, newNo: null, text: line });
      continue;
    }
    if (line.startsWith("diff --git ") || line.startsWith("diff -")) {
      const f = (file = startFile());
      hunk = null;
      f.meta.push(line);
      const m = /^diff --git (\S+) (\S+)$/.exec(line);
      if (m) {
        f.oldPath = stripPrefix(m[1]);
        f.newPath = stripPrefix(m[2]);
      }
      continue;
    }
    if (line.startsWith("--- ") && lines[i + 1]?.startsWith("+++ ") && HUNK.test(lines[i + 2] ?? "@@ -0 +0 @@")) {
      // A file header; starts a new file unless it belongs to the "diff --git" just read.
      let f: DiffFile = file ?? (file = startFile());
      if (f.hunks.length > 0) f = file = startFile();
      hunk = null;
      f.oldPath = stripPrefix(line.slice(4));
      f.newPath = stripPrefix(lines[i + 1].slice(4));
      f.meta.push(line, lines[i + 1]);
      i++;
      continue;
    }
    const h = HUNK.exec(line);
    if (h) {
      const f: DiffFile = file ?? (file = startFile());
      hunk = { header: line, lines: [] };
      f.hunks.push(hunk);
      oldNo = Number(h[1]);
      newNo = Number(h[3]);
      oldLeft = h[2] === undefined ? 1 : Number(h[2]);
      newLeft = h[4] === undefined ? 1 : Number(h[4]);
      continue;
    }
    if (file) {
      const f: DiffFile = file;
      if (/^Binary files .* differ$/.test(line) || line === "GIT binary patch") f.binary = true;
      if (line.startsWith("rename from ")) f.oldPath = line.slice(12);
      if (line.startsWith("rename to ")) f.newPath = line.slice(10);
      if (f.hunks.length === 0) {
        f.meta.push(line);
      } else {
        // Text after a hunk ended that starts no new file: keep it, marked.
        f.hunks[f.hunks.length - 1].lines.push({ kind: "note", oldNo: null, newNo: null, text: line });
        out.stray++;
      }
      continue;
    }
    out.preamble.push(line);
  }
  if (file) finish(file);
  return out;
}

/** An event type's short name: TASK_EVENT_TYPE_RETRY_SCHEDULED → "retry_scheduled". */
export function eventTypeName(t: TaskEventType): string {
  const name = TaskEventType[t] ?? String(t);
  return name.toLowerCase();
}

/** Whether an event may have changed what GetTask answers (status, attempts, result). */
export function changesTask(ev: TaskEvent): boolean {
  return ev.type !== TaskEventType.OUTPUT && ev.type !== TaskEventType.ACTIVITY && ev.type !== TaskEventType.SUBMITTED;
}

/** Seconds as the largest whole unit, for narrow columns: "4 s", "12 min", "3 h", "2 d". */
export function compactDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}
