// Routes as shareable URLs (history API): /tasks/<id>, /workflows/runs/<id>, /cluster/nodes/<id>...
// The node answers every path without a file extension with the console's page.

/** The current location: the path and the query parameters. */
class Router {
  path = $state(window.location.pathname);
  query = $state(new URLSearchParams(window.location.search));

  constructor() {
    window.addEventListener("popstate", () => this.sync());
  }

  private sync() {
    this.path = window.location.pathname;
    this.query = new URLSearchParams(window.location.search);
  }

  /** Goes to `url` (a path with an optional query), adding a history entry. */
  go(url: string, replace = false) {
    if (url === window.location.pathname + window.location.search) return;
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
    this.sync();
    // A new page starts at the top; a filter or sort of the same page stays where it is.
    if (!replace) window.scrollTo(0, 0);
  }

  /** Replaces the query parameters of the current path (filters), without a new entry. */
  setQuery(params: Record<string, string>) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
    const s = q.toString();
    this.go(window.location.pathname + (s ? `?${s}` : ""), true);
  }

  /** The parameters of `pattern` (":name" segments) when the path matches it. */
  match(pattern: string): Record<string, string> | null {
    const want = pattern.split("/").filter(Boolean);
    const have = this.path.split("/").filter(Boolean);
    if (want.length !== have.length) return null;
    const params: Record<string, string> = {};
    for (let i = 0; i < want.length; i++) {
      if (want[i].startsWith(":")) {
        try {
          params[want[i].slice(1)] = decodeURIComponent(have[i]);
        } catch {
          // A malformed escape: the raw segment, which the page then reports as not found.
          params[want[i].slice(1)] = have[i];
        }
      }
      else if (want[i] !== have[i]) return null;
    }
    return params;
  }
}

export const router = new Router();

/** A click handler for in-app links: plain clicks navigate without reloading. */
export function link(event: MouseEvent) {
  const a = (event.currentTarget as HTMLElement).closest("a");
  if (!a || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  if (a.target || a.origin !== window.location.origin) return;
  event.preventDefault();
  router.go(a.pathname + a.search);
}
