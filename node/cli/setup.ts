/**
 * `cimesh setup`: makes this machine one that runs jobs, in the manner of
 * `playwright install --with-deps`. It checks Node.js against package.json's
 * engines, bubblewrap on the PATH (the job sandbox) and libseccomp's Python
 * binding (which compiles the sandbox's seccomp filter); with
 * --with-test-deps also what the project's own tests build with (make, a C
 * compiler). What is missing it installs with apt-get or dnf when run as
 * root, and otherwise prints the exact command. Last it makes one real
 * sandbox (the probe a worker makes before it runs jobs), which is what shows
 * that unprivileged user namespaces work here. Whatever cannot be made to
 * work ends the command with one line and exit 1.
 *
 * `npm test` runs it first (as pretest): as root on a fresh machine it
 * installs what the tests need, and a machine that cannot run them gets one
 * message instead of a cascade of failures. --check installs nothing.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import semver from "semver";
import { CimeshError } from "../../crypto/index.ts";
import type { CompiledFilter } from "../sandbox/index.ts";
import { out, program } from "./common.ts";

/** How long one package manager command may take (an `apt-get update` on a slow mirror included). */
export const packageInstallTimeoutMs = 15 * 60_000;
/** user.max_user_namespaces suggested where it is 0: room for every sandbox of a busy machine. */
export const suggestedMaxUserNamespaces = 10_000;

/** Something cimesh setup can make work. */
export class SetupError extends CimeshError {
  constructor(message: string) {
    super("ERR_SETUP", message.replace(/\s+/g, " ").trim());
  }
}

type PackageManager = "apt-get" | "dnf";

/** A tool a worker (or the tests) needs from the system, and the packages that bring it. */
interface SystemNeed {
  /** What is missing, as the message names it. */
  readonly what: string;
  readonly present: () => Promise<boolean>;
  readonly packages: Readonly<Record<PackageManager, readonly string[]>>;
}

/** The first executable of that name on the PATH, or null (as a shell finds it, and as the executor does). */
export async function onPath(name: string): Promise<string | null> {
  const { locateExecutable } = await import("../sandbox/index.ts");
  return locateExecutable(name);
}

/** package.json of this package: found upwards from this file, in a clone (node/cli) and in a build (dist/node/cli). */
function packageManifest(): { readonly engines?: { readonly node?: string }; readonly path: string } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const path = join(dir, "package.json");
    if (existsSync(path)) return { ...JSON.parse(readFileSync(path, "utf8")), path };
    const parent = dirname(dir);
    if (parent === dir) throw new SetupError(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** Refuses a Node.js outside package.json's engines.node: setup cannot install Node.js. */
function checkNode(): string {
  const manifest = packageManifest();
  const range = manifest.engines?.node;
  if (typeof range !== "string") throw new SetupError(`${manifest.path}: expected engines.node, found none`);
  if (!semver.satisfies(process.versions.node, range))
    throw new SetupError(
      `Node.js ${process.versions.node} (${process.execPath}) is not one cimesh runs on (${range}): ` +
        "install a newer Node.js (https://nodejs.org) and run cimesh with it",
    );
  return `Node.js ${process.versions.node}`;
}

function sandboxNeeds(compileFilter: () => Promise<CompiledFilter>): SystemNeed[] {
  return [
    {
      what: "bubblewrap (bwrap on the PATH, the job sandbox)",
      present: async () => (await onPath("bwrap")) !== null,
      packages: { "apt-get": ["bubblewrap"], dnf: ["bubblewrap"] },
    },
    {
      what: "libseccomp's Python binding (it compiles the sandbox's seccomp filter)",
      present: () =>
        compileFilter().then(
          () => true,
          () => false,
        ),
      packages: { "apt-get": ["python3-seccomp"], dnf: ["python3-libseccomp"] },
    },
  ];
}

/**
 * What the project's own tests need: make and a C compiler to build inside the sandbox (the mesh tests compile a C
 * project), Chromium, which the browser tests drive with playwright-core, ip and nft for the NAT test's network
 * namespaces, and umoci with a static busybox, from which the image tests make an OCI image offline.
 */
const testNeeds: readonly SystemNeed[] = [
  {
    what: "Chromium (/usr/bin/chromium, the browser tests' browser)",
    present: async () => existsSync("/usr/bin/chromium"),
    packages: { "apt-get": ["chromium"], dnf: ["chromium"] },
  },
  {
    what: "iproute2 with nftables (ip, nft: the NAT test's network namespaces)",
    // Outside node_modules: under npm, node_modules/.bin comes first on the PATH and holds @vercel/nft's `nft`.
    present: async () =>
      (await onPath("ip")) !== null &&
      (existsSync("/usr/sbin/nft") || !((await onPath("nft")) ?? "node_modules").includes("node_modules")),
    packages: { "apt-get": ["iproute2", "nftables"], dnf: ["iproute", "nftables"] },
  },
  {
    what: "umoci and a static busybox: the image tests lay out and import an OCI image made offline",
    present: async () => (await onPath("umoci")) !== null && existsSync("/bin/busybox"),
    packages: { "apt-get": ["umoci", "busybox-static"], dnf: ["umoci", "busybox"] },
  },
  {
    what: "make",
    present: async () => (await onPath("make")) !== null,
    packages: { "apt-get": ["make"], dnf: ["make"] },
  },
  {
    what: "a C compiler (cc)",
    present: async () => (await onPath("cc")) !== null,
    packages: { "apt-get": ["gcc", "libc6-dev"], dnf: ["gcc", "glibc-devel"] },
  },
];

async function missingOf(needs: readonly SystemNeed[]): Promise<SystemNeed[]> {
  const missing: SystemNeed[] = [];
  for (const need of needs) if (!(await need.present())) missing.push(need);
  return missing;
}

/** The commands that install the packages, each an argv. */
function installCommands(manager: PackageManager, packages: readonly string[]): string[][] {
  return manager === "apt-get"
    ? [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", ...packages],
      ]
    : [["dnf", "install", "-y", "-q", ...packages]];
}

function shown(commands: readonly string[][], sudo: boolean): string {
  return commands.map((argv) => (sudo ? ["sudo", ...argv] : argv).join(" ")).join(" && ");
}

function listed(missing: readonly SystemNeed[]): string {
  const names = missing.map((need) => need.what);
  const text = names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
  return `${text} ${names.length === 1 ? "is" : "are"} missing`;
}

function runsAsRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** Runs one package manager command, its output shown; resolves to its exit code (null: killed or not started). */
function runCommand(argv: readonly string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const [file, ...args] = argv as [string, ...string[]];
    const child = spawn(file, args, {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), packageInstallTimeoutMs);
    child.on("error", () => {
      clearTimeout(timer);
      resolve(null);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** Finds the packages missing, and installs them or says exactly how (`again`: the cimesh command that would). */
async function provide(needs: readonly SystemNeed[], checkOnly: boolean, again: string): Promise<string[]> {
  const missing = await missingOf(needs);
  if (missing.length === 0) return [];
  const manager: PackageManager | null =
    (await onPath("apt-get")) !== null ? "apt-get" : (await onPath("dnf")) !== null ? "dnf" : null;
  if (manager === null)
    throw new SetupError(
      `${listed(missing)}: install ${missing.length === 1 ? "it" : "them"} with this system's package manager ` +
        "(cimesh setup installs with apt-get or dnf, and found neither on the PATH)",
    );
  const packages = missing.flatMap((need) => need.packages[manager]);
  const commands = installCommands(manager, packages);
  const root = runsAsRoot();
  if (checkOnly || !root)
    throw new SetupError(
      `${listed(missing)}: run \`${shown(commands, !root)}\`, or \`${again}\` as root, which runs it`,
    );
  out(`cimesh setup: installing ${packages.join(" ")} with ${manager}`);
  for (const argv of commands) {
    const code = await runCommand(argv);
    if (code !== 0) throw new SetupError(`\`${argv.join(" ")}\` failed (exit ${code ?? "none"}): install by hand`);
  }
  const still = await missingOf(missing);
  if (still.length > 0) throw new SetupError(`\`${shown(commands, false)}\` ran, but ${listed(still)}`);
  return packages;
}

/** Why unprivileged user namespaces are off here, with the command that turns them on; null: no setting says so. */
async function userNamespacesOff(): Promise<string | null> {
  const settings = [
    {
      file: "/proc/sys/user/max_user_namespaces",
      off: "0",
      fix: `sysctl -w user.max_user_namespaces=${suggestedMaxUserNamespaces}`,
    },
    {
      file: "/proc/sys/kernel/unprivileged_userns_clone",
      off: "0",
      fix: "sysctl -w kernel.unprivileged_userns_clone=1",
    },
    {
      file: "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
      off: "1",
      fix: "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
    },
  ];
  for (const setting of settings) {
    const value = (await readFile(setting.file, "utf8").catch(() => "")).trim();
    if (value === setting.off) {
      const name = setting.file.slice("/proc/sys/".length).replaceAll("/", ".");
      return (
        `unprivileged user namespaces are off here (${name} = ${value}), and bubblewrap needs them: ` +
        `run \`${setting.fix}\` as root (and put it in /etc/sysctl.d/ to keep it)`
      );
    }
  }
  return null;
}

/** Makes one real sandbox, in a temporary folder removed afterwards; the line that says it works. */
async function probe(compileFilter: () => Promise<CompiledFilter>): Promise<string> {
  const { probeSandbox } = await import("../sandbox/index.ts");
  const workRoot = await mkdtemp(join(tmpdir(), "cimesh-setup-"));
  try {
    const result = await probeSandbox({ workRoot, compileFilter });
    if (result.ok) return result.reason;
    throw new SetupError((await userNamespacesOff()) ?? result.reason);
  } finally {
    await rm(workRoot, { recursive: true, force: true });
  }
}

/** Adds `setup`: checks (and as root installs) what running jobs here needs. */
export function addSetupCommand(): void {
  program
    .command("setup")
    .description(
      "check that this machine can run jobs (Node.js, bubblewrap, user namespaces, libseccomp) " +
        "and, as root, install what is missing with apt-get or dnf",
    )
    .option("--check", "only check, install nothing (what `npm test` runs first)")
    .option("--with-test-deps", "also what the project's tests build with: make and a C compiler")
    .action(async (options: { check?: boolean; withTestDeps?: boolean }) => {
      const node = checkNode();
      let filter: Promise<CompiledFilter> | null = null;
      const compileFilter = async (): Promise<CompiledFilter> => {
        const { compileSeccompFilter } = await import("../sandbox/index.ts");
        filter ??= compileSeccompFilter();
        // A failed compile is retried: an install may have brought the binding since.
        return filter.catch((error: unknown) => {
          filter = null;
          throw error;
        });
      };
      const needs = [...sandboxNeeds(compileFilter), ...(options.withTestDeps === true ? testNeeds : [])];
      const again = `npx cimesh setup${options.withTestDeps === true ? " --with-test-deps" : ""}`;
      const installed = await provide(needs, options.check === true, again);
      const sandbox = await probe(compileFilter);
      const tools = options.withTestDeps === true ? ", make and cc present" : "";
      const added = installed.length > 0 ? ` (installed ${installed.join(" ")})` : "";
      out(`cimesh setup: this machine can run jobs: ${node}, ${sandbox}${tools}${added}`);
    });
}
