/**
 * The mesh node as volunteers and projects run it: real `cimesh start`
 * processes over TCP on 127.0.0.1, jobs in the bubblewrap sandbox, the CLI
 * and the control API to watch them. Serial: each test starts several
 * processes on a 2-core machine.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import test from "ava";
import type { JobDetail } from "../node/index.ts";
import { cli, cliOk, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

const roguePath = fileURLToPath(new URL("./fixtures/rogue.ts", import.meta.url));

async function projectWithWorkers(
  mesh: Mesh,
  workerCount: number,
  options: { masterTiming?: Record<string, number>; workerFlags?: (index: number) => string[] } = {},
) {
  const masterDir = await mesh.initNode("master", options.masterTiming);
  const { project, trustArgs } = await mesh.initProject(masterDir);
  const master = await mesh.start("master", masterDir, ["--master"]);
  const workers: NodeProcess[] = [];
  for (let index = 0; index < workerCount; index++) {
    const dir = await mesh.initNode(`worker${index}`);
    await cliOk(dir, trustArgs);
    workers.push(
      await mesh.start(`worker${index}`, dir, [
        "--worker",
        "--bootstrap",
        master.address,
        ...(options.workerFlags?.(index) ?? []),
      ]),
    );
  }
  // Ready when the master has heard every worker's advert.
  await until(`${workerCount} workers known to the master`, async () => {
    const status = await master.control.status();
    return status.peers >= workerCount;
  });
  return { project, trustArgs, master, workers };
}

async function jobDetail(master: NodeProcess, jobId: string): Promise<JobDetail> {
  const detail = await master.control.job(jobId);
  if (detail === null) throw new Error(`job ${jobId} unknown to the master`);
  return detail;
}

async function ended(master: NodeProcess, jobId: string, limitMs = 90_000): Promise<JobDetail> {
  return until(
    `job ${jobId} to end`,
    async () => {
      const detail = await jobDetail(master, jobId);
      return detail.status === "open" ? null : detail;
    },
    limitMs,
  );
}

function succeededRuns(detail: JobDetail): number {
  return detail.attempts.filter((attempt) => attempt.state === "reported" && attempt.outcome === "succeeded").length;
}

test.serial(
  "three workers: a trusted job runs in the sandbox on one; the master stores a verified result; logs and result show it",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, workers } = await projectWithWorkers(mesh, 3);
      const jobFile = await writeJob(mesh, "hello", project, {
        id: "hello-1",
        steps: [
          "echo hello from the sandbox; id -u",
          { name: "build", run: "mkdir -p dist && echo built > dist/out.txt" },
        ],
        outputs: ["dist"],
        timeout: "1m",
      });
      const submitted = await cli(master.dataDir, ["submit", jobFile, "--wait"]);
      t.is(submitted.code, 0, submitted.stderr + submitted.stdout);
      t.regex(submitted.stdout, /passed/);

      const detail = await jobDetail(master, "hello-1");
      t.is(detail.status, "passed");
      t.is(detail.attempts.length, 1, "one run: replicas 1, nobody lost");
      const [attempt] = detail.attempts;
      const workerKeys = await Promise.all(workers.map(async (worker) => (await worker.control.status()).publicKey));
      t.true(workerKeys.includes(attempt?.worker ?? ""), "the run was on one of the three workers");
      t.regex(attempt?.outputsDigest ?? "", /^baf/);
      t.is(detail.acceptedDigests.length, 1);

      const logs = await cliOk(master.dataDir, ["logs", "hello-1"]);
      t.regex(logs, /hello from the sandbox/);
      t.regex(logs, /^65534$/m, "steps run as the unprivileged uid");
      const result = await cliOk(master.dataDir, ["result", "hello-1"]);
      t.regex(result, /status\s+passed/);
      t.true(result.includes(attempt?.outputsDigest ?? "no digest"));
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "a worker that does not trust the project never bids; a rogue's forged announcements are rejected by every honest node, nothing runs, and its score falls below zero",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const masterDir = await mesh.initNode("master");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      const master = await mesh.start("master", masterDir, ["--master"]);
      // One worker trusts the project; the other trusts only another project (whose topic it joins).
      const trustingDir = await mesh.initNode("trusting");
      await cliOk(trustingDir, trustArgs);
      const otherDir = await mesh.initNode("other-project");
      const other = await mesh.initProject(otherDir);
      const untrustingDir = await mesh.initNode("untrusting");
      await cliOk(untrustingDir, other.trustArgs);
      const untrusting = await mesh.start("untrusting", untrustingDir, ["--worker", "--bootstrap", master.address]);
      await until("the untrusting worker connected", async () => (await master.control.status()).peers >= 1);

      // Only the untrusting worker is up: the job is announced round after round and draws no bid.
      const jobFile = await writeJob(mesh, "wanted", project, { id: "wanted-1", steps: ["echo never"], timeout: "1m" });
      await cliOk(master.dataDir, ["submit", jobFile]);
      const explained = await until("three announcement rounds", async () => {
        const text = await master.control.explain("wanted-1");
        const rounds = Number(/announced (\d+) time/.exec(text)?.[1] ?? 0);
        return rounds >= 3 ? text : null;
      });
      t.regex(explained, /0 bid\(s\) received/);
      t.is((await untrusting.control.status()).running, 0);
      t.false(
        untrusting.events.some((event) => event.event === "execution-started" || event.event === "bid"),
        "the untrusting worker neither bid nor ran anything",
      );

      // Now a trusting worker joins, and a rogue publishes forgeries on the project topic.
      const trusting = await mesh.start("trusting", trustingDir, ["--worker", "--bootstrap", master.address]);
      await cliOk(master.dataDir, ["cancel", "wanted-1"]);
      const honest = [master, trusting];
      const rogue = spawn(
        process.execPath,
        [roguePath, project, ...honest.map((node) => node.address), "--count", "20"],
        { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, CIMESH_TEST_MESH: "1" } },
      );
      let rogueOut = "";
      rogue.stdout.setEncoding("utf8").on("data", (text: string) => {
        rogueOut += text;
      });
      rogue.stderr.setEncoding("utf8").on("data", (text: string) => {
        rogueOut += text;
      });
      try {
        const roguePeer = await until("the rogue's peer id", () => /rogue (\S+)/.exec(rogueOut)?.[1]);
        for (const node of honest) {
          await until(`${node.name} to reject the rogue's forgeries`, () =>
            node.events.some((event) => event.event === "gossip-reject" && event.from === roguePeer),
          );
          const score = await until(`${node.name} to score the rogue below zero`, async () => {
            const scores = (await node.control.status()).peerScores;
            const value = scores[roguePeer];
            return value !== undefined && value < 0 ? value : null;
          });
          t.true(score < 0, `${node.name} scores the rogue ${score}`);
        }
        t.is((await trusting.control.status()).running, 0);
        t.false(trusting.events.some((event) => event.event === "gossip-accept"));
        const jobs = await master.control.jobs();
        t.deepEqual(
          jobs.map((job) => job.jobId),
          ["wanted-1"],
          "the master knows only its own job",
        );
        t.is((await jobDetail(master, "wanted-1")).attempts.length, 0, "nothing ran");
      } finally {
        rogue.kill("SIGKILL");
      }
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "SIGKILL the worker running a job: the master re-awards it after the lease, and it completes exactly once",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, workers } = await projectWithWorkers(mesh, 2);
      const jobFile = await writeJob(mesh, "slow", project, {
        id: "slow-1",
        steps: ["sleep 6; echo done"],
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", jobFile]);
      const first = await until("the job running on a worker", async () => {
        const detail = await jobDetail(master, "slow-1");
        return detail.attempts.find((attempt) => attempt.state === "running");
      });
      const keys = await Promise.all(workers.map(async (worker) => (await worker.control.status()).publicKey));
      const victim = workers[keys.indexOf(first.worker)] as NodeProcess;
      await victim.kill();

      const detail = await ended(master, "slow-1");
      t.is(detail.status, "passed");
      t.is(detail.attempts[0]?.state, "lost", "the killed worker's attempt is lost after its lease");
      t.is(succeededRuns(detail), 1, "completed exactly once");
      t.not(detail.attempts.find((attempt) => attempt.state === "reported")?.worker, first.worker);
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      t.is(succeededRuns(await jobDetail(master, "slow-1")), 1, "still once, a while later");
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "SIGKILL the master with a job in flight, restart it on the same store: the job is neither lost nor run to completion twice",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, workers } = await projectWithWorkers(mesh, 1, { masterTiming: { leaseMs: 15_000 } });
      const jobFile = await writeJob(mesh, "inflight", project, {
        id: "inflight-1",
        steps: ["sleep 8; echo finished"],
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", jobFile]);
      await until("the job running", async () =>
        (await jobDetail(master, "inflight-1")).attempts.some((attempt) => attempt.state === "running"),
      );
      const port = /\/tcp\/(\d+)\//.exec(master.address)?.[1] as string;
      await master.kill();
      const restarted = await mesh.start("master-again", master.dataDir, [
        "--master",
        "--listen",
        `/ip4/127.0.0.1/tcp/${port}`,
      ]);
      const stored = await jobDetail(restarted, "inflight-1");
      t.is(stored.status, "open", "the job survived the crash in the store");

      const detail = await ended(restarted, "inflight-1");
      t.is(detail.status, "passed");
      t.is(succeededRuns(detail), 1, "run to completion once");
      t.is(detail.attempts.length, 1, "the run in flight was not re-awarded");
      t.is((await workers[0]?.control.status())?.running, 0);
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "replicas 2, quorum 2, one worker corrupts its results (fault injection): a third run decides and the honest digest wins",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      // The liar and one honest worker take the first two runs; a second honest worker joins for the third.
      const { project, trustArgs, master, workers } = await projectWithWorkers(mesh, 2, {
        workerFlags: (index) => (index === 0 ? ["--fault-inject-corrupt-results"] : []),
      });
      const liarKey = (await workers[0]?.control.status())?.publicKey;
      const jobFile = await writeJob(mesh, "replicated", project, {
        id: "replicated-1",
        steps: ["mkdir -p out && echo same > out/a"],
        outputs: ["out"],
        replicas: 2,
        quorum: 2,
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", jobFile]);
      const split = await until("two reported runs that disagree", async () => {
        const detail = await jobDetail(master, "replicated-1");
        const reported = detail.attempts.filter((attempt) => attempt.state === "reported");
        return reported.length >= 2 ? detail : null;
      });
      t.is(split.status, "open", "two disagreeing digests decide nothing");
      t.is(new Set(split.attempts.map((attempt) => attempt.outputsDigest)).size, 2);
      t.true(split.attempts.some((attempt) => attempt.worker === liarKey));

      const thirdDir = await mesh.initNode("worker-third");
      await cliOk(thirdDir, trustArgs);
      await mesh.start("worker-third", thirdDir, ["--worker", "--bootstrap", master.address]);
      const detail = await ended(master, "replicated-1");
      t.is(detail.status, "passed", detail.reason);
      t.is(detail.attempts.length, 3, "a third run was needed");
      const honestDigests = detail.attempts.filter((a) => a.worker !== liarKey).map((a) => a.resultDigest);
      t.is(new Set(honestDigests).size, 1, "the honest workers agree");
      t.is(detail.acceptedDigests[0], honestDigests[0] as string, "the honest digest won");
      t.not(detail.attempts.find((a) => a.worker === liarKey)?.resultDigest, detail.acceptedDigests[0]);
    } finally {
      await mesh.stopAll();
    }
  },
);
