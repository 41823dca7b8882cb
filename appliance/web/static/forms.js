// Choices that submit their form as soon as they change (data-submit-on-change); without script,
// the form's <noscript> button does it. Here, not inline: the pages' policy refuses inline handlers.
for (const field of document.querySelectorAll("[data-submit-on-change]")) {
  field.addEventListener("change", () => field.form.submit());
}
