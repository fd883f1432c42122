// The gateway's dashboard: polls /admin/stats (the session cookie authenticates it) and draws the numbers.
// Every text from a request (prompts, tenant and model names) goes in with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function ms(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1);
}

function percent(rate) {
  return (100 * rate).toFixed(1) + " %";
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function drawTotals(totals) {
  const hits = totals.exact_hits + totals.semantic_hits;
  text("hit-rate", percent(totals.hit_rate));
  text("hits", hits);
  text("lookups", hits + totals.misses);
  text("requests", totals.requests);
  text("bypasses", totals.bypasses);
  text("errors", totals.errors);
  text("tokens-saved", totals.tokens_saved.toLocaleString("en"));
  text("money-saved", "$" + totals.money_saved.toFixed(4));
  text("hit-p50", ms(totals.hit_p50_ms));
  text("hit-p99", ms(totals.hit_p99_ms));
  text("upstream-p50", ms(totals.upstream_p50_ms));
  text("upstream-p99", ms(totals.upstream_p99_ms));
}

function drawChart(series) {
  const line = document.getElementById("hit-rate-line");
  if (series.length === 0) { line.setAttribute("points", ""); return; }
  const step = series.length > 1 ? 600 / (series.length - 1) : 0;
  const points = series.map((p, i) => {
    const rate = p.lookups ? p.hits / p.lookups : 0;
    return (i * step).toFixed(1) + "," + (115 - 110 * rate).toFixed(1);
  });
  line.setAttribute("points", points.join(" "));
}

function drawRows(rows) {
  const body = document.querySelector("#by-tenant-model tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.tenant = r.tenant;
    tr.dataset.model = r.model;
    for (const v of [r.tenant, r.model, r.requests, percent(r.hit_rate), r.exact_hits, r.semantic_hits, r.misses,
                     r.tokens_saved, "$" + r.money_saved.toFixed(4), ms(r.hit_p50_ms), ms(r.upstream_p50_ms),
                     r.wrong_hit_reports]) {
      cell(tr, v);
    }
    body.appendChild(tr);
  }
}

let shownRecent = null;

function drawRecent(recent) {
  // Redrawn only when the hits changed, so a row does not vanish under the pointer between two polls.
  const shown = JSON.stringify(recent.map((h) => [h.key, h.at]));
  if (shown === shownRecent) return;
  shownRecent = shown;
  const body = document.querySelector("#recent-hits tbody");
  body.replaceChildren();
  for (const h of recent) {
    const tr = document.createElement("tr");
    tr.className = "recent-hit";
    tr.dataset.key = h.key;
    cell(tr, new Date(h.at * 1000).toLocaleTimeString());
    cell(tr, h.tenant);
    cell(tr, h.prompt, "prompt new-prompt");
    cell(tr, h.cached_prompt, "prompt cached-prompt");
    cell(tr, h.similarity.toFixed(3), "similarity");
    cell(tr, h.exact ? "exact" : "semantic");
    const button = document.createElement("button");
    button.className = "report-wrong";
    button.textContent = "Report wrong";
    button.addEventListener("click", () => report(h.key, tr));
    cell(tr, "").appendChild(button);
    body.appendChild(tr);
  }
}

async function report(key, row) {
  const response = await fetch("/admin/report", {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({key: key}),
  });
  const result = await response.json();
  if (response.ok) {
    row.remove();
    text("report-status", "Reported: the entry was " + (result.deleted ? "deleted." : "already gone."));
  } else {
    text("report-status", "Report failed: " + result.error.message);
  }
  await refresh();
}

async function refresh() {
  try {
    const response = await fetch("/admin/stats");
    if (response.status === 401) { window.location.reload(); return; }
    const stats = await response.json();
    drawTotals(stats.totals);
    drawChart(stats.series);
    drawRows(stats.by_tenant_model);
    drawRecent(stats.recent_hits);
    text("updated", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.loaded = "true";
  } catch (error) {
    text("updated", "cannot reach the gateway: " + error);
  }
}

refresh();
setInterval(refresh, POLL_MS);
