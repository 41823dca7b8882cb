// Live job progress by server-sent events, for every element with data-events
// (a job page, the rows of a job table). Pages work without it.
for (const box of document.querySelectorAll("[data-events]")) {
  const events = new EventSource(box.dataset.events);
  const part = (name) => box.querySelector("." + name);
  events.onmessage = (message) => {
    const job = JSON.parse(message.data);
    const ended = job.state !== "queued" && job.state !== "running";
    if (ended) {
      events.close();
      if (box.dataset.reload) { window.location.reload(); return; }  // the page has the log and the times
    }
    part("job-state").textContent = job.state;
    part("job-state").className = "job-state state-" + job.state;
    if (part("job-text")) part("job-text").textContent = job.summary;
    const bar = part("job-bar");
    if (bar) {
      if (job.percent === null || ended) bar.removeAttribute("value"); else bar.value = job.percent;
      bar.hidden = ended;
    }
    if (part("job-percent")) part("job-percent").textContent = job.percent === null ? "" : Math.round(job.percent) + " %";
  };
}
