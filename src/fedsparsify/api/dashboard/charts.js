// Line charts drawn as plain SVG. Every label is set with textContent, never parsed as markup.

const SVG = "http://www.w3.org/2000/svg";
export const COLOURS = [
  "#2458c6", "#d1495b", "#2a9d8f", "#e9a03b", "#7b4fb5", "#5f6b7c", "#8ab339", "#c9638f",
];
const W = 560;
const H = 230;
const M = { left: 64, right: 14, top: 12, bottom: 34 };

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function text(tag, attrs, content) {
  const node = svg(tag, attrs);
  node.textContent = content;
  return node;
}

/** About `count` round numbers covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => raw <= s) ?? 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.round(t / step) * step);
  }
  return ticks;
}

/**
 * A line chart: `series` is [{name, points: [[x, y], ...]}] with x the round index.
 * Options: id (data-chart of the panel), title, yFormat (number -> string), yMin, yMax, emptyText.
 */
export function lineChart({ id, title, series, yFormat = String, yMin, yMax, emptyText }) {
  const box = document.createElement("section");
  box.className = "panel chart";
  box.dataset.chart = id;
  const heading = document.createElement("h2");
  heading.textContent = title;
  box.append(heading);
  const drawn = series.filter((s) => s.points.length > 0);
  const all = drawn.flatMap((s) => s.points);
  if (all.length === 0) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = emptyText ?? "nothing reported yet";
    box.append(empty);
    return box;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
  let y0 = yMin ?? Math.min(...ys);
  let y1 = yMax ?? Math.max(...ys);
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 0.5; y1 += Math.abs(y1) * 0.1 || 0.5; }
  if (yMin === undefined) y0 -= (y1 - y0) * 0.05;
  if (yMax === undefined) y1 += (y1 - y0) * 0.05;
  const px = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.dataset.points = String(all.length);
  root.dataset.series = String(drawn.length);
  root.append(text("title", {}, title));
  const axis = svg("g", { "font-size": 11, fill: "#5f6b7c" });
  for (const t of niceTicks(y0, y1, 5)) {
    const y = py(t);
    axis.append(svg("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, stroke: "#e6e9ee" }));
    axis.append(text("text", { x: M.left - 6, y: y + 4, "text-anchor": "end" }, yFormat(t)));
  }
  const xTicks = niceTicks(x0, x1, Math.min(8, Math.max(1, Math.round(x1 - x0))))
    .filter((t) => Number.isInteger(t));
  for (const t of xTicks) {
    const x = px(t);
    axis.append(svg("line", { x1: x, x2: x, y1: H - M.bottom, y2: H - M.bottom + 4, stroke: "#9aa4b2" }));
    axis.append(text("text", { x, y: H - M.bottom + 16, "text-anchor": "middle" }, String(t)));
  }
  axis.append(text("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle" }, "round"));
  axis.append(svg("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, stroke: "#9aa4b2" }));
  root.append(axis);

  const radius = all.length > 80 ? 1.6 : 3;
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const colour = COLOURS[i % COLOURS.length];
    const g = svg("g", { class: "series" });
    g.dataset.name = s.name;
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    g.append(svg("polyline", {
      points: pts.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" "),
      fill: "none", stroke: colour, "stroke-width": all.length > 80 ? 1.4 : 2, "stroke-linejoin": "round",
    }));
    for (const [x, y] of pts) {
      const dot = svg("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: radius, fill: colour });
      dot.append(text("title", {}, `${s.name}, round ${x}: ${yFormat(y)}`));
      g.append(dot);
    }
    root.append(g);
  });
  box.append(root);

  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = `sw sw-${i % COLOURS.length}`;
    item.append(swatch, document.createTextNode(s.name));
    legend.append(item);
  });
  box.append(legend);
  return box;
}
