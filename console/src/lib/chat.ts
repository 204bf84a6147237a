// Helpers of the chat pages: a conversation as WatchThread builds it (messages in seq
// order, the open reply pieced together from its deltas, skipping bytes already held),
// and the new-thread form's context lines.
import { TaskStatus } from "../gen/supervisor/v1/tasks_pb";
import { ThreadRole, type ReplyDelta, type ThreadEvent, type ThreadMessage, type TurnStatus } from "../gen/supervisor/v1/chat_pb";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The reply being written: the turn's task, its attempt (lease) and what it wrote so far. */
export interface OpenReply {
  taskId: string;
  /** The lease of the attempt whose text this is (0 before the first delta): it grows with
   * every attempt, also one that repeats an attempt number after a node was lost. */
  lease: bigint;
  /** That attempt's number, for display. */
  attempt: number;
  text: string;
  /** Bytes of `text` in UTF-8: deltas' offsets count bytes. */
  bytes: number;
  /** The turn's task status as last reported (queued until told otherwise). */
  status: TaskStatus;
  /** What the last status change said. */
  message: string;
}

export function newReply(taskId: string): OpenReply {
  return { taskId, lease: 0n, attempt: 0, text: "", bytes: 0, status: TaskStatus.QUEUED, message: "" };
}

/**
 * The reply with a delta added. A new lease (attempt) starts the text over; a delta of an
 * earlier lease, or bytes already held (a resumed watch sends the open reply again from 0),
 * add nothing and the same object comes back.
 */
export function applyDelta(reply: OpenReply, d: ReplyDelta): OpenReply {
  if (d.taskId !== reply.taskId || d.lease < reply.lease) return reply;
  const base = d.lease > reply.lease ? { ...reply, lease: d.lease, attempt: d.attempt, text: "", bytes: 0 } : reply;
  const offset = Number(d.offset);
  const piece = encoder.encode(d.text);
  const end = offset + piece.length;
  if (end <= base.bytes) return base;
  // Only the bytes after those held; a gap (never expected) is taken as it comes.
  const fresh = offset >= base.bytes ? d.text : decoder.decode(piece.subarray(base.bytes - offset));
  return { ...base, text: base.text + fresh, bytes: end };
}

/** The reply with its task's new status. */
export function applyTurn(reply: OpenReply, t: TurnStatus): OpenReply {
  if (t.taskId !== reply.taskId) return reply;
  return { ...reply, status: t.status, message: t.message };
}

/**
 * A conversation as it streams in. Not reactive itself: the page copies `messages` and
 * `reply` into its state when it draws (a replay can be thousands of events).
 */
export class Conversation {
  messages: ThreadMessage[] = [];
  /** The last message's seq: a watch resumes after it. */
  lastSeq = 0n;
  /** The reply being written, from the user message that opened its turn to the reply itself. */
  reply: OpenReply | null = null;
  /** Turns whose reply is in `messages` (a late delta or status of theirs is dropped). */
  private answered = new Set<string>();

  /** Takes one event; returns whether it changed anything. */
  apply(ev: ThreadEvent): boolean {
    switch (ev.event.case) {
      case "message":
        return this.message(ev.event.value);
      case "delta": {
        const d = ev.event.value;
        if (this.answered.has(d.taskId)) return false;
        const before = this.reply?.taskId === d.taskId ? this.reply : newReply(d.taskId);
        const after = applyDelta(before, d);
        if (after === this.reply) return false;
        this.reply = after;
        return true;
      }
      case "turn": {
        const t = ev.event.value;
        if (this.answered.has(t.taskId)) return false;
        this.reply = applyTurn(this.reply?.taskId === t.taskId ? this.reply : newReply(t.taskId), t);
        return true;
      }
      default:
        return false;
    }
  }

  /** Takes a message (from the watch, or from PostMessage's answer) unless it has it. */
  message(m: ThreadMessage): boolean {
    if (m.seq <= this.lastSeq) return false;
    this.lastSeq = m.seq;
    this.messages.push(m);
    if (m.role === ThreadRole.USER && m.taskId) {
      if (!this.answered.has(m.taskId)) this.reply = newReply(m.taskId);
    } else if (m.role === ThreadRole.ASSISTANT) {
      this.answered.add(m.taskId);
      if (this.reply?.taskId === m.taskId) this.reply = null;
    }
    return true;
  }
}

/** What a turn's status reads as while the reply is open. */
export function turnLabel(status: TaskStatus): string {
  switch (status) {
    case TaskStatus.QUEUED:
      return "queued";
    case TaskStatus.RUNNING:
      return "writing";
    case TaskStatus.RETRY_WAIT:
      return "retrying";
    case TaskStatus.SUCCEEDED:
      return "finishing";
    case TaskStatus.FAILED:
      return "failed";
    case TaskStatus.CANCELLED:
      return "cancelled";
    default:
      return "waiting";
  }
}

/** A badge's tone for a turn's status. */
export function turnTone(status: TaskStatus): "info" | "warn" | "bad" | "idle" | "ok" {
  switch (status) {
    case TaskStatus.RUNNING:
      return "info";
    case TaskStatus.RETRY_WAIT:
      return "warn";
    case TaskStatus.FAILED:
      return "bad";
    case TaskStatus.SUCCEEDED:
      return "ok";
    default:
      return "idle";
  }
}

/** A role as a word. */
export function roleName(role: ThreadRole): "user" | "assistant" | "unknown" {
  return role === ThreadRole.USER ? "user" : role === ThreadRole.ASSISTANT ? "assistant" : "unknown";
}

/**
 * The new-thread form's context: one `key=value` a line (blank lines skipped; the value
 * may hold `=`). An error names the first line that is not of that shape.
 */
export function parseContext(text: string): { context: Record<string, string>; error: string } {
  const context: Record<string, string> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    const key = eq < 0 ? "" : line.slice(0, eq).trim();
    if (!key) return { context: {}, error: `Context line ${i + 1} is not key=value: ${line}` };
    if (key in context) return { context: {}, error: `Context line ${i + 1} repeats the key ${key}.` };
    context[key] = line.slice(eq + 1).trim();
  }
  return { context, error: "" };
}
