// YAML -> plain values with the typing of the CLI's loader (client/yamljson.c), which follows
// PyYAML (what CrewAI reads its files with): plain scalars resolve to null (~, null, empty),
// booleans (true/yes/on, false/no/off in three casings), integers (with _ separators, 0x, 0o,
// 0b and leading-0 octal), floats only with a '.', and strings otherwise; quoted and block
// scalars are always strings. Mappings keep their key order (as Map), anchors and aliases are
// resolved, merge keys (<<) are refused, errors carry line:column.
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, Scalar, type Node } from "yaml";
import { Document, Pair, YAMLMap, YAMLSeq } from "yaml";

/** An integer as YAML wrote it (kept apart from floats: max_iter: 5.0 is not a whole number). */
export class YInt {
  constructor(readonly value: bigint) {}
}

export type YValue = null | boolean | number | YInt | string | YValue[] | YMap;
export type YMap = Map<string, YValue>;

export class YamlError extends Error {}

const NULL_WORDS = new Set(["", "~", "null", "Null", "NULL"]);
const TRUE_WORDS = new Set(["true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"]);
const FALSE_WORDS = new Set(["false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"]);
const INT64_MAX = (1n << 63n) - 1n;

function parseInt64(s0: string): bigint | null {
  let s = s0;
  let neg = false;
  if (s[0] === "-" || s[0] === "+") {
    neg = s[0] === "-";
    s = s.slice(1);
  }
  if (!s) return null;
  let base = 10;
  if (/^0[xX]/.test(s)) (base = 16), (s = s.slice(2));
  else if (/^0[oO]/.test(s)) (base = 8), (s = s.slice(2));
  else if (/^0[bB]/.test(s)) (base = 2), (s = s.slice(2));
  else if (s[0] === "0" && s.length > 1) (base = 8), (s = s.slice(1));
  let v = 0n;
  let digits = 0;
  for (const c of s) {
    if (c === "_") continue;
    const d = /[0-9]/.test(c) ? c.charCodeAt(0) - 48 : /[a-fA-F]/.test(c) ? c.toLowerCase().charCodeAt(0) - 87 : 99;
    if (d >= base) return null;
    v = v * BigInt(base) + BigInt(d);
    if (v > INT64_MAX + 1n) return null;
    digits++;
  }
  if (!digits || v > INT64_MAX + (neg ? 1n : 0n)) return null;
  return neg ? -v : v;
}

function parseFloatYaml(s: string): number | null {
  let p = 0;
  let digits = 0;
  let dot = false;
  if (s[p] === "-" || s[p] === "+") p++;
  for (; p < s.length && s[p] !== "e" && s[p] !== "E"; p++) {
    const c = s[p]!;
    if (c >= "0" && c <= "9") digits++;
    else if (c === "." && !dot) dot = true;
    else if (c !== "_" || !digits) return null;
  }
  if (!dot || !digits) return null;
  if (p < s.length) {
    p++;
    if (s[p] === "-" || s[p] === "+") p++;
    if (!(s[p]! >= "0" && s[p]! <= "9")) return null;
    while (p < s.length && s[p]! >= "0" && s[p]! <= "9") p++;
    if (p < s.length) return null;
  }
  const v = Number(s.replace(/_/g, ""));
  return Number.isFinite(v) ? v : null;
}

/** The value of a plain scalar. */
export function resolvePlain(s: string): YValue {
  if (NULL_WORDS.has(s)) return null;
  if (TRUE_WORDS.has(s)) return true;
  if (FALSE_WORDS.has(s)) return false;
  const i = parseInt64(s);
  if (i !== null) return new YInt(i);
  const f = parseFloatYaml(s);
  if (f !== null) return f;
  return s;
}

const MAX_VALUES = 100_000;

/** Parses one YAML document; name is used in messages ("agents.yaml:3:5: …"). */
export function parseYaml(text: string, name: string): YValue {
  const lc = new LineCounter();
  const doc = parseDocument(text, { schema: "failsafe", merge: false, lineCounter: lc, uniqueKeys: true });
  const at = (offset: number) => {
    const p = lc.linePos(offset);
    return `${name}:${p.line}:${p.col}`;
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const first = e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
    throw new YamlError(`${at(e.pos[0])}: ${first}`);
  }
  let count = 0;
  const convert = (node: unknown, depth: number): YValue => {
    if (++count > MAX_VALUES) throw new YamlError(`${name}: too many values (aliases expand beyond the limit)`);
    if (depth > 64) throw new YamlError(`${name}: nesting deeper than 64 levels`);
    if (node === null || node === undefined) return null;
    if (isAlias(node)) return convert(node.resolve(doc), depth + 1);
    if (isScalar(node)) {
      const s = node.value === null || node.value === undefined ? "" : String(node.value);
      return node.type === Scalar.PLAIN || node.type === undefined ? resolvePlain(s) : s;
    }
    if (isSeq(node)) return node.items.map((n) => convert(n, depth + 1));
    if (isMap(node)) {
      const m: YMap = new Map();
      for (const pair of node.items) {
        const k = pair.key as Node | null;
        if (isScalar(k) && k.type === Scalar.PLAIN && k.value === "<<") {
          throw new YamlError(`${at(k.range?.[0] ?? 0)}: merge keys (<<) are not supported`);
        }
        let key: string;
        if (k === null) key = "";
        else if (isScalar(k)) key = k.value === null || k.value === undefined ? "" : String(k.value);
        else if (isAlias(k)) {
          const r = k.resolve(doc);
          if (!isScalar(r)) throw new YamlError(`${at(k.range?.[0] ?? 0)}: mapping keys must be scalars`);
          key = String(r.value ?? "");
        } else throw new YamlError(`${at((k as Node).range?.[0] ?? 0)}: mapping keys must be scalars`);
        m.set(key, convert(pair.value, depth + 1));
      }
      return m;
    }
    throw new YamlError(`${name}: unsupported YAML node`);
  };
  return convert(doc.contents, 0);
}

/** Whether a string written as a plain scalar would read back as something else. */
const needsQuotes = (s: string) => typeof resolvePlain(s) !== "string";

/**
 * Writes value as YAML that parseYaml (and the CLI, and PyYAML) read back to the same value:
 * multi-line strings as literal blocks, strings that look like null/bool/number quoted. Plain
 * JS objects and Maps keep their key order.
 */
export function emitYaml(value: unknown): string {
  const toNode = (v: unknown): unknown => {
    if (typeof v === "string") {
      const n = new Scalar(v);
      if (v.includes("\n")) n.type = Scalar.BLOCK_LITERAL;
      else if (needsQuotes(v)) n.type = Scalar.QUOTE_DOUBLE;
      return n;
    }
    if (v === null || v === undefined || typeof v === "number" || typeof v === "boolean") return new Scalar(v ?? null);
    if (typeof v === "bigint") return new Scalar(Number(v));
    if (Array.isArray(v)) {
      const seq = new YAMLSeq();
      for (const x of v) seq.items.push(toNode(x));
      return seq;
    }
    const map = new YAMLMap();
    const entries = v instanceof Map ? [...(v as Map<string, unknown>)] : Object.entries(v as object);
    for (const [k, x] of entries) {
      const key = new Scalar(String(k));
      if (needsQuotes(String(k)) || String(k) === "<<") key.type = Scalar.QUOTE_DOUBLE;
      map.items.push(new Pair(key, toNode(x)));
    }
    return map;
  };
  const doc = new Document();
  doc.contents = toNode(value) as Document["contents"];
  return doc.toString({ lineWidth: 0, indentSeq: true });
}
