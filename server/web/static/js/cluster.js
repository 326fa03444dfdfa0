// #/cluster: why jobs wait and when they may start (GET /v1/cluster), live every 5 s.

import { api } from "./api.js";
import { fill, fmt, h, poll, table } from "./dom.js";

const NO_REASON = "(none given yet: not yet looked at, or about to start)";

const amount = (x) => (x === null || x === undefined ? "–" : String(Number(x.toPrecision(4))));
const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function capacityLine(capacity) {
  if (capacity.state === "unknown") return "Size unknown: no dispatcher has measured the cluster.";
  const when = new Date(capacity.measured_at).toLocaleString();
  const stale = capacity.state === "stale" ? " — stale: no dispatcher measures it now, so nothing starts" : "";
  return `${plural(capacity.nodes, "node")}, measured ${when} (${capacity.state})${stale}.`;
}

/** The capacity table's rows: each resource's total, in use, free and largest node. */
function resources(cluster) {
  const { total, largest_node: largest } = cluster.capacity;
  const use = cluster.in_use;
  return [
    { name: "CPU", total: total?.cpus, used: use.cpus, free: use.free_cpus, largest: largest?.cpus },
    { name: "GPU", total: total?.gpus, used: use.gpus, free: use.free_gpus, largest: largest?.gpus },
    { name: "Memory (GB)", total: total?.memory_gb, used: null, free: null, largest: largest?.memory_gb },
  ];
}

const RESOURCE_COLUMNS = [
  { label: "Resource", cell: (r) => r.name },
  { label: "Total", cell: (r) => amount(r.total) },
  { label: "In use", cell: (r) => amount(r.used) },
  { label: "Free", cell: (r) => amount(r.free) },
  { label: "Largest node", cell: (r) => amount(r.largest) },
];

const OWNER_COLUMNS = [
  { label: "Owner", cell: (o) => o.owner },
  { label: "Running", cell: (o) => String(o.running) },
  { label: "CPU", cell: (o) => amount(o.cpus) },
  { label: "GPU", cell: (o) => amount(o.gpus) },
  { label: "Queued", cell: (o) => String(o.queued) },
  { label: "GPU-hours", cell: (o) => (o.gpu_seconds / 3600).toFixed(2) },
  { label: "Share", cell: (o) => fmt.pct(o.share) },
];

const REASON_COLUMNS = [
  { label: "Jobs", cell: (r) => String(r.jobs) },
  { label: "Reason", cell: (r) => r.reason ?? NO_REASON },
];

function startCell(job) {
  if (job.estimated_start === null) return h("span", { class: "muted" }, "unknown");
  const at = new Date(job.estimated_start);
  const wait = (at - Date.now()) / 1000;
  if (wait < 1) return "now";
  return `in ${fmt.seconds(wait)} (${at.toLocaleString([], { dateStyle: "short", timeStyle: "short" })})`;
}

const HEAD_COLUMNS = [
  { label: "#", cell: (j) => String(j.position) },
  { label: "ID", cell: (j) => h("a", { href: `#/jobs/${j.id}`, "aria-label": `job ${j.id}` }, `#${j.id}`) },
  { label: "Name", cell: (j) => j.name ?? "" },
  { label: "Owner", cell: (j) => j.owner },
  { label: "CPU", cell: (j) => amount(j.cpus) },
  { label: "GPU", cell: (j) => amount(j.gpus) },
  { label: "Estimated start", cell: startCell },
  { label: "Why", cell: (j) => j.unknown_because ?? j.reason ?? "" },
];

export function clusterView(main, ctx) {
  const capacity = h("p", { id: "cluster-capacity" });
  const running = h("p", { class: "muted", id: "cluster-running" });
  const fairShare = h("p", { id: "cluster-fair-share" });
  const queued = h("p", { id: "cluster-queued" });
  const scope = h("p", { class: "muted", id: "cluster-scope", hidden: true });
  const updated = h("span", { class: "muted", id: "cluster-updated", "aria-live": "off" });
  const resourceTable = table("Capacity and use", RESOURCE_COLUMNS, [], (r) => r.name);
  const owners = table("Owners, fewest GPU-seconds first", OWNER_COLUMNS, [], (o) => o.owner);
  const reasons = table("Queued jobs by reason", REASON_COLUMNS, [], (r) => r.reason ?? "");
  const head = table("Next to run, with estimated starts", HEAD_COLUMNS, [], (j) => j.id);

  async function refresh() {
    // api() sends the ETag of the answer it holds: an unchanged cluster is a 304.
    const cluster = await api("/v1/cluster");
    fill(capacity, capacityLine(cluster.capacity));
    fill(running, `${plural(cluster.in_use.jobs, "running job")} (cancelling ones included).`);
    const share = cluster.fair_share;
    const quota = share.gpu_quota === null ? "no GPU quota" : `a GPU quota of ${share.gpu_quota} per owner`;
    fill(fairShare, `Fair share counts GPU-time over the last ${fmt.seconds(share.window_seconds)}; ${quota}.`);
    fill(queued, `${plural(cluster.queue.queued, "queued job")} in all.`);
    scope.hidden = cluster.scope !== "own";
    fill(scope, "You see your own jobs and usage; the totals are the whole cluster's.");
    resourceTable.render(resources(cluster));
    owners.render(cluster.owners);
    reasons.render(cluster.queue.by_reason);
    head.render(cluster.queue.head);
    fill(updated, `updated ${new Date().toLocaleTimeString()}`);
  }

  fill(
    main,
    h("h1", {}, "Cluster"),
    scope,
    capacity,
    resourceTable.el,
    running,
    h("h2", {}, "Fair share"),
    fairShare,
    owners.el,
    h("h2", {}, "Queue"),
    queued,
    reasons.el,
    head.el,
    h(
      "p",
      { class: "muted" },
      "Estimated in the queue's order from the running jobs' ETAs; the dispatcher also weighs fair share and aging, so these are estimates.",
    ),
    h("div", { class: "pager" }, updated),
  );
  return poll(() => ctx.run(refresh, "poll"), 5000);
}
