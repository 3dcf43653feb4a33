// Suanli console: time-series charts, drawn with the vendored uPlot.
//
// Every `figure[data-chart]` names its queries (`data-queries`: metric, label matchers, how its
// lines are named) and its unit (`data-unit`). The window comes from the closest ancestor with
// `data-range` (15m, 1h, ... as the range picker set it) or with `data-start` / `data-end`
// (epoch seconds: a job's life). Series come from /charts/query (the session's cookie), one
// line per series. Charts of a recent window that is still open refresh every 10 s; all of
// them follow the width of the page and survive htmx swaps around them. A line breaks where its
// series has no points for longer than a few of its steps (the server or the node was down)
// instead of drawing a straight line across the hole; `data-gaps` counts those breaks.
"use strict";

(() => {
  const REFRESH_MS = 10_000;
  const LIVE_SECONDS = 6 * 3600;
  const HEIGHT = 210;
  const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000 };
  const PALETTE = [
    "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777",
    "#ca8a04", "#4f46e5", "#65a30d", "#dc2626", "#0d9488", "#7c3aed",
  ];
  const LIMIT_COLOUR = "#94a3b8";
  // Points further apart than this many steps of their series have a hole between them.
  const GAP_STEPS = 3;
  // Labels that tell series apart, in the order they are worth showing.
  const TELLING = ["node", "gpu", "mig_profile", "cpu", "interface", "mount", "proto", "sensor",
    "cause", "kind", "job", "pid"];
  const PREFIX = { gpu: "GPU ", cpu: "CPU ", pid: "PID ", job: "#" };
  const charts = new Set();

  // -- numbers with units --------------------------------------------------------------------

  function plain(value) {
    const size = Math.abs(value);
    const digits = size >= 100 || Number.isInteger(value) ? 0 : size >= 10 ? 1 : 2;
    return String(Number(value.toFixed(digits)));
  }

  function scaled(value, base, prefixes, suffix) {
    let size = value;
    let i = 0;
    while (Math.abs(size) >= base && i < prefixes.length - 1) { size /= base; i += 1; }
    return `${plain(size)} ${prefixes[i]}${suffix}`;
  }

  function formatter(unit) {
    switch (unit) {
      case "percent": return (v) => `${plain(v)}%`;
      case "bytes": return (v) => scaled(v, 1024, ["", "Ki", "Mi", "Gi", "Ti", "Pi"], "B");
      case "bytes_per_second":
        return (v) => scaled(v, 1024, ["", "Ki", "Mi", "Gi", "Ti", "Pi"], "B/s");
      case "celsius": return (v) => `${plain(v)} °C`;
      case "watts": return (v) => scaled(v, 1000, ["", "k", "M"], "W");
      case "mhz": return (v) => `${plain(v)} MHz`;
      case "watt_hours": return (v) => scaled(v, 1000, ["", "k", "M"], "Wh");
      default: return (v) => scaled(v, 1000, ["", "k", "M", "G"], "");
    }
  }

  // Tick steps: powers of two for sizes (so axes read 16 GiB, not 17.2 GiB), whole numbers
  // for counts (no 0.25 of an ECC error), else uPlot's.
  function increments(unit) {
    const steps = [];
    if (unit === "bytes" || unit === "bytes_per_second") {
      for (let power = 0; power <= 50; power += 10) {
        for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]) steps.push(m * 2 ** power);
      }
      return steps;
    }
    if (unit === "count") {
      for (let power = 0; power <= 15; power += 1) {
        for (const m of [1, 2, 5]) steps.push(m * 10 ** power);
      }
      return steps;
    }
    return undefined;
  }

  // Times in the page's language, on a 24-hour clock; the date where the day changes.
  function timeTicks(u, splits, axis, space, increment) {
    const language = document.documentElement.lang || undefined;
    const daily = increment >= 86400;
    const clock = new Intl.DateTimeFormat(language, {
      hour: "2-digit", minute: "2-digit", second: increment < 60 ? "2-digit" : undefined, hourCycle: "h23",
    });
    const day = new Intl.DateTimeFormat(language, { month: "2-digit", day: "2-digit" });
    let previous = null;
    return splits.map((seconds) => {
      const moment = new Date(seconds * 1000);
      const date = day.format(moment);
      const text = daily ? date : clock.format(moment);
      const shown = !daily && previous !== null && date !== previous ? `${date}\n${text}` : text;
      previous = date;
      return shown;
    });
  }

  function moment(seconds) {
    return new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
      dateStyle: "short", timeStyle: "medium", hourCycle: "h23",
    }).format(new Date(seconds * 1000));
  }

  // An axis as wide as its longest label (uPlot's own recipe).
  function axisSize(u, values, index, cycle) {
    const axis = u.axes[index];
    if (cycle > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((a, b) => (String(b).length > a.length ? String(b) : a), "");
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 2;
  }

  // -- what to ask and how to name it --------------------------------------------------------

  function windowOf(figure) {
    const box = figure.closest("[data-range], [data-start]");
    const now = Math.floor(Date.now() / 1000);
    if (box && box.dataset.start) {
      const start = Number(box.dataset.start);
      const end = box.dataset.end ? Number(box.dataset.end) : null;
      const range = Math.max(60, (end || now) - start);
      const step = box.hasAttribute("data-fine") ? Math.max(1, Math.floor(range / 240)) : null;
      return { range: String(range), end, step, live: end === null && range <= LIVE_SECONDS };
    }
    const key = (box && box.dataset.range) || "1h";
    const seconds = RANGES[key] || 3600;
    return { range: key, end: null, step: null, live: seconds <= LIVE_SECONDS };
  }

  function url(query, window) {
    const params = new URLSearchParams({ metric: query.metric, range: window.range });
    for (const [key, value] of Object.entries(query.labels || {})) params.append("label", `${key}=${value}`);
    if (window.end) params.set("end", new Date(window.end * 1000).toISOString());
    if (window.step) params.set("step", String(window.step));
    return `/charts/query?${params}`;
  }

  function telling(series, query) {
    if (query.legend) return [query.legend];
    if (series.length < 2) return [];
    const varying = TELLING.filter((key) => new Set(series.map((s) => s.labels[key])).size > 1);
    return varying.length ? varying : ["uuid"];
  }

  function nameOf(query, series, keys, title) {
    const names = query.names || {};
    const parts = keys
      .filter((key) => series.labels[key] !== undefined)
      .map((key) => {
        const value = series.labels[key];
        return names[value] || `${PREFIX[key] || ""}${value}`;
      });
    if (!parts.length && query.legend) parts.push("-");
    const where = parts.join(" · ");
    if (query.name && where) return `${query.name} · ${where}`;
    return query.name || where || title;
  }

  function lines(figure, spec, answers) {
    const title = figure.querySelector("figcaption").textContent.trim();
    const found = [];
    answers.forEach((answer, i) => {
      const query = spec.queries[i];
      const kept = answer.series.filter((s) =>
        (!query.require || s.labels[query.require] !== undefined)
        && (!query.exclude || s.labels[query.exclude] === undefined));
      const keys = telling(kept, query);
      const named = kept.map((s) => ({
        label: nameOf(query, s, keys, title), points: s.points, step: answer.step, dash: !!query.dash,
      }));
      named.sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
      found.push(...named);
    });
    return found;
  }

  // A series' step: what the server answered, or the usual distance between its points when
  // they are sparser (samples every 10 s asked for at 1 s).
  function stepOf(points, answered) {
    const distances = points.slice(1).map((point, i) => point[0] - points[i][0]).sort((a, b) => a - b);
    const usual = distances.length ? distances[Math.floor((distances.length - 1) / 2)] : 0;
    return Math.max(answered || 0, usual);
  }

  // The points with a null one step after each point that is followed by a hole: uPlot breaks a
  // line at a null (spanGaps is off) and draws on across an undefined.
  function withGaps(line) {
    const step = stepOf(line.points, line.step);
    const points = [];
    line.points.forEach((point, i) => {
      const previous = line.points[i - 1];
      const hole = previous && step > 0 && point[0] - previous[0] > GAP_STEPS * step;
      if (hole) points.push([previous[0] + step, null]);
      points.push(point);
    });
    return points;
  }

  // One time axis for all lines; where a line has no point at a time, undefined (spanned), so
  // that series sampled at different moments still draw as lines.
  function aligned(lines) {
    const times = [...new Set(lines.flatMap((points) => points.map((p) => p[0])))].sort((a, b) => a - b);
    const at = new Map(times.map((time, i) => [time, i]));
    const columns = lines.map((points) => {
      const column = new Array(times.length).fill(undefined);
      for (const [time, value] of points) column[at.get(time)] = value;
      return column;
    });
    return [times, ...columns];
  }

  // The window the server answered for, in epoch seconds.
  function span(answers) {
    const first = answers[0] || {};
    const start = Date.parse(first.start) / 1000;
    const end = Date.parse(first.end) / 1000;
    return Number.isFinite(start) && Number.isFinite(end) ? [start, end] : null;
  }

  function latest(column) {
    for (let i = column.length - 1; i >= 0; i -= 1) if (column[i] != null) return column[i];
    return null;
  }

  // -- drawing -------------------------------------------------------------------------------

  function options(chart, found, width) {
    const format = formatter(chart.unit);
    const percent = chart.unit === "percent";
    let colour = 0;
    const series = found.map((line) => {
      const stroke = line.dash ? LIMIT_COLOUR : PALETTE[colour++ % PALETTE.length];
      return {
        label: line.label,
        stroke,
        width: line.dash ? 1.25 : 1.75,
        dash: line.dash ? [6, 4] : undefined,
        fill: !line.dash && found.length === 1 ? `${stroke}1f` : undefined,
        spanGaps: false, // breaks at the nulls withGaps() put into holes
        // Where the cursor is, else the latest value.
        value: (u, v, index, at) => {
          const shown = at == null ? latest(u.data[index]) : v;
          return shown == null ? "–" : format(shown);
        },
        points: { size: 4 },
      };
    });
    return {
      width,
      height: HEIGHT,
      padding: [10, 22, 0, 0], // room for the last time label
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { show: found.length <= 24, live: true },
      scales: {
        // The selected window up to now, from where the data starts when it starts later
        // (a new server): a few minutes of data fill the chart.
        x: {
          time: true,
          range: (u, min, max) => {
            if (!chart.span) return [min, max];
            const [start, end] = chart.span;
            const fits = min != null && max > min;
            const left = fits && min > start ? min : start;
            // A closed window (a finished job) ends with its data; an open one at now.
            const right = fits && chart.window.end ? max : Math.max(end, max || end);
            return [left, right];
          },
        },
        y: {
          range: (u, min, max) => {
            if (percent) return [0, Math.max(100, max || 0)];
            const top = max > 0 ? max * 1.12 : 1;
            return [Math.min(0, min || 0), top];
          },
        },
      },
      axes: [
        { stroke: "#66748a", grid: { stroke: "#eef2f7" }, ticks: { stroke: "#e3e8f0" }, values: timeTicks, space: 64 },
        {
          stroke: "#66748a",
          grid: { stroke: "#eef2f7" },
          ticks: { stroke: "#e3e8f0" },
          values: (u, splits) => splits.map((v) => format(v)),
          incrs: increments(chart.unit),
          size: axisSize,
        },
      ],
      series: [
        {
          label: chart.figure.dataset.time,
          value: (u, v, index, at) => (at == null || v == null ? chart.figure.dataset.latest : moment(v)),
        },
        ...series,
      ],
    };
  }

  function note(chart, text) {
    let box = chart.body.querySelector(".chart-note");
    if (!text) { if (box) box.remove(); return; }
    if (!box) { box = document.createElement("div"); box.className = "chart-note"; chart.body.append(box); }
    box.textContent = text;
  }

  function drop(chart) {
    if (chart.plot) { chart.plot.destroy(); chart.plot = null; }
    chart.shape = "";
  }

  function draw(chart, found) {
    const empty = !found.some((line) => line.points.length);
    chart.figure.dataset.state = empty ? "empty" : "drawn";
    if (chart.optional) chart.figure.hidden = found.length === 0;
    if (empty) {
      drop(chart);
      note(chart, chart.figure.dataset.empty);
      return;
    }
    note(chart, "");
    const lines = found.map(withGaps);
    const holes = lines.reduce((n, points) => n + points.filter((p) => p[1] === null).length, 0);
    chart.figure.dataset.gaps = String(holes);
    const data = aligned(lines);
    const shape = found.map((line) => line.label).join("\n");
    if (chart.plot && shape === chart.shape) {
      chart.plot.setData(data);
      return;
    }
    drop(chart);
    chart.shape = shape;
    chart.plot = new uPlot(options(chart, found, chart.body.clientWidth || 400), data, chart.body);
  }

  async function load(chart) {
    if (chart.busy) return;
    chart.busy = true;
    chart.window = windowOf(chart.figure);
    chart.figure.dataset.window = chart.window.range;
    try {
      const answers = await Promise.all(chart.queries.map(async (query) => {
        const response = await fetch(url(query, chart.window), {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (response.redirected && new URL(response.url).pathname === "/login") {
          window.location.reload(); // the session ended: the page goes to the login form
        }
        const body = await response.json();
        if (!response.ok) throw new Error(body.detail || String(response.status));
        return body;
      }));
      chart.span = span(answers);
      draw(chart, lines(chart.figure, chart, answers));
    } catch (error) {
      if (!chart.plot) {
        chart.figure.dataset.state = "failed";
        note(chart, `${chart.figure.dataset.failed} ${error.message || ""}`.trim());
      }
    } finally {
      chart.busy = false;
    }
  }

  function start(figure) {
    if (figure.dataset.started) return;
    figure.dataset.started = "1";
    let queries = [];
    try { queries = JSON.parse(figure.dataset.queries || "[]"); } catch (e) { queries = []; }
    const chart = {
      figure,
      body: figure.querySelector(".chart-body"),
      unit: figure.dataset.unit || "count",
      optional: figure.hasAttribute("data-optional"),
      queries,
      plot: null,
      shape: "",
    };
    charts.add(chart);
    if (window.ResizeObserver) {
      let last = 0;
      new ResizeObserver(() => {
        const width = chart.body.clientWidth;
        if (chart.plot && width && width !== last) {
          last = width;
          chart.plot.setSize({ width, height: HEIGHT });
        }
      }).observe(chart.body);
    }
    load(chart);
  }

  function setUp(root) {
    if (typeof uPlot === "undefined") return;
    root.querySelectorAll("figure[data-chart]").forEach(start);
  }

  setInterval(() => {
    for (const chart of [...charts]) {
      if (!chart.figure.isConnected) { drop(chart); charts.delete(chart); continue; }
      if (!document.hidden && chart.window && chart.window.live) load(chart);
    }
  }, REFRESH_MS);

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => setUp(document));
  } else {
    setUp(document);
  }
  document.addEventListener("htmx:afterSettle", (event) => setUp(event.target));
})();
