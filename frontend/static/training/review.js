// The promotion gate's review panel: a round in needs_review shows the checks of the gate
// that stopped it, with the new and the current models' figures side by side; Approve and
// Reject are the panel's buttons (dashboard.js posts them). Pure rendering of API data.

import { el } from "../studio/dom.js";
import { percent, stageLabel } from "./format.js";
import { formatNumber } from "./linechart.js";

const CHECK_NAMES = {
  rm_accuracy: "New RM reaches the project's held-out accuracy",
  rm_vs_current: "New RM is not worse than the current RM",
  policy_better: "New policy scores higher than the sampling policy",
  kl_bound: "New policy's KL to the reference within the bound",
};

// [label, key in "new", key in "current" (null: not measured for it), format]
const FIGURES = {
  training_rm: [
    ["Model", "model", "model", String],
    ["Held-out accuracy (held-out prompts and labeler)", "heldout_accuracy", "heldout_accuracy", percent],
    ["Held-out prompts only", "eval_accuracy", null, percent],
    ["Held-out labeler only", "heldout_labeler_accuracy", null, percent],
    ["Held-out pairs", "heldout_pairs", null, String],
  ],
  training_ppo: [
    ["Model", "model", "model", String],
    ["Mean RM score on held-out prompts", "score", "score", formatNumber],
    ["Score gain (± standard error)", "score_gain", null, formatNumber],
    ["KL to the reference (nats)", "kl_to_ref", null, formatNumber],
    ["Held-out prompts", "eval_prompts", null, String],
  ],
};

function shown(value, format) {
  return value === null || value === undefined ? "—" : format(value);
}

function figuresTable(stage, result) {
  const rows = (FIGURES[stage] || []).map(([label, newKey, currentKey, format]) => {
    let fresh = shown(result.new?.[newKey], format);
    if (newKey === "score_gain" && typeof result.new?.score_gain_se === "number") {
      fresh += ` ± ${formatNumber(result.new.score_gain_se)}`;
    }
    return el("tr", {}, [
      el("th", { text: label, attrs: { scope: "row" } }),
      el("td", { className: "num", text: fresh }),
      el("td", { className: "num", text: currentKey ? shown(result.current?.[currentKey], format) : "" }),
    ]);
  });
  return el("table", { className: "data-table review-figures" }, [
    el("thead", {}, [el("tr", {}, [
      el("th", { text: "", attrs: { scope: "col" } }),
      el("th", { className: "num", text: "New", attrs: { scope: "col" } }),
      el("th", { className: "num", text: "Current", attrs: { scope: "col" } }),
    ])]),
    el("tbody", {}, rows),
  ]);
}

function checkList(result) {
  return el("ul", { className: "review-checks" }, (result.checks || []).map((check) => el(
    "li", { className: check.passed ? "is-passed" : "is-failed", attrs: { "data-check": check.name } }, [
      el("strong", { text: `${check.passed ? "Passed" : "Failed"}: ${CHECK_NAMES[check.name] || check.name}. ` }),
      el("span", { text: check.detail || "" }),
    ],
  )));
}

// Fill `body` for `round` and show `panel` while the round waits for review.
export function renderReview(panel, body, round) {
  const stage = round && round.stage === "needs_review" ? round.review_stage : "";
  const result = stage ? round.gate?.[stage] : null;
  panel.hidden = !result;
  if (!result) {
    body.replaceChildren();
    return;
  }
  const next = stage === "training_rm"
    ? "Approve makes the new RM current and starts the policy stage."
    : "Approve makes the new policy current and ends the round.";
  body.replaceChildren(
    el("p", {}, [
      el("strong", { text: `The promotion gate after ${stageLabel(stage)} stopped round ${round.number}. ` }),
      el("span", { text: `The current models stay current until an admin decides. ${next} Reject ends the round and keeps them.` }),
    ]),
    checkList(result),
    figuresTable(stage, result),
  );
}

// "rejected by alice" for the subtitle of a reviewed round, or "".
export function reviewNote(round) {
  if (!round || !round.review_decision) return "";
  return `${round.review_decision} by ${round.reviewed_by || "an admin"}`;
}
