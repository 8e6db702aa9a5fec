// The admin view's chart: what clients were charged per UTC day, one stacked bar per day with
// spend, one chart per currency. Drawn as inline SVG from /admin/usage/daily; every label goes
// in as textContent. Each bar carries its day and exact total (data-day, data-total), each
// segment its client and amount, so what is drawn can be read back.

import { formatMicros, toMicros } from "./money.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 260;
const MARGIN = { top: 14, right: 12, bottom: 34, left: 58 };
const TICKS = 4;
// Distinct in light and dark themes; clients past the last reuse them in order.
const COLORS = [
  "#5753e8",
  "#e0861d",
  "#1f9d6b",
  "#d2416e",
  "#2b8fd6",
  "#8f5bd8",
  "#9a8a16",
  "#6b7280",
];

function node(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

// A round top for the axis: 1, 2 or 5 times a power of ten, in millionths.
function niceCeiling(micros) {
  if (micros <= 0) return 10_000; // 0.01
  const power = 10 ** Math.floor(Math.log10(micros));
  for (const step of [1, 2, 5, 10]) if (step * power >= micros) return step * power;
  return 10 * power;
}

// Per day, each client's charge in `currency` (only the days and clients with any).
export function spendByDay(series, currency) {
  const days = new Map();
  for (const point of series.points ?? []) {
    const amount = toMicros(point.charged?.[currency]);
    if (amount <= 0) continue;
    if (!days.has(point.day)) days.set(point.day, []);
    days.get(point.day).push({ client: point.client, name: point.name, amount });
  }
  return days;
}

export function legendName(client) {
  return client.name ? `${client.name} (${client.client})` : client.client;
}

export function renderSpendChart(series, currency) {
  const allDays = Array.isArray(series.days) ? series.days : [];
  const byDay = spendByDay(series, currency);
  const clients = [];
  for (const parts of byDay.values())
    for (const part of parts)
      if (!clients.some((known) => known.client === part.client)) clients.push(part);
  clients.sort((a, b) => (a.client < b.client ? -1 : a.client > b.client ? 1 : 0));
  const color = (client) => COLORS[clients.findIndex((c) => c.client === client) % COLORS.length];

  let highest = 0;
  let total = 0;
  for (const parts of byDay.values()) {
    const sum = parts.reduce((acc, part) => acc + part.amount, 0);
    highest = Math.max(highest, sum);
    total += sum;
  }
  const top = niceCeiling(highest);
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const slot = plotWidth / Math.max(1, allDays.length);
  const barWidth = Math.max(2, slot * 0.7);
  const y = (micros) => MARGIN.top + plotHeight - (micros / top) * plotHeight;

  const svg = node("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "spend-chart",
    role: "img",
    "data-currency": currency,
    "data-total": formatMicros(total),
  });
  svg.append(node("title", {}, `What clients were charged per day, in ${currency}`));

  const axis = node("g", { class: "axis" });
  for (let index = 0; index <= TICKS; index++) {
    const value = (top / TICKS) * index;
    const at = y(value);
    const right = WIDTH - MARGIN.right;
    const label = formatMicros(Math.round(value));
    axis.append(
      node("line", { x1: MARGIN.left, x2: right, y1: at, y2: at, class: "grid-line" }),
      node("text", { x: MARGIN.left - 6, y: at + 4, "text-anchor": "end" }, label),
    );
  }
  const middle = MARGIN.top + plotHeight / 2;
  const unit = { x: 12, y: middle, transform: `rotate(-90 12 ${middle})`, "text-anchor": "middle" };
  axis.append(node("text", unit, currency));
  const baseline = MARGIN.top + plotHeight;
  const axisLine = { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: baseline, y2: baseline };
  axis.append(node("line", { ...axisLine, class: "baseline" }));
  // A label every few days, counted back from today's, so that they never overlap.
  const every = Math.max(1, Math.ceil(allDays.length / 8));
  const last = allDays.length - 1;
  allDays.forEach((day, index) => {
    if ((last - index) % every !== 0) return;
    const x = MARGIN.left + slot * index + slot / 2;
    const where = { x, y: baseline + 18, "text-anchor": "middle", class: "day-label" };
    axis.append(node("text", where, day.slice(5)));
  });
  svg.append(axis);

  const bars = node("g", { class: "bars" });
  allDays.forEach((day, index) => {
    const parts = byDay.get(day);
    if (!parts) return;
    const x = MARGIN.left + slot * index + (slot - barWidth) / 2;
    const sum = parts.reduce((acc, part) => acc + part.amount, 0);
    const bar = node("g", { class: "bar", "data-day": day, "data-total": formatMicros(sum) });
    let stacked = 0;
    for (const part of parts) {
      const segment = node("rect", {
        x,
        y: y(stacked + part.amount),
        width: barWidth,
        height: Math.max(0.5, y(stacked) - y(stacked + part.amount)),
        fill: color(part.client),
        "data-client": part.client,
        "data-amount": formatMicros(part.amount),
      });
      const tip = `${day} · ${legendName(part)}: ${formatMicros(part.amount)} ${currency}`;
      segment.append(node("title", {}, tip));
      bar.append(segment);
      stacked += part.amount;
    }
    bars.append(bar);
  });
  svg.append(bars);

  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const client of clients) {
    const item = document.createElement("li");
    item.dataset.client = client.client;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color(client.client);
    const label = document.createElement("span");
    label.textContent = legendName(client);
    item.append(swatch, label);
    legend.append(item);
  }
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.currency = currency;
  const caption = document.createElement("figcaption");
  const days = allDays.length;
  caption.textContent = `Charged per day, ${currency}: ${formatMicros(total)} in ${days} days`;
  figure.append(caption, svg, legend);
  return figure;
}
