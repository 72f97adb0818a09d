/** The built-in tools of the server (docs/tools.md), for the agent form's picker. The API has no
 * call that lists tools, so this is the documented set; an agent's other tool names are kept. */
export const AGENTZ_TOOLS = ["http_fetch", "current_time", "calculator"] as const;
