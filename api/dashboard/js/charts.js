// Charts drawn with the vendored Chart.js (window.Chart): learning curves and grouped bars.

import { PALETTE, toNumber } from "./format.js";

const Chart = window.Chart;

// Non-finite points are gaps in the line; the caller says where a series diverged.
function points(series) {
  return series.steps.map((step, i) => {
    const y = toNumber(series.values[i]);
    return { x: step, y: Number.isFinite(y) ? y : null };
  });
}

// `marker`, if given ({ x, label }), draws a labelled vertical line at step x (where a run
// diverged).
export function lineChart(canvas, seriesList, { yLabel = "", logY = false, marker = null } = {}) {
  return new Chart(canvas, {
    type: "line",
    data: {
      datasets: seriesList.map((series, i) => ({
        label: series.key,
        data: points(series),
        borderColor: PALETTE[i % PALETTE.length],
        backgroundColor: PALETTE[i % PALETTE.length],
        pointRadius: series.steps.length > 40 ? 0 : 2,
        borderWidth: 1.6,
        spanGaps: false,
      })),
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "step" }, suggestedMax: marker?.x },
        y: { type: logY ? "logarithmic" : "linear", title: { display: !!yLabel, text: yLabel } },
      },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } }, stepMarker: marker },
    },
    plugins: marker ? [stepMarker] : [],
  });
}

// Red, apart from every series colour of the palette.
export const DIVERGED_COLOUR = "#fa5252";

// A dashed vertical line across the plot at the marker's step, labelled at the top.
const stepMarker = {
  id: "stepMarker",
  afterDatasetsDraw(chart, _args, marker) {
    if (!marker || !Number.isFinite(marker.x)) return;
    const { ctx, chartArea, scales } = chart;
    const x = scales.x.getPixelForValue(marker.x);
    ctx.save();
    ctx.strokeStyle = DIVERGED_COLOUR;
    ctx.fillStyle = DIVERGED_COLOUR;
    ctx.lineWidth = 3;
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    ctx.moveTo(x, chartArea.top);
    ctx.lineTo(x, chartArea.bottom);
    ctx.stroke();
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.textAlign = x > chartArea.left + (chartArea.right - chartArea.left) / 2 ? "right" : "left";
    ctx.fillText(marker.label, x + (ctx.textAlign === "right" ? -6 : 6), chartArea.top + 14);
    ctx.restore();
  },
};

// Grouped bars (one dataset per group, one bar per category) with whiskers of ± std and,
// when given, a dashed reference mark per category (the Three-Cell majority rate).
export function barChart(canvas, categories, groups, reference = null) {
  const datasets = groups.map((group, i) => ({
    type: "bar",
    label: group.label,
    data: group.means,
    errors: group.stds,
    backgroundColor: PALETTE[i % PALETTE.length] + "cc",
    borderColor: PALETTE[i % PALETTE.length],
    borderWidth: 1,
  }));
  if (reference) {
    // Listed in the legend; the marks themselves are drawn across each category by the
    // referenceMarks plugin, so they read as a level rather than as points.
    datasets.push({
      type: "line",
      label: reference.label,
      data: reference.values,
      reference: true,
      showLine: false,
      pointRadius: 0,
      borderColor: "#212529",
      backgroundColor: "#212529",
    });
  }
  return new Chart(canvas, {
    data: { labels: categories, datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { y: { title: { display: true, text: "accuracy (%)" } } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
    plugins: [whiskers, referenceMarks],
  });
}

// Draws each bar's ± std as a whisker; a missing or non-finite std draws nothing.
const whiskers = {
  id: "whiskers",
  afterDatasetsDraw(chart) {
    const { ctx, scales } = chart;
    chart.data.datasets.forEach((dataset, index) => {
      if (!dataset.errors) return;
      const meta = chart.getDatasetMeta(index);
      if (meta.hidden) return;
      meta.data.forEach((bar, j) => {
        const mean = dataset.data[j];
        const std = dataset.errors[j];
        if (!Number.isFinite(mean) || !Number.isFinite(std)) return;
        const top = scales.y.getPixelForValue(mean + std);
        const bottom = scales.y.getPixelForValue(mean - std);
        ctx.save();
        ctx.strokeStyle = "#343a40";
        ctx.lineWidth = 1.2;
        ctx.beginPath();
        ctx.moveTo(bar.x, top);
        ctx.lineTo(bar.x, bottom);
        ctx.moveTo(bar.x - 4, top);
        ctx.lineTo(bar.x + 4, top);
        ctx.moveTo(bar.x - 4, bottom);
        ctx.lineTo(bar.x + 4, bottom);
        ctx.stroke();
        ctx.restore();
      });
    });
  },
};

// A dashed level across each category's band at the reference dataset's value.
const referenceMarks = {
  id: "referenceMarks",
  afterDatasetsDraw(chart) {
    const { ctx, scales } = chart;
    const index = chart.data.datasets.findIndex((d) => d.reference);
    if (index < 0 || !chart.isDatasetVisible(index)) return;
    const values = chart.data.datasets[index].data;
    const half = (scales.x.width / chart.data.labels.length) * 0.46;
    ctx.save();
    ctx.strokeStyle = "#212529";
    ctx.lineWidth = 2.5;
    ctx.setLineDash([8, 5]);
    values.forEach((value, j) => {
      if (!Number.isFinite(value)) return;
      const x = scales.x.getPixelForValue(j);
      const y = scales.y.getPixelForValue(value);
      ctx.beginPath();
      ctx.moveTo(x - half, y);
      ctx.lineTo(x + half, y);
      ctx.stroke();
    });
    ctx.restore();
  },
};
