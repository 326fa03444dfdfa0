// #/jobs: the job table with filters, live every 2 s, paged by next_cursor.

import { api } from "./api.js";
import { badge, fill, fmt, h, poll, table } from "./dom.js";

const PAGE = 25;
const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];


export function progressCell(job) {
  const p = job.progress;
  if (!p || p.cycles === null || p.cycles === undefined) return "–";
  // Cycle 0 is the dense training, so a job has cycles + 1 parts.
  const parts = p.cycles + 1;
  let done = p.cycle === null ? 0 : p.cycle + (p.epochs ? (p.epoch ?? 0) / p.epochs : 0);
  if (job.status === "succeeded") done = parts;
  const text =
    p.cycle === null ? "not started" : `cycle ${p.cycle}/${p.cycles}, epoch ${p.epoch ?? 0}/${p.epochs ?? "?"}`;
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: String(parts), value: String(Math.min(done, parts)), "aria-label": text }),
    h("span", { class: "progress-text" }, text),
    // While the epochs stand still (the Oracle's search), the note says why.
    p.note ? h("span", { class: "progress-note muted" }, p.note) : null,
  );
}

const COLUMNS = [
  { label: "ID", cell: (j) => h("a", { href: `#/jobs/${j.id}`, "aria-label": `job ${j.id}` }, `#${j.id}`) },
  { label: "Name", cell: (j) => j.name ?? "" },
  { label: "Status", cell: (j) => badge(j.status) },
  { label: "Owner", cell: (j) => j.owner },
  { label: "Model / data set", cell: (j) => (j.model ? `${j.model} / ${j.dataset}` : "–") },
  { label: "Schedule", cell: (j) => j.schedule ?? "–" },
  { label: "Progress", cell: progressCell },
  { label: "Best val accuracy", cell: (j) => fmt.pct(j.progress?.best_accuracy, 2) },
  { label: "Sparsity", cell: (j) => fmt.pct(j.progress?.sparsity) },
  { label: "Age", cell: (j) => fmt.age(j.created_at) },
];

function filterForm(onChange) {
  const status = h(
    "select",
    { id: "filter-status", name: "status", "aria-label": "Filter by status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  const owner = h("input", { id: "filter-owner", name: "owner", type: "search", placeholder: "owner", "aria-label": "Filter by owner" });
  const tag = h("input", { id: "filter-tag", name: "tag", type: "search", placeholder: "tag", "aria-label": "Filter by tag" });
  const read = () => ({ status: status.value, owner: owner.value.trim(), tag: tag.value.trim() });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: (e) => (e.preventDefault(), onChange(read())) },
    // Each label stays beside its field when the form wraps on a phone.
    h("span", { class: "field" }, h("label", { for: "filter-status" }, "Status"), status),
    h("span", { class: "field" }, h("label", { for: "filter-owner" }, "Owner"), owner),
    h("span", { class: "field" }, h("label", { for: "filter-tag" }, "Tag"), tag),
    h("button", { type: "submit", "aria-label": "Apply the filters" }, "Filter"),
  );
  status.addEventListener("change", () => onChange(read()));
  return form;
}

export function jobsView(main, ctx) {
  let filters = { status: "", owner: "", tag: "" };
  // cursors[i] opens page i; page 0 is the newest jobs.
  let cursors = [null];
  let page = 0;
  let nextCursor = null;
  const jobs = table("Jobs, newest first", COLUMNS, [], (j) => j.id);
  const updated = h("span", { class: "muted", id: "jobs-updated", "aria-live": "off" });
  const newer = h("button", { type: "button", "aria-label": "Newer jobs", disabled: true }, "← Newer");
  const older = h("button", { type: "button", "aria-label": "Older jobs", disabled: true }, "Older →");

  let latest = 0;

  async function refresh() {
    const asked = ++latest;
    const params = { limit: PAGE, cursor: cursors[page], ...filters };
    // One request a refresh: each summary carries its job's progress and spec names.
    const list = await api("/v1/jobs", { params });
    // A filter or page change while this was on its way: its answer is stale.
    if (asked !== latest) return;
    nextCursor = list.next_cursor;
    jobs.render(list.items);
    fill(updated, list.items.length ? `updated ${new Date().toLocaleTimeString()}` : "no jobs match");
    newer.disabled = page === 0;
    older.disabled = !nextCursor;
  }

  const stop = poll(() => ctx.run(refresh, "poll"), 2000);
  const go = (to) => {
    page = to;
    ctx.run(refresh, "poll");
  };
  newer.addEventListener("click", () => go(page - 1));
  older.addEventListener("click", () => {
    cursors = [...cursors.slice(0, page + 1), nextCursor];
    go(page + 1);
  });
  const form = filterForm((next) => {
    filters = next;
    cursors = [null];
    go(0);
  });
  fill(main, h("h1", {}, "Jobs"), form, jobs.el, h("div", { class: "pager" }, newer, older, updated));
  return stop;
}
