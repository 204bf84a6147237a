// What the workflow pages share: step states and their colours, reading a run's definition
// (the JSON the server keeps), a light reading of YAML text (where each step's lines are,
// which variables it declares) for the editor, and the layered layout of the DAG graph.
//
// The YAML reading is deliberately shallow: the server is the judge of a definition
// (ValidateWorkflow); the editor only needs line numbers and variable names, and when the
// text is written in a shape this reader does not follow it finds nothing rather than
// something wrong.
import type { Timestamp } from "@bufbuild/protobuf/wkt";

/** Step states as StepRun.state names them. */
export const STEP_STATES = ["pending", "running", "succeeded", "failed", "cancelled", "skipped"] as const;

/** The states a step ends in. */
export const STEP_DONE = new Set(["succeeded", "failed", "cancelled", "skipped"]);

/** The colour family (a CSS variable prefix) of a step or run state. */
export function tone(state: string): "ok" | "info" | "warn" | "bad" | "idle" {
  switch (state) {
    case "succeeded":
      return "ok";
    case "running":
      return "info";
    case "failed":
      return "bad";
    case "cancelled":
      return "warn";
    default:
      return "idle";
  }
}

/** The state a step is in after an event of this kind, or null for run events. */
export function stateAfter(kind: string): string | null {
  switch (kind) {
    case "step_started":
      return "running";
    case "step_succeeded":
      return "succeeded";
    case "step_failed":
      return "failed";
    case "step_skipped":
      return "skipped";
    case "step_cancelled":
      return "cancelled";
    default:
      return null;
  }
}

/** A timestamp in microseconds since the epoch (for ordering events against a read). */
export function micros(ts: Timestamp | undefined): bigint {
  if (!ts) return 0n;
  return ts.seconds * 1_000_000n + BigInt(Math.floor(ts.nanos / 1000));
}

/** A dependency of a step on another, with its condition as written. */
export interface Need {
  step: string;
  /** "on_success", "on_failure", "always" or an expression. */
  when: string;
}

/** A step of a definition as the graph needs it. */
export interface StepDef {
  id: string;
  needs: Need[];
  type: string;
}

/**
 * The steps of WorkflowRun.definition_json (the server's definition: `needs` items are a
 * step id, meaning on_success, or `{step, when}`); null when it is missing or unreadable.
 */
export function stepsOfDefinition(json: string): StepDef[] | null {
  if (!json) return null;
  try {
    const def = JSON.parse(json) as { steps?: unknown };
    if (!Array.isArray(def.steps)) return null;
    return def.steps.map((s: Record<string, unknown>) => ({
      id: String(s.id ?? ""),
      type: String((s.task as Record<string, unknown> | undefined)?.type ?? ""),
      needs: (Array.isArray(s.needs) ? s.needs : []).map((n: unknown) =>
        typeof n === "object" && n !== null
          ? { step: String((n as Need).step ?? ""), when: String((n as Need).when ?? "on_success") }
          : { step: String(n), when: "on_success" },
      ),
    }));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// A shallow reading of definition YAML.

interface Line {
  /** The line without its comment and trailing spaces. */
  text: string;
  indent: number;
}

/** Removes a `# comment` (a # at the start or after a space, outside quotes). */
function stripComment(raw: string): string {
  let quote = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (quote) {
      if (c === quote) quote = "";
      else if (c === "\\" && quote === '"') i++;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === "#" && (i === 0 || raw[i - 1] === " " || raw[i - 1] === "\t")) {
      return raw.slice(0, i);
    }
  }
  return raw;
}

function linesOf(yaml: string): Line[] {
  return yaml.split("\n").map((raw) => {
    const text = stripComment(raw.replace(/\r$/, "")).replace(/\s+$/, "");
    return { text, indent: text.length - text.trimStart().length };
  });
}

/** Index of the top-level `key:` line, or -1. */
function topLevel(lines: Line[], key: string): number {
  const re = new RegExp(`^${key}\\s*:`);
  return lines.findIndex((l) => l.indent === 0 && re.test(l.text));
}

/** The index after the block that starts below line `at` (the next top-level line). */
function blockEnd(lines: Line[], at: number): number {
  let i = at + 1;
  while (i < lines.length && (lines[i].text === "" || lines[i].indent > 0 || lines[i].text.startsWith("- "))) i++;
  return i;
}

function unquote(v: string): string {
  const s = v.trim();
  if (s.length >= 2 && ((s[0] === '"' && s.endsWith('"')) || (s[0] === "'" && s.endsWith("'")))) {
    return s[0] === "'" ? s.slice(1, -1).replace(/''/g, "'") : s.slice(1, -1).replace(/\\"/g, '"').replace(/\\\\/g, "\\");
  }
  return s;
}

/** Splits `a: 1, b: "x, y"` at top-level commas. */
function splitFlow(body: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote = "";
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (quote) {
      if (c === quote) quote = "";
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
    else if (c === "," && depth === 0) {
      parts.push(body.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(body.slice(start));
  return parts.map((p) => p.trim()).filter(Boolean);
}

function keyValue(entry: string): [string, string] | null {
  const m = /^("[^"]*"|'[^']*'|[^:\s][^:]*?)\s*:(?:\s+(.*))?$/.exec(entry.trim());
  return m ? [unquote(m[1]), unquote(m[2] ?? "")] : null;
}

/** A simple top-level mapping (`vars:`, `schedule:`) as written, or null when absent. */
function topMapping(yaml: string, key: string): Map<string, string> | null {
  const lines = linesOf(yaml);
  const at = topLevel(lines, key);
  if (at < 0) return null;
  const out = new Map<string, string>();
  const rest = lines[at].text.replace(/^[^:]*:/, "").trim();
  if (rest.startsWith("{")) {
    // A flow mapping, perhaps over several lines.
    let body = rest;
    for (let i = at + 1; i < lines.length && !body.includes("}"); i++) body += ` ${lines[i].text.trim()}`;
    const inner = body.slice(1, body.lastIndexOf("}") >= 0 ? body.lastIndexOf("}") : undefined);
    for (const part of splitFlow(inner)) {
      const kv = keyValue(part);
      if (kv) out.set(kv[0], kv[1]);
    }
    return out;
  }
  if (rest) return out;
  const end = blockEnd(lines, at);
  let childIndent = -1;
  for (let i = at + 1; i < end; i++) {
    const l = lines[i];
    if (!l.text) continue;
    if (childIndent < 0) childIndent = l.indent;
    if (l.indent !== childIndent) continue;
    const kv = keyValue(l.text);
    if (!kv) continue;
    // Block scalars (| or >) read as the following lines; the editor only shows them.
    const v = /^[|>][+-]?$/.test(kv[1]) ? "(text over several lines)" : kv[1];
    out.set(kv[0], v);
  }
  return out;
}

/** The variables a YAML definition declares, with their defaults as written. */
export function declaredVars(yaml: string): { name: string; value: string }[] {
  const m = topMapping(yaml, "vars");
  return m ? [...m].map(([name, value]) => ({ name, value })) : [];
}

/** The `schedule:` block of a YAML definition (cron, timezone, missed), or null. */
export function scheduleBlock(yaml: string): { cron: string; timezone: string; missed: string } | null {
  const m = topMapping(yaml, "schedule");
  if (!m) return null;
  return { cron: m.get("cron") ?? "", timezone: m.get("timezone") ?? "", missed: m.get("missed") ?? "" };
}

/** The `name:` of a YAML definition, or "". */
export function definitionName(yaml: string): string {
  const lines = linesOf(yaml);
  const at = topLevel(lines, "name");
  return at < 0 ? "" : unquote(lines[at].text.replace(/^[^:]*:/, ""));
}

/**
 * Where each step of a YAML definition is: step id → first and last line (1-based,
 * inclusive) of its item under `steps:`.
 */
export function stepLines(yaml: string): Map<string, { first: number; last: number }> {
  const lines = linesOf(yaml);
  const out = new Map<string, { first: number; last: number }>();
  const at = topLevel(lines, "steps");
  if (at < 0) return out;
  const end = blockEnd(lines, at);
  // Items are the `- ` lines at the smallest indent under steps:.
  let itemIndent = -1;
  for (let i = at + 1; i < end; i++) {
    if (lines[i].text && lines[i].text.trimStart().startsWith("-")) {
      itemIndent = lines[i].indent;
      break;
    }
  }
  if (itemIndent < 0) return out;
  const starts: number[] = [];
  for (let i = at + 1; i < end; i++) {
    const l = lines[i];
    if (l.text && l.indent === itemIndent && /^-(\s|$)/.test(l.text.trimStart())) starts.push(i);
  }
  starts.forEach((first, k) => {
    let last = (k + 1 < starts.length ? starts[k + 1] : end) - 1;
    while (last > first && !lines[last].text) last--;
    // The id: on the dash line (`- id: x`, `- { id: x, ... }`) or as a key of the item.
    const keyIndent = itemIndent + (/^-\s+/.exec(lines[first].text.trimStart())?.[0].length ?? 2);
    let id = "";
    for (let i = first; i <= last && !id; i++) {
      const l = lines[i];
      const m =
        i === first
          ? /^-\s+(?:\{\s*(?:[^}]*,\s*)?)?id\s*:\s*("[^"]*"|'[^']*'|[^,}\s]+)/.exec(l.text.trimStart())
          : l.indent === keyIndent
            ? /^id\s*:\s*("[^"]*"|'[^']*'|[^,}\s]+)/.exec(l.text.trimStart())
            : null;
      if (m) id = unquote(m[1]);
    }
    if (id && !out.has(id)) out.set(id, { first: first + 1, last: last + 1 });
  });
  return out;
}

/** The line a parse error names ("... at line 12 column 3"), or 0. */
export function lineOfMessage(message: string): number {
  const m = /\bline (\d+)/.exec(message);
  return m ? Number(m[1]) : 0;
}

// ---------------------------------------------------------------------------------------
// Layered layout of a DAG (a small Sugiyama): longest-path layers, dummy nodes on edges
// that skip layers, barycenter sweeps to reduce crossings, then coordinates.

export interface LayoutNode {
  id: string;
  /** Layer (column, left to right). */
  layer: number;
  x: number;
  y: number;
}

export interface LayoutEdge {
  from: string;
  to: string;
  when: string;
  /** Points from the source's right side to the target's left side. */
  points: { x: number; y: number }[];
}

export interface Layout {
  nodes: Map<string, LayoutNode>;
  edges: LayoutEdge[];
  width: number;
  height: number;
}

export interface LayoutSizes {
  nodeWidth: number;
  nodeHeight: number;
  /** Horizontal space between layers. */
  layerGap: number;
  /** Vertical space between nodes of a layer. */
  rowGap: number;
  pad: number;
}

interface Slot {
  key: string;
  real: boolean;
  layer: number;
  /** Keys of the slots in the previous and next layers it connects to. */
  up: string[];
  down: string[];
  pos: number;
  y: number;
}

/** Lays out `steps` (needs naming unknown steps are ignored; a cycle is broken). */
export function layoutDag(steps: StepDef[], s: LayoutSizes): Layout {
  const known = new Map(steps.map((st, i) => [st.id, i]));
  // Longest-path layering, iterative with cycle guard.
  const layer = new Map<string, number>();
  const visiting = new Set<string>();
  const layerOf = (id: string): number => {
    const have = layer.get(id);
    if (have !== undefined) return have;
    if (visiting.has(id)) return 0;
    visiting.add(id);
    let l = 0;
    const st = steps[known.get(id) ?? -1];
    for (const n of st?.needs ?? []) if (known.has(n.step) && n.step !== id) l = Math.max(l, layerOf(n.step) + 1);
    visiting.delete(id);
    layer.set(id, l);
    return l;
  };
  // Deep chains would overflow the stack with plain recursion: settle in definition order
  // from the roots first (definitions usually list a step after what it needs).
  for (const st of steps) layerOf(st.id);

  const slots = new Map<string, Slot>();
  const layers: Slot[][] = [];
  const put = (slot: Slot) => {
    slots.set(slot.key, slot);
    (layers[slot.layer] ??= []).push(slot);
  };
  for (const st of steps) {
    if (slots.has(`n:${st.id}`)) continue;
    put({ key: `n:${st.id}`, real: true, layer: layer.get(st.id) ?? 0, up: [], down: [], pos: 0, y: 0 });
  }
  const chains: { from: string; to: string; when: string; keys: string[] }[] = [];
  for (const st of steps) {
    const seen = new Set<string>();
    for (const n of st.needs) {
      if (!known.has(n.step) || n.step === st.id || seen.has(n.step)) continue;
      seen.add(n.step);
      const a = layer.get(n.step) ?? 0;
      const b = layer.get(st.id) ?? 0;
      if (b <= a) continue; // only from a broken cycle
      const keys = [`n:${n.step}`];
      for (let l = a + 1; l < b; l++) {
        const key = `d:${n.step}>${st.id}:${l}`;
        put({ key, real: false, layer: l, up: [], down: [], pos: 0, y: 0 });
        keys.push(key);
      }
      keys.push(`n:${st.id}`);
      for (let i = 0; i + 1 < keys.length; i++) {
        slots.get(keys[i])!.down.push(keys[i + 1]);
        slots.get(keys[i + 1])!.up.push(keys[i]);
      }
      chains.push({ from: n.step, to: st.id, when: n.when, keys });
    }
  }
  for (let l = 0; l < layers.length; l++) layers[l] ??= [];
  const renumber = (ls: Slot[]) => ls.forEach((slot, i) => (slot.pos = i));
  layers.forEach(renumber);

  // Barycenter sweeps, keeping the order with the fewest crossings.
  const crossings = (): number => {
    let total = 0;
    for (let l = 0; l + 1 < layers.length; l++) {
      const pairs: [number, number][] = [];
      for (const a of layers[l]) for (const k of a.down) pairs.push([a.pos, slots.get(k)!.pos]);
      if (pairs.length > 3000) return Number.NaN; // too big to count: keep sweeping
      for (let i = 0; i < pairs.length; i++)
        for (let j = i + 1; j < pairs.length; j++)
          if ((pairs[i][0] - pairs[j][0]) * (pairs[i][1] - pairs[j][1]) < 0) total++;
    }
    return total;
  };
  const snapshot = () => layers.map((ls) => ls.slice());
  let best = snapshot();
  let bestCount = crossings();
  const sortBy = (ls: Slot[], neighbours: (slot: Slot) => string[]) => {
    const bary = new Map<Slot, number>();
    for (const slot of ls) {
      const ns = neighbours(slot);
      bary.set(slot, ns.length ? ns.reduce((sum, k) => sum + slots.get(k)!.pos, 0) / ns.length : slot.pos);
    }
    ls.sort((a, b) => bary.get(a)! - bary.get(b)! || a.pos - b.pos);
    renumber(ls);
  };
  for (let pass = 0; pass < 4 && bestCount !== 0; pass++) {
    if (pass % 2 === 0) for (let l = 1; l < layers.length; l++) sortBy(layers[l], (x) => x.up);
    else for (let l = layers.length - 2; l >= 0; l--) sortBy(layers[l], (x) => x.down);
    const c = crossings();
    if (Number.isNaN(c) || c < bestCount) {
      best = snapshot();
      bestCount = c;
    }
  }
  best.forEach((ls, l) => {
    layers[l] = ls;
    renumber(ls);
  });

  // Vertical positions: stack each layer, then pull nodes toward their neighbours'
  // average while keeping order and spacing.
  const slotHeight = (slot: Slot) => (slot.real ? s.nodeHeight : 8);
  const gap = (a: Slot, b: Slot) => (slotHeight(a) + slotHeight(b)) / 2 + (a.real && b.real ? s.rowGap : 10);
  let tallest = 0;
  for (const ls of layers) {
    let y = 0;
    ls.forEach((slot, i) => {
      if (i > 0) y += gap(ls[i - 1], slot);
      slot.y = y;
    });
    if (ls.length) tallest = Math.max(tallest, y + slotHeight(ls[ls.length - 1]) / 2 + slotHeight(ls[0]) / 2);
  }
  const place = (ls: Slot[], neighbours: (slot: Slot) => string[]) => {
    if (!ls.length) return;
    const want = ls.map((slot) => {
      const ns = neighbours(slot);
      return ns.length ? ns.reduce((sum, k) => sum + slots.get(k)!.y, 0) / ns.length : slot.y;
    });
    // Forward: at least the gap below the previous; then backward: at most the gap above
    // the next, so the layer keeps close to where its neighbours want it.
    const ys = want.slice();
    for (let i = 1; i < ys.length; i++) ys[i] = Math.max(ys[i], ys[i - 1] + gap(ls[i - 1], ls[i]));
    for (let i = ys.length - 2; i >= 0; i--) ys[i] = Math.min(ys[i], ys[i + 1] - gap(ls[i], ls[i + 1]));
    for (let i = 1; i < ys.length; i++) ys[i] = Math.max(ys[i], ys[i - 1] + gap(ls[i - 1], ls[i]));
    // Keep every layer within the height of the tallest, so the graph does not drift
    // into a diagonal with empty corners.
    const top = ys[0] - slotHeight(ls[0]) / 2;
    const bottom = ys[ys.length - 1] + slotHeight(ls[ls.length - 1]) / 2;
    const shift = bottom > tallest ? tallest - bottom : top < 0 ? -top : 0;
    ls.forEach((slot, i) => (slot.y = ys[i] + shift));
  };
  for (let round = 0; round < 2; round++) {
    for (let l = 1; l < layers.length; l++) place(layers[l], (x) => x.up);
    for (let l = layers.length - 2; l >= 0; l--) place(layers[l], (x) => x.down);
  }
  let minY = Infinity;
  let maxY = -Infinity;
  for (const slot of slots.values()) {
    minY = Math.min(minY, slot.y - slotHeight(slot) / 2);
    maxY = Math.max(maxY, slot.y + slotHeight(slot) / 2);
  }
  if (!Number.isFinite(minY)) {
    minY = 0;
    maxY = 0;
  }
  const xOf = (l: number) => s.pad + l * (s.nodeWidth + s.layerGap);
  const yOf = (slot: Slot) => s.pad + slot.y - minY;

  const nodes = new Map<string, LayoutNode>();
  for (const slot of slots.values()) {
    if (!slot.real) continue;
    const id = slot.key.slice(2);
    nodes.set(id, { id, layer: slot.layer, x: xOf(slot.layer), y: yOf(slot) - s.nodeHeight / 2 });
  }
  // An edge leaves its source's right side, crosses each layer it skips straight through
  // its dummy's slot (so it passes between that layer's boxes, not over them), and enters
  // its target's left side.
  const edges: LayoutEdge[] = chains.map((c) => ({
    from: c.from,
    to: c.to,
    when: c.when,
    points: c.keys.flatMap((k, i) => {
      const slot = slots.get(k)!;
      const x = xOf(slot.layer);
      if (i === 0) return [{ x: x + s.nodeWidth, y: yOf(slot) }];
      if (i === c.keys.length - 1) return [{ x, y: yOf(slot) }];
      return [
        { x, y: yOf(slot) },
        { x: x + s.nodeWidth, y: yOf(slot) },
      ];
    }),
  }));
  // Spread the ends of edges meeting at one side of a box over that side, in the order
  // of where they come from, so they do not all meet in one point.
  const spread = (ends: { edge: LayoutEdge; index: number; toward: number }[]) => {
    if (ends.length < 2) return;
    ends.sort((a, b) => a.toward - b.toward);
    const span = Math.min(s.nodeHeight - 14, (ends.length - 1) * 12);
    ends.forEach((end, k) => {
      end.edge.points[end.index].y += -span / 2 + (span * k) / (ends.length - 1);
    });
  };
  const outs = new Map<string, { edge: LayoutEdge; index: number; toward: number }[]>();
  const ins = new Map<string, { edge: LayoutEdge; index: number; toward: number }[]>();
  for (const e of edges) {
    const last = e.points.length - 1;
    (outs.get(e.from) ?? outs.set(e.from, []).get(e.from)!).push({ edge: e, index: 0, toward: e.points[1].y });
    (ins.get(e.to) ?? ins.set(e.to, []).get(e.to)!).push({ edge: e, index: last, toward: e.points[last - 1].y });
  }
  for (const ends of outs.values()) spread(ends);
  for (const ends of ins.values()) spread(ends);

  return {
    nodes,
    edges,
    width: s.pad * 2 + Math.max(1, layers.length) * s.nodeWidth + Math.max(0, layers.length - 1) * s.layerGap,
    height: s.pad * 2 + (maxY - minY),
  };
}

/** An SVG path through `points` as horizontal-tangent cubic curves. */
export function curve(points: { x: number; y: number }[]): string {
  if (!points.length) return "";
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1];
    const b = points[i];
    const dx = (b.x - a.x) / 2;
    d += ` C${a.x + dx},${a.y} ${b.x - dx},${b.y} ${b.x},${b.y}`;
  }
  return d;
}
