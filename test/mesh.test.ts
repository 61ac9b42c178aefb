/**
 * The mesh node as volunteers and projects run it: real `cimesh start`
 * processes over TCP on 127.0.0.1, jobs in the bubblewrap sandbox, the CLI
 * and the control API to watch them. Serial: each test starts several
 * processes on a 2-core machine.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { tcp } from "@libp2p/tcp";
import { multiaddr } from "@multiformats/multiaddr";
import test from "ava";
import * as lp from "it-length-prefixed";
import { createLibp2p } from "libp2p";
import { parseDocument } from "yaml";
import { directProtocol, type JobDetail, maxFrameBytes } from "../node/index.ts";
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
  // Ready when the master holds every worker's standing offer: a job submitted now is awarded at once.
  await until(`offers of ${workerCount} workers held by the master`, async () => {
    const held = (await master.control.status()).offersHeld[project];
    return held !== undefined && held.workers >= workerCount;
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
      // The master hands its keyset to each peer it meets: one that does not pin the project ignores it, free.
      await until("the untrusting worker to ignore the master's keyset", () =>
        untrusting.events.some(
          (event) =>
            event.event === "direct-refused" && event.reason === "untrusted-project" && event.from === master.peerId,
        ),
      );
      const held = (await untrusting.control.status()).peerPenalties.penalized;
      t.false(
        held.some((entry) => entry.peer === master.peerId),
        "an honest keyset of a project not pinned here costs its sender nothing",
      );

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
      await cliOk(master.dataDir, ["cancel", "wanted-1"]);
      const trusting = await mesh.start("trusting", trustingDir, ["--worker", "--bootstrap", master.address]);
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
      const { project, master, workers } = await projectWithWorkers(mesh, 1, { masterTiming: { leaseMs: 30_000 } });
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
      // Down long enough for the run to finish while nobody listens: the worker must keep its result until the
      // master is back.
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      const restarted = await mesh.start("master-again", master.dataDir, [
        "--master",
        "--listen",
        `/ip4/127.0.0.1/tcp/${port}`,
      ]);
      const stored = await jobDetail(restarted, "inflight-1");
      // The worker's retried result may already have reached the restarted master: open or passed, never unknown.
      t.true(["open", "passed"].includes(stored.status), `the job survived the crash in the store (${stored.status})`);

      const detail = await ended(restarted, "inflight-1", 150_000).catch((error: unknown) => {
        // What each side last did, for whoever reads a failure.
        for (const node of [restarted, ...workers])
          t.log(node.name, JSON.stringify(node.events.slice(-25)).slice(-6000));
        throw error;
      });
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
  "a worker finishes a run while its master is down, is SIGKILLed and restarted; the master, back later, gets the result from the worker's outbox: one attempt, run once",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, workers } = await projectWithWorkers(mesh, 1);
      const worker = workers[0] as NodeProcess;
      const jobFile = await writeJob(mesh, "outbox", project, {
        id: "outbox-1",
        steps: ["sleep 3; echo finished"],
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", jobFile]);
      await until("the job running", async () =>
        (await jobDetail(master, "outbox-1")).attempts.some((attempt) => attempt.state === "running"),
      );
      const port = /\/tcp\/(\d+)\//.exec(master.address)?.[1] as string;
      await master.kill();
      // The run ends while the master is down (longer than its 4 s lease): the result waits in the worker's outbox.
      await until("the run finished on the worker", async () => (await worker.control.status()).running === 0, 30_000);
      // The status shows the machine's state as soon as it is stepped; give its write to the store a moment to land.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await worker.kill();
      const workerAgain = await mesh.start("worker-again", worker.dataDir, ["--worker", "--bootstrap", master.address]);
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const restarted = await mesh.start("master-again", master.dataDir, [
        "--master",
        "--listen",
        `/ip4/127.0.0.1/tcp/${port}`,
      ]);
      const detail = await ended(restarted, "outbox-1", 90_000).catch((error: unknown) => {
        for (const node of [restarted, workerAgain])
          t.log(
            node.name,
            JSON.stringify(node.events.filter((event) => event.event !== "bid").slice(-40)).slice(-8000),
          );
        throw error;
      });
      t.is(detail.status, "passed", detail.reason);
      t.is(detail.attempts.length, 1, "the run was not awarded again: the restarted master renewed its lease");
      t.is(succeededRuns(detail), 1, "run once");
      t.false(
        workerAgain.events.some((event) => event.event === "execution-started"),
        "the restarted worker ran nothing again",
      );
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

test.serial(
  "hostile jobs fail in the sandbox (key file, writes outside, network, fork bomb, memory); the worker keeps running and stays available",
  async (t) => {
    const mesh = await Mesh.create();
    let connections = 0;
    const server = createServer((socket) => {
      connections += 1;
      socket.end();
    });
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    try {
      const { project, master, workers } = await projectWithWorkers(mesh, 2);
      const worker = workers[0] as NodeProcess;
      const port = (server.address() as AddressInfo).port;
      const escapee = join(mesh.root, "escaped");
      const hostile: Record<string, Record<string, unknown>> = {
        "read-key": { steps: [`cat ${join(worker.dataDir, "node.key")} > k && base64 k`] },
        "write-outside": { steps: [`echo x > ${escapee}`] },
        network: { steps: [`bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port}' && echo connected`] },
        "fork-bomb": {
          steps: ["bomb() { bomb | bomb & }; bomb; sleep 1000"],
          timeout: "5s",
          resources: { processes: 32, memory: "256MiB" },
        },
        memory: {
          steps: ["head -c 134217728 /dev/zero | tail -n 1 > /dev/null"],
          resources: { memory: "64MiB", processes: 64 },
        },
      };
      for (const [name, fields] of Object.entries(hostile)) {
        await cliOk(master.dataDir, [
          "submit",
          await writeJob(mesh, name, project, { id: name, timeout: "1m", ...fields }),
        ]);
      }
      for (const name of Object.keys(hostile)) {
        const detail = await ended(master, name);
        t.is(detail.status, "failed", `${name} failed`);
        t.not(detail.attempts[0]?.outcome, "succeeded");
      }
      const logs = await Promise.all(Object.keys(hostile).map((name) => cliOk(master.dataDir, ["logs", name])));
      const key = await readFile(join(worker.dataDir, "node.key"));
      t.false(logs.join("\n").includes(key.toString("base64").slice(0, 20)), "no log carries the worker's key");
      t.false(logs.join("\n").includes("connected"));
      t.is(connections, 0, "no connection reached the host");
      t.false(existsSync(escapee), "nothing appeared outside the job's folder");

      // Both workers are still up, eager, and take the next jobs.
      for (const each of workers) {
        t.is(each.process.exitCode, null);
        const status = await each.control.status();
        t.is(status.availability, "eager");
        t.is(status.running, 0);
      }
      for (const id of ["after-1", "after-2"])
        await cliOk(master.dataDir, ["submit", await writeJob(mesh, id, project, { id, steps: ["true"] })]);
      t.is((await ended(master, "after-1")).status, "passed");
      t.is((await ended(master, "after-2")).status, "passed");
    } finally {
      server.close();
      await mesh.stopAll();
    }
  },
);

test.serial(
  "bad input: a malformed job file, an unknown project, a bad token, an oversize frame: clear errors, and nothing stored is lost",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master } = await projectWithWorkers(mesh, 1);
      await cliOk(master.dataDir, ["submit", await writeJob(mesh, "kept", project, { id: "kept", steps: ["true"] })]);
      t.is((await ended(master, "kept")).status, "passed");

      const malformed = join(mesh.root, "malformed.yaml");
      await writeFile(malformed, `project: ${project}\nname: broken\nsteps:\n  - echo fine\ntimeout: soon\n`);
      const bad = await cli(master.dataDir, ["submit", malformed]);
      t.not(bad.code, 0);
      t.regex(bad.stderr, /malformed\.yaml:5: timeout: expected a duration/);
      t.regex(bad.stderr, /timeout/);

      const stranger = await writeJob(mesh, "stranger", `b${"a".repeat(52)}`, { steps: ["true"] });
      const unknown = await cli(master.dataDir, ["submit", stranger]);
      t.not(unknown.code, 0);
      t.regex(unknown.stderr, /project: expected one this node is master for/);

      const port = (await readFile(join(master.dataDir, "api.port"), "utf8")).trim();
      const response = await fetch(`http://127.0.0.1:${port}/v1/jobs`, { headers: { authorization: "Bearer wrong" } });
      t.is(response.status, 401);
      t.regex(await response.text(), /token/);

      // A frame one byte over the limit, on the direct protocol: the master refuses the stream.
      const dialer = await createLibp2p({
        addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
      });
      try {
        const stream = await dialer.dialProtocol(multiaddr(master.address), directProtocol, {
          signal: AbortSignal.timeout(10_000),
        });
        stream.send(lp.encode.single(new Uint8Array(maxFrameBytes + 1)));
        await stream.close().catch(() => undefined);
        await until("the master to refuse the oversize frame", () =>
          master.events.some((event) => event.event === "direct-refused" && event.from === dialer.peerId.toString()),
        );
        t.pass();
      } finally {
        await dialer.stop();
      }

      const jobs = await master.control.jobs();
      t.deepEqual(
        jobs.map((job) => [job.jobId, job.status]),
        [["kept", "passed"]],
        "what was stored is still there, and nothing else",
      );
      t.is(master.process.exitCode, null);
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "capability specs: the master puts its spec in the DHT; workers fetch it, check it is the project's, run its self-check, and only the one that meets it gets the job",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const masterDir = await mesh.initNode("master");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      const uuid = "5a1c3e9f-2b4d-4c8e-9f10-1234567890ab";
      const specFile = join(mesh.root, "spec.yaml");
      await writeFile(
        specFile,
        `uuid: ${uuid}\nname: fast linux\nversion: 1\nrequirements:\n  os: [linux]\n  labels: [fast]\nselfCheck:\n  steps: [test -d /usr]\n  timeout: 1m\n`,
      );
      await cliOk(masterDir, ["spec", "publish", specFile]);
      const master = await mesh.start("master", masterDir, ["--master"]);
      const workers: NodeProcess[] = [];
      for (const [index, labels] of [[], ["fast"]].entries()) {
        const dir = await mesh.initNode(`worker${index}`);
        await cliOk(dir, trustArgs);
        const config = join(dir, "config.yaml");
        const document = parseDocument(await readFile(config, "utf8"));
        document.setIn(["worker", "labels"], labels);
        await writeFile(config, document.toString());
        workers.push(await mesh.start(`worker${index}`, dir, ["--worker", "--bootstrap", master.address]));
      }
      const fastKey = (await workers[1]?.control.status())?.publicKey;
      const jobFile = await writeJob(mesh, "needs-spec", project, {
        id: "needs-spec",
        steps: ["echo fast"],
        requiredSpecs: [uuid],
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", jobFile]);
      const detail = await ended(master, "needs-spec");
      t.is(detail.status, "passed");
      t.deepEqual(
        detail.attempts.map((attempt) => attempt.worker),
        [fastKey],
        "the run went to the worker that meets the spec",
      );
      const checked = (worker: NodeProcess) => worker.events.find((event) => event.event === "spec-checked");
      t.is(checked(workers[1] as NodeProcess)?.passed, true, "the fast worker ran the self-check, and it passed");
      t.truthy(
        workers[0]?.events.find((event) => event.event === "spec-unmet" && /label/.test(String(event.why))),
        "the other worker found it lacks the label",
      );
      await cliOk(master.dataDir, [
        "submit",
        await writeJob(mesh, "waits", project, {
          id: "waits",
          steps: ["sleep 30"],
          requiredSpecs: [uuid],
          timeout: "1m",
        }),
      ]);
      await cliOk(master.dataDir, [
        "submit",
        await writeJob(mesh, "waits-too", project, {
          id: "waits-too",
          steps: ["true"],
          requiredSpecs: [uuid],
          timeout: "1m",
        }),
      ]);
      const explained = await until("explain to count the spec's providers", async () => {
        const text = await master.control.explain("waits-too");
        return /spec 5a1c3e9f-2b4d-4c8e-9f10-1234567890ab: 1 worker\(s\) provide it in the DHT/.test(text)
          ? text
          : null;
      });
      t.regex(explained, /open/);
    } finally {
      await mesh.stopAll();
    }
  },
);
