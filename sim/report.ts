/**
 * The single-file HTML report of a run: the figures of the metrics file as
 * tables and, over simulated time, charts (uPlot, inlined from node_modules so
 * the file works offline) of queue depth, latencies, live workers and
 * messages. Nothing in it depends on when or where it was made, so the same
 * seed gives the same bytes.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Metrics } from "./metrics.ts";

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function uplotAssets(): { js: string; css: string } {
  const require = createRequire(import.meta.url);
  const js = readFileSync(require.resolve("uplot/dist/uPlot.iife.min.js"), "utf8");
  const css = readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8");
  return { js, css };
}

function row(name: string, value: unknown): string {
  const text =
    value === null || value === undefined ? "–" : typeof value === "object" ? JSON.stringify(value) : String(value);
  return `<tr><th>${escapeHtml(name)}</th><td>${escapeHtml(text)}</td></tr>`;
}

function table(title: string, rows: readonly [string, unknown][]): string {
  return `<section><h2>${escapeHtml(title)}</h2><table>${rows.map(([k, v]) => row(k, v)).join("")}</table></section>`;
}

export function renderReport(metrics: Metrics): string {
  const { js, css } = uplotAssets();
  const m = metrics;
  const violations = m.invariants.violations;
  const verdict =
    violations.length === 0
      ? `<p class="ok">Every invariant held.</p>`
      : `<p class="bad">${violations.length} invariant violation(s): reproduce with <code>npx cimesh sim &lt;scenario&gt; --seed ${m.seed}</code></p><ul>${violations
          .map((v) => `<li>${escapeHtml(`${v.invariant} ${v.jobId}: ${v.detail}`)}</li>`)
          .join("")}</ul>`;
  const series = {
    t: m.series.map((p) => Math.round(p.tMs / 60_000)),
    openJobs: m.series.map((p) => p.openJobs),
    liveWorkers: m.series.map((p) => p.liveWorkers),
    messages: m.series.map((p) => p.messages),
    offers: m.series.map((p) => p.offers),
    bids: m.series.map((p) => p.bids),
    verdicts: m.series.map((p) => p.verdicts),
    claim: m.series.map((p) => (p.claimP50Ms === null ? null : p.claimP50Ms / 1000)),
    verdict: m.series.map((p) => (p.verdictP50Ms === null ? null : p.verdictP50Ms / 1000)),
  };
  const data = JSON.stringify(series).replace(/</g, "\\u003c");
  const perProject = m.fairness.perProject
    .slice(0, 200)
    .map(
      (p) =>
        `<tr><td>${p.project}</td><td>${p.submitted}</td><td>${p.passed}</td><td>${p.failed}</td><td>${p.p50TimeToVerdictMs ?? "–"}</td></tr>`,
    )
    .join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cimesh sim: ${escapeHtml(m.scenario)} seed ${m.seed}</title>
<style>${css}</style>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
.ok { color: #176c2e; font-weight: 600; }
.bad { color: #b00020; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
section { margin-bottom: 1em; }
</style>
</head>
<body>
<h1>cimesh sim: ${escapeHtml(m.scenario)}</h1>
<p>Seed ${m.seed}, signatures ${m.signatures}, ${m.run.events} events, ${Math.round(m.run.simulatedMs / 60_000)} simulated minutes. Reproduce: <code>npx cimesh sim &lt;scenario&gt; --seed ${m.seed}</code></p>
<p>${escapeHtml(m.settings.description)}</p>
${verdict}
<div class="charts">
<div id="queue"></div><div id="latency"></div><div id="live"></div><div id="messages"></div>
</div>
${table("Jobs", Object.entries(m.jobs))}
${table("Latencies (ms)", [
  ["claim latency (submit to the first run started)", m.claimLatencyMs],
  ["award latency (submit to the first award sent)", m.awardLatencyMs],
  ["time to verdict", m.timeToVerdictMs],
  ["gossip delivery latency", m.gossip.latencyMs],
])}
${table("Messages", [
  ["wanted runs (shards × replicas of the submitted jobs)", m.wantedRuns],
  ["offers per job", m.offersPerJob],
  ["bids per job", m.bidsPerJob],
  ["offers per wanted run", m.offersPerWantedRun],
  ["bids per wanted run", m.bidsPerWantedRun],
  ["offers and bids per wanted run", m.offersAndBidsPerWantedRun],
  ["awards per wanted run", m.awardsPerWantedRun],
  ["offers sent, delivered, and by what they changed", m.offers],
  ["messages per job (gossip hops, gossip control, direct)", m.messagesPerJob],
  ["messages per worker per hour online", m.messagesPerWorkerHour],
  ["the same while jobs arrive", m.messagesPerWorkerHourArriving],
  ["worker hours online", m.workerHours],
  ["gossip publishes", m.gossip.publishes],
  ["gossip delivery fraction", m.gossip.deliveryFraction],
  ...Object.entries(m.messages),
  ["by message type", m.messagesByDomain],
])}
${table("Load and fairness", [
  ["workers ever online", m.load.workersEverOnline],
  ["runs per worker", m.load.runsPerWorker],
  ["idle workers", m.load.idleWorkers],
  ["Jain index, completion across projects", m.fairness.jainCompletion],
  ["Jain index, speed across projects", m.fairness.jainTimeToVerdict],
])}
${table("Faults and actors", [...Object.entries(m.nodes), ...Object.entries(m.security)])}
${table(
  "Invariants checked",
  m.invariants.checked.map((name, i) => [String(i + 1), name]),
)}
<section><h2>Per project</h2><table><tr><th>project</th><th>submitted</th><th>passed</th><th>failed</th><th>p50 time to verdict (ms)</th></tr>${perProject}</table></section>
<section><h2>Scenario</h2><pre>${escapeHtml(JSON.stringify(m.settings, null, 2))}</pre></section>
<script>${js}</script>
<script>
const d = ${data};
const width = Math.min(720, window.innerWidth - 40);
function chart(id, title, series, values) {
  new uPlot({ title, width, height: 260, scales: { x: { time: false } },
    axes: [{ label: "simulated minutes" }, {}],
    series: [{ label: "minute" }, ...series] }, [d.t, ...values], document.getElementById(id));
}
chart("queue", "Queue depth (open jobs)", [{ label: "open jobs", stroke: "#1f77b4" }], [d.openJobs]);
chart("latency", "Latencies (p50 per interval, s)", [{ label: "claim", stroke: "#2ca02c" }, { label: "verdict", stroke: "#d62728" }], [d.claim, d.verdict]);
chart("live", "Live workers", [{ label: "live workers", stroke: "#9467bd" }], [d.liveWorkers]);
chart("messages", "Messages per interval", [{ label: "messages", stroke: "#8c564b" }, { label: "offers", stroke: "#2ca02c" }, { label: "bids", stroke: "#ff7f0e" }, { label: "verdicts", stroke: "#17becf" }], [d.messages, d.offers, d.bids, d.verdicts]);
</script>
</body>
</html>
`;
}
