// The page's client for the service's /v1 API (and, with an admin key, /admin). Paths are
// relative to the page.

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = body && typeof body.error === "object" && body.error ? body.error : {};
    const message = typeof error.message === "string" && error.message ? error.message : null;
    super(message ?? `The server answered ${status} without an explanation.`);
    this.name = "ApiError";
    this.status = status;
    this.type = typeof error.type === "string" ? error.type : null;
    this.code = typeof error.code === "string" ? error.code : null;
    this.param = typeof error.param === "string" ? error.param : null;
    this.retryAfter = parseRetryAfter(headers?.get("Retry-After"));
  }

  get isAuth() {
    return this.status === 401 || this.type === "authentication_error";
  }
}

// Retry-After is either seconds or an HTTP date; the answer is seconds from now, or null.
export function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

// fetch refuses header values outside Latin-1 with a cryptic TypeError; say so up front.
export function isSendableKey(key) {
  return /^[\x20-\x7e]*$/.test(key);
}

export async function callApi(path, { key = "", json, form, signal, method } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary itself
  }
  const response = await fetch(path, {
    method: method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
    signal,
    cache: "no-store",
    credentials: "same-origin",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers);
  if (data === null || typeof data !== "object") {
    throw new ApiError(response.status, {
      error: { message: "The server's answer was not JSON." },
    });
  }
  return { data, headers: response.headers };
}
