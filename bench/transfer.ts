/**
 * The figures of inputs by content through the mesh.
 *
 * 1. Throughput of a `treeFileCount` × `treeFileBytes` tree (200 MB of
 *    incompressible bytes from a seeded AES-CTR keystream) between two
 *    processes on 127.0.0.1. The serving process (bench/transfer-serve.ts,
 *    started here with process.execPath) holds the tree in a blob store and
 *    serves it two ways:
 *    - libp2p: a real host (node/host: TCP, noise, yamux) answering the
 *      blob protocol (node/host's serveBlobs); this process, another host,
 *      calls fetchTree into a fresh, empty blob store (every blob verified
 *      against its CID on both sides and written to disk), then unpackTree
 *      into a folder, timed apart;
 *    - plain TCP: a node:net server sending each file's bytes on its own
 *      connection, received here into files (the same bytes, the same disk);
 *      also received and discarded, the socket's own ceiling.
 *    The three are interleaved round by round (so a burst of load on this
 *    shared machine falls on all of them), the two copies into files taking
 *    turns going first, after one warm-up round; medians of
 *    `throughputRounds` rounds. The source tree and the served store are
 *    flushed to disk before the first round, so their writeback falls on no
 *    round. The figure is libp2p fetch ÷ plain copy.
 * 2. The time a cached worker saves on a repeated job: real `cimesh start`
 *    processes (a master and one worker, TCP on 127.0.0.1). Each round packs
 *    a fresh `cachedJobFileCount` × `cachedJobFileBytes` folder (the job file
 *    names it with `inputs:`; packed into the master's store as `cimesh
 *    submit` does) and submits the same job twice, one after the other, to
 *    the one worker: the first fetches every blob, the second none. Per job:
 *    submit → the worker's execution-started, execution-started → its
 *    inputs-ready (fetch and unpack; the worker's clock), and submit → the
 *    master's job-ended. Medians over `cachedJobRounds` rounds.
 *
 * Every wait is bounded; every process started here is stopped and every
 * temp folder removed, on failure too.
 */
import { createCipheriv, createHash } from "node:crypto";
import { createWriteStream, readFileSync } from "node:fs";
import { mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { identityFromSeed } from "../crypto/index.ts";
import {
  createHost,
  fetchTree,
  type Host,
  openBlobStore,
  PeerBans,
  packTree,
  parseJobFile,
  unpackTree,
} from "../node/index.ts";
import {
  EventBoard,
  initNode,
  initProject,
  killOnExit,
  loopbackHost,
  median,
  meshReadyTimeoutMs,
  type NodeEvent,
  printStderrTails,
  type Started,
  spawnTracked,
  startNode,
  submitAndWait,
  trustProject,
  until,
} from "./nodes.ts";

const serverPath = fileURLToPath(new URL("./transfer-serve.ts", import.meta.url));

// --- sizes and repetitions ---------------------------------------------------------------------------------------

/** Files of the throughput tree. */
const treeFileCount = 20;
/** Bytes of each: 20 × 10 MB = 200 MB. */
const treeFileBytes = 10_000_000;
/** Measured rounds of the throughput part (each: a plain copy, a discarding read, a libp2p fetch and unpack). */
const throughputRounds = 5;
/** Rounds run first and not counted: JIT, connection, page cache. */
const throughputWarmupRounds = 1;
/** Files of each cached-job input folder. */
const cachedJobFileCount = 10;
/** Bytes of each: 10 × 10 MB = 100 MB. */
const cachedJobFileBytes = 10_000_000;
/** Rounds of the cached-job part: each a fresh input folder, submitted twice. */
const cachedJobRounds = 3;
/** Bytes the generator enciphers at once. */
const generatorBlockBytes = 1024 * 1024;
/** Folders the generated files are spread over, so the tree is a tree. */
const generatedFolderCount = 4;

// --- bounds ------------------------------------------------------------------------------------------------------

/** Bound on the serving process's start, up to its JSON line. */
const serverStartTimeoutMs = 30_000;
/** Bound on one copy of the whole tree, any method. */
const copyTimeoutMs = 5 * 60_000;
/** Bound on one job, submit to job-ended. */
const jobTimeoutMs = 5 * 60_000;
/** Lines of a process's stderr kept for the error message of a failed run. */
const stderrTailLines = 200;

const bytesPerMB = 1_000_000;
/** Linux's USER_HZ: the unit of /proc/<pid>/stat's CPU times. */
const clockTicksPerSecond = 100;

// --- small helpers -----------------------------------------------------------------------------------------------

/** `work`, or an error naming `what` once limitMs has passed (the work itself is stopped by the caller's cleanup). */
function within<T>(what: string, limitMs: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`expected ${what} within ${limitMs} ms`)), limitMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** CPU time (user + system) of this process and of process `pid` (from /proc/<pid>/stat), in ms. */
function cpuOfBoth(pid: number): number {
  const own = process.cpuUsage();
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isFinite(ticks)) throw new Error(`/proc/${pid}/stat: expected utime and stime`);
  return (own.user + own.system) / 1000 + (ticks * 1000) / clockTicksPerSecond;
}

const loadNow = () => loadavg().map((value) => Number(value.toFixed(2)));
const mbPerSecond = (bytes: number, ms: number) => bytes / bytesPerMB / (ms / 1000);
const fmtRate = (value: number) => `${value.toFixed(1)} MB/s`;
const fmtMs = (value: number) => `${value.toFixed(0)} ms`;

/** The relative paths of a generated tree, in order. */
function generatedPaths(fileCount: number): string[] {
  return Array.from(
    { length: fileCount },
    (_, i) => `dir-${i % generatedFolderCount}/file-${String(i).padStart(3, "0")}.bin`,
  );
}

/**
 * Writes `fileCount` files of `fileBytes` under `folder`: an AES-128-CTR
 * keystream keyed by `seed` (one IV per file), so the same seed gives the
 * same bytes and nothing compresses or deduplicates.
 */
async function writeTree(folder: string, seed: string, fileCount: number, fileBytes: number): Promise<string[]> {
  const key = createHash("sha256").update(`cimesh-bench-transfer:${seed}`).digest().subarray(0, 16);
  const zeros = Buffer.alloc(generatorBlockBytes);
  const paths = generatedPaths(fileCount);
  for (const [index, rel] of paths.entries()) {
    const iv = createHash("sha256").update(`${seed}:${index}`).digest().subarray(0, 16);
    const cipher = createCipheriv("aes-128-ctr", key, iv);
    const blocks: Buffer[] = [];
    for (let done = 0; done < fileBytes; done += generatorBlockBytes) {
      blocks.push(cipher.update(zeros.subarray(0, Math.min(generatorBlockBytes, fileBytes - done))));
    }
    const path = join(folder, ...rel.split("/"));
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, Buffer.concat(blocks));
  }
  return paths;
}

/** fsyncs every file under `folder`: its dirty pages go to disk now. */
async function flushFiles(folder: string): Promise<void> {
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = await open(join(entry.parentPath, entry.name), "r");
    try {
      await file.sync();
    } finally {
      await file.close();
    }
  }
}

// --- part 1: throughput ------------------------------------------------------------------------------------------

interface Served {
  readonly peerId: string;
  readonly address: string;
  readonly tcpPort: number;
}

/** Receives one file of the plain TCP server into `sink`; returns the bytes received. */
async function receivePlain(port: number, rel: string, sink: "discard" | string, signal: AbortSignal): Promise<number> {
  const socket = connect({ host: loopbackHost, port, signal });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.write(`${rel}\n`);
  if (sink !== "discard") {
    await mkdir(dirname(sink), { recursive: true });
    await pipeline(socket, createWriteStream(sink), { signal });
    return (await stat(sink)).size;
  }
  let bytes = 0;
  await pipeline(
    socket,
    async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) bytes += chunk.length;
    },
    { signal },
  );
  return bytes;
}

/** The whole tree over plain TCP, one file per connection, one after the other; into `folder`, or discarded. */
async function copyPlain(port: number, paths: readonly string[], folder: string | null): Promise<number> {
  const signal = AbortSignal.timeout(copyTimeoutMs);
  let bytes = 0;
  for (const rel of paths) {
    const received = await receivePlain(
      port,
      rel,
      folder === null ? "discard" : join(folder, ...rel.split("/")),
      signal,
    );
    if (received !== treeFileBytes)
      throw new Error(`plain TCP: expected ${treeFileBytes} bytes of ${rel}, got ${received}`);
    bytes += received;
  }
  return bytes;
}

interface ThroughputRound {
  readonly plainCopyMs: number;
  /** CPU time of both processes (this one and the server) during the plain copy, and during the libp2p fetch. */
  readonly plainCopyCpuMs: number;
  readonly libp2pFetchCpuMs: number;
  readonly plainDiscardMs: number;
  readonly libp2pFetchMs: number;
  readonly unpackMs: number;
}

export interface TransferThroughput {
  readonly treeBytes: number;
  readonly files: number;
  readonly rounds: number;
  readonly warmupRounds: number;
  readonly setup: string;
  readonly packMs: number;
  readonly libp2pFetchMBps: number;
  readonly unpackMBps: number;
  readonly libp2pFetchAndUnpackMBps: number;
  readonly plainTcpCopyMBps: number;
  readonly plainTcpDiscardMBps: number;
  /** median libp2p fetch ÷ median plain TCP copy (the goal: ≥ 0.5). */
  readonly ratio: number;
  /** Median over rounds of plain copy CPU ÷ libp2p fetch CPU (both processes): the ratio a machine of its own would give where CPU bounds both. */
  readonly cpuRatio: number;
  /** Medians over rounds of the CPU time of both processes during the plain copy, and during the libp2p fetch. */
  readonly plainCopyCpuMedianMs: number;
  readonly libp2pFetchCpuMedianMs: number;
  /** The median of each round's own ratio (the two copies of one round ran seconds apart). */
  readonly ratioMedianOfRounds: number;
  readonly roundsMs: readonly ThroughputRound[];
  readonly loadAverageBefore: readonly number[];
  readonly loadAverageAfter: readonly number[];
}

export async function benchThroughput(measuredRounds = throughputRounds): Promise<TransferThroughput> {
  const root = await mkdtemp(join(tmpdir(), "cimesh-bench-transfer-"));
  const started: Started[] = [];
  const forget = killOnExit(started);
  let host: Host | null = null;
  const loadAverageBefore = loadNow();
  try {
    const source = join(root, "source");
    const treeBytes = treeFileCount * treeFileBytes;
    console.log(
      `throughput: a tree of ${treeFileCount} files × ${treeFileBytes / bytesPerMB} MB = ${treeBytes / bytesPerMB} MB, ` +
        `served by a child process, fetched here; both on ${loopbackHost} (load ${loadAverageBefore.join(" ")})`,
    );
    const paths = await writeTree(source, "throughput", treeFileCount, treeFileBytes);
    const serverStore = join(root, "server-store");
    const packStartMs = performance.now();
    const packed = await packTree(source, await openBlobStore(serverStore), { respectGitignore: false });
    const packMs = performance.now() - packStartMs;
    if (packed.bytes !== treeBytes) throw new Error(`pack: expected ${treeBytes} bytes, got ${packed.bytes}`);
    console.log(
      `${"pack (packTree, this process)".padEnd(44)} ${fmtMs(packMs)}   ${fmtRate(mbPerSecond(treeBytes, packMs))}`,
    );
    // Written back now rather than during some round (the kernel writes dirty pages back about 30 s later).
    await flushFiles(source);
    await flushFiles(serverStore);

    const serverSeed = createHash("sha256").update("cimesh-bench-transfer:server").digest("hex");
    // Its stdin stays open: the serving process stops when this one ends.
    const server = spawnTracked("server", [serverPath, serverStore, source, serverSeed], started, {
      stderrTailLines,
      stdin: "pipe",
    });
    const served = await Promise.race([
      until<Served>(
        "the serving process to listen",
        () => {
          const line = server.stdout().split("\n")[0] ?? "";
          return line.endsWith("}") ? (JSON.parse(line) as Served) : null;
        },
        serverStartTimeoutMs,
      ),
      server.exited.then(() => {
        throw new Error(`the serving process exited before it listened: ${server.entry.stderrTail()}`);
      }),
    ]);
    const serverPid = server.entry.child.pid as number;
    const serverAddress = served.address.includes("/p2p/") ? served.address : `${served.address}/p2p/${served.peerId}`;
    host = await createHost({
      identity: identityFromSeed(createHash("sha256").update("cimesh-bench-transfer:client").digest()),
      listen: [`/ip4/${loopbackHost}/tcp/0`],
      bootstrap: [serverAddress],
      ipColocationWeight: 0,
      connectionMonitor: false,
    });
    const client = host;

    const rounds: ThroughputRound[] = [];
    for (let round = 0; round < throughputWarmupRounds + measuredRounds; round++) {
      const plainCopy = async () => {
        const plainFolder = join(root, `plain-${round}`);
        const cpuStart = cpuOfBoth(serverPid);
        const startMs = performance.now();
        await copyPlain(served.tcpPort, paths, plainFolder);
        const plainCopyMs = performance.now() - startMs;
        const plainCopyCpuMs = cpuOfBoth(serverPid) - cpuStart;
        await rm(plainFolder, { recursive: true, force: true });
        return { plainCopyMs, plainCopyCpuMs };
      };
      const libp2pFetch = async () => {
        const fetchStore = join(root, `fetch-${round}`);
        const unpacked = join(root, `unpack-${round}`);
        const store = await openBlobStore(fetchStore);
        const cpuStart = cpuOfBoth(serverPid);
        let startMs = performance.now();
        const report = await within(
          "a libp2p fetch of the tree",
          copyTimeoutMs,
          fetchTree(client, store, packed.root, [served.peerId], { bans: new PeerBans() }),
        );
        const libp2pFetchMs = performance.now() - startMs;
        const libp2pFetchCpuMs = cpuOfBoth(serverPid) - cpuStart;
        if (report.fetchedBytes < treeBytes || report.droppedPeers.length > 0)
          throw new Error(
            `libp2p fetch: expected ${treeBytes} bytes from an honest server, got ${JSON.stringify(report)}`,
          );
        startMs = performance.now();
        const written = await unpackTree(packed.root, store, unpacked);
        const unpackMs = performance.now() - startMs;
        if (written.bytes !== treeBytes) throw new Error(`unpack: expected ${treeBytes} bytes, got ${written.bytes}`);
        await rm(fetchStore, { recursive: true, force: true });
        await rm(unpacked, { recursive: true, force: true });
        return { libp2pFetchMs, libp2pFetchCpuMs, unpackMs, fetchedBlobs: report.fetchedBlobs };
      };
      const plainDiscard = async () => {
        const startMs = performance.now();
        await copyPlain(served.tcpPort, paths, null);
        return performance.now() - startMs;
      };
      // The two copies take turns going first: neither always follows the other's writes and deletions.
      const plainFirst = round % 2 === 0;
      const plainEarly = plainFirst ? await plainCopy() : null;
      const fetchedEarly = plainFirst ? null : await libp2pFetch();
      const plainDiscardMs = await plainDiscard();
      const { libp2pFetchMs, libp2pFetchCpuMs, unpackMs, fetchedBlobs } = fetchedEarly ?? (await libp2pFetch());
      const { plainCopyMs, plainCopyCpuMs } = plainEarly ?? (await plainCopy());

      const counted = round >= throughputWarmupRounds;
      if (counted)
        rounds.push({ plainCopyMs, plainCopyCpuMs, plainDiscardMs, libp2pFetchMs, libp2pFetchCpuMs, unpackMs });
      console.log(
        `  ${counted ? `round ${round - throughputWarmupRounds + 1}` : "warm-up"}: plain copy ${fmtRate(mbPerSecond(treeBytes, plainCopyMs))}, ` +
          `plain discard ${fmtRate(mbPerSecond(treeBytes, plainDiscardMs))}, libp2p fetch ${fmtRate(mbPerSecond(treeBytes, libp2pFetchMs))} ` +
          `(${fetchedBlobs} blobs), unpack ${fmtRate(mbPerSecond(treeBytes, unpackMs))}; CPU of both processes: plain copy ${fmtMs(plainCopyCpuMs)}, libp2p fetch ${fmtMs(libp2pFetchCpuMs)}`,
      );
    }

    const rate = (pick: (round: ThroughputRound) => number) =>
      median(rounds.map((round) => mbPerSecond(treeBytes, pick(round))));
    const libp2pFetchMBps = rate((round) => round.libp2pFetchMs);
    const plainTcpCopyMBps = rate((round) => round.plainCopyMs);
    const result: TransferThroughput = {
      treeBytes,
      files: treeFileCount,
      rounds: measuredRounds,
      warmupRounds: throughputWarmupRounds,
      setup:
        "serving side in a child process (bench/transfer-serve.ts): libp2p host + blob store, and a node:net server; " +
        "fetching side in this process; TCP on 127.0.0.1; received bytes written to disk (libp2p: blob store; plain: files)",
      packMs,
      libp2pFetchMBps,
      unpackMBps: rate((round) => round.unpackMs),
      libp2pFetchAndUnpackMBps: rate((round) => round.libp2pFetchMs + round.unpackMs),
      plainTcpCopyMBps,
      plainTcpDiscardMBps: rate((round) => round.plainDiscardMs),
      ratio: libp2pFetchMBps / plainTcpCopyMBps,
      ratioMedianOfRounds: median(rounds.map((round) => round.plainCopyMs / round.libp2pFetchMs)),
      cpuRatio: median(rounds.map((round) => round.plainCopyCpuMs / round.libp2pFetchCpuMs)),
      plainCopyCpuMedianMs: median(rounds.map((round) => round.plainCopyCpuMs)),
      libp2pFetchCpuMedianMs: median(rounds.map((round) => round.libp2pFetchCpuMs)),
      roundsMs: rounds,
      loadAverageBefore,
      loadAverageAfter: loadNow(),
    };
    const line = (name: string, value: string) => console.log(`${name.padEnd(44)} ${value}`);
    line(`libp2p fetch (median of ${measuredRounds})`, fmtRate(result.libp2pFetchMBps));
    line("plain TCP copy into files (node:net)", fmtRate(result.plainTcpCopyMBps));
    line(
      "ratio libp2p / plain (goal ≥ 0.5)",
      `${result.ratio.toFixed(2)}   (median of per-round ratios ${result.ratioMedianOfRounds.toFixed(2)})`,
    );
    line("CPU ratio plain copy / libp2p fetch", result.cpuRatio.toFixed(2));
    line(
      "CPU of both processes (median)",
      `plain copy ${fmtMs(result.plainCopyCpuMedianMs)}, libp2p fetch ${fmtMs(result.libp2pFetchCpuMedianMs)}`,
    );
    line("plain TCP read and discarded", fmtRate(result.plainTcpDiscardMBps));
    line("unpack (unpackTree, after the fetch)", fmtRate(result.unpackMBps));
    line("libp2p fetch + unpack", fmtRate(result.libp2pFetchAndUnpackMBps));
    line("load average before → after", `${loadAverageBefore.join(" ")} → ${result.loadAverageAfter.join(" ")}`);
    return result;
  } catch (error) {
    printStderrTails(started);
    throw error;
  } finally {
    await host?.stop().catch(() => undefined);
    await Promise.all(started.map((entry) => entry.stop()));
    forget();
    await rm(root, { recursive: true, force: true });
  }
}

// --- part 2: a repeated job on a cached worker -------------------------------------------------------------------

interface JobRun {
  readonly jobId: string;
  /** submit → the worker's execution-started. */
  readonly claimMs: number;
  /** execution-started → inputs-ready: fetch of what the cache lacks, then unpack (both on the worker's clock). */
  readonly inputsMs: number;
  /** submit → the master's job-ended (passed). */
  readonly endToEndMs: number;
  readonly fetchedBytes: number;
  readonly fetchedBlobs: number;
}

interface JobFigures {
  readonly claimMedianMs: number;
  readonly inputsMedianMs: number;
  readonly endToEndMedianMs: number;
  readonly fetchedBytesMedian: number;
}

export interface CachedJobBench {
  readonly setup: string;
  readonly inputBytes: number;
  readonly rounds: number;
  readonly first: JobFigures;
  readonly second: JobFigures;
  /** Medians over rounds of (first − second). */
  readonly savedEndToEndMedianMs: number;
  readonly savedInputsMedianMs: number;
  readonly packMedianMs: number;
  readonly runs: readonly { readonly first: JobRun; readonly second: JobRun; readonly packMs: number }[];
  readonly loadAverageBefore: readonly number[];
  readonly loadAverageAfter: readonly number[];
}

function figuresOf(runs: readonly JobRun[]): JobFigures {
  return {
    claimMedianMs: median(runs.map((run) => run.claimMs)),
    inputsMedianMs: median(runs.map((run) => run.inputsMs)),
    endToEndMedianMs: median(runs.map((run) => run.endToEndMs)),
    fetchedBytesMedian: median(runs.map((run) => run.fetchedBytes)),
  };
}

async function benchCachedJob(): Promise<CachedJobBench> {
  const root = await mkdtemp(join(tmpdir(), "cimesh-bench-transfer-job-"));
  const started: Started[] = [];
  const forget = killOnExit(started);
  const board = new EventBoard();
  const loadAverageBefore = loadNow();
  const inputBytes = cachedJobFileCount * cachedJobFileBytes;
  try {
    console.log(
      `\ncached worker: 1 master and 1 worker (cimesh start, ${loopbackHost}); ${cachedJobRounds} rounds of a fresh ` +
        `${inputBytes / bytesPerMB} MB inputs folder submitted twice (load ${loadAverageBefore.join(" ")})`,
    );
    const masterDir = await initNode(root, "master");
    const trust = await initProject(masterDir);
    const { project } = trust;
    const master = await startNode("master", masterDir, ["--master"], board, started, stderrTailLines);
    const workerDir = await initNode(root, "worker");
    await trustProject(workerDir, trust);
    const workerFlags = ["--worker", "--bootstrap", master.address];
    const worker = await startNode("worker", workerDir, workerFlags, board, started, stderrTailLines);
    await until(
      "the worker to hold the project keyset and the master to see it",
      async () => {
        if (board.problem !== null) throw new Error(`the worker has no sandbox: ${board.problem}`);
        const status = await worker.control.status();
        const keyset = status.trusted.some((entry) => entry.project === project && entry.keysetVersion !== null);
        return keyset && (await master.control.status()).peers >= 1;
      },
      meshReadyTimeoutMs,
    );

    const runJob = async (jobId: string, text: string, jobFilePath: string): Promise<JobRun & { packMs: number }> => {
      const parsed = parseJobFile(text, jobFilePath, Date.now());
      let spec = parsed.spec;
      let packMs = 0;
      if (parsed.inputsFolder !== null) {
        // As `cimesh submit` does: pack the folder into the master's store (blobs are files named by CID), name its root.
        const packStartMs = performance.now();
        const packed = await packTree(
          join(dirname(jobFilePath), parsed.inputsFolder),
          await openBlobStore(join(masterDir, "blobs")),
        );
        packMs = performance.now() - packStartMs;
        spec = { ...spec, inputsDigest: packed.root };
      }
      // Only a job with inputs has an inputs-ready event: no wait (and no timer) for one without.
      const events = parsed.inputsFolder === null ? ["execution-started"] : ["execution-started", "inputs-ready"];
      const job = await submitAndWait(master, board, project, jobId, spec, events, jobTimeoutMs);
      const [start, ready] = job.events as [NodeEvent, NodeEvent?];
      const inputs = ready ?? start;
      return {
        jobId,
        claimMs: start.t - job.submittedAtMs,
        inputsMs: inputs.t - start.t,
        endToEndMs: job.ended.t - job.submittedAtMs,
        fetchedBytes: Number(inputs.fetchedBytes ?? 0),
        fetchedBlobs: Number(inputs.fetchedBlobs ?? 0),
        packMs,
      };
    };

    // Warm-up, not counted: the first job on a fresh mesh pays for streams and the sandbox's first start.
    const warmPath = join(root, "warmup.yaml");
    const warmup = await runJob(
      "transfer-warmup",
      JSON.stringify({ project, name: "warmup", steps: ["true"] }),
      warmPath,
    );
    console.log(`warm-up job (no inputs) passed, end to end ${fmtMs(warmup.endToEndMs)}`);

    const runs: { first: JobRun; second: JobRun; packMs: number }[] = [];
    for (let round = 0; round < cachedJobRounds; round++) {
      const folder = join(root, `inputs-${round}`);
      await writeTree(folder, `cached-job-${round}`, cachedJobFileCount, cachedJobFileBytes);
      const jobFilePath = join(root, `job-${round}.yaml`);
      const text = JSON.stringify({ project, name: "bench-inputs", inputs: `inputs-${round}`, steps: ["true"] });
      await writeFile(jobFilePath, text);
      const first = await runJob(`transfer-${round}-first`, text, jobFilePath);
      const second = await runJob(`transfer-${round}-second`, text, jobFilePath);
      if (first.fetchedBytes < inputBytes)
        throw new Error(`round ${round}: expected the first job to fetch its inputs: ${JSON.stringify(first)}`);
      runs.push({ first, second, packMs: first.packMs });
      const show = (run: JobRun) =>
        `claim ${fmtMs(run.claimMs)}, inputs ${fmtMs(run.inputsMs)} (${(run.fetchedBytes / bytesPerMB).toFixed(1)} MB fetched), end to end ${fmtMs(run.endToEndMs)}`;
      console.log(`  round ${round + 1}: pack ${fmtMs(first.packMs)}; first: ${show(first)}; second: ${show(second)}`);
      await rm(folder, { recursive: true, force: true });
    }

    const first = figuresOf(runs.map((run) => run.first));
    const second = figuresOf(runs.map((run) => run.second));
    const result: CachedJobBench = {
      setup:
        "real cimesh start processes (1 master, 1 worker, TCP on 127.0.0.1); inputs packed into the master's store as cimesh submit does; " +
        "the same job submitted twice in a row to the one worker, after a warm-up job",
      inputBytes,
      rounds: cachedJobRounds,
      first,
      second,
      savedEndToEndMedianMs: median(runs.map((run) => run.first.endToEndMs - run.second.endToEndMs)),
      savedInputsMedianMs: median(runs.map((run) => run.first.inputsMs - run.second.inputsMs)),
      packMedianMs: median(runs.map((run) => run.packMs)),
      runs,
      loadAverageBefore,
      loadAverageAfter: loadNow(),
    };
    const row = (name: string, figures: JobFigures) =>
      console.log(
        `${name.padEnd(44)} end to end ${fmtMs(figures.endToEndMedianMs).padStart(8)}   inputs ready ${fmtMs(figures.inputsMedianMs).padStart(8)}   ` +
          `claim ${fmtMs(figures.claimMedianMs).padStart(6)}   fetched ${(figures.fetchedBytesMedian / bytesPerMB).toFixed(1)} MB`,
      );
    row(`first run, empty cache (median of ${cachedJobRounds})`, first);
    row("second run, same inputs, cached", second);
    console.log(
      `${"saved by the cache (median of differences)".padEnd(44)} end to end ${fmtMs(result.savedEndToEndMedianMs)}, inputs ready ${fmtMs(result.savedInputsMedianMs)}`,
    );
    console.log(
      `${"load average before → after".padEnd(44)} ${loadAverageBefore.join(" ")} → ${result.loadAverageAfter.join(" ")}`,
    );
    return result;
  } catch (error) {
    printStderrTails(started);
    throw error;
  } finally {
    board.close();
    await Promise.all(started.map((entry) => entry.stop()));
    forget();
    await rm(root, { recursive: true, force: true });
  }
}

export interface TransferBench {
  readonly throughput: TransferThroughput;
  readonly cachedJob: CachedJobBench;
}

export async function benchTransfer(): Promise<TransferBench> {
  const throughput = await benchThroughput();
  const cachedJob = await benchCachedJob();
  return { throughput, cachedJob };
}
