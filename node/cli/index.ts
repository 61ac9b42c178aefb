#!/usr/bin/env node
/**
 * The `cimesh` command. Every command takes --data-dir (or CIMESH_HOME;
 * default ~/.cimesh); every failure prints what to do and exits 1.
 *
 * Commands that work on files (init, project, trust, spec publish, run) need no
 * running node; commands about jobs and availability talk to the node running
 * in the data folder through its control API (node/control). `start` loads
 * the libp2p runtime lazily, so the other commands start fast and work
 * wherever it cannot load. The sandbox and store rooms are loaded by the
 * commands that use them too: the store room brings LevelDB with it, which no
 * other command needs.
 *
 * The commands live in one file per group: node-commands.ts (init, id, start,
 * stop, status, availability), project-commands.ts (project, trust, spec),
 * job-commands.ts (submit, jobs, logs, result, fetch, explain, cancel, run),
 * report-command.ts (report: a push-only build), image-commands.ts (image import), sim-command.ts (sim) and setup.ts (setup); common.ts holds the root
 * command and what they share. This file adds the commands, in the order
 * `cimesh --help` lists them, and runs the one asked for.
 */
import { CimeshError } from "../../crypto/index.ts";
import { program } from "./common.ts";
import { addImageCommand } from "./image-commands.ts";
import {
  addCancelCommand,
  addExplainCommand,
  addFetchCommand,
  addJobsCommand,
  addLogsCommand,
  addResultCommand,
  addRunCommand,
  addSubmitCommand,
} from "./job-commands.ts";
import {
  addAvailabilityCommand,
  addDashboardCommand,
  addIdCommand,
  addInitCommand,
  addStartCommand,
  addStatusCommand,
  addStopCommand,
} from "./node-commands.ts";
import { addProjectCommand, addSpecCommand, addTrustCommand } from "./project-commands.ts";
import { addReportCommand } from "./report-command.ts";
import { addSetupCommand } from "./setup.ts";
import { addSimCommand } from "./sim-command.ts";

addSetupCommand();
addInitCommand();
addIdCommand();
addProjectCommand();
addTrustCommand();
addSpecCommand();
addImageCommand();
addStartCommand();
addStopCommand();
addSubmitCommand();
addStatusCommand();
addDashboardCommand();
addJobsCommand();
addLogsCommand();
addResultCommand();
addFetchCommand();
addExplainCommand();
addCancelCommand();
addAvailabilityCommand();
addRunCommand();
addReportCommand();
addSimCommand();

function describeFailure(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.stderr.write(`cimesh: ${describeFailure(error)}\n`);
  if (!(error instanceof CimeshError) && process.env.CIMESH_DEBUG === "1" && error instanceof Error)
    process.stderr.write(`${error.stack}\n`);
  // At once: a start that failed part way may still hold a socket or a file that would keep the process alive.
  process.exit(1);
}
