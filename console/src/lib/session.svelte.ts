// Who is signed in, what they may call, and the tenant an administrator looks at.
import { auth, Code, ConnectError, credentials, describe } from "./api";

const STORAGE_KEY = "supervisor.token";

/** The signed-in principal, as WhoAmI answered. */
export interface Identity {
  tenant: string;
  role: string;
  principal: string;
  name: string;
  authEnabled: boolean;
  /** Full method paths the principal may call, e.g. /supervisor.v1.TaskService/CancelTask. */
  methods: Set<string>;
}

class Session {
  identity = $state<Identity | null>(null);
  /** The tenant an administrator acts in ("" = their own). */
  actingTenant = $state("");
  error = $state("");
  checking = $state(true);
  /** Whether the last sign-in failed for want of valid credentials (not a broken link). */
  unauthenticated = false;

  /** Whether the principal may call `service/method` (e.g. "TaskService/CancelTask"). */
  can(method: string): boolean {
    return this.identity?.methods.has(`/supervisor.v1.${method}`) ?? false;
  }

  /** Whether the principal administers (may look at other tenants). */
  get admin(): boolean {
    return this.identity?.role === "admin";
  }

  /** The tenant the pages show. */
  get tenant(): string {
    return this.actingTenant || this.identity?.tenant || "";
  }

  setTenant(tenant: string) {
    this.actingTenant = tenant === this.identity?.tenant ? "" : tenant;
    credentials.tenant = this.actingTenant;
  }

  /** Checks `token` (or none) with WhoAmI; keeps it for this browser tab when it works. */
  async signIn(token: string, remember = true): Promise<boolean> {
    credentials.token = token.trim();
    credentials.tenant = "";
    this.actingTenant = "";
    try {
      const me = await auth.whoAmI({});
      this.identity = {
        tenant: me.tenant,
        role: me.role,
        principal: me.principal,
        name: me.name,
        authEnabled: me.authEnabled,
        methods: new Set(me.methods),
      };
      this.error = "";
      if (remember && credentials.token) sessionStorage.setItem(STORAGE_KEY, credentials.token);
      return true;
    } catch (err) {
      this.identity = null;
      credentials.token = "";
      this.error = describe(err);
      this.unauthenticated = ConnectError.from(err).code === Code.Unauthenticated;
      return false;
    } finally {
      this.checking = false;
    }
  }

  signOut() {
    sessionStorage.removeItem(STORAGE_KEY);
    credentials.token = "";
    credentials.tenant = "";
    this.actingTenant = "";
    this.identity = null;
    this.error = "";
  }

  /** At start: the token this tab kept, or none (a node without authentication). */
  async resume() {
    const kept = sessionStorage.getItem(STORAGE_KEY) ?? "";
    const ok = await this.signIn(kept, true);
    if (ok) return;
    if (this.unauthenticated) {
      // The kept key no longer works (revoked, expired), or the node wants one.
      if (kept) sessionStorage.removeItem(STORAGE_KEY);
      else this.error = "";
    }
    // Any other error (the node is down...) stays on the sign-in page for people to read.
  }
}

export const session = new Session();
