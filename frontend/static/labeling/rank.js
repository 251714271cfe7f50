// The ranking screen: one task at a time, K cards numbered 1..K in a per-labeler shuffled
// order, ranked by keyboard, taps or drag and drop; the next task is leased in the
// background while the labeler reads, so submitting shows it at once.

import { makeApi } from "./api.js";
import { WorkCounter } from "./counter.js";
import { wireDragAndDrop } from "./dnd.js";
import { wireKeyboard } from "./keys.js";
import { RankingState } from "./ranking_state.js";
import * as view from "./render.js";
import { seededShuffle } from "./shuffle.js";
import { ActiveTimer } from "./timer.js";

const config = JSON.parse(document.getElementById("rank-config").textContent);
const api = makeApi(config);
const $ = (id) => document.getElementById(id);
const dom = {
  task: $("task"), prompt: $("prompt"), cards: $("cards"), groups: $("groups"), tray: $("tray"),
  status: $("tray-status"), notice: $("notice"), loading: $("loading"), empty: $("empty"),
  submit: $("submit"), skip: $("skip"), undo: $("undo"), clear: $("clear"), tie: $("tie"),
  allUnacceptable: $("all-unacceptable"), layout: $("layout-toggle"), expandAll: $("expand-all"),
  checkAgain: $("check-again"), meta: $("task-meta"),
};
const EMPTY_RETRY_MS = 30_000;
const LOADING_DELAY_MS = 250;
const MIN_LEASE_LEFT_MS = 30_000; // a prefetched task closer to expiry than this is re-fetched

const counter = new WorkCounter({ slug: config.slug, counts: config.counts });
const app = {
  task: null, cards: [], state: null, flags: new Map(), busy: false,
  prefetched: null, prefetchToken: 0, emptyTimer: null, timer: new ActiveTimer(),
};

// --- notices (an aria-live region) --------------------------------------------------------
let noticeTimer = null;
function notice(message, kind = "info") {
  clearTimeout(noticeTimer);
  dom.notice.textContent = message;
  dom.notice.dataset.kind = kind;
  if (kind === "info") noticeTimer = setTimeout(() => { dom.notice.textContent = ""; }, 4000);
}

// --- screens -------------------------------------------------------------------------------
function showScreen(name) {
  dom.loading.hidden = name !== "loading";
  dom.empty.hidden = name !== "empty";
  dom.task.hidden = name !== "task";
  dom.tray.hidden = name !== "task";
  if (name !== "empty") clearInterval(app.emptyTimer);
}

function showTask(task) {
  app.task = task;
  const ordered = [...task.responses].sort((a, b) => a.id - b.id);
  app.cards = seededShuffle(ordered, `${task.id}:${config.userId}`).map((response, index) => ({
    id: response.id, number: index + 1, text: response.text,
  }));
  app.state = new RankingState(app.cards.map((card) => card.id));
  app.flags = new Map(app.cards.map((card) => [card.id, new Set()]));
  dom.allUnacceptable.checked = false;
  dom.task.dataset.taskId = String(task.id);
  view.renderPrompt(dom.prompt, task);
  dom.cards.replaceChildren(...app.cards.map((card) => view.buildCard(card, config.flags)));
  dom.meta.textContent = `Task ${task.id} · ${app.cards.length} responses`;
  showScreen("task");
  for (const node of dom.cards.children) view.updateOverflow(node);
  app.busy = false;
  render();
  app.timer.start();
  prefetch(task.id);
}

function showEmpty() {
  app.task = null;
  showScreen("empty");
  clearInterval(app.emptyTimer);
  app.emptyTimer = setInterval(() => { if (!document.hidden) load(); }, EMPTY_RETRY_MS);
}

// Reflect the ranking state in the tray, the cards and the buttons.
function render() {
  const { state } = app;
  const numberOf = (id) => app.cards.find((card) => card.id === id).number;
  view.renderGroups(dom.groups, state, numberOf, app.cards.length);
  const rejected = dom.allUnacceptable.checked;
  for (const node of dom.cards.children) {
    const id = Number(node.dataset.responseId);
    const group = state.groupIndexOf(id);
    const tied = group >= 0 && state.groups[group].length > 1;
    node.classList.toggle("is-placed", group >= 0);
    node.querySelector("[data-role=rank]").textContent = group < 0 ? "" : `${view.ordinal(group + 1)}${tied ? " (tie)" : ""}`;
    const place = node.querySelector("[data-action=place]");
    place.textContent = group < 0 ? "Place" : "Remove";
    place.setAttribute("aria-label", `${group < 0 ? "Place" : "Remove"} response ${node.dataset.number}`);
  }
  dom.cards.classList.toggle("is-rejected", rejected);
  dom.tie.setAttribute("aria-pressed", String(state.tieNext));
  dom.tie.disabled = state.groups.length === 0 || state.isComplete() || rejected;
  dom.undo.disabled = state.placedCount === 0;
  dom.clear.disabled = state.placedCount === 0;
  dom.submit.disabled = app.busy || !(rejected || state.isComplete());
  dom.skip.disabled = app.busy;
  dom.status.textContent = statusText(rejected);
}

function statusText(rejected) {
  const { state } = app;
  const k = app.cards.length;
  if (rejected) return "All responses marked unacceptable. Press Enter to submit.";
  if (state.isComplete()) return "All placed. Press Enter to submit.";
  const tie = state.tieNext ? " The next card ties with the one before." : "";
  return `${state.placedCount} of ${k} placed.${tie}`;
}

// --- loading and prefetching -------------------------------------------------------------
// Fetch the next task. After a submission the finished task stays on screen (inert) and
// the loading screen appears only if the server is slow, so the page does not flicker.
async function load({ quiet = false } = {}) {
  const slow = setTimeout(() => showScreen("loading"), quiet ? LOADING_DELAY_MS : 0);
  try {
    const task = await api.nextTask(config.slug);
    clearTimeout(slow);
    if (task?.counts) counter.sync(task.counts);
    if (task) showTask(task);
    else showEmpty();
  } catch (error) {
    clearTimeout(slow);
    notice(error.message, "error");
    showEmpty();
  }
}

async function prefetch(currentId) {
  app.prefetched = null;
  const token = ++app.prefetchToken;
  try {
    const task = await api.nextTask(config.slug, currentId);
    if (token === app.prefetchToken && task && task.id !== currentId) app.prefetched = task;
  } catch {
    // Not fatal: the next task is fetched on demand after this one.
  }
}

function takePrefetched() {
  const task = app.prefetched;
  app.prefetched = null;
  app.prefetchToken += 1; // a prefetch still in flight is now stale
  if (!task) return null;
  const left = Date.parse(task.expires_at) - Date.now();
  return Number.isNaN(left) || left > MIN_LEASE_LEFT_MS ? task : null;
}

async function advance() {
  const next = takePrefetched();
  if (next) showTask(next);
  else await load({ quiet: true });
}

// --- actions -------------------------------------------------------------------------------
const actions = {
  placeNumber(number) {
    const card = app.cards.find((c) => c.number === number);
    if (!card) return notice(`There is no response ${number}: this task has ${app.cards.length}.`, "error");
    if (app.state.isPlaced(card.id)) return notice(`Response ${number} is already placed.`, "error");
    app.state.append(card.id);
    render();
  },
  toggle(id) {
    if (app.state.isPlaced(id)) app.state.unplace(id);
    else app.state.append(id);
    render();
  },
  tie() {
    if (app.state.isComplete()) return notice("All responses are placed already.", "error");
    if (!app.state.markTie()) return notice("Place a card first; the next card then ties with it.", "error");
    render();
  },
  toggleTie() {
    if (app.state.tieNext) app.state.cancelTie();
    else return actions.tie();
    render();
  },
  undo() {
    if (app.state.removeLast() === null) return notice("Nothing placed yet.", "error");
    render();
  },
  clear() {
    app.state.clear();
    render();
  },
  async submit() {
    if (!app.task || app.busy) return;
    const rejected = dom.allUnacceptable.checked;
    if (!rejected && !app.state.isComplete()) {
      const left = app.cards.length - app.state.placedCount;
      return notice(`Place all ${app.cards.length} responses first (${left} left).`, "error");
    }
    const payload = {
      order: rejected ? [app.cards.map((card) => card.id)] : app.state.order(),
      flags: flagsPayload(),
      time_spent_ms: app.timer.elapsedMs(),
      all_unacceptable: rejected,
    };
    await send(() => api.submitRanking(app.task.id, payload), "Ranking saved.", true);
  },
  async skip() {
    if (!app.task || app.busy) return;
    await send(() => api.skipTask(app.task.id), "Task skipped.", false);
  },
  move(id, target) {
    if (target.pool) app.state.unplace(id);
    else if (target.group !== undefined) app.state.moveToGroup(id, target.group);
    else app.state.moveToNewGroup(id, target.gap);
    render();
  },
};

function flagsPayload() {
  const flags = {};
  for (const [id, set] of app.flags) if (set.size > 0) flags[String(id)] = [...set];
  return flags;
}

// Send a submission or a skip; a 409 means the server already has it, so move on.
async function send(request, doneMessage, countsAsWork) {
  app.busy = true;
  render();
  dom.submit.textContent = "Saving…";
  try {
    await request();
    counter.finished({ ranked: countsAsWork });
    notice(doneMessage);
  } catch (error) {
    notice(error.message, "error");
    if (error.status !== 409) {
      app.busy = false;
      return render();
    }
  } finally {
    dom.submit.textContent = "Submit";
  }
  await advance();
}

// --- wiring --------------------------------------------------------------------------------
function blurAfterPointer(event) {
  if (event.detail > 0) event.currentTarget.blur?.(); // keep Enter for "submit" after a mouse click
}

dom.cards.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || !app.task) return;
  const card = button.closest(".card");
  if (button.dataset.action === "place") actions.toggle(Number(card.dataset.responseId));
  if (button.dataset.action === "expand") {
    view.setExpanded(card, button.getAttribute("aria-expanded") !== "true");
  }
  if (event.detail > 0) button.blur();
});
dom.cards.addEventListener("change", (event) => {
  const input = event.target.closest("input[data-flag]");
  if (!input) return;
  const set = app.flags.get(Number(input.closest(".card").dataset.responseId));
  if (input.checked) set.add(input.value);
  else set.delete(input.value);
});
dom.groups.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action=unplace]");
  if (!button) return;
  app.state.unplace(Number(button.closest(".slot").dataset.responseId));
  render();
});
for (const [button, action] of [
  [dom.submit, actions.submit], [dom.skip, actions.skip], [dom.undo, actions.undo],
  [dom.clear, actions.clear], [dom.tie, actions.toggleTie],
]) {
  button.addEventListener("click", (event) => { blurAfterPointer(event); action(); });
}
dom.allUnacceptable.addEventListener("change", () => render());
dom.checkAgain.addEventListener("click", () => load());
dom.layout.addEventListener("click", () => setCompare(dom.layout.getAttribute("aria-pressed") !== "true"));
dom.expandAll.addEventListener("click", () => {
  const expand = dom.expandAll.getAttribute("aria-pressed") !== "true";
  dom.expandAll.setAttribute("aria-pressed", String(expand));
  for (const node of dom.cards.children) view.setExpanded(node, expand);
});

function setCompare(on) {
  dom.layout.setAttribute("aria-pressed", String(on));
  dom.cards.classList.toggle("cards--compare", on);
  localStorage.setItem("rlhf-studio:compare", on ? "1" : "0");
  for (const node of dom.cards.children) view.updateOverflow(node);
}

wireDragAndDrop({ tray: dom.groups, cards: dom.cards, onMove: actions.move });
wireKeyboard({ isActive: () => Boolean(app.task) && !app.busy, actions });
setCompare(localStorage.getItem("rlhf-studio:compare") === "1");
counter.render();
load();
