/**
 * Home volunteers behind NAT, on one machine with network namespaces (test/netns.ts; needs root, ip and nft): a public
 * namespace with the project's node (master and relay) and two homes, each a worker behind its own router that
 * masquerades with nftables. Real `cimesh` processes, started and asked inside their namespaces with `ip netns exec`.
 *
 * - Both workers join through the master, run jobs, and their results reach it.
 * - Worker B runs a job whose inputs only worker A holds (the master's copy removed): over a direct connection if a
 *   hole punch made one, else relayed within the relay's limits; the test logs which.
 * - The relay's limits hold: a transfer over them is cut, and a fetch of the same tree completes within them.
 * - `cimesh status` in each namespace says how the node is reached: the master public, each worker behind NAT
 *   through the master's relay.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import type { NodeStatus } from "../node/index.ts";
import { cliPath, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";
import { Lab, labMissing } from "./netns.ts";

const relayCutPath = fileURLToPath(new URL("./fixtures/relay-cut.ts", import.meta.url));
const mib = 1024 * 1024;
/** The relay's data limit per relayed connection: room for the small tree, not for the large one. */
const relayDataBytes = 4 * mib;
/** The master's TCP port on the public network. */
const masterPort = 4001;
/** Bound on one command run inside a namespace. */
const commandTimeoutMs = 60_000;
/** Bound on each wait of this test (a job, a reservation, AutoNAT's verdict). */
const waitMs = 45_000;

/** `cimesh <args> --data-dir <dir>` inside a namespace; its exit code and output. */
function inNs(
  ns: string,
  dataDir: string,
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      "ip",
      ["netns", "exec", ns, process.execPath, cliPath, ...args, "--data-dir", dataDir],
      { env: { ...process.env, CIMESH_TEST_MESH: "1" }, timeout: commandTimeoutMs, maxBuffer: 16 * mib },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function inNsOk(ns: string, dataDir: string, args: readonly string[]): Promise<string> {
  const out = await inNs(ns, dataDir, args);
  if (out.code !== 0)
    throw new Error(`cimesh ${args.join(" ")} in ${ns} exited ${out.code}: ${out.stderr}${out.stdout}`);
  return out.stdout;
}

async function statusIn(ns: string, dataDir: string): Promise<NodeStatus> {
  return JSON.parse(await inNsOk(ns, dataDir, ["status", "--json"])) as NodeStatus;
}

async function jobEnded(ns: string, dataDir: string, jobId: string): Promise<{ status: string; reason?: string }> {
  return until(
    `job ${jobId} to end`,
    async () => {
      const out = await inNs(ns, dataDir, ["jobs", "--json"]);
      if (out.code !== 0) return null;
      const jobs =
        (JSON.parse(out.stdout) as { master: { jobId: string; status: string; reason?: string }[] | null }).master ??
        [];
      const job = jobs.find((candidate) => candidate.jobId === jobId);
      return job !== undefined && job.status !== "open" ? job : null;
    },
    waitMs,
  );
}

/** Removes every blob file of a node's store: what it packed or fetched is gone from it. */
async function removeBlobs(dataDir: string): Promise<number> {
  let removed = 0;
  const folder = join(dataDir, "blobs");
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true }))
    if (entry.isFile() && entry.name.startsWith("baf")) {
      await rm(join(entry.parentPath, entry.name));
      removed += 1;
    }
  return removed;
}

/** The root of the tree `cimesh submit` packed. */
function rootOf(submitOutput: string): string {
  const root = /packed .*: (baf\S+)/.exec(submitOutput)?.[1];
  if (root === undefined) throw new Error(`submit printed no packed root: ${submitOutput}`);
  return root;
}

function runFixture(ns: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "ip",
      ["netns", "exec", ns, process.execPath, relayCutPath, ...args],
      { timeout: 2 * commandTimeoutMs, maxBuffer: 16 * mib },
      (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(`${error.message}\n${stderr}`))),
    );
  });
}

test.serial(
  "home workers behind two NATs join through the master's relay, share inputs and keep to its limits",
  async (t) => {
    const missing = await labMissing();
    if (missing !== null) {
      t.log(`NAT test cannot run: ${missing}`);
      t.fail(`NAT test cannot run: ${missing}`);
      return;
    }
    const lab = new Lab();
    t.teardown(async () => {
      await lab.remove();
      const left = await lab.leftOver();
      if (left.length > 0) throw new Error(`namespaces left over: ${left.join(", ")}`);
    });
    const mesh = await Mesh.create();
    t.teardown(() => mesh.stopAll());
    await lab.init();
    const homeA = await lab.addHome(1);
    const homeB = await lab.addHome(2);

    const natSettings = [
      [["reachability", "relayLimits", "data"], relayDataBytes],
      [["reachability", "relayLimits", "durationMs"], 60_000],
    ] as const;
    const masterDir = await mesh.initNode("master");
    const { project, trustArgs } = await mesh.initProject(masterDir);
    await mesh.configure(masterDir, [[["listen"], [`/ip4/${lab.publicAddress}/tcp/${masterPort}`]], ...natSettings]);
    const workerDirs = [await mesh.initNode("worker-a"), await mesh.initNode("worker-b")];
    for (const dir of workerDirs) {
      await mesh.configure(dir, [[["listen"], ["/ip4/0.0.0.0/tcp/0"]], ...natSettings]);
      await inNsOk(lab.publicNs, dir, trustArgs);
    }
    const [dirA, dirB] = workerDirs as [string, string];
    // B starts paused: the first job goes to A.
    await mesh.configure(dirB, [[["worker", "availability"], "paused"]]);

    const master = await mesh.start("master", masterDir, ["--master"], { netns: lab.publicNs });
    const masterAddress = `/ip4/${lab.publicAddress}/tcp/${masterPort}/p2p/${master.peerId}`;
    const start = (name: string, dir: string, ns: string): Promise<NodeProcess> =>
      mesh.start(name, dir, ["--worker", "--bootstrap", masterAddress], { netns: ns });
    const workerA = await start("worker-a", dirA, homeA.lan);
    const workerB = await start("worker-b", dirB, homeB.lan);

    // How each is reached, as `cimesh status` in its own namespace says it.
    const masterReach = await until(
      "the master confirmed public by AutoNAT",
      async () => {
        const reach = (await statusIn(lab.publicNs, masterDir)).reachability;
        return reach?.kind === "public" ? reach : null;
      },
      waitMs,
    );
    t.true(
      masterReach.confirmed.some((address) => address.includes(lab.publicAddress)),
      masterReach.confirmed.join(),
    );
    t.not(masterReach.relayService, null, "the master relays for others");
    for (const [name, ns, dir] of [
      ["A", homeA.lan, dirA],
      ["B", homeB.lan, dirB],
    ] as const) {
      const reach = await until(
        `worker ${name} behind NAT with a reservation on the master's relay`,
        async () => {
          const found = (await statusIn(ns, dir)).reachability;
          return found?.kind === "relayed" && found.relays.includes(master.peerId) ? found : null;
        },
        waitMs,
      );
      t.true(reach.relayAddresses.every((address) => address.includes(`/p2p/${master.peerId}/p2p-circuit`)));
      const text = await inNsOk(ns, dir, ["status"]);
      t.regex(text, new RegExp(`reachable +behind NAT, through relay ${master.peerId}`), `worker ${name}'s status`);
    }
    t.regex(await inNsOk(lab.publicNs, masterDir, ["status"]), /reachable +public: /);
    t.log(`status: master public at ${masterReach.confirmed.join(", ")}; workers A and B behind NAT through its relay`);

    await until(
      "A's offer held by the master (B is paused)",
      async () => ((await statusIn(lab.publicNs, masterDir)).offersHeld[project]?.workers ?? 0) >= 1,
      waitMs,
    );

    // Job 1 with a small tree of inputs runs on A (B is paused): A fetches them from the master and provides them.
    const small = join(mesh.root, "small");
    await mkdir(small, { recursive: true });
    await writeFile(join(small, "data.bin"), randomBytes(2 * mib + 4321));
    const job = (id: string, inputs: Record<string, string>) =>
      writeJob(mesh, id, project, { id, ...inputs, network: false, steps: ["sha256sum data.bin"], timeout: "1m" });
    const smallRoot = rootOf(await inNsOk(lab.publicNs, masterDir, ["submit", await job("on-a", { inputs: "small" })]));
    const onA = await jobEnded(lab.publicNs, masterDir, "on-a");
    t.is(onA.status, "passed", onA.reason);
    const readyA = workerA.events.find((event) => event.event === "inputs-ready");
    t.true(Number(readyA?.fetchedBytes) > 2 * mib, "A fetched the inputs from the master");

    // Job 2, same inputs (named by their root), submitted while both workers are paused; then the master's copy is
    // removed and B made eager: it runs job 2, and can get the inputs only from A.
    await inNsOk(homeA.lan, dirA, ["availability", "paused"]);
    await inNsOk(lab.publicNs, masterDir, ["submit", await job("on-b", { inputsDigest: smallRoot })]);
    t.true((await removeBlobs(masterDir)) > 0, "the master held blobs to remove");
    await inNsOk(homeB.lan, dirB, ["availability", "eager"]);
    const onB = await jobEnded(lab.publicNs, masterDir, "on-b").catch((error: unknown) => {
      const seen = workerB.events.filter((event) => /inputs|blob|award|refus|run/.test(event.event));
      t.log(`B's events: ${JSON.stringify(seen).slice(0, 3000)}`);
      throw error;
    });
    t.is(onB.status, "passed", onB.reason);
    const readyB = workerB.events.find((event) => event.event === "inputs-ready");
    t.true(Number(readyB?.fetchedBytes) > 2 * mib, "B fetched the inputs");
    const bytesFromA = (readyB?.bytesByPeer as Record<string, number> | undefined)?.[workerA.peerId] ?? 0;
    t.true(bytesFromA > 2 * mib, `B fetched them from A, the only node that held them (${bytesFromA} bytes)`);
    const reachB = (await statusIn(homeB.lan, dirB)).reachability;
    const punched = reachB?.holePunched.includes(workerA.peerId) === true;
    t.log(
      punched
        ? "B fetched A's inputs over a direct connection a hole punch made through both NATs"
        : "B fetched A's inputs relayed through the master, within its limits (no hole punch through these NATs)",
    );

    // The relay's limits: a large tree held by A and the master; a transfer past them is cut, a fetch within them completes.
    const large = join(mesh.root, "large");
    await mkdir(large, { recursive: true });
    await writeFile(join(large, "data.bin"), randomBytes(6 * mib + 1234));
    await inNsOk(homeB.lan, dirB, ["availability", "paused"]);
    await inNsOk(homeA.lan, dirA, ["availability", "eager"]);
    const largeRoot = rootOf(
      await inNsOk(lab.publicNs, masterDir, ["submit", await job("large-on-a", { inputs: "large" })]),
    );
    t.is((await jobEnded(lab.publicNs, masterDir, "large-on-a")).status, "passed");
    const providerAddress = `${masterAddress}/p2p-circuit/p2p/${workerA.peerId}`;
    const out = await runFixture(homeB.lan, [masterAddress, providerAddress, largeRoot, join(mesh.root, "cut-store")]);
    const result = JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as {
      cutAfterBytes: number | null;
      cutError: string;
      report: { fetchedBytes: number; totalBytes: number; bytesByPeer: Record<string, number> };
    };
    t.not(result.cutAfterBytes, null, "the relay cut the transfer that went past its data limit");
    t.true(
      (result.cutAfterBytes ?? Number.POSITIVE_INFINITY) <= relayDataBytes,
      `cut after ${result.cutAfterBytes} bytes`,
    );
    t.true(
      result.report.fetchedBytes >= result.report.totalBytes,
      "the fetch completed (every chunk and the manifest)",
    );
    const fromA = result.report.bytesByPeer[workerA.peerId] ?? 0;
    t.true(fromA <= relayDataBytes, `A's share (${fromA} bytes) stayed within one relayed connection's limit`);
    t.true((result.report.bytesByPeer[master.peerId] ?? 0) > 0, "the rest came from the master, directly");
    t.log(
      `relay limit ${relayDataBytes} bytes: an unbounded transfer was cut after ${result.cutAfterBytes} bytes (${result.cutError.slice(0, 120)}); ` +
        `the fetch took ${fromA} bytes from A over the relay and ${result.report.bytesByPeer[master.peerId]} from the master`,
    );
  },
);
