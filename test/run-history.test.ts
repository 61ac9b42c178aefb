/**
 * The worker's own history at the record layer (node/runtime/history.ts): what it keeps of a run, that it comes
 * back after a restart, that a run under way at a crash is found interrupted, that it stays within its bound of runs
 * (oldest dropped first, with its log) and of log bytes per stream, and the `run-ended` line of the node's log.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import type { ExecutionReport, ExecutionRequest } from "../jobs/index.ts";
import { resultDigest } from "../jobs/index.ts";
import { parseJobFile } from "../node/files/index.ts";
import { interruptedOutcome, openRunHistory, recordedRuns } from "../node/runtime/index.ts";
import type { Executor } from "../node/sandbox/index.ts";
import { openNodeStore } from "../node/store/index.ts";

const project = `b${"d".repeat(52)}`;
const master = "ab".repeat(32);
const startMs = 1_800_000_000_000;

async function storePath(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-history-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "store");
}

function request(jobId: string, shard = 0, attempt = 0): ExecutionRequest {
  const { spec } = parseJobFile(
    `project: ${project}\nname: build ${jobId}\nsteps: [make]\nshards: 3\n`,
    "job.yaml",
    startMs,
  );
  return { runId: `${project}/${jobId}/${attempt}`, project, jobId, attempt, shard, job: spec, env: {} };
}

function report(outcome: ExecutionReport["outcome"], exitCode: number | null): Omit<ExecutionReport, "runId"> {
  return {
    outcome,
    exitCode,
    outputsDigest: outcome === "succeeded" ? "bafyoutputs" : null,
    logDigest: "bafkreilog",
    summary: outcome,
    durationMs: 1_250,
  };
}

const bytes = (text: string) => new TextEncoder().encode(text);

test("a run is kept with what it came to and its log, and comes back after a restart", async (t) => {
  const path = await storePath(t);
  let store = await openNodeStore(path);
  let history = await openRunHistory(store.db);
  const run = request("job-1", 2, 5);
  const started = history.started(run, master, startMs);
  t.is(started.endedAtMs, null);
  t.is(history.running(run.runId)?.jobId, "job-1");
  history.output(run.runId, { stream: "stdout", offset: 0, data: bytes("hel") });
  history.output(run.runId, { stream: "stdout", offset: 3, data: bytes("lo\n") });
  history.output(run.runId, { stream: "stderr", offset: 0, data: bytes("warn\n") });
  const ended = history.ended(run.runId, report("failed", 2), startMs + 2_000);
  t.deepEqual(
    {
      project: ended?.project,
      jobId: ended?.jobId,
      name: ended?.name,
      shard: ended?.shard,
      shards: ended?.shards,
      attempt: ended?.attempt,
      master: ended?.master,
      outcome: ended?.outcome,
      exitCode: ended?.exitCode,
      durationMs: ended?.durationMs,
      startedAtMs: ended?.startedAtMs,
      endedAtMs: ended?.endedAtMs,
      logDigest: ended?.logDigest,
    },
    {
      project,
      jobId: "job-1",
      name: "build job-1",
      shard: 2,
      shards: 3,
      attempt: 5,
      master,
      outcome: "failed",
      exitCode: 2,
      durationMs: 1_250,
      startedAtMs: startMs,
      endedAtMs: startMs + 2_000,
      logDigest: "bafkreilog",
    },
  );
  t.is(ended?.resultDigest, resultDigest({ outcome: "failed", exitCode: 2, outputsDigest: null }));
  t.is(history.running(run.runId), undefined);
  await history.close();
  await store.close();

  store = await openNodeStore(path);
  t.teardown(() => store.close());
  history = await openRunHistory(store.db);
  t.deepEqual(history.list(), [ended]);
  const logs = await history.logs("job-1");
  const text = (stream: string) =>
    Buffer.concat(logs.filter((chunk) => chunk.stream === stream).map((chunk) => chunk.data)).toString("utf8");
  t.is(text("stdout"), "hello\n");
  t.is(text("stderr"), "warn\n");
  t.true(logs.every((chunk) => chunk.attempt === 5 && chunk.shard === 2));
  t.deepEqual(await history.logs("job-unknown"), []);
});

test("a run under way when the process died is found interrupted at the next start", async (t) => {
  const path = await storePath(t);
  let store = await openNodeStore(path);
  let history = await openRunHistory(store.db);
  history.started(request("job-crash"), master, startMs);
  await history.flushed();
  await store.close(); // as a crash: the run never ends
  store = await openNodeStore(path);
  t.teardown(() => store.close());
  history = await openRunHistory(store.db);
  const [entry] = history.list();
  t.is(entry?.outcome, interruptedOutcome);
  t.is(entry?.jobId, "job-crash");
  t.is(history.running(entry?.runId ?? ""), undefined, "nothing of the last process runs now");
});

test("the history keeps its newest runs, dropping the oldest ended one and its log, and holds the bound after a restart", async (t) => {
  const path = await storePath(t);
  let store = await openNodeStore(path);
  let history = await openRunHistory(store.db, { maxEntries: 3, maxLogBytesPerStream: 8 });
  for (let index = 0; index < 5; index++) {
    const run = request(`job-${index}`);
    history.started(run, master, startMs + index);
    history.output(run.runId, { stream: "stdout", offset: 0, data: bytes(`run ${index} says a lot\n`) });
    history.ended(run.runId, report("succeeded", 0), startMs + index + 1);
  }
  t.deepEqual(
    history.list().map((entry) => entry.jobId),
    ["job-2", "job-3", "job-4"],
  );
  t.deepEqual(await history.logs("job-0"), [], "a dropped run's log goes with it");
  const kept = await history.logs("job-4");
  t.is(Buffer.concat(kept.map((chunk) => chunk.data)).toString("utf8"), "run 4 sa", "8 bytes kept per stream");
  t.is(history.list()[2]?.logBytes.stdout, 8);

  // A run under way is never the one dropped: the oldest ended one is.
  const running = request("job-running");
  history.started(running, master, startMs + 10);
  t.deepEqual(
    history.list().map((entry) => entry.jobId),
    ["job-3", "job-4", "job-running"],
  );
  history.ended(running.runId, report("killed", null), startMs + 11);
  await history.close();
  await store.close();

  // A smaller bound at the next start drops the oldest again, and what it dropped stays dropped.
  store = await openNodeStore(path);
  t.teardown(() => store.close());
  history = await openRunHistory(store.db, { maxEntries: 2 });
  t.deepEqual(
    history.list().map((entry) => entry.jobId),
    ["job-4", "job-running"],
  );
  t.deepEqual(await history.logs("job-3"), []);
  let logKeys = 0;
  for await (const _key of store.db.sublevel("run-logs").keys()) logKeys++;
  t.is(logKeys, 1, "only job-4's log is left in the store (job-running wrote none)");
  await t.throwsAsync(openRunHistory(store.db, { maxEntries: 0 }), {
    message: /maxEntries: expected a whole number of at least 1, got 0/,
  });
});

test("the runs a worker carries out are written down, a run-ended line is logged, and a failed executor is a refusal", async (t) => {
  const path = await storePath(t);
  const store = await openNodeStore(path);
  t.teardown(() => store.close());
  const history = await openRunHistory(store.db);
  const lines: { event: string; fields: Record<string, unknown> }[] = [];
  let failNext = false;
  const executor: Executor = {
    probe: async () => ({ ok: true, reason: "" }) as never,
    kill: () => false,
    async run(run, hooks) {
      if (failNext) throw new Error("no sandbox here");
      hooks.onLog({ stream: "stdout", offset: 0, data: bytes("done\n") });
      return { runId: run.runId, ...report("succeeded", 0) };
    },
  };
  const carried = recordedRuns(
    {
      executor,
      prepare: async () => undefined,
      finished: async (_run, finished) => finished,
    },
    history,
    { masterOf: () => master, log: (event, fields = {}) => lines.push({ event, fields }), nowMs: () => startMs },
  );
  const logged: string[] = [];
  const run = request("job-ok", 1, 0);
  const done = await carried.executor.run(run, { onLog: (chunk) => logged.push(Buffer.from(chunk.data).toString()) });
  await carried.finished(run, done);
  t.deepEqual(logged, ["done\n"], "the run's own log still goes on to its master");
  t.deepEqual(lines, [
    {
      event: "run-ended",
      fields: {
        project: project.slice(0, 12),
        jobId: "job-ok",
        shard: 1,
        attempt: 0,
        outcome: "succeeded",
        exitCode: 0,
        durationMs: 1_250,
        resultDigest: resultDigest({ outcome: "succeeded", exitCode: 0, outputsDigest: "bafyoutputs" }),
      },
    },
  ]);
  t.is(history.ofJob("job-ok")[0]?.outputsDigest, "bafyoutputs");

  failNext = true;
  const failing = request("job-bad");
  await t.throwsAsync(carried.executor.run(failing, { onLog: () => undefined }));
  await carried.finished(failing, null);
  const [entry] = history.ofJob("job-bad");
  t.is(entry?.outcome, "refused");
  t.regex(entry?.summary ?? "", /no sandbox here/);
  t.is(lines[1]?.fields.outcome, "refused");
});
