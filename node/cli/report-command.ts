/**
 * `cimesh report <job.yaml>`: a push-only build (Tinderbox style). It runs
 * the job here, in the sandbox a worker uses (as `cimesh run` does), packs
 * its log and outputs into the node's blob store, and hands the report to the
 * node running in the data folder, whose reporter signs it and delivers it to
 * the project's masters, keeping it in its outbox until one answers
 * (jobs/reports.ts). Made for cron or a `while true` loop: its exit code says
 * what came of it, and the same report is never recorded twice.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cidOfBlob } from "../../crypto/index.ts";
import type { ReportDelivery, ReportStep } from "../../jobs/index.ts";
import type { ReportDraft } from "../control/index.ts";
import { formatDuration, maxJobFileBytes, parseJobFile } from "../files/index.ts";
import { CliOptionError, client, dataDirOf, duration, integer, out, program, readInputFile } from "./common.ts";
import { runJobFileHere } from "./job-commands.ts";

/** Exit codes of `cimesh report`, for the script that calls it. */
export const reportExitCodes = {
  /** The build passed and a master recorded the report. */
  passed: 0,
  /** The build failed (or timed out, was killed or refused) and a master recorded the report. */
  failed: 1,
  /** A master refused the report (the reason is printed): not allowed, over the rate limit, … */
  refused: 3,
  /** No master answered within --wait: the report stays in the node's outbox and is delivered later. */
  waiting: 4,
} as const;

/** How often the command asks the node whether a master answered. */
export const deliveryPollMs = 250;
/** How long the command waits for a master's answer by default before leaving the report to the node's outbox. */
export const defaultReportWaitMs = 30_000;
/** The log's files in the tree the report names. */
export const reportLogFiles = { stdout: "stdout.log", stderr: "stderr.log" } as const;

/** `--source URL@REV`: the repository and revision the build was made of (split at the last '@'). */
function sourceStamp(text: string | undefined): ReportDraft["source"] {
  if (text === undefined) return null;
  const at = text.lastIndexOf("@");
  if (at <= 0 || at === text.length - 1)
    throw new CliOptionError("--source", "URL@REV, e.g. https://example.org/repo.git@0123abcd", text);
  return { url: text.slice(0, at), revision: text.slice(at + 1) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Each step's outcome, exit code and duration, from the executor's step events; steps that never ran are skipped. */
function stepTimer(names: readonly string[]) {
  const startedAt = new Map<number, number>();
  const ended = new Map<number, { exitCode: number; durationMs: number }>();
  return {
    onStep(event: { kind: "start" | "exit"; index: number; exitCode?: number }) {
      if (event.kind === "start") startedAt.set(event.index, Date.now());
      else
        ended.set(event.index, {
          exitCode: event.exitCode ?? 0,
          durationMs: Math.max(0, Date.now() - (startedAt.get(event.index) ?? Date.now())),
        });
    },
    steps(endedAtMs: number): ReportStep[] {
      return names.map((name, index) => {
        const exit = ended.get(index);
        if (exit !== undefined)
          return {
            name,
            outcome: exit.exitCode === 0 ? "succeeded" : "failed",
            exitCode: exit.exitCode,
            durationMs: exit.durationMs,
          };
        const started = startedAt.get(index);
        // Started but never exited: timed out or killed in it.
        if (started !== undefined)
          return { name, outcome: "failed", exitCode: null, durationMs: Math.max(0, endedAtMs - started) };
        return { name, outcome: "skipped", exitCode: null, durationMs: 0 };
      });
    },
  };
}

function describeDelivery(delivery: ReportDelivery): string {
  switch (delivery.state) {
    case "waiting":
      return `waiting for a master's answer (${delivery.tries} tries so far); the node keeps it in its outbox and sends it again until one answers`;
    case "done":
      return `${delivery.verdict}${delivery.reason === delivery.verdict ? "" : ` (${delivery.reason})`}`;
    case "unknown":
      return "unknown to the node (its outbox forgot it)";
  }
}

/** Adds `report <job.yaml>`: a build made here, reported to the project's masters. */
export function addReportCommand(): void {
  program
    .command("report")
    .description(
      "build a job here on your own schedule (cron, a while-true loop) and report the result to the project's masters",
    )
    .argument("<job.yaml>", "the job file")
    .option("--source <url@rev>", "the source stamp: the repository URL and the revision built")
    .option("--shard <n>", "which shard to run (CIMESH_SHARD_INDEX)", integer("--shard", 0, 255), 0)
    .option("--allow-network", "let the job have the network if it asks for it")
    .option("--allow-unsandboxed", "run bare where bubblewrap is missing (the job gets your user's access)")
    .option(
      "--wait <duration>",
      "how long to wait for a master's answer before leaving the report to the node's outbox (e.g. 30s, 0s)",
      duration("--wait"),
    )
    .option("--report-id <id>", "the report's id (report-…); by default a new one: the same id is recorded once")
    .option("--json", "print the report's delivery as JSON")
    .addHelpText(
      "after",
      `\nExit codes: ${reportExitCodes.passed} passed and recorded, ${reportExitCodes.failed} failed and recorded, ` +
        `${reportExitCodes.refused} refused by the master, ${reportExitCodes.waiting} not answered yet (the node delivers it later).`,
    )
    .action(
      async (
        path: string,
        options: {
          source?: string;
          shard: number;
          allowNetwork?: boolean;
          allowUnsandboxed?: boolean;
          wait?: number;
          reportId?: string;
          json?: boolean;
        },
      ) => {
        const source = sourceStamp(options.source);
        const text = await readInputFile(path, maxJobFileBytes, "a job file");
        const parsed = parseJobFile(text, path, Date.now());
        if (options.shard >= parsed.spec.shards)
          throw new CliOptionError("--shard", `below the job's shards (${parsed.spec.shards})`, options.shard);
        const api = client();
        // The node must run (it signs, delivers and serves the log and outputs) and trust the project: asked first.
        const status = await api.status();
        if (!status.trusted.some((entry) => entry.project === parsed.project))
          throw new CliOptionError(
            "project",
            `a project this node trusts (\`cimesh trust add\`), whose masters take reports`,
            parsed.project,
          );
        const reportId = options.reportId ?? `report-${randomBytes(8).toString("hex")}`;
        const logs = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
        const timer = stepTimer(parsed.spec.steps.map((step) => step.name));
        const startedAtMs = Date.now();
        const report = await runJobFileHere(
          path,
          parsed,
          { ...options, nodeStore: true },
          {
            onLog: (chunk) => {
              logs[chunk.stream].push(Buffer.from(chunk.data));
              (chunk.stream === "stdout" ? process.stdout : process.stderr).write(chunk.data);
            },
            onStep: (event) => timer.onStep(event),
          },
        );
        const endedAtMs = Math.max(startedAtMs, Date.now());
        // The log as a tree of the node's blob store, which the node serves: the master fetches it by its CID.
        const { openBlobStore, packTree } = await import("../store/index.ts");
        const store = await openBlobStore(join(dataDirOf(), "blobs"));
        const folder = await mkdtemp(join(tmpdir(), "cimesh-report-log-"));
        let logDigest: string;
        try {
          await writeFile(join(folder, reportLogFiles.stdout), Buffer.concat(logs.stdout));
          await writeFile(join(folder, reportLogFiles.stderr), Buffer.concat(logs.stderr));
          logDigest = (await packTree(folder, store)).root;
        } finally {
          await rm(folder, { recursive: true, force: true });
        }
        const draft: ReportDraft = {
          project: parsed.project,
          reportId,
          jobName: parsed.spec.name,
          jobDigest: cidOfBlob(new TextEncoder().encode(text)),
          source,
          shard: options.shard,
          shards: parsed.spec.shards,
          steps: timer.steps(endedAtMs),
          exitCode: report.exitCode,
          outcome: report.outcome,
          outputsDigest: report.outputsDigest,
          logDigest,
          summary: report.summary,
          durationMs: report.durationMs,
          startedAtMs,
          endedAtMs,
        };
        if (api.queueReport === undefined || api.reportDelivery === undefined)
          throw new CliOptionError("--data-dir", "a node that takes reports", dataDirOf());
        let delivery = await api.queueReport(draft);
        const waitMs = options.wait ?? defaultReportWaitMs;
        const giveUpAtMs = Date.now() + waitMs;
        while (delivery.state === "waiting" && Date.now() < giveUpAtMs) {
          await sleep(Math.min(deliveryPollMs, Math.max(0, giveUpAtMs - Date.now())));
          delivery = await api.reportDelivery(reportId);
        }
        if (options.json === true)
          out(
            JSON.stringify({
              reportId,
              outcome: report.outcome,
              logDigest,
              outputsDigest: report.outputsDigest,
              delivery,
            }),
          );
        else {
          process.stderr.write(
            `cimesh report: ${report.outcome}${report.exitCode === null ? "" : `, exit ${report.exitCode}`} after ${formatDuration(report.durationMs)}\n` +
              `  report  ${reportId}\n  outputs ${report.outputsDigest ?? "-"}\n  log     ${logDigest}\n`,
          );
          out(`${reportId}: ${describeDelivery(delivery)}`);
        }
        if (delivery.state !== "done") process.exitCode = reportExitCodes.waiting;
        else if (delivery.verdict === "refused" || delivery.verdict === "undelivered")
          process.exitCode = reportExitCodes.refused;
        else process.exitCode = report.outcome === "succeeded" ? reportExitCodes.passed : reportExitCodes.failed;
      },
    );
}
