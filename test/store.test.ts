import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { recordSeq } from "../crypto/index.ts";
import { createMaster } from "../jobs/index.ts";
import { openStore, seqBlockSize } from "../node/store/index.ts";

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-store-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test("sequence numbers never repeat across a restart, even mid-block", async (t) => {
  const path = join(await tempDir(t), "store");
  let store = await openStore(path);
  const first = [await store.nextSeq(), await store.nextSeq(), await store.nextSeq()];
  await store.close();
  store = await openStore(path);
  const after = await store.nextSeq();
  await store.close();
  t.deepEqual(first, [0, 1, 2]);
  t.is(after, seqBlockSize);
});

test("master state, keysets and the replay ledger come back after a restart", async (t) => {
  const path = join(await tempDir(t), "store");
  let store = await openStore(path);
  const master = createMaster({ project: `b${"c".repeat(52)}` });
  master.seq = 41;
  await store.saveMaster(master);
  await store.saveKeyset(master.config.project, new Uint8Array([1, 2, 3]));
  let ledger = await store.loadLedger();
  const signer = new Uint8Array(32).fill(5);
  const nowMs = 1_800_000_000_000;
  ledger = recordSeq(ledger, signer, 7, nowMs + 60_000, nowMs).ledger;
  const window = ledger.signers.get(Buffer.from(signer).toString("latin1"));
  if (window === undefined) throw new Error("no window");
  await store.saveLedgerEntry(signer, window, ledger.floorExpiresAtMs);
  await store.close();

  store = await openStore(path);
  t.teardown(() => store.close());
  t.deepEqual(await store.loadMaster(master.config.project), master);
  t.deepEqual(await store.loadKeyset(master.config.project), new Uint8Array([1, 2, 3]));
  const restored = await store.loadLedger();
  t.is(
    recordSeq(restored, signer, 7, nowMs + 60_000, nowMs).verdict,
    "replay",
    "a replay after the restart is still refused",
  );
  t.is(recordSeq(restored, signer, 8, nowMs + 60_000, nowMs).verdict, "fresh");
});

test("log chunks are kept by offset: the same chunk twice is stored once, in order", async (t) => {
  const store = await openStore(join(await tempDir(t), "store"));
  t.teardown(() => store.close());
  const chunk = (offset: number, text: string) => ({
    attempt: 0,
    stream: "stdout" as const,
    offset,
    data: new TextEncoder().encode(text),
  });
  await store.putLogChunk("job-1", chunk(6, "world\n"));
  await store.putLogChunk("job-1", chunk(0, "hello "));
  await store.putLogChunk("job-1", chunk(6, "world\n"));
  await store.putLogChunk("job-10", chunk(0, "other job"));
  const chunks = await store.logChunks("job-1");
  t.is(chunks.map((c) => new TextDecoder().decode(c.data)).join(""), "hello world\n");
});
