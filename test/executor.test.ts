/**
 * The executor and its sandbox: a job that reads the worker's key file,
 * writes outside its folder, opens a network connection without permission,
 * forks without bound, or allocates past its memory limit fails, and the
 * worker keeps running. Every hostile job is followed by a normal one on the
 * same executor, which must still succeed.
 */
import { randomBytes } from "node:crypto";
import { access, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import test, { type ExecutionContext } from "ava";
import { CID } from "multiformats/cid";
import * as raw from "multiformats/codecs/raw";
import { sha256 } from "multiformats/hashes/sha2";
import { encodeCanonical } from "../crypto/index.ts";
import { type ExecutionReport, type ExecutionRequest, type JobSpec, jobSpecSchema } from "../jobs/index.ts";
import {
  createExecutor,
  DuplicateRunError,
  type Executor,
  ExecutorOptionError,
  type ExecutorOptions,
  type LogChunk,
  probeSandbox,
  SandboxUnavailableError,
} from "../node/sandbox/index.ts";

const mib = 1024 * 1024;
const hourMs = 60 * 60 * 1000;

function jobOf(steps: readonly string[], overrides: Partial<JobSpec> = {}): JobSpec {
  return jobSpecSchema.parse({
    name: "executor-test",
    steps: steps.map((run, index) => ({ name: `step-${index + 1}`, run })),
    env: {},
    timeoutMs: 30_000,
    resources: { cpus: 1, memoryBytes: 256 * mib, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: null,
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 1,
    deadlineMs: 1_800_000_000_000 + hourMs,
    ...overrides,
  });
}

let runCounter = 0;
function requestOf(job: JobSpec, env: Record<string, string> = {}): ExecutionRequest {
  runCounter += 1;
  return {
    runId: `run-${runCounter}`,
    project: "project-1",
    jobId: `job-${runCounter}`,
    attempt: 0,
    shard: 0,
    job,
    env,
  };
}

interface Ran {
  readonly report: ExecutionReport;
  readonly chunks: LogChunk[];
  readonly stdout: string;
  readonly stderr: string;
}

function joined(chunks: readonly LogChunk[], stream: LogChunk["stream"]): Buffer {
  return Buffer.concat(chunks.filter((chunk) => chunk.stream === stream).map((chunk) => chunk.data));
}

async function runJob(
  executor: Executor,
  request: ExecutionRequest,
  onChunk?: (chunk: LogChunk) => void,
): Promise<Ran> {
  const chunks: LogChunk[] = [];
  const report = await executor.run(request, {
    onLog: (chunk) => {
      chunks.push(chunk);
      onChunk?.(chunk);
    },
  });
  return {
    report,
    chunks,
    stdout: joined(chunks, "stdout").toString("utf8"),
    stderr: joined(chunks, "stderr").toString("utf8"),
  };
}

const made: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
test.after.always(async () => {
  for (const dir of made) await rm(dir, { recursive: true, force: true });
});

async function executorIn(options: Partial<ExecutorOptions> = {}): Promise<{ executor: Executor; workRoot: string }> {
  const workRoot = await tempDir("cimesh-work-");
  return { executor: createExecutor({ workRoot, ...options }), workRoot };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Processes on the host whose command line holds the marker (every step's text is on bubblewrap's command line too). */
async function processesWith(marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = await readFile(join("/proc", name, "cmdline"), "utf8").catch(() => "");
    if (cmdline.includes(marker)) found.push(Number(name));
  }
  return found;
}

/** The executor still runs a normal job, and leaves nothing in its work root. */
async function stillWorks(t: ExecutionContext, executor: Executor, workRoot: string): Promise<void> {
  const { report, stdout } = await runJob(executor, requestOf(jobOf(["echo still here"])));
  t.is(report.outcome, "succeeded", report.summary);
  t.is(stdout, "still here\n");
  t.deepEqual(await readdir(workRoot), [], "every run folder is removed");
}

function failed(t: ExecutionContext, report: ExecutionReport): void {
  t.not(report.outcome, "succeeded", report.summary);
  t.true(report.outcome === "failed" || report.outcome === "timed-out", `${report.outcome}: ${report.summary}`);
  if (report.outcome === "failed") t.not(report.exitCode, 0);
}

test("the sandbox can be made on this machine (bubblewrap installed, namespaces allowed)", async (t) => {
  const probe = await probeSandbox({ workRoot: await tempDir("cimesh-probe-") });
  t.true(probe.ok, probe.reason);
});

test("a normal job: steps in order, logs by offset, exit 0, stable outputs digest, run folder removed", async (t) => {
  const { executor, workRoot } = await executorIn({ maxLogChunkBytes: 4096 });
  const steps = [
    "printf 'one\\n'; printf 'warn\\n' >&2; mkdir -p dist; printf '%s' \"$CONTENT\" > dist/a.txt; head -c 20000 /dev/zero | tr '\\0' x",
    'echo; echo two "$FOO" "$CIMESH_SHARD_INDEX" "$HOME" "$(pwd)"; chmod +x dist/a.txt',
  ];
  const job = (content: string) =>
    jobOf(steps, { env: { FOO: "foo", CONTENT: content }, outputs: ["dist", "missing.txt"] });
  const first = await runJob(executor, requestOf(job("hello"), { CIMESH_SHARD_INDEX: "0" }));
  t.is(first.report.outcome, "succeeded", first.report.summary);
  t.is(first.report.exitCode, 0);
  const expectedStdout = `one\n${"x".repeat(20000)}\ntwo foo 0 /work /work\n`;
  t.is(first.stdout, expectedStdout);
  t.is(first.stderr, "warn\n");
  // Offsets: each stream's chunks are contiguous from 0, and none is larger than asked.
  for (const stream of ["stdout", "stderr"] as const) {
    let offset = 0;
    for (const chunk of first.chunks.filter((c) => c.stream === stream)) {
      t.is(chunk.offset, offset);
      t.true(chunk.data.length >= 1 && chunk.data.length <= 4096);
      offset += chunk.data.length;
    }
  }
  t.true(first.chunks.length > 5, "the 20 kB of output came in several chunks");
  const whole = Buffer.concat([Buffer.from(expectedStdout), Buffer.from("warn\n")]);
  t.is(first.report.logDigest, CID.createV1(raw.code, await sha256.digest(whole)).toString());

  // The outputs digest is the documented interim manifest.
  const manifest = [
    ["dist/a.txt", 5, true, (await sha256.digest(Buffer.from("hello"))).digest],
    ["missing.txt", null, null, null],
  ].map(([path, size, exec, hash]) => [
    path,
    size,
    exec,
    hash instanceof Uint8Array ? Buffer.from(hash).toString("hex") : hash,
  ]);
  t.is(first.report.outputsDigest, CID.createV1(0x71, await sha256.digest(encodeCanonical(manifest))).toString());

  const again = await runJob(executor, requestOf(job("hello"), { CIMESH_SHARD_INDEX: "0" }));
  t.is(again.report.outputsDigest, first.report.outputsDigest, "same job, same outputs, same digest");
  const other = await runJob(executor, requestOf(job("hellO"), { CIMESH_SHARD_INDEX: "0" }));
  t.is(other.report.outcome, "succeeded");
  t.not(other.report.outputsDigest, first.report.outputsDigest, "one byte of an output changes the digest");
  t.deepEqual(await readdir(workRoot), [], "every run folder is removed");

  const noOutputs = await runJob(executor, requestOf(jobOf(["true"])));
  t.is(noOutputs.report.outputsDigest, null);
});

test("a step sees only a minimal PATH, HOME and TMPDIR, the job's env and the run's env; logs past the cap are cut", async (t) => {
  process.env.CIMESH_TEST_NODE_SECRET = "node-only";
  t.teardown(() => {
    delete process.env.CIMESH_TEST_NODE_SECRET;
  });
  const { executor, workRoot } = await executorIn({ maxLogBytesPerStream: 1000 });
  const job = jobOf(["env | cut -d= -f1 | sort | tr '\\n' ' '", "head -c 5000 /dev/zero"], {
    env: { FOO: "job", PATH: "/usr/bin:/bin" },
  });
  const { report, stdout } = await runJob(executor, requestOf(job, { CIMESH_SHARD_INDEX: "3" }));
  t.is(report.outcome, "succeeded", report.summary);
  t.true(stdout.startsWith("CIMESH_SHARD_INDEX FOO HOME PATH PWD TMPDIR "), stdout.slice(0, 200));
  t.is(Buffer.byteLength(stdout), 1000, "stdout is cut at maxLogBytesPerStream");
  t.regex(report.summary, /stdout cut at 1000 bytes \(\d+ more dropped\)/);
  t.deepEqual(await readdir(workRoot), []);
});

test("a failing step stops the job with its exit code, and later steps do not run", async (t) => {
  const { executor, workRoot } = await executorIn();
  const { report, stdout } = await runJob(executor, requestOf(jobOf(["echo a", "exit 7", "echo never"])));
  t.is(report.outcome, "failed");
  t.is(report.exitCode, 7);
  t.is(stdout, "a\n");
  t.regex(report.summary, /step 2 "step-2" failed with exit code 7/);
  await stillWorks(t, executor, workRoot);
});

test("a job cannot read the worker's key file, or see its data folder, /root or /home", async (t) => {
  const { executor, workRoot } = await executorIn();
  const dataDir = await tempDir("cimesh-data-");
  const secret = `SECRET-${randomBytes(16).toString("hex")}`;
  const keyPath = join(dataDir, "node.key");
  await writeFile(keyPath, secret, { mode: 0o644 });
  for (const step of [`cat ${keyPath}`, `ls ${dataDir}`, "ls /root", "ls /home", `cat /proc/1/root${keyPath}`]) {
    const { report, stdout, stderr } = await runJob(executor, requestOf(jobOf([step])));
    failed(t, report);
    t.false(stdout.includes(secret) || stderr.includes(secret), `${step} leaked the key`);
  }
  await stillWorks(t, executor, workRoot);
});

test("a job cannot write outside its folder, and nothing appears on the host", async (t) => {
  const { executor, workRoot } = await executorIn();
  const dataDir = await tempDir("cimesh-data-");
  const tag = randomBytes(6).toString("hex");
  const targets = [
    `/usr/evil-${tag}`,
    `$HOME/../evil-${tag}`,
    `${dataDir}/evil-${tag}`,
    `/evil-${tag}`,
    `/etc/evil-${tag}`,
  ];
  for (const target of targets) {
    const { report } = await runJob(executor, requestOf(jobOf([`echo x > ${target}`])));
    failed(t, report);
  }
  for (const path of [`/usr/evil-${tag}`, `/evil-${tag}`, `/etc/evil-${tag}`, join(dataDir, `evil-${tag}`)]) {
    t.false(await exists(path), `${path} appeared on the host`);
  }
  t.deepEqual(await readdir(dataDir), []);
  // Its own folder and /tmp are writable.
  const { report } = await runJob(
    executor,
    requestOf(jobOf(["echo x > here && echo y > /tmp/there && cat here /tmp/there"])),
  );
  t.is(report.outcome, "succeeded", report.summary);
  await stillWorks(t, executor, workRoot);
});

test("a network connection fails unless the job asks and the volunteer allows; the server sees none", async (t) => {
  let connections = 0;
  const server = createServer((socket) => {
    connections += 1;
    socket.end();
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  t.teardown(() => server.close());
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("expected a TCP address");
  const connect = `bash -c 'exec 3<>/dev/tcp/127.0.0.1/${address.port}' && echo connected`;

  const refusing = await executorIn({ allowNetwork: false });
  for (const network of [false, true]) {
    const { report, stdout } = await runJob(refusing.executor, requestOf(jobOf([connect], { network })));
    failed(t, report);
    t.false(stdout.includes("connected"));
    if (network) t.regex(report.summary, /without network/);
  }
  const allowing = await executorIn({ allowNetwork: true });
  const { report: unasked } = await runJob(allowing.executor, requestOf(jobOf([connect], { network: false })));
  failed(t, unasked);
  t.is(connections, 0, "no connection reached the host");
  await stillWorks(t, refusing.executor, refusing.workRoot);

  // The same command does connect when both agree: the refusals above are the sandbox's doing.
  const { report: allowed } = await runJob(allowing.executor, requestOf(jobOf([connect], { network: true })));
  t.is(allowed.outcome, "succeeded", allowed.summary);
  for (let waitedMs = 0; connections === 0 && waitedMs < 5000; waitedMs += 50) await sleep(50);
  t.is(connections, 1);
});

test("a fork bomb is bounded by resources.processes and leaves no process behind", async (t) => {
  const { executor, workRoot } = await executorIn();
  const processes = 32;
  // 200 background sleeps need 200 processes: under the limit of 32 the shell cannot fork and the step fails.
  const spawner = await runJob(
    executor,
    requestOf(
      jobOf(["i=0; while [ $i -lt 200 ]; do sleep 2 & i=$((i+1)); done; wait; echo all-forked"], {
        resources: { cpus: 1, memoryBytes: 256 * mib, diskBytes: 0, processes },
      }),
    ),
  );
  failed(t, spawner.report);
  t.false(spawner.stdout.includes("all-forked"));

  const marker = `bomb-${randomBytes(6).toString("hex")}`;
  const bomb = await runJob(
    executor,
    requestOf(
      jobOf([`bomb() { bomb | bomb & }; bomb; sleep 1000; echo ${marker}`], {
        timeoutMs: 3000,
        resources: { cpus: 1, memoryBytes: 256 * mib, diskBytes: 0, processes },
      }),
    ),
  );
  failed(t, bomb.report);
  t.deepEqual(await processesWith(marker), [], "no process of the bomb is left");
  await stillWorks(t, executor, workRoot);
});

test("allocating past resources.memoryBytes fails; the same job under a larger limit passes", async (t) => {
  const { executor, workRoot } = await executorIn();
  // tail keeps a line without a newline whole in memory: 128 MiB of zero bytes.
  const allocate = "head -c 134217728 /dev/zero | tail -n 1 > /dev/null";
  const resources = (memoryBytes: number) => ({ cpus: 1, memoryBytes, diskBytes: 0, processes: 64 });
  const small = await runJob(executor, requestOf(jobOf([allocate], { resources: resources(64 * mib) })));
  failed(t, small.report);
  t.regex(small.stderr, /memory exhausted/);
  const large = await runJob(executor, requestOf(jobOf([allocate], { resources: resources(512 * mib) })));
  t.is(large.report.outcome, "succeeded", large.report.summary);
  await stillWorks(t, executor, workRoot);
});

test("a job past its timeout ends timed-out and no process of it is left", async (t) => {
  const { executor, workRoot } = await executorIn();
  const marker = `timeout-${randomBytes(6).toString("hex")}`;
  const { report } = await runJob(
    executor,
    requestOf(jobOf([`sleep 1000 && echo ${marker}`, "echo never"], { timeoutMs: 1000 })),
  );
  t.is(report.outcome, "timed-out", report.summary);
  t.is(report.exitCode, null);
  t.is(report.outputsDigest, null);
  t.regex(report.summary, /timed out after 1000 ms in step 1/);
  t.deepEqual(await processesWith(marker), []);
  await stillWorks(t, executor, workRoot);
});

test("kill(runId) ends a running job with outcome killed", async (t) => {
  const { executor, workRoot } = await executorIn();
  const marker = `kill-${randomBytes(6).toString("hex")}`;
  const request = requestOf(jobOf([`echo started; sleep 1000 && echo ${marker}`]));
  const { report, stdout } = await runJob(executor, request, (chunk) => {
    if (Buffer.from(chunk.data).toString().includes("started"))
      t.true(executor.kill(request.runId, "cancelled by test"));
  });
  t.is(stdout, "started\n");
  t.is(report.outcome, "killed");
  t.is(report.exitCode, null);
  t.regex(report.summary, /cancelled by test/);
  t.deepEqual(await processesWith(marker), []);
  t.false(executor.kill(request.runId, "again"), "a finished run cannot be killed");
  await stillWorks(t, executor, workRoot);
});

test("an output that leads out of the work folder through a symlink is refused", async (t) => {
  const { executor, workRoot } = await executorIn();
  const escapes = [
    "ln -s /etc/passwd leak",
    "mkdir dist && ln -s / dist/root",
    "mkdir d && ln -s ../.. d/up && ln -s d/up/x up",
  ];
  for (const step of escapes) {
    const { report } = await runJob(executor, requestOf(jobOf([step], { outputs: ["leak", "dist", "up"] })));
    t.is(report.outcome, "failed", step);
    t.is(report.outputsDigest, null);
    t.regex(report.summary, /symlink that leads out of it/);
  }
  // Links inside the folder are followed as the job saw them (absolute ones from /work); a file is a file whichever way it is reached.
  const linked = ["echo a > real", "ln -s real link", "ln -s /work/real abs", "mkdir d && ln -s ../real d/up"];
  const viaLinks = await runJob(executor, requestOf(jobOf(linked, { outputs: ["link", "abs", "d/up"] })));
  t.is(viaLinks.report.outcome, "succeeded", viaLinks.report.summary);
  const copies = ["echo a > link", "cp link abs", "mkdir d && cp link d/up"];
  const plain = await runJob(executor, requestOf(jobOf(copies, { outputs: ["link", "abs", "d/up"] })));
  t.is(plain.report.outputsDigest, viaLinks.report.outputsDigest);
  const dangling = await runJob(executor, requestOf(jobOf(["ln -s nowhere link"], { outputs: ["link"] })));
  const missing = await runJob(executor, requestOf(jobOf(["true"], { outputs: ["link"] })));
  t.is(dangling.report.outcome, "succeeded");
  t.is(dangling.report.outputsDigest, missing.report.outputsDigest, "a dangling link is a missing output");
  await stillWorks(t, executor, workRoot);
});

test("without bubblewrap every job is refused, unless allowUnsandboxed, which warns on every run", async (t) => {
  const missing = "/nonexistent/cimesh/bwrap";
  const probe = await probeSandbox({ workRoot: await tempDir("cimesh-work-"), bwrapPath: missing });
  t.false(probe.ok);
  t.regex(probe.reason, /apt-get install bubblewrap/);

  const { executor } = await executorIn({ bwrapPath: missing });
  const error = await t.throwsAsync(runJob(executor, requestOf(jobOf(["echo bare"]))), {
    instanceOf: SandboxUnavailableError,
  });
  t.regex(error?.message ?? "", /apt-get install bubblewrap/);
  t.regex(error?.message ?? "", /allow-unsandboxed/);

  const warnings: string[] = [];
  const bare = await executorIn({ bwrapPath: missing, allowUnsandboxed: true, onWarning: (m) => warnings.push(m) });
  for (const round of [1, 2]) {
    const { report, stdout } = await runJob(
      bare.executor,
      requestOf(jobOf(["echo bare > out.txt && cat out.txt"], { outputs: ["out.txt"] })),
    );
    t.is(report.outcome, "succeeded", report.summary);
    t.is(stdout, "bare\n");
    t.not(report.outputsDigest, null);
    t.is(warnings.length, round, "one warning per bare run");
  }
  t.regex(warnings[0] ?? "", /WITHOUT a sandbox/);
  t.deepEqual(await readdir(bare.workRoot), []);
});

test("options are checked, and a run id runs once at a time", async (t) => {
  const workRoot = await tempDir("cimesh-work-");
  t.throws(() => createExecutor({ workRoot, maxLogChunkBytes: 1024 * 1024 }), { instanceOf: ExecutorOptionError });
  t.throws(() => createExecutor({ workRoot: "" }), { instanceOf: ExecutorOptionError });
  const executor = createExecutor({ workRoot });
  const request = requestOf(jobOf(["echo started; sleep 1000"]));
  let started: () => void = () => undefined;
  const running = new Promise<void>((done) => {
    started = done;
  });
  const first = executor.run(request, { onLog: () => started() });
  await running;
  await t.throwsAsync(executor.run(request, { onLog: () => undefined }), { instanceOf: DuplicateRunError });
  executor.kill(request.runId, "done");
  t.is((await first).outcome, "killed");
});
