// Building the page without ever parsing data as HTML: every text goes through
// document.createTextNode / textContent, so a subject such as "<script>" shows as text.

/**
 * h("a", {href: "#/x", class: "btn", onclick: fn, dataset: {test: "y"}}, "text", child, ...)
 * Attributes are set with setAttribute (event handlers as listeners); children are nodes or
 * values shown as text; null, undefined and false are skipped; arrays are flattened.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value") {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace the content of `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Epoch seconds → "2026-12-05 05:40:12" in the browser's time zone. */
export function when(ts) {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** Seconds → "3 h 12 min", "45 s". */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A value as text: objects as JSON (still shown as text, never as markup). */
export function text(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A two-column table of fields: [[label, value-or-node], ...]. */
export function fields(rows, test) {
  return h(
    "table",
    { class: "fields", dataset: test ? { test } : undefined },
    h(
      "tbody",
      null,
      rows.map(([label, value]) =>
        h("tr", null, h("th", null, label), h("td", null, value instanceof Node ? value : text(value))),
      ),
    ),
  );
}

/** A table: columns [[header, (row) => value-or-node], ...]. */
export function table(columns, rows, attrs) {
  return h(
    "table",
    { class: "list", ...(attrs || {}) },
    h("thead", null, h("tr", null, columns.map(([title]) => h("th", null, title)))),
    h(
      "tbody",
      null,
      rows.map((row) =>
        h(
          "tr",
          null,
          columns.map(([, cell]) => {
            const value = cell(row);
            return h("td", null, value instanceof Node ? value : text(value));
          }),
        ),
      ),
    ),
  );
}

/** A status badge. */
export function badge(status) {
  return h("span", { class: `badge s-${String(status).replace(/[^a-z_]/g, "")}` }, status);
}
