// Suanli console: a fine-tuning run's live charts, drawn with the vendored uPlot as the
// monitoring charts (charts.js) and a service's usage (usage-chart.js) are.
//
// `[data-finetune-charts]` names where the points come from (`data-metrics`: the run's
// /finetunes/{id}/metrics, the API's MetricsOut) and the element whose `data-active` says the
// run still moves (`data-status`, refreshed by htmx). Every POLL_MS it asks for the points after
// the last step it has (`?after=N`), adds them and redraws; once the run has ended it asks one
// last time and stops. Each `figure[data-ft-chart]` draws some of the point's fields against
// the step: `loss` (training and evaluation loss), `lr`, `throughput` (tokens/s).
"use strict";

(() => {
  const POLL_MS = 3000;
  const HEIGHT = 210;
  const SERIES = {
    loss: [["loss", "#2563eb"], ["eval_loss", "#ea580c"]],
    lr: [["lr", "#9333ea"]],
    throughput: [["throughput", "#16a34a"]],
  };

  function number(value) {
    if (value == null) return "–";
    const size = Math.abs(value);
    if (size !== 0 && (size < 0.01 || size >= 1e6)) return value.toExponential(2);
    if (size >= 1000) return `${Number((value / 1000).toFixed(1))}k`;
    return String(Number(value.toFixed(size >= 100 ? 0 : 4)));
  }

  function latest(column) {
    for (let i = column.length - 1; i >= 0; i -= 1) if (column[i] != null) return column[i];
    return null;
  }

  function options(figure, kind, width) {
    const labels = figure.dataset;
    return {
      width,
      height: HEIGHT,
      padding: [10, 16, 0, 0],
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: { x: { time: false }, y: { range: (u, min, max) => [Math.min(0, min || 0), max > 0 ? max * 1.12 : 1] } },
      axes: [
        { stroke: "#66748a", grid: { stroke: "#eef2f7" }, label: labels.step, labelSize: 20, values: (u, splits) => splits.map((s) => (Number.isInteger(s) ? String(s) : "")) },
        { stroke: "#66748a", grid: { stroke: "#eef2f7" }, size: 60, values: (u, splits) => splits.map(number) },
      ],
      series: [
        // Where the cursor is, else the newest.
        { label: labels.step, value: (u, v, index, at) => String(at == null ? latest(u.data[0]) ?? "–" : v) },
        ...SERIES[kind].map(([name, colour]) => ({
          label: labels[`label${name.replace(/(^|_)(\w)/g, (m, s, c) => c.toUpperCase())}`] || name,
          stroke: colour,
          width: 1.75,
          spanGaps: true, // evaluation loss comes every few steps only
          points: { size: name === "eval_loss" ? 6 : 3 },
          value: (u, v, index, at) => number(at == null ? latest(u.data[index]) : v),
        })),
      ],
    };
  }

  function draw(chart, points) {
    const fields = SERIES[chart.kind].map(([name]) => name);
    const shown = points.filter((p) => fields.some((name) => p[name] != null));
    chart.figure.dataset.points = String(shown.length);
    if (!shown.length) {
      chart.figure.dataset.state = "empty";
      return;
    }
    const note = chart.body.querySelector(".chart-note");
    if (note) note.remove();
    const data = [shown.map((p) => p.step), ...fields.map((name) => shown.map((p) => p[name] ?? null))];
    if (chart.plot) {
      chart.plot.setData(data);
    } else {
      chart.plot = new uPlot(options(chart.figure, chart.kind, chart.body.clientWidth || 400), data, chart.body);
    }
    chart.figure.dataset.state = "drawn";
  }

  function start(box) {
    if (box.dataset.started || typeof uPlot === "undefined") return;
    box.dataset.started = "1";
    const charts = [...box.querySelectorAll("figure[data-ft-chart]")].map((figure) => ({
      figure, kind: figure.dataset.ftChart, body: figure.querySelector(".chart-body"), plot: null,
    }));
    if (window.ResizeObserver) {
      for (const chart of charts) {
        new ResizeObserver(() => {
          const width = chart.body.clientWidth;
          if (chart.plot && width) chart.plot.setSize({ width, height: HEIGHT });
        }).observe(chart.body);
      }
    }
    const points = [];
    let last = 0;
    let ended = false;
    const active = () => {
      const status = document.querySelector(box.dataset.status);
      return !status || status.dataset.active === "1";
    };
    async function poll() {
      if (!box.isConnected) return;
      const moving = active();
      try {
        const response = await fetch(`${box.dataset.metrics}?after=${last}`, {
          credentials: "same-origin", headers: { Accept: "application/json" },
        });
        if (response.ok) {
          const answer = await response.json();
          for (const point of answer.points || []) {
            if (point.step > last) { points.push(point); last = point.step; }
          }
          box.dataset.steps = String(answer.current_steps || 0);
          charts.forEach((chart) => draw(chart, points));
        }
      } catch (error) { /* the next poll tries again */ }
      if (!moving) ended = true;
      if (!ended) setTimeout(poll, document.hidden ? POLL_MS * 3 : POLL_MS);
      else box.dataset.done = "1";
    }
    poll();
  }

  function setUp() {
    document.querySelectorAll("[data-finetune-charts]").forEach(start);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
  window.addEventListener("load", setUp); // uPlot is deferred as well
})();
