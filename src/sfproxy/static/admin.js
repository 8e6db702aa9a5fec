// The admin view, shown once an admin key (ADMIN_KEYS) is entered: client keys listed,
// created (the new key shown once) and revoked through /admin/keys, and the spend chart from
// /admin/usage/daily. The admin key is kept for this tab only (sessionStorage).

import { ApiError, callApi, isSendableKey } from "./api.js";
import { renderSpendChart } from "./chart.js";
import { byId } from "./dom.js";

const ADMIN_STORAGE = "sfproxy.playground.admin-key";
const CHART_DAYS = 30;

const session = {
  get() {
    try {
      return sessionStorage.getItem(ADMIN_STORAGE) ?? "";
    } catch {
      return "";
    }
  },
  set(value) {
    try {
      if (value) sessionStorage.setItem(ADMIN_STORAGE, value);
      else sessionStorage.removeItem(ADMIN_STORAGE);
    } catch {
      // Kept for this page only.
    }
  },
};

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function budgets(record) {
  const parts = [];
  if (record.daily_budget !== null) parts.push(`${record.daily_budget} a day`);
  if (record.monthly_budget !== null) parts.push(`${record.monthly_budget} a month`);
  return parts.join(", ") || "none";
}

export class AdminView {
  constructor() {
    this.ui = {
      key: byId("admin-key"),
      open: byId("admin-open"),
      status: byId("admin-status"),
      view: byId("admin-view"),
      keys: byId("keys-body"),
      create: byId("key-create"),
      name: byId("new-key-name"),
      daily: byId("new-key-daily"),
      monthly: byId("new-key-monthly"),
      created: byId("new-key"),
      createdValue: byId("new-key-value"),
      createdName: byId("new-key-for"),
      copy: byId("new-key-copy"),
      error: byId("admin-error"),
      charts: byId("charts"),
      refresh: byId("chart-refresh"),
    };
    this.ui.key.value = session.get();
    this.ui.open.addEventListener("click", () => this.open());
    this.ui.key.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      this.open();
    });
    this.ui.create.addEventListener("submit", (event) => {
      event.preventDefault();
      this.createKey();
    });
    this.ui.copy.addEventListener("click", () => this.copyKey());
    this.ui.refresh.addEventListener("click", () => this.loadChart());
    if (this.ui.key.value) this.open();
  }

  get adminKey() {
    return this.ui.key.value.trim();
  }

  async call(path, options = {}) {
    return callApi(path, { key: this.adminKey, ...options });
  }

  setStatus(text, tone = "") {
    this.ui.status.textContent = text;
    this.ui.status.dataset.tone = tone;
  }

  showError(error) {
    this.ui.error.textContent = error instanceof Error ? error.message : String(error);
    this.ui.error.hidden = false;
  }

  async open() {
    const key = this.adminKey;
    if (!key || !isSendableKey(key)) {
      this.setStatus("Enter one of the server's ADMIN_KEYS (plain ASCII).", "error");
      return;
    }
    this.ui.error.hidden = true;
    try {
      await this.loadKeys();
    } catch (error) {
      this.ui.view.hidden = true;
      session.set("");
      if (error instanceof ApiError && error.status === 404) {
        this.setStatus("This server has no admin keys (ADMIN_KEYS).", "error");
      } else if (error instanceof ApiError && error.isAuth) {
        this.setStatus("That admin key was not accepted.", "error");
      } else {
        this.setStatus(`The admin view did not load: ${error.message}`, "error");
      }
      return;
    }
    session.set(key);
    this.setStatus("Admin key accepted. Kept for this tab only.", "ok");
    this.ui.view.hidden = false;
    await this.loadChart();
  }

  async loadKeys() {
    const { data } = await this.call("admin/keys");
    const records = Array.isArray(data.data) ? data.data : [];
    this.ui.keys.replaceChildren(...records.map((record) => this.renderKey(record)));
  }

  renderKey(record) {
    const row = document.createElement("tr");
    row.dataset.id = record.id;
    row.dataset.state = record.state;
    row.append(
      cell(record.name, "key-name"),
      cell(record.id, "mono"),
      cell(record.state, "key-state"),
      cell(budgets(record)),
      cell((record.created_at ?? "").slice(0, 10)),
    );
    const actions = document.createElement("td");
    if (record.state !== "revoked") {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "ghost small danger";
      revoke.textContent = "Revoke";
      // Two clicks: the first asks, the second revokes (no blocking confirm() dialog).
      revoke.addEventListener("click", () => {
        if (revoke.dataset.armed === "true") this.revoke(record, revoke);
        else {
          revoke.dataset.armed = "true";
          revoke.textContent = "Confirm revoke";
        }
      });
      actions.append(revoke);
    }
    row.append(actions);
    return row;
  }

  async revoke(record, button) {
    button.disabled = true;
    try {
      await this.call(`admin/keys/${encodeURIComponent(record.id)}`, { method: "DELETE" });
      this.setStatus(`Revoked ${record.name}.`, "ok");
      await this.loadKeys();
    } catch (error) {
      button.disabled = false;
      this.showError(error);
    }
  }

  async createKey() {
    const name = this.ui.name.value.trim();
    if (!name) {
      this.showError("Give the new key a name.");
      this.ui.name.focus();
      return;
    }
    const body = { name };
    if (this.ui.daily.value.trim()) body.daily_budget = this.ui.daily.value.trim();
    if (this.ui.monthly.value.trim()) body.monthly_budget = this.ui.monthly.value.trim();
    this.ui.error.hidden = true;
    try {
      const { data } = await this.call("admin/keys", { json: body });
      this.ui.createdValue.textContent = data.key;
      this.ui.createdName.textContent = data.name;
      this.ui.created.hidden = false;
      this.ui.create.reset();
      await this.loadKeys();
    } catch (error) {
      this.showError(error);
    }
  }

  async copyKey() {
    try {
      await navigator.clipboard.writeText(this.ui.createdValue.textContent);
      this.setStatus("The new key is on the clipboard.", "ok");
    } catch {
      this.setStatus("Copying was refused: select the key and copy it by hand.", "error");
    }
  }

  async loadChart() {
    try {
      const { data } = await this.call(`admin/usage/daily?days=${CHART_DAYS}`);
      const currencies = Array.isArray(data.currencies) ? data.currencies : [];
      if (!currencies.length) {
        const empty = document.createElement("p");
        empty.className = "hint";
        empty.textContent = `Nothing was charged in the last ${CHART_DAYS} days.`;
        this.ui.charts.replaceChildren(empty);
        return;
      }
      this.ui.charts.replaceChildren(
        ...currencies.map((currency) => renderSpendChart(data, currency)),
      );
    } catch (error) {
      this.showError(error);
    }
  }
}
