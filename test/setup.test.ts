/**
 * `cimesh setup` and the check `npm test` runs first (package.json's
 * pretest), on a machine without bubblewrap made by PATH: a folder holding
 * only node and sh (and a stand-in package manager that records what it was
 * asked and installs nothing). Where bubblewrap can make a sandbox, setup
 * passes.
 */
import { realpathSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { locateExecutable, probeSandbox } from "../node/sandbox/index.ts";
import { type ProcessRun, runProcess, userEnv } from "./processes.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const launcherPath = join(root, "bin", "cimesh.js");
/** Bound on one setup run: a seccomp compile and one sandbox, or npm starting and running it. */
const setupTimeoutMs = 90_000;

type Run = ProcessRun;

/** Runs a command with only `path` on the PATH (a machine without bubblewrap, made by PATH). */
function run(file: string, args: readonly string[], path: string): Promise<Run> {
  return runProcess(file, args, { cwd: root, env: userEnv(path), timeoutMs: setupTimeoutMs });
}

/** A PATH of one folder with node (the one running the tests) and sh: no bubblewrap, make, cc or package manager. */
async function bareBin(t: import("ava").ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-setup-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bin = join(dir, "bin");
  await mkdir(bin);
  await symlink(process.execPath, join(bin, "node"));
  await symlink("/bin/sh", join(bin, "sh"));
  return bin;
}

/** A stand-in package manager in `bin` that appends its arguments to a log and installs nothing. */
async function recordingPackageManager(bin: string, name: string): Promise<string> {
  const log = join(dirname(bin), `${name}.log`);
  await writeFile(join(bin, name), `#!/bin/sh\necho "$*" >> '${log}'\n`);
  await chmod(join(bin, name), 0o755);
  return log;
}

function oneLine(t: import("ava").ExecutionContext, result: Run, pattern: RegExp): void {
  t.not(result.code, 0, `a non-zero exit\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  const lines = result.stderr.split("\n").filter((line) => line.trim() !== "");
  t.is(lines.length, 1, `exactly one line on stderr: ${result.stderr}`);
  t.regex(result.stderr, pattern);
  t.false(/^\s+at /m.test(result.stderr), "no stack trace");
}

const runsAsRoot = typeof process.getuid === "function" && process.getuid() === 0;

test("setup --check without bubblewrap on the PATH: one line naming it, exit 1", async (t) => {
  const bin = await bareBin(t);
  const result = await run(process.execPath, [launcherPath, "setup", "--check"], bin);
  oneLine(t, result, /^cimesh: bubblewrap \(bwrap on the PATH, the job sandbox\) is missing: install it with/);
  t.is(result.stdout, "");

  const log = await recordingPackageManager(bin, "apt-get");
  const withApt = await run(process.execPath, [launcherPath, "setup", "--check", "--with-test-deps"], bin);
  oneLine(
    t,
    withApt,
    /bubblewrap \(bwrap on the PATH, the job sandbox\), iproute2 with nftables \(ip, nft: the NAT test's network namespaces\), umoci and a static busybox: the image tests lay out and import an OCI image made offline, make and a C compiler \(cc\) are missing: run `(sudo )?apt-get update -qq && (sudo )?apt-get install -y -qq bubblewrap iproute2 nftables umoci busybox-static make gcc libc6-dev`, or `npx cimesh setup --with-test-deps` as root/,
  );
  t.is(await readFile(log, "utf8").catch(() => ""), "", "--check runs no package manager");
});

test("npm test's pretest without bubblewrap and no package manager to get it: one line from cimesh, exit non-zero", async (t) => {
  const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as {
    scripts: Record<string, string>;
  };
  // As root on a fresh machine, pretest installs what is missing (the README's two commands pass there); here the PATH
  // holds no package manager, so it can only say what is missing.
  t.regex(manifest.scripts.pretest ?? "", /\bsetup --with-test-deps\b/, "pretest runs setup");
  const npm = await locateExecutable("npm");
  if (npm === null) throw new Error("npm is not on the PATH: this test runs `npm run pretest`");
  const npmCli = realpathSync(npm);
  const bin = await bareBin(t);
  const result = await run(process.execPath, [npmCli, "run", "pretest"], bin);
  t.not(result.code, 0, `npm run pretest fails\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  const ours = result.stderr.split("\n").filter((line) => line.startsWith("cimesh: "));
  t.is(ours.length, 1, `one line from cimesh: ${result.stderr}`);
  t.regex(ours[0] ?? "", /bubblewrap \(bwrap on the PATH, the job sandbox\)/);
  t.false(/^\s+at /m.test(result.stderr), "no stack trace");
});

test("setup as root installs the missing packages with apt-get or dnf; otherwise it prints the exact command", async (t) => {
  for (const [manager, install] of [
    ["apt-get", ["update -qq", "install -y -qq bubblewrap"]],
    ["dnf", ["install -y -q bubblewrap"]],
  ] as const) {
    const bin = await bareBin(t);
    const log = await recordingPackageManager(bin, manager);
    const result = await run(process.execPath, [launcherPath, "setup"], bin);
    const asked = (await readFile(log, "utf8").catch(() => "")).trim().split("\n").filter(Boolean);
    if (runsAsRoot) {
      t.deepEqual(asked, [...install], `${manager} was asked to install bubblewrap`);
      t.regex(result.stdout, new RegExp(`^cimesh setup: installing bubblewrap with ${manager}$`, "m"));
      // The stand-in installed nothing: setup says so, in one line.
      oneLine(t, result, /ran, but bubblewrap \(bwrap on the PATH, the job sandbox\) is missing$/m);
    } else {
      t.deepEqual(asked, [], `not root: ${manager} is not run`);
      const sudo = install.map((args) => `sudo ${manager} ${args}`).join(" && ");
      oneLine(t, result, new RegExp(`run \`${sudo.replaceAll(/[.*+?^${}()|[\]\\-]/g, "\\$&")}\`, or`));
    }
  }
});

test("setup --check with bubblewrap on the PATH passes where a sandbox can be made here, in one line", async (t) => {
  const workRoot = await mkdtemp(join(tmpdir(), "cimesh-setup-probe-"));
  t.teardown(() => rm(workRoot, { recursive: true, force: true }));
  const probe = await probeSandbox({ workRoot });
  const path = [dirname(process.execPath), process.env.PATH ?? ""].join(delimiter);
  const result = await run(process.execPath, [launcherPath, "setup", "--check"], path);
  if (!probe.ok) {
    t.log(`no sandbox can be made here, so setup must fail: ${probe.reason}`);
    oneLine(t, result, /^cimesh: /);
    return;
  }
  t.is(result.code, 0, `setup --check passes\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  t.regex(result.stdout, /^cimesh setup: this machine can run jobs: Node\.js \d+\.\d+\.\d+, bubblewrap at \S+ works/);
  t.is(result.stdout.trim().split("\n").length, 1, "one line");
  t.is(result.stderr, "");
});
