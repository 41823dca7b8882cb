// Live job progress by server-sent events, for every element with data-events
// (a job page, the rows of a job table). Pages work without it.
for (const box of document.querySelectorAll("[data-events]")) {
  const events = new EventSource(box.dataset.events);
  const part = (name) => box.querySelector("." + name);
  events.onmessage = (message) => {
    const job = JSON.parse(message.data);
    part("job-state").textContent = job.state;
    part("job-state").className = "job-state state-" + job.state;
    const progress = job.progress ? JSON.stringify(job.progress, null, box.dataset.indent ? 2 : 0) : "";
    part("job-progress").textContent = job.error || progress;
    if (job.state !== "queued" && job.state !== "running") events.close();
  };
}
