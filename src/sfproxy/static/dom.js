// DOM helpers. Text from users and from the API only ever goes in through textContent or
// element properties, never as markup.

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}

// A copy of a <template>'s element, with its [data-part] children by name.
export function fromTemplate(id) {
  const root = byId(id).content.firstElementChild.cloneNode(true);
  const parts = {};
  for (const node of root.querySelectorAll("[data-part]")) parts[node.dataset.part] = node;
  return { root, parts };
}

export function option(value, label) {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = label;
  return node;
}

export function setLabel(node, label) {
  node.setAttribute("aria-label", label);
  node.title = label;
}

// Only http(s) addresses become links or image sources, whatever the server or storage holds.
export function safeUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, document.baseURI);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}
