// The CLI's idempotency keys for `agentz import crewai` (client/crewai.c az_crewai_key and
// az_crewai_request_id): FNV-1a in two 64-bit lanes over UTF-8 bytes, each field followed by a
// separator byte. Reproducing it exactly makes an import from the UI and one from the CLI of the
// same files return the same objects instead of creating duplicates.

const MASK = (1n << 64n) - 1n;
const PRIME = 0x100000001b3n;

interface Lanes {
  a: bigint;
  b: bigint;
}

const encoder = new TextEncoder();

function init(): Lanes {
  return { a: 0xcbf29ce484222325n, b: 0x84222325cbf29ce4n };
}

function add(h: Lanes, bytes: Uint8Array): void {
  let { a, b } = h;
  for (const byte of bytes) {
    const x = BigInt(byte);
    a = ((a ^ x) * PRIME) & MASK;
    b = ((b ^ x ^ 0x5an) * PRIME) & MASK;
  }
  a = ((a ^ 0xffn) * PRIME) & MASK;
  b = ((b ^ 0xa5n) * PRIME) & MASK;
  h.a = a;
  h.b = b;
}

function addStr(h: Lanes, s: string | null | undefined): void {
  add(h, encoder.encode(s ?? ""));
}

const hex = (v: bigint) => v.toString(16).padStart(16, "0");

export interface CrewKeyOptions {
  name: string;
  /** The --process flag as given; null/"" when not given. */
  process?: string | null;
  managerLlm?: string | null;
  seed?: string | null;
}

/** az_crewai_key: 32 hex digits over both texts and the options. */
export function crewaiKey(agentsText: string, tasksText: string, o: CrewKeyOptions): string {
  const h = init();
  addStr(h, agentsText);
  addStr(h, tasksText);
  addStr(h, o.name);
  addStr(h, o.process);
  addStr(h, o.managerLlm);
  addStr(h, o.seed);
  return hex(h.a) + hex(h.b);
}

/** az_crewai_request_id: "crewai-" + 32 hex digits of key, kind and name. */
export function crewaiRequestId(key: string, kind: "agent" | "workflow", name: string): string {
  const h = init();
  addStr(h, key);
  addStr(h, kind);
  addStr(h, name);
  return `crewai-${hex(h.a)}${hex(h.b)}`;
}
