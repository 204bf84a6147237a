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

/** Resolves once the page is visible (at once when it is). */
function visible(signal: AbortSignal): Promise<void> {
  if (document.visibilityState === "visible") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      document.removeEventListener("visibilitychange", check);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const check = () => {
      if (document.visibilityState === "visible") done();
    };
    document.addEventListener("visibilitychange", check);
    signal.addEventListener("abort", done);
  });
}

/**
 * Calls `open(signal)` and hands every item to `onItem`; when the stream fails with a
 * transient error, opens it again after 0.5, 1, 2... (at most 5) seconds. `open` is
 * called anew each time, so it can resume from what it saw (e.g. after_seq).
 *
 * While the browser tab is hidden the stream is closed, and opened again (resuming) when
 * the tab shows: over the node's HTTP/1.1 each open stream holds one of the six
 * connections a browser makes to a host, shared by all its tabs.
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
      await visible(controller.signal);
      if (controller.signal.aborted) return;
      // One call: ended by stop(), or by the tab being hidden.
      const call = new AbortController();
      const stopCall = () => call.abort();
      const hide = () => {
        if (document.visibilityState === "hidden") call.abort();
      };
      controller.signal.addEventListener("abort", stopCall);
      document.addEventListener("visibilitychange", hide);
      try {
        for await (const item of open(call.signal)) {
          pause = 500;
          options.onTrouble?.("");
          onItem(item);
        }
        options.onEnd?.();
        return;
      } catch (err) {
        if (controller.signal.aborted) return;
        if (call.signal.aborted || cancelled(err)) continue; // hidden: wait to be shown
        if (!transient(err)) {
          options.onTrouble?.(describe(err));
          return;
        }
        options.onTrouble?.(`${describe(err)}; trying again`);
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(pause * 2, 5000);
      } finally {
        controller.signal.removeEventListener("abort", stopCall);
        document.removeEventListener("visibilitychange", hide);
      }
    }
  })();
  return { stop: () => controller.abort() };
}

/** Calls `load` now and every `ms` until stopped, skipping while the tab is hidden; for what has no stream. */
export function poll(load: () => Promise<void>, ms: number): Follow {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const tick = async () => {
    try {
      if (document.visibilityState !== "hidden") await load();
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
