// A small SVG chart: one or more series against a shared x (training step, round number).
// No dependencies. Series grow by `append` (incremental fetches with ?after=STEP); null
// values leave a gap. Everything is drawn with SVG attributes and textContent, never
// markup strings, so metric names cannot inject anything.

const SVG_NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#4338ca", "#0e9384", "#dd2590", "#f79009", "#2e90fa", "#667085"];

const PAD = { left: 52, right: 14, top: 12, bottom: 30 };

function svg(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, className, text, parent = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

// "Nice" tick values (1, 2, 2.5, 5 x 10^n) covering [lo, hi] with about `count` ticks.
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const first = Math.floor(lo / step) * step;
  const ticks = [];
  for (let v = first; v <= hi + step * 0.5; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return value.toExponential(2);
  if (Number.isInteger(value)) return String(value);
  return Number(value.toPrecision(digits)).toString();
}

export class LineChart {
  // options: {title, series: [{key, label, color?}], xLabel, yMin, yMax, bars, integerX,
  // width and height of the view box (text scales with it), empty (the text without data)}
  constructor(container, options) {
    this.options = { xLabel: "step", width: 480, height: 220, ...options };
    this.series = options.series.map((s, i) => ({ color: PALETTE[i % PALETTE.length], ...s }));
    this.container = container;
    this.reset();
    this.build();
    this.render();
  }

  reset() {
    this.x = [];
    this.values = Object.fromEntries(this.series.map((s) => [s.key, []]));
  }

  // Column-wise data {step: [...], key: [...]} (the metrics API's shape); `xKey` names x.
  append(columns, xKey = "step") {
    const xs = columns[xKey] || [];
    const last = this.x.length ? this.x[this.x.length - 1] : -Infinity;
    xs.forEach((x, i) => {
      if (x <= last) return; // a repeated fetch never duplicates a point
      this.x.push(x);
      for (const s of this.series) {
        const column = columns[s.key];
        const v = column ? column[i] : null;
        this.values[s.key].push(typeof v === "number" && Number.isFinite(v) ? v : null);
      }
    });
    this.render();
  }

  replace(columns, xKey = "step") {
    this.reset();
    this.append(columns, xKey);
  }

  get lastX() {
    return this.x.length ? this.x[this.x.length - 1] : -1;
  }

  build() {
    this.container.replaceChildren();
    const head = html("div", "chart__head", null, this.container);
    html("h3", "chart__title", this.options.title, head);
    this.readout = html("p", "chart__readout", "", head);
    this.svg = svg("svg", {
      viewBox: `0 0 ${this.options.width} ${this.options.height}`,
      class: "chart__svg",
      role: "img",
      "aria-label": this.options.title,
    });
    this.container.appendChild(this.svg);
    const legend = html("ul", "chart__legend", null, this.container);
    for (const s of this.series) {
      const item = html("li", null, null, legend);
      const swatch = svg("svg", { width: 18, height: 8, "aria-hidden": "true" }, item);
      svg("line", { x1: 0, y1: 4, x2: 18, y2: 4, stroke: s.color, "stroke-width": 3 }, swatch);
      html("span", null, s.label, item);
    }
    this.svg.addEventListener("mousemove", (event) => this.hover(event));
    this.svg.addEventListener("mouseleave", () => this.hover(null));
  }

  domain() {
    const ys = this.series.flatMap((s) => this.values[s.key]).filter((v) => v !== null);
    let lo = this.options.yMin ?? Math.min(...ys);
    let hi = this.options.yMax ?? Math.max(...ys);
    if (this.options.bars) lo = Math.min(0, lo);
    const yTicks = niceTicks(lo, hi, 4);
    if (this.options.yMin === undefined) lo = Math.min(lo, yTicks[0]);
    if (this.options.yMax === undefined) hi = Math.max(hi, yTicks[yTicks.length - 1]);
    let x0 = Math.min(...this.x);
    let x1 = Math.max(...this.x);
    if (this.options.bars || x0 === x1) {
      x0 -= 0.5;
      x1 += 0.5;
    }
    return { x0, x1, lo, hi, yTicks: yTicks.filter((t) => t >= lo && t <= hi) };
  }

  render() {
    const { width: WIDTH, height: HEIGHT } = this.options;
    this.svg.replaceChildren();
    const points = this.series.reduce(
      (n, s) => n + this.values[s.key].filter((v) => v !== null).length,
      0,
    );
    this.svg.dataset.points = String(points);
    if (!points) {
      svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart__empty", "text-anchor": "middle" }, this.svg)
        .textContent = this.options.empty || "No data yet";
      this.readout.textContent = "";
      return;
    }
    const d = this.domain();
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    this.sx = (x) => PAD.left + ((x - d.x0) / (d.x1 - d.x0 || 1)) * plotW;
    this.sy = (y) => PAD.top + (1 - (y - d.lo) / (d.hi - d.lo || 1)) * plotH;
    this.drawAxes(d, plotW, plotH);
    if (this.options.bars) this.drawBars(d);
    else this.drawLines();
    this.guide = svg("line", { y1: PAD.top, y2: PAD.top + plotH, class: "chart__guide", visibility: "hidden" }, this.svg);
    this.showReadout(this.x.length - 1);
  }

  drawAxes(d, plotW, plotH) {
    const HEIGHT = this.options.height;
    const axes = svg("g", { class: "chart__axes" }, this.svg);
    for (const t of d.yTicks) {
      const y = this.sy(t);
      svg("line", { x1: PAD.left, x2: PAD.left + plotW, y1: y, y2: y, class: "chart__grid" }, axes);
      svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, axes).textContent = formatNumber(t);
    }
    const integer = this.options.integerX !== false;
    const xTicks = niceTicks(d.x0, d.x1, 5).filter(
      (t) => t >= d.x0 && t <= d.x1 && (!integer || Number.isInteger(t)),
    );
    for (const t of xTicks) {
      svg("text", { x: this.sx(t), y: PAD.top + plotH + 16, "text-anchor": "middle" }, axes).textContent =
        formatNumber(t);
    }
    svg("line", { x1: PAD.left, x2: PAD.left + plotW, y1: PAD.top + plotH, y2: PAD.top + plotH, class: "chart__axis" }, axes);
    svg("text", { x: PAD.left + plotW, y: HEIGHT - 2, "text-anchor": "end", class: "chart__xlabel" }, axes)
      .textContent = this.options.xLabel;
  }

  // Steps without a value are skipped, not broken: a metric logged every N steps (held-out
  // accuracy) is still one line. Sparse series also get a dot per point.
  drawLines() {
    for (const s of this.series) {
      const pts = this.values[s.key]
        .map((v, i) => (v === null ? null : [this.sx(this.x[i]), this.sy(v)]))
        .filter((p) => p !== null);
      const path = pts.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
      svg("path", { d: path, fill: "none", stroke: s.color, "stroke-width": 2, class: "chart__line", "data-series": s.key }, this.svg);
      const dense = pts.length > 40;
      pts.forEach(([x, y], i) => {
        if (dense && i !== pts.length - 1) return;
        svg("circle", { cx: x, cy: y, r: 2.8, fill: s.color, class: "chart__point" }, this.svg);
      });
    }
  }

  drawBars(d) {
    const n = this.series.length;
    const slot = Math.min(Math.abs(this.sx(d.x0 + 1) - this.sx(d.x0)) * 0.7, 28 * n);
    const width = Math.max(2, slot / n);
    this.series.forEach((s, k) => {
      this.values[s.key].forEach((v, i) => {
        if (v === null) return;
        const x = this.sx(this.x[i]) - slot / 2 + k * width;
        const y = this.sy(Math.max(v, 0));
        const h = Math.abs(this.sy(v) - this.sy(0));
        svg("rect", { x, y, width, height: Math.max(h, 1), fill: s.color, rx: 2, class: "chart__point" }, this.svg);
      });
    });
  }

  nearestIndex(svgX) {
    let best = -1;
    let bestDist = Infinity;
    this.x.forEach((x, i) => {
      const dist = Math.abs(this.sx(x) - svgX);
      if (dist < bestDist) [best, bestDist] = [i, dist];
    });
    return best;
  }

  hover(event) {
    if (!this.x.length || !this.guide) return;
    if (event === null) {
      this.guide.setAttribute("visibility", "hidden");
      this.showReadout(this.x.length - 1);
      return;
    }
    const box = this.svg.getBoundingClientRect();
    const svgX = ((event.clientX - box.left) / box.width) * this.options.width;
    const i = this.nearestIndex(svgX);
    if (i < 0) return;
    const x = this.sx(this.x[i]);
    this.guide.setAttribute("x1", x);
    this.guide.setAttribute("x2", x);
    this.guide.setAttribute("visibility", "visible");
    this.showReadout(i);
  }

  showReadout(i) {
    if (i < 0) return;
    const parts = [`${this.options.xLabel} ${formatNumber(this.x[i])}`];
    for (const s of this.series) parts.push(`${s.label} ${formatNumber(this.values[s.key][i])}`);
    this.readout.textContent = parts.join(" · ");
  }
}
