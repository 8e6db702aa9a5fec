// This browser's generations, kept in localStorage. The images themselves stay on the server;
// an entry holds their hosted addresses and what made them.

import { safeUrl } from "./dom.js";

const STORAGE_KEY = "sfproxy.playground.history";
const LIMIT = 100;

export function readHistory() {
  let stored;
  try {
    stored = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "[]");
  } catch {
    return [];
  }
  return Array.isArray(stored) ? stored.map(cleanEntry).filter(Boolean) : [];
}

// Keeps the newest entries that fit: when storage is full, older ones go first.
export function writeHistory(entries) {
  let kept = entries.slice(0, LIMIT);
  for (;;) {
    try {
      if (kept.length) localStorage.setItem(STORAGE_KEY, JSON.stringify(kept));
      else localStorage.removeItem(STORAGE_KEY);
      return kept;
    } catch {
      if (kept.length <= 1) return kept;
      kept = kept.slice(0, Math.floor(kept.length / 2));
    }
  }
}

const text = (value) => (typeof value === "string" ? value : "");
const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

// Storage is only as trustworthy as whatever last wrote to it: keep what has the right shape.
function cleanEntry(raw) {
  if (!raw || typeof raw !== "object" || !Array.isArray(raw.images)) return null;
  const images = raw.images
    .map((image) => ({ url: safeUrl(image?.url), seed: number(image?.seed) }))
    .filter((image) => image.url);
  if (!images.length || !text(raw.model)) return null;
  return {
    id: text(raw.id) || String(raw.time),
    time: number(raw.time) ?? Date.now(),
    model: text(raw.model),
    prompt: text(raw.prompt),
    negative: text(raw.negative),
    size: text(raw.size) || null,
    inputs: number(raw.inputs) ?? 0,
    steps: number(raw.steps),
    guidance: number(raw.guidance),
    images,
  };
}
