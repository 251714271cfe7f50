// Tiny DOM helpers: every piece of text goes in through textContent.

export function el(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

export function cell(text, className) {
  return el("td", { className, text: text ?? "—" });
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
}

export function percent(value) {
  return value === null || value === undefined || Number.isNaN(value)
    ? "—"
    : `${(value * 100).toFixed(1)}%`;
}

export function seconds(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = ms / 1000;
  return s < 90 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

const STAGE_NAMES = { training_rm: "training RM", training_ppo: "training PPO" };

export function stageLabel(stage) {
  return STAGE_NAMES[stage] || String(stage || "").replace(/_/g, " ");
}
