// The signed-in key's usage today and this month, and what is left of its budgets
// (GET /v1/usage). Hidden on a public service, which has no key to report on.

import { ApiError, callApi } from "./api.js";
import { byId } from "./dom.js";
import { formatMicros, toMicros } from "./money.js";

// The ledger writes its records about a second after a request settles (its batch); a second
// look after that shows the request just made. Budgets are counted at once.
const LEDGER_DELAY_MS = 1500;

const PERIODS = { daily: "Daily budget", monthly: "Monthly budget" };

const counted = (count, noun) => `${count} ${count === 1 ? noun : `${noun}s`}`;

function describePeriod(period, currency) {
  return [
    counted(period.requests, "request"),
    counted(period.images_delivered, "image"),
    `${period.charged} ${currency}`,
  ].join(" · ");
}

function resetTime(text) {
  const moment = new Date(text);
  if (Number.isNaN(moment.getTime())) return "";
  return `Resets ${moment.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function renderBudget(budget) {
  const item = document.createElement("li");
  item.className = "budget";
  item.dataset.period = budget.period;
  const line = document.createElement("p");
  const title = document.createElement("span");
  title.className = "budget-title";
  title.textContent = PERIODS[budget.period] ?? budget.period;
  const left = document.createElement("span");
  left.className = "budget-left";
  left.textContent = `${budget.left} ${budget.currency} left of ${budget.budget}`;
  line.append(title, " ", left);
  const meter = document.createElement("div");
  meter.className = "meter";
  const fill = document.createElement("span");
  const total = toMicros(budget.budget);
  const share = total > 0 ? Math.min(1, toMicros(budget.spent) / total) : 1;
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  meter.dataset.spent = formatMicros(toMicros(budget.spent));
  meter.append(fill);
  const reset = document.createElement("p");
  reset.className = "hint budget-reset";
  reset.textContent = resetTime(budget.resets_at);
  item.append(line, meter, reset);
  return item;
}

export class UsagePanel {
  constructor() {
    this.ui = {
      root: byId("usage"),
      name: byId("usage-name"),
      today: byId("usage-today"),
      month: byId("usage-month"),
      budgets: byId("budgets"),
      note: byId("usage-note"),
    };
    this.load = null; // the AbortController of the request in flight
    this.timer = 0;
  }

  // Read the usage now; with `again`, once more when the ledger has written the last request.
  async refresh(key, { again = false } = {}) {
    // Without a key there is no key's usage (the server is public, or will ask for a key).
    if (!key) {
      this.hide();
      return;
    }
    clearTimeout(this.timer);
    if (again) this.timer = setTimeout(() => this.refresh(key), LEDGER_DELAY_MS);
    this.load?.abort();
    const controller = new AbortController();
    this.load = controller;
    try {
      const { data } = await callApi("v1/usage", { key, signal: controller.signal });
      this.render(data);
    } catch (error) {
      if (controller.signal.aborted) return;
      // No key (a public service, 404) or not one this server takes (401): nothing to show.
      if (error instanceof ApiError && (error.status === 404 || error.isAuth)) {
        this.ui.root.hidden = true;
        return;
      }
      this.ui.note.textContent = `Usage not available: ${error.message}`;
      this.ui.note.dataset.tone = "error";
    } finally {
      if (this.load === controller) this.load = null;
    }
  }

  hide() {
    clearTimeout(this.timer);
    this.load?.abort();
    this.ui.root.hidden = true;
  }

  render(data) {
    const currency = typeof data.currency === "string" ? data.currency : "";
    this.ui.name.textContent = data.name ?? data.client ?? "";
    this.ui.today.textContent = describePeriod(data.today, currency);
    this.ui.month.textContent = describePeriod(data.month, currency);
    const budgets = Array.isArray(data.budgets) ? data.budgets : [];
    this.ui.budgets.replaceChildren(...budgets.map(renderBudget));
    this.ui.budgets.hidden = budgets.length === 0;
    const unknown = data.month.unknown_price;
    this.ui.note.dataset.tone = "";
    this.ui.note.textContent = budgets.length ? "" : "This key has no spending budget.";
    if (unknown > 0)
      this.ui.note.textContent += ` ${counted(unknown, "request")} this month had no known price.`;
    this.ui.root.hidden = false;
  }
}
