/**
 * The simulator's figures: simulated events per second (fast and real signatures),
 * the wall time, CPU time and peak memory of the 10,000-worker, 100-project,
 * 100,000-job, one-simulated-day scenario, what standing offers cost per
 * worker as the mesh grows (the mixed-400 shape at 1,000, 3,000 and 10,000
 * workers: messages per worker per hour), and how far the gossip model's
 * delivery latencies are from real libp2p nodes on @libp2p/memory.
 *
 * The large runs go in a child process (this file with --sim-child), so the
 * peak RSS is theirs alone and V8 can be given a larger young generation
 * (--max-semi-space-size: the simulator allocates many short-lived objects).
 */
import { spawnSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { getHeapStatistics } from "node:v8";
import {
  compareGossipWithLibp2p,
  exampleScenarioPath,
  loadScenario,
  type Scenario,
  scaleScenario,
  simulate,
} from "../sim/index.ts";

/** Runs per figure of events per second: the median is reported. */
export const eventRateRunsCount = 3;
/** V8's young generation for the large runs, in MiB. */
export const semiSpaceMiB = 64;
/** A large run that takes longer than this is stopped, and said to have been. */
export const childTimeoutMs = 40 * 60_000;
/** The mesh sizes the per-worker cost is measured at, and how long jobs arrive at each (the mixed-400 shape). */
export const perWorkerSizesCount = [1_000, 3_000, 10_000] as const;
export const perWorkerArrivalsMs = 10 * 60_000;
/** Messages per worker per hour may grow this much from the smallest mesh to the largest and still be flat. */
export const maxPerWorkerGrowthRatio = 1.5;

export interface ChildFigures {
  readonly scenario: string;
  readonly signatures: string;
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly events: number;
  readonly eventsPerSecond: number;
  readonly maxRssBytes: number;
  readonly peakHeapBytes: number;
  readonly submitted: number;
  readonly passed: number;
  readonly lost: number;
  readonly bidsPerJob: number;
  readonly violations: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1] as number;
}

/** In the child: run one scenario, print its figures as one JSON line. */
function runChild(name: string, signatures: "real" | "fast", scale: number): void {
  const base = loadScenario(exampleScenarioPath(name));
  const scenario: Scenario =
    scale === 1
      ? { ...base, signatures }
      : {
          ...base,
          signatures,
          projects: Math.max(1, Math.round(base.projects * scale)),
          workers: { ...base.workers, count: Math.round(base.workers.count * scale) },
          jobs: { ...base.jobs, count: Math.round(base.jobs.count * scale) },
        };
  let peakHeap = 0;
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  const metrics = simulate(scenario, scenario.seed, {
    onProgress: () => {
      // V8's own figure: process.memoryUsage() also reads /proc for the RSS, 2% of a large run's CPU at this rate.
      peakHeap = Math.max(peakHeap, getHeapStatistics().used_heap_size);
    },
  });
  const wallMs = performance.now() - start;
  const cpu = process.cpuUsage(cpuStart);
  const figures: ChildFigures = {
    scenario: scale === 1 ? name : `${name} at ${scale}×`,
    signatures,
    wallMs: Math.round(wallMs),
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    events: metrics.run.events,
    eventsPerSecond: Math.round(metrics.run.events / (wallMs / 1000)),
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    peakHeapBytes: peakHeap,
    submitted: metrics.jobs.submitted,
    passed: metrics.jobs.passed,
    lost: metrics.jobs.lost,
    bidsPerJob: metrics.bidsPerJob,
    violations: metrics.invariants.violations.length,
  };
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

/** A run stopped at childTimeoutMs. */
export interface Stopped {
  readonly scenario: string;
  readonly signatures: string;
  readonly stoppedAfterMs: number;
}

export function inChild(name: string, signatures: "real" | "fast", scale: number): ChildFigures | Stopped {
  const child = spawnSync(
    process.execPath,
    [
      `--max-semi-space-size=${semiSpaceMiB}`,
      fileURLToPath(import.meta.url),
      "--sim-child",
      name,
      signatures,
      String(scale),
    ],
    { encoding: "utf8", timeout: childTimeoutMs, maxBuffer: 1 << 20 },
  );
  const line = child.stdout.trim().split("\n").pop() ?? "";
  if (child.status === null && (child.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT")
    return { scenario: `${name} at ${scale}×`, signatures, stoppedAfterMs: childTimeoutMs };
  if (child.status !== 0 || !line.startsWith("{"))
    throw new Error(`sim bench child ${name} ${signatures}: exit ${child.status}: ${child.stderr.slice(-2000)}`);
  return JSON.parse(line) as ChildFigures;
}

function eventsPerSecond(scenario: Scenario): { eventsPerSecond: number; events: number } {
  const rates: number[] = [];
  let events = 0;
  for (let run = 0; run < eventRateRunsCount; run++) {
    const start = performance.now();
    const metrics = simulate(scenario, run + 1);
    events = metrics.run.events;
    rates.push(events / ((performance.now() - start) / 1000));
  }
  return { eventsPerSecond: Math.round(median(rates)), events };
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const mib = (bytes: number) => `${fmt(bytes / 2 ** 20)} MiB`;

function describe(f: ChildFigures | Stopped): string {
  if ("stoppedAfterMs" in f)
    return `${f.scenario} (${f.signatures} signatures): stopped after ${fmt(f.stoppedAfterMs / 60_000)} min (childTimeoutMs)`;
  return `${f.scenario} (${f.signatures} signatures): ${(f.wallMs / 1000).toFixed(1)} s wall, ${(f.cpuMs / 1000).toFixed(1)} s cpu, ${fmt(f.events)} events (${fmt(f.eventsPerSecond)}/s), max RSS ${mib(f.maxRssBytes)}, peak heap ${mib(f.peakHeapBytes)}; jobs ${fmt(f.submitted)} submitted, ${fmt(f.passed)} passed, ${f.lost} lost; bids/job ${f.bidsPerJob}; violations ${f.violations}`;
}

/**
 * The mixed-400 shape (6 projects per 400 workers, 3 per worker, 2 slots, jobs of 2 shards × 2 replicas, churn and a
 * partition) at each size, projects and jobs in proportion, jobs arriving for perWorkerArrivalsMs: every transmission
 * over the hours workers spent online while jobs arrived. Flat means the largest mesh's figure is at most
 * maxPerWorkerGrowthRatio times the smallest's.
 */
function perWorkerCost(): Record<string, unknown> {
  const base = loadScenario(exampleScenarioPath("mixed-400"));
  const figures: Record<string, unknown>[] = [];
  for (const workers of perWorkerSizesCount) {
    const scenario = scaleScenario(base, { workers, duration: perWorkerArrivalsMs });
    const cpuStart = process.cpuUsage();
    const m = simulate(scenario, scenario.seed);
    const cpu = process.cpuUsage(cpuStart);
    const row = {
      workers,
      projects: scenario.projects,
      jobs: m.jobs.submitted,
      messagesPerWorkerHourArriving: m.messagesPerWorkerHourArriving,
      messagesPerWorkerHour: m.messagesPerWorkerHour,
      messagesPerJob: m.messagesPerJob,
      offersAndBidsPerWantedRun: m.offersAndBidsPerWantedRun,
      passed: m.jobs.passed,
      failed: m.jobs.failed,
      lost: m.jobs.lost,
      violations: m.invariants.violations.length,
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    };
    figures.push(row);
    console.log(
      `${`messages per worker per hour, mixed-400 shape at ${fmt(workers)} workers`.padEnd(58)} ${row.messagesPerWorkerHourArriving.toFixed(1).padStart(12)}   (while jobs arrive; ${row.messagesPerWorkerHour.toFixed(1)} over the whole run; ${fmt(scenario.projects)} projects, ${fmt(row.jobs)} jobs: ${row.passed} passed, ${row.failed} failed, ${row.lost} lost; ${row.messagesPerJob.toFixed(0)} messages and ${row.offersAndBidsPerWantedRun} offers and bids per wanted run; ${row.violations} violations; ${(row.cpuMs / 1000).toFixed(1)} s cpu)`,
    );
  }
  const first = figures[0]?.messagesPerWorkerHourArriving as number;
  const last = figures[figures.length - 1]?.messagesPerWorkerHourArriving as number;
  const ratio = last / Math.max(1e-9, first);
  console.log(
    `${`per-worker cost ${fmt(perWorkerSizesCount[perWorkerSizesCount.length - 1] as number)} / ${fmt(perWorkerSizesCount[0])} workers`.padEnd(58)} ${ratio.toFixed(2).padStart(12)}   (flat: at most ${maxPerWorkerGrowthRatio}; ${ratio <= maxPerWorkerGrowthRatio ? "holds" : "DOES NOT HOLD"})`,
  );
  return { figures, ratio, flat: ratio <= maxPerWorkerGrowthRatio };
}

export async function benchSim(): Promise<unknown> {
  const results: Record<string, unknown> = {};
  results.perWorkerCost = perWorkerCost();
  const partition = loadScenario(exampleScenarioPath("partition-heals"));
  for (const signatures of ["fast", "real"] as const) {
    const rate = eventsPerSecond({ ...partition, signatures });
    results[`eventsPerSecond.partitionHeals.${signatures}`] = rate;
    console.log(
      `${`simulated events/s, partition-heals, ${signatures} signatures`.padEnd(58)} ${fmt(rate.eventsPerSecond).padStart(12)} /s   (${fmt(rate.events)} events)`,
    );
  }
  // The day at a tenth of the size, both signature modes: what real signatures cost at scale.
  for (const signatures of ["fast", "real"] as const) {
    const figures = inChild("scale-10k", signatures, 0.1);
    results[`scaleTenth.${signatures}`] = figures;
    console.log(describe(figures));
  }
  const scale = inChild("scale-10k", "fast", 1);
  results.scale10k = scale;
  console.log(describe(scale));

  const comparison = await compareGossipWithLibp2p({ nodes: 50 });
  results.gossipVsLibp2p = comparison;
  console.log(
    `gossip model vs libp2p (50 nodes, ${comparison.options.messages} messages): delivery ${comparison.model.deliveryFraction} vs ${comparison.libp2p.deliveryFraction}; p50/p90/p99 model ${comparison.model.p50Ms}/${comparison.model.p90Ms}/${comparison.model.p99Ms} ms, libp2p ${comparison.libp2p.p50Ms}/${comparison.libp2p.p90Ms}/${comparison.libp2p.p99Ms} ms; factor ${comparison.latencyFactor} (hop calibrated at ${comparison.hop.medianMs.toFixed(1)} ms), ${comparison.uncalibratedLatencyFactor} at the transport's latency alone; mean hops model ${comparison.model.meanHops} vs libp2p ${comparison.libp2p.meanHops} (factor ${comparison.hopsFactor})`,
  );
  return results;
}

const childAt = process.argv.indexOf("--sim-child");
if (childAt >= 0) {
  const [name, signatures, scale] = process.argv.slice(childAt + 1);
  runChild(name ?? "scale-10k", signatures === "real" ? "real" : "fast", Number(scale ?? 1));
}
