// Conveyor dashboard: live regions, small SVG charts, bulk selection. No framework, no build step.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var refreshMs = parseInt(document.body.dataset.refresh || "3000", 10);
  var indicator = document.getElementById("live-indicator");
  var busy = false;

  function setLive(state, text) {
    if (!indicator) return;
    indicator.classList.remove("offline", "paused");
    if (state) indicator.classList.add(state);
    indicator.querySelector(".label").textContent = text;
  }

  // -- live regions: fetch this page again and swap every [data-live] element by id -----
  function editing() {
    var el = document.activeElement;
    return el && el.closest("[data-live]") && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName) && el.type !== "checkbox";
  }

  function refresh() {
    if (busy || document.hidden || editing()) return;
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Conveyor-Live": "1" } })
      .then(function (response) {
        if (response.redirected && /\/login/.test(response.url)) { window.location.reload(); return null; }
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        swap(new DOMParser().parseFromString(html, "text/html"));
        setLive(null, "Live");
      })
      .catch(function () { setLive("offline", "Offline"); })
      .then(function () { busy = false; });
  }

  function swap(doc) {
    var checked = {}, open = {};
    document.querySelectorAll("[data-live] input[type=checkbox][id]").forEach(function (box) { checked[box.id] = box.checked; });
    document.querySelectorAll("[data-live] details[id]").forEach(function (d) { open[d.id] = d.open; });
    document.querySelectorAll("[data-live][id]").forEach(function (old) {
      var fresh = doc.getElementById(old.id);
      if (!fresh) return;
      if (fresh.outerHTML === old.outerHTML) return;
      var incoming = document.importNode(fresh, true);
      old.querySelectorAll("[data-counter]").forEach(function (counter) {
        var next = incoming.querySelector('[data-counter="' + counter.dataset.counter + '"]');
        if (next && next.textContent !== counter.textContent) {
          next.classList.add("changed");
          setTimeout(function () { next.classList.remove("changed"); }, 900);
        }
      });
      old.replaceWith(incoming);
    });
    Object.keys(checked).forEach(function (id) { var box = document.getElementById(id); if (box) box.checked = checked[id]; });
    Object.keys(open).forEach(function (id) { var d = document.getElementById(id); if (d) d.open = open[id]; });
    decorate();
  }

  // -- charts ---------------------------------------------------------------------------
  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= value) return steps[i] * power;
    return 10 * power;
  }

  function frame(box, maxValue, leftLabel) {
    box.textContent = "";
    var w = box.clientWidth || 400, h = box.clientHeight || 190, pad = { l: 40, r: 8, t: 8, b: 20 };
    var svg = el("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none" }, box);
    var plotH = h - pad.t - pad.b, plotW = w - pad.l - pad.r;
    for (var i = 0; i <= 4; i++) {
      var y = pad.t + plotH - (plotH * i) / 4;
      el("line", { x1: pad.l, x2: w - pad.r, y1: y, y2: y, class: i ? "grid" : "axis" }, svg);
      var label = el("text", { x: pad.l - 6, y: y + 3, "text-anchor": "end" }, svg);
      label.textContent = formatNumber((maxValue * i) / 4);
    }
    var left = el("text", { x: pad.l, y: h - 4 }, svg); left.textContent = leftLabel;
    var right = el("text", { x: w - pad.r, y: h - 4, "text-anchor": "end" }, svg); right.textContent = "now";
    return { svg: svg, x0: pad.l, y0: pad.t + plotH, w: plotW, h: plotH };
  }

  function formatNumber(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(Math.round(n * 10) / 10);
  }

  function drawThroughput(box, points) {
    var top = niceMax(points.reduce(function (m, p) { return Math.max(m, p[1] + p[2]); }, 0));
    var f = frame(box, top, "-15 min");
    var slot = f.w / Math.max(points.length, 1), bar = Math.max(slot - 1.5, 1);
    points.forEach(function (p, i) {
      var x = f.x0 + i * slot, hc = (p[1] / top) * f.h, hd = (p[2] / top) * f.h;
      var when = new Date(p[0] * 1000).toLocaleTimeString();
      if (p[1]) { var r = el("rect", { x: x, y: f.y0 - hc, width: bar, height: hc, class: "bar-completed" }, f.svg); el("title", {}, r).textContent = when + ": " + p[1] + " completed"; }
      if (p[2]) { var d = el("rect", { x: x, y: f.y0 - hc - hd, width: bar, height: hd, class: "bar-dead" }, f.svg); el("title", {}, d).textContent = when + ": " + p[2] + " dead"; }
    });
  }

  function drawDepth(box, points) {
    if (points.length < 2) {
      box.textContent = "";
      var svg = el("svg", { viewBox: "0 0 400 190" }, box);
      var t = el("text", { x: 200, y: 95, "text-anchor": "middle", class: "empty-chart" }, svg);
      t.textContent = "Collecting samples…";
      return;
    }
    var top = niceMax(points.reduce(function (m, p) { return Math.max(m, p[1], p[2], p[3]); }, 0));
    var t0 = points[0][0], t1 = points[points.length - 1][0], span = Math.max(t1 - t0, 1);
    var mins = Math.round(span / 60);
    var f = frame(box, top, mins >= 1 ? "-" + mins + " min" : "-" + Math.round(span) + " s");
    function path(index) {
      return points.map(function (p, i) {
        var x = f.x0 + ((p[0] - t0) / span) * f.w, y = f.y0 - (p[index] / top) * f.h;
        return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      }).join(" ");
    }
    el("path", { d: path(1) + " L" + (f.x0 + f.w) + " " + f.y0 + " L" + f.x0 + " " + f.y0 + " Z", class: "area-pending" }, f.svg);
    [["scheduled", 3], ["running", 2], ["pending", 1]].forEach(function (s) { el("path", { d: path(s[1]), class: "line line-" + s[0] }, f.svg); });
  }

  function drawCharts() {
    var data = document.getElementById("chart-data");
    if (!data) return;
    var chart = JSON.parse(data.textContent);
    var t = document.getElementById("chart-throughput"), d = document.getElementById("chart-depth");
    if (t) drawThroughput(t, chart.throughput);
    if (d) drawDepth(d, chart.depth);
  }

  // -- small decorations ----------------------------------------------------------------
  function decorate() {
    document.querySelectorAll("[data-width]").forEach(function (seg) { seg.style.width = seg.dataset.width + "%"; });
    countSelected();
    drawCharts();
  }

  function countSelected() {
    document.querySelectorAll("[data-selected-count]").forEach(function (label) {
      var form = label.closest("form");
      var n = form ? form.querySelectorAll("input[name=ids]:checked").length : 0;
      label.textContent = n + " selected";
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("[data-select-all]")) {
      target.closest("form").querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = target.checked; });
    }
    countSelected();
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
    form.querySelectorAll("input[data-utc]").forEach(function (input) {
      if (!input.value) return;
      var hidden = document.createElement("input");
      hidden.type = "hidden"; hidden.name = input.name; hidden.value = input.value.length === 16 ? input.value + ":00Z" : input.value + "Z";
      input.removeAttribute("name");
      form.appendChild(hidden);
    });
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) setLive("paused", "Paused"); else { setLive(null, "Live"); refresh(); }
  });
  window.addEventListener("resize", drawCharts);

  decorate();
  if (refreshMs > 0) setInterval(refresh, refreshMs);
})();
