// Building the page: elements from data, text only (an API string never
// becomes HTML), number formats, and the polling loop.

/**
 * h("a", {href: "#/jobs/1", class: "x", onclick: fn}, "text", child, [more])
 * Strings become text nodes; null/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  el.append(...flat(children));
  return el;
}

function flat(children) {
  return children
    .flat(Infinity)
    .filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren(...flat(children));
  return el;
}

/**
 * A table in a horizontally scrolling, keyboard-focusable box.
 * columns: [{label, cell: (row) => string | Node}]
 */
export function table(caption, columns, rows, rowKey = null) {
  const body = h("tbody");
  const el = h(
    "div",
    { class: "table-scroll", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      body,
    ),
  );
  const render = (items) => updateRows(body, columns, items, rowKey);
  render(rows);
  return { el, render };
}

// Rows are kept by key and only cells whose text changed are rebuilt, so a
// live refresh every two seconds leaves keyboard focus where it is.
function updateRows(body, columns, items, rowKey) {
  const old = new Map([...body.children].map((tr) => [tr.dataset.key, tr]));
  const rows = items.map((item, index) => {
    const key = String(rowKey ? rowKey(item) : index);
    const tr = old.get(key) ?? h("tr", { "data-key": key }, columns.map(() => h("td")));
    columns.forEach((column, i) => {
      const content = column.cell(item);
      const signature = content instanceof Node ? content.outerHTML : String(content);
      const td = tr.children[i];
      if (td.dataset.signature !== signature) {
        fill(td, content);
        td.dataset.signature = signature;
      }
    });
    return tr;
  });
  if (rows.length !== body.children.length || rows.some((tr, i) => body.children[i] !== tr)) {
    body.replaceChildren(...rows);
  }
}

export const fmt = {
  pct: (x, digits = 1) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(digits)}%`),
  lr: (x) => (x === null || x === undefined ? "–" : Number(x).toPrecision(3)),
  int: (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en")),
  seconds: (s) => (s === null || s === undefined ? "–" : duration(s)),
  age: (iso) => duration((Date.now() - Date.parse(iso)) / 1000),
  bytes: (n) => {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) [n, i] = [n / 1024, i + 1];
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  },
};

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

/** A status as a coloured badge (the colour comes from CSS, by status). */
export function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/**
 * Run `step` now and then `ms` after each run ends (never two at once),
 * skipping while the tab is hidden. Returns the function that stops it.
 */
export function poll(step, ms) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) await step();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
