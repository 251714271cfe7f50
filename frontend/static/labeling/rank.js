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
  checkAgain: $("check-again"), meta: $("task-meta"), progress: $("round-progress"),
  guidelines: $("guidelines-panel"), guidelinesToggle: $("guidelines-toggle"),
  guidelinesClose: $("guidelines-close"),
};
const EMPTY_RETRY_MS = 30_000;
const LOADING_DELAY_MS = 250;
const MIN_LEASE_LEFT_MS = 30_000; // a prefetched task closer to expiry than this is re-fetched
const COMPARE_MAX_K = 4; // side by side by default up to this K, on a wide screen
const WIDE = window.matchMedia("(min-width: 1100px)");
const TOUCH = window.matchMedia("(pointer: coarse)");
const COMPARE_KEY = "rlhf-studio:compare";

const counter = new WorkCounter({ slug: config.slug, counts: config.counts });
const app = {
  task: null, cards: [], state: null, flags: new Map(), busy: false,
  prefetched: null, prefetchToken: 0, emptyTimer: null, timer: new ActiveTimer(),
};

// --- notices (an aria-live region floating over the page: it never moves the cards) --------
// An info notice fades after a few seconds; an error stays until the labeler's next change
// of the ranking (which resolves it) or the next task.
let noticeTimer = null;
function notice(message, kind = "info") {
  clearTimeout(noticeTimer);
  dom.notice.textContent = message;
  dom.notice.dataset.kind = kind;
  if (kind === "info") noticeTimer = setTimeout(clearNotice, 4000);
}

function clearNotice() {
  clearTimeout(noticeTimer);
  dom.notice.textContent = "";
  delete dom.notice.dataset.kind;
}

// --- the half-finished ranking, kept per task in sessionStorage -------------------------
const draftKey = (taskId) => `rlhf-studio:draft:${config.userId}:${taskId}`;

function saveDraft() {
  if (!app.task) return;
  const flags = Object.fromEntries([...app.flags].filter(([, set]) => set.size).map(([id, set]) => [id, [...set]]));
  const draft = { state: app.state.snapshot(), flags, allUnacceptable: dom.allUnacceptable.checked };
  try {
    sessionStorage.setItem(draftKey(app.task.id), JSON.stringify(draft));
  } catch {
    // Storage full or disabled: the ranking still works, it just does not survive a reload.
  }
}

function restoreDraft(taskId) {
  let draft = null;
  try {
    draft = JSON.parse(sessionStorage.getItem(draftKey(taskId)) || "null");
  } catch {
    draft = null;
  }
  if (!draft || !app.state.restore(draft.state)) return false;
  for (const [id, names] of Object.entries(draft.flags ?? {})) {
    const set = app.flags.get(Number(id));
    if (set && Array.isArray(names)) for (const name of names) if (config.flags.includes(name)) set.add(name);
  }
  dom.allUnacceptable.checked = Boolean(draft.allUnacceptable);
  for (const node of dom.cards.children) {
    const set = app.flags.get(Number(node.dataset.responseId));
    for (const input of node.querySelectorAll("input[data-flag]")) input.checked = set.has(input.value);
  }
  const flagged = [...app.flags.values()].some((set) => set.size > 0);
  return app.state.placedCount > 0 || flagged || dom.allUnacceptable.checked;
}

function dropDraft(taskId) {
  sessionStorage.removeItem(draftKey(taskId));
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
  const previous = app.task;
  app.task = task;
  const ordered = [...task.responses].sort((a, b) => a.id - b.id);
  app.cards = seededShuffle(ordered, `${task.id}:${config.userId}`).map((response, index) => ({
    id: response.id, number: index + 1, text: response.text, duplicateOfId: response.duplicate_of ?? null,
  }));
  const numberOfId = new Map(app.cards.map((card) => [card.id, card.number]));
  for (const card of app.cards) card.duplicateOf = numberOfId.get(card.duplicateOfId) ?? null;
  app.state = new RankingState(app.cards.map((card) => card.id));
  app.flags = new Map(app.cards.map((card) => [card.id, new Set()]));
  dom.allUnacceptable.checked = false;
  dom.task.dataset.taskId = String(task.id);
  view.renderPrompt(dom.prompt, task);
  dom.cards.replaceChildren(...app.cards.map((card) => view.buildCard(card, config.flags)));
  dom.meta.textContent = `Task ${task.id} · ${app.cards.length} responses`;
  showProgress(task.round_progress);
  if (previous) clearNotice();
  const restored = restoreDraft(task.id);
  setCompare(comparePreference(app.cards.length), { remember: false });
  showScreen("task");
  if (previous && previous.id !== task.id) window.scrollTo({ top: 0, behavior: "instant" });
  for (const node of dom.cards.children) view.updateOverflow(node);
  app.busy = false;
  render();
  if (restored) notice("Your unfinished ranking of this task is back.");
  app.timer.start();
  prefetch(task.id);
}

// "312 / 400 rankings in round 3": the round's counters as of this task's lease.
function showProgress(progress) {
  dom.progress.hidden = !progress || !progress.wanted;
  if (dom.progress.hidden) return;
  dom.progress.textContent = `${progress.done} / ${progress.wanted} rankings in round ${progress.number}`;
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
  saveDraft();
}

// After a change of the ranking by the labeler: an error notice it resolved goes away.
function changed() {
  if (dom.notice.dataset.kind === "error") clearNotice();
  render();
}

function statusText(rejected) {
  const { state } = app;
  const k = app.cards.length;
  const submitHint = TOUCH.matches ? "Tap Submit." : "Press Enter to submit.";
  if (rejected) return `All responses marked unacceptable. ${submitHint}`;
  if (state.isComplete()) return `All placed. ${submitHint}`;
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
    changed();
  },
  toggle(id) {
    if (app.state.isPlaced(id)) app.state.unplace(id);
    else app.state.append(id);
    changed();
  },
  tie() {
    if (app.state.isComplete()) return notice("All responses are placed already.", "error");
    if (!app.state.markTie()) return notice("Place a card first; the next card then ties with it.", "error");
    changed();
  },
  toggleTie() {
    if (app.state.tieNext) app.state.cancelTie();
    else return actions.tie();
    render();
  },
  undo() {
    if (app.state.removeLast() === null) return notice("Nothing placed yet.", "error");
    changed();
  },
  clear() {
    app.state.clear();
    changed();
  },
  // "f": the next digit names a flag for the card placed last. Returns whether it waits.
  flagPending(on) {
    if (!on) {
      dom.cards.classList.remove("is-flagging");
      return false;
    }
    const last = app.state.history[app.state.history.length - 1];
    const problem = config.flags.length === 0 ? "This project has no flags."
      : last === undefined ? "Place a card first; f then a digit flags the card placed last." : "";
    if (problem) {
      notice(problem, "error");
      return false;
    }
    dom.cards.classList.add("is-flagging");
    const number = app.cards.find((c) => c.id === last).number;
    const names = config.flags.slice(0, 9).map((flag, i) => `${i + 1} ${flag}`).join(", ");
    notice(`Flag response ${number}: press ${names}.`);
    return true;
  },
  flagNumber(n) {
    const flag = config.flags[n - 1];
    const last = app.state.history[app.state.history.length - 1];
    if (!flag) return notice(`There is no flag ${n}: this project has ${config.flags.length}.`, "error");
    if (last === undefined) return;
    const set = app.flags.get(last);
    const on = !set.has(flag);
    if (on) set.add(flag);
    else set.delete(flag);
    const node = dom.cards.querySelector(`.card[data-response-id="${last}"]`);
    const input = [...node.querySelectorAll("input[data-flag]")].find((i) => i.value === flag);
    if (input) input.checked = on;
    notice(`Response ${node.dataset.number}: ${on ? "flagged" : "unflagged"} ${flag}.`);
    saveDraft();
  },
  toggleUnacceptable() {
    dom.allUnacceptable.checked = !dom.allUnacceptable.checked;
    changed();
  },
  toggleGuidelines() {
    setGuidelines(dom.guidelines.hidden);
  },
  escape() {
    dom.cards.classList.remove("is-flagging");
    if (!dom.guidelines.hidden) setGuidelines(false);
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
    changed();
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
  const taskId = app.task.id;
  try {
    await request();
    dropDraft(taskId);
    counter.finished({ ranked: countsAsWork });
    notice(doneMessage);
  } catch (error) {
    notice(error.message, "error");
    if (error.status !== 409) {
      app.busy = false;
      return render();
    }
    dropDraft(taskId);
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
    view.updateOverflow(card);
  }
  if (event.detail > 0) button.blur();
});
dom.cards.addEventListener("change", (event) => {
  const input = event.target.closest("input[data-flag]");
  if (!input) return;
  const set = app.flags.get(Number(input.closest(".card").dataset.responseId));
  if (input.checked) set.add(input.value);
  else set.delete(input.value);
  saveDraft();
});
dom.groups.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action=unplace]");
  if (!button) return;
  app.state.unplace(Number(button.closest(".slot").dataset.responseId));
  changed();
});
for (const [button, action] of [
  [dom.submit, actions.submit], [dom.skip, actions.skip], [dom.undo, actions.undo],
  [dom.clear, actions.clear], [dom.tie, actions.toggleTie],
]) {
  button.addEventListener("click", (event) => { blurAfterPointer(event); action(); });
}
dom.allUnacceptable.addEventListener("change", () => changed());
dom.checkAgain.addEventListener("click", () => load());
dom.layout.addEventListener("click", () => setCompare(dom.layout.getAttribute("aria-pressed") !== "true", { remember: true }));
dom.expandAll.addEventListener("click", () => {
  const expand = dom.expandAll.getAttribute("aria-pressed") !== "true";
  dom.expandAll.setAttribute("aria-pressed", String(expand));
  for (const node of dom.cards.children) {
    view.setExpanded(node, expand);
    view.updateOverflow(node);
  }
});
dom.guidelinesToggle.addEventListener("click", (event) => { blurAfterPointer(event); actions.toggleGuidelines(); });
dom.guidelinesClose.addEventListener("click", () => setGuidelines(false));

// Side by side (one column per response) unless the labeler chose otherwise: by default
// for K <= COMPARE_MAX_K on a wide screen.
function comparePreference(k) {
  const stored = localStorage.getItem(COMPARE_KEY);
  if (stored === "1" || stored === "0") return stored === "1";
  return k <= COMPARE_MAX_K && WIDE.matches;
}

function setCompare(on, { remember }) {
  dom.layout.setAttribute("aria-pressed", String(on));
  dom.cards.classList.toggle("cards--compare", on);
  dom.cards.style.setProperty("--columns", String(Math.min(Math.max(app.cards.length, 1), COMPARE_MAX_K)));
  if (remember) localStorage.setItem(COMPARE_KEY, on ? "1" : "0");
  for (const node of dom.cards.children) view.updateOverflow(node);
}

// The guidelines as a side panel, open at any time (the button or "g").
function setGuidelines(open) {
  dom.guidelines.hidden = !open;
  dom.guidelinesToggle.setAttribute("aria-expanded", String(open));
  document.body.classList.toggle("has-side-panel", open);
  if (open) dom.guidelinesClose.focus({ preventScroll: true });
  else if (dom.guidelines.contains(document.activeElement)) dom.guidelinesToggle.focus({ preventScroll: true });
}

// The page keeps room below the last card for the fixed tray, however tall it wraps.
new ResizeObserver(() => {
  document.body.style.setProperty("--tray-height", `${dom.tray.offsetHeight}px`);
}).observe(dom.tray);
// A card is cut (faded, "Show more") only while its text overflows at the current width.
new ResizeObserver(() => {
  for (const node of dom.cards.children) view.updateOverflow(node);
}).observe(dom.cards);

wireDragAndDrop({ tray: dom.groups, cards: dom.cards, onMove: actions.move });
wireKeyboard({ isActive: () => Boolean(app.task) && !app.busy, actions });
counter.render();
load();
