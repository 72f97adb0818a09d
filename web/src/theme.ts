// Dark/light: follows prefers-color-scheme unless the user picked one (kept in localStorage).
export type Theme = "system" | "light" | "dark";
const KEY = "agentz.theme";

export function storedTheme(): Theme {
  const v = localStorage.getItem(KEY);
  return v === "light" || v === "dark" ? v : "system";
}

export function applyTheme(t: Theme): void {
  if (t === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
  localStorage.setItem(KEY, t);
}
