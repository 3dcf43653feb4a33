// Suanli console: the playground. Chat with a model service through the gateway itself
// (POST /v1/chat/completions with the session cookie and the page's CSRF token), the answer
// streamed token by token from the server-sent events; under each answer its tokens and
// latency (time to the first token, and in all). "Compare": two services answer the same
// prompt side by side, each keeping its own conversation. Prompt templates of the service's
// project: pick one, fill its {variables}, or save the current prompt as a new version.
"use strict";

(() => {
  const root = document.querySelector("[data-playground]");
  if (!root) return;
  const text = JSON.parse(root.dataset.text || "{}");
  const csrf = root.dataset.csrf;
  const $ = (id) => document.getElementById(id);
  const columns = [...root.querySelectorAll(".pg-column")].map((element) => ({
    element,
    log: element.querySelector(".pg-log"),
    title: element.querySelector(".pg-title"),
    history: [],
  }));
  let templates = [];
  let busy = false;

  // "{prompt} prompt tokens" with the values put in.
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
  }

  function models() {
    const chosen = [$("pg-model").value];
    if ($("pg-compare").checked) chosen.push($("pg-model-b").value);
    return chosen;
  }

  function showColumns() {
    const compare = $("pg-compare").checked;
    $("pg-model-b-field").hidden = !compare;
    columns[1].element.hidden = !compare;
    $("pg-columns").classList.toggle("compare", compare);
    columns[0].title.textContent = $("pg-model").value;
    columns[1].title.textContent = $("pg-model-b").value;
  }

  function bubble(column, role, content) {
    const box = document.createElement("div");
    box.className = `pg-msg ${role}`;
    box.dataset.role = role;
    const body = document.createElement("span");
    body.className = "pg-text";
    body.textContent = content;
    box.append(body);
    column.log.append(box);
    column.log.scrollTop = column.log.scrollHeight;
    return box;
  }

  function number(id) {
    const value = Number($(id).value);
    return $(id).value.trim() === "" || Number.isNaN(value) ? undefined : value;
  }

  function parameters() {
    const found = {};
    const temperature = number("pg-temperature");
    const topP = number("pg-top-p");
    const maxTokens = number("pg-max-tokens");
    if (temperature !== undefined) found.temperature = temperature;
    if (topP !== undefined) found.top_p = topP;
    if (maxTokens !== undefined) found.max_tokens = Math.round(maxTokens);
    return found;
  }

  // The gateway's error ({"error": {"message"}}), or the status line.
  async function failure(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
      if (body && body.detail) return String(body.detail);
    } catch (error) { /* not JSON */ }
    return `${response.status} ${response.statusText}`;
  }

  // One answer, streamed into its bubble; resolves when the stream ends.
  async function ask(column, model) {
    const messages = [];
    const system = $("pg-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...column.history);
    const box = bubble(column, "assistant", "");
    box.classList.add("streaming");
    const body = box.querySelector(".pg-text");
    const started = performance.now();
    let firstToken = null;
    let usage = null;
    let answer = "";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({
          model, messages, stream: true, stream_options: { include_usage: true }, ...parameters(),
        }),
      });
      if (!response.ok || !response.body) throw new Error(await failure(response));
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let done = false;
      while (!done) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        const events = buffer.split(/\r?\n\r?\n/);
        buffer = events.pop();
        for (const event of events) {
          const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trim()).join("\n");
          if (!data) continue;
          if (data === "[DONE]") { done = true; break; }
          const parsed = JSON.parse(data);
          if (parsed.error) throw new Error(parsed.error.message || JSON.stringify(parsed.error));
          if (parsed.usage) usage = parsed.usage;
          const delta = parsed.choices && parsed.choices[0] && parsed.choices[0].delta;
          if (delta && delta.content) {
            if (firstToken === null) firstToken = performance.now();
            answer += delta.content;
            body.textContent = answer;
            column.log.scrollTop = column.log.scrollHeight;
          }
        }
      }
      if (done) reader.cancel().catch(() => {});
      column.history.push({ role: "assistant", content: answer });
      const total = performance.now() - started;
      const stats = document.createElement("span");
      stats.className = "pg-stats";
      stats.dataset.test = "pg-stats";
      const times = { ttft: firstToken === null ? "–" : Math.round(firstToken - started), total: Math.round(total) };
      stats.textContent = usage
        ? fill(text.stats, { prompt: usage.prompt_tokens, completion: usage.completion_tokens, ...times })
        : fill(text.no_usage, times);
      box.append(stats);
    } catch (error) {
      box.classList.add("error");
      body.textContent = `${text.failed} ${error.message || error}`.trim();
      column.history.pop(); // the question goes unanswered: not sent again next time
    } finally {
      box.classList.remove("streaming");
    }
  }

  async function send(event) {
    event.preventDefault();
    const content = $("pg-input").value.trim();
    if (!content || busy) return;
    busy = true;
    $("pg-send").disabled = true;
    showColumns();
    const chosen = models();
    const asked = chosen.map((model, i) => {
      const column = columns[i];
      column.history.push({ role: "user", content });
      bubble(column, "user", content);
      return ask(column, model);
    });
    $("pg-input").value = "";
    try {
      await Promise.all(asked);
    } finally {
      busy = false;
      $("pg-send").disabled = false;
    }
  }

  function clear() {
    for (const column of columns) { column.history = []; column.log.textContent = ""; }
  }

  // -- prompt templates of the chosen service's project --------------------------------------

  function project() {
    const option = $("pg-model").selectedOptions[0];
    return option ? option.dataset.project : "";
  }

  async function loadTemplates(keep) {
    const select = $("pg-template");
    const response = await fetch(`/playground/prompts?project=${encodeURIComponent(project())}`, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    });
    templates = response.ok ? await response.json() : [];
    select.textContent = "";
    const first = document.createElement("option");
    first.value = "";
    first.textContent = templates.length ? text.pick : text.no_templates;
    select.append(first);
    for (const prompt of templates) {
      const option = document.createElement("option");
      option.value = prompt.name;
      option.textContent = `${prompt.name} · v${prompt.version}`;
      select.append(option);
    }
    select.value = templates.some((p) => p.name === keep) ? keep : "";
    showVariables();
  }

  function chosenTemplate() {
    return templates.find((p) => p.name === $("pg-template").value);
  }

  function showVariables() {
    const box = $("pg-vars");
    box.textContent = "";
    const prompt = chosenTemplate();
    $("pg-use").hidden = !prompt;
    if (!prompt) return;
    for (const name of prompt.variables) {
      const label = document.createElement("label");
      label.className = "field";
      const caption = document.createElement("span");
      caption.className = "label mono";
      caption.textContent = `{${name}}`;
      const input = document.createElement("input");
      input.type = "text";
      input.dataset.variable = name;
      label.append(caption, input);
      box.append(label);
    }
  }

  function useTemplate() {
    const prompt = chosenTemplate();
    if (!prompt) return;
    const values = {};
    $("pg-vars").querySelectorAll("input[data-variable]").forEach((input) => {
      values[input.dataset.variable] = input.value;
    });
    $("pg-system").value = fill(prompt.system, values);
    $("pg-input").value = fill(prompt.template, values);
    const p = prompt.parameters || {};
    if (p.temperature !== undefined) $("pg-temperature").value = p.temperature;
    if (p.top_p !== undefined) $("pg-top-p").value = p.top_p;
    if (p.max_tokens !== undefined) $("pg-max-tokens").value = p.max_tokens;
    $("pg-input").focus();
  }

  async function saveTemplate() {
    const note = $("pg-save-note");
    const name = $("pg-save-name").value.trim();
    note.className = "small";
    const template = $("pg-input").value;
    if (!template.trim()) {
      note.classList.add("field-error");
      note.textContent = text.no_template_text;
      return;
    }
    const response = await fetch("/playground/prompts", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf, Accept: "application/json" },
      body: JSON.stringify({
        project: project(), name, system: $("pg-system").value, template, parameters: parameters(),
      }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      note.classList.add("field-error");
      const errors = Object.entries(body.errors || {}).map(([field, message]) => (field ? `${field}: ${message}` : message));
      note.textContent = errors.join(" ") || body.detail || String(response.status);
      return;
    }
    note.textContent = fill(text.saved, { name: body.name, version: body.version });
    await loadTemplates(body.name);
  }

  $("pg-form").addEventListener("submit", send);
  $("pg-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send(event);
  });
  $("pg-clear").addEventListener("click", clear);
  $("pg-compare").addEventListener("change", showColumns);
  $("pg-model").addEventListener("change", () => { clear(); showColumns(); loadTemplates(""); });
  $("pg-model-b").addEventListener("change", () => { clear(); showColumns(); });
  $("pg-template").addEventListener("change", showVariables);
  $("pg-use").addEventListener("click", useTemplate);
  $("pg-save").addEventListener("click", saveTemplate);
  showColumns();
  loadTemplates("");
})();
