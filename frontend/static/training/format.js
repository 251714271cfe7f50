// How the dashboard shows numbers, dates and stages, and its table cells.

import { el } from "../studio/dom.js";

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

// Seconds as a person writes them: "12 s", "3 min 05 s", "1 h 02 min".
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

const STAGE_NAMES = { training_rm: "training RM", training_ppo: "training PPO" };

export function stageLabel(stage) {
  return STAGE_NAMES[stage] || String(stage || "").replace(/_/g, " ");
}
