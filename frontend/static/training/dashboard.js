// The round dashboard: polls the rounds API every ~2 s, draws the current round's stage
// and progress, its training curves (incremental metric fetches), the rounds, models and
// labeler tables; start / advance / cancel, and approve / reject for a round the promotion
// gate stopped, POST to the API with the CSRF token.

import { el } from "../studio/dom.js";
import { Curves, perRoundCharts } from "./curves.js";
import { duration, recipeLabel, stageLabel, when } from "./format.js";
import { fill, makeClient, readConfig } from "./http.js";
import { renderReview, reviewNote } from "./review.js";
import { renderLabelers, renderModels, renderRounds, rmAccuracy } from "./tables.js";

const config = readConfig("dashboard-config");
const api = makeClient(config.csrfToken);
const $ = (id) => document.getElementById(id);

const STAGES = [
  ["generating", "Generate samples"],
  ["labeling", "Labeling"],
  ["building_pairs", "Build pairs"],
  ["training_rm", "Train reward model"],
  ["training_ppo", "PPO"],
  ["done", "Done"],
];
const ACTIVE = new Set(["generating", "labeling", "building_pairs", "training_rm", "training_ppo", "needs_review"]);
const SLOW_EVERY = 10; // models and labeler stats: every 10th poll, or when a stage changes

const state = { rounds: [], stats: null, ticks: 0, lastKey: "", curveRound: null, busy: false };
const curves = new Curves();
const perRound = perRoundCharts();

function notice(message, kind = "info") {
  const box = $("notice");
  box.dataset.kind = kind;
  box.textContent = message || "";
}

// --------------------------------------------------------------------------- current round

// The stage a round stopped at: the one that failed or was cancelled (failed_stage), the
// gate's stage of a round in review or rejected, else the stage it is in.
function stoppedAt(round) {
  if (round.stage === "needs_review" || round.review_decision === "rejected") return round.review_stage;
  if (round.stage === "failed" || round.stage === "cancelled") return round.failed_stage;
  return round.stage;
}

const STOPPED_CLASS = { failed: "is-failed", cancelled: "is-cancelled", needs_review: "is-review" };

function renderStages(round) {
  const reached = round ? STAGES.findIndex(([s]) => s === stoppedAt(round)) : -1;
  const rejected = round && round.review_decision === "rejected";
  const items = STAGES.map(([stage, label], i) => {
    let status = "";
    if (round && round.stage === "done" && !rejected) status = "is-done";
    else if (round && i < reached) status = "is-done";
    else if (round && i === reached) {
      status = rejected ? "is-rejected" : STOPPED_CLASS[round.stage] || "is-current";
    }
    return el("li", { className: `stage ${status}`, attrs: { "aria-current": status === "is-current" ? "step" : null } }, [
      el("span", { className: "stage__dot", attrs: { "aria-hidden": "true" } }),
      el("span", { className: "stage__label", text: stage === "training_ppo" && round ? recipeLabel(round.recipe) : label }),
    ]);
  });
  $("stages").replaceChildren(...items);
}

function progressRow(label, done, total, detail, timing = "") {
  const bar = el("progress", { attrs: { max: Math.max(total, 1), value: Math.min(done, total) } });
  if (!total) bar.removeAttribute("value"); // indeterminate until the run knows its total
  return el("div", { className: "progress-row" }, [
    el("div", { className: "progress-row__label" }, [
      el("span", { text: label }),
      el("span", { className: "muted", text: total ? `${done} / ${total}` : detail || "starting…" }),
    ]),
    bar,
    el("div", { className: "progress-row__timing muted small", text: timing, attrs: { hidden: !timing } }),
  ]);
}

// "sampling (batch 2/5) · 16 / 84 responses · 1 200 / 8 000 tokens · elapsed 12 s · ETA 40 s"
// from a `progress` object of the API (training/services/progress.py computes it).
function progressTiming(progress) {
  const parts = [];
  if (progress.phase) parts.push(progress.step ? `${progress.phase} (${progress.step})` : progress.phase);
  if (progress.total && progress.unit) parts.push(`${progress.done} / ${progress.total} ${progress.unit}`);
  if (progress.phase_total && progress.phase_unit && progress.phase_unit !== progress.unit) {
    parts.push(`${progress.phase_done} / ${progress.phase_total} ${progress.phase_unit}`);
  }
  if (progress.elapsed_s !== null && progress.elapsed_s !== undefined) parts.push(`elapsed ${duration(progress.elapsed_s)}`);
  if (progress.phase && progress.phase !== "queued" && progress.phase !== "labeling") {
    parts.push(progress.eta_s === null || progress.eta_s === undefined ? "ETA —" : `ETA ${duration(progress.eta_s)}`);
  }
  return parts.join(" · ");
}

// A row for a `progress` of the API; the bar follows the finest counter it has (tokens
// within generation), the numbers on the right are the overall done / total.
function apiProgressRow(label, progress, detail) {
  const fine = progress.phase_total ? [progress.phase_done, progress.phase_total] : [progress.done, progress.total];
  const row = progressRow(label, progress.done, progress.total, detail, progressTiming(progress));
  const bar = row.querySelector("progress");
  if (fine[1]) {
    bar.max = fine[1];
    bar.value = Math.min(fine[0], fine[1]);
  }
  return row;
}

function renderProgress(round) {
  const rows = [];
  if (round && round.stage === "labeling") {
    rows.push(progressRow("Rankings collected", round.progress.done, round.progress.total));
  }
  const active = round ? round.runs.filter((run) => run.status === "running" || run.status === "queued") : [];
  // The round's own progress as the API computes it (while generating: every shard summed),
  // so the dashboard never shows other counters than the API does.
  if (round && round.stage !== "labeling" && active.length) {
    const waiting = active.every((run) => run.status === "queued");
    const stage = stageLabel(round.stage, round.recipe);
    const label = active.length === 1
      ? `${active[0].kind.toUpperCase()} run #${active[0].id}`
      : `${stage[0].toUpperCase()}${stage.slice(1)}: ${active.length} runs`;
    rows.push(apiProgressRow(label, round.progress, waiting ? "queued: waiting for a GPU worker" : ""));
  }
  if (active.length > 1) { // several shards: one row each as well
    for (const run of active) {
      rows.push(apiProgressRow(`${run.kind.toUpperCase()} run #${run.id}`, run.progress,
        run.status === "queued" ? "queued: waiting for a GPU worker" : ""));
    }
  }
  $("progress-list").replaceChildren(...rows);
}

function renderCurrent(round) {
  renderStages(round);
  renderProgress(round);
  const active = round && ACTIVE.has(round.stage);
  const stage = stageLabel(round ? round.stage : "", round && round.recipe);
  $("round-title").textContent = round ? `Round ${round.number} · ${stage[0].toUpperCase()}${stage.slice(1)}` : "No round yet";
  if (round) {
    const parts = [`sampled from ${round.sampling_policy ? round.sampling_policy.label : "—"}`,
      `${round.num_prompts} prompts`, `recipe ${round.recipe}`, `started ${when(round.created_at)}`];
    const acc = rmAccuracy(round);
    if (acc !== null) parts.push(`RM held-out accuracy ${(acc * 100).toFixed(1)}%`);
    if (round.policy) parts.push(`new policy ${round.policy.label}`);
    if (round.review_decision) parts.push(reviewNote(round));
    $("round-subtitle").textContent = parts.join(" · ");
  }
  renderReview($("review-panel"), $("review-body"), round);
  const reviewing = Boolean(round && round.stage === "needs_review");
  $("approve-round").disabled = state.busy || !reviewing;
  $("reject-round").disabled = state.busy || !reviewing;
  const error = $("round-error");
  error.hidden = !(round && round.stage === "failed");
  if (round && round.stage === "failed") {
    error.replaceChildren(
      el("strong", { text: `Failed during ${stageLabel(round.failed_stage || "a stage")}. ` }),
      el("span", { className: "round-error__text", text: round.error || "No error message." }),
      el("p", { className: "small", text: "The previous models stay current. Advance retries the failed stage; nothing is duplicated." }),
    );
  }
  const advance = $("advance-round");
  advance.disabled = state.busy || !round || !(round.stage === "labeling" || round.stage === "failed");
  advance.textContent = round && round.stage === "failed" ? `Retry ${stageLabel(round.failed_stage || "")}` : "Advance: end labeling";
  $("cancel-round").disabled = state.busy || !round || !(active || round.stage === "failed");
  $("start-round").disabled = state.busy || Boolean(active);
}

// --------------------------------------------------------------------------- curves and tables

function renderCurveSelector() {
  const select = $("curve-round");
  // Unless the admin picked one: the newest round that trained something, else the newest.
  const trained = state.rounds.find((r) => r.runs.some((run) => run.kind === "rm" || run.kind === "ppo"));
  const wanted = state.curveRound ?? (trained || state.rounds[0])?.number ?? null;
  const options = state.rounds.map((r) => el("option", {
    text: `#${r.number} (${stageLabel(r.stage)})`, attrs: { value: r.number, selected: r.number === wanted },
  }));
  if (select.options.length !== options.length || [...select.options].some((o, i) => o.textContent !== options[i].textContent)) {
    select.replaceChildren(...options);
  }
  if (wanted !== null) select.value = String(wanted);
  select.closest("label").hidden = options.length === 0;
  return state.rounds.find((r) => r.number === wanted) || null;
}

function roundCounts() {
  return new Map((state.stats?.rounds || []).filter((r) => r.round !== null).map((r) => [r.round, r]));
}

function renderHistory() {
  const counts = roundCounts();
  renderRounds($("rounds-table"), $("rounds-empty"), state.rounds, counts);
  const chrono = state.rounds.filter((r) => r.reward_model).sort((a, b) => a.number - b.number);
  perRound.accuracy.replace({
    round: chrono.map((r) => r.number),
    accuracy: chrono.map(rmAccuracy),
    labeler: chrono.map((r) => r.reward_model?.metrics?.heldout_labeler_accuracy ?? null),
  }, "round");
  const numbers = [...counts.keys()].sort((a, b) => a - b);
  perRound.comparisons.replace({
    round: numbers,
    rankings: numbers.map((n) => counts.get(n).rankings),
    comparisons: numbers.map((n) => counts.get(n).comparisons),
  }, "round");
}

async function refreshSlow() {
  const [models, stats] = await Promise.all([api.get(config.urls.models), api.get(config.urls.stats)]);
  state.stats = stats;
  renderModels($("models-table"), $("models-empty"), models);
  renderLabelers($("labelers-table"), $("labelers-empty"), $("agreement-summary"), stats);
  const current = models.filter((m) => m.is_current).map((m) => `${m.role} ${m.label}`);
  $("current-models").textContent = current.length ? `Current: ${current.join(" · ")}` : "";
}

// --------------------------------------------------------------------------- polling

async function tick() {
  state.rounds = await withTimeout(api.get(config.urls.rounds));
  const latest = state.rounds[0] || null;
  // Progress first: the slower tables below must not hold it back (an action in flight
  // renders once it is settled).
  if (!state.busy) renderCurrent(latest);
  const key = state.rounds.map((r) => `${r.id}:${r.stage}`).join(",");
  if (key !== state.lastKey || state.ticks % SLOW_EVERY === 0) await withTimeout(refreshSlow());
  state.lastKey = key;
  state.ticks += 1;
  renderCurrent(latest);
  renderHistory();
  curves.follow(renderCurveSelector());
  await curves.refresh(api, config.urls.metrics);
}

// A request that never answers must not stop the polling (the next poll is only scheduled
// once this one settles): give up on it after a few poll intervals.
function withTimeout(promise, ms = Math.max(10000, config.pollMs * 5)) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = window.setTimeout(() => reject(new Error(`no answer within ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => window.clearTimeout(timer));
}

async function poll() {
  try {
    await tick();
    if ($("notice").dataset.kind === "offline") notice("");
  } catch (error) {
    notice(`Could not refresh: ${error.message}`, "offline");
  }
  const delay = document.hidden ? config.pollMs * 5 : config.pollMs;
  window.setTimeout(poll, delay);
}

// --------------------------------------------------------------------------- actions

async function act(label, request) {
  state.busy = true;
  renderCurrent(state.rounds[0] || null);
  try {
    const round = await request();
    notice(`${label}: round ${round.number} is ${stageLabel(round.stage)}.`);
    state.curveRound = null; // follow the newest round again
    await tick();
  } catch (error) {
    notice(error.message, "error");
  } finally {
    state.busy = false;
    renderCurrent(state.rounds[0] || null);
  }
}

$("start-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const raw = $("num-prompts").value.trim();
  const body = raw ? { num_prompts: Number(raw) } : {};
  const recipe = $("recipe").value;
  if (recipe) body.recipe = recipe;
  act("Started", () => api.post(config.urls.rounds, body));
});

$("advance-round").addEventListener("click", () => {
  const round = state.rounds[0];
  if (round) act("Advanced", () => api.post(fill(config.urls.advance, round.id)));
});

$("cancel-round").addEventListener("click", () => {
  const round = state.rounds[0];
  if (!round) return;
  if (!window.confirm(`Cancel round ${round.number}? Open tasks close; rankings already made are kept.`)) return;
  act("Cancelled", () => api.post(fill(config.urls.cancel, round.id)));
});

$("approve-round").addEventListener("click", () => {
  const round = state.rounds[0];
  if (round) act("Approved", () => api.post(fill(config.urls.approve, round.id)));
});

$("reject-round").addEventListener("click", () => {
  const round = state.rounds[0];
  if (!round) return;
  if (!window.confirm(`Reject round ${round.number}? It ends, and the current models stay current.`)) return;
  act("Rejected", () => api.post(fill(config.urls.reject, round.id)));
});

$("curve-round").addEventListener("change", (event) => {
  state.curveRound = Number(event.target.value);
  curves.follow(renderCurveSelector());
  curves.refresh(api, config.urls.metrics).catch((error) => notice(error.message, "error"));
});

$("num-prompts").placeholder = String(config.defaultPrompts);
poll();
