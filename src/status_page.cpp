// The status page served at GET / by the admin listener: one self-contained
// document (no external scripts, styles or fonts) that polls /status every
// 2 s and draws one table per upstream. Rows carry data-server and
// data-reuse attributes so that tests can read them from the DOM.
#include "holdfast/metrics.hpp"

namespace holdfast {

const char* const kStatusPageHtml = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>holdfast status</title>
<style>
  :root { --ink:#1d2330; --muted:#6b7385; --line:#e3e6ec; --bg:#f5f6f8; --ok:#1f8f4e; --warn:#b7791f; --bad:#c53030; --accent:#2b6cb0; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.4 system-ui,-apple-system,"Segoe UI","DejaVu Sans",sans-serif; }
  header { background:#1d2330; color:#fff; padding:14px 24px; display:flex; align-items:center; gap:24px; flex-wrap:wrap; }
  header h1 { font-size:20px; margin:0; letter-spacing:.5px; }
  header .meta { color:#aab2c5; font-size:13px; }
  .badge { display:inline-block; padding:2px 10px; border-radius:10px; font-weight:600; font-size:12px; }
  .badge.ok { background:#d8f3e3; color:var(--ok); } .badge.warn { background:#fdefd4; color:var(--warn); }
  .badge.bad { background:#fde0e0; color:var(--bad); } .badge.idle { background:#e8ebf0; color:var(--muted); }
  main { padding:18px 24px; }
  .summary { display:flex; gap:12px; flex-wrap:wrap; margin-bottom:18px; }
  .tile { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:130px; }
  .tile .v { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
  .tile .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
  section { background:#fff; border:1px solid var(--line); border-radius:8px; margin-bottom:18px; overflow:auto; }
  section h2 { font-size:16px; margin:0; padding:10px 16px; border-bottom:1px solid var(--line); }
  section h2 small { color:var(--muted); font-weight:normal; margin-left:8px; }
  table { border-collapse:collapse; width:100%; }
  th, td { padding:6px 9px; text-align:right; white-space:nowrap; border-bottom:1px solid var(--line); font-variant-numeric:tabular-nums; }
  th { color:var(--muted); font-weight:600; font-size:11px; text-transform:uppercase; letter-spacing:.3px; background:#fafbfc; }
  th:first-child, td:first-child, th.l, td.l { text-align:left; }
  tr:last-child td { border-bottom:none; }
  .bar { display:inline-block; width:48px; height:8px; background:#e8ebf0; border-radius:4px; vertical-align:middle; margin-right:6px; overflow:hidden; }
  .bar i { display:block; height:100%; background:var(--ok); }
  .chips span { display:inline-block; background:#eef1f6; border-radius:4px; padding:0 6px; margin:1px 2px; font-size:12px; }
  .muted { color:var(--muted); }
  .err { color:var(--bad); }
  #error { display:none; background:#fde0e0; color:var(--bad); padding:8px 24px; }
</style>
</head>
<body>
<header><h1>holdfast</h1><span id="state" class="badge idle">loading</span><span class="meta" id="meta"></span></header>
<div id="error"></div>
<main><div class="summary" id="summary"></div><div id="upstreams"></div></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c]));
const num = (n) => Number(n).toLocaleString("en-US");
function bytes(n) {
  const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function ms(h) { return h.count ? (1000 * h.sum / h.count).toFixed(h.sum / h.count < 0.01 ? 2 : 1) + " ms" : "<span class=muted>-</span>"; }
function chips(obj) {
  const parts = Object.entries(obj).filter(([, v]) => v > 0).map(([k, v]) => "<span>" + esc(k.replace(/_/g, " ")) + " " + num(v) + "</span>");
  return parts.length ? "<span class=chips>" + parts.join("") + "</span>" : "<span class=muted>none</span>";
}
function tile(k, v) { return "<div class=tile><div class=v>" + v + "</div><div class=k>" + k + "</div></div>"; }
function stateBadge(s) {
  const cls = s === "up" ? "ok" : s === "failing" || s === "down" ? "bad" : "idle";
  return "<span class='badge " + cls + "'>" + esc(s) + "</span>";
}
function render(st) {
  const c = st.counters, g = st.gauges;
  $("state").className = "badge " + (st.draining ? "warn" : "ok");
  $("state").textContent = st.draining ? "draining" : "ready";
  $("meta").textContent = "version " + st.version + " \u00b7 " + st.workers + " worker" + (st.workers === 1 ? "" : "s") +
    " \u00b7 up " + Math.floor(st.uptime_seconds) + " s \u00b7 updated " + new Date().toLocaleTimeString();
  let opened = 0, reused = 0;
  for (const u of st.upstreams) for (const s of u.servers) { opened += s.counters.upstream_connections_opened_total; reused += s.counters.upstream_requests_reused_total; }
  $("summary").innerHTML = tile("client connections active", num(g.client_connections.active)) +
    tile("client connections idle", num(g.client_connections.idle)) + tile("requests", num(c.requests_total)) +
    tile("upstream connections opened", num(opened)) +
    tile("upstream reuse", (opened + reused ? (100 * reused / (opened + reused)).toFixed(1) : "0") + " %") +
    tile("upstream errors", (c.upstream_errors_total ? "<span class=err>" : "<span>") + num(c.upstream_errors_total) + "</span>");
  let html = "";
  for (const u of st.upstreams) {
    html += "<section><h2>" + esc(u.name) + "<small>" + u.servers.length + " server" + (u.servers.length === 1 ? "" : "s") + "</small></h2><table>" +
      "<tr><th>Server</th><th class=l>State</th><th>Active</th><th>Idle</th><th>Opened</th><th>Reused</th><th class=l>Reuse ratio</th>" +
      "<th>Learned hint</th><th class=l>Evictions</th><th class=l>Connect failures</th><th>Retries</th><th class=l>Responses</th>" +
      "<th>First byte (avg)</th><th>In / out</th></tr>";
    for (const s of u.servers) {
      const sc = s.counters, sg = s.gauges, pct = (100 * s.reuse_ratio).toFixed(1);
      const retries = Object.values(sc.upstream_retries_total).reduce((a, b) => a + b, 0);
      const hint = sg.upstream_learned_keepalive_timeout_seconds;
      html += "<tr data-server='" + esc(s.address) + "' data-reuse='" + s.reuse_ratio + "'><td><b>" + esc(s.address) + "</b></td>" +
        "<td class=l>" + stateBadge(s.state) + "</td><td>" + num(sg.upstream_connections.active) + "</td><td>" + num(sg.upstream_connections.idle) + "</td>" +
        "<td>" + num(sc.upstream_connections_opened_total) + "</td><td>" + num(sc.upstream_requests_reused_total) + "</td>" +
        "<td class=l><span class=bar><i style='width:" + pct + "%'></i></span>" + pct + " %</td>" +
        "<td>" + (hint === null ? "<span class=muted>none</span>" : hint + " s") + "</td>" +
        "<td class=l>" + chips(sc.pool_evictions_total) + "</td><td class=l>" + chips(sc.upstream_connect_failures_total) + "</td>" +
        "<td>" + num(retries) + (sc.upstream_retries_refused_total ? " <span class=err>(" + num(sc.upstream_retries_refused_total) + " refused)</span>" : "") + "</td>" +
        "<td class=l>" + chips(sc.responses_total) + "</td><td>" + ms(s.histograms.upstream_first_byte_seconds) + "</td>" +
        "<td>" + bytes(sc.request_bytes_total) + " / " + bytes(sc.response_bytes_total) + "</td></tr>";
    }
    html += "</table></section>";
  }
  $("upstreams").innerHTML = html;
}
async function refresh() {
  try {
    const r = await fetch("/status", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("error").style.display = "none";
  } catch (e) {
    $("error").textContent = "cannot read /status: " + e.message;
    $("error").style.display = "block";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";

}  // namespace holdfast
