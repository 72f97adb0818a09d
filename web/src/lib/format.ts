// Display formats for numbers that come from the API.
import { timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

export function durationMs(d: Duration | undefined): number | null {
  if (!d) return null;
  return Number(d.seconds) * 1000 + d.nanos / 1e6;
}

export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export const fmtDuration = (d: Duration | undefined) => fmtMs(durationMs(d));

export function fmtTime(t: Timestamp | undefined | null): string {
  if (!t) return "—";
  return new Date(timestampMs(t)).toLocaleString();
}

export function fmtTimeMs(ms: number | null): string {
  if (ms === null) return "—";
  return new Date(ms).toLocaleTimeString();
}

export function fmtInt(v: bigint | number | undefined): string {
  if (v === undefined) return "—";
  return Number(v).toLocaleString();
}

export function fmtCost(usd: number | undefined): string {
  if (usd === undefined) return "—";
  return `$${usd < 0.01 && usd > 0 ? usd.toFixed(5) : usd.toFixed(2)}`;
}

export function fmtPct(f: number | undefined): string {
  if (f === undefined || !Number.isFinite(f)) return "—";
  return `${(f * 100).toFixed(1)}%`;
}

/** "30s" / "1.5s" / "2m" -> a Duration init; null when the text is not a duration. */
export function parseDuration(text: string): { seconds: bigint; nanos: number } | null {
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(t);
  if (!m) return null;
  const mult = { ms: 0.001, s: 1, m: 60, h: 3600 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
  const total = Number(m[1]) * mult;
  const seconds = Math.floor(total);
  return { seconds: BigInt(seconds), nanos: Math.round((total - seconds) * 1e9) };
}

export function durationText(d: Duration | undefined): string {
  const v = durationMs(d);
  if (v === null) return "";
  return v % 1000 === 0 ? `${v / 1000}s` : `${v / 1000}s`;
}
