// The node's API over gRPC-Web, from the page's own origin (the node's HTTP side serves
// both the console and the API; no other origin is allowed to call it from a browser).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AnalyticsService } from "../gen/supervisor/v1/analytics_pb";
import { AuthService } from "../gen/supervisor/v1/auth_pb";
import { ChatService } from "../gen/supervisor/v1/chat_pb";
import { ClusterService } from "../gen/supervisor/v1/cluster_pb";
import { ProviderService } from "../gen/supervisor/v1/providers_pb";
import { ResourceService } from "../gen/supervisor/v1/resources_pb";
import { TaskService } from "../gen/supervisor/v1/tasks_pb";
import { WorkflowService } from "../gen/supervisor/v1/workflows_pb";

/** Credentials and the tenant an administrator acts in, sent with every call. */
export const credentials = { token: "", tenant: "" };

const authorize: Interceptor = (next) => async (req) => {
  if (credentials.token) req.header.set("authorization", `Bearer ${credentials.token}`);
  if (credentials.tenant) req.header.set("supervisor-tenant", credentials.tenant);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [authorize],
});

export const tasks = createClient(TaskService, transport);
export const workflows = createClient(WorkflowService, transport);
export const providers = createClient(ProviderService, transport);
export const cluster = createClient(ClusterService, transport);
export const resources = createClient(ResourceService, transport);
export const analytics = createClient(AnalyticsService, transport);
export const auth = createClient(AuthService, transport);
export const chat = createClient(ChatService, transport);

/** A call's error as people read it: the server's message, with its code's name. */
export function describe(err: unknown): string {
  if (err instanceof ConnectError) {
    if (err.code === Code.Unavailable && !err.rawMessage) return "the node is not reachable";
    return `${Code[err.code] ?? "error"}: ${err.rawMessage}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Whether an error is the stream's own end by cancellation (the page moved on). */
export function cancelled(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}

/** Whether retrying the same call later may work (the node restarts, the link breaks). */
export function transient(err: unknown): boolean {
  const code = ConnectError.from(err).code;
  return code === Code.Unavailable || code === Code.Unknown || code === Code.Internal || code === Code.DeadlineExceeded;
}

export { Code, ConnectError };
