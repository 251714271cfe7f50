// DOM builders for the ranking screen. Prompt and response text are hostile data: they
// reach the page only through textContent (never parsed as HTML), so markup stays text.

import { el } from "../studio/dom.js";

const KNOWN_ROLES = new Set(["system", "user", "assistant"]);

export function ordinal(n) {
  const suffixes = ["th", "st", "nd", "rd"];
  const v = n % 100;
  return `${n}${suffixes[(v - 20) % 10] || suffixes[v] || suffixes[0]}`;
}

// The conversation to show above the cards: the chat context when there is one.
export function promptMessages(task) {
  if (Array.isArray(task.chat) && task.chat.length > 0) return task.chat;
  if (Array.isArray(task.prompt)) return task.prompt;
  return [{ role: "user", content: String(task.prompt ?? "") }];
}

export function renderPrompt(container, task) {
  const messages = promptMessages(task).map((message) => {
    const role = KNOWN_ROLES.has(message.role) ? message.role : "other";
    return el("div", { className: `message message--${role}` }, [
      el("div", { className: "message__role", text: message.role ?? "user" }),
      el("div", { className: "message__content", text: message.content ?? "" }),
    ]);
  });
  container.replaceChildren(...messages);
}

function flagChips(card, vocabulary) {
  const chips = vocabulary.map((flag, index) => {
    const input = el("input", { attrs: { type: "checkbox", value: flag, "data-flag": flag } });
    const key = index < 9 ? el("kbd", { className: "chip__key", text: index + 1, attrs: { "aria-hidden": "true" } }) : null;
    return el("label", { className: "chip" }, [input, key, el("span", { text: flag })]);
  });
  const legend = el("legend", { className: "visually-hidden", text: `Flags for response ${card.number}` });
  return el("fieldset", { className: "card__flags" }, [legend, ...chips]);
}

// card: {id, number, text, duplicateOf}; the number is what the labeler sees and types;
// duplicateOf is the number of an earlier response this one nearly repeats, or null.
export function buildCard(card, vocabulary) {
  const place = el("button", {
    className: "btn btn--small card__place",
    text: "Place",
    attrs: { type: "button", "data-action": "place", "aria-label": `Place response ${card.number}` },
  });
  const header = el("header", { className: "card__head" }, [
    el("span", { className: "card__num", text: card.number, attrs: { "aria-hidden": "true" } }),
    el("h3", { className: "card__title", text: `Response ${card.number}`, attrs: { id: `card-title-${card.id}` } }),
    el("span", { className: "card__rank", attrs: { "data-role": "rank" } }),
    place,
  ]);
  const duplicate = card.duplicateOf
    ? el("p", { className: "card__duplicate" }, [
      el("span", { className: "badge badge--duplicate", text: `nearly identical to response ${card.duplicateOf}`, attrs: { "data-role": "duplicate" } }),
    ])
    : null;
  const body = el("div", { className: "card__body is-collapsed" }, [
    el("div", { className: "card__text", text: card.text, attrs: { "data-role": "text" } }),
  ]);
  const expand = el("button", {
    className: "card__expand",
    text: "Show more",
    attrs: { type: "button", "data-action": "expand", "aria-expanded": "false", hidden: "" },
  });
  const children = [header, duplicate, body, expand].filter(Boolean);
  if (vocabulary.length > 0) children.push(flagChips(card, vocabulary));
  return el(
    "article",
    {
      className: "card",
      attrs: {
        "data-response-id": card.id,
        "data-number": card.number,
        draggable: "true",
        "aria-labelledby": `card-title-${card.id}`,
      },
    },
    children,
  );
}

// Show "Show more" and the fade only on cards whose text is really cut off by the
// collapsed height (`is-cut`); a short text is shown whole, unfaded.
export function updateOverflow(cardNode) {
  const body = cardNode.querySelector(".card__body");
  const button = cardNode.querySelector(".card__expand");
  const collapsed = body.classList.contains("is-collapsed");
  const overflowing = collapsed && body.scrollHeight > body.clientHeight + 2;
  body.classList.toggle("is-cut", overflowing);
  button.hidden = collapsed ? !overflowing : false;
}

export function setExpanded(cardNode, expanded) {
  const body = cardNode.querySelector(".card__body");
  const button = cardNode.querySelector(".card__expand");
  body.classList.toggle("is-collapsed", !expanded);
  if (expanded) body.classList.remove("is-cut");
  button.textContent = expanded ? "Show less" : "Show more";
  button.setAttribute("aria-expanded", String(expanded));
}

function slot(id, number) {
  const remove = el("button", {
    className: "slot__remove",
    text: "×",
    attrs: { type: "button", "data-action": "unplace", "aria-label": `Remove response ${number}` },
  });
  return el("li", { className: "slot", attrs: { draggable: "true", "data-response-id": id } }, [
    el("span", { className: "slot__num", text: number }),
    remove,
  ]);
}

function gap(position) {
  return el("li", { className: "gap", attrs: { "data-gap": position, "aria-hidden": "true" } }, [
    el("span", { className: "gap__sign", text: "›" }),
  ]);
}

// The ranking tray: groups best first, ">" gaps between them (drop there for a rank of
// its own), "=" inside a group (drop onto a group to tie).
export function renderGroups(list, state, numberOf, k) {
  const items = [];
  state.groups.forEach((group, index) => {
    if (index > 0) items.push(gap(index));
    const slots = el("ol", { className: "group__slots" }, group.map((id) => slot(id, numberOf(id))));
    items.push(
      el("li", { className: "group", attrs: { "data-group": index } }, [
        el("span", { className: "group__rank", text: ordinal(index + 1) }),
        slots,
      ]),
    );
  });
  const touch = window.matchMedia("(pointer: coarse)").matches;
  const start = touch ? "Tap “Place” on the cards, best first" : `Press 1–${k} or drag cards here, best first`;
  const hint = state.placedCount === 0 ? start : touch ? "" : "Drop here";
  items.push(el("li", { className: "gap gap--end", attrs: { "data-gap": state.groups.length } }, [
    el("span", { className: "gap__hint", text: hint }),
  ]));
  list.replaceChildren(...items);
}
