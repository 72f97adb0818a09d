// Run-input placeholders, the server's grammar (server/core/placeholder.c): "{name}" with name
// [a-zA-Z_][a-zA-Z0-9_]{0,63}; "{{" and "}}" are literal braces; any other brace is kept as is.

const NAME_MAX = 64;
const isStart = (c: string) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c === "_";
const isChar = (c: string) => isStart(c) || (c >= "0" && c <= "9");

/** Length of the name of a placeholder whose "{" is just before s[at]; 0 when none. */
function placeholderAt(s: string, at: number): number {
  if (at >= s.length || !isStart(s[at]!)) return 0;
  let n = 1;
  while (n < NAME_MAX && at + n < s.length && isChar(s[at + n]!)) n++;
  return s[at + n] === "}" ? n : 0;
}

/** Every placeholder name in s, left to right, with repeats. */
export function scanPlaceholders(s: string | undefined | null): string[] {
  const out: string[] = [];
  if (!s) return out;
  for (let p = 0; p < s.length; ) {
    const a = s[p]!;
    const b = s[p + 1];
    if ((a === "{" && b === "{") || (a === "}" && b === "}")) {
      p += 2;
      continue;
    }
    const n = a === "{" ? placeholderAt(s, p + 1) : 0;
    if (n) {
      out.push(s.slice(p + 1, p + 1 + n));
      p += n + 2;
      continue;
    }
    p++;
  }
  return out;
}

/** Distinct placeholder names of several texts, in first-occurrence order. */
export function placeholderNames(texts: Iterable<string | undefined | null>): string[] {
  const seen = new Set<string>();
  for (const t of texts) for (const n of scanPlaceholders(t)) seen.add(n);
  return [...seen];
}

/** Whether name is a valid input name. */
export function isInputName(name: string): boolean {
  if (name.length === 0 || name.length > NAME_MAX || !isStart(name[0]!)) return false;
  for (let i = 1; i < name.length; i++) if (!isChar(name[i]!)) return false;
  return true;
}
