// promptcache dashboard: reads GET /stats as soon as it opens and draws it as SVG. A cache without
// keys answers at once; one with keys answers 401, and only then does the page ask for a key (kept
// in sessionStorage, sent as an Authorization header, never in a URL; a stored key is used at
// once). No dependencies; every text from the API goes in through textContent, never as markup.
"use strict";

(function () {
  const KEY = "promptcache.key";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function headers() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function setStatus(text, error) {
    const status = $("status");
    status.textContent = text;
    status.className = error ? "error" : "";
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers(), cache: "no-store", credentials: "omit" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      const error = new Error(response.status + ": " + message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ------------------------------------------------------------ formatting
  const integer = (n) => (n === null || n === undefined ? "–" : String(Math.round(n)));
  const percent = (r) => (100 * r).toFixed(1) + "%";
  const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
  function age(seconds) {
    if (seconds === undefined) return "–";
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / 86400) + " d";
  }
  function clock(t, step) {
    const d = new Date(t * 1000);
    const hm = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
    return step >= 3600 ? d.getMonth() + 1 + "/" + d.getDate() + " " + hm : hm;
  }

  const FORMAT = {
    requests: integer,
    hit_rate: percent,
    "hits.exact": integer,
    "hits.semantic": integer,
    misses: integer,
    bypasses: integer,
    tokens_saved: integer,
    cost_saved_usd: (v) => v.toFixed(4),
    "mean_latency_ms.hit": ms,
    "mean_latency_ms.miss": ms,
    entries: (v) => (v === null || v === undefined ? "–" : integer(v)),
  };

  function pick(report, path) {
    return path.split(".").reduce((v, k) => (v === null || v === undefined ? v : v[k]), report);
  }

  // ------------------------------------------------------------ drawing
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }

  function frame(container) {
    container.replaceChildren();
    const root = svg("svg", { viewBox: "0 0 800 180", preserveAspectRatio: "none" }, container);
    svg("line", { x1: 40, y1: 160, x2: 790, y2: 160, class: "axis" }, root);
    svg("line", { x1: 40, y1: 10, x2: 40, y2: 160, class: "axis" }, root);
    return root;
  }

  function empty(container, text) {
    container.replaceChildren();
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    container.appendChild(p);
  }

  function label(root, x, y, text, anchor) {
    const t = svg("text", { x: x, y: y, "text-anchor": anchor || "middle" }, root);
    t.textContent = text;
  }

  // every bucket from the series' start to now: the listed ones, and empty ones between
  function timeline(series) {
    const byTime = new Map(series.points.map((p) => [p.t, p]));
    const now = Math.floor(Date.now() / 1000);
    const slots = [];
    for (let t = series.since; t <= now && slots.length < 800; t += series.step_s) {
      slots.push({ t: t, point: byTime.get(t) || null });
    }
    return slots;
  }

  function xLabels(root, slots, step, slot) {
    const every = Math.max(1, Math.ceil(slots.length / 8));
    slots.forEach((s, i) => {
      if (i % every === 0) label(root, 40 + slot * (i + 0.5), 174, clock(s.t, step));
    });
  }

  // stacked bars: one per bucket, a part per key
  function bars(container, series, keys, value, classes, unit) {
    if (!series.points.length) return empty(container, "no requests in this period");
    const root = frame(container);
    const slots = timeline(series), step = series.step_s;
    const points = series.points;
    const top = Math.max(1, ...points.map((p) => keys.reduce((s, k) => s + value(p, k), 0)));
    const slot = 750 / slots.length;
    slots.forEach((s, i) => {
      const p = s.point;
      if (!p) return;
      let y = 160;
      keys.forEach((k, j) => {
        const h = (150 * value(p, k)) / top;
        if (h > 0) {
          const rect = svg("rect", { x: 40 + slot * i + slot * 0.1, y: y - h, width: Math.max(1, slot * 0.8), height: h, class: classes[j] }, root);
          const title = svg("title", {}, rect);
          title.textContent = clock(p.t, step) + " " + k + ": " + value(p, k) + (unit || "");
          y -= h;
        }
      });
    });
    label(root, 36, 16, String(top), "end");
    xLabels(root, slots, step, slot);
  }

  function hitRateChart(container, series) {
    if (!series.points.length) return empty(container, "no requests in this period");
    const root = frame(container);
    const slots = timeline(series), step = series.step_s;
    const slot = 750 / slots.length;
    const points = [], xy = [];
    slots.forEach((s, i) => {
      if (s.point) {
        points.push(s.point);
        xy.push([40 + slot * (i + 0.5), 160 - 150 * s.point.hit_rate]);
      }
    });
    svg("polyline", { points: xy.map((c) => c.join(",")).join(" "), class: "line" }, root);
    xy.forEach((c, i) => {
      const dot = svg("circle", { cx: c[0], cy: c[1], r: 3, class: "dot" }, root);
      svg("title", {}, dot).textContent = clock(points[i].t, step) + ": " + percent(points[i].hit_rate) + " of " + points[i].requests;
    });
    label(root, 36, 14, "100%", "end");
    label(root, 36, 160, "0%", "end");
    xLabels(root, slots, step, slot);
  }

  function latencyChart(container, histograms) {
    const hit = histograms.hit, miss = histograms.miss;
    if (!hit.count && !miss.count) return empty(container, "no answers yet");
    const root = frame(container);
    const n = hit.counts.length;
    const top = Math.max(1, ...hit.counts, ...miss.counts);
    const slot = 750 / n;
    for (let i = 0; i < n; i++) {
      [[hit, "hit", 0], [miss, "miss", 1]].forEach(([h, cls, side]) => {
        const height = (150 * h.counts[i]) / top;
        if (height > 0) {
          const rect = svg("rect", { x: 40 + slot * i + slot * (0.1 + 0.4 * side), y: 160 - height, width: slot * 0.38, height: height, class: cls }, root);
          svg("title", {}, rect).textContent = cls + " ≤ " + h.le[i] + " ms: " + h.counts[i];
        }
      });
      label(root, 40 + slot * (i + 0.5), 174, "≤" + hit.le[i]);
    }
    label(root, 36, 16, String(top), "end");
  }

  // ------------------------------------------------------------ tables
  function row(tbody, cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    return tr;
  }

  function table(id, rows, none) {
    const tbody = $(id).querySelector("tbody");
    tbody.replaceChildren();
    if (!rows.length) {
      const tr = row(tbody, [none]);
      tr.className = "empty";
      return;
    }
    rows.forEach((cells) => row(tbody, cells));
  }

  function entryLink(entry) {
    const a = document.createElement("a");
    a.href = "entries/" + encodeURIComponent(entry.id);
    a.textContent = entry.id.slice(0, 8) + "…";
    a.dataset.entry = entry.id;
    a.addEventListener("click", async (event) => {
      event.preventDefault();
      const view = $("entry-view");
      view.hidden = false;
      try {
        view.textContent = JSON.stringify(await getJSON(a.getAttribute("href")), null, 2);
      } catch (error) {
        view.textContent = "GET /entries/" + entry.id + ": " + error.message;
      }
    });
    return a;
  }

  // the three kinds always (0 when none came), then any other the stats name; share of the total
  const KINDS = ["text", "tools", "structured"];
  function kindRows(kinds) {
    const names = KINDS.concat(Object.keys(kinds).filter((k) => !KINDS.includes(k)));
    const total = names.reduce((s, k) => s + (kinds[k] || 0), 0);
    if (!total) return [];
    return names.map((k) => [k, integer(kinds[k] || 0), percent((kinds[k] || 0) / total)]);
  }

  // ------------------------------------------------------------ the page
  function render(report) {
    document.querySelectorAll("[data-stat]").forEach((el) => {
      const name = el.dataset.stat;
      const value = pick(report, name);
      el.textContent = FORMAT[name](value);
      el.dataset.value = value === null || value === undefined ? "" : String(value);
    });
    const series = report.series;
    hitRateChart($("hit-rate-chart"), series);
    bars($("tier-chart"), series, ["exact", "semantic", "miss", "bypass"],
      (p, k) => (k === "exact" ? p.hits.exact : k === "semantic" ? p.hits.semantic : k === "miss" ? p.misses : p.bypasses),
      ["exact", "semantic", "miss", "bypass"]);
    bars($("tokens-chart"), series, ["tokens saved"], (p) => p.tokens_saved, ["tokens"]);
    latencyChart($("latency-chart"), report.latency_ms);
    table("parts", ["lookup", "embed", "verify", "model"].map((part) => {
      const h = report.latency_ms[part];
      return [part, integer(h.count), h.count ? (h.sum / h.count).toFixed(2) : "–"];
    }), "no answers yet");
    table("kinds", kindRows(report.kinds || {}), "no requests yet");
    table("bypass-reasons", Object.entries(report.bypass_reasons || {}).map(([r, n]) => [r, integer(n)]),
      "no bypass");
    table("rejections", Object.entries(report.rejections).map(([g, n]) => [g, integer(n)]),
      "no candidate rejected");
    table("top", report.top_entries.map((e) => [
      e.prompt === undefined ? "(entry gone)" : e.prompt, integer(e.hits), age(e.age_s), e.model || "–", entryLink(e),
    ]), "no hits yet");
    document.querySelectorAll("#top td:first-child").forEach((td) => td.classList.add("prompt"));
    table("models", Object.entries(report.models).map(([m, s]) => [
      m, integer(s.requests), percent(s.hit_rate), integer(s.hits.total), integer(s.misses),
      integer(s.tokens_saved), ms(s.mean_latency_ms.hit), ms(s.mean_latency_ms.miss),
    ]), "no model answered yet");
  }

  function tenantPicker(report) {
    const box = $("tenant-box");
    const select = $("tenant");
    if (!report.tenants) {
      if (!select.value) box.hidden = true;
      return;
    }
    const chosen = select.value;
    const names = Object.keys(report.tenants);
    select.replaceChildren(new Option("all tenants", ""), ...names.map((t) => new Option(t, t)));
    select.value = names.includes(chosen) ? chosen : "";
    box.hidden = false;
  }

  async function load() {
    const since = Math.floor(Date.now() / 1000) - Number($("since").value);
    const tenant = $("tenant").value;
    const query = "?since=" + since + (tenant ? "&tenant=" + encodeURIComponent(tenant) : "");
    const view = $("entry-view");
    view.hidden = true;
    view.textContent = "";
    try {
      setStatus("Loading…");
      const report = await getJSON("stats" + query);
      if (!tenant) tenantPicker(report);
      render(report);
      $("board").hidden = false;
      if (sessionStorage.getItem(KEY)) $("key-form").hidden = false;
      const who = report.tenant !== undefined ? "tenant " + report.tenant : report.tenants ? "every tenant (admin)" : "this cache";
      setStatus("Showing " + (tenant ? "tenant " + tenant : who) + ", updated " + new Date().toLocaleTimeString());
      document.body.dataset.loaded = String(Date.now());
    } catch (error) {
      $("board").hidden = true;
      const refused = error.status === 401 || error.status === 403;
      if (refused) $("key-form").hidden = false;
      if (error.status === 401 && !sessionStorage.getItem(KEY)) {
        // this cache has keys and none is stored yet: ask for one, it is not an error
        setStatus("This cache needs an API key: paste a tenant's key or the admin key above.");
        $("key").focus();
        document.body.dataset.loaded = "key";
        return;
      }
      setStatus(error.message + (refused ? " (paste a valid key above)" : ""), true);
      document.body.dataset.loaded = "error";
    }
  }

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (key) sessionStorage.setItem(KEY, key);
      $("key").value = "";
      $("tenant").value = "";
      load();
    });
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      load();
    });
    $("tenant").addEventListener("change", load);
    $("since").addEventListener("change", load);
    $("refresh").addEventListener("click", load);
    load();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
