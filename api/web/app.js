// Conveniences only: every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // "All files": ticks or clears the checkboxes it names.
  for (const all of document.querySelectorAll("input[data-selects]")) {
    const boxes = () => document.querySelectorAll(`input[type=checkbox][name="${all.dataset.selects}"]`);
    all.checked = [...boxes()].every((b) => b.checked);
    all.addEventListener("change", () => { for (const b of boxes()) b.checked = all.checked; });
  }
  // A form is sent once: a second press while the first is on its way does nothing.
  for (const form of document.querySelectorAll("form[method=post]")) {
    form.addEventListener("submit", (event) => {
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
    });
  }
});
