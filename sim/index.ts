/**
 * sim/: the simulated shell (DESIGN.md, Layers). A deterministic discrete-event
 * simulator that runs the real crypto/, capabilities/ and jobs/ code inside
 * thousands of simulated nodes, over a modelled network and gossip mesh, with
 * faults and hostile actors, and checks the invariants from outside.
 *
 * The real-libp2p comparison (`compareGossipWithLibp2p`) loads libp2p only when
 * called, so `cimesh sim` starts fast.
 */
export {
  type Comparison,
  comparisonJson,
  type Distribution,
  distribution,
  keyMetrics,
  readMetricsFile,
  runFigures,
  tQuantile975,
} from "./compare.ts";
export { compareFiles, comparisonTable, runCompareCommand } from "./compare-command.ts";
export { renderComparison } from "./compare-report.ts";
export { type RunOptions, Simulation, simulate } from "./engine.ts";
export {
  type Delivery,
  GossipModel,
  type GossipParams,
  gossipsubDefaults,
  type Links,
  type PublishOutcome,
} from "./gossip.ts";
export { invariantNames, type Violation } from "./invariants.ts";
export type { Metrics, SeriesPoint } from "./metrics.ts";
export { Network, type NetworkParams } from "./network.ts";
export type { EndedJob, Sabotage } from "./observer.ts";
export { dayMs, simProjectId } from "./population.ts";
export { simEpochMs } from "./queue.ts";
export { formatMs, formatNumber, renderReport } from "./report.ts";
export { seededRng } from "./rng.ts";
export {
  assertInvariants,
  exampleScenarioPath,
  InvariantError,
  loadScenario,
  loadScenarioWith,
  maxSeed,
  metricsJson,
  reproduceCommand,
  runSimCommand,
} from "./run.ts";
export {
  exampleScenarioNames,
  parseDurationMs,
  parseScenario,
  type Scenario,
  ScenarioError,
  scaleScenario,
  scenarioSchema,
  shrinkScenario,
  withoutSybilRules,
} from "./scenario.ts";
export { exactQuantile, Histogram, type Percentiles } from "./stats.ts";
export {
  runSweep,
  runSweepCommand,
  type SweepOptions,
  type SweepOutcome,
  sweepCombinations,
  verdictLines,
  writeSweep,
} from "./sweep.ts";
export { parseFieldValues, SweepFieldError } from "./sweep-fields.ts";
export { fastEnvelopeBytes } from "./wire.ts";
export { simJobId } from "./workload.ts";

/** Runs the gossip model and real libp2p nodes (in this process, over @libp2p/memory) on the same scenario. */
export async function compareGossipWithLibp2p(
  options: Partial<import("./libp2p-check.ts").ComparisonOptions> = {},
): Promise<import("./libp2p-check.ts").Comparison> {
  const { compareGossip } = await import("./libp2p-check.ts");
  return compareGossip(options);
}
