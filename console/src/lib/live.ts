// Following a server stream for as long as a page shows it: resumes after a break (the
// node restarts, the connection drops) with growing pauses, and stops when the page does.
import { cancelled, describe, transient } from "./api";

export interface Follow {
  /** Stops following (cancels the call). */
  stop(): void;
}

export interface FollowOptions {
  /** Called with a message for people when the stream broke and is being resumed ("" when it works again). */
  onTrouble?: (message: string) => void;
  /** Called when the stream ended by itself (not by stop()). */
  onEnd?: () => void;
}

/**
 * Calls `open(signal)` and hands every item to `onItem`; when the stream fails with a
 * transient error, opens it again after 0.5, 1, 2... (at most 5) seconds. `open` is
 * called anew each time, so it can resume from what it saw (e.g. after_seq).
 */
export function follow<T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  onItem: (item: T) => void,
  options: FollowOptions = {},
): Follow {
  const controller = new AbortController();
  (async () => {
    let pause = 500;
    while (!controller.signal.aborted) {
      try {
        for await (const item of open(controller.signal)) {
          pause = 500;
          options.onTrouble?.("");
          onItem(item);
        }
        options.onEnd?.();
        return;
      } catch (err) {
        if (controller.signal.aborted || cancelled(err)) return;
        if (!transient(err)) {
          options.onTrouble?.(describe(err));
          return;
        }
        options.onTrouble?.(`${describe(err)}; trying again`);
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(pause * 2, 5000);
      }
    }
  })();
  return { stop: () => controller.abort() };
}

/** Calls `load` now and every `ms` until stopped; for what has no stream. */
export function poll(load: () => Promise<void>, ms: number): Follow {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const tick = async () => {
    try {
      await load();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  void tick();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
