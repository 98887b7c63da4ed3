// The curves of one training, from GET .../metrics: the whole history once,
// then only what came after (?since=CURSOR). One uPlot chart per number
// key; null (NaN, an infinity) is a gap. Text values are not plotted: the
// server writes them to the training's log, where the log view shows them.

import { el, json, state } from "./api.js";

/** Keys that are the x axis or its bound (docs/training.md, conventions). */
const COUNTERS = new Set(["step", "total", "epoch", "epochs"]);
/** Past this many points a curve is read again, downsampled by the server. */
const MAX_POINTS = 5000;
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#bf3989"];

export class Curves {
  /** Curves of the training at ``path`` ("v2/models/m/train/uuid"), in ``box``. */
  constructor(box, path) {
    this.box = box;
    this.path = path;
    this.cursor = 0;
    this.axis = null;
    this.points = new Map(); // key -> [xs, ys]
    this.charts = new Map(); // key -> {plot, node}
    this.resize = () => this.charts.forEach(({ plot, node }) => plot.setSize(size(node)));
    window.addEventListener("resize", this.resize);
    state.charts = {};
    this.empty = el("p", { class: "quiet" }, "No number reported yet (what train() sends with report()).");
    box.append(this.empty);
  }

  /** Read what came since the last poll and draw it. */
  async poll() {
    const answer = await json(`${this.path}/metrics?since=${this.cursor}`);
    if (this.axis !== null && answer.x !== this.axis) return this.restart();
    this.axis = answer.x;
    const changed = new Set();
    for (const [key, points] of Object.entries(answer.series || {})) {
      if (answer.x === "step" && COUNTERS.has(key)) continue;
      if (answer.x === "time" && (key === "total" || key === "epochs")) continue;
      let data = this.points.get(key);
      if (!data) this.points.set(key, (data = [[], []]));
      for (const [x, y] of points) {
        data[0].push(x);
        data[1].push(y);
      }
      changed.add(key);
    }
    this.cursor = answer.cursor;
    if ([...this.points.values()].some((d) => d[0].length > MAX_POINTS)) return this.restart();
    for (const key of changed) this.draw(key);
    return answer;
  }

  /** Forget the points and read the history again (downsampled if long). */
  async restart() {
    this.cursor = 0;
    this.axis = null;
    this.points.clear();
    return this.poll();
  }

  draw(key) {
    const data = this.points.get(key);
    let chart = this.charts.get(key);
    if (!chart) {
      this.empty.remove();
      const node = el("div", { class: "chart", "data-key": key }, el("h3", {}, key));
      this.box.append(node);
      const color = COLORS[this.charts.size % COLORS.length];
      const plot = new uPlot(options(key, this.axis, color, size(node)), data, node);
      chart = { plot, node };
      this.charts.set(key, chart);
    } else {
      chart.plot.setData(data);
    }
    const gaps = data[1].filter((y) => y === null).length;
    chart.node.dataset.points = String(data[0].length);
    chart.node.dataset.gaps = String(gaps);
    state.charts[key] = { points: data[0].length, gaps };
  }

  stop() {
    window.removeEventListener("resize", this.resize);
    this.charts.forEach(({ plot }) => plot.destroy());
    this.charts.clear();
  }
}

function size(node) {
  return { width: Math.max(node.clientWidth || 400, 280), height: 200 };
}

function options(key, axis, color, { width, height }) {
  return {
    width,
    height,
    legend: { show: true },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false } },
    series: [
      { label: axis === "time" ? "seconds" : "step" },
      { label: key, stroke: color, width: 1.5, spanGaps: false, points: { size: 4 } },
    ],
    axes: [{ label: axis === "time" ? "seconds since start" : "step" }, {}],
  };
}
