// Suanli console: the little the pages need beyond htmx. Follow a job's log (server-sent
// events), ask before destructive actions, switch the submit form's tabs, show a notification
// channel's e-mail fields only for e-mail, copy a snippet (an SSH config) to the clipboard.
"use strict";

function followLog(pre) {
  const status = document.getElementById("log-status");
  const source = new EventSource(pre.dataset.follow);
  const atBottom = () => pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  source.addEventListener("log", (event) => {
    const stick = atBottom();
    if (pre.dataset.empty === "1") { pre.textContent = ""; pre.dataset.empty = "0"; }
    pre.append(document.createTextNode(JSON.parse(event.data).text));
    if (stick) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", () => {
    source.close();
    if (status) { status.classList.add("done"); status.textContent = status.dataset.done; }
  });
}

function showMode(form) {
  const mode = form.querySelector("input[name=mode]:checked");
  const gpu = form.querySelector("input[name=gpu_kind]:checked");
  form.querySelectorAll("[data-mode]").forEach((el) => {
    el.hidden = mode && !el.dataset.mode.split(" ").includes(mode.value);
  });
  form.querySelectorAll("[data-gpu]").forEach((el) => {
    el.hidden = gpu && el.dataset.gpu !== gpu.value;
  });
}

function showKind(form) {
  const kind = form.querySelector("select[name=kind]");
  form.querySelectorAll("[data-kind-only]").forEach((el) => {
    el.hidden = kind && el.dataset.kindOnly !== kind.value;
  });
}

function setUp(root) {
  root.querySelectorAll("pre[data-follow]").forEach((pre) => {
    if (!pre.dataset.started) { pre.dataset.started = "1"; followLog(pre); }
  });
  root.querySelectorAll("form[data-job-form], form[data-devenv-form]").forEach((form) => {
    showMode(form);
    form.addEventListener("change", () => showMode(form));
  });
  root.querySelectorAll("form[data-channel-form]").forEach((form) => {
    showKind(form);
    form.addEventListener("change", () => showKind(form));
  });
}

document.addEventListener("submit", (event) => {
  const message = event.submitter && event.submitter.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
}, true);

// A button with data-copy="ID" copies that element's text. The clipboard API needs a secure
// context (https, or localhost); on plain http elsewhere the text is selected and copied the
// old way.
function copyText(button) {
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent;
  const done = () => {
    const label = button.textContent;
    button.textContent = button.dataset.copied || label;
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  const fallback = () => {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { if (document.execCommand("copy")) done(); } catch (error) { /* left selected */ }
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, fallback);
  } else {
    fallback();
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest && event.target.closest("button[data-copy]");
  if (button) { event.preventDefault(); copyText(button); }
});

document.addEventListener("DOMContentLoaded", () => setUp(document));
document.addEventListener("htmx:afterSettle", (event) => setUp(event.target));
