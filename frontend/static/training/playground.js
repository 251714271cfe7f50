// The playground: a chat with the current policy. Each send posts the whole conversation
// (a chat list) and polls the queued reply until the worker has answered. Model text is
// only ever set with textContent.

import { el } from "../studio/dom.js";
import { fill, makeClient, readConfig } from "./http.js";

const config = readConfig("playground-config");
const api = makeClient(config.csrfToken);
const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

// Feather icons (MIT): thumbs-up and thumbs-down.
const THUMBS = {
  up: "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
  down: "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17",
};
const SLOW_AFTER_MS = 20000;

let history = []; // the conversation sent to the policy: [{role, content}, ...]
let busy = false;

function notice(message, kind = "info") {
  $("notice").dataset.kind = kind;
  $("notice").textContent = message || "";
}

function icon(path) {
  const svg = document.createElementNS(SVG_NS, "svg");
  for (const [k, v] of Object.entries({ width: 16, height: 16, viewBox: "0 0 24 24", fill: "none",
    stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true" })) {
    svg.setAttribute(k, String(v));
  }
  const p = document.createElementNS(SVG_NS, "path");
  p.setAttribute("d", path);
  svg.appendChild(p);
  return svg;
}

function addTurn(role, text, extraClass = "") {
  $("transcript-empty").hidden = true;
  const body = el("div", { className: "turn__text", text });
  const turn = el("div", { className: `turn turn--${role} ${extraClass}`.trim() }, [
    el("div", { className: "turn__who", text: role === "user" ? "You" : "Policy" }),
    body,
  ]);
  $("transcript").appendChild(turn);
  turn.scrollIntoView({ block: "end", behavior: "smooth" });
  return { turn, body };
}

function setBusy(value) {
  busy = value;
  $("send").disabled = value;
}

const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));

const seconds = (ms) => `${Math.max(0, Math.round(ms / 1000))} s`;

// What the server says about the reply, in words: queued (waiting for a worker) or
// generating (a worker is sampling it, since `started_at`), with the time each has taken.
export function waitingText(reply, sentAt, now, maxNewTokens) {
  if (reply.status === "running") {
    const since = Date.parse(reply.started_at);
    const took = Number.isNaN(since) ? "" : ` · ${seconds(now - since)}`;
    return `Generating (up to ${maxNewTokens} tokens)${took}…`;
  }
  const waited = now - sentAt;
  if (waited > SLOW_AFTER_MS) {
    return `Queued for ${seconds(waited)}: no worker of the default queue is free yet (one that also trains may be in a run). Waiting…`;
  }
  return `Queued for a worker · ${seconds(waited)}…`;
}

async function waitForReply(id, label) {
  const sentAt = Date.now();
  for (;;) {
    const reply = await api.get(fill(config.replyUrl, id));
    if (reply.status !== "queued" && reply.status !== "running") return reply;
    label.textContent = waitingText(reply, sentAt, Date.now(), config.maxNewTokens);
    label.closest(".thinking").dataset.status = reply.status;
    await sleep(config.pollMs);
  }
}

// --------------------------------------------------------------------------- replies

function thumbButton(reply, rating, label, group) {
  const button = el("button", {
    className: "btn btn--small", attrs: { type: "button", "aria-pressed": reply.rating === rating, title: label },
  }, [icon(rating === 1 ? THUMBS.up : THUMBS.down), el("span", { text: rating === 1 ? "Good" : "Bad" })]);
  button.addEventListener("click", async () => {
    try {
      await api.post(fill(config.replyUrl, reply.id) + "feedback/", { rating });
      for (const b of group) b.setAttribute("aria-pressed", String(b === button));
    } catch (error) {
      notice(error.message, "error");
    }
  });
  return button;
}

function betterAnswerForm(reply, tools) {
  const area = el("textarea", { attrs: { rows: 5, "aria-label": "A better answer", maxlength: 100000 } });
  area.value = reply.text;
  const save = el("button", { className: "btn btn--primary btn--small", text: "Save as demonstration", attrs: { type: "submit" } });
  const status = el("span", { className: "muted small" });
  const form = el("form", { className: "better" }, [
    el("label", { className: "small muted", text: "Write the answer the assistant should have given:" }),
    area,
    el("div", { className: "better__actions" }, [save, status]),
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      await api.post(fill(config.replyUrl, reply.id) + "demonstration/", { response: area.value });
      status.textContent = "Saved as a demonstration. Thank you!";
      area.readOnly = true;
    } catch (error) {
      status.textContent = error.message;
      save.disabled = false;
    }
  });
  tools.after(form);
  area.focus();
}

function showReply(reply, turn, body) {
  body.textContent = reply.text || "(an empty reply)";
  turn.querySelector(".turn__who").textContent = `Policy · ${reply.policy_version || "?"}`;
  const group = [];
  const tools = el("div", { className: "turn__tools" });
  group.push(thumbButton(reply, 1, "Thumbs up: a good reply", group));
  group.push(thumbButton(reply, -1, "Thumbs down: a bad reply", group));
  const better = el("button", { className: "btn btn--ghost btn--small", text: "Write a better answer", attrs: { type: "button" } });
  better.addEventListener("click", () => {
    better.disabled = true;
    betterAnswerForm(reply, tools);
  });
  tools.append(...group, better);
  if (reply.finished === false) tools.appendChild(el("span", { className: "muted", text: "cut at the length limit" }));
  turn.appendChild(tools);
}

// --------------------------------------------------------------------------- sending

async function ask(conversation) {
  const { turn, body } = addTurn("assistant", "");
  body.replaceChildren(el("span", { className: "thinking" }, [
    el("span", { className: "spinner", attrs: { "aria-hidden": "true" } }),
    el("span", { className: "thinking__label", text: "Sending…", attrs: { "data-role": "waiting" } }),
  ]));
  try {
    const queued = await api.post(config.requestUrl, { prompt: conversation });
    const reply = await waitForReply(queued.id, body.querySelector("[data-role=waiting]"));
    if (reply.status === "failed") throw new Error(`The policy failed: ${reply.error}`);
    showReply(reply, turn, body);
    return reply;
  } catch (error) {
    turn.classList.add("turn--failed");
    body.textContent = error.message;
    return null;
  }
}

async function send(text) {
  setBusy(true);
  notice("");
  addTurn("user", text);
  const conversation = [...history, { role: "user", content: text }];
  const reply = await ask(conversation);
  if (reply) {
    history = [...conversation, { role: "assistant", content: reply.text }];
    $("policy-label").textContent = reply.policy_version || $("policy-label").textContent;
  }
  setBusy(false);
  $("message").focus();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value;
  if (busy || !text.trim()) return;
  $("message").value = "";
  send(text);
});

$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("new-chat").addEventListener("click", () => {
  history = [];
  $("transcript").replaceChildren($("transcript-empty"));
  $("transcript-empty").hidden = false;
  $("message").focus();
});
