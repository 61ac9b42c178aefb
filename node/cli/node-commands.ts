/**
 * The commands about this node itself: init and id (its key), start (join the
 * mesh and serve the control API until stopped), status, and the worker's
 * availability.
 */
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Argument } from "commander";
import { CimeshError } from "../../crypto/index.ts";
import type { Availability } from "../../jobs/index.ts";
import {
  type ControlClient,
  ControlRequestError,
  connectControl,
  loginCodeLifetimeMs,
  type NodeStatus,
  portFileName,
} from "../control/index.ts";
import {
  type AddressRole,
  acquireNodeLock,
  addressProblem,
  configPath,
  configTemplate,
  formatDuration,
  generateIdentity,
  hexToBytes,
  loadConfig,
  lockFileName,
  lockHolder,
  peerIdOf,
  processRuns,
  saveIdentity,
  writeFileAtomic,
} from "../files/index.ts";
import type { RunningNode, StartOptions } from "../runtime/index.ts";
import { client, collect, dataDirOf, exists, keyFileName, nodeIdentity, out, program, time } from "./common.ts";

/** How long `start` gives the node to stop on SIGINT/SIGTERM before it exits anyway. */
export const stopTimeoutMs = 15_000;
/** How long `start` waits for an answer from a node that may already run in the folder. */
export const runningCheckTimeoutMs = 2_000;

/** `start` in a folder where a node already answers. */
export class NodeAlreadyRunningError extends CimeshError {
  constructor(dataDir: string, port: number) {
    super(
      "ERR_NODE_RUNNING",
      `a node is already running in ${dataDir} (control API on port ${port}): expected none; stop it first with \`cimesh stop --data-dir ${dataDir}\` (or Ctrl-C where it runs)`,
    );
  }
}

/** The mesh runtime (libp2p and the rest) cannot be loaded here. */
export class RuntimeUnavailableError extends CimeshError {
  constructor(detail: string) {
    super(
      "ERR_RUNTIME_UNAVAILABLE",
      `expected the mesh runtime (node/runtime/ and libp2p) to load, but: ${detail}; run \`npm ci\` in the cimesh folder and try again`,
    );
  }
}

/** `start` was given an unsafe or contradictory combination. */
export class StartRefusedError extends CimeshError {
  constructor(message: string) {
    super("ERR_START", message);
  }
}

/** Adds `init`: the node key and a config file. */
export function addInitCommand(): void {
  program
    .command("init")
    .description("create this node's ed25519 key (its libp2p PeerId) and a commented config.yaml in the data folder")
    .action(async () => {
      const dataDir = dataDirOf();
      const keyPath = join(dataDir, keyFileName);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      const identity = generateIdentity();
      if (await exists(keyPath)) {
        throw new CimeshError(
          "ERR_EXISTS",
          `${keyPath} already exists: this node has a key; move it away first to make a new identity`,
        );
      }
      await saveIdentity(keyPath, identity);
      out(`created ${keyPath}`);
      if (!(await exists(configPath(dataDir)))) {
        await writeFileAtomic(configPath(dataDir), configTemplate, 0o644);
        out(`created ${configPath(dataDir)}`);
      }
      out(`peer id ${peerIdOf(identity.publicKey).toString()}`);
    });
}

/** Adds `id`: the node's PeerId or public key. */
export function addIdCommand(): void {
  program
    .command("id")
    .description("print this node's PeerId")
    .option("--public-key", "print the node's public key (hex) instead")
    .action(async (options: { publicKey?: boolean }) => {
      const identity = await nodeIdentity(dataDirOf());
      out(
        options.publicKey === true
          ? Buffer.from(identity.publicKey).toString("hex")
          : peerIdOf(identity.publicKey).toString(),
      );
    });
}

/**
 * V8 flags a worker-only node runs with: memory over speed, as its CPU goes to its jobs' sandboxes. Savings are of the
 * idle worker's VmRSS in `npm run bench -- lean` (memory part), each against the flags before it:
 * - `--max-semi-space-size=1`: a young generation of 1 MiB semi-spaces (V8 grows them to 16 MiB, resident ever after);
 * - `--optimize-for-size`: V8's memory-saving mode (smaller heap growth steps, denser code and objects);
 * - `--no-opt`: no TurboFan, whose compiler pages of the node binary and optimized code stay resident (5 MiB);
 * - `--no-sparkplug`: no baseline machine code beside the bytecode (3 MiB);
 * - `--bytecode-old-age=1`: a function not run since the last full GC loses its bytecode, compiled again if it runs
 *   (3 MiB): most of a worker's code (startup, config, the master's half of the protocol) runs once;
 * - `--liftoff-only` and `--wasm-wrapper-tiering-budget` (never reached): WebAssembly (noise's ChaCha20-Poly1305 of
 *   messages under 1,200 bytes and its SHA-256, both loaded with @chainsafe/libp2p-noise) runs as Liftoff's baseline
 *   code through V8's generic call wrappers, so no wasm function or wrapper is compiled by TurboFan, whose pages of
 *   the node binary would stay resident (2.5 MiB);
 * - `--compact-on-every-full-gc`: every full GC moves the old generation's live objects out of its partly empty
 *   pages and frees them; without it, the pages a burst of jobs filled stay resident half empty (3 MiB after 1,000
 *   trivial jobs), for a full GC about twice as long (29 ms on average instead of 16, one every 60 jobs or so);
 * - `--no-icu-timezone-data`: local time (the availability rules' minute of day and weekday) from the operating
 *   system's time zone, as the machine's other programs read it, not from ICU's zone data and objects (1 MiB).
 * The cost is CPU in JavaScript: a 200 MB blob fetch over noise and yamux on loopback took about a fifth more CPU (both
 * processes) at the same MB/s; jobs run in their sandboxes, untouched.
 */
export const workerV8Flags: readonly string[] = [
  "--max-semi-space-size=1",
  "--optimize-for-size",
  "--no-opt",
  "--no-sparkplug",
  "--bytecode-old-age=1",
  "--liftoff-only",
  "--wasm-wrapper-tiering-budget=2147483647",
  "--compact-on-every-full-gc",
  "--no-icu-timezone-data",
];
/**
 * glibc malloc settings of a worker-only node, each unless the environment sets it:
 * - MALLOC_ARENA_MAX: two arenas (each thread's own arena keeps pages);
 * - MALLOC_TRIM_THRESHOLD_: free memory at the top of the heap above 128 KiB goes back to the system. glibc's own
 *   threshold starts there but rises with every large block freed (up to 64 MiB), after which the heap keeps what a
 *   peak took (about 1 MiB of an idle worker).
 */
export const workerMallocEnv: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: "2",
  MALLOC_TRIM_THRESHOLD_: String(128 * 1024),
};

/** Adds `start`: runs the node and its control API until SIGINT or SIGTERM. */
export function addStartCommand(): void {
  program
    .command("start")
    .description("start this node: join the mesh, serve the control API on 127.0.0.1; Ctrl-C stops it")
    .option("--worker", "run jobs of trusted projects")
    .option("--master", "announce jobs for the projects in the config's masters")
    .option("--listen <addr>", "libp2p address to listen on, repeatable (replaces the config's)", collect)
    .option("--bootstrap <addr>", "peer to meet first, repeatable (added to the config's)", collect)
    .option(
      "--allow-unsandboxed",
      "run jobs without a sandbox where bubblewrap is missing (jobs get your user's access)",
    )
    .option(
      "--fault-inject-corrupt-results",
      "FAULT INJECTION, for tests only: report a wrong outputs digest for every job this worker runs",
    )
    .action(
      async (options: {
        worker?: boolean;
        master?: boolean;
        listen?: string[];
        bootstrap?: string[];
        allowUnsandboxed?: boolean;
        faultInjectCorruptResults?: boolean;
      }) => {
        const dataDir = dataDirOf();
        // Before anything is opened: a mistyped address is one line, not a node half started.
        checkAddresses("--listen", "listen", options.listen ?? []);
        checkAddresses("--bootstrap", "bootstrap", options.bootstrap ?? []);
        await nodeIdentity(dataDir);
        const config = await loadConfig(dataDir);
        await refuseIfRunning(dataDir);
        if (options.master === true && config.masters.length === 0) {
          throw new StartRefusedError(
            `--master: expected projects under masters in ${configPath(dataDir)}, found none: run \`cimesh project init\` first`,
          );
        }
        // A worker alone is a guest on a lent machine: it runs with workerV8Flags, which V8 takes only as its process
        // starts, so this process replaces itself (same pid, same streams) by one started with them, before anything
        // is opened, with workerMallocEnv. Where execve is missing (Windows), the node runs with V8's defaults.
        const workerOnly = options.worker === true && options.master !== true;
        if (workerOnly && !workerV8Flags.every((flag) => process.execArgv.includes(flag)))
          process.execve?.(
            process.execPath,
            [process.execPath, ...workerV8Flags, ...process.execArgv, ...process.argv.slice(1)],
            { ...workerMallocEnv, ...process.env },
          );
        const startOptions: StartOptions = {
          dataDir,
          worker: options.worker === true,
          master: options.master === true,
          listen: options.listen ?? [],
          bootstrap: options.bootstrap ?? [],
          allowUnsandboxed: options.allowUnsandboxed === true,
          faultInjectCorruptResults: options.faultInjectCorruptResults === true,
        };
        if (startOptions.faultInjectCorruptResults)
          process.stderr.write(
            "cimesh: WARNING: --fault-inject-corrupt-results: this worker lies about every result\n",
          );
        if (startOptions.allowUnsandboxed)
          process.stderr.write(
            "cimesh: WARNING: --allow-unsandboxed: jobs may run with your user's access to this machine\n",
          );
        let startNode: (options: StartOptions) => Promise<RunningNode>;
        try {
          ({ startNode } = await import("../runtime/index.ts"));
        } catch (error) {
          throw new RuntimeUnavailableError((error as Error).message);
        }
        const { startControlServer } = await import("../control/index.ts");
        // Names this process to a start that finds the store held; released when the node stops.
        const lock = await acquireNodeLock(dataDir);
        let node: RunningNode;
        let control: Awaited<ReturnType<typeof startControlServer>>;
        try {
          node = await startNode(startOptions);
          try {
            control = await startControlServer(node, dataDir, config.apiPort);
          } catch (error) {
            await node.stop();
            throw error;
          }
          await lock.setApiPort(control.port);
        } catch (error) {
          await lock.release();
          throw error;
        }
        const roles = [
          ...(startOptions.worker ? ["worker"] : []),
          ...(startOptions.master ? [`master of ${config.masters.join(", ")}`] : []),
        ];
        out(`peer id ${node.peerId}`);
        for (const address of node.addresses()) out(`listening on ${address}`);
        out(`control API on 127.0.0.1:${control.port} (port in ${join(dataDir, portFileName)})`);
        out(`roles: ${roles.length === 0 ? "none (relays gossip only; add --worker or --master)" : roles.join("; ")}`);
        if (startOptions.worker) out(availabilityLine(config.worker.availability, (await node.status()).availability));
        out("running; Ctrl-C or `cimesh stop` stops it");

        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) {
            process.stderr.write(`cimesh: ${signal} again: exiting without a clean stop\n`);
            process.exit(1);
          }
          stopping = true;
          out(`${signal}: stopping`);
          const timer = setTimeout(() => {
            process.stderr.write(`cimesh: the node did not stop within ${stopTimeoutMs} ms; exiting\n`);
            process.exit(1);
          }, stopTimeoutMs);
          timer.unref();
          void (async () => {
            try {
              // Both at once: a request in flight (a submit) waits on the node, so the node stops first or alongside.
              await Promise.all([node.stop(), control.close()]);
              await lock.release();
              out("stopped");
              process.exit(0);
            } catch (error) {
              process.stderr.write(`cimesh: stopping failed: ${(error as Error).message}\n`);
              process.exit(1);
            }
          })();
        };
        process.on("SIGINT", () => stop("SIGINT"));
        process.on("SIGTERM", () => stop("SIGTERM"));
      },
    );
}

/** Refuses to start a second node on one data folder while the first still answers on its control port. */
async function refuseIfRunning(dataDir: string): Promise<void> {
  let running: ControlClient;
  try {
    running = connectControl(dataDir, { timeoutMs: runningCheckTimeoutMs });
  } catch {
    return; // no api.port: nothing runs here
  }
  const answers = await running.status().then(
    () => true,
    // An error answer (a stale token) still means a node is there; no answer means the files are stale.
    (error: unknown) => error instanceof ControlRequestError,
  );
  if (answers) throw new NodeAlreadyRunningError(dataDir, running.port);
}

/** Refuses a --listen or --bootstrap value that is no address of its kind: the flag, the value, what one looks like. */
function checkAddresses(flag: string, role: AddressRole, values: readonly string[]): void {
  for (const value of values) {
    const problem = addressProblem(role, value);
    if (problem !== null) throw new StartRefusedError(`${flag}: ${problem}`);
  }
}

/** What a starting worker says of its availability: the one it resumed with, and what holds now if a rule differs. */
function availabilityLine(chosen: Availability, inForce: Availability | null): string {
  const now = inForce !== null && inForce !== chosen ? `; ${inForce} now, by its rules or for want of a sandbox` : "";
  return `availability: ${chosen}, as config.yaml's worker.availability says (\`cimesh availability\` changes it and keeps it there${now})`;
}

/** A node named as people name it: the PeerId of its public key (hex), or the text itself when it is no key. */
function peerIdOfKey(hex: string): string {
  return /^[0-9a-f]{64}$/.test(hex) ? peerIdOf(hexToBytes(hex)).toString() : hex;
}

/** How the node is reached, in words: `cimesh status`'s reachable line (and the relay line of a relay). */
export function reachabilityLines(reach: NodeStatus["reachability"]): string[] {
  if (reach === undefined || reach === null)
    return ["reachable    on loopback only: no NAT services (AutoNAT, relays)"];
  const lines: string[] = [];
  if (reach.kind === "public")
    lines.push(`reachable    public: ${reach.confirmed.join(", ")} dialled back by peers (AutoNAT)`);
  else if (reach.kind === "relayed")
    lines.push(
      `reachable    behind NAT, through relay ${reach.relays.join(", ")} (${reach.relayAddresses.length} relay address(es))`,
    );
  else lines.push("reachable    not known yet: no address confirmed by AutoNAT and no relay reservation");
  if (reach.holePunched.length > 0)
    lines.push(`hole punched direct after a hole punch with ${reach.holePunched.join(", ")}`);
  if (reach.relayedPeers > 0) lines.push(`relayed      ${reach.relayedPeers} peer(s) reached only through a relay now`);
  const service = reach.relayService;
  if (service !== null)
    lines.push(
      `relay for    others: ${service.reservations} of ${service.limits.maxReservations} reservation(s); each relayed connection ${service.limits.dataBytes} bytes, ${service.limits.durationMs} ms`,
    );
  if (reach.upnp) lines.push("upnp         port mapping asked of the router");
  return lines;
}

function printStatus(status: NodeStatus): void {
  out(`peer id      ${status.peerId}`);
  out(`public key   ${status.publicKey}`);
  for (const address of status.addresses) out(`address      ${address}`);
  out(
    `roles        ${status.roles.worker ? "worker" : "no worker"}; master of ${status.roles.master.length === 0 ? "none" : status.roles.master.join(", ")}`,
  );
  if (status.roles.worker) {
    out(`availability ${status.availability ?? "-"}`);
    out(`running      ${status.running} of ${status.slots} slot(s)`);
    const nowMs = Date.now();
    for (const slot of status.busySlots)
      out(
        `slot         ${slot.jobId}${slot.name === "" ? "" : ` "${slot.name}"`} shard ${slot.shard}, attempt ${slot.attempt} (project ${slot.project}) since ${time(slot.sinceMs)} (${formatDuration(Math.max(0, Math.floor((nowMs - slot.sinceMs) / 1000) * 1000))} ago)`,
      );
    const offering = status.offering ?? { freeSlots: 0, masters: {} };
    const projects = Object.entries(offering.masters);
    if (projects.length === 0) out("offering     nothing: no project's masters known yet (no keyset)");
    for (const [project, masters] of projects)
      out(
        `offering     ${offering.freeSlots} slot(s) to ${project}'s ${masters.length} master(s): ${masters.map(peerIdOfKey).join(", ")}`,
      );
  }
  for (const [project, held] of Object.entries(status.offersHeld))
    out(`offers held  ${project}: ${held.freeSlots} slot(s) of ${held.workers} worker(s)`);
  out(`peers        ${status.peers}`);
  for (const line of reachabilityLines(status.reachability)) out(line);
  for (const entry of status.trusted)
    out(`trusts       ${entry.project}  share ${entry.share}  keyset ${entry.keysetVersion ?? "none yet"}`);
}

/** Adds `status`: what the running node says of itself. */
export function addStatusCommand(): void {
  program
    .command("status")
    .description("show the running node: peer id, addresses, roles, availability, peers, trusted projects")
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const status = await client().status();
      if (options.json === true) out(JSON.stringify(status, null, 2));
      else printStatus(status);
    });
}

/** How often `stop` looks whether the node's process has ended. */
export const stopPollMs = 100;

/** `stop` found no node to stop. */
export class NothingToStopError extends CimeshError {
  constructor(dataDir: string) {
    super(
      "ERR_NOTHING_TO_STOP",
      `no node is running in ${dataDir}: expected a live process named by ${join(dataDir, lockFileName)}, found none (a node started before node.lock existed stops with Ctrl-C where it runs)`,
    );
  }
}

/** Adds `stop`: stops the node running in the data folder as Ctrl-C would, and waits until it has. */
export function addStopCommand(): void {
  program
    .command("stop")
    .description("stop the node running in the data folder (a clean stop, as Ctrl-C) and wait until it has")
    .action(async () => {
      const dataDir = dataDirOf();
      const holder = await lockHolder(dataDir);
      if (holder === null) throw new NothingToStopError(dataDir);
      try {
        process.kill(holder.pid, "SIGTERM");
      } catch (error) {
        throw new CimeshError(
          "ERR_STOP_REFUSED",
          `cimesh pid ${holder.pid}: expected to be allowed to signal it, but ${(error as NodeJS.ErrnoException).code ?? String(error)}: stop it as the user that started it`,
        );
      }
      // The node exits by itself within stopTimeoutMs of the signal; a little more for the process to end.
      const deadlineMs = Date.now() + stopTimeoutMs + runningCheckTimeoutMs;
      while (processRuns(holder.pid)) {
        if (Date.now() > deadlineMs)
          throw new CimeshError(
            "ERR_STOP_TIMEOUT",
            `cimesh pid ${holder.pid}: expected it to stop within ${stopTimeoutMs + runningCheckTimeoutMs} ms of SIGTERM, it still runs; \`kill -9 ${holder.pid}\` ends it without a clean stop`,
          );
        await new Promise((resolve) => setTimeout(resolve, stopPollMs));
      }
      out(`stopped the node in ${dataDir} (cimesh pid ${holder.pid})`);
    });
}

/** Adds `availability <state>`: sets the running worker's availability. */
export function addAvailabilityCommand(): void {
  program
    .command("availability")
    .description(
      "set the worker's availability: eager (bid at once), reluctant (only when nobody eager did), paused (finish, take nothing new), offline (leave)",
    )
    .addArgument(new Argument("<state>", "the new availability").choices(["eager", "reluctant", "paused", "offline"]))
    .action(async (state: "eager" | "reluctant" | "paused" | "offline") => {
      const status = await client().setAvailability(state);
      out(`availability ${status.availability ?? state}`);
    });
}

/** Whether a desktop is there to open a browser on: a display and xdg-open on the PATH. */
function desktopOpener(): string | null {
  if ((process.env.DISPLAY ?? "") === "" && (process.env.WAYLAND_DISPLAY ?? "") === "") return null;
  for (const folder of (process.env.PATH ?? "").split(":")) {
    if (folder === "") continue;
    const candidate = join(folder, "xdg-open");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  return null;
}

/** Adds `dashboard`: a one-time login address for the node's web page, opened in a browser where a desktop is. */
export function addDashboardCommand(): void {
  program
    .command("dashboard")
    .description(
      "print (and, on a desktop, open) a one-time address that logs a browser in to this node's web page on 127.0.0.1",
    )
    .option("--no-open", "only print the address, even on a desktop")
    .action(async (options: { open: boolean }) => {
      const control = client();
      const { path } = await control.loginCode();
      const url = `http://127.0.0.1:${control.port}${path}`;
      out(url);
      out(
        `works once, within ${Math.round(loginCodeLifetimeMs / 60_000)} minutes; it logs the browser that opens it in to this node (the session lasts until the node restarts)`,
      );
      const opener = options.open ? desktopOpener() : null;
      if (opener !== null) {
        const child = spawn(opener, [url], { stdio: "ignore", detached: true });
        child.on("error", () => undefined);
        child.unref();
        out("opened in your browser");
      }
    });
}
