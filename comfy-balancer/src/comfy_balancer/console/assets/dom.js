// Building the page without innerHTML: every text the API gives is set as text, so a task's
// parameters or a node's error cannot inject markup.

/** h("a", {href: "#/x", class: "b"}, "text", child): an element. Attributes that are null or
 * false are left out; "on..." attributes are listeners. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's content. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

export function when(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  return at.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString(undefined, { hour12: false }) : "";
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(value % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function between(startIso, endIso) {
  if (!startIso || !endIso) return "";
  return seconds((new Date(endIso) - new Date(startIso)) / 1000);
}

export function bytes(value) {
  if (value === null || value === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** "in 12 s" / "12 s ago" for an ISO time, from now. */
export function fromNow(iso) {
  if (!iso) return "";
  const delta = (new Date(iso) - Date.now()) / 1000;
  return delta >= 0 ? `in ${seconds(delta)}` : `${seconds(-delta)} ago`;
}

/** A definition list from [label, value] pairs; pairs whose value is empty are left out. */
export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(([, value]) => value !== "" && value !== null && value !== undefined)
      .map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** A table: columns are [heading, cell(row), className?]. */
export function table(caption, columns, rows, { empty = "Nothing here." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("caption", { class: "skip" }, caption),
      h("thead", {}, h("tr", {}, columns.map(([head, , cls]) =>
        h("th", { scope: "col", class: cls }, head)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell, cls]) =>
        h("td", { class: cls }, cell(row))))))));
}

/** A labelled form field around a control. */
export function field(id, label, control, hint) {
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" },
    h("label", { for: id }, label), control, hint ? h("span", { class: "hint", id: hintId }, hint) : null);
}

/** Calls ``tick`` now and every ``ms`` until the returned stop function runs; a tick that
 * throws is shown by its caller and the timer goes on. */
export function every(ms, tick) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    if (stopped) return;
    try { await tick(); } finally { if (!stopped) timer = setTimeout(run, ms); }
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}
