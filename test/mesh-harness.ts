/**
 * Real cimesh processes over TCP on 127.0.0.1 for the mesh tests: each node
 * is `node node/cli/index.ts start ...` in its own process with its own data
 * folder, driven by the CLI and the control API as a person would. Every
 * wait is bounded; `stopAll` ends every process the harness started.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument } from "yaml";
import { type ControlClient, connectControl } from "../node/index.ts";

export const cliPath = fileURLToPath(new URL("../node/cli/index.ts", import.meta.url));
/** Bound on any one wait of the harness. */
export const waitLimitMs = 60_000;
/** Bound on one CLI command. */
export const cliTimeoutMs = 60_000;
/** Bound on a node process's start, up to its "listening on" line. */
export const nodeStartTimeoutMs = 30_000;

/** Timings short enough for tests (the config's defaults are for real meshes). */
export const testTiming = {
  leaseMs: 4_000,
  bidWindowMs: 300,
  reannounceIntervalMs: 1_500,
  renewIntervalMs: 1_000,
  keysetRepublishMs: 1_000,
};

/**
 * What masters believe in the mesh tests: every node is on 127.0.0.1 (one network prefix), and most tests are about
 * the protocol's mechanics with volunteers that no project names as runners, so a count of agreeing results decides.
 * The Sybil rules' own tests (test/attacks.test.ts) pass `{ weight: 1 }`, the default of a real node.
 */
export const testQuorum = { weight: 0, distinctPrefixes: false };

const testEnv = { ...process.env, CIMESH_TEST_MESH: "1" };

export async function until<T>(
  what: string,
  check: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  limitMs = waitLimitMs,
): Promise<T> {
  const deadline = Date.now() + limitMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`expected ${what} within ${limitMs} ms${lastError === null ? "" : ` (last error: ${lastError})`}`);
}

export function cli(
  dataDir: string,
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cliPath, ...args, "--data-dir", dataDir],
      { env: testEnv, timeout: cliTimeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export async function cliOk(dataDir: string, args: readonly string[]): Promise<string> {
  const out = await cli(dataDir, args);
  if (out.code !== 0) throw new Error(`cimesh ${args.join(" ")} exited ${out.code}: ${out.stderr}${out.stdout}`);
  return out.stdout;
}

/** A config field's path and its value. */
export type Setting = readonly [path: readonly string[], value: unknown];

export interface NodeEvent {
  readonly event: string;
  readonly [field: string]: unknown;
}

export interface NodeProcess {
  readonly name: string;
  readonly dataDir: string;
  readonly address: string;
  readonly peerId: string;
  readonly events: NodeEvent[];
  readonly control: ControlClient;
  readonly process: ChildProcess;
  /** SIGKILL: no goodbye, as a machine that loses power. */
  kill(): Promise<void>;
  /** SIGTERM, waiting for the node's own clean stop. */
  stop(): Promise<void>;
}

export class Mesh {
  readonly root: string;
  readonly nodes: NodeProcess[] = [];
  /** The peer id `cimesh init` printed, by data folder: a node's bootstrap address is known before it starts. */
  readonly peerIds = new Map<string, string>();
  private constructor(root: string) {
    this.root = root;
  }

  static async create(): Promise<Mesh> {
    return new Mesh(await mkdtemp(join(tmpdir(), "cimesh-mesh-")));
  }

  /** `cimesh init` a data folder and set it for loopback tests. */
  async initNode(
    name: string,
    timing: Partial<typeof testTiming> = {},
    quorum: Partial<typeof testQuorum> = {},
  ): Promise<string> {
    const dataDir = join(this.root, name);
    const out = await cliOk(dataDir, ["init"]);
    const peerId = /peer id (\S+)/.exec(out)?.[1];
    if (peerId === undefined) throw new Error(`cimesh init printed no peer id: ${out}`);
    this.peerIds.set(dataDir, peerId);
    await this.configure(dataDir, [
      [["listen"], ["/ip4/127.0.0.1/tcp/0"]],
      [["mdns"], false],
      ...Object.entries({ ...testTiming, ...timing }).map(([key, value]): Setting => [["timing", key], value]),
      ...Object.entries({ ...testQuorum, ...quorum }).map(([key, value]): Setting => [["quorum", key], value]),
    ]);
    return dataDir;
  }

  /** Sets fields of a node's config.yaml (before it starts), each by its path: `[["worker", "slots"], 2]`. */
  async configure(dataDir: string, settings: readonly Setting[]): Promise<void> {
    const path = join(dataDir, "config.yaml");
    const document = parseDocument(await readFile(path, "utf8"));
    for (const [at, value] of settings) document.setIn(at, value);
    await writeFile(path, document.toString());
  }

  /** A project node: its keys, keyset and config (`args` go to `project init`); returns the `trust add` arguments volunteers need. */
  async initProject(dataDir: string, args: readonly string[] = []): Promise<{ project: string; trustArgs: string[] }> {
    const out = await cliOk(dataDir, ["project", "init", ...args]);
    const match = /trust add (\S+) --roots (\S+) --threshold (\d+)/.exec(out);
    if (match === null) throw new Error(`project init printed no trust command: ${out}`);
    const [, project, roots, threshold] = match as unknown as [string, string, string, string];
    return { project, trustArgs: ["trust", "add", project, "--roots", roots, "--threshold", threshold] };
  }

  /**
   * Starts `cimesh start`; `env` adds to (or, with undefined, removes from) the test environment; `netns` runs it in
   * that network namespace (`ip netns exec`, as root), where its control API is out of this process's reach.
   */
  async start(
    name: string,
    dataDir: string,
    flags: readonly string[],
    options: { readonly env?: Readonly<Record<string, string | undefined>>; readonly netns?: string } = {},
  ): Promise<NodeProcess> {
    const env: Record<string, string | undefined> = { ...testEnv, ...options.env };
    for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key];
    const argv = [process.execPath, cliPath, "start", ...flags, "--data-dir", dataDir];
    if (options.netns !== undefined) argv.unshift("ip", "netns", "exec", options.netns);
    const child = spawn(argv[0] as string, argv.slice(1), {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const events: NodeEvent[] = [];
    let stdout = "";
    let stderrTail = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => {
      stdout += text;
    });
    let partial = "";
    child.stderr.setEncoding("utf8").on("data", (text: string) => {
      partial += text;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        stderrTail = `${stderrTail}${line}\n`.slice(-4000);
        try {
          events.push(JSON.parse(line) as NodeEvent);
        } catch {
          // not an event line (a warning of Node's, say)
        }
      }
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const address = await Promise.race([
      until("the node to listen", () => /listening on (\S+)/.exec(stdout)?.[1], nodeStartTimeoutMs),
      exited.then(() => {
        throw new Error(`node ${name} exited before it listened: ${stderrTail}${stdout}`);
      }),
    ]).catch((error: unknown) => {
      // Not yet among the nodes stopAll stops: a node that never listened is killed here.
      child.kill("SIGKILL");
      throw error;
    });
    const peerId = address.slice(address.lastIndexOf("/") + 1);
    const node: NodeProcess = {
      name,
      dataDir,
      address,
      peerId,
      events,
      control: connectControl(dataDir),
      process: child,
      async kill() {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await exited;
      },
      async stop() {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      },
    };
    this.nodes.push(node);
    return node;
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()));
    await rm(this.root, { recursive: true, force: true });
  }
}

/** A job file for `cimesh submit`. */
export async function writeJob(
  mesh: Mesh,
  name: string,
  project: string,
  fields: Record<string, unknown>,
): Promise<string> {
  const path = join(mesh.root, `${name}.json.yaml`);
  await writeFile(path, JSON.stringify({ project, name, ...fields }, null, 2));
  return path;
}
