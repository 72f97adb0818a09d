import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { backoffDelay, Deduper, isReconnectable, resumeSequenceFromMessage, runResumable, type Sequenced } from "./stream";

interface Ev extends Sequenced {
  text: string;
}
const ev = (sequence: number, text = `e${sequence}`): Ev => ({ sequence: BigInt(sequence), text });

/** A scripted server: each open() plays the next script, yielding events then ending or failing. */
function server(scripts: { events: Ev[]; end?: ConnectError }[]) {
  const opened: bigint[] = [];
  return {
    opened,
    open: (after: bigint) => {
      opened.push(after);
      const s = scripts.shift();
      return (async function* () {
        if (!s) throw new ConnectError("no more scripts", Code.NotFound);
        for (const e of s.events) yield e;
        if (s.end) throw s.end;
      })();
    },
  };
}

const noSleep = () => Promise.resolve();

describe("dedupe by sequence", () => {
  it("drops durable events already seen and lets ephemeral ones through", () => {
    const d = new Deduper(3n);
    expect([ev(2), ev(3), ev(0), ev(4), ev(4), ev(0), ev(6)].map((e) => d.accept(e))).toEqual([false, false, true, true, false, true, true]);
    expect(d.last).toBe(6n);
  });
});

describe("resumable streams", () => {
  it("is live once the server accepted the stream, before any event", async () => {
    const states: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const s = runResumable<Ev>({
      open: (_after, _signal, opened) =>
        (async function* () {
          opened(); // the response headers
          await held; // a quiet stream: no event yet
          yield ev(1);
        })(),
      onEvent: () => {},
      onState: (x) => states.push(x.phase),
      endsWhenDone: true,
      sleep: noSleep,
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(s.state.phase).toBe("live");
    release();
    expect((await s.done).phase).toBe("ended");
    expect(states[0]).toBe("connecting");
  });

  it("reopens after RESOURCE_EXHAUSTED from the last sequence, with no duplicated lines", async () => {
    const srv = server([
      { events: [ev(1), ev(0, "tok"), ev(2), ev(3)], end: new ConnectError("stream consumer too slow; resume with after_sequence = 3", Code.ResourceExhausted) },
      // the server replays from 3, and (misbehaving) sends 3 again
      { events: [ev(3), ev(4), ev(0, "tok2"), ev(5)] },
    ]);
    const got: string[] = [];
    const states: string[] = [];
    const s = runResumable({ open: srv.open, onEvent: (e) => got.push(e.text), onState: (x) => states.push(x.phase), endsWhenDone: true, sleep: noSleep });
    const end = await s.done;
    expect(got).toEqual(["e1", "tok", "e2", "e3", "e4", "tok2", "e5"]);
    expect(srv.opened).toEqual([0n, 3n]);
    expect(end.phase).toBe("ended");
    expect(end.lastSequence).toBe(5n);
    expect(end.reconnects).toBe(1);
    expect(states).toContain("reconnecting");
  });

  it("resumes from a stored sequence after a reload", async () => {
    const srv = server([{ events: [ev(8), ev(9)] }]);
    const got: string[] = [];
    await runResumable({ open: srv.open, after: 8n, onEvent: (e) => got.push(e.text), endsWhenDone: true, sleep: noSleep }).done;
    expect(srv.opened).toEqual([8n]);
    expect(got).toEqual(["e9"]);
  });

  it("backs off on UNAVAILABLE and network failures, resetting after an event", async () => {
    const srv = server([
      { events: [], end: new ConnectError("server shutting down; resume with after_sequence = 0", Code.Unavailable) },
      { events: [], end: new ConnectError("fetch failed", Code.Unknown) },
      { events: [ev(1)], end: new ConnectError("gone", Code.Unavailable) },
      { events: [ev(2)] },
    ]);
    const waits: number[] = [];
    const s = runResumable({
      open: srv.open,
      onEvent: () => {},
      endsWhenDone: true,
      sleep: noSleep,
      delay: (n) => (waits.push(n), 0),
    });
    const end = await s.done;
    expect(end.phase).toBe("ended");
    expect(waits).toEqual([1, 2, 1]);
    expect(srv.opened).toEqual([0n, 0n, 0n, 1n]);
  });

  it("stops on errors a retry cannot fix", async () => {
    const srv = server([{ events: [ev(1)], end: new ConnectError("role viewer may not call WatchRun", Code.PermissionDenied) }]);
    const end = await runResumable({ open: srv.open, onEvent: () => {}, endsWhenDone: true, sleep: noSleep }).done;
    expect(end.phase).toBe("failed");
    expect(end.error?.code).toBe(Code.PermissionDenied);
    expect(srv.opened).toHaveLength(1);
  });

  it("reopens a watch that should never end when the server closes it", async () => {
    const srv = server([{ events: [ev(1)] }, { events: [ev(2)], end: new ConnectError("bad", Code.InvalidArgument) }]);
    const got: string[] = [];
    let reconnected = 0;
    const end = await runResumable({ open: srv.open, onEvent: (e) => got.push(e.text), onReconnected: () => reconnected++, endsWhenDone: false, sleep: noSleep }).done;
    expect(got).toEqual(["e1", "e2"]);
    expect(srv.opened).toEqual([0n, 1n]);
    expect(reconnected).toBe(1);
    expect(end.phase).toBe("failed");
  });

  it("stop() ends the stream without an error", async () => {
    let release: () => void = () => {};
    const s = runResumable({
      open: (_after, signal) =>
        (async function* () {
          yield ev(1);
          await new Promise<void>((r) => {
            release = r;
            signal.addEventListener("abort", () => r());
          });
          throw new ConnectError("aborted", Code.Canceled);
        })(),
      onEvent: () => {},
      endsWhenDone: true,
      sleep: noSleep,
    });
    await new Promise((r) => setTimeout(r, 5));
    s.stop();
    release();
    expect((await s.done).phase).toBe("stopped");
  });

  it("helpers", () => {
    expect(resumeSequenceFromMessage("stream consumer too slow: more than 256 messages waiting; resume with after_sequence = 42")).toBe(42n);
    expect(resumeSequenceFromMessage("nope")).toBeNull();
    expect(isReconnectable(Code.ResourceExhausted)).toBe(true);
    expect(isReconnectable(Code.Unauthenticated)).toBe(false);
    expect(isReconnectable(Code.Canceled)).toBe(true);
    expect(backoffDelay(1, () => 0.5)).toBe(250);
    expect(backoffDelay(3, () => 0.5)).toBe(1000);
    expect(backoffDelay(30, () => 0.5)).toBe(10000);
    expect(backoffDelay(1, () => 0)).toBe(200);
  });
});
