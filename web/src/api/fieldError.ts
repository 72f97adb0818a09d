// Server error messages name the field they are about: "agent.role is required",
// "workflow.steps[2] (\"review\").depends_on[0]: unknown step \"draft\"",
// "inputs: missing required input \"topic\"", "step s2: depends_on names unknown step x".
// parseFieldError splits such a message into a field path and the rest, so forms can show the
// text next to the field; messages without a leading path are form-level errors.

export interface FieldError {
  /** The normalised path, e.g. "workflow.steps[2].depends_on[0]"; null for a form-level error. */
  path: string | null;
  /** Path segments: names and indices ("workflow", "steps", 2, "depends_on", 0). */
  segments: (string | number)[];
  /** Step id quoted in the path (`steps[2] ("review")`) or named by a "step ID:" prefix. */
  stepId: string | null;
  /** The text after the path, e.g. "is required" or "unknown step \"draft\"". */
  detail: string;
  /** The whole message as the server sent it. */
  message: string;
}

const SEGMENT = String.raw`[a-z_][a-z0-9_]*(?:\[\d+\](?: \("(?:[^"\\]|\\.)*"\))?)*`;
const PATH_RE = new RegExp(String.raw`^(${SEGMENT}(?:\.${SEGMENT})*)(?:: |:$| (?=(?:is|are|must|needs|takes|cannot|may|has|does|contains|names)\b))`);
const STEP_PREFIX_RE = /^step ([a-z0-9_-]{1,64}): (.*)$/s;
const INDEX_RE = /\[(\d+)\](?: \("((?:[^"\\]|\\.)*)"\))?/g;

/** Splits "a.b[2] ("x").c[0]" into segments, and the quoted step id if any. */
function splitPath(raw: string): { segments: (string | number)[]; stepId: string | null; path: string } {
  const segments: (string | number)[] = [];
  let stepId: string | null = null;
  let path = "";
  for (const part of raw.split(/\.(?=[a-z_])/)) {
    const name = /^[a-z_][a-z0-9_]*/.exec(part)![0];
    segments.push(name);
    path += (path ? "." : "") + name;
    for (const m of part.slice(name.length).matchAll(INDEX_RE)) {
      const idx = Number(m[1]);
      segments.push(idx);
      path += `[${idx}]`;
      if (m[2] !== undefined && name === "steps") stepId = m[2].replace(/\\(.)/g, "$1");
    }
  }
  return { segments, stepId, path };
}

export function parseFieldError(message: string): FieldError {
  const step = STEP_PREFIX_RE.exec(message);
  if (step) {
    const inner = parseFieldError(step[2]!);
    const segs: (string | number)[] = ["steps", ...(inner.path ? inner.segments : [])];
    return {
      path: inner.path ? `steps.${inner.path}` : "steps",
      segments: segs,
      stepId: step[1]!,
      detail: inner.path ? inner.detail : step[2]!,
      message,
    };
  }
  const m = PATH_RE.exec(message);
  if (m) {
    const { segments, stepId, path } = splitPath(m[1]!);
    const detail = message.slice(m[0].length).trim();
    return { path, segments, stepId, detail: detail || message, message };
  }
  return { path: null, segments: [], stepId: null, detail: message, message };
}

/**
 * The form field a message is about, relative to the resource being edited: for
 * resource "agent", "agent.llm.model is required" -> "llm.model"; "name: longer than…" -> "name".
 * Returns null when the message names no field, or another resource.
 */
export function fieldOf(message: string, resource: string): string | null {
  const e = parseFieldError(message);
  if (!e.path) return null;
  if (e.path === resource) return null;
  if (e.path.startsWith(`${resource}.`)) return e.path.slice(resource.length + 1);
  // Another resource's path ("task.agent_id" while editing a workflow) is not one of our fields.
  const root = e.segments[0];
  if (root === "agent" || root === "task" || root === "workflow") return null;
  return e.path;
}
