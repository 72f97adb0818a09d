// The difference between two versions of a workflow, field by field and step by step, for the
// versions screen. Values are compared in their proto3 JSON form, so every field counts, present
// and future ones alike.
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { StepSchema, WorkflowInputSchema, WorkflowSchema, type Workflow } from "../gen/agentz/v1/workflow_pb";

export interface FieldChange {
  field: string;
  before: JsonValue | undefined;
  after: JsonValue | undefined;
}

export interface ItemDiff {
  id: string;
  changes: FieldChange[];
}

export interface WorkflowDiff {
  fields: FieldChange[];
  steps: { added: string[]; removed: string[]; changed: ItemDiff[]; orderChanged: boolean };
  inputs: { added: string[]; removed: string[]; changed: ItemDiff[] };
  /** True when the two versions define the same workflow. */
  same: boolean;
}

const IGNORED = new Set(["id", "version", "createTime", "updateTime", "etag", "workspaceId", "steps", "inputs"]);

function objectDiff(a: Record<string, JsonValue>, b: Record<string, JsonValue>, ignore: Set<string> = new Set()): FieldChange[] {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !ignore.has(k)).sort();
  const out: FieldChange[] = [];
  for (const k of keys) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push({ field: k, before: a[k], after: b[k] });
  }
  return out;
}

function listDiff<T>(
  a: readonly T[],
  b: readonly T[],
  id: (x: T) => string,
  json: (x: T) => Record<string, JsonValue>,
): { added: string[]; removed: string[]; changed: ItemDiff[] } {
  const am = new Map(a.map((x) => [id(x), x]));
  const bm = new Map(b.map((x) => [id(x), x]));
  const added = b.map(id).filter((k) => !am.has(k));
  const removed = a.map(id).filter((k) => !bm.has(k));
  const changed: ItemDiff[] = [];
  for (const x of b) {
    const before = am.get(id(x));
    if (!before) continue;
    const changes = objectDiff(json(before), json(x));
    if (changes.length) changed.push({ id: id(x), changes });
  }
  return { added, removed, changed };
}

export function diffWorkflows(a: Workflow, b: Workflow): WorkflowDiff {
  const fields = objectDiff(toJson(WorkflowSchema, a) as Record<string, JsonValue>, toJson(WorkflowSchema, b) as Record<string, JsonValue>, IGNORED);
  const steps = listDiff(a.steps, b.steps, (s) => s.id, (s) => toJson(StepSchema, s) as Record<string, JsonValue>);
  const common = (xs: string[], other: Set<string>) => xs.filter((x) => other.has(x));
  const aIds = a.steps.map((s) => s.id);
  const bIds = b.steps.map((s) => s.id);
  const orderChanged = JSON.stringify(common(aIds, new Set(bIds))) !== JSON.stringify(common(bIds, new Set(aIds)));
  const inputs = listDiff(a.inputs, b.inputs, (i) => i.name, (i) => toJson(WorkflowInputSchema, i) as Record<string, JsonValue>);
  const same =
    fields.length === 0 &&
    !orderChanged &&
    steps.added.length + steps.removed.length + steps.changed.length === 0 &&
    inputs.added.length + inputs.removed.length + inputs.changed.length === 0;
  return { fields, steps: { ...steps, orderChanged }, inputs, same };
}

/** A short display form of a JSON value. */
export function showValue(v: JsonValue | undefined): string {
  if (v === undefined) return "(unset)";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}
