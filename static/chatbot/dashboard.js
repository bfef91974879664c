// Admin dashboard charts: read /admin/dashboard/data.json and draw them with Chart.js (from npm).
(function () {
  "use strict";

  const palette = ["#417690", "#e6a23c", "#79aec8", "#8e5ea2", "#3cba9f", "#c45850", "#999999"];

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    config.options = Object.assign(
      { responsive: true, maintainAspectRatio: false, animation: false },
      config.options || {}
    );
    new Chart(canvas, config); // eslint-disable-line no-new
    canvas.dataset.drawn = "1";
  }

  function costChart(data) {
    const labels = data.daily.map((d) => d.date);
    const datasets = [
      { type: "bar", label: "cost (USD)", data: data.daily.map((d) => d.cost), backgroundColor: palette[0] },
      {
        type: "line",
        label: `always ${data.savings_by_source.baseline_tier || "the baseline tier"} (in part estimated)`,
        data: data.daily.map((d) => d.cost_if_largest),
        borderColor: palette[1], borderDash: [4, 3], pointRadius: 0, fill: false,
      },
    ];
    if (data.budget.daily_limit) {
      datasets.push({
        type: "line", label: "daily budget", data: labels.map(() => data.budget.daily_limit),
        borderColor: palette[5], pointRadius: 0, fill: false,
      });
    }
    draw("chart-cost", {
      data: { labels, datasets },
      options: {
        plugins: { subtitle: { display: true, text: `month-end projection at this pace: $${data.month.projected.toFixed(4)}` } },
        scales: { y: { beginAtZero: true } },
      },
    });
  }

  function tierChart(data) {
    const labels = data.daily.map((d) => d.date);
    const tiers = data.tiers.filter((t) => data.daily.some((d) => d.tiers[t]));
    const datasets = tiers.map((tier, i) => ({
      label: tier, data: data.daily.map((d) => d.tiers[tier] || 0), backgroundColor: palette[i % palette.length],
    }));
    datasets.push({ label: "cache", data: data.daily.map((d) => d.cache_hits), backgroundColor: palette[6] });
    draw("chart-tiers", {
      type: "bar",
      data: { labels, datasets },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });
  }

  function cacheChart(data) {
    draw("chart-cache", {
      type: "line",
      data: {
        labels: data.daily.map((d) => d.date),
        datasets: [{
          label: "cache hit rate (%)",
          data: data.daily.map((d) => (d.questions ? (100 * d.cache_hits) / d.questions : null)),
          borderColor: palette[4], backgroundColor: palette[4], spanGaps: true,
        }],
      },
      options: { scales: { y: { beginAtZero: true, max: 100 } } },
    });
  }

  function latencyChart(data) {
    const seconds = (v) => (v == null ? null : v / 1000);
    draw("chart-latency", {
      type: "line",
      data: {
        labels: data.daily.map((d) => d.date),
        datasets: [
          { label: "first token p50 (s)", data: data.daily.map((d) => seconds(d.ttft_p50_ms)), borderColor: palette[0], spanGaps: true },
          { label: "whole answer p50 (s)", data: data.daily.map((d) => seconds(d.total_p50_ms)), borderColor: palette[2], spanGaps: true },
          { label: "whole answer p95 (s)", data: data.daily.map((d) => seconds(d.total_p95_ms)), borderColor: palette[5], spanGaps: true },
        ],
      },
      options: { scales: { y: { beginAtZero: true } } },
    });
  }

  async function main() {
    const root = document.getElementById("dashboard");
    if (!root || typeof Chart === "undefined") return;
    const response = await fetch(root.dataset.jsonUrl, { credentials: "same-origin" });
    if (!response.ok) {
      root.insertAdjacentHTML("afterbegin", `<p class="errornote">Could not load figures (${response.status}).</p>`);
      return;
    }
    const data = await response.json();
    costChart(data);
    tierChart(data);
    cacheChart(data);
    latencyChart(data);
    root.dataset.chartsReady = "1";
  }

  document.addEventListener("DOMContentLoaded", main);
})();

// Tuning page: the cost-versus-F1 curve; clicking a point fills the apply form.
(function () {
  "use strict";

  function main() {
    const source = document.getElementById("tuning-data");
    const canvas = document.getElementById("chart-curve");
    if (!source || !canvas || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    if (!data) return;
    const objective = data.objective || "f1";
    const xy = (p) => ({ x: p.mean_cost, y: p[objective], policy: p });
    const yTitle = {
      f1: "F1 (abstention right when unanswerable)",
      answerable_f1: "F1 on answerable questions",
      balanced: "balanced: (answerable F1 + abstention on unanswerable) / 2",
    }[objective];
    const datasets = [
      { label: "frontier", data: data.frontier.map(xy), showLine: true, borderColor: "#417690", backgroundColor: "#417690", pointRadius: 4 },
      { label: "each tier alone", data: data.singles.map(xy), pointStyle: "triangle", pointRadius: 8, backgroundColor: "#e6a23c", borderColor: "#e6a23c" },
    ];
    if (data.current) datasets.push({ label: "current setting", data: [xy(data.current)], pointStyle: "star", pointRadius: 11, borderColor: "#c45850", borderWidth: 2, backgroundColor: "#c45850" });
    if (data.chosen) datasets.push({ label: "optimiser's choice", data: [xy(data.chosen)], pointStyle: "rectRot", pointRadius: 10, backgroundColor: "#3cba9f", borderColor: "#3cba9f" });
    const chart = new Chart(canvas, {
      type: "scatter",
      data: { datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: { x: { title: { display: true, text: "mean cost per question (USD)" } }, y: { title: { display: true, text: yTitle } } },
        plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.raw.policy.label}: F1 ${ctx.raw.y.toFixed(3)}, $${ctx.raw.x.toExponential(2)}` } } },
        onClick: (event) => {
          const hits = chart.getElementsAtEventForMode(event, "nearest", { intersect: true }, true);
          if (!hits.length) return;
          // Overlapping points: the marked ones (tier alone, current, chosen) sit on top.
          const hit = hits.reduce((a, b) => (b.datasetIndex > a.datasetIndex ? b : a));
          const policy = chart.data.datasets[hit.datasetIndex].data[hit.index].policy;
          document.getElementById("apply-tiers").value = policy.tiers.join(",");
          document.getElementById("apply-thresholds").value = policy.thresholds.join(",");
          document.getElementById("picked-label").textContent = `picked: ${policy.label} (F1 ${policy[objective].toFixed(3)})`;
        },
      },
    });
    window.tuningChart = chart; // lets a browser test click a known point
    requestAnimationFrame(() => { canvas.dataset.drawn = "1"; });
  }

  document.addEventListener("DOMContentLoaded", main);
})();
