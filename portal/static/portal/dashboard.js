/* The dashboard's charts: drawn from the numbers the page already shows in its tables
   (json_script "dashboard-data"); without JavaScript, or without Chart.js, the tables remain. */
(function () {
  "use strict";

  var STATE_COLORS = {
    failing: "#c0392b",
    misconfigured: "#e67e22",
    stale: "#d4ac0d",
    behind: "#5dade2",
    up_to_date: "#27ae60",
    silent: "#7f8c8d",
    new: "#bdc3c7"
  };
  var PALETTE = ["#2d6cdf", "#27ae60", "#e67e22", "#8e44ad", "#c0392b", "#16a085", "#d4ac0d", "#34495e", "#e84393", "#7f8c8d"];

  function color(state, index) {
    return STATE_COLORS[state] || PALETTE[index % PALETTE.length];
  }

  function canvas(id) {
    var element = document.getElementById(id);
    if (element) {
      element.parentElement.classList.add("has-chart");
    }
    return element;
  }

  function draw() {
    var source = document.getElementById("dashboard-data");
    if (!source || typeof window.Chart === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var Chart = window.Chart;
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;

    var compliance = canvas("chart-compliance");
    if (compliance) {
      new Chart(compliance, {
        type: "doughnut",
        data: {
          labels: data.states.map(function (s) { return s.label; }),
          datasets: [{
            data: data.overall,
            backgroundColor: data.states.map(function (s, i) { return color(s.value, i); })
          }]
        },
        // The legend below the ring, wrapping over as many lines as it needs: on the right it was cut when the
        // card is narrow. The box has a fixed height (portal.css, .chart-box.donut) and the chart fills it.
        options: {
          responsive: true,
          maintainAspectRatio: false,
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12, padding: 8 } } }
        }
      });
    }

    var versions = canvas("chart-versions");
    if (versions) {
      new Chart(versions, {
        type: "bar",
        data: {
          labels: data.versions.labels,
          datasets: data.versions.series.map(function (series, i) {
            return { label: series.label, data: series.data, backgroundColor: PALETTE[i % PALETTE.length] };
          })
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
          indexAxis: "y",
          scales: { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }, y: { stacked: true } }
        }
      });
    }

    var trend = canvas("chart-trend");
    if (trend) {
      new Chart(trend, {
        type: "line",
        data: {
          labels: data.trend.labels,
          datasets: data.states.map(function (s, i) {
            var c = color(s.value, i);
            return { label: s.label, data: data.trend.series[s.value], borderColor: c, backgroundColor: c, fill: true, pointRadius: 2 };
          })
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
          interaction: { mode: "index", intersect: false },
          scales: { y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } }
        }
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
