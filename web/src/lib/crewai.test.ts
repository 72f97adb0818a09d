// The UI's CrewAI mapping against the CLI's own output: test/crewai*/ hold crews with the
// `agentz import crewai --dry-run` result and warnings the CLI printed for them
// (scripts/crewai-golden.sh regenerates them), plus export -> import round trips.
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { create, toJson } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AgentSchema } from "../gen/agentz/v1/agent_pb";
import { Process, TemplateSchema, WorkflowSchema } from "../gen/agentz/v1/workflow_pb";
import { bindWorkflowAgents, crewStepId, exportCrew, formatG, importCrew, planCrewImport, CrewaiError, type CrewImportOptions } from "./crewai";
import { crewaiKey, crewaiRequestId } from "./fnv";
import { parseYaml, resolvePlain, YInt } from "./yamlValue";

const web = resolve(__dirname, "../..");
const read = (p: string) => readFileSync(p, "utf8");

interface Case {
  dir: string;
  agents: string;
  tasks: string;
  agentsName: string;
  tasksName: string;
  opts: CrewImportOptions;
}

function localCases(): Case[] {
  const base = join(web, "test/crewai");
  return readdirSync(base).map((d) => {
    const dir = join(base, d);
    const args = JSON.parse(read(join(dir, "args.json"))) as Partial<CrewImportOptions>;
    return {
      dir,
      agents: read(join(dir, "agents.yaml")),
      tasks: read(join(dir, "tasks.yaml")),
      agentsName: "./agents.yaml",
      tasksName: "./tasks.yaml",
      opts: { name: args.name ?? d, source: d, process: args.process, managerLlm: args.managerLlm },
    };
  });
}

function cliCases(): Case[] {
  const fixtures = join(web, "../tests/unit/fixtures/crewai");
  const where: Record<string, string> = {
    latest_ai_development: "latest_ai_development/src/latest_ai_development/config",
    market_research: "market_research/config",
    broken_syntax: "broken_syntax",
    broken_agent: "broken_agent/config",
  };
  return Object.entries(where).map(([p, rel]) => ({
    dir: join(web, "test/crewai-cli", p),
    agents: read(join(fixtures, rel, "agents.yaml")),
    tasks: read(join(fixtures, rel, "tasks.yaml")),
    agentsName: `${rel}/agents.yaml`,
    tasksName: `${rel}/tasks.yaml`,
    opts: { name: p, source: p },
  }));
}

function cliResult(dir: string): { json: unknown; warnings: string[]; error: string | null } {
  const stderr = read(join(dir, "stderr.txt")).split("\n").filter(Boolean);
  const warnings = stderr.filter((l) => l.startsWith("warning: ")).map((l) => l.slice(9));
  const err = stderr.find((l) => l.startsWith("error: "));
  const file = join(dir, "expected.json");
  return {
    json: existsSync(file) ? JSON.parse(read(file)) : null,
    warnings,
    error: err ? err.replace(/^error: [A-Z_]+: /, "") : null,
  };
}

describe("import crewai equals the CLI", () => {
  for (const c of [...localCases(), ...cliCases()]) {
    it(c.dir.split("/").slice(-2).join("/"), () => {
      const want = cliResult(c.dir);
      const run = () => importCrew(c.agents, c.tasks, { ...c.opts, agentsName: c.agentsName, tasksName: c.tasksName });
      if (want.error) {
        expect(run).toThrow(CrewaiError);
        const got = (() => {
          try {
            run();
            return "";
          } catch (e) {
            return (e as Error).message;
          }
        })();
        if (/:\d+:\d+: /.test(want.error)) {
          // YAML syntax errors: libyaml and the yaml package word them differently; both name
          // the file and a line:column.
          expect(got).toMatch(new RegExp(`^${c.tasksName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: |^${c.agentsName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: `));
          if (want.error.includes("merge keys")) expect(got).toBe(want.error);
        } else {
          expect(got).toBe(want.error);
        }
        return;
      }
      const got = run();
      expect(toJson(TemplateSchema, got.template)).toEqual(want.json);
      expect(got.notes).toEqual(want.warnings);
    });
  }
});

describe("import details", () => {
  it("maps async tasks to parallel depends_on as the CLI documents", () => {
    const c = localCases().find((x) => x.dir.endsWith("mixed"))!;
    const { template } = importCrew(c.agents, c.tasks, c.opts);
    const wf = template.workflow!;
    expect(wf.process).toBe(Process.PARALLEL);
    const byId = Object.fromEntries(wf.steps.map((s) => [s.id, s]));
    // async tasks run from the start; the next synchronous task waits for all of them
    expect(byId.research_task!.dependsOn).toEqual([]);
    expect(byId.second_research!.dependsOn).toEqual([]);
    expect(byId.write_task!.dependsOn).toEqual(["research_task", "second_research"]);
    expect(byId.write_task!.contextFrom).toEqual(["research_task", "second_research"]);
    expect(byId.final!.dependsOn).toEqual(["edit_task", "write_task"]);
    expect(wf.inputs.map((i) => i.name)).toEqual(["topic", "current_year", "subject"]);
    expect(wf.inputs.every((i) => i.required)).toBe(true);
  });

  it("refuses --manager-llm with another process and needs it for hierarchical", () => {
    const c = localCases().find((x) => x.dir.endsWith("hier"))!;
    expect(() => importCrew(c.agents, c.tasks, { name: "x", process: "parallel", managerLlm: "openai/gpt-4o" })).toThrow("--manager-llm needs --process hierarchical");
    expect(() => importCrew(c.agents, c.tasks, { name: "x", process: "hierarchical" })).toThrow("--process hierarchical needs --manager-llm MODEL");
    const h = importCrew(c.agents, c.tasks, { name: "x", managerLlm: "anthropic/claude-3-5-haiku" });
    expect(h.template.workflow!.process).toBe(Process.HIERARCHICAL);
    expect(h.template.workflow!.managerAgentId).toBe("x-manager");
    expect(h.template.agents.at(-1)!.llm!.provider).toBe("anthropic");
  });

  it("step ids follow the CLI's alphabet", () => {
    expect(crewStepId("Research Task!")).toBe("research_task_");
    expect(crewStepId("a-b_C9")).toBe("a-b_c9");
    expect(crewStepId("é")).toBe("__");
    expect(crewStepId("x".repeat(80))).toHaveLength(63);
  });

  it("refuses two tasks that map to one step id", () => {
    const agents = "a: {role: A, goal: G, backstory: B}\n";
    expect(() => importCrew(agents, "One: {description: d, expected_output: e, agent: a}\none: {description: d, expected_output: e, agent: a}\n", { name: "w" })).toThrow(
      'tasks.yaml: tasks One and one both become step id "one"',
    );
  });

  it("formats numbers as printf %g does", () => {
    expect(formatG(1.5, 9)).toBe("1.5");
    expect(formatG(300, 9)).toBe("300");
    expect(formatG(0.1, 17)).toBe("0.10000000000000001");
    expect(formatG(1e21, 17)).toBe("1e+21");
    expect(formatG(0.00001, 9)).toBe("1e-05");
  });
});

describe("YAML typing follows the CLI's loader", () => {
  it("resolves plain scalars like PyYAML", () => {
    expect(resolvePlain("yes")).toBe(true);
    expect(resolvePlain("Off")).toBe(false);
    expect(resolvePlain("~")).toBe(null);
    expect(resolvePlain("0x1F")).toEqual(new YInt(31n));
    expect(resolvePlain("017")).toEqual(new YInt(15n));
    expect(resolvePlain("1_000")).toEqual(new YInt(1000n));
    expect(resolvePlain("1e3")).toBe("1e3");
    expect(resolvePlain("1.e3")).toBe(1000);
    expect(resolvePlain("9223372036854775808")).toBe("9223372036854775808");
  });
  it("keeps quoted scalars as strings and resolves aliases", () => {
    const v = parseYaml('a: "yes"\nb: &x [1, 2]\nc: *x\nd: |\n  two\n  lines\n', "t.yaml") as Map<string, unknown>;
    expect(v.get("a")).toBe("yes");
    expect(v.get("c")).toEqual([new YInt(1n), new YInt(2n)]);
    expect(v.get("d")).toBe("two\nlines\n");
  });
});

describe("import plan (request ids and names) equals the CLI's", () => {
  it("derives the CLI's FNV keys", () => {
    // Vectors computed with client/crewai.c (az_crewai_key, az_crewai_request_id).
    expect(crewaiKey("a", "b", { name: "w" })).toBe(GOLDEN.key);
    expect(crewaiRequestId(GOLDEN.key, "agent", "researcher")).toBe(GOLDEN.agent);
    expect(crewaiRequestId(GOLDEN.key, "workflow", "w")).toBe(GOLDEN.workflow);
    expect(crewaiKey("a", "b", { name: "w", process: "parallel" })).not.toBe(GOLDEN.key);
    expect(crewaiKey("ä: 1\n", "t: x\r\n", { name: "crëw", process: "hierarchical", managerLlm: "openai/gpt-4o" })).toBe(GOLDEN.key2);
  });

  it("names agents <workflow>/<key> and binds steps to the created ids", () => {
    const c = cliCases().find((x) => x.dir.endsWith("latest_ai_development"))!;
    const imp = importCrew(c.agents, c.tasks, c.opts);
    const plan = planCrewImport(c.agents, c.tasks, c.opts, imp);
    expect(plan.agents.map((a) => a.agent.name)).toEqual(["latest_ai_development/researcher", "latest_ai_development/reporting_analyst"]);
    expect(plan.agents[0]!.requestId).toMatch(/^crewai-[0-9a-f]{32}$/);
    expect(new Set(plan.agents.map((a) => a.requestId)).size).toBe(2);
    // the template itself is not changed by planning
    expect(imp.template.agents[0]!.name).toBe("researcher");
    const wf = bindWorkflowAgents(imp.template.workflow!, new Map([["researcher", "id-1"], ["reporting_analyst", "id-2"]]));
    expect(wf.steps.map((s) => s.agentId)).toEqual(["id-1", "id-2"]);
    expect(imp.template.workflow!.steps[0]!.agentId).toBe("researcher");
  });
});

describe("export crewai", () => {
  it("round-trips every sequential fixture crew: import(export(import(x))) == import(x)", () => {
    for (const c of [...localCases(), ...cliCases()]) {
      const want = cliResult(c.dir);
      if (want.error) continue;
      const first = importCrew(c.agents, c.tasks, c.opts);
      if (first.template.workflow!.process === Process.HIERARCHICAL) continue; // the manager is not written
      const ex = exportCrew(first.template.workflow!, first.template.agents);
      if (first.template.workflow!.process === Process.PARALLEL) {
        // CrewAI's files have no depends_on: the export says so instead of guessing async marks.
        expect(ex.notes.some((n) => n.includes("parallel process: CrewAI runs the tasks in file order"))).toBe(true);
        continue;
      }
      const again = importCrew(ex.agentsYaml, ex.tasksYaml, c.opts);
      type AgentJson = { name: string; maxExecutionTime?: string; llm?: { temperature?: number; maxTokens?: number } };
      const strip = (t: typeof first.template) => toJson(TemplateSchema, t) as { agents: AgentJson[] };
      // Agents that no step uses are not exported; what agents.yaml cannot hold is dropped with a
      // warning (temperature, max_tokens) or rounded up to whole seconds (max_execution_time).
      const used = new Set(first.template.workflow!.steps.map((s) => s.agentId));
      const a = strip(first.template);
      a.agents = a.agents.filter((x) => used.has(x.name));
      for (const ag of a.agents) {
        if (ag.llm && (ag.llm.temperature !== undefined || ag.llm.maxTokens !== undefined)) {
          expect(ex.notes).toContain(`agent ${ag.name}: llm temperature, max_tokens, timeout and api_key_secret are not part of agents.yaml; set them in crew.py`);
          delete ag.llm.temperature;
          delete ag.llm.maxTokens;
        }
        if (ag.maxExecutionTime) ag.maxExecutionTime = `${Math.ceil(parseFloat(ag.maxExecutionTime))}s`;
      }
      expect(strip(again.template)).toEqual(a);
    }
  });

  it("warns for what tasks.yaml cannot hold", () => {
    const wf = create(WorkflowSchema, {
      name: "w",
      process: Process.HIERARCHICAL,
      webhookUrls: ["https://example.com/h"],
      steps: [{ id: "s1", agentId: "A1", description: "d", expectedOutput: "e", timeout: { seconds: 5n } }],
    });
    const agent = create(AgentSchema, {
      id: "A1",
      name: "crew/a",
      role: "R",
      goal: "G",
      backstory: "B",
      llm: { provider: "openai", model: "gpt-4o", baseUrl: "https://llm.internal/v1", temperature: 0.1 },
      maxExecutionTime: { seconds: 2n, nanos: 1 },
      disabled: true,
    });
    const ex = exportCrew(wf, [agent]);
    expect(ex.notes).toEqual([
      "workflow w: hierarchical process: set process=Process.hierarchical and manager_llm in crew.py (the manager agent is not written)",
      "workflow w: webhooks, labels and failure_policy have no CrewAI equivalent; dropped",
      "agent crew/a: llm.base_url https://llm.internal/v1 cannot be written in agents.yaml; dropped",
      "agent crew/a: llm temperature, max_tokens, timeout and api_key_secret are not part of agents.yaml; set them in crew.py",
      "agent crew/a: disabled has no CrewAI equivalent; dropped",
      "step s1: retry_policy, timeout and output_schema have no tasks.yaml equivalent; dropped",
    ]);
    const agents = parseYaml(ex.agentsYaml, "agents.yaml") as Map<string, Map<string, unknown>>;
    expect(agents.get("crew/a")!.get("llm")).toBe("openai/gpt-4o");
    expect(agents.get("crew/a")!.get("max_execution_time")).toEqual(new YInt(3n));
  });

  it("quotes strings that would read back as other types and keeps multi-line text", () => {
    const wf = create(WorkflowSchema, {
      name: "w",
      process: Process.SEQUENTIAL,
      steps: [{ id: "s1", agentId: "A", description: "line one\nline two", expectedOutput: "yes" }],
    });
    const ex = exportCrew(wf, [create(AgentSchema, { id: "A", name: "a", role: "0x10", goal: "~", backstory: "on" })]);
    const t = parseYaml(ex.tasksYaml, "tasks.yaml") as Map<string, Map<string, unknown>>;
    expect(t.get("s1")!.get("expected_output")).toBe("yes");
    expect(t.get("s1")!.get("description")).toBe("line one\nline two\n".slice(0, -1) + (ex.tasksYaml.includes("|-") ? "" : "\n"));
    const a = parseYaml(ex.agentsYaml, "agents.yaml") as Map<string, Map<string, unknown>>;
    expect([a.get("a")!.get("role"), a.get("a")!.get("goal"), a.get("a")!.get("backstory")]).toEqual(["0x10", "~", "on"]);
  });

  it("refuses a step whose agent was not given", () => {
    const wf = create(WorkflowSchema, { name: "w", steps: [{ id: "s", agentId: "missing", description: "d", expectedOutput: "e" }] });
    expect(() => exportCrew(wf, [])).toThrow("step s: agent missing was not given");
  });
});

const GOLDEN = {
  key: "661cf386cfbd5e33ba7b905678cf2162",
  agent: "crewai-ebedcc93a0255c206fd6ba82dda65aad",
  workflow: "crewai-d180226dd2493bf178e3039f3242b8b4",
  /** crewaiKey("ä: 1\n", "t: x\r\n", {name: "crëw", process: "hierarchical", managerLlm: "openai/gpt-4o"}) */
  key2: "dc7508c1cdd3dcf515895d29fcb0a8fc",
};
