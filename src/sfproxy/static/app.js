// The playground: a form over the service's public /v1 API, and this browser's history.

import { AdminView } from "./admin.js";
import { ApiError, callApi, isSendableKey } from "./api.js";
import { byId, fromTemplate, option, safeUrl, setLabel } from "./dom.js";
import { renderEntry, Viewer } from "./gallery.js";
import { readHistory, writeHistory } from "./history.js";
import * as models from "./models.js";
import { UsagePanel } from "./usage.js";
import { isVideoModel, VideoMode } from "./video.js";

const KEY_STORAGE = "sfproxy.playground.key";
const MODEL_STORAGE = "sfproxy.playground.model";
const NARROW = window.matchMedia("(max-width: 860px)");
const CALM = window.matchMedia("(prefers-reduced-motion: reduce)");

const ui = {
  connection: byId("connection"),
  connectionText: byId("connection-text"),
  form: byId("compose"),
  key: byId("key"),
  keyToggle: byId("key-toggle"),
  keyHint: byId("key-hint"),
  model: byId("model"),
  modelHint: byId("model-hint"),
  inputs: byId("inputs"),
  inputsTitle: byId("inputs-title"),
  inputsBadge: byId("inputs-badge"),
  inputsCount: byId("inputs-count"),
  inputsNote: byId("inputs-note"),
  dropzone: byId("dropzone"),
  file: byId("file"),
  inputList: byId("input-list"),
  prompt: byId("prompt"),
  negative: byId("negative"),
  negativeField: byId("negative-field"),
  sizeField: byId("size-field"),
  sizeLabel: byId("size-label"),
  size: byId("size"),
  sizeText: byId("size-text"),
  n: byId("n"),
  seed: byId("seed"),
  seedField: byId("seed-field"),
  steps: byId("steps"),
  stepsField: byId("steps-field"),
  guidance: byId("guidance"),
  guidanceField: byId("guidance-field"),
  guidanceLabel: byId("guidance-label"),
  generate: byId("generate"),
  generateText: byId("generate-text"),
  cancel: byId("cancel"),
  progress: byId("progress"),
  progressText: byId("progress-text"),
  elapsed: byId("elapsed"),
  status: byId("status"),
  error: byId("error"),
  errorTitle: byId("error-title"),
  errorMessage: byId("error-message"),
  feed: byId("feed"),
  empty: byId("empty"),
  clearHistory: byId("clear-history"),
};

const state = {
  models: [],
  modelsLoad: null, // the AbortController of the /v1/models request in flight
  // { id, name, preview, file } for a chosen file, { id, name, preview, url } for a hosted image
  inputs: [],
  run: null, // the generation in flight
  history: readHistory(),
  cleared: null, // the history just cleared, kept so it can be restored
  errorSource: null,
};

let nextInputId = 1;

const counted = (count, noun) => `${count} ${count === 1 ? noun : `${noun}s`}`;

// What a card in the gallery can do; `use` and `reuse` are hoisted functions below.
const actions = { viewer: new Viewer({ use: useAsInput }), use: useAsInput, reuse };
const usage = new UsagePanel();
const video = new VideoMode({ key: () => currentKey(), usage });

// localStorage can be missing or refuse writes (private windows); the page works without it.
const storage = {
  get(name) {
    try {
      return localStorage.getItem(name) ?? "";
    } catch {
      return "";
    }
  },
  set(name, value) {
    try {
      if (value) localStorage.setItem(name, value);
      else localStorage.removeItem(name);
    } catch {
      // Kept for this page only.
    }
  },
};

class FormProblem extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

// ---- the key and the model list

const currentKey = () => ui.key.value.trim();
const currentModel = () => state.models.find((model) => model.id === ui.model.value) ?? null;

function setConnection(tone, text) {
  ui.connection.dataset.state = tone;
  ui.connectionText.textContent = text;
}

function setKeyHint(text, tone = "") {
  ui.keyHint.textContent = text;
  ui.keyHint.dataset.tone = tone;
}

async function loadModels() {
  state.modelsLoad?.abort();
  const controller = new AbortController();
  state.modelsLoad = controller;
  const key = currentKey();
  if (!isSendableKey(key)) {
    askForKey("That key can't be sent", "A proxy key uses only plain ASCII characters.");
    return;
  }
  setConnection("loading", "Connecting…");
  try {
    const { data } = await callApi("v1/models", { key, signal: controller.signal });
    const listed = Array.isArray(data.data) ? data.data : [];
    const usable = listed.filter((model) => model && typeof model.id === "string" && model.id);
    // Video models have their own mode (video.js); the image form lists the others.
    state.models = usable.filter((model) => !isVideoModel(model));
    video.setModels(usable.filter(isVideoModel));
    setConnection("ok", counted(usable.length, "model"));
    setKeyHint(
      key ? "Key accepted. Kept in this browser's local storage." : "This server needs no key.",
    );
    ui.key.removeAttribute("aria-invalid");
    if (state.errorSource === "models") hideError();
    usage.refresh(key);
  } catch (error) {
    if (controller.signal.aborted) return;
    state.models = [];
    video.setModels([]);
    usage.hide();
    setConnection(
      "error",
      error instanceof ApiError && error.isAuth ? "Key needed" : "Not connected",
    );
    showFailure(error, "models");
  } finally {
    if (state.modelsLoad === controller) state.modelsLoad = null;
  }
  renderModels();
}

function renderModels() {
  const previous = ui.model.value || storage.get(MODEL_STORAGE);
  if (!state.models.length) {
    ui.model.replaceChildren(option("", "No models available"));
    ui.model.disabled = true;
  } else {
    const groups = [
      ["Create", state.models.filter((model) => !models.needsImages(model))],
      ["Edit", state.models.filter(models.needsImages)],
    ]
      .filter(([, listed]) => listed.length)
      .map(([label, listed]) => {
        const group = document.createElement("optgroup");
        group.label = label;
        group.append(...listed.map((model) => option(model.id, model.id)));
        return group;
      });
    ui.model.replaceChildren(...groups);
    ui.model.disabled = false;
    if (state.models.some((model) => model.id === previous)) ui.model.value = previous;
  }
  applyModel();
}

// Shows the fields the chosen model takes, and only those.
function applyModel() {
  const model = currentModel();
  ui.generate.disabled = !model || state.run !== null;
  if (!model) {
    ui.modelHint.textContent = "";
    ui.inputs.hidden = true;
    ui.sizeField.hidden = true;
    return;
  }
  storage.set(MODEL_STORAGE, model.id);
  ui.modelHint.textContent = models.describeModel(model);
  renderSizes(model);
  ui.negativeField.hidden = !models.hasParam(model, "negative_prompt");
  ui.seedField.hidden = !models.hasParam(model, "seed");
  ui.stepsField.hidden = !models.hasParam(model, "num_inference_steps");
  const guidance = models.guidanceParam(model);
  ui.guidanceField.hidden = guidance === null;
  if (guidance) {
    ui.guidanceLabel.textContent = guidance.label;
    ui.guidance.min = String(guidance.min);
  }
  renderInputs();
}

function renderSizes(model) {
  ui.sizeField.hidden = !models.takesSize(model);
  const sizes = models.sizes(model);
  const previous = ui.size.value;
  const auto = model.default_size ? `Auto · ${models.formatSize(model.default_size)}` : "Auto";
  ui.size.replaceChildren(
    option("auto", auto),
    ...sizes.map((size) => option(size, models.sizeLabel(size))),
  );
  if (sizes.includes(previous)) ui.size.value = previous;
  // Without a list of sizes, any WIDTHxHEIGHT can be typed; the server fits it to the model.
  const typed = sizes.length === 0;
  ui.size.hidden = typed;
  ui.sizeText.hidden = !typed;
  ui.sizeLabel.htmlFor = typed ? "size-text" : "size";
}

function chosenSize(model) {
  if (!models.takesSize(model)) return null;
  if (!ui.size.hidden) return ui.size.value;
  return ui.sizeText.value.trim().replace(/\s*[x×*]\s*/i, "x") || null;
}

function askForKey(title, message) {
  showError(title, message, "models");
  ui.key.setAttribute("aria-invalid", "true");
  setKeyHint("Enter a proxy key this server accepts.", "error");
  ui.key.focus();
}

// ---- input images for edits

function addFiles(files) {
  const all = [...files];
  const images = all.filter((file) => file.type.startsWith("image/"));
  const refused = all.filter((file) => !images.includes(file));
  if (refused.length) {
    showError(
      "Not an image",
      `Only image files can be inputs: ${refused.map((f) => f.name).join(", ")}.`,
      "inputs",
    );
  }
  addInputs(images.map((file) => ({ name: file.name, file, preview: URL.createObjectURL(file) })));
}

function addInputs(items) {
  if (!items.length) return;
  const model = currentModel();
  const most = Math.max(1, model ? models.maxImages(model) : 1);
  state.inputs.push(...items.map((item) => ({ id: nextInputId++, ...item })));
  // When the model takes no more, a new image replaces the oldest.
  while (state.inputs.length > most) release(state.inputs.shift());
  if (state.errorSource === "inputs") hideError();
  renderInputs();
}

function release(input) {
  if (input.file) URL.revokeObjectURL(input.preview);
}

function removeInput(id) {
  const index = state.inputs.findIndex((input) => input.id === id);
  if (index >= 0) release(state.inputs.splice(index, 1)[0]);
  renderInputs();
}

function renderInputs() {
  const model = currentModel();
  ui.inputs.hidden = !model || !models.canTakeImages(model);
  if (ui.inputs.hidden) return;
  const most = models.maxImages(model);
  const required = models.needsImages(model);
  const noun = most === 1 ? "image" : "images";
  ui.inputsTitle.textContent = `${required ? "Input" : "Reference"} ${noun}`;
  ui.inputsBadge.textContent = required ? "required" : "optional";
  ui.inputsBadge.dataset.tone = required ? "required" : "";
  ui.inputsCount.textContent = `${Math.min(state.inputs.length, most)} / ${most}`;
  ui.inputList.replaceChildren(
    ...state.inputs.map((input, index) => renderInput(input, index, index >= most)),
  );
  ui.inputList.hidden = state.inputs.length === 0;
  ui.dropzone.classList.toggle("compact", state.inputs.length > 0);
  const extra = state.inputs.length - most;
  ui.inputsNote.hidden = extra <= 0;
  ui.inputsNote.textContent =
    extra > 0 ? `${model.id} takes ${counted(most, "image")}: the rest are not sent.` : "";
}

function renderInput(input, index, unused) {
  const { root, parts } = fromTemplate("tpl-input");
  parts.image.src = input.preview;
  parts.image.alt = `Input ${index + 1}: ${input.name}`;
  parts.index.textContent = String(index + 1);
  root.classList.toggle("unused", unused);
  setLabel(parts.remove, `Remove input ${index + 1} (${input.name})`);
  parts.remove.addEventListener("click", () => removeInput(input.id));
  return root;
}

function useAsInput(url, name) {
  let model = currentModel();
  let switched = false;
  if (!model || !models.canTakeImages(model)) {
    const editor = state.models.find(models.needsImages) ?? state.models.find(models.canTakeImages);
    if (!editor) {
      showError(
        "No model edits images",
        "This server lists no model that takes an input image.",
        "inputs",
      );
      return;
    }
    ui.model.value = editor.id;
    applyModel();
    model = editor;
    switched = true;
  }
  addInputs([{ name, url, preview: url }]);
  setStatus(switched ? `Added as input; switched to ${model.id} to edit it.` : "Added as input.");
  ui.inputs.scrollIntoView({ block: "nearest", behavior: CALM.matches ? "auto" : "smooth" });
  ui.prompt.focus({ preventScroll: true });
}

// ---- generating

function readNumber(input, label, { integer = false } = {}) {
  if (input.closest(".field")?.hidden) return null;
  if (input.validity.badInput) throw new FormProblem(`${label} must be a number.`, input);
  if (input.value.trim() === "") return null;
  const value = input.valueAsNumber;
  const min = Number(input.min);
  const max = Number(input.max);
  if (integer && !Number.isInteger(value))
    throw new FormProblem(`${label} must be a whole number.`, input);
  if (value < min || value > max)
    throw new FormProblem(`${label} must be from ${min} to ${max}.`, input);
  return value;
}

function collectFields(model, prompt) {
  const fields = { model: model.id, prompt, n: readNumber(ui.n, "Images", { integer: true }) ?? 1 };
  const size = chosenSize(model);
  if (size) fields.size = size;
  fields.response_format = "url";
  const negative = ui.negative.value.trim();
  if (!ui.negativeField.hidden && negative) fields.sf_negative_prompt = negative;
  const seed = readNumber(ui.seed, "Seed", { integer: true });
  if (seed !== null) fields.sf_seed = seed;
  const steps = readNumber(ui.steps, "Steps", { integer: true });
  if (steps !== null) fields.sf_num_steps = steps;
  const guidance = models.guidanceParam(model);
  const scale = guidance ? readNumber(ui.guidance, guidance.label) : null;
  if (scale !== null) fields[guidance.field] = scale;
  return fields;
}

// Files go up as file parts; hosted images as their address, which the server reads itself.
function editForm(fields, inputs) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
  for (const input of inputs) {
    if (input.file) form.append("image", input.file, input.name);
    else form.append("image", input.url);
  }
  return form;
}

async function generate() {
  if (state.run) return;
  hideError();
  const model = currentModel();
  if (!model) {
    askForKey(
      "No models loaded",
      "The model list did not load. Check the proxy key, then try again.",
    );
    loadModels();
    return;
  }
  const prompt = ui.prompt.value.trim();
  if (!prompt) {
    showError("Write a prompt", "Describe the image you want.", "form");
    ui.prompt.focus();
    return;
  }
  const key = currentKey();
  if (!isSendableKey(key)) {
    askForKey("That key can't be sent", "A proxy key uses only plain ASCII characters.");
    return;
  }
  const inputs = models.canTakeImages(model) ? state.inputs.slice(0, models.maxImages(model)) : [];
  if (inputs.length < models.minImages(model)) {
    showError(
      "Add an input image",
      `${model.id} edits images: choose or drop one, or use a generated image as input.`,
      "inputs",
    );
    ui.inputs.scrollIntoView({ block: "nearest" });
    ui.file.focus({ preventScroll: true });
    return;
  }
  let fields;
  try {
    fields = collectFields(model, prompt);
  } catch (problem) {
    if (!(problem instanceof FormProblem)) throw problem;
    showError("Check the form", problem.message, "form");
    problem.field.focus();
    return;
  }

  const run = startRun(model, fields, inputs.length > 0);
  try {
    const request = inputs.length ? { form: editForm(fields, inputs) } : { json: fields };
    const path = inputs.length ? "v1/images/edits" : "v1/images/generations";
    const { data, headers } = await callApi(path, {
      key,
      signal: run.controller.signal,
      ...request,
    });
    const entry = historyEntry(data, fields, inputs.length);
    if (!entry)
      throw new ApiError(502, { error: { message: "The server answered without any image." } });
    finishRun(run);
    const seconds = ((performance.now() - run.started) / 1000).toFixed(1);
    state.cleared = null;
    state.history = writeHistory([entry, ...state.history]);
    const shown = renderEntry(entry, { lazy: false, ...actions });
    ui.feed.prepend(shown);
    updateHistoryControls();
    const count = entry.images.length;
    setStatus(`Made ${counted(count, "image")} in ${seconds} s.`, "done");
    const partial = headers.get("X-Partial-Failure");
    if (partial)
      showError("Some images failed", `${partial}. The others are shown.`, "generate", "warning");
    if (NARROW.matches)
      shown.scrollIntoView({ block: "start", behavior: CALM.matches ? "auto" : "smooth" });
  } catch (error) {
    const seconds = finishRun(run);
    if (run.controller.signal.aborted) {
      setStatus(`Cancelled after ${seconds} s.`, "cancelled");
      return;
    }
    showFailure(error, "generate");
  } finally {
    // Whatever the outcome (a budget's refusal too), the key's usage as it now is.
    usage.refresh(key, { again: true });
  }
}

function historyEntry(data, fields, inputCount) {
  const images = (Array.isArray(data.data) ? data.data : [])
    .map((item) => ({
      url: safeUrl(item?.url),
      seed: Number.isFinite(item?.seed) ? item.seed : null,
    }))
    .filter((image) => image.url);
  if (!images.length) return null;
  return {
    id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    time: Date.now(),
    model: fields.model,
    prompt: fields.prompt,
    negative: fields.sf_negative_prompt ?? "",
    size: typeof data.size === "string" ? data.size : null,
    inputs: inputCount,
    steps: fields.sf_num_steps ?? null,
    guidance: fields.sf_cfg ?? fields.sf_guidance_scale ?? null,
    images,
  };
}

const elapsedSeconds = (run) => Math.floor((performance.now() - run.started) / 1000);

function startRun(model, fields, editing) {
  const run = {
    controller: new AbortController(),
    started: performance.now(),
    timer: 0,
    pending: renderPending(model, fields),
  };
  state.run = run;
  ui.feed.prepend(run.pending.root);
  updateHistoryControls();
  ui.generate.disabled = true;
  ui.generateText.textContent = "Generating…";
  ui.cancel.hidden = false;
  ui.progress.hidden = false;
  ui.form.setAttribute("aria-busy", "true");
  const what = `${editing ? "Editing" : "Generating"} ${counted(fields.n, "image")}`;
  // Only the progress text is a live region: the elapsed time is shown, not announced.
  ui.progressText.textContent = `${what} with ${model.id}`;
  setStatus("");
  const tick = () => {
    const text = `${elapsedSeconds(run)} s`;
    ui.elapsed.textContent = text;
    run.pending.parts.elapsed.textContent = text;
  };
  tick();
  run.timer = setInterval(tick, 250);
  return run;
}

function finishRun(run) {
  clearInterval(run.timer);
  run.pending.root.remove();
  state.run = null;
  ui.generateText.textContent = "Generate";
  ui.generate.disabled = currentModel() === null;
  ui.cancel.hidden = true;
  ui.progress.hidden = true;
  ui.form.removeAttribute("aria-busy");
  updateHistoryControls();
  return elapsedSeconds(run);
}

function renderPending(model, fields) {
  const pending = fromTemplate("tpl-pending");
  pending.parts.prompt.textContent = fields.prompt;
  pending.parts.model.textContent = model.id;
  const size = models.parseSize(fields.size === "auto" ? model.default_size : fields.size);
  for (let index = 0; index < fields.n; index++) {
    const tile = document.createElement("li");
    tile.className = "shot skeleton";
    tile.style.aspectRatio = size ? `${size.width} / ${size.height}` : "1 / 1";
    pending.parts.grid.append(tile);
  }
  return pending;
}

// ---- messages

function setStatus(text, tone = "") {
  ui.status.textContent = text;
  ui.status.dataset.tone = tone;
}

function showError(title, message, source, tone = "error") {
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = message;
  ui.error.dataset.tone = tone;
  ui.error.hidden = false;
  state.errorSource = source;
  if (source !== "models") setStatus("");
}

function hideError() {
  ui.error.hidden = true;
  state.errorSource = null;
}

const clock = (time) => new Intl.DateTimeFormat(undefined, { timeStyle: "medium" }).format(time);

function showFailure(error, source) {
  if (error instanceof ApiError) {
    if (error.isAuth) {
      const title = currentKey()
        ? "That proxy key was not accepted"
        : "This server needs a proxy key";
      askForKey(title, `${error.message} Enter your proxy key in the “Proxy key” field.`);
      return;
    }
    if (error.status === 429) {
      const wait = error.retryAfter;
      const when =
        wait === null
          ? "Try again in a little while."
          : `Try again in ${wait} s (after ${clock(Date.now() + wait * 1000)}).`;
      showError("Too many requests", `${error.message} ${when}`, source);
      return;
    }
    showError(errorTitle(error), error.message, source);
    focusParam(error.param);
    return;
  }
  if (error instanceof TypeError) {
    showError(
      "The server can't be reached",
      "The request got no answer. Check that the service is running, then try again.",
      source,
    );
    return;
  }
  showError("Something went wrong", String(error?.message ?? error), source);
}

function errorTitle(error) {
  if (error.status === 413) return "Too large";
  if (error.status === 504) return "The image service took too long";
  if (error.status >= 500) return "The image service failed";
  return "The request was refused";
}

function focusParam(param) {
  const fields = {
    prompt: ui.prompt,
    n: ui.n,
    size: ui.size.hidden ? ui.sizeText : ui.size,
    image: ui.file,
    sf_seed: ui.seed,
    sf_num_steps: ui.steps,
    sf_cfg: ui.guidance,
    sf_guidance_scale: ui.guidance,
    sf_negative_prompt: ui.negative,
  };
  const field = fields[param] ?? fields[String(param).replace(/\[\d+\]$/, "")];
  if (field && !field.closest("[hidden]")) field.focus();
}

// ---- history

function renderHistory() {
  ui.feed.replaceChildren(
    ...state.history.map((entry, index) => renderEntry(entry, { lazy: index > 2, ...actions })),
  );
  if (state.run) ui.feed.prepend(state.run.pending.root);
  updateHistoryControls();
}

function updateHistoryControls() {
  ui.empty.hidden = state.history.length > 0 || state.run !== null;
  const undo = state.history.length === 0 && state.cleared !== null;
  ui.clearHistory.hidden = state.history.length === 0 && !undo;
  ui.clearHistory.textContent = undo ? "Undo clear" : "Clear history";
}

function reuse(entry) {
  if (state.models.some((model) => model.id === entry.model)) {
    ui.model.value = entry.model;
    applyModel();
  }
  ui.prompt.value = entry.prompt;
  ui.negative.value = entry.negative;
  if (entry.size && [...ui.size.options].some((choice) => choice.value === entry.size)) {
    ui.size.value = entry.size;
  }
  ui.sizeText.value = entry.size ?? "";
  ui.n.value = String(entry.images.length);
  ui.seed.value = entry.images[0].seed === null ? "" : String(entry.images[0].seed);
  ui.steps.value = entry.steps === null ? "" : String(entry.steps);
  ui.guidance.value = entry.guidance === null ? "" : String(entry.guidance);
  setStatus("Settings put back in the form.");
  ui.prompt.focus();
}

function toggleClearHistory() {
  if (state.history.length === 0 && state.cleared) {
    state.history = writeHistory(state.cleared);
    state.cleared = null;
    setStatus("History restored.");
  } else {
    state.cleared = state.history;
    state.history = writeHistory([]);
    setStatus("History cleared.");
  }
  renderHistory();
}

// ---- wiring

ui.key.value = storage.get(KEY_STORAGE);
let keyTimer = 0;
ui.key.addEventListener("input", () => {
  storage.set(KEY_STORAGE, currentKey());
  ui.key.removeAttribute("aria-invalid");
  clearTimeout(keyTimer);
  keyTimer = setTimeout(loadModels, 350);
});
ui.key.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault(); // Enter here checks the key; it doesn't generate
  clearTimeout(keyTimer);
  loadModels();
});
ui.keyToggle.addEventListener("click", () => {
  const show = ui.key.type === "password";
  ui.key.type = show ? "text" : "password";
  ui.keyToggle.setAttribute("aria-pressed", String(show));
  setLabel(ui.keyToggle, show ? "Hide the key" : "Show the key");
});

ui.model.addEventListener("change", applyModel);
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (video.active) video.submit();
  else generate();
});
for (const textarea of [ui.prompt, ui.negative]) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });
}
ui.cancel.addEventListener("click", () => state.run?.controller.abort());

ui.file.addEventListener("change", () => {
  addFiles(ui.file.files);
  ui.file.value = ""; // so choosing the same file again still counts
});
ui.dropzone.addEventListener("click", (event) => {
  if (!event.target.closest("label, input")) ui.file.click();
});
for (const type of ["dragenter", "dragover"]) {
  ui.dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    ui.dropzone.classList.add("dragging");
  });
}
ui.dropzone.addEventListener("dragleave", () => ui.dropzone.classList.remove("dragging"));
ui.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.dropzone.classList.remove("dragging");
  addFiles(event.dataTransfer?.files ?? []);
});
document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files ?? [])].filter((file) =>
    file.type.startsWith("image/"),
  );
  if (files.length && !ui.inputs.hidden) {
    event.preventDefault();
    addFiles(files);
  }
});

ui.clearHistory.addEventListener("click", toggleClearHistory);

renderHistory();
loadModels();
new AdminView();
