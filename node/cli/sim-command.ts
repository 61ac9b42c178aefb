/**
 * `cimesh sim`: the simulator of sim/, loaded only when this command runs.
 * The CLI is the one part of node/ that uses sim/.
 */
import { integer, program } from "./common.ts";

/** Adds `sim <scenario.yaml>`: runs a scenario and writes its metrics and report. */
export function addSimCommand(): void {
  program
    .command("sim")
    .description("simulate a mesh of thousands of nodes from a scenario file; writes metrics.json and report.html")
    .argument("<scenario.yaml>", "the scenario file (examples in sim/scenarios/)")
    .option("--seed <n>", "the seed (default: the scenario's)", integer("--seed", 0, 2 ** 31 - 1))
    .option("--out <dir>", "where to write metrics.json and report.html (default sim-out/<name>-seed<N>)")
    .action(async (path: string, options: { seed?: number; out?: string }) => {
      const { runSimCommand } = await import("../../sim/index.ts");
      process.exitCode = await runSimCommand(path, options);
    });
}
