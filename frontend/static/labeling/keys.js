// The keyboard scheme of PRODUCT.md ("Browser"), active when no text field has focus:
//   1..9       append card n to the ranking (best first)
//   =          the next appended card ties with the one before it
//   Backspace  remove the last placed card
//   Enter      submit, once all K are placed
//   s          skip
//   f then 1..9  toggle flag n (of the project's flags) on the card placed last
//   u          toggle "all unacceptable"
//   g          open or close the guidelines panel
//   Escape     close the guidelines panel, or cancel a pending f

const NON_TEXT_INPUTS = new Set(["checkbox", "radio", "button", "submit", "reset", "range", "color", "file"]);

export function isTextField(node) {
  if (!(node instanceof Element)) return false;
  if (node.isContentEditable) return true;
  if (node.tagName === "TEXTAREA" || node.tagName === "SELECT") return true;
  return node.tagName === "INPUT" && !NON_TEXT_INPUTS.has(node.type);
}

export function wireKeyboard({ isActive, actions, target = document }) {
  let flagPending = false; // "f" was pressed: the next digit names a flag
  target.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.isComposing || isTextField(event.target)) return;
    const { key } = event;
    // The guidelines open and close at any time, with or without a task on screen.
    if (key === "g" || key === "G") {
      flagPending = false;
      actions.toggleGuidelines();
      event.preventDefault();
      return;
    }
    if (key === "Escape") {
      flagPending = false;
      actions.escape();
      return;
    }
    if (!isActive()) return;
    if (flagPending) {
      flagPending = false;
      actions.flagPending(false);
      if (/^[1-9]$/.test(key)) {
        actions.flagNumber(Number(key));
        event.preventDefault();
        return;
      }
    }
    if (key === "f" || key === "F") {
      flagPending = actions.flagPending(true);
    } else if (key === "u" || key === "U") {
      actions.toggleUnacceptable();
    } else if (/^[1-9]$/.test(key)) {
      actions.placeNumber(Number(key));
    } else if (key === "=") {
      actions.tie();
    } else if (key === "Backspace") {
      actions.undo();
    } else if (key === "Enter") {
      // A focused button or link keeps its own Enter (e.g. "Skip" reached with Tab).
      if (event.target instanceof Element && event.target.closest("button, a, summary")) return;
      actions.submit();
    } else if (key === "s" || key === "S") {
      actions.skip();
    } else {
      return;
    }
    event.preventDefault();
  });
}
