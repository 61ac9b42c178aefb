/**
 * The `cimesh` command as a volunteer and a project use it: real processes
 * (`node node/cli/index.ts`) on a temporary --data-dir. Commands about jobs
 * talk to a fake node served by the real control server in this process.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { capabilitySpecDomain } from "../capabilities/index.ts";
import {
  acceptKeyset,
  anchorFromGenesis,
  KeysetRollbackError,
  keysetDomain,
  openEnvelope,
  openMultiEnvelope,
  trustFromAnchor,
} from "../crypto/index.ts";
import type { JobDetail, JobSummary, NodeApi, NodeStatus } from "../node/index.ts";
import { generateIdentity, hexToBytes, loadConfig, parseJobFile, peerIdOf, startControlServer } from "../node/index.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cliPath = join(root, "node", "cli", "index.ts");
/** Bound on one CLI process: it does file work or one local HTTP call. */
const cliTimeoutMs = 60_000;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cimesh(dataDir: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.CIMESH_HOME;
    const child = spawn(process.execPath, [cliPath, "--data-dir", dataDir, ...args], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`cimesh ${args.join(" ")}: still running after ${cliTimeoutMs} ms\n${stdout}\n${stderr}`));
    }, cliTimeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function tempDir(t: import("ava").ExecutionContext, prefix = "cimesh-cli-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function ok(t: import("ava").ExecutionContext, run: Run, what: string): void {
  t.is(run.code, 0, `${what}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
}

const trustLinePattern = /cimesh trust add (b[a-z2-7]{52}) --roots ([0-9a-f,]+) --threshold (\d+)/;

test("init creates the node key and a config; id prints its PeerId", async (t) => {
  const dir = await tempDir(t);
  const init = await cimesh(dir, "init");
  ok(t, init, "init");
  t.is((await stat(join(dir, "node.key"))).mode & 0o777, 0o600);
  t.true((await readFile(join(dir, "config.yaml"), "utf8")).includes("trust: []"));
  const id = await cimesh(dir, "id");
  ok(t, id, "id");
  t.regex(id.stdout.trim(), /^12D3KooW\w+$/);
  t.true(init.stdout.includes(id.stdout.trim()));
  const again = await cimesh(dir, "init");
  t.is(again.code, 1);
  t.regex(again.stderr, /already exists/);
});

test("project init prints the trust line; a volunteer's trust add / list / remove round-trips it", async (t) => {
  const master = await tempDir(t);
  ok(t, await cimesh(master, "init"), "init");
  const created = await cimesh(master, "project", "init", "--roots", "3", "--threshold", "2");
  ok(t, created, "project init");
  const match = trustLinePattern.exec(created.stdout);
  if (match === null) return t.fail(created.stdout);
  const [line, project, roots, threshold] = match as unknown as [string, string, string, string];
  t.is(threshold, "2");
  t.is(roots.split(",").length, 3);
  t.is(anchorFromGenesis(roots.split(",").map(hexToBytes), 2).project, project);
  const masterConfig = await loadConfig(master);
  t.deepEqual(masterConfig.masters, [project]);
  t.deepEqual(masterConfig.trust, [{ project, roots: roots.split(","), threshold: 2, share: 1 }]);
  const folder = join(master, "projects", project);
  for (const name of ["root-1.key", "root-2.key", "root-3.key", "keyset.cbor"])
    t.is((await stat(join(folder, name))).mode & 0o777, 0o600, name);

  const volunteer = await tempDir(t);
  ok(t, await cimesh(volunteer, "init"), "init");
  const args = line.split(" ").slice(1); // drop "cimesh"
  ok(t, await cimesh(volunteer, ...args, "--share", "3"), "trust add");
  const list = await cimesh(volunteer, "trust", "list", "--json");
  ok(t, list, "trust list");
  t.deepEqual(JSON.parse(list.stdout), [{ project, roots: roots.split(","), threshold: 2, share: 3 }]);
  const plain = await cimesh(volunteer, "trust", "list");
  t.true(plain.stdout.includes(`${project}  share 3`));

  const wrong = await cimesh(volunteer, "trust", "add", project, "--roots", roots.split(",")[0] as string);
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /--roots: .*project .* was made from/);

  ok(t, await cimesh(volunteer, "trust", "remove", project), "trust remove");
  t.deepEqual(JSON.parse((await cimesh(volunteer, "trust", "list", "--json")).stdout), []);
  const again = await cimesh(volunteer, "trust", "remove", project);
  t.is(again.code, 1);
  t.regex(again.stderr, /expected a trusted project/);
});

test("project delegate, revoke, rotate and renew make keysets a volunteer accepts in order", async (t) => {
  const dir = await tempDir(t);
  ok(t, await cimesh(dir, "init"), "init");
  const nodeKey = (await cimesh(dir, "id", "--public-key")).stdout.trim();
  const created = await cimesh(dir, "project", "init", "--roots", "2", "--threshold", "2");
  ok(t, created, "project init");
  const [, project, roots] = trustLinePattern.exec(created.stdout) as unknown as [string, string, string];
  const keysetPath = join(dir, "projects", project, "keyset.cbor");
  const keysets: Uint8Array[] = [new Uint8Array(await readFile(keysetPath))];

  const other = generateIdentity().publicKey;
  const steps: [string, string[]][] = [
    ["delegate", ["project", "delegate", peerIdOf(other).toString(), "--label", "second master"]],
    ["revoke", ["project", "revoke", Buffer.from(other).toString("hex")]],
    ["rotate", ["project", "rotate", "--roots", "3", "--threshold", "2"]],
    ["renew", ["project", "renew", "--expires-in", "30d"]],
    ["delegate after rotation", ["project", "delegate", Buffer.from(other).toString("hex"), "--project", project]],
  ];
  for (const [what, args] of steps) {
    ok(t, await cimesh(dir, ...args), what);
    keysets.push(new Uint8Array(await readFile(keysetPath)));
  }
  const bodies = keysets.map((bytes) => openMultiEnvelope(keysetDomain, bytes).body);
  const announcers = bodies.map((body) => body.announcers.map((a) => Buffer.from(a.key).toString("hex")).sort());
  const otherHex = Buffer.from(other).toString("hex");
  t.deepEqual(announcers[0], [nodeKey]);
  t.deepEqual(announcers[1], [nodeKey, otherHex].sort());
  t.deepEqual(announcers[2], [nodeKey]);
  t.deepEqual(
    bodies.map((body) => [body.rootVersion, body.version, body.roots.length, body.threshold]),
    [
      [1, 1, 2, 2],
      [1, 2, 2, 2],
      [1, 3, 2, 2],
      [2, 1, 3, 2],
      [2, 2, 3, 2],
      [2, 3, 3, 2],
    ],
  );
  t.is(bodies[1]?.announcers.find((a) => Buffer.from(a.key).toString("hex") === otherHex)?.label, "second master");

  // A volunteer that pinned the first roots follows every keyset, in order.
  const nowMs = Date.now();
  let trust = trustFromAnchor(anchorFromGenesis(roots.split(",").map(hexToBytes), 2));
  for (const bytes of keysets) trust = acceptKeyset(trust, bytes, nowMs);
  t.is(trust.keyset?.rootVersion, 2);
  // ... and refuses to go back.
  t.throws(() => acceptKeyset(trust, keysets[2] as Uint8Array, nowMs), { instanceOf: KeysetRollbackError });

  // The old roots were retired, the rotation keyset kept for late joiners.
  t.deepEqual((await readdir(join(dir, "projects", project, "retired", "root-version-1"))).sort(), [
    "root-1.key",
    "root-2.key",
  ]);
  t.deepEqual(
    new Uint8Array(await readFile(join(dir, "projects", project, "rotations", "root-version-2.cbor"))),
    keysets[3],
  );

  const bad = await cimesh(dir, "project", "revoke", "not-a-key");
  t.is(bad.code, 1);
  t.regex(bad.stderr, /announcer key: expected an ed25519 public key as 64 hex characters, or a node's PeerId/);
  const twice = await cimesh(dir, "project", "delegate", otherHex);
  t.is(twice.code, 1);
  t.regex(twice.stderr, /already there/);
});

test("project init without a node key says to run init", async (t) => {
  const dir = await tempDir(t);
  const run = await cimesh(dir, "project", "init");
  t.is(run.code, 1);
  t.regex(run.stderr, /node\.key does not exist: run `cimesh init/);
});

test("spec publish validates the file, signs it with the node key and stores it", async (t) => {
  const dir = await tempDir(t);
  ok(t, await cimesh(dir, "init"), "init");
  const nodeKey = (await cimesh(dir, "id", "--public-key")).stdout.trim();
  const uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
  const specFile = join(dir, "spec.yaml");
  await writeFile(specFile, `uuid: ${uuid}\nname: node 22\nrequirements:\n  tools: [{ name: node, range: ">=22" }]\n`);
  const published = await cimesh(dir, "spec", "publish", specFile);
  ok(t, published, "spec publish");
  t.regex(published.stdout, /the node publishes/);
  const stored = new Uint8Array(await readFile(join(dir, "specs", `${uuid}.cbor`)));
  const opened = openEnvelope(capabilitySpecDomain, stored, Date.now());
  t.is(Buffer.from(opened.signer).toString("hex"), nodeKey);
  t.is(opened.body.name, "node 22");

  const same = await cimesh(dir, "spec", "publish", specFile);
  t.is(same.code, 1);
  t.regex(same.stderr, /expected a version above the published 1/);

  await writeFile(specFile, `uuid: ${uuid}\nname: node 22\nversion: 2\nrequirements:\n  minCores: many\n`);
  const bad = await cimesh(dir, "spec", "publish", specFile);
  t.is(bad.code, 1);
  t.true(bad.stderr.includes(`${specFile}:5: requirements.minCores: expected`), bad.stderr);
});

/** A node that runs one job: open for a few looks, then passed with a log line. */
function fakeNode() {
  const calls: string[] = [];
  const jobs = new Map<string, JobDetail>();
  const looks = new Map<string, number>();
  const status: NodeStatus = {
    peerId: "12D3KooWfakefakefake",
    publicKey: "cd".repeat(32),
    addresses: ["/ip4/127.0.0.1/tcp/4001"],
    roles: { master: [], worker: true },
    availability: "eager",
    running: 0,
    slots: 2,
    busySlots: [],
    offering: { freeSlots: 2, masters: { "fake-project": ["ef".repeat(32)] } },
    offersHeld: {},
    peers: 3,
    peerScores: {},
    peerPenalties: { penalized: [], banned: [], bansTotal: 0, rateLimited: { gossip: 0, requests: 0 } },
    trusted: [],
  };
  const summary = (job: JobDetail): JobSummary => {
    const { spec: _spec, attempts: _attempts, acceptedDigests: _digests, ...rest } = job;
    return rest;
  };
  const api: NodeApi = {
    startFetch: async () => {
      throw new Error("fetch is not part of this fake node");
    },
    fetchStatus: async () => null,
    runs: async () => [],
    runLogs: async () => [],
    metrics: async () => "",
    status: async () => status,
    async submit(project, jobId, spec) {
      calls.push(`submit ${project} ${jobId}`);
      const job: JobDetail = {
        project,
        jobId: jobId === "" ? "job-made-by-node" : jobId,
        name: spec.name,
        status: "open",
        reason: "waiting for bids",
        submittedAtMs: Date.now(),
        endedAtMs: null,
        runsAwarded: 0,
        runsLive: 0,
        spec,
        waiting: "no worker has offered its slots yet",
        attempts: [],
        acceptedDigests: [null],
      };
      jobs.set(job.jobId, job);
      return summary(job);
    },
    jobs: async () => [...jobs.values()].map(summary),
    async job(jobId) {
      const job = jobs.get(jobId);
      if (job === undefined) return null;
      const look = (looks.get(jobId) ?? 0) + 1;
      looks.set(jobId, look);
      const worker = "ef".repeat(32);
      const workerPeerId = peerIdOf(hexToBytes(worker)).toString();
      if (look === 2)
        return {
          ...job,
          runsAwarded: 1,
          runsLive: 1,
          attempts: [
            {
              attempt: 0,
              shard: 0,
              worker,
              workerPeerId,
              state: "running",
              outcome: null,
              exitCode: null,
              outputsDigest: null,
              resultDigest: null,
              logDigest: null,
              summary: "",
            },
          ],
        };
      if (look >= 3) {
        const done: JobDetail = {
          ...job,
          status: "passed",
          reason: "quorum reached",
          endedAtMs: Date.now(),
          runsAwarded: 1,
          attempts: [
            {
              attempt: 0,
              shard: 0,
              worker,
              workerPeerId,
              state: "finished",
              outcome: "succeeded",
              exitCode: 0,
              outputsDigest: null,
              resultDigest: null,
              logDigest: null,
              summary: "",
            },
          ],
        };
        jobs.set(jobId, done);
        return done;
      }
      return job;
    },
    // Nothing before the run starts, then a first line, then a second one once the job is over.
    logs: async (jobId) => {
      const look = looks.get(jobId) ?? 0;
      if (look < 2) return [];
      const first = { attempt: 0, stream: "stdout" as const, offset: 0, text: "hello from the job\n" };
      if (look < 3) return [first];
      return [first, { attempt: 0, stream: "stdout" as const, offset: first.text.length, text: "bye\n" }];
    },
    explain: async (jobId) => `job ${jobId}: waiting for bids`,
    async cancel(jobId, reason) {
      calls.push(`cancel ${jobId} ${reason}`);
      const job = jobs.get(jobId);
      if (job === undefined) throw new Error("no such job");
      return summary(job);
    },
    async setAvailability(availability) {
      calls.push(`availability ${availability}`);
      return { ...status, availability };
    },
  };
  return { api, calls };
}

const project = anchorFromGenesis([generateIdentity().publicKey], 1).project;

test("a malformed job file fails with its line and field before any node is asked", async (t) => {
  const dir = await tempDir(t);
  const fake = fakeNode();
  const server = await startControlServer(fake.api, dir, 0);
  t.teardown(() => server.close());
  const cases: [string, string][] = [
    [`project: ${project}\nname: n\nsteps:\n  - run: make\n  - name: second\n`, "job.yaml:5: steps[1].run: expected"],
    [`project: ${project}\nname: n\nsteps: [make]\nreplicas: two\n`, "job.yaml:4: replicas: expected"],
    [`project: ${project}\nname: n\nsteps: [make]\nreplicas: 1\nquorum: 2\n`, "job.yaml:5: quorum: expected"],
    [`project: ${project}\nname: n\nsteps: [make\n`, "job.yaml:4: expected well-formed YAML"],
  ];
  for (const [text, expected] of cases) {
    await writeFile(join(dir, "job.yaml"), text);
    const run = await cimesh(dir, "submit", join(dir, "job.yaml"));
    t.is(run.code, 1, run.stderr);
    t.true(run.stderr.includes(expected), `${expected}\n${run.stderr}`);
  }
  t.deepEqual(fake.calls, []);
  const missing = await cimesh(dir, "submit", join(dir, "nope.yaml"));
  t.is(missing.code, 1);
  t.regex(missing.stderr, /nope\.yaml: expected a job file \(ENOENT\): check the path/);
});

test("submit --wait prints the state changes and the logs, and exits 0 when the job passed", async (t) => {
  const dir = await tempDir(t);
  const fake = fakeNode();
  const server = await startControlServer(fake.api, dir, 0);
  t.teardown(() => server.close());
  await writeFile(join(dir, "job.yaml"), `project: ${project}\nid: build-1\nname: build\nsteps: [make]\n`);
  const run = await cimesh(dir, "submit", join(dir, "job.yaml"), "--wait");
  ok(t, run, "submit --wait");
  t.deepEqual(fake.calls, [`submit ${project} build-1`]);
  const out = run.stdout;
  t.regex(out, /submitted build-1/);
  t.regex(out, /build-1: open \(no worker has offered its slots yet\)/);
  const workerPeerId = peerIdOf(hexToBytes("ef".repeat(32))).toString();
  t.true(out.includes(`attempt 0 (shard 0) on worker ${workerPeerId}: running`), out);
  t.true(out.includes(`attempt 0 (shard 0) on worker ${workerPeerId}: finished, succeeded, exit 0`), out);
  t.regex(out, /==> attempt 0, stdout <==\nhello from the job\nbye\n/);
  t.regex(out, /build-1: passed \(quorum reached\)\n$/);
  t.true(out.indexOf(": running") < out.indexOf("hello from the job"));

  const status = await cimesh(dir, "status");
  ok(t, status, "status");
  t.regex(status.stdout, /peer id +12D3KooWfakefakefake/);
  t.true(status.stdout.includes(`to fake-project's 1 master(s): ${workerPeerId}`), status.stdout);
  const jobs = await cimesh(dir, "jobs", "--json");
  t.is((JSON.parse(jobs.stdout) as { master: JobSummary[] }).master[0]?.status, "passed");
  const result = await cimesh(dir, "result", "build-1");
  t.regex(result.stdout, /status +passed \(quorum reached\)/);
  ok(t, await cimesh(dir, "availability", "paused"), "availability");
  t.deepEqual(fake.calls.slice(-1), ["availability paused"]);
  const badState = await cimesh(dir, "availability", "sleepy");
  t.is(badState.code, 1);
  const unknown = await cimesh(dir, "logs", "nope");
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /job nope: no such job on this node/);
});

test("status with no node running says how to start one", async (t) => {
  const dir = await tempDir(t);
  const run = await cimesh(dir, "status");
  t.is(run.code, 1);
  t.is(run.stderr.trim(), `cimesh: no node is running in ${dir}: start one with \`cimesh start\``);
  const submit = await cimesh(dir, "jobs");
  t.is(submit.code, 1);
  t.regex(submit.stderr, /start one with `cimesh start`/);
});

test("every command has --help", async (t) => {
  const dir = await tempDir(t);
  for (const args of [[], ["project"], ["trust", "add"], ["start"], ["submit"], ["run"], ["availability"]]) {
    const run = await cimesh(dir, ...args, "--help");
    ok(t, run, args.join(" "));
    t.regex(run.stdout, /Usage: cimesh/);
  }
});

test("logs --follow prints each piece of log once, as it comes, until the job ends", async (t) => {
  const dir = await tempDir(t);
  const fake = fakeNode();
  const server = await startControlServer(fake.api, dir, 0);
  t.teardown(() => server.close());
  const spec = parseJobFile(`project: ${project}\nname: n\nsteps: [make]\n`, "job.yaml", Date.now()).spec;
  await fake.api.submit(project, "follow-1", spec);
  const run = await cimesh(dir, "logs", "follow-1", "--follow");
  ok(t, run, "logs --follow");
  t.is(run.stdout, "==> attempt 0, stdout <==\nhello from the job\nbye\n==> follow-1: passed (quorum reached) <==\n");
});
