// Amounts as the service sends them: decimal strings ("0.30", "0.005"). Added up in integer
// millionths (the ledger's precision), so a sum is exact where floats would drift.

const PLACES = 6;
const SCALE = 10 ** PLACES;

export function toMicros(text) {
  if (typeof text !== "string" || !/^\d{1,12}(\.\d{1,6})?$/.test(text)) return 0;
  const [whole, fraction = ""] = text.split(".");
  return Number(whole) * SCALE + Number(fraction.padEnd(PLACES, "0"));
}

// Two decimals, more only where the amount needs them (0.005), as the service writes them.
export function formatMicros(micros) {
  const whole = Math.floor(micros / SCALE);
  let fraction = String(micros % SCALE).padStart(PLACES, "0").replace(/0+$/, "");
  if (fraction.length < 2) fraction = fraction.padEnd(2, "0");
  return `${whole}.${fraction}`;
}
