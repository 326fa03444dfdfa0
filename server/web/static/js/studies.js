// #/studies and #/studies/ID: the studies, and one study's comparison of
// schedules over seeds.

import { api } from "./api.js";
import { AXIS, chart, COLORS } from "./charts.js";
import { badge, fill, fmt, h, poll, table } from "./dom.js";
import { progressCell } from "./jobs.js";

const statusCounts = (status) =>
  Object.entries(status).map(([name, n]) => h("span", { class: "count" }, badge(name), ` ${n}`));

const STUDY_COLUMNS = [
  { label: "ID", cell: (s) => h("a", { href: `#/studies/${s.id}`, "aria-label": `study ${s.id}` }, `#${s.id}`) },
  { label: "Name", cell: (s) => s.name ?? "" },
  { label: "Owner", cell: (s) => s.owner },
  { label: "Schedules", cell: (s) => s.schedules.join(", ") },
  { label: "Seeds", cell: (s) => s.seeds.join(", ") },
  { label: "Members", cell: (s) => h("span", {}, statusCounts(s.status)) },
  { label: "Age", cell: (s) => fmt.age(s.created_at) },
];

export function studiesView(main, ctx) {
  let cursors = [null];
  let page = 0;
  let nextCursor = null;
  const studies = table("Studies, newest first", STUDY_COLUMNS, [], (s) => s.id);
  const newer = h("button", { type: "button", "aria-label": "Newer studies", disabled: true }, "← Newer");
  const older = h("button", { type: "button", "aria-label": "Older studies", disabled: true }, "Older →");
  let latest = 0;

  async function refresh() {
    const asked = ++latest;
    const list = await api("/v1/studies", { params: { limit: 25, cursor: cursors[page] } });
    if (asked !== latest) return; // a page change while this was on its way
    nextCursor = list.next_cursor;
    studies.render(list.items);
    newer.disabled = page === 0;
    older.disabled = !nextCursor;
  }
  newer.addEventListener("click", () => {
    page -= 1;
    ctx.run(refresh, "poll");
  });
  older.addEventListener("click", () => {
    cursors = [...cursors.slice(0, page + 1), nextCursor];
    page += 1;
    ctx.run(refresh, "poll");
  });
  fill(main, h("h1", {}, "Studies"), studies.el, h("div", { class: "pager" }, newer, older));
  return poll(() => ctx.run(refresh, "poll"), 5000);
}

/**
 * The comparison as chart data: x = sparsity per cycle; per schedule its mean,
 * then mean + std and mean - std (the band; null where one seed finished).
 */
export function comparisonData(study) {
  const rows = study.comparison;
  const cell = (row, label) => row.test_accuracy[label] ?? null;
  const band = (sign) => (row, label) => {
    const c = cell(row, label);
    return c && c.std !== null ? c.mean + sign * c.std : null;
  };
  return [
    rows.map((r) => r.sparsity),
    ...study.schedules.flatMap((label) => [
      rows.map((r) => cell(r, label)?.mean ?? null),
      rows.map((r) => band(1)(r, label)),
      rows.map((r) => band(-1)(r, label)),
    ]),
  ];
}

function comparisonChart(study) {
  const series = study.schedules.flatMap((label, i) => {
    const color = COLORS[i % COLORS.length];
    return [
      { label, color },
      { label: `${label} + std`, color: `${color}66`, width: 1, dash: [3, 3], points: false },
      { label: `${label} − std`, color: `${color}66`, width: 1, dash: [3, 3], points: false },
    ];
  });
  return chart(
    {
      name: "comparison",
      title: "Test accuracy against sparsity per schedule: mean over seeds with a ± std band",
      x: { label: "sparsity", values: AXIS.pct },
      y: { label: "test accuracy", values: AXIS.pct },
      series,
      // Series indices count the x series as 0: schedule i owns 3i+1..3i+3.
      bands: study.schedules.map((_, i) => [3 * i + 2, 3 * i + 3, `${COLORS[i % COLORS.length]}22`]),
    },
    comparisonData(study),
  );
}

function comparisonColumns(study) {
  const cellText = (c) => (!c ? "–" : `${fmt.pct(c.mean, 2)}${c.std === null ? "" : ` ± ${fmt.pct(c.std, 2)}`} (n=${c.n})`);
  return [
    { label: "Cycle", cell: (r) => String(r.cycle) },
    { label: "Sparsity", cell: (r) => fmt.pct(r.sparsity, 2) },
    ...study.schedules.map((label) => ({ label, cell: (r) => cellText(r.test_accuracy[label]) })),
  ];
}

const MEMBER_COLUMNS = [
  { label: "Job", cell: (m) => h("a", { href: `#/jobs/${m.job_id}`, "aria-label": `job ${m.job_id}` }, `#${m.job_id}`) },
  { label: "Schedule", cell: (m) => m.schedule },
  { label: "Seed", cell: (m) => String(m.seed) },
  { label: "Status", cell: (m) => badge(m.status) },
  { label: "Progress", cell: progressCell },
  { label: "Best val accuracy", cell: (m) => fmt.pct(m.progress.best_accuracy, 2) },
];

export function studyView(main, ctx, id) {
  const title = h("h1", {}, `Study #${id}`);
  const counts = h("p", { id: "study-status" });
  const body = h("div");
  const members = table("Member jobs", MEMBER_COLUMNS, [], (m) => m.job_id);
  let parts = null; // the chart and table, built once the schedules are known

  async function refresh() {
    const study = await api(`/v1/studies/${id}`);
    fill(title, `Study #${id}`, study.name ? ` — ${study.name}` : "");
    fill(counts, `${study.owner}; seeds ${study.seeds.join(", ")}; members: `, statusCounts(study.status));
    if (!parts) {
      parts = { chart: comparisonChart(study), table: table("Comparison: test accuracy at the best validation epoch", comparisonColumns(study), [], (r) => r.cycle) };
      fill(body, parts.chart.el, parts.table.el);
    } else parts.chart.update(comparisonData(study));
    parts.table.render(study.comparison);
    members.render(study.members);
  }

  fill(main, h("p", {}, h("a", { href: "#/studies" }, "← All studies")), title, counts, body, h("h2", {}, "Members"), members.el);
  return poll(() => ctx.run(refresh, "poll"), 5000);
}
