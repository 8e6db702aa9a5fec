// The playground's video mode: a video model, a prompt, a size (and an image for image to video)
// go to POST /v1/videos as the SDKs send them; the job is followed at the pace the server asks
// (openai-poll-after-ms), and the finished MP4 is fetched with the key and played from a blob.

import { ApiError, callApi } from "./api.js";
import { byId, fromTemplate, option, setLabel } from "./dom.js";
import { formatSize, sizeLabel } from "./models.js";

// What /v1/models puts in a video model's `supported_endpoint_types` (video_models.py).
export const VIDEO_ENDPOINT_TYPE = "openai-video";
export const isVideoModel = (model) =>
  Array.isArray(model?.supported_endpoint_types) &&
  model.supported_endpoint_types.includes(VIDEO_ENDPOINT_TYPE);

// SiliconFlow's sizes, for a card that does not list its own.
const SIZES = ["1280x720", "720x1280", "960x960"];
// Without a hint the page polls every second; a hint is kept within reason either way.
const POLL_MS = { fallback: 1000, least: 100, most: 10000 };
const STATUS_TEXT = { queued: "Queued", in_progress: "Making the video", completed: "Done" };

const sizesOf = (model) =>
  Array.isArray(model.sf_sizes) && model.sf_sizes.length ? model.sf_sizes : SIZES;
const secondsOf = (model) => (Array.isArray(model.sf_seconds) ? model.sf_seconds.map(String) : []);
const needsImage = (model) => model.sf_requires_image === true;

function pollAfter(headers) {
  const hinted = Number(headers.get("openai-poll-after-ms"));
  if (!Number.isFinite(hinted) || hinted <= 0) return POLL_MS.fallback;
  return Math.min(POLL_MS.most, Math.max(POLL_MS.least, hinted));
}

function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

// The MP4 or the poster frame: binary, so not through callApi, but with the same key and errors.
async function fetchContent(path, key, signal) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { headers, signal, cache: "no-store" });
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    throw new ApiError(response.status, body, response.headers);
  }
  return response.blob();
}

export class VideoMode {
  // `key` reads the page's proxy key; `usage` is refreshed once a video is paid for or refunded.
  constructor({ key, usage }) {
    this.key = key;
    this.usage = usage;
    this.models = [];
    this.run = null;
    this.ui = {
      form: byId("compose"),
      modes: byId("modes"),
      imagesMode: byId("mode-images"),
      videoMode: byId("mode-video"),
      fields: byId("video-fields"),
      model: byId("video-model"),
      modelHint: byId("video-model-hint"),
      imageField: byId("video-image-field"),
      image: byId("video-image"),
      preview: byId("video-image-preview"),
      prompt: byId("video-prompt"),
      size: byId("video-size"),
      secondsField: byId("video-seconds-field"),
      seconds: byId("video-seconds"),
      generate: byId("video-generate"),
      stop: byId("video-stop"),
      progress: byId("video-progress"),
      bar: byId("video-bar"),
      progressText: byId("video-progress-text"),
      status: byId("video-status"),
      error: byId("video-error"),
      errorTitle: byId("video-error-title"),
      errorMessage: byId("video-error-message"),
      list: byId("video-list"),
    };
    const { ui } = this;
    ui.imagesMode.addEventListener("click", () => this.activate(false));
    ui.videoMode.addEventListener("click", () => this.activate(true));
    ui.model.addEventListener("change", () => this.applyModel());
    ui.image.addEventListener("change", () => this.showImage());
    ui.stop.addEventListener("click", () => this.run?.abort());
    ui.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        ui.form.requestSubmit();
      }
    });
  }

  get active() {
    return this.ui.form.dataset.mode === "video";
  }

  activate(on) {
    const { ui } = this;
    const video = on && this.models.length > 0;
    ui.form.dataset.mode = video ? "video" : "images";
    ui.fields.hidden = !video;
    ui.imagesMode.setAttribute("aria-pressed", String(!video));
    ui.videoMode.setAttribute("aria-pressed", String(video));
    if (video) ui.prompt.focus({ preventScroll: true });
  }

  setModels(listed) {
    const { ui } = this;
    this.models = listed;
    ui.modes.hidden = listed.length === 0;
    const previous = ui.model.value;
    ui.model.replaceChildren(...listed.map((model) => option(model.id, model.id)));
    if (listed.some((model) => model.id === previous)) ui.model.value = previous;
    if (!listed.length && this.active) this.activate(false);
    this.applyModel();
  }

  current() {
    return this.models.find((model) => model.id === this.ui.model.value) ?? null;
  }

  applyModel() {
    const { ui } = this;
    const model = this.current();
    ui.generate.disabled = !model || this.run !== null;
    if (!model) return;
    ui.modelHint.textContent = needsImage(model)
      ? "Image to video: the clip starts from your image."
      : "Text to video.";
    ui.imageField.hidden = !needsImage(model);
    const sizes = sizesOf(model);
    const size = ui.size.value;
    ui.size.replaceChildren(...sizes.map((each) => option(each, sizeLabel(each))));
    ui.size.value = sizes.includes(size) ? size : (model.sf_default_size ?? sizes[0]);
    const seconds = secondsOf(model);
    ui.secondsField.hidden = seconds.length === 0;
    ui.seconds.replaceChildren(...seconds.map((each) => option(each, `${each} s`)));
    if (model.sf_default_seconds) ui.seconds.value = String(model.sf_default_seconds);
  }

  showImage() {
    const { ui } = this;
    const file = ui.image.files?.[0];
    if (ui.preview.src) URL.revokeObjectURL(ui.preview.src);
    ui.preview.hidden = !file;
    if (file) ui.preview.src = URL.createObjectURL(file);
    else ui.preview.removeAttribute("src");
  }

  async submit() {
    if (this.run) return;
    this.hideError();
    const { ui } = this;
    const model = this.current();
    const prompt = ui.prompt.value.trim();
    if (!model) return;
    if (!prompt) {
      this.showError("Write a prompt", "Describe the video you want.");
      ui.prompt.focus();
      return;
    }
    const image = needsImage(model) ? (ui.image.files?.[0] ?? null) : null;
    if (needsImage(model) && !image) {
      this.showError("Add an input image", `${model.id} makes a video from an image: choose one.`);
      ui.image.focus();
      return;
    }
    const form = new FormData();
    form.append("model", model.id);
    form.append("prompt", prompt);
    form.append("size", ui.size.value);
    if (!ui.secondsField.hidden && ui.seconds.value) form.append("seconds", ui.seconds.value);
    if (image) form.append("input_reference", image, image.name);

    const key = this.key();
    const run = new AbortController();
    this.start(run, model);
    try {
      let { data: video, headers } = await callApi("v1/videos", { key, form, signal: run.signal });
      this.showProgress(video);
      while (video.status !== "completed" && video.status !== "failed") {
        await pause(pollAfter(headers), run.signal);
        ({ data: video, headers } = await callApi(`v1/videos/${encodeURIComponent(video.id)}`, {
          key,
          signal: run.signal,
        }));
        this.showProgress(video);
      }
      if (video.status === "failed") {
        const message = video.error?.message ?? "The video could not be made.";
        this.showError("The video failed", message);
        this.setStatus("Nothing was charged for it.");
        return;
      }
      this.ui.progressText.textContent = "Fetching the video";
      const path = `v1/videos/${encodeURIComponent(video.id)}/content`;
      const [clip, poster] = await Promise.all([
        fetchContent(path, key, run.signal),
        // A missing poster costs only the poster.
        fetchContent(`${path}?variant=thumbnail`, key, run.signal).catch(() => null),
      ]);
      this.ui.list.prepend(this.renderVideo(video, clip, poster));
      this.setStatus(`Made a ${video.seconds} s video in ${this.elapsed(run)} s.`, "done");
    } catch (error) {
      if (run.signal.aborted) {
        this.setStatus("Stopped waiting; the video is still being made on the server.", "cancelled");
        return;
      }
      this.showFailure(error);
    } finally {
      this.finish(run);
      this.usage.refresh(key, { again: true });
    }
  }

  start(run, model) {
    const { ui } = this;
    run.started = performance.now();
    this.run = run;
    ui.generate.disabled = true;
    ui.stop.hidden = false;
    ui.progress.hidden = false;
    ui.bar.parentElement.classList.remove("determinate");
    ui.progressText.textContent = `Sending to ${model.id}`;
    this.setStatus("");
  }

  finish(run) {
    const { ui } = this;
    if (this.run !== run) return;
    this.run = null;
    ui.stop.hidden = true;
    ui.progress.hidden = true;
    ui.generate.disabled = this.current() === null;
  }

  elapsed(run) {
    return ((performance.now() - run.started) / 1000).toFixed(1);
  }

  showProgress(video) {
    const { ui } = this;
    const progress = Math.max(0, Math.min(100, Number(video.progress) || 0));
    // Until the server reports progress the bar only says "working".
    ui.bar.parentElement.classList.toggle("determinate", progress > 0);
    ui.bar.style.width = progress > 0 ? `${progress}%` : "";
    const text = STATUS_TEXT[video.status] ?? String(video.status);
    ui.progressText.textContent = `${text} · ${progress}%`;
    ui.progress.dataset.status = String(video.status);
  }

  renderVideo(video, clip, poster) {
    const { root, parts } = fromTemplate("tpl-video");
    const address = URL.createObjectURL(clip);
    root.dataset.video = video.id;
    if (poster) parts.player.poster = URL.createObjectURL(poster);
    parts.player.src = address;
    parts.player.setAttribute("aria-label", video.prompt ?? "video");
    parts.prompt.textContent = video.prompt ?? "";
    parts.meta.textContent = [video.model, formatSize(video.size), `${video.seconds} s`].join(" · ");
    parts.download.href = address;
    parts.download.download = `${video.id}.mp4`;
    setLabel(parts.download, "Download the video");
    return root;
  }

  setStatus(text, tone = "") {
    this.ui.status.textContent = text;
    this.ui.status.dataset.tone = tone;
  }

  showError(title, message) {
    const { ui } = this;
    ui.errorTitle.textContent = title;
    ui.errorMessage.textContent = message;
    ui.error.hidden = false;
    this.setStatus("");
  }

  hideError() {
    this.ui.error.hidden = true;
  }

  showFailure(error) {
    if (error instanceof ApiError) {
      if (error.isAuth) {
        this.showError("That proxy key was not accepted", error.message);
      } else if (error.status === 429 && error.retryAfter !== null) {
        this.showError("Too many requests", `${error.message} Try again in ${error.retryAfter} s.`);
      } else {
        const title = error.status >= 500 ? "The video service failed" : "The request was refused";
        this.showError(title, error.message);
      }
      return;
    }
    if (error instanceof TypeError) {
      this.showError("The server can't be reached", "The request got no answer. Try again.");
      return;
    }
    this.showError("Something went wrong", String(error?.message ?? error));
  }
}
