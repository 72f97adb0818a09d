// Turning call failures into what the UI shows: a status name and the server's message, split
// into per-field messages when the message starts with a field path.
import { Code, ConnectError } from "@connectrpc/connect";
import { fieldOf } from "./fieldError";

export function codeName(c: Code): string {
  return (Code[c] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export function asConnectError(e: unknown): ConnectError {
  return ConnectError.from(e);
}

/** "PERMISSION_DENIED: role viewer may not call CreateAgent (needs editor)". */
export function describeError(e: unknown): string {
  const ce = ConnectError.from(e);
  return `${codeName(ce.code)}: ${ce.rawMessage}`;
}

export interface FormErrors {
  /** Messages by field path relative to the resource ("role", "llm.model", "steps[2].depends_on[0]"). */
  fields: Record<string, string>;
  /** What is not about one field. */
  form: string | null;
  code: Code | null;
}

export const noErrors: FormErrors = { fields: {}, form: null, code: null };

/** Splits a failed create/update of resource ("agent", "task", "workflow") into field errors. */
export function formErrors(e: unknown, resource: string, known: readonly string[] = []): FormErrors {
  const ce = ConnectError.from(e);
  const msg = ce.rawMessage;
  const f = ce.code === Code.InvalidArgument || ce.code === Code.AlreadyExists || ce.code === Code.FailedPrecondition ? fieldOf(msg, resource) : null;
  if (f) {
    // Attach to the closest field the form has: "llm.temperature" -> "llm.temperature" or "llm".
    const parts = f.split(".");
    for (let i = parts.length; i > 0; i--) {
      const cand = parts.slice(0, i).join(".").replace(/\[\d+\]$/, "");
      if (known.length === 0 || known.includes(cand)) return { fields: { [cand]: msg }, form: null, code: ce.code };
    }
  }
  return { fields: {}, form: `${codeName(ce.code)}: ${msg}`, code: ce.code };
}
