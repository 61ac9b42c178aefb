/**
 * The simulator's reports in a real browser (playwright-core driving /usr/bin/chromium): the single-run report and
 * a sweep's comparison report load with no console error, and no axis label is cut. uPlot draws axes on a canvas, so
 * each label drawn (uPlot's `_values` of each axis) is measured with the canvas' own font and checked against the
 * room its axis has: a y-axis label must fit in the axis' size less its ticks and gap (else it runs off the canvas
 * or into the axis title), an x-axis label must lie within the canvas. A chart made with uPlot's default axis size
 * and values of 150,000 fails that check, as the report's charts did ("0,000" for 10,000). Needs Chromium.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import test from "ava";
import { type Browser, chromium } from "playwright-core";
import {
  exampleScenarioPath,
  loadScenario,
  renderReport,
  runSweep,
  shrinkScenario,
  simulate,
  writeSweep,
} from "../sim/index.ts";

const chromiumPath = "/usr/bin/chromium";
/** Bound on a page's load and its charts' drawing. */
const pageWaitMs = 30_000;
/** The report's sampling interval: long enough for thousands of messages per interval. */
const sampleIntervalMs = 10 * 60_000;

/** In the page: every axis label of every chart that does not fit, as text (empty when all fit). */
const cutLabelsJs = `(charts) => {
  const problems = [];
  charts.forEach((u, c) => {
    const ratio = u.pxRatio || window.devicePixelRatio || 1;
    const canvas = u.root.querySelector("canvas").getBoundingClientRect();
    const over = u.over.getBoundingClientRect();
    u.axes.forEach((axis, a) => {
      if (!axis.show || !axis._values) return;
      u.ctx.font = axis.font[0];
      const ticks = axis.ticks.show ? axis.ticks.size : 0;
      axis._values.forEach((value, i) => {
        if (value == null || value === "") return;
        const width = u.ctx.measureText(String(value)).width / ratio;
        const where = "chart " + c + " (" + ((u.root.querySelector(".u-title") || {}).textContent || "") + ") axis " + a + " label " + JSON.stringify(String(value));
        if (axis.side === 1 || axis.side === 3) {
          const room = axis._size - ticks - axis.gap;
          if (width > room + 0.5) problems.push(where + ": " + width.toFixed(1) + " px wide, room for " + room + " px");
        } else {
          const x = over.left + u.valToPos(axis._splits[i], axis.scale);
          if (x - width / 2 < canvas.left - 0.5 || x + width / 2 > canvas.right + 0.5)
            problems.push(where + ": spans " + (x - width / 2).toFixed(1) + ".." + (x + width / 2).toFixed(1) + " px, canvas " + canvas.left + ".." + canvas.right);
        }
      });
    });
  });
  return problems;
}`;

async function checkPage(
  t: { deepEqual(a: unknown, b: unknown, message?: string): void; true(v: boolean, message?: string): void },
  browser: Browser,
  file: string,
  expectedCharts: number,
): Promise<void> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(pathToFileURL(file).href, { timeout: pageWaitMs });
  await page.waitForFunction(`window.cimeshCharts && window.cimeshCharts.length === ${expectedCharts}`, null, {
    timeout: pageWaitMs,
  });
  const drawn = (await page.evaluate(
    "window.cimeshCharts.map((u) => u.axes.map((a) => (a._values || []).length).join('/'))",
  )) as string[];
  t.true(
    drawn.every((counts) => /^[1-9]\d*\/[1-9]\d*$/.test(counts)),
    `every chart drew labels on both axes: ${drawn.join(", ")}`,
  );
  const cut = (await page.evaluate(`(${cutLabelsJs})(window.cimeshCharts)`)) as string[];
  t.deepEqual(cut, [], `${file}: cut axis labels`);
  // The check fails on a chart sized as the reports' charts were (uPlot's default y-axis size, values of 150,000).
  const control = (await page.evaluate(`(async () => {
    const el = document.createElement("div");
    document.body.appendChild(el);
    const u = new uPlot({ width: 600, height: 200, scales: { x: { time: false } }, series: [{}, { stroke: "red" }] },
      [[0, 1, 2], [0, 150000, 100000]], el);
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    const cut = (${cutLabelsJs})([u]);
    u.destroy();
    el.remove();
    return cut;
  })()`)) as string[];
  t.true(control.length > 0, "the check finds the labels uPlot's default axis size cuts");
  t.deepEqual(errors, [], `${file}: console errors`);
  await page.close();
}

test("the single-run and comparison reports load with no console error, and no axis label is cut", async (t) => {
  if (!existsSync(chromiumPath)) {
    t.fail(`Chromium is missing at ${chromiumPath}: install it with \`cimesh setup --with-test-deps\``);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "cimesh-report-browser-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Enough of a mesh for wide figures: messages per interval (of 10 minutes) in the thousands.
  const scenario = {
    ...shrinkScenario(loadScenario(exampleScenarioPath("mixed-400")), { workers: 40, jobs: 60, signatures: "fast" }),
    sampleInterval: sampleIntervalMs,
  };
  const metrics = simulate(scenario, 1);
  t.true(Math.max(...metrics.series.map((p) => p.messages)) >= 1000, "the messages chart has values of thousands");
  const report = join(dir, "report.html");
  writeFileSync(report, renderReport(metrics, { scenarioPath: "sim/scenarios/mixed-400.yaml" }));
  const outcome = await runSweep("sim/scenarios/sweep-small.yaml", {
    sweeps: ["jobs.replicas=2,3", "network.medianLatency=20ms,2s"],
    seeds: 3,
    threads: 0,
  });
  writeSweep(join(dir, "sweep"), outcome, "sim/scenarios/sweep-small.yaml");
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
  });
  t.teardown(() => browser.close());
  await checkPage(t, browser, report, 4);
  await checkPage(t, browser, join(dir, "sweep", "comparison.html"), outcome.comparison.metrics.length);
});
