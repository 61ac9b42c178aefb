/**
 * `cimesh sim`: the simulator of sim/, loaded only when this command runs.
 * The CLI is the one part of node/ that uses sim/.
 */
import type { Command } from "commander";
import { collect, integer, program } from "./common.ts";

const maxSeed = 2 ** 31 - 1;
const maxSeedsCount = 10_000;
const maxThreadsCount = 1024;

interface SimOptions {
  seed?: number;
  out?: string;
  set?: string[];
  sweep?: string[];
  seeds?: number;
  threads?: number;
}

/**
 * Adds `sim <scenario.yaml>`: runs a scenario and writes its metrics and report, or with `--sweep` runs every
 * combination of the swept values over `--seeds` seeds and writes a comparison; and `sim compare <runs...>`.
 */
export function addSimCommand(): void {
  const sim = program
    .command("sim")
    .description(
      "simulate a mesh of thousands of nodes from a scenario file; writes metrics.json and report.html, or with --sweep comparison.json and comparison.html",
    )
    .argument("<scenario.yaml>", "the scenario file (examples in sim/scenarios/)")
    .option("--seed <n>", "the seed, or a sweep's first seed (default: the scenario's)", integer("--seed", 0, maxSeed))
    .option(
      "--set <field=value>",
      "set a scenario field by its dotted path (repeatable), e.g. jobs.replicas=3",
      collect,
    )
    .option(
      "--sweep <field=v1,v2,...>",
      "sweep a scenario field by its dotted path over the values (repeatable: every combination)",
      collect,
    )
    .option(
      "--seeds <n>",
      "with --sweep: seeds per combination, from --seed on (default 1)",
      integer("--seeds", 1, maxSeedsCount),
    )
    .option(
      "--threads <n>",
      "with --sweep: worker threads (default: the machine's cores)",
      integer("--threads", 0, maxThreadsCount),
    )
    .option("--out <dir>", "where to write (default sim-out/<name>-seed<N>, or sim-out/<name>-sweep)")
    .action(async (path: string, options: SimOptions) => {
      const sim = await import("../../sim/index.ts");
      if (options.sweep !== undefined && options.sweep.length > 0) {
        if (options.set !== undefined && options.set.length > 0) {
          process.stderr.write(
            "cimesh: --set: expected no --set with --sweep (sweep a field over one value instead)\n",
          );
          process.exitCode = 1;
          return;
        }
        process.exitCode = await sim.runSweepCommand(path, {
          sweep: options.sweep,
          seeds: options.seeds ?? 1,
          ...(options.seed === undefined ? {} : { seed: options.seed }),
          ...(options.out === undefined ? {} : { out: options.out }),
          ...(options.threads === undefined ? {} : { threads: options.threads }),
        });
        return;
      }
      if (options.seeds !== undefined || options.threads !== undefined) {
        process.stderr.write("cimesh: --seeds, --threads: expected only with --sweep\n");
        process.exitCode = 1;
        return;
      }
      process.exitCode = await sim.runSimCommand(path, options);
    });
  sim
    .command("compare")
    .description("compare runs made separately: each argument a metrics.json or a directory of them (one group)")
    .argument("<runs...>", "metrics.json files or directories holding them")
    .option("--out <dir>", "where to write compare.json and compare.html (default sim-out/compare)")
    .action(async (paths: string[], _options: unknown, command: Command) => {
      const { runCompareCommand } = await import("../../sim/index.ts");
      // --out is the sim command's option too: commander hands it to whichever command it reads it for.
      process.exitCode = runCompareCommand(paths, command.optsWithGlobals<{ out?: string }>());
    });
}
