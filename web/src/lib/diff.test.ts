import { clone, create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Process, WorkflowSchema } from "../gen/agentz/v1/workflow_pb";
import { diffWorkflows } from "./diff";

const v1 = create(WorkflowSchema, {
  id: "w",
  version: 1,
  etag: "e1",
  name: "crew",
  process: Process.SEQUENTIAL,
  steps: [
    { id: "a", agentId: "A", description: "research {topic}", expectedOutput: "notes" },
    { id: "b", agentId: "B", description: "write", expectedOutput: "text" },
  ],
  inputs: [{ name: "topic", required: true }],
});

describe("version diff", () => {
  it("two versions that differ only in version, etag and times are the same", () => {
    const v2 = clone(WorkflowSchema, v1);
    v2.version = 2;
    v2.etag = "e2";
    v2.updateTime = { $typeName: "google.protobuf.Timestamp", seconds: 5n, nanos: 0 };
    const d = diffWorkflows(v1, v2);
    expect(d.same).toBe(true);
    expect(d.fields).toEqual([]);
  });

  it("lists changed fields, added, removed, changed and reordered steps, and inputs", () => {
    const v2 = create(WorkflowSchema, {
      id: "w",
      name: "crew",
      version: 2,
      process: Process.PARALLEL,
      steps: [
        { id: "b", agentId: "B", description: "write well", expectedOutput: "text", dependsOn: ["a"] },
        { id: "a", agentId: "A", description: "research {topic}", expectedOutput: "notes" },
        { id: "c", agentId: "C", description: "review", expectedOutput: "ok" },
      ],
      inputs: [{ name: "topic", required: false, defaultValue: "AI" }],
    });
    const d = diffWorkflows(v1, v2);
    expect(d.same).toBe(false);
    expect(d.fields).toEqual([{ field: "process", before: "PROCESS_SEQUENTIAL", after: "PROCESS_PARALLEL" }]);
    expect(d.steps.added).toEqual(["c"]);
    expect(d.steps.removed).toEqual([]);
    expect(d.steps.orderChanged).toBe(true);
    expect(d.steps.changed).toEqual([
      {
        id: "b",
        changes: [
          { field: "dependsOn", before: undefined, after: ["a"] },
          { field: "description", before: "write", after: "write well" },
        ],
      },
    ]);
    expect(d.inputs.changed[0]!.changes.map((c) => c.field)).toEqual(["defaultValue", "required"]);
    const back = diffWorkflows(v2, v1);
    expect(back.steps.removed).toEqual(["c"]);
  });
});
