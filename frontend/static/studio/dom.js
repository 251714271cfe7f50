// The one DOM builder of every page. Text is hostile data (prompts, model replies): it goes
// in only through textContent, never parsed as HTML, so markup stays text.

// el("li", { className, text, attrs }, children): attributes that are null, undefined or
// false are left out (so `{ hidden: flag }` works); falsy children are skipped.
export function el(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}
