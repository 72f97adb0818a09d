import { describe, expect, it } from "vitest";
import { fieldOf, parseFieldError } from "./fieldError";

describe("field errors from server messages", () => {
  it("splits a resource path from the text", () => {
    const e = parseFieldError("agent.role is required");
    expect(e.path).toBe("agent.role");
    expect(e.detail).toBe("is required");
    expect(fieldOf("agent.role is required", "agent")).toBe("role");
    expect(fieldOf("agent.llm.model: longer than 128 characters", "agent")).toBe("llm.model");
  });

  it("reads step paths with index and quoted id", () => {
    const e = parseFieldError('workflow.steps[2] ("review").depends_on[0]: unknown step "draft"');
    expect(e.path).toBe("workflow.steps[2].depends_on[0]");
    expect(e.segments).toEqual(["workflow", "steps", 2, "depends_on", 0]);
    expect(e.stepId).toBe("review");
    expect(e.detail).toBe('unknown step "draft"');
    expect(fieldOf(e.message, "workflow")).toBe("steps[2].depends_on[0]");
  });

  it("reads the 'step ID:' form", () => {
    const e = parseFieldError("step s2: depends_on names unknown step x");
    expect(e.stepId).toBe("s2");
    expect(e.path).toBe("steps.depends_on");
    expect(e.detail).toBe("names unknown step x");
  });

  it("bare field names before a colon", () => {
    expect(parseFieldError('inputs: missing required input "topic"').path).toBe("inputs");
    expect(parseFieldError("name: longer than 128 characters").detail).toBe("longer than 128 characters");
  });

  it("leaves sentences without a field path as form-level errors", () => {
    for (const m of [
      "role viewer may not call CreateAgent (needs editor)",
      "api key is unknown, revoked or expired",
      "stream consumer too slow: more than 256 messages waiting; resume with after_sequence = 12",
      "dependency cycle a -> b -> a",
      "Agent names must be unique",
    ]) {
      expect(parseFieldError(m).path, m).toBeNull();
    }
    expect(fieldOf("agent is required", "agent")).toBeNull();
    expect(fieldOf("task.agent_id: agent X not found", "agent")).toBeNull();
  });
});
