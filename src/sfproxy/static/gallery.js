// How a generation looks: a card per history entry, and the full-size viewer.
// The page supplies the actions: `use` (an image as the next edit's input) and `reuse` (settings).

import { byId, fromTemplate, setLabel } from "./dom.js";
import { formatSize, parseSize } from "./models.js";

function formatTime(time) {
  const today = new Date(time).toDateString() === new Date().toDateString();
  const style = today ? { timeStyle: "short" } : { dateStyle: "medium", timeStyle: "short" };
  return new Intl.DateTimeFormat(undefined, style).format(time);
}

function downloadName(entry, image, index) {
  const stem = entry.prompt
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "")
    .slice(0, 48);
  const extension = /\.(png|jpe?g|webp)$/i.exec(new URL(image.url).pathname)?.[1] ?? "png";
  return `${stem || "image"}-${image.seed ?? index + 1}.${extension}`;
}

const seedText = (image) => (image.seed === null ? "" : `seed ${image.seed}`);

export function renderEntry(entry, { lazy, viewer, use, reuse }) {
  const { root, parts } = fromTemplate("tpl-entry");
  root.dataset.entry = entry.id;
  parts.prompt.textContent = entry.prompt;
  if (entry.negative) {
    parts.negative.hidden = false;
    parts.negative.textContent = `Negative: ${entry.negative}`;
  }
  parts.model.textContent = entry.model;
  if (entry.inputs) {
    parts.edit.hidden = false;
    parts.edit.textContent = entry.inputs === 1 ? "edit" : `edit · ${entry.inputs} inputs`;
  }
  parts.time.dateTime = new Date(entry.time).toISOString();
  parts.time.textContent = formatTime(entry.time);
  setLabel(parts.reuse, "Put these settings back in the form");
  parts.reuse.addEventListener("click", () => reuse(entry));
  parts.grid.append(
    ...entry.images.map((image, index) => renderShot(entry, image, index, { lazy, viewer, use })),
  );
  return root;
}

function renderShot(entry, image, index, { lazy, viewer, use }) {
  const { root, parts } = fromTemplate("tpl-shot");
  const size = parseSize(entry.size);
  if (size) {
    // The card has the image's shape before the image arrives.
    parts.image.width = size.width;
    parts.image.height = size.height;
    parts.size.textContent = formatSize(entry.size);
  }
  parts.image.alt = `${entry.prompt} (image ${index + 1})`;
  parts.image.loading = lazy ? "lazy" : "eager";
  parts.image.addEventListener("load", () => {
    parts.size.textContent = `${parts.image.naturalWidth}×${parts.image.naturalHeight}`;
  });
  parts.image.addEventListener("error", () => {
    root.classList.add("missing");
    parts.size.textContent = "no longer available";
  });
  parts.image.src = image.url;
  parts.seed.textContent = seedText(image);
  setLabel(parts.open, `Open image ${index + 1} full size`);
  parts.open.addEventListener("click", () => viewer.open(entry, image, index));
  parts.download.href = image.url;
  parts.download.download = downloadName(entry, image, index);
  setLabel(parts.download, `Download image ${index + 1}`);
  setLabel(parts.use, `Use image ${index + 1} as input`);
  parts.use.addEventListener("click", () => use(image.url, `image ${index + 1}`));
  return root;
}

export class Viewer {
  constructor({ use }) {
    this.dialog = byId("viewer");
    this.image = byId("viewer-image");
    this.prompt = byId("viewer-prompt");
    this.meta = byId("viewer-meta");
    this.download = byId("viewer-download");
    this.original = byId("viewer-open");
    this.showing = null;
    byId("viewer-close").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.dialog.close(); // a click on the backdrop
    });
    this.dialog.addEventListener("close", () => {
      this.image.removeAttribute("src");
      this.showing = null;
    });
    byId("viewer-use").addEventListener("click", () => {
      const { url, name } = this.showing;
      this.dialog.close();
      use(url, name);
    });
  }

  open(entry, image, index) {
    this.showing = { url: image.url, name: `image ${index + 1}` };
    const describe = () => {
      const size = this.image.naturalWidth
        ? `${this.image.naturalWidth}×${this.image.naturalHeight}`
        : entry.size && formatSize(entry.size);
      this.meta.textContent = [entry.model, size, seedText(image)].filter(Boolean).join(" · ");
    };
    this.image.onload = describe;
    this.image.alt = entry.prompt;
    this.image.src = image.url;
    this.prompt.textContent = entry.prompt;
    describe();
    this.download.href = image.url;
    this.download.download = downloadName(entry, image, index);
    this.original.href = image.url;
    this.dialog.showModal();
  }
}
