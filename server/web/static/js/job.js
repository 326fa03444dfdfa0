// #/jobs/ID: one job's charts, cycle table, actions and artifacts, live
// while it runs.

import { api, downloadArtifact, eventsAfter, TERMINAL } from "./api.js";
import { AXIS, chart, COLORS, WHOLE } from "./charts.js";
import { badge, fill, fmt, h, poll, table } from "./dom.js";
import { progressCell } from "./jobs.js";

const CYCLE_COLUMNS = [
  { label: "Cycle", cell: (c) => String(c.cycle) },
  { label: "Sparsity", cell: (c) => fmt.pct(c.sparsity, 2) },
  { label: "Alive weights", cell: (c) => fmt.int(c.alive_weights) },
  { label: "max_lr", cell: (c) => fmt.lr(c.max_lr) },
  { label: "Best epoch", cell: (c) => String(c.best_epoch) },
  { label: "Best val accuracy", cell: (c) => fmt.pct(c.best_val_accuracy, 2) },
  { label: "Test accuracy at best val", cell: (c) => fmt.pct(c.test_accuracy_at_best_val, 2) },
  { label: "Final test accuracy", cell: (c) => fmt.pct(c.final_test_accuracy, 2) },
  { label: "Seconds", cell: (c) => c.seconds.toFixed(1) },
];

/** The charts' data, straight from the API's cycles and events. */
export function chartData(cycles, events) {
  const oracle = cycles.filter((c) => c.extras && c.extras.oracle);
  return {
    accuracy: [cycles.map((c) => c.sparsity), cycles.map((c) => c.test_accuracy_at_best_val)],
    maxLr: [cycles.map((c) => c.cycle), cycles.map((c) => c.max_lr)],
    training: [
      events.map((_, i) => i + 1),
      events.map((e) => e.val_accuracy),
      events.map((e) => e.train_accuracy),
      events.map((e) => e.lr),
    ],
    oracleGrid: oracle.length ? oracle[0].extras.oracle.grid : null,
    oracle: [
      oracle.map((c) => c.cycle),
      ...(oracle.length ? oracle[0].extras.oracle.grid : []).map((_, g) =>
        oracle.map((c) => c.extras.oracle.best_val_accuracy[g] ?? null),
      ),
    ],
  };
}

function makeCharts() {
  const pct = { values: AXIS.pct };
  return {
    accuracy: chart(
      {
        name: "accuracy",
        title: "Test accuracy (at the best validation epoch) against sparsity, per cycle",
        x: { label: "sparsity", ...pct },
        y: { label: "test accuracy", ...pct },
        series: [{ label: "test accuracy", color: COLORS[0] }],
      },
      [[], []],
    ),
    maxLr: chart(
      {
        name: "max-lr",
        title: "Peak learning rate (max_lr) per cycle",
        x: { label: "cycle", incrs: WHOLE },
        y: { label: "max_lr", values: AXIS.lr },
        series: [{ label: "max_lr", color: COLORS[1] }],
      },
      [[], []],
    ),
    training: chart(
      {
        name: "training",
        title: "Training curves: accuracy and learning rate per epoch, all cycles in a row",
        x: { label: "epoch", incrs: WHOLE },
        y: { label: "accuracy", ...pct },
        y2: { label: "lr", scale: "lr", values: AXIS.lr },
        series: [
          { label: "val accuracy", color: COLORS[0] },
          { label: "train accuracy", color: COLORS[2], dash: [6, 4] },
          { label: "lr", color: COLORS[4], scale: "lr", width: 1, points: false },
        ],
      },
      [[], [], [], []],
    ),
  };
}

// An Oracle job's grid is known once its first pruned cycle is in: one line
// per max_lr of the grid, its best validation accuracy in each cycle.
function oracleChart(grid, data) {
  return chart(
    {
      name: "oracle",
      title: "Oracle search: best validation accuracy of each max_lr in the grid, per cycle",
      x: { label: "cycle", incrs: WHOLE },
      y: { label: "best val accuracy", values: AXIS.pct },
      series: grid.map((lr, i) => ({ label: `max_lr ${fmt.lr(lr)}`, color: COLORS[i % COLORS.length] })),
    },
    data,
  );
}

function summary(job) {
  const spec = job.spec;
  const rows = [
    ["Status", badge(job.status)],
    ["Owner", job.owner],
    ["Model / data set", `${spec.model.name} / ${spec.dataset.name}`],
    ["Schedule", spec.schedule.name],
    ["Progress", progressCell(job)],
    ["Best val accuracy", fmt.pct(job.progress.best_accuracy, 2)],
    ["Attempt", String(job.attempt)],
    ["Created", `${new Date(job.created_at).toLocaleString()} (${fmt.age(job.created_at)} ago)`],
    ["Tags", job.tags.join(", ") || "–"],
  ];
  if (job.status === "queued" && job.queue.reason) rows.push(["Queue", job.queue.reason]);
  if (job.error_message) rows.push(["Error", job.error_message]);
  return rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
}

export function jobView(main, ctx, id) {
  let job = null;
  let cycles = [];
  let events = [];
  let after = 0;
  const charts = makeCharts();
  let oracle = null;
  const chartBox = h("div", { class: "charts" }, Object.values(charts).map((c) => c.el));
  const cycleTable = table("Cycle table", CYCLE_COLUMNS, [], (c) => c.cycle);
  const details = h("dl", { class: "summary", id: "job-summary" });
  const artifacts = h("div", { id: "artifacts" });

  const act = (verb) => () =>
    ctx.run(async () => {
      show(await api(`/v1/jobs/${id}/${verb}`, { method: "POST" }));
    });
  const cancel = h("button", { type: "button", id: "cancel-job", "aria-label": `Cancel job ${id}`, disabled: true, onclick: act("cancel") }, "Cancel");
  const retry = h("button", { type: "button", id: "retry-job", "aria-label": `Retry job ${id}`, disabled: true, onclick: act("retry") }, "Retry");
  const title = h("h1", {}, `Job #${id}`);

  function show(next) {
    job = next;
    fill(title, `Job #${id}`, job.name ? ` — ${job.name}` : "");
    fill(details, summary(job));
    cancel.disabled = !["queued", "running"].includes(job.status);
    retry.disabled = !["failed", "cancelled"].includes(job.status);
  }

  function draw() {
    const data = chartData(cycles, events);
    charts.accuracy.update(data.accuracy);
    charts.maxLr.update(data.maxLr);
    charts.training.update(data.training);
    if (data.oracleGrid && !oracle) {
      oracle = oracleChart(data.oracleGrid, data.oracle);
      chartBox.append(oracle.el);
    } else if (oracle) oracle.update(data.oracle);
    cycleTable.render(cycles);
  }

  async function showArtifacts() {
    const list = await api(`/v1/jobs/${id}/artifacts`);
    const columns = [
      { label: "Artifact", cell: (a) => a.name },
      { label: "Size", cell: (a) => fmt.bytes(a.size) },
      {
        label: "Download",
        cell: (a) =>
          h("button", {
            type: "button",
            class: "download",
            "aria-label": `Download ${a.name}`,
            onclick: () => ctx.run(() => downloadArtifact(id, a.name)),
          }, "Download"),
      },
    ];
    fill(artifacts, list.items.length ? table("Artifacts", columns, list.items).el : h("p", { class: "muted" }, "No artifacts yet."));
  }

  async function refresh() {
    const next = await api(`/v1/jobs/${id}`);
    const first = job === null;
    const moved = first || next.status !== job.status || next.attempt !== job.attempt;
    if (!first && next.attempt !== job.attempt) [events, after] = [[], 0]; // a new attempt: read its history afresh
    // A finished job changes no more: after its last read only the status is polled.
    if (moved || !TERMINAL.has(next.status)) {
      const [cycleList, page] = await Promise.all([api(`/v1/jobs/${id}/cycles`), eventsAfter(id, after)]);
      cycles = cycleList.items;
      events = events.concat(page.items);
      after = page.after;
      draw();
    }
    if (moved) await showArtifacts();
    show(next);
  }

  fill(
    main,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    title,
    h("div", { class: "actions", role: "group", "aria-label": "Job actions" }, cancel, retry),
    details,
    h("h2", {}, "Charts"),
    chartBox,
    h("h2", {}, "Cycles"),
    cycleTable.el,
    h("h2", {}, "Artifacts"),
    artifacts,
  );
  return poll(() => ctx.run(refresh, "poll"), 2000);
}
