// npm's Connect clients (@connectrpc/connect with connect-web's transports, on Node's fetch)
// against the real gateway: agentzd --roles api,worker,gateway with its own PostgreSQL and Redis
// and the fake LLM (e2e/stack.mjs). Generated protobuf-es code, no line of it ours: the grpc-web
// transport (binary, the UI's) and the Connect protocol (JSON and binary), unary calls, errors
// with their codes and field-naming messages, server streaming, resume by after_sequence,
// metadata both ways, deadlines and authentication.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startStack } from "../stack.mjs";
import { AgentSchema, AgentService } from "../../src/gen/agentz/v1/agent_pb";
import { TaskStatus } from "../../src/gen/agentz/v1/common_pb";
import type { Event } from "../../src/gen/agentz/v1/event_pb";
import { SystemService } from "../../src/gen/agentz/v1/system_pb";
import { TaskService } from "../../src/gen/agentz/v1/task_pb";

let stack: Awaited<ReturnType<typeof startStack>>;

beforeAll(async () => {
  // Long enough words that the task streams a few dozen token deltas.
  stack = await startStack({ fakeArgs: ["--text", "Forty-two is the answer to everything asked here.", "--chunk-size", "3", "--chunk-delay-ms", "15"] });
}, 180_000);

afterAll(async () => {
  if (stack) expect(await stack.stop()).toBe(0);
}, 60_000);

const TERMINAL = new Set([TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED]);

function auth(token: string | null): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

const transports: Record<string, () => Transport> = {
  "grpc-web (binary)": () => createGrpcWebTransport({ baseUrl: stack.origin }),
  "Connect (JSON)": () => createConnectTransport({ baseUrl: stack.origin }),
  "Connect (binary)": () => createConnectTransport({ baseUrl: stack.origin, useBinaryFormat: true }),
};

async function collect(it: AsyncIterable<Event>, until?: (e: Event) => boolean): Promise<Event[]> {
  const out: Event[] = [];
  for await (const e of it) {
    out.push(e);
    if (until?.(e)) break;
  }
  return out;
}

function taskStatus(e: Event): TaskStatus | undefined {
  return e.payload.case === "taskStatus" ? e.payload.value.to : undefined;
}

for (const [name, make] of Object.entries(transports)) {
  describe(name, () => {
    let agents: Client<typeof AgentService>;
    let tasks: Client<typeof TaskService>;
    let system: Client<typeof SystemService>;
    const tag = `${name.replace(/\W+/g, "-").toLowerCase()}${Date.now().toString(36)}`;

    beforeAll(() => {
      const t = make();
      agents = createClient(AgentService, t);
      tasks = createClient(TaskService, t);
      system = createClient(SystemService, t);
    });

    it("creates, gets and lists agents; int64, enums and timestamps arrive typed", async () => {
      const headers = { ...auth(stack.token), "x-request-id": `req-${tag}` };
      let requestId: string | null = null;
      const a = await agents.createAgent(
        { agent: create(AgentSchema, { name: `writer-${tag}`, role: "Writer", goal: "Write", backstory: "Writes things.", maxIter: 3 }) },
        { headers, onHeader: (h) => (requestId = h.get("x-request-id")) },
      );
      expect(a.id).toMatch(/\S/);
      expect(a.name).toBe(`writer-${tag}`);
      expect(a.maxIter).toBe(3);
      expect(a.createTime?.seconds).toBeTypeOf("bigint");
      expect(Number(a.createTime?.seconds)).toBeGreaterThan(1_700_000_000);
      expect(requestId).toBe(`req-${tag}`);
      const got = await agents.getAgent({ id: a.id }, { headers: auth(stack.token) });
      expect(got.id).toBe(a.id);
      expect(got.role).toBe("Writer");
      const list = await agents.listAgents({ pageSize: 1000 }, { headers: auth(stack.token) });
      expect(list.agents.map((x) => x.id)).toContain(a.id);
      const me = await system.whoAmI({}, { headers: auth(stack.token) });
      expect(me.workspaceId).toMatch(/\S/);
    });

    it("gives errors their codes and messages that name the field, and changes nothing", async () => {
      const before = (await agents.listAgents({ pageSize: 1000 }, { headers: auth(stack.token) })).agents.length;
      const bad = await agents
        .createAgent({ agent: create(AgentSchema, { name: `nameless-role-${tag}`, goal: "g", backstory: "b" }) }, { headers: auth(stack.token) })
        .catch((e: unknown) => ConnectError.from(e));
      expect(bad).toBeInstanceOf(ConnectError);
      expect((bad as ConnectError).code).toBe(Code.InvalidArgument);
      expect((bad as ConnectError).rawMessage).toMatch(/agent\.role/);
      const after = (await agents.listAgents({ pageSize: 1000 }, { headers: auth(stack.token) })).agents.length;
      expect(after).toBe(before);

      const missing = await agents.getAgent({ id: "00000000-0000-4000-8000-000000000000" }, { headers: auth(stack.token) }).catch((e: unknown) => ConnectError.from(e));
      expect((missing as ConnectError).code).toBe(Code.NotFound);

      const anon = await agents.listAgents({}, { headers: auth(null) }).catch((e: unknown) => ConnectError.from(e));
      expect((anon as ConnectError).code).toBe(Code.Unauthenticated);
      const wrong = await agents.listAgents({}, { headers: auth("azk_not_a_real_key") }).catch((e: unknown) => ConnectError.from(e));
      expect((wrong as ConnectError).code).toBe(Code.Unauthenticated);
    });

    it("streams a task's events to its end, then resumes after a sequence with each event once", async () => {
      const a = await agents.createAgent({ agent: create(AgentSchema, { name: `streamer-${tag}`, role: "Writer", goal: "Write", backstory: "Writes." }) }, { headers: auth(stack.token) });
      const t = await tasks.createTask({ task: { description: "Say the answer.", expectedOutput: "A sentence.", agentId: a.id } }, { headers: auth(stack.token) });
      const all = await collect(tasks.watchTask({ taskId: t.id, includeTokens: true }, { headers: auth(stack.token), timeoutMs: 60_000 }));
      const statuses = all.map(taskStatus).filter((s) => s !== undefined);
      expect(statuses.at(-1)).toBe(TaskStatus.SUCCEEDED);
      expect(all.some((e) => e.payload.case === "token")).toBe(true);
      const text = all.flatMap((e) => (e.payload.case === "token" ? [e.payload.value.text] : [])).join("");
      expect(text).toContain("Forty-two");
      const durable = all.filter((e) => e.sequence > 0n).map((e) => e.sequence);
      expect(durable.length).toBeGreaterThanOrEqual(3);
      for (let i = 1; i < durable.length; i++) expect(durable[i]).toBeGreaterThan(durable[i - 1] as bigint);

      // A client that saw up to the second durable event resumes from there: the rest, once.
      const cut = durable[1] as bigint;
      const rest = await collect(tasks.watchTask({ taskId: t.id, afterSequence: cut }, { headers: auth(stack.token), timeoutMs: 30_000 }));
      expect(rest.map((e) => e.sequence)).toEqual(durable.filter((s) => s > cut));
      expect(rest.some((e) => e.payload.case === "token")).toBe(false);
      expect(TERMINAL.has(taskStatus(rest.at(-1) as Event) ?? TaskStatus.UNSPECIFIED)).toBe(true);
    }, 90_000);

    it("ends a quiet stream at its deadline with DEADLINE_EXCEEDED, and a stream of a missing task with NOT_FOUND", async () => {
      const t0 = Date.now();
      const quiet = await collect(agents.watchAgents({ agentIds: ["00000000-0000-4000-8000-000000000001"] }, { headers: auth(stack.token), timeoutMs: 1500 })).catch((e: unknown) => ConnectError.from(e));
      expect(quiet).toBeInstanceOf(ConnectError);
      expect((quiet as ConnectError).code).toBe(Code.DeadlineExceeded);
      expect(Date.now() - t0).toBeLessThan(10_000);

      const gone = await collect(tasks.watchTask({ taskId: "00000000-0000-4000-8000-000000000002" }, { headers: auth(stack.token) })).catch((e: unknown) => ConnectError.from(e));
      expect((gone as ConnectError).code).toBe(Code.NotFound);
    }, 30_000);
  });
}
