// Rampart portal: small enhancements over pages that work without script.
// Loaded as a file (the Content-Security-Policy forbids inline script).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A select marked data-autosubmit submits its form on change (theme, page size).
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  // A checkbox with data-select-all="NAME" ticks every checkbox named NAME in its form.
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", () => {
      const name = all.dataset.selectAll;
      for (const box of all.form.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
        box.checked = all.checked;
      }
    });
  }

  // "/" focuses the page's search or filter box, as in most consoles.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
    const search = document.querySelector("[data-search]");
    if (search) {
      event.preventDefault();
      search.focus();
    }
  });
});
