// The consumer dashboard: polls /dashboard/data and draws it. No library, no other origin.
//
// Rates are differences of two totals over the time between the samples that carried
// them: events in from Kafka's high watermarks (taken at kafka.sampledAt, which repeats
// while a replica answers from its cache), events out from the store's processed counter
// (taken at generatedAt). Anything that came from an event (user ids, reasons) goes into
// the page as text, never as markup.
//
// When the replica answers 401 or 403, the page asks for a credential (a JWT or an API
// key), keeps it in this tab's sessionStorage (gone when the tab closes; never a cookie,
// so no other page can make the browser send it) and sends it as a bearer token.
"use strict";

(function () {
  const WINDOW_SECONDS = 120;
  const RETRY_SECONDS = 2;
  const FETCH_TIMEOUT_MS = 8000;
  const TOKEN_KEY = "dashboard.token";

  const series = {
    in: { samples: [], last: null },
    out: { samples: [], last: null },
  };
  let polls = 0;
  let seenRecent = null;
  let nextPoll = null;

  const $ = (id) => document.getElementById(id);

  function formatCount(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function formatRate(r) {
    if (r === null || r === undefined) return "–";
    if (r === 0) return "0";
    return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }

  function formatBytes(b) {
    if (b === null || b === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = b;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
  }

  function setValue(id, value, text) {
    const el = $(id);
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.textContent = text;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function fillTable(id, rows, emptyText, columns) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(emptyText, "empty");
      td.colSpan = columns;
      tr.append(td);
      body.append(tr);
      return;
    }
    body.append(...rows);
  }

  // One more total: turns it into a rate against the previous total of the same series.
  function observe(name, t, total) {
    const s = series[name];
    if (total === null || total === undefined) return;
    if (s.last !== null && t <= s.last.t) return;
    if (s.last !== null) {
      // A total that went down (a topic recreated, a store reset) restarts the series.
      const rate = Math.max(0, (total - s.last.total) / (t - s.last.t));
      s.samples.push({ t: t, v: rate });
    }
    s.last = { t: t, total: total };
  }

  function prune(now) {
    for (const name of Object.keys(series)) {
      const s = series[name];
      while (s.samples.length && s.samples[0].t < now - WINDOW_SECONDS) s.samples.shift();
    }
  }

  function niceCeiling(v) {
    if (v <= 1) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(v)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * magnitude >= v) return step * magnitude;
    }
    return 10 * magnitude;
  }

  function svgElement(name, attributes, text) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", name);
    for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function drawChart(id, samples, now) {
    const svg = $(id);
    // The viewBox follows the element's size, so text is never stretched.
    const width = Math.max(200, Math.round(svg.clientWidth || 600));
    const height = Math.max(100, Math.round(svg.clientHeight || 180));
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const left = 48;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const peak = samples.reduce((m, p) => Math.max(m, p.v), 0);
    const yMax = niceCeiling(peak);
    const x = (t) => left + ((t - (now - WINDOW_SECONDS)) / WINDOW_SECONDS) * plotW;
    const y = (v) => top + plotH * (1 - v / yMax);

    const parts = [];
    for (const fraction of [0, 0.5, 1]) {
      const v = yMax * fraction;
      parts.push(svgElement("line", { class: "grid-line", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      parts.push(
        svgElement("text", { class: "axis-label", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, formatRate(v)),
      );
    }
    for (const [ago, label] of [[WINDOW_SECONDS, "-" + WINDOW_SECONDS + " s"], [WINDOW_SECONDS / 2, "-" + WINDOW_SECONDS / 2 + " s"], [0, "now"]]) {
      const anchor = ago === 0 ? "end" : ago === WINDOW_SECONDS ? "start" : "middle";
      parts.push(svgElement("text", { class: "axis-label", x: x(now - ago), y: height - 4, "text-anchor": anchor }, label));
    }
    if (samples.length > 0) {
      const points = samples.map((p) => x(p.t).toFixed(1) + "," + y(p.v).toFixed(1));
      const first = x(samples[0].t).toFixed(1);
      const last = x(samples[samples.length - 1].t).toFixed(1);
      const base = y(0).toFixed(1);
      parts.push(svgElement("path", { class: "area", d: "M" + first + "," + base + " L" + points.join(" L") + " L" + last + "," + base + " Z" }));
      parts.push(svgElement("path", { class: "series", d: "M" + points.join(" L") }));
    }
    svg.replaceChildren(...parts);
    svg.dataset.peak = String(peak);
    svg.dataset.samples = String(samples.length);
  }

  function render(d) {
    $("topic").textContent = d.topic;
    $("group").textContent = d.group;
    const kafka = d.kafka;
    const stats = d.stats;

    observe("in", kafka.sampledAt, kafka.produced);
    observe("out", d.generatedAt, stats ? stats.processed : null);
    prune(d.generatedAt);
    drawChart("chart-in", series.in.samples, d.generatedAt);
    drawChart("chart-out", series.out.samples, d.generatedAt);
    const lastRate = (name) => {
      const s = series[name].samples;
      return s.length ? s[s.length - 1].v : null;
    };
    setValue("rate-in", lastRate("in"), formatRate(lastRate("in")));
    setValue("rate-out", lastRate("out"), formatRate(lastRate("out")));

    setValue("processed", stats ? stats.processed : null, formatCount(stats ? stats.processed : null));
    setValue("produced", kafka.produced, formatCount(kafka.produced));
    setValue("duplicates", stats ? stats.duplicatesSkipped : null, formatCount(stats ? stats.duplicatesSkipped : null));
    setValue("dead-lettered", stats ? stats.deadLettered : null, formatCount(stats ? stats.deadLettered : null));
    setValue("redis-memory", d.redis.usedMemory, formatBytes(d.redis.usedMemory));
    const totalLag = kafka.error ? null : kafka.partitions.reduce((sum, p) => sum + p.lag, 0);
    setValue("total-lag", totalLag, formatCount(totalLag));

    const owner = new Map();
    for (const m of kafka.members) for (const p of m.partitions) owner.set(p, m.clientId);
    const maxLag = kafka.partitions.reduce((m, p) => Math.max(m, p.lag), 0);
    fillTable(
      "lag",
      kafka.partitions.map((p) => {
        const tr = document.createElement("tr");
        tr.dataset.partition = String(p.partition);
        tr.dataset.lag = String(p.lag);
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.style.width = maxLag > 0 ? ((100 * p.lag) / maxLag).toFixed(1) + "%" : "0";
        const barCell = cell("");
        barCell.append(bar);
        tr.append(
          cell(String(p.partition), "num"),
          cell(formatCount(p.highWatermark), "num"),
          cell(p.committed === null ? "–" : formatCount(p.committed), "num"),
          cell(formatCount(p.lag), "num"),
          barCell,
          cell(owner.get(p.partition) || "–", "mono"),
        );
        return tr;
      }),
      kafka.error ? "Kafka did not answer" : "no partitions",
      6,
    );
    $("group-state").textContent = kafka.groupState ? "group " + kafka.groupState : "";

    fillTable(
      "members",
      kafka.members.map((m) => {
        const tr = document.createElement("tr");
        tr.dataset.clientId = m.clientId;
        tr.append(cell(m.clientId, "mono"), cell(m.host || "–"), cell(m.partitions.join(", ") || "none"));
        return tr;
      }),
      kafka.error ? "Kafka did not answer" : "no members",
      3,
    );

    const reasons = stats ? Object.entries(stats.deadLetteredByReason || {}) : [];
    fillTable(
      "dead-reasons",
      reasons.map(([reason, n]) => {
        const tr = document.createElement("tr");
        tr.dataset.reason = reason;
        tr.append(cell(reason, "mono"), cell(formatCount(n), "num"));
        return tr;
      }),
      "none",
      2,
    );

    const fresh = seenRecent;
    seenRecent = new Set(d.recent.map((e) => e.eventId));
    fillTable(
      "recent",
      d.recent.map((e) => {
        const tr = document.createElement("tr");
        tr.dataset.eventId = e.eventId;
        if (fresh !== null && !fresh.has(e.eventId)) tr.className = "fresh";
        const at = cell(e.processedAt.slice(11, 23));
        at.title = e.processedAt;
        tr.append(
          at,
          cell(e.eventType),
          cell(e.userId),
          cell(e.eventId, "mono"),
          cell(e.partition + ":" + e.offset, "num"),
        );
        return tr;
      }),
      stats ? "no events stored yet" : "Redis did not answer",
      5,
    );

    const problems = [d.redis.error, kafka.error].filter((p) => p);
    const box = $("problems");
    box.replaceChildren(
      ...problems.map((p) => {
        const line = document.createElement("p");
        line.textContent = p;
        return line;
      }),
    );
    box.hidden = problems.length === 0;
  }

  function setStatus(text, stale) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("stale", stale);
    status.dataset.polls = String(polls);
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (err) {
      return null; // storage disabled: the page still works where no credential is needed
    }
  }

  // A 401 or 403: show the credential form, with the replica's reason.
  async function askForToken(response) {
    let reason = "HTTP " + response.status;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) reason = body.error.message;
    } catch (err) {
      // Not JSON: the status says enough.
    }
    $("login-reason").textContent = storedToken() ? reason : "";
    $("login").hidden = false;
  }

  function useToken(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, value);
    } catch (err) {
      $("login-reason").textContent = "this browser does not let the page keep it";
      return;
    }
    $("token").value = "";
    $("login").hidden = true;
    clearTimeout(nextPoll);
    poll();
  }

  async function poll() {
    let next = RETRY_SECONDS;
    let d = null;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const headers = {};
      const token = storedToken();
      if (token) headers.Authorization = "Bearer " + token;
      const response = await fetch("/dashboard/data", { cache: "no-store", signal: abort.signal, headers: headers });
      if (response.status === 401 || response.status === 403) {
        await askForToken(response);
        throw new Error("a credential granting events:read is needed");
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      d = await response.json();
    } catch (err) {
      setStatus("this replica did not answer (" + err.message + "); retrying", true);
    } finally {
      clearTimeout(timer);
    }
    if (d !== null) {
      try {
        render(d);
        polls += 1;
        next = d.pollSeconds;
        setStatus("updated " + new Date(d.generatedAt * 1000).toLocaleTimeString("en-GB"), false);
      } catch (err) {
        // A bug of this page, not the replica's: said on the console, where it belongs.
        console.error("dashboard: could not draw the figures", err);
        setStatus("could not draw the figures (" + err.message + ")", true);
      }
    }
    nextPoll = setTimeout(poll, next * 1000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", useToken);
    poll();
  });
})();
