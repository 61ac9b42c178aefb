/**
 * Attacks from inside a job, on real runs in the bubblewrap sandbox: a nested
 * user namespace (`unshare -r`, unshare and clone3 calls), the kernel keyring,
 * ptrace of another process, reading the host's paths from /proc/1/cmdline
 * and /proc/self/mountinfo, and writing past the job's declared disk (named
 * files, and files deleted while held open). Each refused call is also made
 * outside the sandbox, where it works: the refusal is the sandbox's doing.
 * And the control API's 401 names no path of the node's.
 *
 * Needs bubblewrap, unprivileged user namespaces and python3-seccomp (the
 * first test says so when they are missing), as test/executor.test.ts does.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { type ExecutionReport, type ExecutionRequest, type JobSpec, jobSpecSchema } from "../jobs/index.ts";
import type { NodeApi } from "../node/control/index.ts";
import { startControlServer } from "../node/control/index.ts";
import {
  compileSeccompFilter,
  createExecutor,
  type Executor,
  minRunDiskBytes,
  neutralWorkRoot,
  probeSandbox,
  seccompRules,
} from "../node/sandbox/index.ts";

const run = promisify(execFile);
const mib = 1024 * 1024;
const hourMs = 60 * 60 * 1000;
/** Generous: every job here ends in well under a second when the sandbox does its work. */
const jobTimeoutMs = 60_000;
/** How far past its limit a writer of 1 MiB files may get before it is stopped: generous (one check takes 100 ms). */
const maxOvershootFactor = 16;

function jobOf(steps: readonly string[], overrides: Partial<JobSpec> = {}): JobSpec {
  return jobSpecSchema.parse({
    name: "attack-sandbox",
    steps: steps.map((step, index) => ({ name: `step-${index + 1}`, run: step })),
    env: {},
    timeoutMs: jobTimeoutMs,
    resources: { cpus: 1, memoryBytes: 256 * mib, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: null,
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 1,
    deadlineMs: 1_800_000_000_000 + hourMs,
    ...overrides,
  });
}

let runCounter = 0;
function requestOf(job: JobSpec): ExecutionRequest {
  runCounter += 1;
  return { runId: `attack-${runCounter}`, project: "p", jobId: `j-${runCounter}`, attempt: 0, shard: 0, job, env: {} };
}

interface Ran {
  readonly report: ExecutionReport;
  readonly stdout: string;
  readonly stderr: string;
}

async function runJob(executor: Executor, job: JobSpec, files: Record<string, string> = {}): Promise<Ran> {
  const out: Record<"stdout" | "stderr", Buffer[]> = { stdout: [], stderr: [] };
  const report = await executor.run(requestOf(job), {
    onLog: (chunk) => out[chunk.stream].push(Buffer.from(chunk.data)),
    prepare: async (work) => {
      for (const [name, text] of Object.entries(files)) await writeFile(join(work, name), text);
    },
  });
  return {
    report,
    stdout: Buffer.concat(out.stdout).toString("utf8"),
    stderr: Buffer.concat(out.stderr).toString("utf8"),
  };
}

const made: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
test.after.always(async () => {
  for (const dir of made) await rm(dir, { recursive: true, force: true });
});

/** An executor as a worker makes it: run folders under the neutral work root of a data folder. */
async function workerExecutor(): Promise<{ executor: Executor; dataDir: string; workRoot: string }> {
  const dataDir = await tempDir("cimesh-data-");
  const workRoot = neutralWorkRoot(dataDir);
  made.push(workRoot);
  return { executor: createExecutor({ workRoot }), dataDir, workRoot };
}

/**
 * Makes the calls a job must not make and prints, as JSON, the errno of each
 * (0: it worked). Run inside the sandbox and, as a control, outside it.
 */
const syscallProbe = `
import ctypes, json, os, platform, signal, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
numbers = {
    "x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250, "clone3": 435},
    "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219, "clone3": 435},
}[platform.machine()]
def errno_of(result):
    return 0 if result >= 0 else ctypes.get_errno()
found = {}
found["keyctl"] = errno_of(libc.syscall(numbers["keyctl"], ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0)))
found["add_key"] = errno_of(libc.syscall(numbers["add_key"], b"user", b"cimesh-attack", b"x", ctypes.c_long(1), ctypes.c_long(-2)))
found["request_key"] = errno_of(libc.syscall(numbers["request_key"], b"user", b"cimesh-attack", None, ctypes.c_long(0)))
# clone3 with a too-small argument: EINVAL where the call exists, ENOSYS where the filter hides it.
found["clone3"] = errno_of(libc.syscall(numbers["clone3"], None, ctypes.c_long(0)))
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
found["ptrace"] = errno_of(libc.ptrace(ctypes.c_long(16), ctypes.c_long(child), None, None))
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
# Last: where it works, this process is in a new user namespace from here on.
found["unshare"] = errno_of(libc.unshare(ctypes.c_int(0x10000000)))
print(json.dumps(found))
`;
const eperm = 1;
const enosys = 38;

test("the sandbox, with its seccomp filter, can be made on this machine (bubblewrap, user namespaces, python3-seccomp)", async (t) => {
  const probe = await probeSandbox({ workRoot: await tempDir("cimesh-probe-") });
  t.true(probe.ok, probe.reason);
  t.deepEqual(probe.seccomp?.unknown, [], "this libseccomp knows every rule's call");
});

test("without libseccomp's binding the probe refuses the sandbox and says what to install", async (t) => {
  const probe = await probeSandbox({
    workRoot: await tempDir("cimesh-probe-"),
    compileFilter: () => compileSeccompFilter(seccompRules, "/nonexistent/python3"),
  });
  t.false(probe.ok);
  t.regex(probe.reason, /seccomp filter/);
  t.regex(probe.reason, /apt-get install python3-seccomp/);
});

test("no nested user namespace: `unshare -r` fails inside, works outside; unshare and clone3 calls are refused", async (t) => {
  const { executor } = await workerExecutor();
  const inside = await runJob(executor, jobOf(["unshare -r id -u"]));
  t.is(inside.report.outcome, "failed", inside.report.summary);
  t.regex(inside.stderr, /unshare failed: Operation not permitted/);
  t.notRegex(inside.stdout, /^0$/m);
  const outside = await run("/usr/bin/unshare", ["-r", "id", "-u"]);
  t.is(outside.stdout.trim(), "0", "outside the sandbox the same command makes a user namespace");

  const probe = await runJob(executor, jobOf(["/usr/bin/python3 probe.py"]), { "probe.py": syscallProbe });
  t.is(probe.report.outcome, "succeeded", `${probe.report.summary} ${probe.stderr}`);
  const found = JSON.parse(probe.stdout) as Record<string, number>;
  t.is(found.unshare, eperm, "unshare(CLONE_NEWUSER)");
  t.is(found.clone3, enosys, "clone3 is hidden, so the C library falls back to clone, whose flags the filter reads");
});

test("the kernel keyring and ptrace of another process are refused inside, and work outside", async (t) => {
  const { executor } = await workerExecutor();
  const inside = await runJob(executor, jobOf(["/usr/bin/python3 probe.py"]), { "probe.py": syscallProbe });
  t.is(inside.report.outcome, "succeeded", `${inside.report.summary} ${inside.stderr}`);
  const refused = JSON.parse(inside.stdout) as Record<string, number>;
  for (const call of ["keyctl", "add_key", "request_key", "ptrace"]) t.is(refused[call], eperm, `${call} inside`);

  const dir = await tempDir("cimesh-control-");
  await writeFile(join(dir, "probe.py"), syscallProbe);
  const outside = JSON.parse((await run("/usr/bin/python3", [join(dir, "probe.py")])).stdout) as Record<string, number>;
  for (const call of ["keyctl", "add_key", "ptrace", "unshare"]) t.is(outside[call], 0, `${call} outside`);
  t.not(outside.clone3, enosys, "clone3 exists outside");
});

test("/proc/1/cmdline and /proc/self/mountinfo name no path of the worker's data folder, and not bubblewrap", async (t) => {
  const { executor, dataDir, workRoot } = await workerExecutor();
  const { report, stdout } = await runJob(
    executor,
    jobOf([
      "tr '\\0' ' ' < /proc/1/cmdline; echo",
      "cat /proc/self/mountinfo /proc/1/mountinfo",
      "for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do tr '\\0' ' ' < $f; echo; done",
    ]),
  );
  t.is(report.outcome, "succeeded", report.summary);
  t.true(stdout.includes("cimesh-job"), "the job's own shell is pid 1");
  t.false(stdout.includes(dataDir), "the data folder's path");
  t.false(stdout.includes("cimesh-data-"), "any part of the data folder's name");
  t.false(/bwrap|bubblewrap|--ro-bind|--seccomp/.test(stdout), "bubblewrap's command line");
  t.false(workRoot.includes(dataDir), "the neutral work root does not contain the data folder's path");
});

test("a job that writes past its declared disk is stopped, ends failed with a clear summary, and leaves nothing", async (t) => {
  const { executor, workRoot } = await workerExecutor();
  const diskBytes = 32 * mib;
  const resources = { cpus: 1, memoryBytes: 256 * mib, diskBytes, processes: 64 };
  // Files of 1 MiB each, without end: only the executor can stop it before its timeout.
  const writer = await runJob(
    executor,
    jobOf(["i=0; while :; do head -c 1048576 /dev/zero > f$i; i=$((i+1)); done"], { resources }),
  );
  t.is(writer.report.outcome, "failed", writer.report.summary);
  t.is(writer.report.exitCode, null);
  t.is(writer.report.outputsDigest, null);
  t.regex(writer.report.summary, /stopped in step 1 "step-1" using more disk than allowed/);
  t.regex(
    writer.report.summary,
    new RegExp(`over its limit of ${diskBytes} bytes \\(resources.diskBytes ${diskBytes}\\)`),
  );
  const used = Number(/at least (\d+) bytes/.exec(writer.report.summary)?.[1]);
  t.true(used > diskBytes, writer.report.summary);
  // Measuring is not a quota: the job may pass the limit by what it writes between two checks, and no more.
  t.true(used < maxOvershootFactor * diskBytes, `the disk stayed bounded: ${writer.report.summary}`);
  t.deepEqual(await readdir(workRoot), [], "the run folder is removed");

  // One file cannot pass the limit at all (RLIMIT_FSIZE); a job declaring no disk gets the minimum.
  const big = await runJob(executor, jobOf(["head -c 268435456 /dev/zero > big; ls -l big"]));
  t.is(big.report.outcome, "failed", big.report.summary);
  t.regex(big.report.summary, /using more disk than allowed/);
  t.regex(big.report.summary, new RegExp(`limit of ${minRunDiskBytes} bytes \\(resources.diskBytes 0, raised`));
  t.regex(big.stderr, /File size limit exceeded|file too large/i);
});

test("files deleted while held open still count toward the disk", async (t) => {
  const { executor, workRoot } = await workerExecutor();
  const resources = { cpus: 1, memoryBytes: 256 * mib, diskBytes: 16 * mib, processes: 64 };
  // 2 x 12 MiB with no name left, then a wait that only the executor ends.
  const hidden = await runJob(
    executor,
    jobOf(
      [
        "exec 5>/tmp/a 6>/work/b; rm /tmp/a /work/b; head -c 12582912 /dev/zero >&5; head -c 12582912 /dev/zero >&6; sleep 120",
      ],
      { resources },
    ),
  );
  t.is(hidden.report.outcome, "failed", hidden.report.summary);
  t.regex(hidden.report.summary, /stopped in step 1 "step-1" using more disk than allowed/);
  t.deepEqual(await readdir(workRoot), []);
});

test("a job within its disk succeeds and its outputs are collected", async (t) => {
  const { executor } = await workerExecutor();
  const resources = { cpus: 1, memoryBytes: 256 * mib, diskBytes: 64 * mib, processes: 64 };
  const { report } = await runJob(
    executor,
    jobOf(["mkdir -p dist && head -c 20971520 /dev/zero > dist/blob && head -c 8388608 /dev/zero > /tmp/scratch"], {
      resources,
      outputs: ["dist"],
    }),
  );
  t.is(report.outcome, "succeeded", report.summary);
  t.not(report.outputsDigest, null);
});

test("the control API's 401 names no path of the node's data folder", async (t) => {
  const dataDir = await tempDir("cimesh-data-");
  const server = await startControlServer({} as NodeApi, dataDir, 0);
  t.teardown(() => server.close());
  const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: server.port, path: "/v1/status" }, (res) => {
      let text = "";
      res.on("data", (data: Buffer) => {
        text += data.toString("utf8");
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.end();
  });
  t.is(body.status, 401);
  t.regex(body.text, /Authorization: Bearer/);
  t.false(body.text.includes(dataDir), body.text);
  t.false(body.text.includes("cimesh-data-"), body.text);
});
