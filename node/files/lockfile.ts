/**
 * `<dataDir>/node.lock`: which process runs the node of a data folder. A
 * node writes it before it opens its store (its pid and command line) and
 * again once its control API listens (the port), and removes it when it
 * stops. A start that finds the store held reads it to name the holder: "the
 * store at X is held by cimesh pid N (control API on port P)", where LevelDB
 * alone says only "Database failed to open". A lock left by a process that
 * is gone (killed, crashed) is stale and ignored.
 */
import { readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import * as z from "zod";
import { CimeshError } from "../../crypto/index.ts";
import { writeFileAtomic } from "./config.ts";

export const lockFileName = "node.lock";
export const lockFileMode = 0o644;
/** A lock file is a few hundred bytes; anything larger is not one. */
export const maxLockFileBytes = 64 * 1024;
/** Arguments kept in the lock to tell the holder from a process that reused its pid. */
export const maxLockArgs = 64;

/** What the lock file says of the process that holds the data folder. */
export interface NodeLock {
  readonly pid: number;
  /** Its control API's port on 127.0.0.1, once it listens; null while the node starts. */
  readonly apiPort: number | null;
  readonly startedAtMs: number;
  /** Its command-line arguments after the script (process.argv.slice(2)). */
  readonly args: readonly string[];
}

const lockSchema = z.strictObject({
  pid: z.number().int().positive(),
  apiPort: z.number().int().min(1).max(65_535).nullable(),
  startedAtMs: z.number().int().nonnegative(),
  args: z.array(z.string()).max(maxLockArgs),
});

/** The data folder is in use by another live process. */
export class NodeHeldError extends CimeshError {
  readonly holder: NodeLock;
  constructor(dataDir: string, holder: NodeLock) {
    super("ERR_NODE_HELD", `${heldText(dataDir, holder)}: expected no other node on this folder`);
    this.holder = holder;
  }
}

/** How a live holder is named: its pid, its control port, and how to stop it. */
export function heldText(dataDir: string, holder: NodeLock): string {
  const api =
    holder.apiPort === null
      ? "no control API yet: it is starting, or stuck before its control API came up"
      : `control API on port ${holder.apiPort}`;
  return `the store at ${join(dataDir, "store")} is held by cimesh pid ${holder.pid} (${api}); stop it with \`cimesh stop --data-dir ${dataDir}\``;
}

export function lockPath(dataDir: string): string {
  return join(dataDir, lockFileName);
}

async function readLock(dataDir: string): Promise<NodeLock | null> {
  let text: string;
  try {
    text = await readFile(lockPath(dataDir), "utf8");
  } catch {
    return null;
  }
  if (text.length > maxLockFileBytes) return null;
  try {
    const parsed = lockSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** Whether a process with this pid runs (one we may not signal still runs). */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether the process with the lock's pid is the one that wrote it: its command line, where the system shows it
 * (/proc), ends with the lock's arguments; elsewhere, that the pid runs.
 */
async function sameProcess(lock: NodeLock): Promise<boolean> {
  if (!processRuns(lock.pid)) return false;
  let cmdline: string;
  try {
    cmdline = await readFile(`/proc/${lock.pid}/cmdline`, "utf8");
  } catch {
    return true;
  }
  const args = cmdline.split("\0");
  if (args.at(-1) === "") args.pop();
  const tail = args.slice(args.length - lock.args.length);
  return lock.args.length <= args.length && tail.every((arg, index) => arg === lock.args[index]);
}

/** The live process that holds the data folder by its lock file, or null (no lock, or a stale one). */
export async function lockHolder(dataDir: string): Promise<NodeLock | null> {
  const lock = await readLock(dataDir);
  if (lock === null || lock.pid === process.pid) return null;
  return (await sameProcess(lock)) ? lock : null;
}

/** This process's hold on a data folder: tell it the control port once it listens, release it on stop. */
export interface NodeLockHandle {
  setApiPort(port: number): Promise<void>;
  release(): Promise<void>;
}

/**
 * Takes the data folder's lock for this process: NodeHeldError when another live process holds it; a stale lock is
 * replaced. Two starts at the same moment may both pass here: the store's own lock then stops the second.
 */
export async function acquireNodeLock(dataDir: string): Promise<NodeLockHandle> {
  const holder = await lockHolder(dataDir);
  if (holder !== null) throw new NodeHeldError(dataDir, holder);
  let lock: NodeLock = {
    pid: process.pid,
    apiPort: null,
    startedAtMs: Date.now(),
    args: process.argv.slice(2).slice(-maxLockArgs),
  };
  const write = () => writeFileAtomic(lockPath(dataDir), `${JSON.stringify(lock)}\n`, lockFileMode);
  await write();
  return {
    async setApiPort(port) {
      lock = { ...lock, apiPort: port };
      await write();
    },
    async release() {
      const current = await readLock(dataDir);
      if (current?.pid === process.pid) await unlink(lockPath(dataDir)).catch(() => undefined);
    },
  };
}
