/**
 * The single-file HTML report of a run: the figures of the metrics file as
 * tables with units and, over simulated time, charts (uPlot, inlined from
 * node_modules so the file works offline) of queue depth, latencies, live
 * workers and messages. Nothing in it depends on when or where it was made,
 * so the same seed gives the same bytes.
 *
 * The pieces every report shares (the formatting of figures, uPlot and the
 * chart helpers that size each axis to its widest label) are exported for
 * the comparison report (sim/compare-report.ts).
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Metrics } from "./metrics.ts";
import type { Percentiles } from "./stats.ts";

/** Longest chart width in CSS pixels; narrower windows get narrower charts. */
export const maxChartWidthPx = 720;
export const chartHeightPx = 260;

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON that can sit inside a <script> element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c");
}

export function uplotAssets(): { js: string; css: string } {
  const require = createRequire(import.meta.url);
  const js = readFileSync(require.resolve("uplot/dist/uPlot.iife.min.js"), "utf8");
  const css = readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8");
  return { js, css };
}

/** A number with thousands separators and at most `decimals` decimals: 12,345.67. The same on every machine. */
export function formatNumber(value: number | null | undefined, decimals = 2): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const factor = 10 ** decimals;
  const rounded = Math.round(Math.abs(value) * factor) / factor;
  const [whole = "0", fraction] = rounded.toFixed(decimals).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const trimmed = fraction === undefined ? "" : fraction.replace(/0+$/, "");
  const sign = value < 0 && rounded !== 0 ? "-" : "";
  return `${sign}${grouped}${trimmed === "" ? "" : `.${trimmed}`}`;
}

/** A duration in milliseconds as people read it: "252 ms", "10.6 s", "443 s", "2.5 h". */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const abs = Math.abs(ms);
  if (abs < 1000) return `${formatNumber(ms, abs < 10 ? 1 : 0)} ms`;
  if (abs < 100_000) return `${formatNumber(ms / 1000, 1)} s`;
  if (abs < 2 * 3_600_000) return `${formatNumber(ms / 1000, 0)} s`;
  return `${formatNumber(ms / 3_600_000, 1)} h`;
}

/** A fraction in [0, 1] as a percentage. */
export function formatFraction(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return `${formatNumber(value * 100, 1)}%`;
}

function cell(text: string): string {
  return `<td class="num">${escapeHtml(text)}</td>`;
}

/** A table of name and value rows; values are already formatted text. */
export function table(title: string, rows: readonly (readonly [string, string])[]): string {
  const body = rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th>${cell(v)}</tr>`).join("");
  return `<section><h2>${escapeHtml(title)}</h2><table>${body}</table></section>`;
}

/** Percentile summaries as one row each: count, mean, p50, p90, p99, max, with their unit. */
export function percentileTable(title: string, rows: readonly (readonly [string, Percentiles])[]): string {
  const head = ["", "count", "mean", "p50", "p90", "p99", "max"].map((h) => `<th>${escapeHtml(h)}</th>`).join("");
  const body = rows
    .map(
      ([name, p]) =>
        `<tr><th>${escapeHtml(name)}</th>${cell(formatNumber(p.count, 0))}${[p.mean, p.p50, p.p90, p.p99, p.max]
          .map((v) => cell(formatMs(v)))
          .join("")}</tr>`,
    )
    .join("");
  return `<section><h2>${escapeHtml(title)}</h2><table><tr>${head}</tr>${body}</table></section>`;
}

/** Counts by name (a Record of numbers) as rows with thousands separators. */
function countRows(record: Record<string, number>): [string, string][] {
  return Object.entries(record).map(([k, v]) => [k, formatNumber(v)]);
}

/** The style every report shares. */
export const reportCss = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176c2e; font-weight: 600; }
.bad { color: #b00020; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
ul.checks { list-style: none; padding-left: 0; }
ul.checks li::before { content: "\\2714\\FE0E  "; color: #176c2e; }
ul.checks li.broken::before { content: "\\2718\\FE0E  "; color: #b00020; }
code { background: #f4f4f4; padding: 1px 4px; }
section { margin-bottom: 1em; }
`;

/**
 * The charts' helpers in the page: numbers on axes in short form with their unit ("15k", "10 s"), and each axis
 * sized to its widest label (measured with the canvas' own font), so no label is cut. Every chart made is kept in
 * `window.cimeshCharts`, where a test can read what each axis drew.
 */
export const chartHelpersJs = `
window.cimeshCharts = [];
const chartWidth = Math.max(320, Math.min(${maxChartWidthPx}, window.innerWidth - 40));
function shortNumber(v) {
  const a = Math.abs(v);
  const trim = (x) => String(Math.round(x * 100) / 100);
  if (a >= 1e9) return trim(v / 1e9) + "G";
  if (a >= 1e6) return trim(v / 1e6) + "M";
  if (a >= 1e4) return trim(v / 1e3) + "k";
  return trim(v);
}
function withUnit(unit) {
  return (u, splits) => splits.map((v) => (v == null ? "" : shortNumber(v) + (unit ? " " + unit : "")));
}
function fitAxis(u, values, axisIdx) {
  // Always from the values drawn: uPlot computes the size from the same values it then draws, in every cycle.
  const axis = u.axes[axisIdx];
  let size = (axis.ticks.show ? axis.ticks.size : 0) + axis.gap + 4;
  if (values) {
    u.ctx.font = axis.font[0];
    let widest = 0;
    for (const v of values) if (v != null) widest = Math.max(widest, u.ctx.measureText(String(v)).width);
    size += widest / (u.pxRatio || window.devicePixelRatio || 1);
  }
  return Math.ceil(Math.max(size, 30));
}
function makeChart(el, opts, data) {
  const u = new uPlot(Object.assign({ width: chartWidth, height: ${chartHeightPx} }, opts), data, el);
  window.cimeshCharts.push(u);
  return u;
}
`;

/** What runs a scenario again: the file and seed, and any field set on the command line. */
export interface ReproduceFrom {
  readonly scenarioPath: string;
  /** Fields set on top of the file, as `dotted.field=value` (the sweep's combination). */
  readonly sets?: readonly string[];
}

/** The command that runs the same scenario with the same seed again. */
export function reproduceCommand(scenarioPath: string, seed: number, sets: readonly string[] = []): string {
  const quote = (text: string) => (/^[\w./:=,+-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`);
  return [
    "npx cimesh sim",
    quote(scenarioPath),
    "--seed",
    String(seed),
    ...sets.flatMap((s) => ["--set", quote(s)]),
  ].join(" ");
}

export function renderReport(metrics: Metrics, from?: ReproduceFrom): string {
  const { js, css } = uplotAssets();
  const m = metrics;
  const command = reproduceCommand(from?.scenarioPath ?? `sim/scenarios/${m.scenario}.yaml`, m.seed, from?.sets);
  const violations = m.invariants.violations;
  const brokenNames = new Set<string>(violations.map((v) => v.invariant));
  const verdict =
    violations.length === 0
      ? `<p class="ok">Every invariant held (${m.invariants.checked.length} of ${m.invariants.checked.length}).</p>`
      : `<p class="bad">${violations.length} invariant violation(s):</p><ul>${violations
          .map((v) => `<li>${escapeHtml(`${v.invariant} ${v.jobId}: ${v.detail}`)}</li>`)
          .join("")}</ul>`;
  const checklist = `<section><h2>Invariants</h2><ul class="checks">${m.invariants.checked
    .map((name) =>
      brokenNames.has(name)
        ? `<li class="broken">${escapeHtml(name)}: broken</li>`
        : `<li>${escapeHtml(name)}: held</li>`,
    )
    .join("")}</ul></section>`;
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
  const intervalMinutes = formatNumber(m.settings.sampleInterval / 60_000);
  const perProject = m.fairness.perProject
    .slice(0, 200)
    .map(
      (p) =>
        `<tr><td class="num">${p.project}</td>${cell(formatNumber(p.submitted))}${cell(formatNumber(p.passed))}${cell(
          formatNumber(p.failed),
        )}${cell(formatMs(p.p50TimeToVerdictMs))}</tr>`,
    )
    .join("");
  const r = m.load.runsPerWorker;
  const o = m.offers;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cimesh sim: ${escapeHtml(m.scenario)} seed ${m.seed}</title>
<style>${css}</style>
<style>${reportCss}</style>
</head>
<body>
<h1>cimesh sim: ${escapeHtml(m.scenario)}</h1>
<p>Seed ${m.seed}, signatures ${m.signatures}, ${formatNumber(m.run.events)} events, ${formatNumber(
    Math.round(m.run.simulatedMs / 60_000),
  )} simulated minutes.</p>
<p>Reproduce: <code id="reproduce">${escapeHtml(command)}</code></p>
<p>${escapeHtml(m.settings.description)}</p>
${verdict}
<div class="charts">
<div id="queue"></div><div id="latency"></div><div id="live"></div><div id="messages"></div>
</div>
${table("Jobs", [
  ["submitted", formatNumber(m.jobs.submitted)],
  ["passed", formatNumber(m.jobs.passed)],
  ["failed", formatNumber(m.jobs.failed)],
  ["cancelled", formatNumber(m.jobs.cancelled)],
  ["lost", formatNumber(m.jobs.lost)],
  ["wrong results accepted", formatNumber(m.jobs.wrongResultsAccepted)],
])}
${percentileTable("Latencies", [
  ["claim latency (submit to the first run started)", m.claimLatencyMs],
  ["award latency (submit to the first award sent)", m.awardLatencyMs],
  ["time to verdict", m.timeToVerdictMs],
  ["gossip delivery latency", m.gossip.latencyMs],
])}
${table("Claims", [
  ["wanted runs (shards × replicas of the submitted jobs)", formatNumber(m.wantedRuns)],
  ["offers per job", formatNumber(m.offersPerJob)],
  ["bids per job", formatNumber(m.bidsPerJob)],
  ["offers per wanted run", formatNumber(m.offersPerWantedRun)],
  ["bids per wanted run", formatNumber(m.bidsPerWantedRun)],
  ["offers and bids per wanted run", formatNumber(m.offersAndBidsPerWantedRun)],
  ["claim messages per wanted run", formatNumber(m.claimMessagesPerWantedRun)],
  ["awards per wanted run", formatNumber(m.awardsPerWantedRun)],
  ["offers sent", formatNumber(o.sent)],
  ["offers delivered to a master", formatNumber(o.delivered)],
  [
    "offers by what they told: first / more / fewer / renewal / same",
    [o.first, o.more, o.fewer, o.renewal, o.same].map((v) => formatNumber(v)).join(" / "),
  ],
])}
${table("Messages", [
  ["messages per job (gossip hops, gossip control, direct)", formatNumber(m.messagesPerJob)],
  ["messages per worker per hour online", formatNumber(m.messagesPerWorkerHour)],
  ["the same while jobs arrive", formatNumber(m.messagesPerWorkerHourArriving)],
  ["worker hours online", `${formatNumber(m.workerHours)} h`],
  ["gossip publishes", formatNumber(m.gossip.publishes)],
  ["gossip delivery", formatFraction(m.gossip.deliveryFraction)],
  ...countRows(m.messages),
])}
${table("Messages by type", countRows(m.messagesByDomain))}
${table("Load and fairness", [
  ["workers ever online", formatNumber(m.load.workersEverOnline)],
  ["runs per worker: mean / p50 / p90 / max", [r.mean, r.p50, r.p90, r.max].map((v) => formatNumber(v)).join(" / ")],
  ["idle workers", formatNumber(m.load.idleWorkers)],
  ["busy slots", formatFraction(m.load.busySlotFraction)],
  ["Jain index, completion across projects (1 = equal)", formatNumber(m.fairness.jainCompletion, 4)],
  ["Jain index, speed across projects (1 = equal)", formatNumber(m.fairness.jainTimeToVerdict, 4)],
])}
${table("Nodes and faults", countRows(m.nodes))}
${table("Actors and security", countRows(m.security))}
${table("Admissions by reason", countRows(m.admissions))}
${checklist}
<section><h2>Per project</h2><table><tr><th>project</th><th>submitted</th><th>passed</th><th>failed</th><th>time to verdict, p50</th></tr>${perProject}</table></section>
<section><h2>Scenario</h2><pre>${escapeHtml(JSON.stringify(m.settings, null, 2))}</pre></section>
<script>${js}</script>
<script>
${chartHelpersJs}
const d = ${scriptJson(series)};
function chart(id, title, unit, series, values) {
  makeChart(document.getElementById(id), { title, scales: { x: { time: false } },
    axes: [{ label: "simulated time", values: withUnit("min") }, { label: unit, values: withUnit(""), size: fitAxis }],
    series: [{ label: "minute" }, ...series] }, [d.t, ...values]);
}
chart("queue", "Queue depth", "open jobs", [{ label: "open jobs", stroke: "#1f77b4" }], [d.openJobs]);
chart("latency", "Latencies (p50 per ${intervalMinutes} min)", "seconds", [{ label: "claim (s)", stroke: "#2ca02c" }, { label: "verdict (s)", stroke: "#d62728" }], [d.claim, d.verdict]);
chart("live", "Live workers", "workers", [{ label: "live workers", stroke: "#9467bd" }], [d.liveWorkers]);
chart("messages", "Messages per ${intervalMinutes} min", "messages", [{ label: "messages", stroke: "#8c564b" }, { label: "offers", stroke: "#2ca02c" }, { label: "bids", stroke: "#ff7f0e" }, { label: "verdicts", stroke: "#17becf" }], [d.messages, d.offers, d.bids, d.verdicts]);
</script>
</body>
</html>
`;
}
