// Suanli console: a repository's upload area. Files or a whole folder go to the console's tus
// endpoint with tus-js-client (chunked; an interrupted upload resumes where it stopped, found
// again by its fingerprint in localStorage), a few at a time, each with its progress bar and
// one for them all. Nothing is hashed here (far too slow for gigabytes): the server hashes as
// the bytes arrive and names the content in the last answer's Upload-Sha256 header. "Commit"
// then posts the list (path, sha256, size) as a version.
"use strict";

(function () {
  const CHUNK = 64 * 1024 * 1024; // bytes a PATCH carries: proxies in front keep their limits
  const PARALLEL = 3; // files in flight at once

  function percent(sent, total) {
    return total > 0 ? Math.floor((100 * sent) / total) : 100;
  }

  function humanBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }

  // The file's path in the version: inside a chosen folder, relative to that folder; under
  // the "into folder" prefix when one is given.
  function pathOf(file, fromFolder, into) {
    let path = file.name;
    if (fromFolder && file.webkitRelativePath) {
      path = file.webkitRelativePath.split("/").slice(1).join("/") || file.name;
    }
    const prefix = into.trim().replace(/^\/+|\/+$/g, "");
    return prefix ? prefix + "/" + path : path;
  }

  function setUp(area) {
    const endpoint = area.dataset.endpoint;
    const project = area.dataset.project;
    const tbody = area.querySelector("[data-files] tbody");
    const table = area.querySelector("[data-files]");
    const overall = area.querySelector("[data-overall]");
    const form = area.querySelector("form[data-commit]");
    const button = area.querySelector("[data-commit-button]");
    const into = area.querySelector("[data-into]");
    const entries = new Map(); // path -> entry
    const queue = [];
    let running = 0;

    function stateText(state) {
      return area.dataset["state" + state[0].toUpperCase() + state.slice(1)] || state;
    }

    function show(entry, state, detail) {
      entry.state = state;
      entry.row.dataset.state = state;
      const cell = entry.row.querySelector("[data-state-cell]");
      cell.textContent = stateText(state) + (detail ? ": " + detail : "");
      cell.className = state === "failed" ? "field-error" : state === "done" ? "muted" : "";
      refresh();
    }

    function refresh() {
      let sent = 0;
      let total = 0;
      let done = 0;
      entries.forEach((entry) => {
        sent += entry.state === "done" ? entry.file.size : entry.sent;
        total += entry.file.size;
        if (entry.state === "done") done += 1;
      });
      const all = percent(sent, total);
      overall.hidden = table.hidden = entries.size === 0;
      overall.querySelector(".fill").style.width = all + "%";
      overall.querySelector("[data-test=overall-percent]").textContent = all + "%";
      overall.querySelector("[data-test=overall-text]").textContent = area.dataset.overallText
        .replace("{done}", done).replace("{total}", entries.size);
      button.disabled = entries.size === 0 || done !== entries.size;
    }

    function progress(entry, sent) {
      entry.sent = sent;
      const value = percent(sent, entry.file.size);
      entry.row.querySelector(".fill").style.width = value + "%";
      entry.row.querySelector("[data-percent]").textContent = value + "%";
      refresh();
    }

    function finished(entry) {
      running -= 1;
      pump();
    }

    function start(entry) {
      running += 1;
      show(entry, "uploading");
      const upload = new tus.Upload(entry.file, {
        endpoint: endpoint,
        chunkSize: CHUNK,
        retryDelays: [0, 1000, 3000, 5000],
        metadata: { project: project, filename: entry.path },
        headers: { "X-CSRF-Token": area.dataset.csrf },
        // The same file, for the same user, project and path: resumed, not sent again.
        fingerprint: (file) => Promise.resolve(
          ["suanli", area.dataset.user, project, entry.path, file.size, file.lastModified].join("/")),
        onProgress: (sent) => progress(entry, sent),
        onAfterResponse: (request, response) => {
          const sha256 = response.getHeader("Upload-Sha256");
          if (sha256) entry.sha256 = sha256;
        },
        onSuccess: () => {
          if (entry.upload !== upload) return; // replaced meanwhile
          progress(entry, entry.file.size);
          if (entry.sha256) show(entry, "done");
          else show(entry, "failed", area.dataset.noHash);
          finished(entry);
        },
        onError: (error) => {
          if (entry.upload !== upload) return;
          const response = error.originalResponse;
          show(entry, "failed", response ? response.getStatus() + "" : error.message);
          finished(entry);
        },
      });
      entry.upload = upload;
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      });
    }

    function pump() {
      while (running < PARALLEL && queue.length) start(queue.shift());
    }

    function forget(entry) {
      const at = queue.indexOf(entry);
      if (at >= 0) queue.splice(at, 1);
      if (entry.upload && entry.state === "uploading") {
        entry.upload.abort();
        running -= 1;
      }
      entry.upload = null;
      entry.row.remove();
      entries.delete(entry.path);
    }

    function row(entry) {
      const tr = document.createElement("tr");
      tr.dataset.path = entry.path;
      const path = document.createElement("td");
      path.className = "name mono";
      path.textContent = entry.path;
      const size = document.createElement("td");
      size.className = "num";
      size.textContent = humanBytes(entry.file.size);
      const bar = document.createElement("td");
      bar.innerHTML = '<div class="row" style="flex-wrap: nowrap"><div class="bar" style="flex: 1">' +
        '<div class="fill" style="width: 0%"></div></div><span class="muted small" data-percent>0%</span></div>';
      const state = document.createElement("td");
      state.dataset.stateCell = "";
      const actions = document.createElement("td");
      actions.className = "actions";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "btn ghost small";
      remove.textContent = "×";
      remove.addEventListener("click", () => { forget(entry); refresh(); pump(); });
      actions.append(remove);
      tr.append(path, size, bar, state, actions);
      return tr;
    }

    function add(files, fromFolder) {
      for (const file of files) {
        const path = pathOf(file, fromFolder, into.value);
        const previous = entries.get(path);
        if (previous) forget(previous);
        const entry = { file: file, path: path, sent: 0, sha256: "", state: "waiting", upload: null };
        entry.row = row(entry);
        tbody.append(entry.row);
        entries.set(path, entry);
        show(entry, "waiting");
        queue.push(entry);
      }
      pump();
    }

    area.querySelectorAll("input[data-pick]").forEach((input) => {
      input.addEventListener("change", () => {
        add(Array.from(input.files), input.dataset.pick === "folder");
        input.value = ""; // the same files can be chosen again
      });
    });

    form.addEventListener("submit", (event) => {
      const files = [];
      entries.forEach((entry) => {
        files.push({ path: entry.path, sha256: entry.sha256, size: entry.file.size });
      });
      if (!files.length || files.some((f) => !f.sha256)) { event.preventDefault(); return; }
      form.querySelector("input[name=manifest]").value = JSON.stringify(files);
      button.disabled = true;
    });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-upload]").forEach(setUp);
  });
})();
