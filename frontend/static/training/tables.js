// The dashboard's tables: rounds, model versions, labelers. Pure renderers of API data.

import { el } from "../studio/dom.js";
import { formatNumber } from "./linechart.js";
import { cell, percent, seconds, stageLabel, when } from "./format.js";

// The RM's held-out pairwise accuracy, wherever the run recorded it.
export function rmAccuracy(round) {
  const metrics = round.reward_model ? round.reward_model.metrics || {} : {};
  const value = metrics["rm/eval_accuracy"] ?? round.metrics?.["rm/rm/eval_accuracy"];
  return typeof value === "number" ? value : null;
}

function policyMetric(round, key) {
  const value = round.policy?.metrics?.[key] ?? round.metrics?.[`${round.recipe || "ppo"}/${key}`];
  return typeof value === "number" ? value : null;
}

function versionCell(version) {
  if (!version) return cell("—");
  return el("td", {}, [el("span", { className: "version", text: version.label })]);
}

function stageBadge(stage) {
  return el("span", { className: `stage-badge stage-badge--${stage}`, text: stageLabel(stage) });
}

function fillBody(table, empty, rows) {
  table.tBodies[0].replaceChildren(...rows);
  empty.hidden = rows.length > 0;
  table.hidden = rows.length === 0;
}

export function renderRounds(table, empty, rounds, perRound) {
  const rows = rounds.map((round) => {
    const counts = perRound.get(round.number) || {};
    const held = round.reward_model?.metrics?.heldout_labeler_accuracy;
    const accCell = el("td", { className: "num" }, [
      el("span", { text: percent(rmAccuracy(round)) }),
      typeof held === "number" ? el("span", { className: "block muted small", text: `held-out labeler ${percent(held)}` }) : null,
    ]);
    return el("tr", { attrs: { "data-round": round.number } }, [
      el("th", { text: `#${round.number}`, attrs: { scope: "row" } }),
      el("td", {}, [stageBadge(round.review_decision === "rejected" ? "rejected" : round.stage)]),
      cell(round.recipe),
      cell(when(round.created_at)),
      versionCell(round.sampling_policy),
      cell(round.num_prompts, "num"),
      cell(counts.rankings ?? 0, "num"),
      cell(counts.comparisons ?? round.metrics?.comparisons_round ?? 0, "num"),
      versionCell(round.reward_model),
      accCell,
      versionCell(round.policy),
      cell(formatNumber(policyMetric(round, "env/score_mean")), "num"),
      cell(formatNumber(policyMetric(round, "objective/kl")), "num"),
    ]);
  });
  fillBody(table, empty, rows);
}

const KEY_METRICS = [
  ["rm/eval_accuracy", "held-out acc.", percent],
  ["heldout_labeler_accuracy", "held-out labeler", percent],
  ["env/score_mean", "score", formatNumber],
  ["objective/kl", "KL", formatNumber],
  ["loss", "loss", formatNumber],
];

function metricSummary(metrics) {
  const parts = KEY_METRICS.filter(([key]) => typeof metrics?.[key] === "number").map(
    ([key, label, fmt]) => `${label} ${fmt(metrics[key])}`,
  );
  return parts.join(" · ") || "—";
}

export function renderModels(table, empty, models) {
  const byId = new Map(models.map((m) => [m.id, m]));
  const rows = models.map((model) => {
    const name = el("td", {}, [el("span", { className: "version", text: model.label })]);
    if (model.is_current) name.appendChild(el("span", { className: "badge badge--current", text: "current" }));
    return el("tr", { className: model.is_current ? "is-current" : "" }, [
      name,
      cell(model.role),
      el("td", {}, [el("span", { className: `status status--${model.status}`, text: model.status })]),
      cell(byId.get(model.parent)?.label ?? (model.parent ? `#${model.parent}` : "—")),
      cell(metricSummary(model.metrics), "wrap"),
      cell(when(model.created_at)),
    ]);
  });
  fillBody(table, empty, rows);
}

export function renderLabelers(table, empty, summary, stats) {
  const rows = (stats?.labelers || []).map((row) => {
    const who = el("th", { attrs: { scope: "row" } }, [
      el("span", { text: row.username || row.labeler }),
      el("span", { className: "muted small block", text: row.username ? row.labeler : "" }),
    ]);
    return el("tr", {}, [
      who,
      cell(row.rankings, "num"),
      cell(formatNumber(row.rankings_per_hour, 3), "num"),
      cell(seconds(row.median_time_ms), "num"),
      cell(row.shared_tasks, "num"),
      cell(row.pairs_compared ? `${percent(row.pairwise_agreement)} of ${row.pairs_compared}` : "—", "num"),
      cell(formatNumber(row.kendall_tau), "num"),
      cell(row.gold_tasks ? `${formatNumber(row.gold_tau)} (${row.gold_tasks})` : "—", "num"),
    ]);
  });
  fillBody(table, empty, rows);
  const project = stats?.project;
  summary.textContent = project && project.rankings
    ? `Kendall's W ${formatNumber(project.kendall_w)} over ${project.tasks_with_overlap} tasks ranked by ≥ 2 labelers · ` +
      `pairwise agreement ${percent(project.pairwise_agreement)} · ${project.rankings} rankings by ${project.labelers} labelers`
    : "";
}
