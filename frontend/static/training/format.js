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
const RECIPE_NAMES = { ppo: "PPO", dpo: "DPO", best_of_n: "Best-of-N", rloo: "RLOO" };

/** The policy stage's name for a round's recipe ("PPO" when the recipe is unknown). */
export function recipeLabel(recipe) {
  return RECIPE_NAMES[recipe] || "PPO";
}

/** A stage for people; the policy stage (training_ppo) is named by the round's recipe. */
export function stageLabel(stage, recipe) {
  if (stage === "training_ppo" && recipe) return `training ${recipeLabel(recipe)}`;
  return STAGE_NAMES[stage] || String(stage || "").replace(/_/g, " ");
}
