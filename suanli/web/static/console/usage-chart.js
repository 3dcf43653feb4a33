// Suanli console: a service's usage of the last day, drawn with the vendored uPlot as the
// monitoring charts are (charts.js draws metrics it queries itself; these numbers come with
// the page). `figure[data-usage-chart]` holds {t: [epoch s], requests: [...], tokens: [...]}
// in `data-usage`: requests as bars on the left axis, tokens as a line on the right. The
// page's htmx refresh swaps the figure in again; it is drawn anew each time.
"use strict";

(() => {
  const HEIGHT = 210;
  const BLUE = "#2563eb";
  const GREEN = "#16a34a";

  function count(value) {
    if (value == null) return "–";
    const size = Math.abs(value);
    if (size >= 1e6) return `${Number((value / 1e6).toFixed(1))}M`;
    if (size >= 1e3) return `${Number((value / 1e3).toFixed(1))}k`;
    return String(Math.round(value));
  }

  function draw(figure) {
    if (figure.dataset.started || typeof uPlot === "undefined") return;
    figure.dataset.started = "1";
    let usage;
    try { usage = JSON.parse(figure.dataset.usage || "{}"); } catch (error) { return; }
    if (!usage.total_requests) { figure.dataset.state = "empty"; return; }
    const body = figure.querySelector(".chart-body");
    body.textContent = "";
    const language = document.documentElement.lang || undefined;
    const clock = new Intl.DateTimeFormat(language, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    const options = {
      width: body.clientWidth || 600,
      height: HEIGHT,
      padding: [10, 10, 0, 0],
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, n: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
        tok: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [
        { stroke: "#66748a", grid: { stroke: "#eef2f7" }, values: (u, splits) => splits.map((s) => clock.format(new Date(s * 1000))) },
        { scale: "n", stroke: BLUE, grid: { stroke: "#eef2f7" }, values: (u, splits) => splits.map(count) },
        { scale: "tok", side: 1, stroke: GREEN, grid: { show: false }, values: (u, splits) => splits.map(count) },
      ],
      series: [
        { label: figure.dataset.time, value: (u, v) => (v == null ? "–" : clock.format(new Date(v * 1000))) },
        { label: figure.dataset.requests, scale: "n", stroke: BLUE, fill: `${BLUE}33`, width: 1,
          paths: uPlot.paths.bars({ size: [0.7, 40] }), value: (u, v) => count(v) },
        { label: figure.dataset.tokens, scale: "tok", stroke: GREEN, width: 1.75, points: { size: 4 }, value: (u, v) => count(v) },
      ],
    };
    new uPlot(options, [usage.t, usage.requests, usage.tokens], body);
    figure.dataset.state = "drawn";
  }

  function setUp(root) {
    root.querySelectorAll("figure[data-usage-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => setUp(document));
  } else {
    setUp(document);
  }
  window.addEventListener("load", () => setUp(document)); // uPlot is deferred as well
  document.addEventListener("htmx:afterSettle", (event) => setUp(event.target));
})();
