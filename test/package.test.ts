/**
 * cimesh as a package: `npm pack` builds it (JavaScript and declarations in
 * dist/, the CLI bundled), the tarball installs into a new folder, and the
 * `cimesh` in that folder's node_modules/.bin (the bundle) runs on the
 * Node.js running these tests, where Node.js does not strip types. The bin
 * launcher, on a Node.js older than package.json's engines, says so in one
 * line.
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { type ProcessRun, runProcess, userEnv } from "./processes.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const launcherPath = join(root, "bin", "cimesh.js");
/** Bound on `npm pack`: its prepack builds the whole project with tsc. */
const packTimeoutMs = 240_000;
/** Bound on installing the tarball and its dependencies (from npm's cache where it can). */
const installTimeoutMs = 300_000;
/** Bound on one cimesh command: file work, no network. */
const commandTimeoutMs = 60_000;
/** Bound on the whole pack-install-run test. */
const packageTestTimeoutMs = 12 * 60_000;
/** An old Node.js: /usr/bin/node is the system's, older than the project's on some machines (Node 20 on this one). */
const systemNodePath = "/usr/bin/node";

type Run = ProcessRun;

function run(file: string, args: readonly string[], cwd: string, timeoutMs: number): Promise<Run> {
  // This Node.js first on the PATH, as a user who runs it would have it.
  const path = [dirname(process.execPath), process.env.PATH ?? ""].join(delimiter);
  return runProcess(file, args, { cwd, env: userEnv(path), timeoutMs });
}

async function tempDir(t: import("ava").ExecutionContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function ok(t: import("ava").ExecutionContext, result: Run, what: string): void {
  t.is(result.code, 0, `${what}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
}

/** What `npm pack --json` says of the tarball it wrote. */
interface PackReport {
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string }[];
}

test("npm pack builds a package whose cimesh runs from node_modules/.bin: --help, init, id, and its module loads", async (t) => {
  t.timeout(packageTestTimeoutMs);
  const dir = await tempDir(t, "cimesh-package-");

  const startedMs = performance.now();
  const pack = await run("npm", ["pack", "--json", "--pack-destination", dir], root, packTimeoutMs);
  ok(t, pack, "npm pack");
  const [report] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("["))) as PackReport[];
  if (report === undefined) throw new Error(`npm pack --json said nothing of a tarball: ${pack.stdout}`);
  const packMs = performance.now() - startedMs;
  t.log(
    `npm pack: ${report.filename}, ${report.size} bytes (${report.unpackedSize} unpacked, ${report.files.length} files) in ${Math.round(packMs)} ms`,
  );

  const paths = report.files.map((file) => file.path);
  for (const needed of [
    "package.json",
    "bin/cimesh.js",
    "dist/node/cli/cimesh.js",
    "dist/node/cli/index.js",
    "dist/node/index.js",
    "dist/node/index.d.ts",
  ])
    t.true(paths.includes(needed), `the tarball holds ${needed}`);
  for (const scenario of await readdir(join(root, "sim", "scenarios")))
    t.true(paths.includes(`dist/sim/scenarios/${scenario}`), `the tarball holds the sim scenario ${scenario}`);
  const unwanted = paths.filter(
    (path) => /^(test|bench|\.scratch|node|sim|jobs|crypto|capabilities)\//.test(path) || /(?<!\.d)\.ts$/.test(path),
  );
  t.deepEqual(unwanted, [], "no tests, benchmarks, notes or TypeScript sources in the tarball");

  const app = join(dir, "app");
  await mkdir(app);
  await writeFile(join(app, "package.json"), `${JSON.stringify({ name: "cimesh-install-check", private: true })}\n`);
  const tarball = join(dir, report.filename);
  const quiet = ["--no-audit", "--no-fund"];
  const installStartedMs = performance.now();
  // From npm's cache alone first; with the registry only for what the cache lacks.
  let install = await run("npm", ["install", tarball, "--offline", ...quiet], app, installTimeoutMs);
  if (install.code !== 0) {
    t.log(`npm install --offline failed (${install.stderr.trim().split("\n").at(-1)}): again with --prefer-offline`);
    install = await run("npm", ["install", tarball, "--prefer-offline", ...quiet], app, installTimeoutMs);
  }
  ok(t, install, "npm install of the tarball");
  t.log(`npm install of the tarball: ${Math.round(performance.now() - installStartedMs)} ms`);

  const bin = join(app, "node_modules", ".bin", "cimesh");
  const help = await run(bin, ["--help"], app, commandTimeoutMs);
  ok(t, help, "cimesh --help");
  t.regex(help.stdout, /^Usage: cimesh /m);
  t.regex(help.stdout, /^ {2}setup /m, "--help lists setup");
  t.regex(help.stdout, /^ {2}init /m, "--help lists init");
  t.is(help.stderr, "");

  const dataDir = join(dir, "data");
  const init = await run(bin, ["--data-dir", dataDir, "init"], app, commandTimeoutMs);
  ok(t, init, "cimesh init");
  t.true(init.stdout.includes(`created ${join(dataDir, "node.key")}`), init.stdout);
  t.true(init.stdout.includes(`created ${join(dataDir, "config.yaml")}`), init.stdout);
  const peerId = /^peer id (12D3KooW\w+)$/m.exec(init.stdout)?.[1];
  if (peerId === undefined) throw new Error(`init prints the PeerId: ${init.stdout}`);
  const id = await run(bin, ["--data-dir", dataDir, "id"], app, commandTimeoutMs);
  ok(t, id, "cimesh id");
  t.is(id.stdout.trim(), peerId);

  // The package's module, libp2p and LevelDB with it, loads from the built JavaScript.
  const imported = await run(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      "const m = await import('cimesh'); console.log(typeof m.createHost, typeof m.openBlobStore)",
    ],
    app,
    commandTimeoutMs,
  );
  ok(t, imported, "import('cimesh')");
  t.is(imported.stdout.trim(), "function function");
});

/** A copy of the launcher with package.json beside it (in ../), so its engines can be set. */
async function launcherCopy(dir: string, manifest: object): Promise<string> {
  await mkdir(join(dir, "bin"), { recursive: true });
  const copy = join(dir, "bin", "cimesh.js");
  await copyFile(launcherPath, copy);
  await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module", ...manifest }));
  return copy;
}

function oneLine(t: import("ava").ExecutionContext, result: Run, pattern: RegExp): void {
  t.is(result.code, 1, `exit 1\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  t.is(result.stdout, "");
  t.regex(result.stderr, /^[^\n]+\n$/, "exactly one line");
  t.regex(result.stderr, pattern);
  t.false(/^\s+at /m.test(result.stderr), "no stack trace");
}

test("the launcher on a Node.js older than engines.node prints one line and exits 1", async (t) => {
  const dir = await tempDir(t, "cimesh-launcher-");
  const copy = await launcherCopy(dir, { engines: { node: ">=999.1" } });
  const result = await run(process.execPath, [copy, "--help"], dir, commandTimeoutMs);
  oneLine(t, result, /^cimesh: needs Node\.js 999\.1 or later, this is Node\.js \d+\.\d+\.\d+ \(/);

  const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { engines: { node: string } };
  const needed = /^>=(\d+)\.(\d+)/.exec(manifest.engines.node);
  if (needed === null)
    throw new Error(`package.json engines.node: expected >=MAJOR.MINOR, got ${manifest.engines.node}`);
  const system = await run(systemNodePath, ["--version"], root, commandTimeoutMs).catch(() => null);
  const version = /^v(\d+)\.(\d+)/.exec(system?.stdout ?? "");
  const older =
    version !== null &&
    (Number(version[1]) < Number(needed[1]) ||
      (Number(version[1]) === Number(needed[1]) && Number(version[2]) < Number(needed[2])));
  if (!older) {
    t.log(
      `no Node.js older than ${manifest.engines.node} at ${systemNodePath} here: only the copy with raised engines ran`,
    );
    return;
  }
  const real = await run(systemNodePath, [launcherPath, "--help"], root, commandTimeoutMs);
  oneLine(t, real, new RegExp(`^cimesh: needs Node\\.js ${needed[1]}\\.${needed[2]} or later, this is Node\\.js `));
  t.log(`${systemNodePath} (${system?.stdout.trim()}): ${real.stderr.trim()}`);
});

test("the launcher runs the TypeScript sources in a clone, and says so in one line in an installed copy that was not built", async (t) => {
  const clone = await run(process.execPath, [launcherPath, "--version"], root, commandTimeoutMs);
  ok(t, clone, "bin/cimesh.js --version in the clone");
  t.is(clone.stdout.trim(), "0.1.0");

  const dir = await tempDir(t, "cimesh-launcher-");
  const copy = await launcherCopy(join(dir, "node_modules", "cimesh"), { engines: { node: ">=20" } });
  const result = await run(process.execPath, [copy, "--help"], dir, commandTimeoutMs);
  oneLine(t, result, /dist\/node\/cli\/cimesh\.js is missing: this copy of cimesh was not built/);
});
