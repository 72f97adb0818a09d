import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RunStatus, TaskStatus } from "../gen/agentz/v1/common_pb";
import { EventSchema, type Event } from "../gen/agentz/v1/event_pb";
import { WorkflowRunSchema } from "../gen/agentz/v1/workflow_pb";
import { RunEventStore } from "./eventStore";
import { applyRunEvents, runFromSnapshot } from "./runState";

const run = create(WorkflowRunSchema, {
  id: "r1",
  status: RunStatus.PENDING,
  steps: [
    { stepId: "a", status: TaskStatus.PENDING },
    { stepId: "b", status: TaskStatus.PENDING },
  ],
});

let seq = 0;
const t = (sec: number) => ({ seconds: BigInt(sec), nanos: 0 });
function task(step: string, from: TaskStatus, to: TaskStatus, attempt = 1): Event {
  return create(EventSchema, { sequence: BigInt(++seq), time: t(seq), runId: "r1", taskId: `t-${step}`, stepId: step, payload: { case: "taskStatus", value: { from, to, attempt } } });
}
function runEv(from: RunStatus, to: RunStatus): Event {
  return create(EventSchema, { sequence: BigInt(++seq), time: t(seq), runId: "r1", payload: { case: "runStatus", value: { from, to } } });
}
function token(step: string, text: string, attempt = 1): Event {
  return create(EventSchema, { sequence: 0n, runId: "r1", taskId: `t-${step}`, payload: { case: "token", value: { text, attempt } } });
}

function history(): Event[] {
  seq = 0;
  return [
    runEv(RunStatus.UNSPECIFIED, RunStatus.PENDING),
    task("a", TaskStatus.UNSPECIFIED, TaskStatus.QUEUED, 0),
    runEv(RunStatus.PENDING, RunStatus.RUNNING),
    task("a", TaskStatus.QUEUED, TaskStatus.RUNNING),
    token("a", "Hel"),
    token("a", "lo"),
    task("a", TaskStatus.RUNNING, TaskStatus.SUCCEEDED),
    task("b", TaskStatus.PENDING, TaskStatus.RUNNING),
    task("b", TaskStatus.RUNNING, TaskStatus.BACKOFF, 1),
    task("b", TaskStatus.BACKOFF, TaskStatus.RUNNING, 2),
    token("b", "second try", 2),
    task("b", TaskStatus.RUNNING, TaskStatus.SUCCEEDED, 2),
    runEv(RunStatus.RUNNING, RunStatus.SUCCEEDED),
  ];
}

describe("run state from events", () => {
  it("follows a run to the end: statuses, attempts, tokens, counts", () => {
    const m = applyRunEvents(runFromSnapshot(run), history());
    expect(m.status).toBe(RunStatus.SUCCEEDED);
    expect(m.steps.a!.status).toBe(TaskStatus.SUCCEEDED);
    expect(m.steps.a!.tokens).toBe("Hello");
    expect(m.steps.a!.taskId).toBe("t-a");
    expect(m.steps.b!.attempt).toBe(2);
    expect(m.steps.b!.tokens).toBe("second try");
    expect(m.steps.b!.progress).toBe(1);
    expect(m.completedSteps).toBe(2);
    expect(m.lastSequence).toBe(10n);
    expect(m.endMs).toBe(10000);
  });

  it("applying an overlapping replay changes nothing", () => {
    const h = history();
    const once = applyRunEvents(runFromSnapshot(run), h);
    const twice = applyRunEvents(once, h.filter((e) => e.sequence !== 0n));
    expect(twice).toEqual(once);
  });

  it("replaying history over a newer snapshot does not move finished steps back", () => {
    const done = create(WorkflowRunSchema, {
      id: "r1",
      status: RunStatus.SUCCEEDED,
      steps: [
        { stepId: "a", taskId: "t-a", status: TaskStatus.SUCCEEDED, attempt: 1 },
        { stepId: "b", taskId: "t-b", status: TaskStatus.SUCCEEDED, attempt: 2 },
      ],
    });
    const h = history();
    let m = runFromSnapshot(done);
    // stop in the middle of the replay: nothing may look unfinished
    m = applyRunEvents(m, h.slice(0, 9));
    expect(m.status).toBe(RunStatus.SUCCEEDED);
    expect(m.steps.a!.status).toBe(TaskStatus.SUCCEEDED);
    expect(m.steps.b!.status).toBe(TaskStatus.SUCCEEDED);
  });

  it("a resumed run and a retried step move on from their terminal state", () => {
    const failed = applyRunEvents(runFromSnapshot(run), [
      ...history().slice(0, 8),
      task("b", TaskStatus.RUNNING, TaskStatus.FAILED, 1),
      runEv(RunStatus.RUNNING, RunStatus.FAILED),
    ]);
    expect(failed.status).toBe(RunStatus.FAILED);
    const resumed = applyRunEvents(failed, [runEv(RunStatus.FAILED, RunStatus.RUNNING), task("b", TaskStatus.FAILED, TaskStatus.QUEUED, 2), task("b", TaskStatus.QUEUED, TaskStatus.RUNNING, 2)]);
    expect(resumed.status).toBe(RunStatus.RUNNING);
    expect(resumed.steps.b!.status).toBe(TaskStatus.RUNNING);
    expect(resumed.steps.b!.endMs).toBeNull();
  });
});

describe("event store", () => {
  it("batches events into one flush and keeps each line once", () => {
    let pending: (() => void) | null = null;
    const store = new RunEventStore(runFromSnapshot(run), (f) => (pending = f));
    let renders = 0;
    store.subscribe(() => renders++);
    const h = history();
    for (const e of h) store.push(e);
    for (const e of h) if (e.sequence !== 0n) store.push(e); // a duplicate replay
    expect(renders).toBe(0);
    pending!();
    expect(renders).toBe(1);
    const snap = store.getSnapshot();
    expect(snap.lines.map((l) => l.key)).toEqual(h.filter((e) => e.sequence !== 0n).map((e) => `d${e.sequence}`));
    expect(snap.model.status).toBe(RunStatus.SUCCEEDED);
  });

  it("holds thousands of events and folds them in one pass", () => {
    let pending: (() => void) | null = null;
    const store = new RunEventStore(runFromSnapshot(run), (f) => (pending = f));
    seq = 0;
    for (let i = 0; i < 5000; i++) {
      store.push(create(EventSchema, { sequence: BigInt(++seq), runId: "r1", taskId: "t-a", stepId: "a", payload: { case: "log", value: { level: 2, message: `line ${i}` } } }));
    }
    const t0 = performance.now();
    pending!();
    expect(performance.now() - t0).toBeLessThan(500);
    expect(store.getSnapshot().lines).toHaveLength(5000);
    expect(store.getSnapshot().lines[4999]!.text).toBe("line 4999");
  });
});
