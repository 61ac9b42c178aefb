/**
 * The disk a run may use, and the watch that holds it to that while it runs.
 *
 * What a job writes lands in two host folders of its run (its work folder and
 * its /tmp), on the worker's own filesystem. Nothing on that filesystem bounds
 * one folder (quotas per folder need project quotas the filesystem may not
 * have, or root and a loop device), so the executor measures instead:
 *
 * - every inode under the two folders once (hard links count once), at its
 *   allocated size but at least one block, so a million empty files count too;
 * - files the job's processes hold open that have no name left (written, then
 *   deleted while still open), found through the sandbox's own /proc;
 * - each single file is also bounded by RLIMIT_FSIZE at the limit (the
 *   sandbox's prlimit), so one write cannot run far past it between checks.
 *
 * A run over its limit is killed and ends failed. Measuring is not a quota:
 * the disk may be passed by what the job writes in one check interval
 * (diskCheckMinMs at the least, longer when measuring a big tree takes longer),
 * and a file kept alive only in flight over a unix socket is not seen.
 */
import { lstat, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";

/** Disk every run may use whatever it declares (resources.diskBytes may be 0): room for a shell's own files. */
export const minRunDiskBytes = 16 * 1024 * 1024;
/** What one inode counts for at least: a file or folder takes one block and one inode of the worker's filesystem. */
export const minInodeBytes = 4096;
/** Bytes of one unit of st_blocks. */
export const statBlockBytes = 512;
/** Shortest wait between two measurements of a running job. */
export const diskCheckMinMs = 100;
/** The wait is at least this many times the last measurement's own duration, so measuring takes at most a tenth of the time. */
export const diskCheckCostFactor = 10;

/** The disk a run may use: what its job declares, but never less than minRunDiskBytes. */
export function runDiskLimitBytes(declaredBytes: number): number {
  return Math.max(declaredBytes, minRunDiskBytes);
}

/** The bytes an inode counts for. */
function inodeBytes(blocks: number): number {
  return Math.max(blocks * statBlockBytes, minInodeBytes);
}

/**
 * Bytes the folders use, each inode once; stops counting once past `stopAboveBytes`
 * (the answer is then only known to be larger), so a huge tree costs no more than its limit's worth.
 */
async function measureFolders(folders: readonly string[], seen: Set<string>, stopAboveBytes: number): Promise<number> {
  let bytes = 0;
  const pending: string[] = [];
  for (const folder of folders) {
    const info = await lstat(folder).catch(() => null);
    if (info === null || seen.has(`${info.dev}:${info.ino}`)) continue;
    seen.add(`${info.dev}:${info.ino}`);
    bytes += inodeBytes(info.blocks);
    pending.push(folder);
  }
  while (pending.length > 0 && bytes <= stopAboveBytes) {
    const dir = pending.pop() as string;
    // Entries come and go while the job runs: one gone between readdir and lstat counts nothing.
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const path = join(dir, entry.name);
      const info = await lstat(path).catch(() => null);
      if (info === null) continue;
      const key = `${info.dev}:${info.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
      bytes += inodeBytes(info.blocks);
      if (info.isDirectory()) pending.push(path);
    }
  }
  return bytes;
}

/** The sandbox's first process, as the host numbers it: bubblewrap's one child. */
async function sandboxInit(bwrapPid: number): Promise<number | null> {
  const text = await readFile(`/proc/${bwrapPid}/task/${bwrapPid}/children`, "utf8").catch(() => "");
  const first = text.trim().split(/\s+/)[0];
  return first === undefined || first === "" ? null : Number(first);
}

/**
 * Bytes of files the sandbox's processes hold open on `devices` that no name
 * leads to any more. Read through the sandbox's own /proc (seen from its first
 * process's root), which lists the sandbox's processes and no other.
 */
async function measureUnlinked(initPid: number, devices: ReadonlySet<number>, seen: Set<string>): Promise<number> {
  const proc = `/proc/${initPid}/root/proc`;
  let bytes = 0;
  const pids = (await readdir(proc).catch(() => [])).filter((name) => /^\d+$/.test(name));
  for (const pid of pids) {
    const fds = await readdir(join(proc, pid, "fd")).catch(() => []);
    for (const fd of fds) {
      const info = await stat(join(proc, pid, "fd", fd)).catch(() => null);
      if (info === null || !info.isFile() || info.nlink !== 0 || !devices.has(info.dev)) continue;
      const key = `${info.dev}:${info.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
      bytes += inodeBytes(info.blocks);
    }
  }
  return bytes;
}

export interface DiskMeter {
  /** Bytes the run uses now (past the limit: at least that much). */
  measure(): Promise<number>;
}

/**
 * Measures a run's folders and, once `bwrapPid` is known, the files its
 * sandboxed processes hold open without a name.
 */
export function diskMeter(folders: readonly string[], limitBytes: number, bwrapPid: () => number | null): DiskMeter {
  let initPid: number | null = null;
  return {
    async measure() {
      const seen = new Set<string>();
      let bytes = await measureFolders(folders, seen, limitBytes);
      if (bytes > limitBytes) return bytes;
      const bwrap = bwrapPid();
      if (bwrap !== null) initPid ??= await sandboxInit(bwrap);
      if (initPid !== null) {
        const devices = new Set<number>();
        for (const folder of folders) {
          const info = await stat(folder).catch(() => null);
          if (info !== null) devices.add(info.dev);
        }
        bytes += await measureUnlinked(initPid, devices, seen);
      }
      return bytes;
    },
  };
}

export interface DiskWatch {
  /** Stops watching; resolves once no measurement is under way. */
  stop(): Promise<void>;
}

/**
 * Measures again and again while a run goes on, and calls `over` (once) with
 * the bytes measured when the run uses more than `limitBytes`.
 */
export function watchDisk(meter: DiskMeter, limitBytes: number, over: (usedBytes: number) => void): DiskWatch {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = (async () => {
      const startedMs = performance.now();
      const used = await meter.measure().catch(() => 0);
      if (stopped) return;
      if (used > limitBytes) {
        stopped = true;
        over(used);
        return;
      }
      const costMs = performance.now() - startedMs;
      timer = setTimeout(tick, Math.max(diskCheckMinMs, costMs * diskCheckCostFactor));
    })();
  };
  timer = setTimeout(tick, diskCheckMinMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
