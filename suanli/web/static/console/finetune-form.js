// Suanli console: the fine-tuning form. Shows the hyper-parameters of the chosen method
// (`[data-method]`) and stage (`[data-stage]`), the identity's name and author only while the
// built-in `identity` dataset is ticked (`[data-identity]`), and, when the YAML tab is opened
// with an empty editor, starts it from the YAML beside the form (what the fields say now).
// console.js switches the tabs themselves, as on the job and service forms.
"use strict";

(() => {
  function show(form) {
    const method = form.querySelector("select[name=method]");
    const stage = form.querySelector("select[name=stage]");
    const identity = form.querySelector("input[name=builtin_datasets][value=identity]");
    form.querySelectorAll("[data-method]").forEach((el) => {
      el.hidden = Boolean(method) && el.dataset.method !== method.value;
    });
    form.querySelectorAll("[data-stage]").forEach((el) => {
      el.hidden = Boolean(stage) && el.dataset.stage !== stage.value;
    });
    form.querySelectorAll("[data-identity]").forEach((el) => {
      el.hidden = !(identity && identity.checked);
    });
  }

  function startYaml(form, event) {
    const target = event.target;
    if (!target || target.name !== "mode" || target.value !== "yaml") return;
    const editor = form.querySelector("textarea[name=yaml]");
    const preview = document.querySelector("#check [data-test=yaml-preview]");
    if (editor && preview && !editor.value.trim()) editor.value = preview.textContent;
  }

  function setUp(root) {
    root.querySelectorAll("form[data-finetune-form]").forEach((form) => {
      if (form.dataset.finetuneReady) return;
      form.dataset.finetuneReady = "1";
      show(form);
      form.addEventListener("change", (event) => {
        startYaml(form, event);
        show(form);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => setUp(document));
  } else {
    setUp(document);
  }
})();
