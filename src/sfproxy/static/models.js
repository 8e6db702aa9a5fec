// What a /v1/models card says a model accepts. A field the server leaves out means "unknown",
// and unknown allows: the server checks every request anyway.

// The edits endpoint takes at most this many images, whatever the model.
const EDIT_ENDPOINT_MAX = 3;

export const minImages = (model) => model.min_images ?? 0;
export const maxImages = (model) => model.max_images ?? EDIT_ENDPOINT_MAX;
export const canTakeImages = (model) => maxImages(model) > 0;
export const needsImages = (model) => minImages(model) > 0;
export const takesSize = (model) => model.takes_image_size !== false;
export const hasParam = (model, name) =>
  !Array.isArray(model.params) || model.params.includes(name);

export function sizes(model) {
  return Array.isArray(model.sizes) ? model.sizes.filter((size) => parseSize(size)) : [];
}

// Models name their guidance knob differently: Qwen's `cfg`, Kolors' `guidance_scale`.
export function guidanceParam(model) {
  if (Array.isArray(model.params)) {
    if (model.params.includes("cfg")) return { field: "sf_cfg", label: "CFG", min: 0.1 };
    if (model.params.includes("guidance_scale")) {
      return { field: "sf_guidance_scale", label: "Guidance", min: 0 };
    }
    return null;
  }
  return { field: "sf_cfg", label: "CFG", min: 0.1 };
}

export function describeModel(model) {
  const most = maxImages(model);
  const plural = most === 1 ? "image" : "images";
  if (needsImages(model)) {
    const count = minImages(model) === most ? `${most}` : `${minImages(model)} to ${most}`;
    const size = takesSize(model) ? "" : " The output keeps the input's proportions.";
    return `Edits ${count} input ${plural} as the prompt says.${size}`;
  }
  if (canTakeImages(model)) {
    return `Text to image, or image to image from up to ${most} reference ${plural}.`;
  }
  return "Text to image.";
}

export function parseSize(size) {
  const match = /^(\d{2,5})x(\d{2,5})$/i.exec(String(size ?? ""));
  return match ? { width: Number(match[1]), height: Number(match[2]) } : null;
}

export function formatSize(size) {
  const parsed = parseSize(size);
  return parsed ? `${parsed.width}×${parsed.height}` : String(size);
}

const RATIOS = [
  [1, 1],
  [16, 9],
  [9, 16],
  [4, 3],
  [3, 4],
  [3, 2],
  [2, 3],
  [2, 1],
  [1, 2],
  [21, 9],
  [5, 4],
  [4, 5],
];

// The named ratio nearest the size: 1472x1140 reads better as 4:3 than as 368:285.
export function aspectName(size) {
  const parsed = parseSize(size);
  if (!parsed) return "";
  const ratio = parsed.width / parsed.height;
  let best = RATIOS[0];
  for (const candidate of RATIOS) {
    if (
      Math.abs(Math.log(candidate[0] / candidate[1] / ratio)) <
      Math.abs(Math.log(best[0] / best[1] / ratio))
    ) {
      best = candidate;
    }
  }
  return `${best[0]}:${best[1]}`;
}

export function sizeLabel(size) {
  return `${formatSize(size)} · ${aspectName(size)}`;
}
