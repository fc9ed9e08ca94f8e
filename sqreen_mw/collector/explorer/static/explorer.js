/* sqreen_mw Event Explorer: progressive enhancement only (every page works without it).
   - <time datetime> shown in the viewer's time zone, UTC on hover;
   - the overview chart (uPlot), stacked or as lines;
   - keyboard: "/" focuses the filters, j/k move through table rows, Enter opens the row's first link.
   Event data reaches the page only as text (textContent, or uPlot's labels, which use textContent). */
(function () {
  "use strict";

  function localTimes() {
    var fmt = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit" });
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) { return; }
      el.textContent = fmt.format(d);
      el.title = el.getAttribute("datetime").replace("T", " ") + " UTC";
    });
  }

  var PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#953800",
    "#57606a", "#116329", "#6639ba", "#a40e26", "#8c959f"];

  function chart() {
    var el = document.getElementById("chart");
    if (!el || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(el.getAttribute("data-chart"));
    var stacked = el.getAttribute("data-stacked") === "true";
    var rows = [data.times];
    var series = [{}];
    var acc = data.times.map(function () { return 0; });
    data.series.forEach(function (s, i) {
      var values = s.data;
      if (stacked) {
        acc = acc.map(function (v, j) { return v + values[j]; });
        values = acc.slice();
      }
      rows.push(values);
      series.push({ label: s.name, stroke: PALETTE[i % PALETTE.length], width: 2,
        fill: stacked ? PALETTE[i % PALETTE.length] + "33" : undefined,
        value: (function (raw) { return function (u, v, si, idx) { return idx == null ? "--" : String(raw[idx]); }; })(s.data) });
    });
    if (stacked) {  // later series are drawn under earlier ones: reverse so each band shows
      rows = [rows[0]].concat(rows.slice(1).reverse());
      series = [series[0]].concat(series.slice(1).reverse());
    }
    var opts = { width: Math.max(el.clientWidth, 280), height: 320, series: series,
      scales: { x: { time: true } }, axes: [{}, { label: "events" }], legend: { live: true } };
    var plot = new uPlot(opts, rows, el);
    el.setAttribute("data-drawn", String(data.series.length));
    window.addEventListener("resize", function () { plot.setSize({ width: Math.max(el.clientWidth, 280), height: 320 }); });
  }

  function keyboard() {
    var rows = [];
    var current = -1;
    document.querySelectorAll("[data-rows]").forEach(function (t) {
      t.querySelectorAll("tbody tr, li").forEach(function (r) { rows.push(r); });
    });
    function move(step) {
      if (!rows.length) { return; }
      if (current >= 0) { rows[current].classList.remove("current"); }
      current = Math.min(rows.length - 1, Math.max(0, current + step));
      rows[current].classList.add("current");
      var link = rows[current].querySelector("a");
      if (link) { link.focus(); }
    }
    document.addEventListener("keydown", function (ev) {
      var tag = (ev.target && ev.target.tagName) || "";
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      if (ev.key === "/") {
        var f = document.querySelector("[data-focus=filters]");
        if (f) { ev.preventDefault(); f.focus(); }
      } else if (ev.key === "j") { move(1); } else if (ev.key === "k") { move(-1); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { localTimes(); chart(); keyboard(); });
}());
