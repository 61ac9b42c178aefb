import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { recordSeq } from "../crypto/index.ts";
import { createWorker, type JobRecord, sequenceFloorAt } from "../jobs/index.ts";
import { openNodeStore } from "../node/store/index.ts";

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-store-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const project = `b${"c".repeat(52)}`;

function jobRecord(jobId: string, submittedAtMs: number): JobRecord {
  return {
    jobId,
    spec: {} as JobRecord["spec"],
    submittedAtMs,
    status: "passed",
    reason: "",
    endedAtMs: submittedAtMs + 1,
    round: 0,
    bidProbability: 1,
    eligibleEstimate: 0,
    lastAnnouncedAtMs: submittedAtMs,
    windowEndsAtMs: null,
    reannounceAtMs: null,
    bids: [],
    attempts: [],
    shards: [],
    bidsReceived: 0,
    announcements: 1,
  };
}

test("the reserved sequence comes back after a restart, and a store-less start begins at the clock's floor", async (t) => {
  const path = join(await tempDir(t), "store");
  let store = await openNodeStore(path);
  t.is((await store.load()).seqReservedUpTo, 0);
  await store.persist([{ space: "seq", reservedUpTo: 20_000 }]);
  await store.close();
  store = await openNodeStore(path);
  t.teardown(() => store.close());
  t.is((await store.load()).seqReservedUpTo, 20_000);
  t.true(sequenceFloorAt(1_800_000_000_000) > 20_000);
});

test("job records, reputations, the worker, keysets and the replay ledger come back after a restart", async (t) => {
  const path = join(await tempDir(t), "store");
  let store = await openNodeStore(path);
  const worker = createWorker("ab".repeat(32), { shares: { [project]: 1 }, dimensions: {} as never, specs: [] });
  const signer = new Uint8Array(32).fill(5);
  const nowMs = 1_800_000_000_000;
  const ledger = recordSeq((await store.load()).ledger, signer, 7, nowMs + 60_000, nowMs).ledger;
  const window = ledger.signers.get(Buffer.from(signer).toString("latin1"));
  if (window === undefined) throw new Error("no window");
  await store.persist([
    { space: "job", project, jobId: "a", record: jobRecord("a", 1) },
    { space: "job", project, jobId: "b", record: jobRecord("b", 2) },
    {
      space: "reputation",
      project,
      worker: "ff".repeat(32),
      record: { consecutiveValid: 3, validTotal: 4, invalidTotal: 1 },
    },
    { space: "worker", state: worker },
    { space: "keyset", project, bytes: new Uint8Array([1, 2, 3]) },
    {
      space: "ledger",
      signer,
      key: Buffer.from(signer).toString("latin1"),
      window,
      floorExpiresAtMs: ledger.floorExpiresAtMs,
    },
  ]);
  await store.persist([{ space: "job", project, jobId: "a", record: null }]);
  await store.close();

  store = await openNodeStore(path);
  t.teardown(() => store.close());
  const stored = await store.load();
  t.deepEqual(
    stored.masters.get(project)?.jobs.map((job) => job.jobId),
    ["b"],
    "a removed job stays removed",
  );
  t.deepEqual(stored.masters.get(project)?.reputation, {
    ["ff".repeat(32)]: { consecutiveValid: 3, validTotal: 4, invalidTotal: 1 },
  });
  t.deepEqual(stored.worker, JSON.parse(JSON.stringify(worker)));
  t.deepEqual(stored.keysets.get(project), new Uint8Array([1, 2, 3]));
  t.is(
    recordSeq(stored.ledger, signer, 7, nowMs + 60_000, nowMs).verdict,
    "replay",
    "a replay after the restart is still refused",
  );
  t.is(recordSeq(stored.ledger, signer, 8, nowMs + 60_000, nowMs).verdict, "fresh");
});

test("log chunks are kept by offset: the same chunk twice is stored once, in order", async (t) => {
  const store = await openNodeStore(join(await tempDir(t), "store"));
  t.teardown(() => store.close());
  const chunk = (offset: number, text: string) => ({
    attempt: 0,
    stream: "stdout" as const,
    offset,
    data: new TextEncoder().encode(text),
  });
  const log = (jobId: string, offset: number, text: string) =>
    store.persist([{ space: "log", jobId, chunk: chunk(offset, text) }]);
  await log("job-1", 6, "world\n");
  await log("job-1", 0, "hello ");
  await log("job-1", 6, "world\n");
  await log("job-10", 0, "other job");
  const chunks = await store.logChunks("job-1");
  t.is(chunks.map((c) => new TextDecoder().decode(c.data)).join(""), "hello world\n");
});
