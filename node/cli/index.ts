#!/usr/bin/env node
/**
 * The `cimesh` command. Every command takes --data-dir (or CIMESH_HOME;
 * default ~/.cimesh); every failure prints what to do and exits 1.
 *
 * Commands that work on files (init, project, trust, spec publish, run) need no
 * running node; commands about jobs and availability talk to the node running
 * in the data folder through its control API (node/control). `start` loads
 * the libp2p runtime lazily, so the other commands start fast and work
 * wherever it cannot load. The sandbox and store rooms are loaded by the
 * commands that use them too: the store room brings LevelDB with it, which no
 * other command needs.
 */
import { randomBytes } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import cliProgress from "cli-progress";
import { Argument, Command, InvalidArgumentError } from "commander";
import { CimeshError, keysetDomain, openMultiEnvelope } from "../../crypto/index.ts";
import {
  type ControlClient,
  ControlRequestError,
  connectControl,
  type FetchStatus,
  type JobDetail,
  type JobSummary,
  type LogLine,
  type NodeApi,
  type NodeStatus,
  portFileName,
} from "../control/index.ts";
import {
  chooseProject,
  configPath,
  configTemplate,
  delegateAnnouncer,
  formatDuration,
  generateIdentity,
  initProject,
  listProjects,
  loadConfig,
  loadIdentity,
  loadProjectKeyset,
  maxJobFileBytes,
  maxSpecFileBytes,
  type NodeConfig,
  type ProjectKeysetChange,
  parseAnnouncerKey,
  parseDurationMs,
  parseJobFile,
  parseSpecFile,
  peerIdOf,
  publishSpec,
  renewKeyset,
  revokeAnnouncer,
  rotateRoots,
  saveConfig,
  saveIdentity,
  type TrustEntry,
  trustAddLine,
  trustEntrySchema,
  writeFileAtomic,
} from "../files/index.ts";
import type { RunningNode, StartOptions } from "../runtime.ts";

export const defaultDataDir = process.env.CIMESH_HOME ?? join(homedir(), ".cimesh");
export const keyFileName = "node.key";
/** How often `submit --wait` and `logs --follow` ask the node. */
export const pollIntervalMs = 500;
/** Packs and fetches show a progress bar once they have run this long. */
export const progressAfterMs = 1_000;
/** `submit --wait` and `logs --follow` stop this long after the job's deadline, whatever the node says. */
export const waitPastDeadlineMs = 60_000;
/** How long `start` gives the node to stop on SIGINT/SIGTERM before it exits anyway. */
export const stopTimeoutMs = 15_000;
/** How long `start` waits for an answer from a node that may already run in the folder. */
export const runningCheckTimeoutMs = 2_000;

/** A file the user named that cannot be read, or is too large to be what it should be. */
export class InputFileError extends CimeshError {
  constructor(path: string, expected: string) {
    super("ERR_INPUT_FILE", `${path}: expected ${expected}`);
  }
}

/** A command-line value that is out of range. */
export class CliOptionError extends CimeshError {
  constructor(option: string, expected: string, got: unknown) {
    super("ERR_CLI_OPTION", `${option}: expected ${expected}, got ${String(got)}`);
  }
}

/** The node key is missing: the node was never initialised. */
export class NoNodeKeyError extends CimeshError {
  constructor(keyPath: string, dataDir: string) {
    super("ERR_NO_KEY", `${keyPath} does not exist: run \`cimesh init --data-dir ${dataDir}\` first`);
  }
}

/** `start` in a folder where a node already answers. */
export class NodeAlreadyRunningError extends CimeshError {
  constructor(dataDir: string, port: number) {
    super(
      "ERR_NODE_RUNNING",
      `a node is already running in ${dataDir} (control API on port ${port}): expected none; stop it first (Ctrl-C or kill its process)`,
    );
  }
}

/** A fetch that could not be done, or a download of a job that has nothing to download. */
export class TransferError extends CimeshError {
  constructor(message: string) {
    super("ERR_TRANSFER", message);
  }
}

/** A job that is not on the node asked. */
export class NoSuchJobError extends CimeshError {
  constructor(jobId: string) {
    super("ERR_NO_SUCH_JOB", `job ${jobId}: no such job on this node; \`cimesh jobs\` lists them`);
  }
}

/** The mesh runtime (libp2p and the rest) cannot be loaded here. */
export class RuntimeUnavailableError extends CimeshError {
  constructor(detail: string) {
    super(
      "ERR_RUNTIME_UNAVAILABLE",
      `expected the mesh runtime (node/runtime.ts and libp2p) to load, but: ${detail}; run \`npm ci\` in the cimesh folder and try again`,
    );
  }
}

/** `start` was given an unsafe or contradictory combination. */
export class StartRefusedError extends CimeshError {
  constructor(message: string) {
    super("ERR_START", message);
  }
}

const program = new Command("cimesh")
  .description("A peer-to-peer mesh for volunteer continuous integration")
  .version("0.1.0")
  .option("--data-dir <dir>", "the node's data folder (or set CIMESH_HOME)", defaultDataDir)
  .showHelpAfterError("(run with --help for usage)")
  .addHelpText(
    "after",
    `
Volunteer:  cimesh init; cimesh trust add <project> --roots <hex> ...; cimesh start --worker
Project:    cimesh init; cimesh project init; cimesh start --master; cimesh submit job.yaml --wait
Anyone:     cimesh run job.yaml    (run a job here, in the sandbox a worker uses)`,
  );

function dataDirOf(): string {
  return program.opts<{ dataDir: string }>().dataDir;
}

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

function integer(name: string, min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min || value > max)
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max} for ${name}, got ${text}`);
    return value;
  };
}

function positive(name: string) {
  return (text: string): number => {
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0)
      throw new InvalidArgumentError(`expected a number above 0 for ${name}, got ${text}`);
    return value;
  };
}

function duration(name: string) {
  return (text: string): number => {
    const value = parseDurationMs(text);
    if (value === null)
      throw new InvalidArgumentError(`expected a duration such as 90d or 12h for ${name}, got ${text}`);
    return value;
  };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function readInputFile(path: string, limitBytes: number, what: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (error) {
    throw new InputFileError(
      path,
      `${what} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): check the path`,
    );
  }
  if (size > limitBytes) throw new InputFileError(path, `${what} of at most ${limitBytes} bytes, got ${size}`);
  return readFile(path, "utf8");
}

async function nodeIdentity(dataDir: string) {
  const keyPath = join(dataDir, keyFileName);
  if (!(await exists(keyPath))) throw new NoNodeKeyError(keyPath, dataDir);
  return loadIdentity(keyPath);
}

function shortKey(hex: string): string {
  return hex.length > 12 ? `${hex.slice(0, 12)}…` : hex;
}

function time(ms: number | null): string {
  return ms === null
    ? "-"
    : new Date(ms)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z");
}

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- identity

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

// ---------------------------------------------------------------- projects

const project = program.command("project").description("a project's root keys and keysets (who may announce its jobs)");

function printKeysetChange(change: ProjectKeysetChange, dataDir: string): void {
  const { keyset } = change;
  out(`project ${change.project}`);
  out(
    `keyset root version ${keyset.rootVersion}, version ${keyset.version}, ${keyset.threshold} of ${keyset.roots.length} root signatures, expires ${time(keyset.expiresAtMs)}`,
  );
  for (const announcer of keyset.announcers)
    out(`  announcer ${Buffer.from(announcer.key).toString("hex")}  ${announcer.label}`);
  out(`stored in ${join(dataDir, "projects", change.project)}`);
}

project
  .command("init")
  .description(
    "create a project: root keys, a first keyset naming this node as announcer; adds it to this node's trust and masters",
  )
  .option("--roots <n>", "root keys to create", integer("--roots", 1, 16), 1)
  .option("--threshold <n>", "root signatures each keyset needs", integer("--threshold", 1, 16), 1)
  .option("--expires-in <duration>", "how long the keyset lasts (renew with `project renew`)", duration("--expires-in"))
  .action(async (options: { roots: number; threshold: number; expiresIn?: number }) => {
    const dataDir = dataDirOf();
    if (options.threshold > options.roots)
      throw new CliOptionError("--threshold", `at most --roots (${options.roots})`, options.threshold);
    const identity = await nodeIdentity(dataDir);
    const change = await initProject(dataDir, identity, {
      roots: options.roots,
      threshold: options.threshold,
      lifetimeMs: options.expiresIn,
      nowMs: Date.now(),
    });
    printKeysetChange(change, dataDir);
    out(
      `root keys: ${join(dataDir, "projects", change.project)}/root-N.key (back them up; anyone holding them owns the project)`,
    );
    out(`added to ${configPath(dataDir)}: trust (share 1) and masters`);
    out("");
    out("Volunteers serve this project after running:");
    out(`  ${change.trustLine}`);
    out("");
    out("Then start this node as its master: cimesh start --master");
  });

project
  .command("list")
  .description("list the projects whose keys this node holds")
  .action(async () => {
    const dataDir = dataDirOf();
    const projects = await listProjects(dataDir);
    if (projects.length === 0) out("no projects: create one with `cimesh project init`");
    for (const id of projects) {
      const bytes = await loadProjectKeyset(dataDir, id);
      if (bytes === null) continue;
      const { body } = openMultiEnvelope(keysetDomain, bytes);
      out(
        `${id}  root version ${body.rootVersion}, version ${body.version}, ${body.announcers.length} announcer(s), expires ${time(body.expiresAtMs)}`,
      );
    }
  });

const restartHint = "a running master publishes the keyset it loaded at start: restart it to publish this one";

project
  .command("delegate")
  .description("new keyset (version + 1) that adds an announcer: another master node of the project")
  .argument("<key>", "the announcer's public key (64 hex) or PeerId (what `cimesh id` prints on that node)")
  .option("--project <id>", "the project (needed when this node holds several)")
  .option("--label <text>", "a name for the announcer, shown in the keyset")
  .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
  .action(async (key: string, options: { project?: string; label?: string; expiresIn?: number }) => {
    const dataDir = dataDirOf();
    const id = await chooseProject(dataDir, options.project);
    const change = await delegateAnnouncer(dataDir, id, parseAnnouncerKey(key), {
      nowMs: Date.now(),
      lifetimeMs: options.expiresIn,
      label: options.label,
    });
    printKeysetChange(change, dataDir);
    out(restartHint);
  });

project
  .command("revoke")
  .description("new keyset (version + 1) without an announcer: what it signs from then on is refused")
  .argument("<key>", "the announcer's public key (64 hex) or PeerId")
  .option("--project <id>", "the project (needed when this node holds several)")
  .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
  .action(async (key: string, options: { project?: string; expiresIn?: number }) => {
    const dataDir = dataDirOf();
    const id = await chooseProject(dataDir, options.project);
    const change = await revokeAnnouncer(dataDir, id, parseAnnouncerKey(key), {
      nowMs: Date.now(),
      lifetimeMs: options.expiresIn,
    });
    printKeysetChange(change, dataDir);
    out(restartHint);
  });

project
  .command("rotate")
  .description("new root keys: a keyset of the next root version, signed by the old roots and the new ones")
  .option("--project <id>", "the project (needed when this node holds several)")
  .option("--roots <n>", "new root keys to create (default: as many as now)", integer("--roots", 1, 16))
  .option(
    "--threshold <n>",
    "root signatures each keyset needs from now on (default: as now)",
    integer("--threshold", 1, 16),
  )
  .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
  .action(async (options: { project?: string; roots?: number; threshold?: number; expiresIn?: number }) => {
    const dataDir = dataDirOf();
    const id = await chooseProject(dataDir, options.project);
    const change = await rotateRoots(dataDir, id, {
      nowMs: Date.now(),
      lifetimeMs: options.expiresIn,
      roots: options.roots,
      threshold: options.threshold,
    });
    printKeysetChange(change, dataDir);
    out(`the old root keys are in ${join(dataDir, "projects", id, "retired")}: store them offline or delete them`);
    out("volunteers follow the rotation through the keyset; new volunteers still pin the project's first roots:");
    out(`  ${change.trustLine}`);
    out(restartHint);
  });

project
  .command("renew")
  .description("new keyset (version + 1) with the same announcers and a new expiry: run it before the keyset expires")
  .option("--project <id>", "the project (needed when this node holds several)")
  .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
  .action(async (options: { project?: string; expiresIn?: number }) => {
    const dataDir = dataDirOf();
    const id = await chooseProject(dataDir, options.project);
    const change = await renewKeyset(dataDir, id, { nowMs: Date.now(), lifetimeMs: options.expiresIn });
    printKeysetChange(change, dataDir);
    out(restartHint);
  });

// ---------------------------------------------------------------- trust

const trust = program
  .command("trust")
  .description("the projects this node trusts (their jobs are the only ones it runs) and their shares");

const trustRestartHint = "restart the node (cimesh start) for it to take effect";

trust
  .command("add")
  .description("trust a project: pin its root keys; run the line the project published")
  .argument("<project>", "the project id")
  .requiredOption("--roots <hex,...>", "the project's root public keys, comma-separated")
  .option("--threshold <n>", "root signatures the project's keysets need", integer("--threshold", 1, 16), 1)
  .option("--share <n>", "this project's share of the worker, relative to the others", positive("--share"), 1)
  .action(async (id: string, options: { roots: string; threshold: number; share: number }) => {
    const dataDir = dataDirOf();
    const config = await loadConfig(dataDir);
    const parsed = trustEntrySchema.safeParse({
      project: id,
      roots: options.roots
        .split(",")
        .map((root) => root.trim())
        .filter((root) => root !== ""),
      threshold: options.threshold,
      share: options.share,
    });
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = String(issue?.path[0] ?? "project");
      throw new CliOptionError(
        field === "project" ? "<project>" : `--${field}`,
        (issue?.message ?? "a valid value").replace(/^expected /, ""),
        field === "roots" ? options.roots : field === "project" ? id : (options as Record<string, unknown>)[field],
      );
    }
    const entry: TrustEntry = parsed.data;
    const existing = config.trust.find((item) => item.project === entry.project);
    if (
      existing !== undefined &&
      (existing.threshold !== entry.threshold || existing.roots.join() !== entry.roots.join())
    ) {
      throw new CimeshError(
        "ERR_TRUST_CONFLICT",
        `project ${entry.project}: expected the roots already pinned for it; to pin others, run \`cimesh trust remove ${entry.project}\` first`,
      );
    }
    const next: NodeConfig = {
      ...config,
      trust:
        existing === undefined
          ? [...config.trust, entry]
          : config.trust.map((item) => (item.project === entry.project ? entry : item)),
    };
    await saveConfig(dataDir, next);
    out(
      `${existing === undefined ? "trusting" : "updated"} project ${entry.project}: ${entry.roots.length} root(s), threshold ${entry.threshold}, share ${entry.share}`,
    );
    out(trustRestartHint);
  });

trust
  .command("list")
  .description("list the trusted projects")
  .option("--json", "print JSON")
  .action(async (options: { json?: boolean }) => {
    const config = await loadConfig(dataDirOf());
    if (options.json === true) {
      out(JSON.stringify(config.trust, null, 2));
      return;
    }
    if (config.trust.length === 0) out("no trusted projects: add one with `cimesh trust add`");
    for (const entry of config.trust) {
      const master = config.masters.includes(entry.project) ? "  (master)" : "";
      out(
        `${entry.project}  share ${entry.share}  threshold ${entry.threshold} of ${entry.roots.length} roots${master}`,
      );
      out(`  ${trustAddLine(entry.project, entry.roots, entry.threshold)}`);
    }
  });

trust
  .command("remove")
  .description("stop trusting a project (and stop announcing for it, if this node did)")
  .argument("<project>", "the project id")
  .action(async (id: string) => {
    const dataDir = dataDirOf();
    const config = await loadConfig(dataDir);
    if (!config.trust.some((entry) => entry.project === id)) {
      throw new CimeshError(
        "ERR_NOT_TRUSTED",
        `project ${id}: expected a trusted project (${config.trust.map((entry) => entry.project).join(", ") || "none"}); \`cimesh trust list\` lists them`,
      );
    }
    const wasMaster = config.masters.includes(id);
    await saveConfig(dataDir, {
      ...config,
      trust: config.trust.filter((entry) => entry.project !== id),
      masters: config.masters.filter((item) => item !== id),
    });
    out(`no longer trusting project ${id}${wasMaster ? " (removed from masters too)" : ""}`);
    out(trustRestartHint);
  });

// ---------------------------------------------------------------- specs

const spec = program.command("spec").description("capability specs: what a worker must have to run a project's jobs");

spec
  .command("publish")
  .description("validate a capability spec file, sign it with the node key and store it for the node to publish")
  .argument("<spec.yaml>", "the capability spec file")
  .action(async (path: string) => {
    const dataDir = dataDirOf();
    const identity = await nodeIdentity(dataDir);
    const nowMs = Date.now();
    const body = parseSpecFile(await readInputFile(path, maxSpecFileBytes, "a capability spec file"), path, nowMs);
    const stored = await publishSpec(dataDir, body, identity, nowMs);
    out(`spec ${body.uuid} "${body.name}" version ${body.version}, expires ${time(body.expiresAtMs)}`);
    out(`signed and stored in ${stored}`);
    out("the node publishes the specs in that folder when it starts: restart it if it runs");
  });

// ---------------------------------------------------------------- start

program
  .command("start")
  .description("start this node: join the mesh, serve the control API on 127.0.0.1; Ctrl-C stops it")
  .option("--worker", "run jobs of trusted projects")
  .option("--master", "announce jobs for the projects in the config's masters")
  .option("--listen <addr>", "libp2p address to listen on, repeatable (replaces the config's)", collect)
  .option("--bootstrap <addr>", "peer to meet first, repeatable (added to the config's)", collect)
  .option("--allow-unsandboxed", "run jobs without a sandbox where bubblewrap is missing (jobs get your user's access)")
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
      await nodeIdentity(dataDir);
      const config = await loadConfig(dataDir);
      await refuseIfRunning(dataDir);
      if (options.master === true && config.masters.length === 0) {
        throw new StartRefusedError(
          `--master: expected projects under masters in ${configPath(dataDir)}, found none: run \`cimesh project init\` first`,
        );
      }
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
        process.stderr.write("cimesh: WARNING: --fault-inject-corrupt-results: this worker lies about every result\n");
      if (startOptions.allowUnsandboxed)
        process.stderr.write(
          "cimesh: WARNING: --allow-unsandboxed: jobs may run with your user's access to this machine\n",
        );
      let startNode: (options: StartOptions) => Promise<RunningNode>;
      try {
        ({ startNode } = await import("../runtime.ts"));
      } catch (error) {
        throw new RuntimeUnavailableError((error as Error).message);
      }
      const { startControlServer } = await import("../control/index.ts");
      const node: RunningNode = await startNode(startOptions);
      let control: Awaited<ReturnType<typeof startControlServer>>;
      try {
        control = await startControlServer(node, dataDir, config.apiPort);
      } catch (error) {
        await node.stop();
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
      out("running; Ctrl-C stops it");

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
            await control.close();
            await node.stop();
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

// ---------------------------------------------------------------- jobs

function client() {
  return connectControl(dataDirOf());
}

function summaryLine(job: JobSummary): string {
  const runs = `${job.runsAwarded} run(s), ${job.runsLive} live`;
  return `${job.jobId}  ${job.status.padEnd(9)}  ${job.name}  (${runs}; submitted ${time(job.submittedAtMs)})${job.reason === "" ? "" : `  ${job.reason}`}`;
}

function attemptKey(attempt: JobDetail["attempts"][number]): string {
  const outcome = attempt.outcome === null ? "" : `, ${attempt.outcome}`;
  const exit = attempt.exitCode === null ? "" : `, exit ${attempt.exitCode}`;
  return `${attempt.state}${outcome}${exit}`;
}

function attemptLine(attempt: JobDetail["attempts"][number]): string {
  return `attempt ${attempt.attempt} (shard ${attempt.shard}) on worker ${shortKey(attempt.worker)}: ${attemptKey(attempt)}${
    attempt.summary === "" ? "" : ` (${attempt.summary.split("\n")[0]})`
  }`;
}

async function jobOrThrow(api: NodeApi, jobId: string): Promise<JobDetail> {
  const job = await api.job(jobId);
  if (job === null) throw new NoSuchJobError(jobId);
  return job;
}

/**
 * Prints log chunks not printed yet, in offset order per attempt and stream,
 * with a header when the source changes. While a job runs (`final` false) a
 * stream is printed only up to its first gap, so a chunk that arrives late
 * still prints in its place.
 */
function logPrinter() {
  const printed = new Map<string, number>();
  let lastSource = "";
  let atLineStart = true;
  const write = (text: string) => {
    if (text === "") return;
    process.stdout.write(text);
    atLineStart = text.endsWith("\n");
  };
  return (lines: readonly LogLine[], final: boolean) => {
    const sorted = [...lines].sort(
      (a, b) => a.attempt - b.attempt || a.stream.localeCompare(b.stream) || a.offset - b.offset,
    );
    const gapped = new Set<string>();
    for (const line of sorted) {
      const source = `${line.attempt}/${line.stream}`;
      const next = printed.get(source) ?? 0;
      const bytes = Buffer.from(line.text, "utf8");
      const end = line.offset + bytes.length;
      if (end <= next || gapped.has(source)) continue;
      if (line.offset > next && !final) {
        gapped.add(source);
        continue;
      }
      if (source !== lastSource) {
        if (!atLineStart) write("\n");
        write(`==> attempt ${line.attempt}, ${line.stream} <==\n`);
        lastSource = source;
      }
      write(line.offset >= next ? line.text : bytes.subarray(next - line.offset).toString("utf8"));
      printed.set(source, end);
    }
    if (final && !atLineStart) write("\n");
  };
}

program
  .command("submit")
  .description("submit a job file to the running master node")
  .argument("<job.yaml>", "the job file (see the README: Config file and job file)")
  .option("--wait", "print state changes as they happen, then the logs; exit 0 only if the job passed")
  .option("--json", "print the job summary as JSON")
  .action(async (path: string, options: { wait?: boolean; json?: boolean }) => {
    const text = await readInputFile(path, maxJobFileBytes, "a job file");
    const parsed = parseJobFile(text, path, Date.now()); // a bad file fails here, before any node is asked
    const api = client();
    let spec = parsed.spec;
    if (parsed.inputsFolder !== null) {
      // The master serves the inputs from its blob store, which this command shares (blobs are files named by CID).
      const folder = resolve(dirname(path), parsed.inputsFolder);
      const { openBlobStore, packTree } = await import("../store/index.ts");
      const store = await openBlobStore(join(dataDirOf(), "blobs"));
      const progress = progressBar(`packing ${parsed.inputsFolder}`);
      const packed = await packTree(folder, store, { onProgress: progress.update }).finally(progress.stop);
      out(`packed ${packed.files} file(s), ${packed.bytes} bytes of ${folder}: ${packed.root}`);
      spec = { ...spec, inputsDigest: packed.root };
    }
    const summary = await api.submit(parsed.project, parsed.jobId ?? "", spec);
    if (options.json === true) out(JSON.stringify(summary));
    else out(`submitted ${summary.jobId} (project ${summary.project}): ${summary.status}`);
    if (options.wait !== true) return;
    const passed = await waitForJob(api, summary.jobId, parsed.spec.deadlineMs + waitPastDeadlineMs);
    process.exitCode = passed ? 0 : 1;
  });

/** Shows a progress bar on stderr once a long task has run for a second; `update` and `stop` are safe to call early. */
function progressBar(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  const startedMs = Date.now();
  let bar: cliProgress.SingleBar | null = null;
  return {
    update(done, total) {
      if (bar === null) {
        if (Date.now() - startedMs < progressAfterMs || !process.stderr.isTTY) return;
        bar = new cliProgress.SingleBar(
          { format: `${label} [{bar}] {percentage}% {value}/{total} bytes`, stream: process.stderr },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, done);
      }
      bar.setTotal(total);
      bar.update(done);
    },
    stop() {
      bar?.stop();
    },
  };
}

async function fetchInto(api: NodeApi, cid: string, folder: string, providers: readonly string[]): Promise<void> {
  let status: FetchStatus | null = await api.startFetch(cid, folder, providers);
  const progress = progressBar(`fetching ${cid.slice(0, 12)}…`);
  try {
    while (status !== null && status.state === "fetching") {
      await sleep(pollIntervalMs);
      status = await api.fetchStatus(status.id);
      if (status !== null) progress.update(status.doneBytes, status.totalBytes);
    }
  } finally {
    progress.stop();
  }
  if (status === null)
    throw new TransferError(`fetch of ${cid}: the node forgot it (did it restart?); run the command again`);
  if (status.state === "failed") throw new TransferError(`fetch of ${cid} failed: ${status.error}`);
  out(
    `fetched ${cid} into ${folder}: ${status.files} file(s), ${status.totalBytes} bytes (${status.fetchedBytes} over the network)`,
  );
}

async function waitForJob(api: NodeApi, jobId: string, giveUpAtMs: number): Promise<boolean> {
  let shown = "";
  const attempts = new Map<number, string>();
  let job = await jobOrThrow(api, jobId);
  for (;;) {
    const line = `${job.jobId}: ${job.status}${job.reason === "" ? "" : ` (${job.reason})`}`;
    if (line !== shown) {
      out(`[${clock()}] ${line}`);
      shown = line;
    }
    for (const attempt of job.attempts) {
      const key = attemptKey(attempt);
      if (attempts.get(attempt.attempt) !== key) {
        out(`[${clock()}] ${attemptLine(attempt)}`);
        attempts.set(attempt.attempt, key);
      }
    }
    if (job.status !== "open") break;
    if (Date.now() > giveUpAtMs) {
      out(`[${clock()}] gave up waiting: the job's deadline has passed and it is still open`);
      return false;
    }
    await sleep(pollIntervalMs);
    job = await jobOrThrow(api, jobId);
  }
  out("");
  logPrinter()(await api.logs(jobId), true);
  out("");
  out(`${job.jobId}: ${job.status}${job.reason === "" ? "" : ` (${job.reason})`}`);
  return job.status === "passed";
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
  }
  out(`peers        ${status.peers}`);
  for (const entry of status.trusted)
    out(`trusts       ${entry.project}  share ${entry.share}  keyset ${entry.keysetVersion ?? "none yet"}`);
}

program
  .command("status")
  .description("show the running node: peer id, addresses, roles, availability, peers, trusted projects")
  .option("--json", "print JSON")
  .action(async (options: { json?: boolean }) => {
    const status = await client().status();
    if (options.json === true) out(JSON.stringify(status, null, 2));
    else printStatus(status);
  });

program
  .command("jobs")
  .description("list the jobs of the running master node")
  .option("--json", "print JSON")
  .action(async (options: { json?: boolean }) => {
    const jobs = await client().jobs();
    if (options.json === true) {
      out(JSON.stringify(jobs, null, 2));
      return;
    }
    if (jobs.length === 0) out("no jobs: submit one with `cimesh submit job.yaml`");
    for (const job of [...jobs].sort((a, b) => a.submittedAtMs - b.submittedAtMs)) out(summaryLine(job));
  });

program
  .command("logs")
  .description("print a job's logs, per attempt and stream")
  .argument("<job>", "the job id")
  .option("--follow", "keep printing new log text until the job ends")
  .action(async (jobId: string, options: { follow?: boolean }) => {
    const api = client();
    const job = await jobOrThrow(api, jobId);
    const print = logPrinter();
    const follow = options.follow === true && job.status === "open";
    print(await api.logs(jobId), !follow);
    if (!follow) return;
    const giveUpAtMs = job.spec.deadlineMs + waitPastDeadlineMs;
    let current = job;
    while (current.status === "open" && Date.now() <= giveUpAtMs) {
      await sleep(pollIntervalMs);
      current = await jobOrThrow(api, jobId);
      print(await api.logs(jobId), current.status !== "open");
    }
    if (current.status === "open") print(await api.logs(jobId), true);
    out(`==> ${jobId}: ${current.status}${current.reason === "" ? "" : ` (${current.reason})`} <==`);
  });

program
  .command("result")
  .description("show a job's outcome: status, the accepted result digest per shard, every attempt")
  .argument("<job>", "the job id")
  .option("--json", "print JSON")
  .option("--download <folder>", "fetch the accepted outputs into this folder (absent or empty)")
  .action(async (jobId: string, options: { json?: boolean; download?: string }) => {
    const api = client();
    const job = await jobOrThrow(api, jobId);
    if (options.download !== undefined) {
      const decided = job.attempts.find(
        (attempt) => attempt.resultDigest !== null && attempt.resultDigest === job.acceptedDigests[attempt.shard],
      );
      if (decided === undefined || decided.outputsDigest === null)
        throw new TransferError(
          `job ${jobId}: expected an accepted result with outputs to download, but it has none yet`,
        );
      const holders = job.attempts
        .filter((attempt) => attempt.resultDigest === decided.resultDigest)
        .map((attempt) => attempt.worker);
      await fetchInto(api, decided.outputsDigest, resolve(options.download), holders);
      return;
    }
    if (options.json === true) {
      out(JSON.stringify(job, null, 2));
      return;
    }
    out(`job        ${job.jobId} "${job.name}" (project ${job.project})`);
    out(`status     ${job.status}${job.reason === "" ? "" : ` (${job.reason})`}`);
    out(`submitted  ${time(job.submittedAtMs)}; ended ${time(job.endedAtMs)}`);
    job.acceptedDigests.forEach((digest, shard) => {
      out(`shard ${shard}    ${digest ?? "no agreed result"}`);
    });
    for (const attempt of job.attempts) {
      out(`  ${attemptLine(attempt)}`);
      if (attempt.outputsDigest !== null) out(`    outputs ${attempt.outputsDigest}`);
      if (attempt.logDigest !== null) out(`    log     ${attempt.logDigest}`);
    }
  });

program
  .command("fetch")
  .description("fetch a tree (a job's inputs or outputs) by its CID from the mesh into a folder, verifying every blob")
  .argument("<cid>", "the tree's root CID")
  .argument("<folder>", "where to put it: absent, or an empty folder")
  .option("--from <peer...>", "peers to ask first (PeerId or public key); the DHT's providers are asked too")
  .action(async (cid: string, folder: string, options: { from?: string[] }) => {
    await fetchInto(client(), cid, resolve(folder), options.from ?? []);
  });

program
  .command("explain")
  .description("say why a job waits (or how it ended)")
  .argument("<job>", "the job id")
  .action(async (jobId: string) => {
    out(await client().explain(jobId));
  });

program
  .command("cancel")
  .description("cancel a job: its runs are stopped and it takes no new bids")
  .argument("<job>", "the job id")
  .option("--reason <text>", "why, shown to the workers and in the job")
  .action(async (jobId: string, options: { reason?: string }) => {
    const summary = await client().cancel(jobId, options.reason ?? "cancelled by the operator");
    out(summaryLine(summary));
  });

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

// ---------------------------------------------------------------- run

program
  .command("run")
  .description("run a job here, in the same sandbox a worker uses, to reproduce what the mesh did")
  .argument("<job.yaml>", "the job file")
  .option("--shard <n>", "which shard to run (CIMESH_SHARD_INDEX)", integer("--shard", 0, 255), 0)
  .option("--allow-network", "let the job have the network if it asks for it")
  .option("--allow-unsandboxed", "run bare where bubblewrap is missing (the job gets your user's access)")
  .action(async (path: string, options: { shard: number; allowNetwork?: boolean; allowUnsandboxed?: boolean }) => {
    const text = await readInputFile(path, maxJobFileBytes, "a job file");
    const parsed = parseJobFile(text, path, Date.now());
    if (options.shard >= parsed.spec.shards)
      throw new CliOptionError("--shard", `below the job's shards (${parsed.spec.shards})`, options.shard);
    const { createExecutor } = await import("../sandbox/index.ts");
    const { openBlobStore, packTree, unpackTree } = await import("../store/index.ts");
    const workRoot = await mkdtemp(join(tmpdir(), "cimesh-run-"));
    // The node's blob store: it holds what `inputs:` packs here, and on a worker the trees the mesh sent it.
    const store = await openBlobStore(join(dataDirOf(), "blobs"));
    let inputsRoot = parsed.spec.inputsDigest;
    if (parsed.inputsFolder !== null)
      inputsRoot = (await packTree(resolve(dirname(path), parsed.inputsFolder), store)).root;
    const executor = createExecutor({
      workRoot,
      allowUnsandboxed: options.allowUnsandboxed === true,
      allowNetwork: options.allowNetwork === true,
      blobStore: store,
    });
    const runId = `local-${randomBytes(6).toString("hex")}`;
    const jobId = parsed.jobId ?? "local";
    const onSignal = () => executor.kill(runId, "interrupted");
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    try {
      const report = await executor.run(
        {
          runId,
          project: parsed.project,
          jobId,
          attempt: 0,
          shard: options.shard,
          job: parsed.spec,
          // What a worker sets (jobs/worker.ts), so the job cannot tell the difference.
          env: {
            CIMESH_PROJECT: parsed.project,
            CIMESH_JOB_ID: jobId,
            CIMESH_ATTEMPT: "0",
            CIMESH_SHARD_INDEX: String(options.shard),
            CIMESH_TOTAL_SHARDS: String(parsed.spec.shards),
          },
        },
        {
          prepare:
            inputsRoot === null
              ? undefined
              : async (folder) => {
                  await unpackTree(inputsRoot as string, store, folder).catch((error: unknown) => {
                    throw new TransferError(
                      `inputs ${inputsRoot}: ${String(error)}; \`cimesh fetch ${inputsRoot} <folder>\` brings a tree from the mesh`,
                    );
                  });
                },
          onLog: (chunk) => {
            (chunk.stream === "stdout" ? process.stdout : process.stderr).write(chunk.data);
          },
        },
      );
      process.stderr.write(
        `cimesh run: ${report.outcome}${report.exitCode === null ? "" : `, exit ${report.exitCode}`} after ${formatDuration(report.durationMs)}\n` +
          `  outputs ${report.outputsDigest ?? "-"}\n  log     ${report.logDigest ?? "-"}\n` +
          (report.summary === "" ? "" : `  ${report.summary}\n`),
      );
      process.exitCode = report.outcome === "succeeded" ? 0 : 1;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await rm(workRoot, { recursive: true, force: true });
    }
  });

// ---------------------------------------------------------------- sim

program
  .command("sim")
  .description("simulate a mesh of thousands of nodes from a scenario file; writes metrics.json and report.html")
  .argument("<scenario.yaml>", "the scenario file (examples in sim/scenarios/)")
  .option("--seed <n>", "the seed (default: the scenario's)", integer("--seed", 0, 2 ** 31 - 1))
  .option("--out <dir>", "where to write metrics.json and report.html (default sim-out/<name>-seed<N>)")
  .action(async (path: string, options: { seed?: number; out?: string }) => {
    const { runSimCommand } = await import("../../sim/index.ts");
    process.exitCode = await runSimCommand(path, options);
  });

function describeFailure(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.stderr.write(`cimesh: ${describeFailure(error)}\n`);
  if (!(error instanceof CimeshError) && process.env.CIMESH_DEBUG === "1" && error instanceof Error)
    process.stderr.write(`${error.stack}\n`);
  process.exitCode = 1;
}
