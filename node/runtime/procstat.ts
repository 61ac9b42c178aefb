/**
 * CPU and memory of a running job, read from /proc: the run's first process
 * (bubblewrap's, in a sandbox) and every process under it, found by their
 * parent pids. CPU is the time the tree has used (its live processes'
 * utime + stime) and the share of one core it used since the last reading;
 * memory is the sum of their resident sets (VmRSS).
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** The kernel's clock ticks per second in /proc/<pid>/stat (USER_HZ), 100 on every Linux architecture Node runs on. */
export const clockTicksPerSecond = 100;
/** Processes of one job's tree read at most; the rest are not counted. */
export const maxTreeProcesses = 4096;
/** Readings closer together than this keep the CPU share of the one before: a share over a few ms says little. */
export const minCpuSpanMs = 500;
/** Bytes in the kB that /proc/<pid>/status counts in. */
export const procKibibyteBytes = 1024;

export interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime, in clock ticks. */
  readonly cpuTicks: number;
}

/** The fields of /proc/<pid>/stat used here, or null when the text is not one; the name in parentheses may hold anything. */
export function parseProcStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(")");
  const pid = Number.parseInt(text, 10);
  if (close < 0 || !Number.isInteger(pid)) return null;
  // After the name: state (field 3), ppid (4), ... utime (14), stime (15).
  const fields = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const ppid = Number(fields[1]);
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (![ppid, utime, stime].every(Number.isFinite)) return null;
  return { pid, ppid, cpuTicks: utime + stime };
}

/** VmRSS of /proc/<pid>/status, in bytes; 0 when absent (a kernel thread or a zombie). */
export function parseVmRssBytes(text: string): number {
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
  return match === null ? 0 : Number(match[1]) * procKibibyteBytes;
}

export interface TreeUsage {
  readonly processes: number;
  readonly cpuMs: number;
  readonly memoryBytes: number;
}

/** Every process's stat on this machine, read once for all the trees asked about. */
export async function readAllStats(procDir = "/proc"): Promise<ProcStat[]> {
  const names = await readdir(procDir).catch(() => [] as string[]);
  const stats = await Promise.all(
    names
      .filter((name) => /^\d+$/.test(name))
      .map((name) => readFile(join(procDir, name, "stat"), "utf8").then(parseProcStat, () => null)),
  );
  return stats.filter((stat): stat is ProcStat => stat !== null);
}

/** The pids of `root` and every process under it, by parent pid. */
export function treeOf(root: number, stats: readonly ProcStat[]): ProcStat[] {
  const children = new Map<number, ProcStat[]>();
  const byPid = new Map<number, ProcStat>();
  for (const stat of stats) {
    byPid.set(stat.pid, stat);
    const siblings = children.get(stat.ppid);
    if (siblings === undefined) children.set(stat.ppid, [stat]);
    else siblings.push(stat);
  }
  const first = byPid.get(root);
  if (first === undefined) return [];
  const tree: ProcStat[] = [first];
  for (let index = 0; index < tree.length && tree.length < maxTreeProcesses; index++)
    for (const child of children.get((tree[index] as ProcStat).pid) ?? []) tree.push(child);
  return tree.slice(0, maxTreeProcesses);
}

/** CPU time and resident memory of the tree under `root`, from stats read by readAllStats. */
export async function treeUsage(root: number, stats: readonly ProcStat[], procDir = "/proc"): Promise<TreeUsage> {
  const tree = treeOf(root, stats);
  const rss = await Promise.all(
    tree.map((stat) => readFile(join(procDir, String(stat.pid), "status"), "utf8").then(parseVmRssBytes, () => 0)),
  );
  return {
    processes: tree.length,
    cpuMs: Math.round((tree.reduce((sum, stat) => sum + stat.cpuTicks, 0) * 1000) / clockTicksPerSecond),
    memoryBytes: rss.reduce((sum, bytes) => sum + bytes, 0),
  };
}

export interface RunUsage extends TreeUsage {
  readonly runId: string;
  /** Share of one core the run used since the previous reading (100 = a whole core); null at the first. */
  readonly cpuPercent: number | null;
}

/** Readings of running jobs, each with its CPU share since the one before. */
export class RunUsageMeter {
  private readonly last = new Map<string, { cpuMs: number; atMs: number; cpuPercent: number | null }>();
  private readonly procDir: string;
  constructor(procDir = "/proc") {
    this.procDir = procDir;
  }

  /** Reads the runs whose first process is known now; forgets runs not asked about. */
  async read(runs: readonly { runId: string; pid: number }[], nowMs: number): Promise<RunUsage[]> {
    if (runs.length === 0) {
      this.last.clear();
      return [];
    }
    const stats = await readAllStats(this.procDir);
    const out: RunUsage[] = [];
    for (const { runId, pid } of runs) {
      const usage = await treeUsage(pid, stats, this.procDir);
      const before = this.last.get(runId);
      if (before !== undefined && nowMs - before.atMs < minCpuSpanMs) {
        out.push({ runId, ...usage, cpuPercent: before.cpuPercent });
        continue;
      }
      const cpuPercent =
        before === undefined ? null : Math.max(0, ((usage.cpuMs - before.cpuMs) / (nowMs - before.atMs)) * 100);
      this.last.set(runId, { cpuMs: usage.cpuMs, atMs: nowMs, cpuPercent });
      out.push({ runId, ...usage, cpuPercent });
    }
    for (const runId of [...this.last.keys()]) if (!runs.some((run) => run.runId === runId)) this.last.delete(runId);
    return out;
  }
}
