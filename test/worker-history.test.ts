/**
 * A volunteer sees what its node did: real `cimesh start` processes, a project node that is master and worker and a
 * volunteer worker, a job of two shards that sleeps a little. On the volunteer, `status` names the job its busy slot
 * runs, `jobs` lists the run it did, `logs` and `result` show its own run, the node's log has a `run-ended` event,
 * `/metrics` counts it, and the history is still there after a restart. On the project node, `jobs` shows both its
 * views, each under its heading. Needs bubblewrap (the jobs run in the sandbox).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import type { RunSummary } from "../node/control/index.ts";
import { probeSandbox } from "../node/sandbox/index.ts";
import { parseExposition, sampleValue } from "./exposition.ts";
import { cli, cliOk, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

/** Bound on the job's end: two shards of a few seconds each, on a loaded 2-core machine. */
const jobWaitMs = 90_000;
/** How long each shard sleeps: long enough to see its slot busy with a CLI call or two. */
const shardSleepSeconds = 6;

async function sandboxProblem(): Promise<string | null> {
  const workRoot = await mkdtemp(join(tmpdir(), "cimesh-history-probe-"));
  try {
    const probe = await probeSandbox({ workRoot });
    return probe.ok ? null : probe.reason;
  } finally {
    await rm(workRoot, { recursive: true, force: true });
  }
}

async function onlyRun(node: NodeProcess, jobId: string): Promise<RunSummary> {
  const runs = await node.control.runs(jobId);
  if (runs.length !== 1) throw new Error(`expected one run of ${jobId} on ${node.name}, got ${runs.length}`);
  return runs[0] as RunSummary;
}

test.serial(
  "a worker lists the runs it did, shows their logs and results, names what its busy slot runs, counts them in /metrics, and keeps them across a restart",
  async (t) => {
    const problem = await sandboxProblem();
    if (problem !== null) {
      t.fail(`needs bubblewrap with unprivileged user namespaces to run jobs, and cannot make it here: ${problem}`);
      return;
    }
    const mesh = await Mesh.create();
    try {
      const masterDir = await mesh.initNode("project");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      await mesh.configure(masterDir, [[["worker", "slots"], 1]]);
      const master = await mesh.start("project", masterDir, ["--master", "--worker"]);
      const workerDir = await mesh.initNode("volunteer");
      await cliOk(workerDir, trustArgs);
      await mesh.configure(workerDir, [[["worker", "slots"], 1]]);
      const workerFlags = ["--worker", "--bootstrap", master.address];
      const worker = await mesh.start("volunteer", workerDir, workerFlags);
      // Both slots on offer: the job's two shards go one to each.
      await until("offers of both workers held by the master", async () => {
        const held = (await master.control.status()).offersHeld[project];
        return held !== undefined && held.workers >= 2;
      });

      const jobFile = await writeJob(mesh, "history", project, {
        id: "hist-1",
        shards: 2,
        steps: [
          "echo shard $CIMESH_SHARD_INDEX says hello",
          `sleep ${shardSleepSeconds}`,
          "mkdir -p dist && echo $CIMESH_SHARD_INDEX > dist/out.txt",
        ],
        outputs: ["dist"],
        timeout: "2m",
      });
      await cliOk(masterDir, ["submit", jobFile]);

      // While it sleeps, status names what the slot runs.
      const busy = await until(
        "the volunteer's slot to run a shard of hist-1",
        async () => (await worker.control.status()).busySlots.find((slot) => slot.jobId === "hist-1"),
        jobWaitMs,
      );
      t.is(busy.project, project);
      const status = await cliOk(workerDir, ["status"]);
      t.regex(
        status,
        new RegExp(
          `slot +hist-1 "history" shard ${busy.shard}, attempt ${busy.attempt} \\(project ${project}\\) since \\S+ \\S+ \\(\\d+s ago\\)`,
        ),
        status,
      );
      t.regex(status, /running +1 of 1 slot\(s\)/);

      const detail = await until(
        "hist-1 to end",
        async () => {
          const job = await master.control.job("hist-1");
          return job !== null && job.status !== "open" ? job : null;
        },
        jobWaitMs,
      );
      t.is(detail.status, "passed", JSON.stringify(detail.attempts));
      const run = await until("the volunteer's run of hist-1 to be written down", async () => {
        const found = await onlyRun(worker, "hist-1");
        return found.state === "ended" ? found : null;
      });
      t.is(run.shard, busy.shard);
      t.is(run.master, master.peerId, "the master named by its PeerId");
      const reported = detail.attempts.find((attempt) => attempt.shard === run.shard && attempt.resultDigest !== null);
      t.is(run.resultDigest, reported?.resultDigest ?? "none reported", "the digest the master was told");

      // jobs, logs and result on the volunteer.
      const jobs = await cliOk(workerDir, ["jobs"]);
      t.regex(jobs, /^runs this node did as a worker \(oldest first\):$/m);
      t.regex(
        jobs,
        new RegExp(
          `^hist-1  shard ${run.shard} of 2, attempt ${run.attempt}  succeeded, exit 0 after \\S+; ended \\S+ \\S+  history  \\(project ${project.slice(0, 12)}…\\)$`,
          "m",
        ),
        jobs,
      );
      t.false(jobs.includes("no jobs: submit one"), "a worker is not told to submit jobs");
      const logs = await cliOk(workerDir, ["logs", "hist-1"]);
      t.regex(logs, new RegExp(`shard ${run.shard} says hello`));
      const result = await cliOk(workerDir, ["result", "hist-1"]);
      t.regex(result, /the runs of this node's worker/);
      t.true(result.includes(`result   ${run.resultDigest}`), result);
      t.regex(result, /outputs {2}baf\S+/);
      const unknown = await cli(workerDir, ["logs", "hist-none"]);
      t.is(unknown.code, 1);
      t.regex(unknown.stderr, /job hist-none: no such job on this node/);

      // The node's log: one event for the run's end.
      const ended = worker.events.filter((event) => event.event === "run-ended" && event.jobId === "hist-1");
      t.is(ended.length, 1);
      t.like(ended[0], { shard: run.shard, attempt: run.attempt, outcome: "succeeded", exitCode: 0 });
      t.true(Number(ended[0]?.durationMs) >= shardSleepSeconds * 1000, `durationMs ${ended[0]?.durationMs}`);

      // The metrics of the volunteer say the same.
      const samples = parseExposition(await worker.control.metrics());
      t.is(sampleValue(samples, "cimesh_runs_total", { outcome: "succeeded" }), 1);
      t.is(sampleValue(samples, "cimesh_run_history_entries"), 1);
      t.is(sampleValue(samples, "cimesh_worker_slots"), 1);
      t.is(sampleValue(samples, "cimesh_worker_slots_busy"), 0);
      t.true((sampleValue(samples, "cimesh_messages_sent_total", { type: "offer" }) ?? 0) >= 1, "offers sent");
      t.true((sampleValue(samples, "cimesh_messages_sent_total", { type: "result" }) ?? 0) >= 1, "a result sent");
      t.true((sampleValue(samples, "cimesh_messages_received_total", { type: "award" }) ?? 0) >= 1, "an award");
      t.true(
        (sampleValue(samples, "cimesh_admissions_total", { verdict: "accept", reason: "taken" }) ?? 0) >= 1,
        "admissions by verdict and reason",
      );
      t.true((sampleValue(samples, "cimesh_peers") ?? 0) >= 1);
      t.true((sampleValue(samples, "cimesh_blob_cache_bytes") ?? 0) > 0, "the outputs are in the blob cache");
      t.true(samples.some((sample) => sample.name.startsWith("libp2p_")));
      const masterSamples = parseExposition(await master.control.metrics());
      t.is(sampleValue(masterSamples, "cimesh_jobs", { project, state: "passed" }), 1);
      t.true((sampleValue(masterSamples, "cimesh_messages_received_total", { type: "offer" }) ?? 0) >= 1);

      // The project node is master and worker: both views, each under its heading.
      const both = await cliOk(masterDir, ["jobs"]);
      const masterHeading = both.indexOf("jobs of the projects this node is master of (1):");
      const workerHeading = both.indexOf("runs this node did as a worker (oldest first):");
      t.true(masterHeading >= 0 && workerHeading > masterHeading, both);
      t.regex(both.slice(masterHeading, workerHeading), /^hist-1 +passed/m);
      t.regex(both.slice(workerHeading), /^hist-1 {2}shard \d of 2, attempt \d+ {2}succeeded/m);
      const json = JSON.parse(await cliOk(masterDir, ["jobs", "--json"])) as { master: unknown[]; worker: unknown[] };
      t.is(json.master.length, 1);
      t.is(json.worker.length, 1);

      // A restart keeps the history.
      await worker.stop();
      const again = await mesh.start("volunteer", workerDir, workerFlags);
      t.deepEqual(await onlyRun(again, "hist-1"), run);
      const after = await cliOk(workerDir, ["jobs"]);
      t.regex(after, new RegExp(`^hist-1  shard ${run.shard} of 2, attempt ${run.attempt}  succeeded`, "m"));
      t.regex(await cliOk(workerDir, ["logs", "hist-1"]), new RegExp(`shard ${run.shard} says hello`));
    } finally {
      await mesh.stopAll();
    }
  },
);
