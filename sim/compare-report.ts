/**
 * The comparison report (comparison.html of a sweep, compare.html of
 * `cimesh sim compare`): one self-contained file, with per key metric a chart
 * across the groups (the spread over the seeds as percentile bands: min–max
 * and p25–p75, with the median and the mean) and a table of the mean, its 95%
 * interval and the quartiles, with units; which group is best on each or
 * whether it is within noise; the runs that failed and the commands that
 * reproduce them. Nothing in it depends on when it was made.
 */
import type { Comparison, Distribution, MetricUnit } from "./compare.ts";
import { chartHelpersJs, escapeHtml, formatMs, formatNumber, reportCss, scriptJson, uplotAssets } from "./report.ts";

function formatIn(unit: MetricUnit, value: number | null): string {
  if (unit === "ms") return formatMs(value);
  if (unit === "index") return formatNumber(value, 4);
  if (unit === "count") return formatNumber(value, 2);
  return formatNumber(value, 2);
}

/** The short name of a group on a chart's axis: its swept values (" · " between fields), or its number. */
function shortLabels(comparison: Comparison): string[] {
  return comparison.groups.map((g, i) =>
    comparison.fields.length > 0 ? g.sets.map((s) => s.slice(s.indexOf("=") + 1)).join(" · ") : `#${i + 1}`,
  );
}

function metricTable(comparison: Comparison, key: string, unit: MetricUnit, labels: readonly string[]): string {
  const verdict = comparison.verdicts[key];
  const head = ["", "group", "runs", "mean", "95% interval", "min", "p25", "p50", "p75", "max"]
    .map((h) => `<th>${escapeHtml(h)}</th>`)
    .join("");
  const rows = comparison.groups
    .map((g, i) => {
      const d: Distribution | null = g.metrics[key] ?? null;
      const mark = verdict?.best === g.label ? "best" : verdict?.withinNoise.includes(g.label) ? "within noise" : "";
      const cells =
        d === null
          ? `<td class="num">0</td><td colspan="7">no values</td>`
          : [
              formatNumber(d.n, 0),
              formatIn(unit, d.mean),
              d.ciLow === null ? "– (one run)" : `${formatIn(unit, d.ciLow)} to ${formatIn(unit, d.ciHigh)}`,
              formatIn(unit, d.min),
              formatIn(unit, d.p25),
              formatIn(unit, d.p50),
              formatIn(unit, d.p75),
              formatIn(unit, d.max),
            ]
              .map((v) => `<td class="num">${escapeHtml(v)}</td>`)
              .join("");
      return `<tr><th>${escapeHtml(labels[i] ?? "")}</th><td>${escapeHtml(g.label)}${
        mark === "" ? "" : ` <strong>(${mark})</strong>`
      }</td>${cells}</tr>`;
    })
    .join("");
  return `<table><tr>${head}</tr>${rows}</table>`;
}

export function renderComparison(comparison: Comparison): string {
  const { js, css } = uplotAssets();
  const c = comparison;
  const labels = shortLabels(c);
  const axisName = c.fields.length > 0 ? c.fields.join(" · ") : "run set";
  const charts = c.metrics.map((m) => {
    const ds = c.groups.map((g) => g.metrics[m.key] ?? null);
    const pick = (f: (d: Distribution) => number) => ds.map((d) => (d === null ? null : f(d)));
    return {
      id: `chart-${m.key}`,
      title: m.title,
      unit: m.unit,
      data: [
        pick((d) => d.max),
        pick((d) => d.p75),
        pick((d) => d.p50),
        pick((d) => d.p25),
        pick((d) => d.min),
        pick((d) => d.mean),
      ],
    };
  });
  const failures =
    c.failures.length === 0
      ? `<p class="ok">Every run held every invariant.</p>`
      : `<section><h2>Failed runs (left out of the figures)</h2><table><tr><th>group</th><th>seed</th><th>what broke</th><th>reproduce</th></tr>${c.failures
          .map(
            (f) =>
              `<tr><td>${escapeHtml(f.group)}</td><td class="num">${f.seed}</td><td>${f.problems
                .slice(0, 5)
                .map((p) => escapeHtml(p))
                .join(
                  "<br>",
                )}${f.problems.length > 5 ? `<br>(and ${f.problems.length - 5} more)` : ""}</td><td><code>${escapeHtml(
                f.command,
              )}</code></td></tr>`,
          )
          .join("")}</table></section>`;
  const summary = `<section><h2>Best per metric</h2><table><tr><th>metric</th><th>better</th><th>verdict</th></tr>${c.metrics
    .map(
      (m) =>
        `<tr><th>${escapeHtml(m.title)}</th><td>${m.better}</td><td>${escapeHtml(c.verdicts[m.key]?.text ?? "–")}</td></tr>`,
    )
    .join(
      "",
    )}</table><p>Best: the best mean, when its 95% interval (Student's t over the runs) overlaps no other group's; within noise: the intervals overlap.</p></section>`;
  const context = `<table>${Object.entries(c.context)
    .map(
      ([k, v]) =>
        `<tr><th>${escapeHtml(k)}</th><td>${k === "command" ? `<code>${escapeHtml(String(v))}</code>` : escapeHtml(Array.isArray(v) ? v.join(", ") : String(v))}</td></tr>`,
    )
    .join("")}</table>`;
  const groups = `<section><h2>Groups</h2><table><tr><th>on the charts</th><th>group</th><th>runs</th></tr>${c.groups
    .map(
      (g, i) =>
        `<tr><td>${escapeHtml(labels[i] ?? "")}</td><td>${escapeHtml(g.label)}</td><td class="num">${g.seeds.length}</td></tr>`,
    )
    .join("")}</table></section>`;
  const sections = c.metrics
    .map(
      (m) =>
        `<section><h2>${escapeHtml(m.title)}</h2><p>${escapeHtml(c.verdicts[m.key]?.text ?? "")} (${m.better} is better)</p><div id="chart-${m.key}"></div>${metricTable(
          c,
          m.key,
          m.unit,
          labels,
        )}</section>`,
    )
    .join("\n");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cimesh sim comparison: ${escapeHtml(c.title)}</title>
<style>${css}</style>
<style>${reportCss}</style>
</head>
<body>
<h1>cimesh sim comparison: ${escapeHtml(c.title)}</h1>
${context}
${failures}
${summary}
${groups}
${sections}
<script>${js}</script>
<script>
${chartHelpersJs}
const labels = ${scriptJson(labels)};
const charts = ${scriptJson(charts)};
const xs = labels.map((_, i) => i);
function valuesIn(unit) {
  if (unit === "ms") return (u, splits) => splits.map((v) => (v == null ? "" : Math.abs(v) >= 1000 ? shortNumber(v / 1000) + " s" : shortNumber(v) + " ms"));
  return withUnit("");
}
for (const c of charts) {
  makeChart(document.getElementById(c.id), {
    title: c.title,
    scales: { x: { time: false, range: [-0.5, Math.max(0.5, labels.length - 0.5)] } },
    axes: [
      { label: ${scriptJson(axisName)}, splits: () => xs, values: (u, splits) => splits.map((v) => labels[v] ?? "") },
      { label: c.unit === "ms" ? "time" : c.unit === "index" ? "index (1 = equal)" : "per run", values: valuesIn(c.unit), size: fitAxis },
    ],
    bands: [
      { series: [1, 5], fill: "rgba(31,119,180,0.12)" },
      { series: [2, 4], fill: "rgba(31,119,180,0.3)" },
    ],
    series: [
      { label: "group" },
      { label: "max", stroke: "rgba(31,119,180,0.4)", points: { show: true } },
      { label: "p75", stroke: "rgba(31,119,180,0.7)", points: { show: true } },
      { label: "p50", stroke: "#1f77b4", width: 2, points: { show: true } },
      { label: "p25", stroke: "rgba(31,119,180,0.7)", points: { show: true } },
      { label: "min", stroke: "rgba(31,119,180,0.4)", points: { show: true } },
      { label: "mean", stroke: "#d62728", dash: [4, 4], points: { show: true } },
    ],
  }, [xs, ...c.data]);
}
</script>
</body>
</html>
`;
}
