/**
 * What a newcomer tripped on, tried again with real `cimesh` processes on
 * 127.0.0.1: a bad --listen or --bootstrap (or the same in config.yaml)
 * exits at once naming it, before anything is opened; a start on a store
 * another node holds names that node; a lone master's keyset put waits for a
 * DHT peer at info level and goes in when one joins; `submit --wait` says
 * why a job is open; workers are named by PeerId; availability survives a
 * restart, kept in config.yaml; `result --download` writes every shard's
 * outputs (or one with --shard); `cimesh run` prints the result digest the
 * mesh agreed on and writes nothing under ~/.cimesh; `cimesh stop`.
 *
 * The mesh test runs jobs in the bubblewrap sandbox: it says so and fails
 * where bubblewrap is missing (`cimesh setup` installs it).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { access, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { tcp } from "@libp2p/tcp";
import test from "ava";
import { createLibp2p } from "libp2p";
import { dhtQueryTimeoutMs } from "../node/host/index.ts";
import { openStoreOf } from "../node/runtime/index.ts";
import { openNodeStore } from "../node/store/index.ts";
import { cli, cliOk, cliPath, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

/** Bound on a start that must fail: it should exit before it opens anything, in about the time the CLI loads. */
const failingStartLimitMs = 30_000;
/** Bound on `submit --wait` of the mesh test's job, from submit to its end. */
const submitWaitLimitMs = 120_000;

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Killed by the bound, not ended by itself. */
  readonly timedOut: boolean;
}

/** Runs `cimesh <args>` with `env` as given (nothing inherited about the data folder), bounded by limitMs. */
function runCimesh(args: readonly string[], env: NodeJS.ProcessEnv, limitMs: number): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (text: string) => {
      stdout += text;
    });
    child.stderr.setEncoding("utf8").on("data", (text: string) => {
      stderr += text;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, limitMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

function meshEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CIMESH_TEST_MESH: "1", ...extra };
  delete env.CIMESH_HOME;
  return env;
}

async function present(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function hasBubblewrap(): boolean {
  try {
    execFileSync("bwrap", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

test("a bad --listen or --bootstrap, given or in config.yaml, exits at once naming it, before anything is opened", async (t) => {
  const mesh = await Mesh.create();
  t.teardown(() => mesh.stopAll());
  const dataDir = await mesh.initNode("node");
  const cases: [flag: string, value: string, says: RegExp][] = [
    ["--bootstrap", "foo", /\/ip4\/127\.0\.0\.1\/tcp\/4001\/p2p\/12D3Koo/],
    ["--bootstrap", "127.0.0.1:46001", /written as a multiaddr: \/ip4\/127\.0\.0\.1\/tcp\/46001\/p2p\/<its PeerId>/],
    ["--bootstrap", "/ip4/127.0.0.1/tcp/46001/p2p/12D3KooWabc", /the PeerId part "12D3KooWabc" .*Incorrect length/],
    ["--listen", "foo", /\/ip4\/0\.0\.0\.0\/tcp\/4001/],
    ["--listen", "127.0.0.1:46001", /written as a multiaddr: \/ip4\/127\.0\.0\.1\/tcp\/46001\)/],
  ];
  for (const [flag, value, says] of cases) {
    const run = await runCimesh(
      ["start", "--worker", flag, value, "--data-dir", dataDir],
      meshEnv(),
      failingStartLimitMs,
    );
    const what = `${flag} ${value}\n${run.stderr}`;
    t.false(run.timedOut, `still running after ${failingStartLimitMs} ms: ${what}`);
    t.is(run.code, 1, what);
    t.true(run.stderr.startsWith(`cimesh: ${flag}: expected`), what);
    t.true(run.stderr.includes(JSON.stringify(value)), what);
    t.regex(run.stderr, says, what);
  }
  // The same fields in the config are named by file, line and field.
  const configCases: [field: string, value: string][] = [
    ["bootstrap", "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc"],
    ["listen", "127.0.0.1:46001"],
  ];
  for (const [field, value] of configCases) {
    await mesh.configure(dataDir, [[[field], [value]]]);
    const run = await runCimesh(["start", "--worker", "--data-dir", dataDir], meshEnv(), failingStartLimitMs);
    const what = `${field}: [${value}]\n${run.stderr}`;
    t.false(run.timedOut, what);
    t.is(run.code, 1, what);
    t.regex(run.stderr, new RegExp(`config\\.yaml:\\d+: ${field}\\[0\\]: expected`), what);
    t.true(run.stderr.includes(JSON.stringify(value)), what);
    await mesh.configure(dataDir, [[[field], field === "listen" ? ["/ip4/127.0.0.1/tcp/0"] : []]]);
  }
  // Nothing was opened: no store, no blob store, no control API, no lock.
  const left = await readdir(dataDir);
  for (const name of ["store", "blobs", "api.port", "api.token", "node.lock"]) t.false(left.includes(name), name);
});

test("a store held by another process is named: by its lock file (pid, no control API yet), or said to have none", async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), "cimesh-held-"));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  // LevelDB's lock is per process: this one holds the store, another (a sleep) is named by the lock file.
  const holding = await openNodeStore(join(dataDir, "store"));
  t.teardown(() => holding.close());
  const unnamed = await t.throwsAsync(openStoreOf(dataDir));
  t.regex(unnamed?.message ?? "", /the store at .* is held by another process, which left no lock file naming it/);
  const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
  t.teardown(() => sleeper.kill("SIGKILL"));
  const lock = { pid: sleeper.pid, apiPort: null, startedAtMs: Date.now(), args: ["60"] };
  await writeFile(join(dataDir, "node.lock"), JSON.stringify(lock));
  const named = await t.throwsAsync(openStoreOf(dataDir));
  t.is(
    named?.message,
    `the store at ${join(dataDir, "store")} is held by cimesh pid ${sleeper.pid} (no control API yet: it is starting, or stuck before its control API came up); stop it with \`cimesh stop --data-dir ${dataDir}\``,
  );
  // A lock whose process is gone (or is another program under a reused pid) names nobody.
  await writeFile(join(dataDir, "node.lock"), JSON.stringify({ ...lock, args: ["--data-dir", dataDir, "start"] }));
  const stale = await t.throwsAsync(openStoreOf(dataDir));
  t.regex(stale?.message ?? "", /which left no lock file naming it/);
});

/** `cimesh submit --wait` as a process whose output can be read while it runs. */
function submitWaiting(dataDir: string, jobPath: string) {
  const child: ChildProcess = spawn(process.execPath, [cliPath, "submit", jobPath, "--wait", "--data-dir", dataDir], {
    env: meshEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (text: string) => {
    stdout += text;
  });
  child.stderr?.setEncoding("utf8").on("data", (text: string) => {
    stderr += text;
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    async exit(limitMs: number): Promise<number | null> {
      const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    kill: () => child.kill("SIGKILL"),
  };
}

function eventsNamed(node: NodeProcess, event: string) {
  return node.events.filter((line) => line.event === event);
}

test.serial(
  "one mesh: a lone master's keyset put waits at info level; --wait says why; PeerIds; availability kept over a crash; the store's holder named; every shard downloaded; run's digest and no ~/.cimesh; stop",
  async (t) => {
    if (!hasBubblewrap()) {
      t.fail("needs bubblewrap (bwrap) to run jobs in the sandbox: run `cimesh setup` (as root it installs it)");
      return;
    }
    const mesh = await Mesh.create();
    t.teardown(() => mesh.stopAll());

    // A peer that speaks no cimesh DHT (a stranger found by mDNS, say): the master has a peer but no DHT peer.
    const stranger = await createLibp2p({
      addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify() },
    });
    t.teardown(() => stranger.stop());
    const strangerAddress = stranger.getMultiaddrs()[0]?.toString() ?? "";

    const masterDir = await mesh.initNode("master");
    const { project, trustArgs } = await mesh.initProject(masterDir);
    const masterStartedMs = Date.now();
    const master = await mesh.start("master", masterDir, ["--master", "--bootstrap", strangerAddress]);
    const deferred = await until("the master's keyset put deferred for want of a DHT peer", () =>
      eventsNamed(master, "dht-put-deferred").at(0),
    );
    t.is(deferred.level, "info");
    t.regex(String(deferred.why), /no peer of the cimesh DHT yet.*when one joins/);
    t.is(deferred.peers, 1);

    // A sharded job submitted before any worker: --wait says why it is open.
    const job = {
      id: "frictions-1",
      shards: 3,
      steps: ['mkdir -p out && echo "$CIMESH_SHARD_INDEX of $CIMESH_TOTAL_SHARDS" > out/s.txt'],
      outputs: ["out"],
      timeout: "1m",
    };
    const jobPath = await writeJob(mesh, "sharded", project, job);
    const waiting = submitWaiting(masterDir, jobPath);
    t.teardown(() => waiting.kill());
    await until("submit --wait to say why the job is open", () =>
      /frictions-1: open \(no worker has offered its slots yet \(1 peer connected\)/.test(waiting.stdout()),
    );

    const workerDir = await mesh.initNode("worker");
    await cliOk(workerDir, trustArgs);
    await mesh.configure(workerDir, [[["worker", "slots"], 3]]);
    let worker = await mesh.start("worker", workerDir, ["--worker", "--bootstrap", master.address]);
    const code = await waiting.exit(submitWaitLimitMs);
    t.is(code, 0, `submit --wait\n${waiting.stdout()}\n${waiting.stderr()}`);
    const waited = waiting.stdout();
    t.log(waited.split("\n").filter((line) => line.includes("frictions-1: open")));
    t.true(waited.includes(`on worker ${worker.peerId}: reported, succeeded, exit 0`), waited);
    t.regex(waited, /frictions-1: passed/);

    // The keyset went into the DHT once a DHT peer (the worker) joined.
    await until("the master's keyset put done once a DHT peer joined", () => eventsNamed(master, "dht-put-done").at(0));

    // result names the worker by PeerId, not by a key prefix.
    const result = await cliOk(masterDir, ["result", "frictions-1"]);
    t.true(result.includes(`on worker ${worker.peerId}`), result);
    t.notRegex(result, /on worker [0-9a-f]{12}…/);
    const detail = await master.control.job("frictions-1");
    if (detail === null) return t.fail("no job on the master");
    t.is(detail.waiting, "");

    // Every shard's outputs, a folder each; one shard with --shard.
    const all = join(mesh.root, "all");
    const downloaded = await cliOk(masterDir, ["result", "frictions-1", "--download", all]);
    t.regex(
      downloaded,
      /wrote the accepted outputs of 3 of 3 shard\(s\) of frictions-1 into .*: shard-0\/, shard-1\/, shard-2\//,
    );
    t.deepEqual((await readdir(all)).sort(), ["shard-0", "shard-1", "shard-2"]);
    for (const shard of [0, 1, 2])
      t.is(await readFile(join(all, `shard-${shard}`, "out", "s.txt"), "utf8"), `${shard} of 3\n`);
    const one = join(mesh.root, "one");
    await cliOk(masterDir, ["result", "frictions-1", "--download", one, "--shard", "1"]);
    t.is(await readFile(join(one, "out", "s.txt"), "utf8"), "1 of 3\n");

    // cimesh run without --data-dir: the digest the mesh agreed on, and nothing under ~/.cimesh.
    const home = await mkdtemp(join(tmpdir(), "cimesh-home-"));
    t.teardown(() => rm(home, { recursive: true, force: true }));
    const ran = await runCimesh(["run", jobPath, "--shard", "1"], meshEnv({ HOME: home }), submitWaitLimitMs);
    t.is(ran.code, 0, ran.stderr);
    t.true(ran.stderr.includes(`shard 1    ${detail.acceptedDigests[1]}`), ran.stderr);
    t.false(await present(join(home, ".cimesh")), "cimesh run wrote under ~/.cimesh");

    // Availability is kept in config.yaml (its comment too) and resumed after a crash (SIGKILL leaves a stale lock).
    await cliOk(workerDir, ["availability", "paused"]);
    const config = await readFile(join(workerDir, "config.yaml"), "utf8");
    t.regex(config, /# eager \| reluctant \| paused \| offline.*\n {2}availability: paused\n/);

    // A second start on a held store names the holder, even with the holder's control API out of sight.
    const portFile = join(workerDir, "api.port");
    const port = (await readFile(portFile, "utf8")).trim();
    await rename(portFile, `${portFile}.aside`);
    const second = await runCimesh(["start", "--worker", "--data-dir", workerDir], meshEnv(), failingStartLimitMs);
    await rename(`${portFile}.aside`, portFile);
    t.false(second.timedOut, second.stderr);
    t.is(second.code, 1, second.stderr);
    t.true(
      second.stderr.includes(
        `the store at ${join(workerDir, "store")} is held by cimesh pid ${worker.process.pid} (control API on port ${port}); stop it with \`cimesh stop --data-dir ${workerDir}\``,
      ),
      second.stderr,
    );

    await worker.kill();
    t.true(await present(join(workerDir, "node.lock")), "a killed node leaves its lock");
    worker = await mesh.start("worker-again", workerDir, ["--worker", "--bootstrap", master.address]);
    const started = await until("the restarted worker's started event", () => eventsNamed(worker, "started").at(0));
    t.is(started.availability, "paused");
    t.is((await worker.control.status()).availability, "paused");
    await cliOk(workerDir, ["availability", "eager"]);
    t.regex(await readFile(join(workerDir, "config.yaml"), "utf8"), /\n {2}availability: eager\n/);

    // cimesh stop: a clean stop, waited for; the lock goes with it.
    const stopped = await cliOk(workerDir, ["stop"]);
    t.regex(stopped, new RegExp(`stopped the node in .* \\(cimesh pid ${worker.process.pid}\\)`));
    t.false(await present(join(workerDir, "node.lock")));
    t.not(worker.process.exitCode ?? worker.process.signalCode, null);
    const nothing = await cli(workerDir, ["stop"]);
    t.is(nothing.code, 1);
    t.regex(nothing.stderr, /no node is running in/);

    // The lone start's put would have failed by kad's query timeout: no such line, now or later.
    const sinceStartMs = Date.now() - masterStartedMs;
    if (sinceStartMs < dhtQueryTimeoutMs)
      await new Promise((wake) => setTimeout(wake, dhtQueryTimeoutMs - sinceStartMs));
    t.deepEqual(eventsNamed(master, "dht-put-failed"), []);
  },
);
