// The dashboard's charts (uPlot, served from /static/vendor): pool bytes, each source's size and the
// dedup ratio over 7, 30 or 365 days, from /api/v1/usage. Times are local; sizes in binary units.
const box = document.getElementById("charts");
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
const COLOURS = ["#23303a", "#2271b1", "#00a32a", "#dba617", "#d63638", "#8c5fc1", "#3c8c93", "#b26200"];

function size(n) {
  if (n === null || n === undefined) return "–";
  let i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + UNITS[i];
}

function chart(element, data, names, format, days) {
  element.replaceChildren();
  const width = Math.min(element.parentElement.clientWidth || 640, 900);
  const series = [{}, ...names.map((name, i) => ({
    label: name, stroke: COLOURS[i % COLOURS.length], width: 2, points: { show: data[0].length < 3 },
    value: (u, v) => format(v),
  }))];
  const options = {
    width, height: 220, series,
    // the whole window, from `days` ago to now, however few samples there are yet
    scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - days * 86400, now]; } } },
    axes: [{}, { values: (u, ticks) => ticks.map(format), size: 80 }],
  };
  return new uPlot(options, data, element);
}

async function draw(days) {
  const reply = await fetch(box.dataset.usage + "?days=" + days, { credentials: "same-origin" });
  const doc = await reply.json();
  const note = document.getElementById("chart-note");
  note.textContent = doc.t.length < 2
    ? "Not enough history yet: " + doc.t.length + " sample so far, one an hour; the charts fill in from here."
    : "";
  chart(document.getElementById("chart-pool"), [doc.t, doc.stored, doc.logical],
        ["stored in the pool", "held by snapshots"], size, days);
  const names = Object.keys(doc.sources);
  chart(document.getElementById("chart-sources"), [doc.t, ...names.map((n) => doc.sources[n])], names, size, days);
  chart(document.getElementById("chart-ratio"), [doc.t, doc.ratio], ["snapshot bytes per stored byte"],
        (v) => (v === null || v === undefined ? "–" : v.toFixed(2) + "×"), days);
  for (const button of box.querySelectorAll("button.range")) {
    button.setAttribute("aria-pressed", button.dataset.days === String(days) ? "true" : "false");
  }
}

if (box && window.uPlot) {
  for (const button of box.querySelectorAll("button.range")) {
    button.addEventListener("click", () => draw(Number(button.dataset.days)));
  }
  draw(7);
}
