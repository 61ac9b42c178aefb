/**
 * CPU and memory of a running job's processes (node/runtime/procstat.ts): /proc's stat and status read, a process
 * tree found by parent pids and summed, the CPU share between two readings. Against a /proc made in a temporary
 * folder, and once against this process in the real /proc (Linux only).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { parseProcStat, parseVmRssBytes, RunUsageMeter, readAllStats, treeUsage } from "../node/runtime/procstat.ts";

function statLine(pid: number, name: string, ppid: number, utime: number, stime: number): string {
  // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
  return `${pid} (${name}) S ${ppid} 1 1 0 -1 4194560 100 0 0 0 ${utime} ${stime} 0 0 20 0 1 0 100 1000 50\n`;
}

async function fakeProc(processes: readonly [number, number, number, number][]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-proc-"));
  for (const [pid, ppid, ticks, rssKb] of processes) {
    await mkdir(join(dir, String(pid)));
    await writeFile(join(dir, String(pid), "stat"), statLine(pid, "a) odd (name", ppid, ticks, 0));
    await writeFile(join(dir, String(pid), "status"), `Name:\tx\nVmRSS:\t    ${rssKb} kB\nThreads:\t1\n`);
  }
  await mkdir(join(dir, "self"));
  return dir;
}

test("stat and status lines are read, a name holding parentheses and spaces included", (t) => {
  t.deepEqual(parseProcStat(statLine(42, "sh) (x", 7, 150, 50)), { pid: 42, ppid: 7, cpuTicks: 200 });
  t.is(parseProcStat("garbage"), null);
  t.is(parseVmRssBytes("Name:\tsh\nVmRSS:\t  2048 kB\n"), 2048 * 1024);
  t.is(parseVmRssBytes("Name:\tkthreadd\n"), 0);
});

test("a run's usage sums its process tree (not its parent's other children) and its CPU share is taken between readings", async (t) => {
  // 10 is the node; 20 the run's first process; 21 and 22 under it, 23 under 21; 30 another child of the node.
  const dir = await fakeProc([
    [10, 1, 5000, 90_000],
    [20, 10, 100, 1000],
    [21, 20, 200, 2000],
    [22, 20, 300, 3000],
    [23, 21, 400, 4000],
    [30, 10, 9000, 50_000],
  ]);
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const stats = await readAllStats(dir);
  t.is(stats.length, 6, "the numeric folders only");
  t.deepEqual(await treeUsage(20, stats, dir), { processes: 4, cpuMs: 10_000, memoryBytes: 10_000 * 1024 });
  t.deepEqual(await treeUsage(99, stats, dir), { processes: 0, cpuMs: 0, memoryBytes: 0 }, "a gone run reads empty");

  const meter = new RunUsageMeter(dir);
  const first = await meter.read([{ runId: "r", pid: 20 }], 1_000_000);
  t.is(first[0]?.cpuPercent, null, "no share at the first reading");
  // One more second of CPU over two seconds: half a core.
  await writeFile(join(dir, "23", "stat"), statLine(23, "x", 21, 500, 0));
  const second = await meter.read([{ runId: "r", pid: 20 }], 1_002_000);
  t.is(second[0]?.cpuPercent, 50);
  const soon = await meter.read([{ runId: "r", pid: 20 }], 1_002_100);
  t.is(soon[0]?.cpuPercent, 50, "a reading right after keeps the share of the one before");
});

test("this process reads itself in the real /proc", async (t) => {
  if (process.platform !== "linux") return t.pass("not Linux: no /proc to read");
  const usage = await treeUsage(process.pid, await readAllStats());
  t.true(usage.processes >= 1);
  t.true(usage.memoryBytes > 0);
  t.true(usage.cpuMs > 0);
});
