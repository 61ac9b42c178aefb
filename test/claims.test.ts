/**
 * Claims in real processes: idle workers' standing offers let a master award a job's runs the moment it is submitted
 * (no announcement, no bid window), and a master hands its project's keyset to each peer it meets, so a fresh mesh's
 * first job runs as soon as the workers join. Real `cimesh start` processes over TCP on 127.0.0.1, jobs in the
 * bubblewrap sandbox. The two bounds are the "must show", measured from the nodes' own event timestamps (one
 * machine, one clock) and logged. Serial: each test starts several processes on a 2-core machine.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import { type JobDetail, parseJobFile } from "../node/index.ts";
import { probeSandbox } from "../node/sandbox/index.ts";
import { cliOk, Mesh, type NodeEvent, type NodeProcess, until } from "./mesh-harness.ts";

/** The bound: every shard of a job that idle slots can hold starts within this long of its submission. */
const allShardsStartMs = 1_000;
/** The bound: the first job on a fresh mesh passes within this long of its workers joining. */
const firstJobPassesMs = 3_000;
const shardCount = 6;
const workerCount = 3;
const slotsPerWorker = 2;
/** Bound on the waits of a job that should start and end in seconds (the must-show bounds are asserted apart). */
const jobWaitMs = 60_000;

/** Why the mesh cannot run jobs here (no bubblewrap, no user namespaces), or null when it can: asked once. */
let sandboxProblem: Promise<string | null> | null = null;
function sandboxMissing(): Promise<string | null> {
  sandboxProblem ??= (async () => {
    const workRoot = await mkdtemp(join(tmpdir(), "cimesh-claims-probe-"));
    try {
      const probe = await probeSandbox({ workRoot });
      return probe.ok ? null : probe.reason;
    } finally {
      await rm(workRoot, { recursive: true, force: true });
    }
  })();
  return sandboxProblem;
}

/** Fails the test in one line when the sandbox cannot be made here (it never passes silently); true when it can. */
async function sandboxOr(t: ExecutionContext): Promise<boolean> {
  const problem = await sandboxMissing();
  if (problem === null) return true;
  t.fail(`needs bubblewrap with unprivileged user namespaces to run jobs, and cannot make it here: ${problem}`);
  return false;
}

async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  await new Promise((done) => server.close(done));
  return port;
}

/** Submits a job straight to the master's control API (what `cimesh submit` does, without a CLI process's start). */
async function submit(master: NodeProcess, project: string, jobId: string, fields: Record<string, unknown>) {
  const parsed = parseJobFile(JSON.stringify({ project, name: jobId, ...fields }), `${jobId}.yaml`, Date.now());
  return master.control.submit(project, jobId, parsed.spec);
}

async function passed(master: NodeProcess, jobId: string): Promise<JobDetail> {
  return until(
    `job ${jobId} to end`,
    async () => {
      const detail = await master.control.job(jobId);
      return detail === null || detail.status === "open" ? null : detail;
    },
    jobWaitMs,
  );
}

function eventsOf(nodes: readonly NodeProcess[], event: string, jobId?: string): (NodeEvent & { t: number })[] {
  return nodes.flatMap((node) =>
    node.events.filter(
      (entry): entry is NodeEvent & { t: number } =>
        entry.event === event && (jobId === undefined || entry.jobId === jobId) && typeof entry.t === "number",
    ),
  );
}

function percentile(sorted: readonly number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] as number;
}

/** What each node did, for a failed test's log. */
function logEvents(t: ExecutionContext, nodes: readonly NodeProcess[]): void {
  for (const node of nodes)
    t.log(`${node.name}: ${node.events.map((entry) => JSON.stringify(entry)).join("\n  ")}`.slice(-6000));
}

test.serial(
  `a job of ${shardCount} shards on ${workerCount} idle workers with ${slotsPerWorker} slots each: every shard starts within ${allShardsStartMs} ms of submit, from the offers on hand`,
  async (t) => {
    if (!(await sandboxOr(t))) return;
    const mesh = await Mesh.create();
    try {
      const masterDir = await mesh.initNode("master");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      const master = await mesh.start("master", masterDir, ["--master"]);
      const workers: NodeProcess[] = [];
      for (let index = 0; index < workerCount; index++) {
        const dir = await mesh.initNode(`worker${index}`);
        await mesh.configure(dir, [[["worker", "slots"], slotsPerWorker]]);
        await cliOk(dir, trustArgs);
        workers.push(await mesh.start(`worker${index}`, dir, ["--worker", "--bootstrap", master.address]));
      }
      const slots = workerCount * slotsPerWorker;
      await until(`the master holding offers of all ${slots} slots`, async () => {
        const held = (await master.control.status()).offersHeld[project];
        return held?.freeSlots === slots && held.workers === workerCount;
      });
      const worker = (await workers[0]?.control.status())?.offering;
      t.is(worker?.freeSlots, slotsPerWorker, "status: a worker says what it offers");
      t.deepEqual(worker?.masters[project], [(await master.control.status()).publicKey], "and to which master");

      const jobId = "six-shards";
      const submitted = await submit(master, project, jobId, { shards: shardCount, steps: ["sleep 2"], timeout: "1m" });
      const starts = await until(
        `${shardCount} shards started`,
        () => {
          const found = eventsOf(workers, "execution-started", jobId);
          return found.length >= shardCount ? found : null;
        },
        jobWaitMs,
      );
      const claimMs = starts.map((start) => start.t - submitted.submittedAtMs).sort((a, b) => a - b);
      const lastMs = claimMs[claimMs.length - 1] as number;
      t.log(
        `claim latency, submit -> execution-started, ${shardCount} shards on ${workerCount}x${slotsPerWorker} idle slots: ` +
          `first ${claimMs[0]} ms, median ${percentile(claimMs, 0.5)} ms, last ${lastMs} ms (bound ${allShardsStartMs} ms)`,
      );
      const detail = await passed(master, jobId);
      if (lastMs > allShardsStartMs || detail.status !== "passed") logEvents(t, [master, ...workers]);
      t.true(lastMs <= allShardsStartMs, `every shard started within ${allShardsStartMs} ms of submit: ${claimMs}`);
      t.is(detail.status, "passed", detail.reason);
      const perWorker = workers.map((node) => eventsOf([node], "execution-started", jobId).length);
      t.deepEqual(perWorker, [slotsPerWorker, slotsPerWorker, slotsPerWorker], "each worker's slots all used");
      t.deepEqual(eventsOf(workers, "bid", jobId), [], "awarded from offers: no worker had to bid");
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  `a fresh mesh (1 master, 2 workers, started together, empty data folders): the first job passes within ${firstJobPassesMs} ms of the workers joining`,
  async (t) => {
    if (!(await sandboxOr(t))) return;
    const mesh = await Mesh.create();
    try {
      const masterDir = await mesh.initNode("master");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      // The master's address is fixed before anything starts, so the workers start beside it, not after it.
      const port = await freeLoopbackPort();
      await mesh.configure(masterDir, [[["listen"], [`/ip4/127.0.0.1/tcp/${port}`]]]);
      const bootstrap = `/ip4/127.0.0.1/tcp/${port}/p2p/${mesh.peerIds.get(masterDir)}`;
      const workerDirs: string[] = [];
      for (let index = 0; index < 2; index++) {
        const dir = await mesh.initNode(`worker${index}`);
        await cliOk(dir, trustArgs);
        workerDirs.push(dir);
      }
      const [master, ...workers] = (await Promise.all([
        mesh.start("master", masterDir, ["--master"]),
        ...workerDirs.map((dir, index) => mesh.start(`worker${index}`, dir, ["--worker", "--bootstrap", bootstrap])),
      ])) as [NodeProcess, ...NodeProcess[]];

      const jobId = "first-job";
      await submit(master, project, jobId, { steps: ["echo first"], timeout: "1m" });
      const detail = await passed(master, jobId);
      const joinedAtMs = Math.max(...eventsOf(workers, "started").map((started) => started.t));
      const tookMs = (detail.endedAtMs ?? Number.POSITIVE_INFINITY) - joinedAtMs;
      const keysetAt = eventsOf(workers, "keyset-accepted").map(
        (accepted) => `${accepted.via} +${accepted.t - joinedAtMs} ms`,
      );
      t.log(
        `first job on a fresh mesh: passed ${tookMs} ms after the last worker joined (bound ${firstJobPassesMs} ms); ` +
          `keysets accepted: ${keysetAt.join(", ")}`,
      );
      if (detail.status !== "passed" || tookMs > firstJobPassesMs) logEvents(t, [master, ...workers]);
      t.is(detail.status, "passed", detail.reason);
      t.true(tookMs <= firstJobPassesMs, `passed ${tookMs} ms after the workers joined`);
      t.true(
        eventsOf(workers, "keyset-accepted").some((accepted) => accepted.via === "direct"),
        "a worker learnt the keyset from its master directly",
      );
    } finally {
      await mesh.stopAll();
    }
  },
);
