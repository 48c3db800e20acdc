// The scenario page's trend charts, drawn with the vendored uPlot (static/vendor/, MIT): recovery time per run and
// pass rate per day. The data comes with the page (data-chart), so no request follows.
"use strict";

(() => {
  const holder = document.getElementById("charts");
  if (!holder || !window.uPlot) {
    return;
  }
  const data = JSON.parse(holder.dataset.chart);
  const charts = {};

  function width(element) {
    return Math.max(200, Math.floor(element.clientWidth || holder.clientWidth));
  }

  function draw(key, element, label, stroke, points) {
    if (data[key][0].length === 0) {
      element.textContent = "No stored runs to draw.";
      element.classList.add("muted");
      return;
    }
    const options = {
      width: width(element),
      height: 220,
      series: [
        {},
        { label, stroke, width: 2, points: { show: points, size: 5, fill: stroke } },
      ],
      axes: [{}, { size: 50 }],
      legend: { show: true },
    };
    charts[key] = new window.uPlot(options, data[key], element);
    element.dataset.points = String(data[key][0].length);
  }

  draw("recovery", document.getElementById("chart-recovery"), "recovery (s)", "#8250df", true);
  draw("passRate", document.getElementById("chart-pass-rate"), "pass rate (%)", "#1a7f37", true);
  // Tests and the curious read the drawn charts here.
  window.coordinatorCharts = charts;

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      for (const [key, chart] of Object.entries(charts)) {
        const element = document.getElementById(key === "recovery" ? "chart-recovery" : "chart-pass-rate");
        chart.setSize({ width: width(element), height: 220 });
      }
    }, 100);
  });
})();
