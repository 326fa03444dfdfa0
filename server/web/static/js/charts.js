// Line charts on uPlot (vendored under /static/vendor/uplot, loaded as a
// classic script that defines window.uPlot).

import { h } from "./dom.js";

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

/**
 * Decimals a percentage tick needs so that ticks `step` apart (a fraction:
 * 0.005 is 0.5 %) read differently: 10 % → 0, 0.5 % → 1, 0.25 % → 2. Read
 * from the step rather than the range, since uPlot picks the step (1, 2, 2.5
 * or 5 times a power of ten) to fit the axis's length.
 */
export function pctDecimals(step) {
  const pct = Math.abs(100 * step);
  if (!Number.isFinite(pct) || pct === 0) return 0;
  let digits = 0;
  // The step is a float (0.1 * 3 ...): "exact" within a millionth of itself.
  while (digits < 6 && Math.abs(pct - Number(pct.toFixed(digits))) > pct * 1e-6) digits += 1;
  return digits;
}

// uPlot calls an axis's `values` with the ticks and, last, the step between them.
const pctAxis = (u, ticks, axis, space, step) =>
  ticks.map((v) => (v == null ? "" : `${(100 * v).toFixed(pctDecimals(step))}%`));
const lrAxis = (u, values) => values.map((v) => Number(v).toPrecision(2));

export const AXIS = { pct: pctAxis, lr: lrAxis };

// uPlot merges options over its defaults with Object.assign, where an
// explicit undefined would replace a default: leave such keys out.
/** Tick steps for an axis of whole numbers (cycles, epochs). */
export const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

const defined = (obj) => Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));

/**
 * A chart in a labelled figure. `spec`:
 *   title, x: {label, values?, incrs?}, y: {label, values?}, y2?: {label, values?, scale},
 *   series: [{label, color, scale?, dash?, width?, points?}], bands?: [[hi, lo, color]]
 * Returns {el, update(data)}; the uPlot instance is on el.uplot for
 * inspection (devtools, the browser tests).
 */
export function chart(spec, data) {
  const plot = h("div", { class: "plot", role: "img", "aria-label": spec.title });
  const el = h("figure", { class: "chart", "data-chart": spec.name }, h("figcaption", {}, spec.title), plot);
  let u = null;
  const options = (width) => ({
    width,
    height: width < 500 ? 220 : 280,
    scales: { x: { time: false }, ...(spec.y2 ? { [spec.y2.scale]: { auto: true } } : {}) },
    axes: [
      defined({ label: spec.x.label, values: spec.x.values, incrs: spec.x.incrs }),
      defined({ label: spec.y.label, values: spec.y.values, size: 56 }),
      ...(spec.y2
        ? [defined({ label: spec.y2.label, values: spec.y2.values, scale: spec.y2.scale, side: 1, grid: { show: false }, size: 56 })]
        : []),
    ],
    series: [
      { label: spec.x.label },
      ...spec.series.map((s) => defined({
        label: s.label,
        stroke: s.color,
        width: s.width ?? 2,
        dash: s.dash,
        scale: s.scale ?? "y",
        spanGaps: true,
        points: { show: s.points ?? true, size: 6 },
      })),
    ],
    bands: (spec.bands ?? []).map(([hi, lo, color]) => ({ series: [hi, lo], fill: color })),
  });
  // uPlot needs a width in pixels: draw once the figure is in the page, and
  // follow its width when the window (or a phone's orientation) changes.
  const resize = new ResizeObserver(() => {
    const width = Math.floor(plot.clientWidth);
    if (!width) return;
    if (!u) {
      u = new window.uPlot(options(width), data, plot);
      el.uplot = u;
    } else if (Math.abs(u.width - width) > 1) {
      u.setSize({ width, height: width < 500 ? 220 : 280 });
    }
  });
  resize.observe(plot);
  return {
    el,
    update(next) {
      data = next;
      if (u) u.setData(next);
    },
  };
}
