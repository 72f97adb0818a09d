// The one typed client: grpc-web on the page's own origin (the gateway), every call carrying
// "authorization: Bearer <token>" from the active credential (an API key, or a Clerk session
// token fetched fresh for each call so it is refreshed before it expires).
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AgentService } from "../gen/agentz/v1/agent_pb";
import { SystemService } from "../gen/agentz/v1/system_pb";
import { TaskService } from "../gen/agentz/v1/task_pb";
import { WorkflowService } from "../gen/agentz/v1/workflow_pb";

export type TokenSource = () => Promise<string | null>;

let tokenSource: TokenSource = async () => null;
let onUnauthenticated: (e: ConnectError) => void = () => {};

/** Sets where tokens come from (the active credential). */
export function setTokenSource(t: TokenSource): void {
  tokenSource = t;
}

/** Called when a unary call is refused UNAUTHENTICATED (revoked key, expired session). */
export function setUnauthenticatedHandler(f: (e: ConnectError) => void): void {
  onUnauthenticated = f;
}

function authInterceptor(source: () => TokenSource, report: boolean): Interceptor {
  return (next) => async (req) => {
    const token = await source()();
    if (token) req.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(req);
    } catch (e) {
      const ce = ConnectError.from(e);
      if (report && ce.code === Code.Unauthenticated) onUnauthenticated(ce);
      throw ce;
    }
  };
}

function transport(source: () => TokenSource, report: boolean): Transport {
  return createGrpcWebTransport({
    baseUrl: typeof window === "undefined" ? "http://127.0.0.1:8080" : window.location.origin,
    interceptors: [authInterceptor(source, report)],
  });
}

export interface Api {
  agents: Client<typeof AgentService>;
  tasks: Client<typeof TaskService>;
  workflows: Client<typeof WorkflowService>;
  system: Client<typeof SystemService>;
}

function clients(t: Transport): Api {
  return {
    agents: createClient(AgentService, t),
    tasks: createClient(TaskService, t),
    workflows: createClient(WorkflowService, t),
    system: createClient(SystemService, t),
  };
}

/** The clients of the active credential. */
export const api: Api = clients(transport(() => tokenSource, true));

/** Clients bound to one token, e.g. to check a pasted key with WhoAmI before saving it. */
export function apiFor(token: string): Api {
  return clients(transport(() => async () => token, false));
}

/** A new idempotency key for a create call. */
export function requestId(): string {
  return crypto.randomUUID();
}
