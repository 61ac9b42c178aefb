/**
 * Locks with real `cimesh start` processes over TCP on 127.0.0.1, jobs in the
 * bubblewrap sandbox: a project lock bounds the runs holding it across the
 * mesh, whichever workers run them; a worker lock declared in config.yaml
 * bounds them on that worker. Both are judged from the workers' own records
 * of their runs (start and end as each worker's history wrote them, via its
 * control API), never from the master. Needs bubblewrap (the jobs run in the
 * sandbox).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import type { RunSummary } from "../node/control/index.ts";
import { parseJobFile } from "../node/files/index.ts";
import { probeSandbox } from "../node/sandbox/index.ts";
import { cliOk, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

const jobWaitMs = 150_000;
/** The lease the master grants (the workers renew every second, as in the other mesh tests). */
const leaseMs = 10_000;
/** How long each job sleeps: long enough that two rounds of holders could not pass for one. */
const jobSleepSeconds = 2;

async function sandboxProblem(): Promise<string | null> {
  const workRoot = await mkdtemp(join(tmpdir(), "cimesh-locks-probe-"));
  try {
    const probe = await probeSandbox({ workRoot });
    return probe.ok ? null : probe.reason;
  } finally {
    await rm(workRoot, { recursive: true, force: true });
  }
}

/** The most of these runs under way at one instant, by their workers' own start and end times. */
function mostAtOnce(runs: readonly RunSummary[]): number {
  const edges: [atMs: number, delta: number][] = [];
  for (const run of runs) edges.push([run.startedAtMs, 1], [run.endedAtMs ?? Number.POSITIVE_INFINITY, -1]);
  // At one instant an end comes before a start: a run that ended as another began did not run beside it.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, delta] of edges) {
    now += delta;
    most = Math.max(most, now);
  }
  return most;
}

async function runsOf(workers: readonly NodeProcess[], prefix: string): Promise<RunSummary[]> {
  const lists = await Promise.all(workers.map((worker) => worker.control.runs()));
  return lists.flat().filter((run) => run.jobId.startsWith(prefix));
}

async function allEnded(master: NodeProcess, jobIds: readonly string[]): Promise<Map<string, string>> {
  return until(
    `${jobIds.length} jobs to end`,
    async () => {
      const statuses = new Map<string, string>();
      for (const jobId of jobIds) {
        const detail = await master.control.job(jobId);
        if (detail === null || detail.status === "open") return null;
        statuses.set(jobId, detail.status);
      }
      return statuses;
    },
    jobWaitMs,
  );
}

/** The mesh both tests use: a project's master and five volunteers, the first with two slots and a vm lock of 1. */
interface Setup {
  readonly mesh: Mesh;
  readonly project: string;
  readonly master: NodeProcess;
  readonly workers: readonly NodeProcess[];
}

let started: Promise<Setup | string> | null = null;

/** The mesh, started by the first test that asks for it; or why jobs cannot run here. */
function meshOnce(): Promise<Setup | string> {
  started ??= (async () => {
    const problem = await sandboxProblem();
    if (problem !== null)
      return `needs bubblewrap with unprivileged user namespaces to run jobs, and cannot make it here: ${problem}`;
    const mesh = await Mesh.create();
    // A lease long enough that a loaded machine's stalls do not lapse it: what is judged is the bound, not lease loss.
    const masterDir = await mesh.initNode("project", { leaseMs });
    const { project, trustArgs } = await mesh.initProject(masterDir);
    const master = await mesh.start("project", masterDir, ["--master"]);
    // Folders made side by side; the nodes started one after another, as starting is what loads the machine.
    const dirs = await Promise.all(
      Array.from({ length: 5 }, async (_, index) => {
        const dir = await mesh.initNode(`worker${index}`);
        await cliOk(dir, trustArgs);
        if (index === 0)
          await mesh.configure(dir, [
            [["worker", "slots"], 2],
            [["worker", "locks"], { vm: 1 }],
          ]);
        return dir;
      }),
    );
    const workers: NodeProcess[] = [];
    for (const [index, dir] of dirs.entries())
      workers.push(await mesh.start(`worker${index}`, dir, ["--worker", "--bootstrap", master.address]));
    await until("offers of 5 workers held by the master", async () => {
      const held = (await master.control.status()).offersHeld[project];
      return held !== undefined && held.workers >= 5;
    });
    return { mesh, project, master, workers };
  })();
  return started;
}

test.after.always(async () => {
  const setup = await started?.catch(() => null);
  if (setup !== null && setup !== undefined && typeof setup !== "string") await setup.mesh.stopAll();
});

test.serial(
  "10 jobs holding a project lock of count 2 on 5 workers: never more than 2 run at once by the workers' own records, the waiting ones say so, all pass",
  async (t) => {
    const setup = await meshOnce();
    if (typeof setup === "string") {
      t.fail(setup);
      return;
    }
    const { mesh, project, master, workers } = setup;
    // The job file as a project writes it; the ten jobs go in at once, so eight must wait.
    const jobFile = await writeJob(mesh, "deploy", project, {
      steps: [`sleep ${jobSleepSeconds}`],
      timeout: "1m",
      locks: [{ name: "staging-db", count: 2 }],
    });
    const spec = parseJobFile(await readFile(jobFile, "utf8"), jobFile, Date.now()).spec;
    const jobIds = Array.from({ length: 10 }, (_, n) => `deploy-${n}`);
    for (const jobId of jobIds) await master.control.submit(project, jobId, spec);
    const explained = await cliOk(master.dataDir, ["explain", "deploy-9"]);
    // The master holds the lock for two runs at once (how many the workers ran side by side depends on the machine).
    t.regex(explained, /waiting for lock staging-db: 2 of 2 held/);
    const waiting = (await master.control.job("deploy-9"))?.waiting ?? "";
    t.regex(waiting, /waiting for lock staging-db/);

    const statuses = await allEnded(master, jobIds);
    for (const jobId of jobIds) t.is(statuses.get(jobId), "passed", jobId);
    const runs = await runsOf(workers, "deploy-");
    t.is(runs.filter((run) => run.outcome === "succeeded").length, 10, "one succeeded run per job");
    t.true(
      runs.every((run) => run.endedAtMs !== null),
      "every run the workers wrote down has ended",
    );
    const most = mostAtOnce(runs);
    if (most > 2) {
      // What the workers and the master saw, for whoever reads a failure.
      const firstMs = Math.min(...runs.map((run) => run.startedAtMs));
      for (const run of [...runs].sort((a, b) => a.startedAtMs - b.startedAtMs))
        t.log(
          `${run.jobId}#${run.attempt}: ${run.startedAtMs - firstMs}..${(run.endedAtMs ?? 0) - firstMs} ms, ${run.outcome}`,
        );
      for (const jobId of jobIds) {
        const attempts = (await master.control.job(jobId))?.attempts ?? [];
        t.log(jobId, attempts.map((attempt) => `#${attempt.attempt} ${attempt.state} ${attempt.outcome}`).join(", "));
      }
    }
    t.true(most <= 2, `at most 2 runs at once, by the workers' records; got ${most}`);
    const onWorkers = (await Promise.all(workers.map((worker) => worker.control.runs()))).filter((list) =>
      list.some((run) => run.jobId.startsWith("deploy-")),
    ).length;
    t.log(`${runs.length} runs on ${onWorkers} workers; at most ${most} at once`);
    t.true(onWorkers >= 2, `the runs spread over several workers (${onWorkers})`);
  },
);

test.serial(
  "a worker lock in config.yaml: one vm job at a time on a two-slot worker, while a job naming no lock of it takes the other slot",
  async (t) => {
    const setup = await meshOnce();
    if (typeof setup === "string") {
      t.fail(setup);
      return;
    }
    const { mesh, project, master, workers } = setup;
    const worker = workers[0] as NodeProcess;
    // Only the volunteer with the vm lock takes work now.
    for (const other of workers.slice(1)) await other.control.setAvailability("paused");
    await until("only the volunteer with the vm lock offering", async () => {
      const held = (await master.control.status()).offersHeld[project];
      return held !== undefined && held.workers === 1 && held.freeSlots >= 2;
    });
    const vmFile = await writeJob(mesh, "vm", project, {
      steps: [`sleep ${jobSleepSeconds}`],
      timeout: "1m",
      // A project-wide count that never binds here: the worker's own lock does.
      locks: [{ name: "vm", count: 100 }],
    });
    const plainFile = await writeJob(mesh, "plain", project, {
      steps: [`sleep ${jobSleepSeconds * 2}`],
      timeout: "1m",
    });
    const vm = parseJobFile(await readFile(vmFile, "utf8"), vmFile, Date.now()).spec;
    const plain = parseJobFile(await readFile(plainFile, "utf8"), plainFile, Date.now()).spec;
    const jobIds = ["vm-0", "vm-1", "vm-2", "plain-0"];
    for (const jobId of jobIds) await master.control.submit(project, jobId, jobId.startsWith("vm-") ? vm : plain);
    const statuses = await allEnded(master, jobIds);
    for (const jobId of jobIds) t.is(statuses.get(jobId), "passed", jobId);
    const runs = (await worker.control.runs()).filter((run) => /^(vm|plain)-/.test(run.jobId));
    t.is(runs.length, 4, "every job ran on the volunteer with the vm lock");
    t.is(mostAtOnce(runs.filter((run) => run.jobId.startsWith("vm-"))), 1, "one vm job at a time");
    t.is(mostAtOnce(runs), 2, "the plain job ran beside a vm job, in the other slot");
    t.is(runs.filter((run) => run.outcome === "refused").length, 0, "no award had to be refused");
  },
);
