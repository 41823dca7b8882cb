// Choices that submit their form as soon as they change (data-submit-on-change); without script,
// the form's <noscript> button does it. Here, not inline: the pages' policy refuses inline handlers.
for (const field of document.querySelectorAll("[data-submit-on-change]")) {
  field.addEventListener("change", () => field.form.submit());
}

// A schedule's next runs, shown again as one types (data-cron-preview names the element they go in).
for (const field of document.querySelectorAll("[data-cron-preview]")) {
  const shown = document.getElementById(field.dataset.cronPreview);
  let timer = null;
  field.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const cron = field.value.trim();
      if (!cron) { shown.textContent = ""; return; }
      const reply = await fetch(`${field.dataset.previewUrl}?cron=${encodeURIComponent(cron)}`,
                                {credentials: "same-origin", headers: {Accept: "application/json"}});
      const doc = await reply.json();
      if (field.value.trim() !== cron) return;  // typed on meanwhile
      shown.replaceChildren();
      if (!reply.ok) {
        const error = document.createElement("span");
        error.className = "error";
        error.textContent = doc.error;
        shown.append(error);
        return;
      }
      shown.append("Next: ");
      doc.next.forEach((run, i) => {
        const t = document.createElement("time");
        t.dateTime = run.exact;
        t.textContent = run.local;
        shown.append(t, i < doc.next.length - 1 ? ", " : "");
      });
    }, 250);
  });
}
