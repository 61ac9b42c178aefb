/** One run of a sweep, the same in a worker thread and in the calling thread. */

import { type RunFigures, runFigures } from "./compare.ts";
import { simulate } from "./engine.ts";
import type { Metrics } from "./metrics.ts";
import type { Sabotage } from "./observer.ts";
import type { Scenario } from "./scenario.ts";

export interface SweepTask {
  readonly index: number;
  readonly scenario: Scenario;
  readonly seed: number;
  /** Test-only: break this run on purpose (observer.ts, Sabotage). */
  readonly sabotage?: Sabotage;
}

export interface SweepTaskResult {
  readonly index: number;
  readonly figures: RunFigures | null;
  /** The invariants broken, as `name jobId: detail` lines; empty when all held. */
  readonly violations: readonly string[];
  /** The whole metrics of a run that broke an invariant, for its own report. */
  readonly metrics: Metrics | null;
  /** The message of an exception the run threw. */
  readonly error: string | null;
}

export function runSweepTask(task: SweepTask): SweepTaskResult {
  try {
    const metrics = simulate(task.scenario, task.seed, task.sabotage === undefined ? {} : { sabotage: task.sabotage });
    const violations = metrics.invariants.violations.map((v) => `${v.invariant} ${v.jobId}: ${v.detail}`);
    return {
      index: task.index,
      figures: runFigures(metrics),
      violations,
      metrics: violations.length > 0 ? metrics : null,
      error: null,
    };
  } catch (error) {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    return { index: task.index, figures: null, violations: [], metrics: null, error: message };
  }
}
