/**
 * Attacks on fetching trees: providers that take blob requests and never
 * answer (or answer just enough to look alive), and tree bombs (a manifest
 * that names one chunk many times, so a small fetch unpacks to a huge folder).
 *
 * First the fetch and the unpacking themselves, against a fake host (each
 * peer honest, stalling, trickling or empty) and real blob stores; then real
 * processes over TCP on 127.0.0.1: a master and a worker started with the
 * CLI, and separate libp2p processes (test/fixtures/stall-provider.ts) that
 * provide a job's input root in the DHT and stall.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { cidOfManifest, encodeManifest, type TreeFile, treeChunkBytes } from "../crypto/index.ts";
import { type ExecutionRequest, jobSpecSchema } from "../jobs/index.ts";
import {
  FetchError,
  type FetchOptions,
  fetchTree,
  type Host,
  maxDhtProvidersPerFetch,
  maxProvidersPerFetch,
  minRequestsPerProvider,
  PeerBans,
} from "../node/host/index.ts";
import { InputsDeadlineError, runCarrier } from "../node/runtime/index.ts";
import {
  type BlobStore,
  openBlobStore,
  packTree,
  TreeTooLargeError,
  unpackedEntryBytes,
  unpackTree,
} from "../node/store/index.ts";
import { cli, cliOk, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

const mib = 1024 * 1024;
const stallerPath = fileURLToPath(new URL("./fixtures/stall-provider.ts", import.meta.url));

async function tempDir(t: ExecutionContext, prefix = "cimesh-attack-fetch-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Bytes of every file under a folder (0 when it does not exist). */
async function bytesUnder(folder: string): Promise<number> {
  let total = 0;
  let entries: string[];
  try {
    entries = await readdir(folder, { recursive: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  for (const entry of entries) {
    const info = await lstat(join(folder, String(entry))).catch(() => null);
    if (info?.isFile() === true) total += info.size;
  }
  return total;
}

/** A tree of `files` files of `fileBytes` random bytes each, packed into a store; its root. */
async function randomTree(t: ExecutionContext, store: BlobStore, files: number, fileBytes: number): Promise<string> {
  const folder = await tempDir(t);
  for (let index = 0; index < files; index++) await writeFile(join(folder, `f${index}`), randomBytes(fileBytes));
  return (await packTree(folder, store)).root;
}

/** A tree bomb: `copies` files that are all the one chunk of `chunkBytes` zero bytes. Its root and chunk. */
async function bombTree(store: BlobStore, copies: number, chunkBytes = treeChunkBytes) {
  const chunk = await store.put(new Uint8Array(chunkBytes));
  const files: TreeFile[] = Array.from({ length: copies }, (_, index) => ({
    path: `copy-${String(index).padStart(6, "0")}`,
    sizeBytes: chunkBytes,
    executable: false,
    chunks: [chunk],
  }));
  const bytes = encodeManifest({ version: 1, chunkBytes: treeChunkBytes, files, dirs: [] });
  const root = await store.putManifest(bytes, cidOfManifest(bytes));
  return { root, chunk, manifestBytes: bytes.length };
}

type Behaviour =
  /** Answers from its store, after delayMs. */
  | { readonly kind: "serve"; readonly store: BlobStore; readonly delayMs?: number }
  /** Takes every request and answers none. */
  | { readonly kind: "stall" }
  /** Holds its first request forever, and answers the others "missing" after everyMs, to look alive. */
  | { readonly kind: "trickle"; readonly everyMs: number }
  /** Answers "missing" at once. */
  | { readonly kind: "empty" };

/** A host whose peers behave as told; it records every request, and a hang-up fails the peer's open requests. */
function fakeHost(peers: ReadonlyMap<string, Behaviour>) {
  const asked: { peerId: string; cid: string }[] = [];
  const hungUp: string[] = [];
  const open = new Map<string, ((error: Error) => void)[]>();
  const host: Pick<Host, "requestPieces" | "hangUp"> = {
    async requestPieces(peerId, _protocol, bytes) {
      const cid = new TextDecoder().decode(bytes);
      asked.push({ peerId, cid });
      const behaviour = peers.get(peerId);
      if (behaviour === undefined) throw new Error(`dial ${peerId}: no such peer`);
      const pending = () =>
        new Promise<Uint8Array[]>((_resolve, reject) => {
          open.set(peerId, [...(open.get(peerId) ?? []), reject]);
        });
      switch (behaviour.kind) {
        case "serve": {
          await new Promise((resolve) => setTimeout(resolve, behaviour.delayMs ?? 0));
          const blob = await behaviour.store.get(cid);
          if (blob === null) return [Uint8Array.of(1)];
          const answer = new Uint8Array(blob.length + 1);
          answer.set(blob, 1);
          // In pieces, as a noise connection hands them over: the status byte alone, then the blob cut unevenly.
          const cut = Math.floor(answer.length / 3);
          return [answer.subarray(0, 1), answer.subarray(1, cut), answer.subarray(cut)];
        }
        case "stall":
          return pending();
        case "trickle": {
          if (asked.filter((request) => request.peerId === peerId).length === 1) return pending();
          await new Promise((resolve) => setTimeout(resolve, behaviour.everyMs));
          return [Uint8Array.of(1)];
        }
        case "empty":
          return [Uint8Array.of(1)];
      }
    },
    async hangUp(peerId) {
      hungUp.push(peerId);
      for (const reject of open.get(peerId) ?? []) reject(new Error("connection closed"));
      open.delete(peerId);
    },
  };
  return { host, asked, hungUp };
}

function fetchOptions(extra: Partial<FetchOptions> = {}) {
  const dropped: { peerId: string; why: string; kind: string }[] = [];
  const options: FetchOptions = {
    bans: new PeerBans(),
    onDropped: (peerId, why, kind) => dropped.push({ peerId, why, kind }),
    ...extra,
  };
  return { options, dropped };
}

test("a provider that takes requests and answers none is dropped and banned after the stall time; the fetch completes from the others", async (t) => {
  const source = await openBlobStore(await tempDir(t));
  const root = await randomTree(t, source, 12, 64 * 1024);
  const stallMs = 300;
  const { host, asked, hungUp } = fakeHost(
    new Map<string, Behaviour>([
      ["staller", { kind: "stall" }],
      ["honest", { kind: "serve", store: source }],
    ]),
  );
  const destination = await openBlobStore(await tempDir(t));
  const { options, dropped } = fetchOptions({ stallMs });
  // The staller is listed first: it is asked for the manifest, and for the first chunks of several lanes.
  const report = await fetchTree(host, destination, root, ["staller", "honest"], options);
  t.is(report.fetchedBlobs, 13, "the manifest and every chunk, from the honest peer");
  t.deepEqual(report.droppedPeers, ["staller"]);
  t.deepEqual(
    dropped.map(({ peerId, kind }) => ({ peerId, kind })),
    [{ peerId: "staller", kind: "stalled" }],
  );
  t.regex(dropped[0]?.why ?? "", /stalled: completed no answer for \d+ ms/);
  t.true(options.bans.isBanned("staller", Date.now()), "banned as a liar is");
  t.false(options.bans.isBanned("honest", Date.now()));
  t.deepEqual(hungUp, ["staller"]);
  const stallerAsked = asked.filter((request) => request.peerId === "staller").length;
  t.true(stallerAsked <= minRequestsPerProvider, `the staller held at most ${minRequestsPerProvider} requests at once`);

  // Banned, it is not asked again by the next fetch that shares the bans.
  const other = await randomTree(t, source, 2, 1000);
  const before = asked.length;
  await fetchTree(host, destination, other, ["staller", "honest"], options);
  t.false(
    asked.slice(before).some((request) => request.peerId === "staller"),
    "a banned staller is skipped",
  );
});

test("a provider that answers one request now and then to look alive, while holding another, is dropped as a staller", async (t) => {
  const source = await openBlobStore(await tempDir(t));
  const root = await randomTree(t, source, 40, 1000);
  const stallMs = 400;
  // The honest peer is slow enough that the trickler keeps being asked, and its answers keep its clock going.
  const { host } = fakeHost(
    new Map<string, Behaviour>([
      ["trickler", { kind: "trickle", everyMs: stallMs / 2 }],
      ["honest", { kind: "serve", store: source, delayMs: 100 }],
    ]),
  );
  const destination = await openBlobStore(await tempDir(t));
  const { options, dropped } = fetchOptions({ stallMs, concurrency: 4 });
  const report = await fetchTree(host, destination, root, ["honest", "trickler"], options);
  t.is(report.fetchedBlobs, 41);
  t.deepEqual(report.droppedPeers, ["trickler"]);
  t.is(dropped[0]?.kind, "stalled");
  t.regex(dropped[0]?.why ?? "", /held one request for \d+ ms while answering others/);
});

test("the hints are asked first, and at most maxDhtProvidersPerFetch of the DHT's providers, picked at random, are asked at all", async (t) => {
  const source = await openBlobStore(await tempDir(t));
  const root = await randomTree(t, source, 1, 1000);
  const fromDht = Array.from({ length: 40 }, (_, index) => `dht-${index}`);
  const peers = new Map<string, Behaviour>([["hint", { kind: "empty" }]]);
  for (const peerId of fromDht) peers.set(peerId, { kind: "empty" });
  const { host, asked } = fakeHost(peers);
  const { options } = fetchOptions({ moreProviders: Promise.resolve(fromDht) });
  const error = await t.throwsAsync(fetchTree(host, await openBlobStore(await tempDir(t)), root, ["hint"], options), {
    instanceOf: FetchError,
  });
  t.regex(error?.message ?? "", /expected one of 9 provider\(s\) to send it/);
  t.is(asked[0]?.peerId, "hint", "the hint is asked first");
  const distinct = new Set(asked.map((request) => request.peerId));
  t.is(distinct.size, 1 + maxDhtProvidersPerFetch);
  t.true(distinct.size <= maxProvidersPerFetch);
});

test("a fetch ends when its caller's signal aborts, whatever its providers do", async (t) => {
  const source = await openBlobStore(await tempDir(t));
  const root = await randomTree(t, source, 1, 1000);
  const { host } = fakeHost(new Map<string, Behaviour>([["staller", { kind: "stall" }]]));
  const stop = new AbortController();
  setTimeout(() => stop.abort(new Error("the caller's deadline")), 200);
  // A stall time longer than any test: only the signal can end it.
  const { options } = fetchOptions({ signal: stop.signal, stallMs: 10 * 60_000 });
  const error = await t.throwsAsync(
    fetchTree(host, await openBlobStore(await tempDir(t)), root, ["staller"], options),
    {
      instanceOf: FetchError,
    },
  );
  t.regex(error?.message ?? "", /fetch stopped: .*the caller's deadline/);
});

test("a tree bomb is refused once its manifest is in: no chunk is asked for, nothing is written, and the error names the limit", async (t) => {
  const source = await openBlobStore(await tempDir(t));
  const bomb = await bombTree(source, 300);
  const { host, asked } = fakeHost(new Map<string, Behaviour>([["provider", { kind: "serve", store: source }]]));
  const destination = await openBlobStore(await tempDir(t));
  const limit = { maxBytes: mib, name: "the job's resources.diskBytes" };
  const { options } = fetchOptions({ limit });
  const error = await t.throwsAsync(fetchTree(host, destination, bomb.root, ["provider"], options), {
    instanceOf: TreeTooLargeError,
  });
  t.regex(
    error?.message ?? "",
    /expected it to unpack within the job's resources\.diskBytes \(1048576 bytes\), but its manifest unpacks to \d+ bytes/,
  );
  t.deepEqual(
    asked.map((request) => request.cid),
    [bomb.root],
    "only the manifest was asked for",
  );
  t.false(await destination.has(bomb.chunk), "the chunk was not fetched");

  // Held whole already (the chunk is in the store), the unpacking refuses it before the destination is made.
  const folder = join(await tempDir(t), "never-made");
  await t.throwsAsync(unpackTree(bomb.root, source, folder, { limit }), { instanceOf: TreeTooLargeError });
  t.is(await bytesUnder(folder), 0);
  await t.throwsAsync(lstat(folder), { code: "ENOENT" }, "not even the folder was made");

  // Many empty files cost a block each on disk: counted too.
  const empties: TreeFile[] = Array.from({ length: 1000 }, (_, index) => ({
    path: `empty-${index}`,
    sizeBytes: 0,
    executable: false,
    chunks: [],
  }));
  const bytes = encodeManifest({ version: 1, chunkBytes: treeChunkBytes, files: empties, dirs: [] });
  const emptyRoot = await source.putManifest(bytes, cidOfManifest(bytes));
  const refused = await t.throwsAsync(unpackTree(emptyRoot, source, folder, { limit }), {
    instanceOf: TreeTooLargeError,
  });
  t.is(refused?.unpackedBytes, 1000 * unpackedEntryBytes);

  // Within its limit, the same tree unpacks.
  const small = await bombTree(source, 3, 1000);
  const unpacked = await unpackTree(small.root, source, join(folder, "ok"), { limit });
  t.is(unpacked.bytes, 3000);
});

test("a run whose inputs are not ready by their deadline is refused, with a summary naming the deadline", async (t) => {
  const blobs = await openBlobStore(await tempDir(t));
  const events: { event: string; fields: Record<string, unknown> }[] = [];
  const job = jobSpecSchema.parse({
    name: "late-inputs",
    steps: [{ name: "run", run: "true" }],
    env: {},
    timeoutMs: 30_000,
    resources: { cpus: 1, memoryBytes: 256 * mib, diskBytes: 64 * mib, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: cidOfManifest(encodeManifest({ version: 1, chunkBytes: treeChunkBytes, files: [], dirs: [] })),
    requiredSpecs: [],
    os: null,
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 1,
    deadlineMs: 1_800_000_000_000,
  });
  const run: ExecutionRequest = {
    runId: "run-1",
    project: "project-1",
    jobId: "job-1",
    attempt: 0,
    shard: 0,
    job,
    env: {},
  };
  const carrier = runCarrier({
    executor: undefined as never,
    host: { provide: async () => undefined } as unknown as Host,
    blobs,
    // Providers that never send anything: the fetch ends only when its signal says so.
    fetchFrom: (_root, _hints, options = {}) =>
      new Promise((_resolve, reject) => {
        options.signal?.addEventListener("abort", () => reject(new FetchError("stopped")), { once: true });
      }),
    log: (event, fields = {}) => events.push({ event, fields }),
    corruptOutputsDigest: null,
    inputsDeadline: { baseMs: 300, minBytesPerSecond: mib },
  });
  const error = await t.throwsAsync(carrier.prepare(run, "master", await tempDir(t)), {
    instanceOf: InputsDeadlineError,
  });
  t.regex(error?.message ?? "", /expected it ready within 300 ms .* but after \d+ ms: before its manifest was in/);
  t.is(events.at(-1)?.event, "inputs-refused");
});

/** A stall-provider.ts process providing `roots`; resolves once its provider records are out. */
async function startStaller(t: ExecutionContext, bootstrap: string, roots: readonly string[]) {
  const child: ChildProcess = spawn(process.execPath, [stallerPath, bootstrap, ...roots], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => {
    child.kill("SIGKILL");
  });
  let out = "";
  child.stdout?.setEncoding("utf8").on("data", (text: string) => {
    out += text;
  });
  child.stderr?.setEncoding("utf8").on("data", (text: string) => {
    out += text;
  });
  await until("the staller's provider records", () => /\bprovided\b/.test(out)).catch((error: unknown) => {
    throw new Error(`${String(error)}; the staller said: ${out}`);
  });
  const peerId = /staller (\S+)/.exec(out)?.[1] as string;
  return { peerId, asked: () => Number(/asked (\d+)\s*$/.exec(out)?.[1] ?? 0) };
}

async function meshWithWorker(mesh: Mesh) {
  const masterDir = await mesh.initNode("master");
  const { project, trustArgs } = await mesh.initProject(masterDir);
  const master = await mesh.start("master", masterDir, ["--master"]);
  const workerDir = await mesh.initNode("worker");
  await cliOk(workerDir, trustArgs);
  const worker = await mesh.start("worker", workerDir, ["--worker", "--bootstrap", master.address]);
  await until("the worker connected", async () => (await master.control.status()).peers >= 1);
  return { project, master, worker };
}

async function ended(master: NodeProcess, jobId: string) {
  return until(`job ${jobId} to end`, async () => {
    const detail = await master.control.job(jobId);
    return detail !== null && detail.status !== "open" ? detail : null;
  });
}

const droppedBy = (node: NodeProcess, peerId: string) =>
  node.events.filter((event) => event.event === "blob-peer-dropped" && event.peerId === peerId);

test.serial(
  "three providers that stall, found in the DHT or hinted, are banned; a real worker's inputs are ready within their deadline and the run passes",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, worker } = await meshWithWorker(mesh);
      // Inputs of 16 chunks: enough lanes that DHT providers are asked beside the master.
      const folder = join(mesh.root, "inputs");
      await mkdir(folder, { recursive: true });
      for (let index = 0; index < 16; index++) await writeFile(join(folder, `part-${index}`), randomBytes(mib));
      const scratch = await tempDir(t);
      const { root } = await packTree(folder, await openBlobStore(scratch));
      const stallers = await Promise.all([0, 1, 2].map(() => startStaller(t, master.address, [root])));

      const jobFile = await writeJob(mesh, "stalled-inputs", project, {
        id: "stalled-inputs",
        inputs: "inputs",
        steps: ["test $(cat part-* | wc -c) -eq 16777216"],
        timeout: "5m",
      });
      await cliOk(master.dataDir, ["submit", jobFile]);
      const detail = await ended(master, "stalled-inputs");
      t.is(detail.status, "passed", detail.reason);

      const ready = worker.events.find((event) => event.event === "inputs-ready" && event.root === root);
      if (ready === undefined) throw new Error("the worker logged no inputs-ready");
      t.true(Number(ready.tookMs) <= Number(ready.deadlineMs), "ready within the deadline the worker enforces");
      const askedStallers = stallers.filter((staller) => staller.asked() > 0);
      t.log(
        `inputs ready in ${ready.tookMs} ms (deadline ${ready.deadlineMs} ms); stallers asked: ${askedStallers.length} of 3`,
      );
      t.true(askedStallers.length >= 1, "the worker found the stallers in the DHT and asked at least one");
      for (const staller of askedStallers) {
        const [drop] = droppedBy(worker, staller.peerId);
        t.is(drop?.kind, "stalled", "every staller the worker asked was dropped as a staller");
        t.regex(String(drop?.why), /stalled: /);
        t.true(Number(drop?.bannedForMs) > 0, "and banned");
        t.true(staller.asked() <= 2, "after at most two requests held at once");
      }

      // Hinted first, through `cimesh fetch` on a node whose store is empty: both are asked, dropped and banned.
      const third = await mesh.start("third", await mesh.initNode("third"), ["--bootstrap", master.address]);
      const [first, second] = stallers as [(typeof stallers)[0], (typeof stallers)[0]];
      const copy = join(mesh.root, "copy");
      const fetched = await cliOk(third.dataDir, [
        "fetch",
        root,
        copy,
        "--from",
        first.peerId,
        "--from",
        second.peerId,
        "--from",
        master.peerId,
      ]);
      t.regex(fetched, /fetched .* 16 file\(s\)/);
      t.is(await bytesUnder(copy), 16 * mib);
      for (const staller of [first, second]) t.is(droppedBy(third, staller.peerId)[0]?.kind, "stalled");
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "tree bombs are refused before a byte is written: a job's inputs past its resources.diskBytes, a result past the job's disk, a download past the node's limit",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, worker } = await meshWithWorker(mesh);
      // The bombs go into the master's store (a store's folder may be shared between processes): 1 MiB, named many times.
      const masterBlobs = await openBlobStore(join(master.dataDir, "blobs"));
      const inputsBomb = await bombTree(masterBlobs, 256);

      // Inputs: 256 MiB unpacked, in a job that declares 1 MiB of disk (a run gets 16 MiB at least). The worker's disk is
      // watched all along.
      const workDir = join(worker.dataDir, "work");
      let mostWorkBytes = 0;
      let watching = true;
      const watch = (async () => {
        while (watching) {
          mostWorkBytes = Math.max(mostWorkBytes, await bytesUnder(workDir));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      const bombJob = await writeJob(mesh, "bomb-inputs", project, {
        id: "bomb-inputs",
        inputsDigest: inputsBomb.root,
        resources: { disk: "1MiB" },
        steps: ["true"],
        maxAttempts: 1,
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", bombJob]);
      const refusedJob = await ended(master, "bomb-inputs");
      watching = false;
      await watch;
      t.not(refusedJob.status, "passed");
      const summaries = refusedJob.attempts.map((attempt) => attempt.summary).join("\n");
      t.regex(
        summaries,
        /within the job's resources\.diskBytes \(1048576 declared, at least 16777216 for any run\) \(16777216 bytes\)/,
        "the refusal names the field",
      );
      const refused = worker.events.find((event) => event.event === "inputs-refused");
      t.regex(String(refused?.error), /nothing was written/);
      t.true(mostWorkBytes < mib, `the worker's run folders held at most ${mostWorkBytes} bytes`);
      const chunkPath = join(worker.dataDir, "blobs", "blobs", inputsBomb.chunk.slice(-3, -1), inputsBomb.chunk);
      await t.throwsAsync(lstat(chunkPath), { code: "ENOENT" }, "the bomb's chunk was never fetched");

      // A result: outputs of sparse files (no disk taken while the job ran) that unpack to 120 MiB, from a job that
      // declares 1 MiB. `cimesh result --download` refuses them by the job's declared disk, and writes nothing.
      const sparseJob = await writeJob(mesh, "sparse-outputs", project, {
        id: "sparse-outputs",
        resources: { disk: "1MiB" },
        steps: ["mkdir -p out && for i in 1 2 3 4 5 6 7 8; do truncate -s 15M out/zeros-$i; done"],
        outputs: ["out"],
        timeout: "1m",
      });
      await cliOk(master.dataDir, ["submit", sparseJob]);
      const sparse = await ended(master, "sparse-outputs");
      t.is(sparse.status, "passed", sparse.reason);
      const download = join(mesh.root, "download");
      const result = await cli(master.dataDir, ["result", "sparse-outputs", "--download", download]);
      t.not(result.code, 0);
      t.regex(
        result.stderr,
        /expected it to unpack within the job's resources\.diskBytes \(1048576 declared, .*\) \(16777216 bytes\)/,
      );
      t.regex(result.stderr, /nothing was written/);
      t.is(await bytesUnder(download), 0, "nothing was written");

      // A download by CID past the node's own limit (4 GiB): a 5 GiB bomb, refused by `cimesh fetch` on another node.
      const bigBomb = await bombTree(masterBlobs, 5 * 1024);
      const third = await mesh.start("third", await mesh.initNode("third"), ["--bootstrap", master.address]);
      const elsewhere = join(mesh.root, "elsewhere");
      const fetched = await cli(third.dataDir, ["fetch", bigBomb.root, elsewhere, "--from", master.peerId]);
      t.not(fetched.code, 0);
      t.regex(fetched.stderr, /the download limit \(--max-bytes, default 4 GiB\)/);
      t.is(await bytesUnder(elsewhere), 0);
      t.true((await bytesUnder(join(third.dataDir, "blobs"))) < mib, "the node fetched the manifest and nothing more");
    } finally {
      await mesh.stopAll();
    }
  },
);
