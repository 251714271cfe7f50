// The round dashboard: polls the rounds API every ~2 s, draws the current round's stage
// and progress, its training curves (incremental metric fetches), the rounds, models and
// labeler tables; start / advance / cancel POST to the API with the CSRF token.

import { el } from "../studio/dom.js";
import { Curves, perRoundCharts } from "./curves.js";
import { stageLabel, when } from "./format.js";
import { fill, makeClient, readConfig } from "./http.js";
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
const ACTIVE = new Set(["generating", "labeling", "building_pairs", "training_rm", "training_ppo"]);
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

function renderStages(round) {
  const reached = round ? STAGES.findIndex(([s]) => s === (round.failed_stage || round.stage)) : -1;
  const items = STAGES.map(([stage, label], i) => {
    let status = "";
    if (round && round.stage === "done") status = "is-done";
    else if (round && i < reached) status = "is-done";
    else if (round && i === reached) {
      status = round.stage === "failed" ? "is-failed" : round.stage === "cancelled" ? "is-cancelled" : "is-current";
    }
    return el("li", { className: `stage ${status}`, attrs: { "aria-current": status === "is-current" ? "step" : null } }, [
      el("span", { className: "stage__dot", attrs: { "aria-hidden": "true" } }),
      el("span", { className: "stage__label", text: label }),
    ]);
  });
  $("stages").replaceChildren(...items);
}

function progressRow(label, done, total, detail) {
  const bar = el("progress", { attrs: { max: Math.max(total, 1), value: Math.min(done, total) } });
  if (!total) bar.removeAttribute("value"); // indeterminate until the run knows its total
  return el("div", { className: "progress-row" }, [
    el("div", { className: "progress-row__label" }, [
      el("span", { text: label }),
      el("span", { className: "muted", text: total ? `${done} / ${total}` : detail || "starting…" }),
    ]),
    bar,
  ]);
}

function renderProgress(round) {
  const rows = [];
  if (round && round.stage === "labeling") {
    rows.push(progressRow("Rankings collected", round.progress.done, round.progress.total));
  }
  for (const run of round ? round.runs : []) {
    if (run.status === "running") {
      rows.push(progressRow(`${run.kind.toUpperCase()} run #${run.id}`, run.progress.done, run.progress.total));
    } else if (run.status === "queued") {
      rows.push(progressRow(`${run.kind.toUpperCase()} run #${run.id}`, 0, 0, "queued: waiting for a GPU worker"));
    }
  }
  $("progress-list").replaceChildren(...rows);
}

function renderCurrent(round) {
  renderStages(round);
  renderProgress(round);
  const active = round && ACTIVE.has(round.stage);
  const stage = stageLabel(round ? round.stage : "");
  $("round-title").textContent = round ? `Round ${round.number} · ${stage[0].toUpperCase()}${stage.slice(1)}` : "No round yet";
  if (round) {
    const parts = [`sampled from ${round.sampling_policy ? round.sampling_policy.label : "—"}`,
      `${round.num_prompts} prompts`, `started ${when(round.created_at)}`];
    const acc = rmAccuracy(round);
    if (acc !== null) parts.push(`RM held-out accuracy ${(acc * 100).toFixed(1)}%`);
    if (round.policy) parts.push(`new policy ${round.policy.label}`);
    $("round-subtitle").textContent = parts.join(" · ");
  }
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
  state.rounds = await api.get(config.urls.rounds);
  const latest = state.rounds[0] || null;
  const key = state.rounds.map((r) => `${r.id}:${r.stage}`).join(",");
  if (key !== state.lastKey || state.ticks % SLOW_EVERY === 0) await refreshSlow();
  state.lastKey = key;
  state.ticks += 1;
  renderCurrent(latest);
  renderHistory();
  curves.follow(renderCurveSelector());
  await curves.refresh(api, config.urls.metrics);
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

$("curve-round").addEventListener("change", (event) => {
  state.curveRound = Number(event.target.value);
  curves.follow(renderCurveSelector());
  curves.refresh(api, config.urls.metrics).catch((error) => notice(error.message, "error"));
});

$("num-prompts").placeholder = String(config.defaultPrompts);
poll();
