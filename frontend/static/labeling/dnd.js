// Drag and drop for the ranking: drag a card (or a placed slot) onto a group to tie it
// there, onto a gap (or the end of the tray) to give it a rank of its own, or back onto
// the cards to take it out of the ranking. Phones use tap-to-place instead (HTML5 drag
// events do not fire on touch screens).

const MIME = "application/x-rlhf-response";

function responseIdOf(event) {
  const raw = event.dataTransfer.getData(MIME) || event.dataTransfer.getData("text/plain");
  const id = Number.parseInt(raw, 10);
  return Number.isFinite(id) ? id : null;
}

function dropTargetOf(node, tray, cards) {
  const zone = node.closest(".group, .gap");
  if (zone && tray.contains(zone)) return zone;
  if (cards.contains(node)) return cards;
  return null;
}

// onMove(responseId, target) with target {group: i} | {gap: i} | {pool: true}.
export function wireDragAndDrop({ tray, cards, onMove }) {
  let active = null;

  function clearHighlight() {
    for (const node of document.querySelectorAll(".is-drop-target")) node.classList.remove("is-drop-target");
  }

  function onDragStart(event) {
    const source = event.target.closest("[data-response-id][draggable='true']");
    if (!source) return;
    event.dataTransfer.setData(MIME, source.dataset.responseId);
    event.dataTransfer.setData("text/plain", source.dataset.responseId);
    event.dataTransfer.effectAllowed = "move";
    document.body.classList.add("is-dragging");
  }

  function onDragOver(event) {
    const target = dropTargetOf(event.target, tray, cards);
    if (!target) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    if (target !== active) {
      clearHighlight();
      target.classList.add("is-drop-target");
      active = target;
    }
  }

  function handleDrop(event) {
    const target = dropTargetOf(event.target, tray, cards);
    const id = responseIdOf(event);
    finish();
    if (!target || id === null) return;
    event.preventDefault();
    if (target === cards) onMove(id, { pool: true });
    else if (target.dataset.group !== undefined) onMove(id, { group: Number(target.dataset.group) });
    else onMove(id, { gap: Number(target.dataset.gap) });
  }

  function finish() {
    active = null;
    clearHighlight();
    document.body.classList.remove("is-dragging");
  }

  for (const root of [tray, cards]) {
    root.addEventListener("dragstart", onDragStart);
    root.addEventListener("dragover", onDragOver);
    root.addEventListener("drop", handleDrop);
    root.addEventListener("dragend", finish);
  }
}
