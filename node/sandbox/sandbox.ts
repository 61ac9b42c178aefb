/**
 * The job sandbox (DESIGN.md, Jobs): the command line that runs a job's steps
 * under bubblewrap, and the probe that tells whether bubblewrap can make a
 * sandbox on this machine at all. executor.ts owns the run around it.
 *
 * What the sandbox is, and why each part is done the way it is (measured on
 * Linux 6.18, bubblewrap 0.8.0, Debian with merged /usr):
 *
 * - Files: a fresh root with /usr (and /bin, /lib... as the host has them:
 *   symlinks or read-only binds) read-only, a few /etc files read-only
 *   (the host's linker cache, alternatives and certificates; resolv.conf only
 *   with network; passwd, group and hosts generated and copied in from file
 *   descriptors, so no mount names the run's host folder for them), new /proc
 *   and /dev, a size-bounded tmpfs /dev/shm, and two host folders of this run
 *   only: the work folder as /work (the cwd and HOME) and a private /tmp. The
 *   root and /dev are remounted read-only last, because bubblewrap's own tmpfs
 *   for them is writable by the job and unbounded in size otherwise. Nothing
 *   else of the host is visible: not the node's data folder, keys, /root or /home.
 * - A job with an image: each top-level entry of the unpacked image (node/images)
 *   bound read-only in place of /usr and the rest, its /etc entries bound
 *   beside the generated files; the host's prlimit, env and the folder of its
 *   dynamic loader bound read-only at imageToolsPath, because the limits are
 *   set inside the namespaces (below) and the image may have no libc: the
 *   chain runs them through the host's loader, then execs the image's /bin/sh.
 *   Everything else (namespaces, filter, uid, limits, /work, /tmp) is the same.
 * - What the job can learn of the host: /proc/self/mountinfo names the host
 *   path of each bind (a bind's root within its filesystem is always shown),
 *   so run folders live under a neutral workRoot (neutralWorkRoot: a folder
 *   under /var/tmp whose name is a hash) and never under the node's data
 *   folder. Bubblewrap runs with `--as-pid-1`: the job's own shell is pid 1,
 *   so /proc/1/cmdline is the job's command, not bubblewrap's command line.
 * - Namespaces: user, pid, ipc, uts, cgroup, mount and (unless the job may use
 *   it) net, all through bubblewrap's `--unshare-all`. Without net the job has
 *   only its own loopback.
 * - A seccomp filter (seccomp.ts), handed to bubblewrap as a compiled BPF
 *   program with `--seccomp FD`: no nested user namespace or other namespace,
 *   no mount, no keyring, no ptrace, no kernel modules, bpf, perf or
 *   io_uring, and the rest of the calls container runtimes' default profile
 *   refuses. A machine where the filter cannot be compiled (no python3-seccomp)
 *   has no sandbox: the probe says so, and jobs are refused as without bubblewrap.
 * - An unprivileged uid 65534 whose processes the limits bind: bubblewrap
 *   always runs unprivileged, in a user namespace of its own whose uid 65534
 *   is, outside, the node's own uid or, when the node runs as root, 65534
 *   (the node starts bubblewrap as uid and gid 65534, no supplementary
 *   groups). Since Linux 5.14 RLIMIT_NPROC counts per (user namespace, uid),
 *   so the count is this job's processes only, not every uid-65534 process on
 *   the host or the other jobs running beside it; and host uid 0, which
 *   RLIMIT_NPROC exempts, never runs the job. Bubblewrap resolves every bind
 *   source by path as that uid, so a root node keeps workRoot and each run
 *   folder searchable by others (mode 0711; names are random and not listable).
 *   (A privileged bubblewrap dropping to 65534 through setpriv and `unshare
 *   --user` cannot be used with the filter: the filter, loaded by bubblewrap
 *   before that chain, refuses its unshare.)
 * - Limits, set with prlimit (util-linux) as the last step before the job's
 *   shell, after every namespace is made, so the parent levels of the count
 *   keep the node's own limits:
 *   - processes: RLIMIT_NPROC = resources.processes (threads count too);
 *   - memory: RLIMIT_DATA = resources.memoryBytes, per process. RLIMIT_DATA
 *     rather than RLIMIT_AS because runtimes reserve address space they never
 *     use (Node 20 does not start under RLIMIT_AS 512 MiB; it runs under
 *     RLIMIT_DATA 512 MiB and fails at a 1 GiB allocation). A cgroup would
 *     bound the whole job rather than each process, but here the cgroups are
 *     v1 and writable only by root, so it is not used: a job may hold up to
 *     processes x memoryBytes, plus /dev/shm (at most maxSandboxShmBytes);
 *   - disk: RLIMIT_FSIZE = the run's disk limit (disk.ts), so no single file
 *     passes it; the executor measures the whole and kills a run past it;
 *   - core dumps off (RLIMIT_CORE 0), so a crash leaves no core in /work;
 *   - time: the executor kills bubblewrap's process group at the job's
 *     timeout; `--die-with-parent` makes the sandbox's first process die with
 *     it, and the kernel kills every process of a pid namespace whose first
 *     process dies, so no process of the job survives (a job cannot escape it
 *     with setsid).
 *   - cpus are not enforced.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { accessSync, closeSync, constants as fsConstants, openSync } from "node:fs";
import {
  access,
  chmod,
  chown,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readlink,
  realpath,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, delimiter, dirname, isAbsolute, join } from "node:path";
import { type CompiledFilter, compileSeccompFilter, SeccompUnavailableError } from "./seccomp.ts";

/** The uid and gid a job runs as: "nobody", which owns nothing on the host. */
export const sandboxUid = 65534;
export const sandboxGid = 65534;
/** Where the work folder appears inside the sandbox: the cwd and HOME of every step. */
export const sandboxWorkPath = "/work";
/** /dev/shm is RAM; it gets the job's memory limit, but never more than this. */
export const maxSandboxShmBytes = 64 * 1024 * 1024;
/** How long the probe's trivial sandbox may take before bubblewrap counts as unusable. */
export const sandboxProbeTimeoutMs = 15_000;
/** Characters of bubblewrap's complaint kept in a probe's reason. */
export const maxProbeReasonChars = 1024;
/** Limits of the probe's own trivial sandbox: enough for `true`, small enough for any machine. */
export const probeProcesses = 64;
export const probeMemoryBytes = 256 * 1024 * 1024;
export const probeFileBytes = 1024 * 1024;
/** The probe's one step: fails unless the kernel reports the process under a seccomp filter (mode 2). */
export const seccompInForceStep = "grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status";
export const defaultBwrapPath = "bwrap";
/** The util-linux tool the sandbox chain sets its limits with, from the read-only /usr. */
export const prlimitPath = "/usr/bin/prlimit";
/** Where neutralWorkRoot puts run folders: a folder for temporary files kept on disk (FHS), unlike /tmp on many systems. */
export const neutralTempParent = "/var/tmp";
/** Hex characters of neutralWorkRoot's hash: enough that two data folders never share one. */
export const workRootHashChars = 16;
/** Mode of workRoot and of each run folder when bubblewrap runs as the job's uid: searchable, not listable. */
export const searchableFolderMode = 0o711;
/** The first file descriptor a plan's passed files get in bubblewrap (0-2 are stdio, 3 is the step status). */
export const firstPassedFd = 4;
/** coreutils' env: sets the job's environment last (see limitedDriver). */
export const envPath = "/usr/bin/env";
/** The PATH a step starts with (a job's env may replace it). */
export const sandboxPath = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

export const installHint =
  "install bubblewrap (`apt-get install bubblewrap` on Debian and Ubuntu, `dnf install bubblewrap` on Fedora)";

/** Top-level host paths that are either symlinks into /usr (merged /usr) or system folders of their own. */
const systemRootPaths = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/** Host /etc entries a job may read: the dynamic linker, alternatives, certificates, time zone. No secrets live here. */
const systemEtcPaths = [
  "/etc/alternatives",
  "/etc/ld.so.cache",
  "/etc/ld.so.conf",
  "/etc/ld.so.conf.d",
  "/etc/ssl",
  "/etc/ca-certificates",
  "/etc/pki",
  "/etc/localtime",
  "/etc/nsswitch.conf",
  "/etc/protocols",
  "/etc/services",
  "/etc/os-release",
];
/** Added when the job may use the network: name resolution. */
const networkEtcPaths = ["/etc/resolv.conf", "/etc/gai.conf", "/etc/host.conf"];

/**
 * Where, in a sandbox whose root is an image, the host's prlimit, env and the
 * folder of the host's dynamic loader (with the libraries they need) are
 * bound read-only: the chain that sets the limits runs the host's tools
 * (through the loader, since the image may have no libc at all), then execs
 * the image's /bin/sh. An image's own entry of this name is not shown.
 */
export const imageToolsPath = "/.cimesh";
/** The host's dynamic loader, per architecture: the first present is used (its real path's folder holds libc). */
const hostLoaderPaths = [
  "/lib64/ld-linux-x86-64.so.2",
  "/lib/ld-linux-aarch64.so.1",
  "/lib/ld-linux-armhf.so.3",
  "/lib/ld-linux-riscv64-lp64d.so.1",
  "/lib64/ld64.so.2",
];
/** Entries of an image's root and of its /etc bound one by one, together: each is a mount bubblewrap makes. */
export const maxImageBoundEntries = 1024;
/** Top-level entries of an image the sandbox makes itself, so the image's own are not bound. */
const imageManagedNames = new Set(["proc", "dev", "tmp", "work", "etc", imageToolsPath.slice(1)]);

/**
 * Runs each step with /bin/sh -c, in order, and stops at the first that fails,
 * with its exit code. It reports each step's start and exit on fd 3 (closed for
 * the steps themselves) so the executor can name the failing step without
 * writing anything into the job's own log. A job could still reach the pipe
 * through /proc (same uid), but it would only mislabel its own summary: the
 * outcome and exit code come from the process, not from this channel.
 */
export const stepDriverScript = [
  "i=0",
  'for step in "$@"; do',
  '  printf "start %d\\n" "$i" >&3',
  '  /bin/sh -c "$step" 3>&-',
  "  rc=$?",
  '  printf "exit %d %d\\n" "$i" "$rc" >&3',
  '  if [ "$rc" -ne 0 ]; then exit "$rc"; fi',
  "  i=$((i + 1))",
  "done",
  "exit 0",
].join("\n");

export interface SandboxLimits {
  readonly processes: number;
  readonly memoryBytes: number;
  /** The run's disk limit: no single file may grow past it (RLIMIT_FSIZE). */
  readonly fileBytes: number;
}

/**
 * The host folders of one run: `work` becomes /work, `tmp` becomes /tmp,
 * `etc` (never mounted) holds the generated /etc files and the compiled
 * seccomp filter, which bubblewrap reads from file descriptors.
 */
export interface RunFolders {
  readonly root: string;
  readonly work: string;
  readonly tmp: string;
  readonly etc: string;
}

export interface SandboxSpec {
  readonly bwrap: string;
  /**
   * The host folder of an unpacked image (node/images), read-only: it is the
   * job's root filesystem instead of the host's /usr. Absent or null: the
   * host's system, as for every job without an image.
   */
  readonly imageRoot?: string | null;
  readonly folders: RunFolders;
  /** The compiled seccomp filter, written where sandboxPlan expects it (writeSeccompFilter). */
  readonly seccompFile: string;
  readonly network: boolean;
  readonly limits: SandboxLimits;
  readonly env: Readonly<Record<string, string>>;
  readonly steps: readonly string[];
}

export interface SpawnPlan {
  readonly file: string;
  readonly args: readonly string[];
  /** Set when the process itself must start as the sandbox uid (unsandboxed runs by root). */
  readonly uid: number | null;
  /**
   * Whether to kill the process group once its first process exits. A bare
   * run needs it (background processes would outlive the job); in the sandbox
   * the pid namespace is gone by then.
   */
  readonly sweepGroupOnExit: boolean;
  readonly gid: number | null;
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /** Files opened read-only and handed over as file descriptors firstPassedFd, firstPassedFd + 1, ... in order. */
  readonly passFiles: readonly string[];
}

export interface SandboxProbe {
  readonly ok: boolean;
  readonly reason: string;
  /** The compiled seccomp filter every sandboxed run loads; null when there is no sandbox. */
  readonly seccomp?: CompiledFilter | null;
}

export interface ProbeOptions {
  readonly workRoot: string;
  readonly bwrapPath?: string;
  /** Compiles the seccomp filter; default compileSeccompFilter (libseccomp through python3-seccomp). */
  readonly compileFilter?: () => Promise<CompiledFilter>;
}

export function runsAsRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

function limitArgs(limits: SandboxLimits): string[] {
  return [
    `--nproc=${limits.processes}:${limits.processes}`,
    `--data=${limits.memoryBytes}:${limits.memoryBytes}`,
    `--fsize=${limits.fileBytes}:${limits.fileBytes}`,
    "--core=0:0",
  ];
}

/**
 * The job's shell under its limits: the tail of every chain, sandboxed or not.
 * The job's environment is set here, by `env -i`, and not on bubblewrap: the
 * tools before it (bubblewrap, prlimit) must not see a job's LD_PRELOAD or
 * LD_LIBRARY_PATH.
 */
function limitedDriver(
  limits: SandboxLimits,
  env: Readonly<Record<string, string>>,
  steps: readonly string[],
  tools: HostTools = { prlimit: [prlimitPath], env: [envPath] },
): string[] {
  const assignments = Object.entries(env).map(([name, value]) => `${name}=${value}`);
  return [
    ...tools.prlimit,
    ...limitArgs(limits),
    "--",
    ...tools.env,
    "-i",
    ...assignments,
    "/bin/sh",
    "-c",
    stepDriverScript,
    "cimesh-job",
    ...steps,
  ];
}

/** How the limit chain starts prlimit and env: directly on the host's system, through the host's loader in an image. */
interface HostTools {
  readonly prlimit: readonly string[];
  readonly env: readonly string[];
}

/** The host's dynamic loader (its real path), or null where none of hostLoaderPaths is present. */
async function hostLoader(): Promise<string | null> {
  for (const path of hostLoaderPaths) {
    try {
      return await realpath(path);
    } catch {
      // Not this architecture's: try the next.
    }
  }
  return null;
}

/** A job names an image, but this host cannot run the limit chain inside one. */
export class ImageSandboxError extends Error {}

/**
 * The mounts of a sandbox whose root is the image at imageRoot: each
 * top-level entry of the image bound read-only (those the sandbox makes
 * itself aside), each entry of its /etc bound read-only into the sandbox's own
 * /etc (so the generated account files and, with network, the host's name
 * resolution files sit beside them), and the host's tools at imageToolsPath.
 */
async function imageRootArgs(
  imageRoot: string,
  network: boolean,
): Promise<{ readonly args: string[]; readonly tools: HostTools }> {
  const loader = await hostLoader();
  if (loader === null) {
    throw new ImageSandboxError(
      `a job with an image needs the host's dynamic loader (one of ${hostLoaderPaths.join(", ")}) to set its limits; none is here`,
    );
  }
  const args: string[] = [];
  for (const name of (await readdir(imageRoot)).sort()) {
    if (imageManagedNames.has(name)) continue;
    args.push("--ro-bind", join(imageRoot, name), `/${name}`);
  }
  args.push("--perms", "0755", "--dir", "/etc");
  const ownEtc = new Set<string>([
    ...generatedEtcNames,
    ...(network ? networkEtcPaths.map((path) => basename(path)) : []),
  ]);
  const imageEtc = join(imageRoot, "etc");
  const etcNames = await readdir(imageEtc).catch(() => [] as string[]);
  const bound = args.length / 3 + etcNames.length;
  if (bound > maxImageBoundEntries) {
    throw new ImageSandboxError(
      `image ${basename(imageRoot)}: expected at most ${maxImageBoundEntries} entries in its root and /etc together ` +
        `(each is a mount), got ${bound}`,
    );
  }
  for (const name of etcNames.sort()) {
    if (!ownEtc.has(name)) args.push("--ro-bind", join(imageEtc, name), `/etc/${name}`);
  }
  if (network) for (const path of networkEtcPaths) args.push("--ro-bind-try", path, path);
  const lib = `${imageToolsPath}/lib`;
  const viaLoader = (tool: string): string[] => [`${lib}/${basename(loader)}`, "--library-path", lib, tool];
  args.push("--ro-bind", dirname(loader), lib);
  args.push("--ro-bind", prlimitPath, `${imageToolsPath}/prlimit`, "--ro-bind", envPath, `${imageToolsPath}/env`);
  return {
    args,
    tools: { prlimit: viaLoader(`${imageToolsPath}/prlimit`), env: viaLoader(`${imageToolsPath}/env`) },
  };
}

/** Mirrors the host's /bin, /lib... : a symlink stays a symlink (merged /usr), a real folder is bound read-only. */
async function systemRootArgs(): Promise<string[]> {
  const args: string[] = [];
  for (const path of systemRootPaths) {
    try {
      const info = await lstat(path);
      if (info.isSymbolicLink()) args.push("--symlink", await readlink(path), path);
      else if (info.isDirectory()) args.push("--ro-bind", path, path);
    } catch {
      // Absent on this host (lib32, libx32 usually): nothing to mirror.
    }
  }
  return args;
}

/** The /etc files generated for every run (writeSandboxEtc), copied into the sandbox. */
const generatedEtcNames = ["passwd", "group", "hosts"] as const;

/** The minimal account files a job sees: tools such as git and ssh look the uid up. */
export async function writeSandboxEtc(etc: string): Promise<void> {
  await mkdir(etc, { recursive: true, mode: 0o755 });
  await writeFile(
    join(etc, "passwd"),
    `root:x:0:0:root:/:/usr/sbin/nologin\nnobody:x:${sandboxUid}:${sandboxGid}:cimesh job:${sandboxWorkPath}:/bin/sh\n`,
  );
  await writeFile(join(etc, "group"), `root:x:0:\nnogroup:x:${sandboxGid}:\n`);
  await writeFile(join(etc, "hosts"), "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
}

/**
 * A step's environment: a minimal PATH, HOME (the work folder) and TMPDIR,
 * then the job's env, then the run's (shard index and such), later layers
 * winning. Nothing of the node's own environment gets in.
 */
export function sandboxEnv(
  paths: { readonly home: string; readonly tmp: string },
  ...layers: Readonly<Record<string, string>>[]
): Record<string, string> {
  return Object.assign({ PATH: sandboxPath, HOME: paths.home, TMPDIR: paths.tmp }, ...layers);
}

/** Where a run's compiled seccomp filter is written, and read from by bubblewrap. */
export function seccompFileOf(folders: RunFolders): string {
  return join(folders.etc, "seccomp.bpf");
}

export async function writeSeccompFilter(folders: RunFolders, filter: CompiledFilter): Promise<string> {
  const path = seccompFileOf(folders);
  await writeFile(path, filter.program, { mode: 0o600 });
  return path;
}

/**
 * The bubblewrap command line for one run. The node passes bubblewrap the
 * filter and the generated /etc files as file descriptors (passFiles), so
 * none of them is a mount the job could read a host path from.
 */
export async function sandboxPlan(spec: SandboxSpec): Promise<SpawnPlan> {
  const { folders, network, limits } = spec;
  const passFiles = [spec.seccompFile, ...generatedEtcNames.map((name) => join(folders.etc, name))];
  const fdOf = (index: number) => String(firstPassedFd + index);
  const args: string[] = ["--unshare-all"];
  if (network) args.push("--share-net");
  args.push("--uid", String(sandboxUid), "--gid", String(sandboxGid));
  args.push("--as-pid-1", "--hostname", "cimesh", "--die-with-parent", "--new-session");
  let tools: HostTools | undefined;
  if (spec.imageRoot !== undefined && spec.imageRoot !== null) {
    const image = await imageRootArgs(spec.imageRoot, network);
    args.push(...image.args);
    tools = image.tools;
  } else {
    args.push("--ro-bind", "/usr", "/usr", ...(await systemRootArgs()));
    // bubblewrap makes missing parents mode 0700 and owned by root, which the job could not read.
    args.push("--perms", "0755", "--dir", "/etc");
    for (const path of [...systemEtcPaths, ...(network ? networkEtcPaths : [])]) args.push("--ro-bind-try", path, path);
  }
  for (const [index, name] of generatedEtcNames.entries()) {
    args.push("--perms", "0644", "--file", fdOf(index + 1), `/etc/${name}`);
  }
  args.push("--proc", "/proc", "--dev", "/dev");
  const shmBytes = Math.min(limits.memoryBytes, maxSandboxShmBytes);
  args.push("--perms", "1777", "--size", String(shmBytes), "--tmpfs", "/dev/shm");
  args.push("--bind", folders.work, sandboxWorkPath, "--bind", folders.tmp, "/tmp");
  args.push("--remount-ro", "/dev", "--remount-ro", "/");
  args.push("--seccomp", fdOf(0));
  args.push("--chdir", sandboxWorkPath, "--clearenv", "--");
  args.push(...limitedDriver(limits, spec.env, spec.steps, tools));
  // bubblewrap gets none of the node's environment, and the job gets only its own, through `env -i` (limitedDriver).
  // Run by root, the node starts bubblewrap as the job's uid: bubblewrap then makes an unprivileged user namespace.
  const root = runsAsRoot();
  return {
    file: spec.bwrap,
    args,
    uid: root ? sandboxUid : null,
    gid: root ? sandboxGid : null,
    sweepGroupOnExit: false,
    cwd: "/",
    env: { PATH: "/usr/bin:/bin" },
    passFiles,
  };
}

/**
 * The explicit opt-out: the same driver and limits without namespaces. Run by
 * root, the job still starts as uid 65534 (libuv changes into the work folder
 * before it drops root), so the process limit binds; it then counts every
 * uid-65534 process on the host. Files the uid can read on the host, it can read.
 */
export function unsandboxedPlan(spec: Omit<SandboxSpec, "bwrap" | "network" | "seccompFile">): SpawnPlan {
  const root = runsAsRoot();
  const [file, ...args] = limitedDriver(spec.limits, spec.env, spec.steps);
  return {
    file: file as string,
    args,
    uid: root ? sandboxUid : null,
    gid: root ? sandboxGid : null,
    sweepGroupOnExit: true,
    cwd: spec.folders.work,
    env: {},
    passFiles: [],
  };
}

/**
 * A workRoot that tells a job nothing: a folder under /var/tmp (os.tmpdir()
 * where there is none) named by a hash of `seed` (the node's data folder), so
 * the same node finds it again and two nodes never share one. The sandbox's
 * mountinfo shows this path, never the seed.
 */
export function neutralWorkRoot(seed: string): string {
  let parent = neutralTempParent;
  try {
    accessSync(parent, fsConstants.W_OK | fsConstants.X_OK);
  } catch {
    parent = tmpdir();
  }
  const hash = createHash("sha256").update(seed).digest("hex").slice(0, workRootHashChars);
  return join(parent, `cimesh-work-${hash}`);
}

/** workRoot is not a folder this node can keep run folders in safely. */
export class WorkRootError extends Error {}

/**
 * Makes workRoot (mode 0700) if missing and checks that it is this user's own
 * folder, not a link another user left in a shared folder such as /var/tmp.
 * When bubblewrap runs as the job's uid (a root node), workRoot is made
 * searchable by others (0711) so bubblewrap can reach each run's folders.
 */
export async function ensureWorkRoot(workRoot: string): Promise<void> {
  // Folders it makes above workRoot get the same mode, so bubblewrap can pass through them.
  await mkdir(workRoot, { recursive: true, mode: runsAsRoot() ? searchableFolderMode : 0o700 });
  const info = await lstat(workRoot);
  const uid = typeof process.getuid === "function" ? process.getuid() : info.uid;
  if (!info.isDirectory() || info.uid !== uid || (info.mode & 0o022) !== 0) {
    throw new WorkRootError(
      `workRoot ${workRoot}: expected a folder owned by this user (uid ${uid}) that no one else may write to, ` +
        `got ${info.isSymbolicLink() ? "a symlink" : info.isDirectory() ? "a folder" : "a file"} of uid ${info.uid}, ` +
        `mode ${(info.mode & 0o777).toString(8)}: remove it, or choose another workRoot`,
    );
  }
  if (runsAsRoot()) await chmod(workRoot, searchableFolderMode);
}

/** Creates the folders of one run under workRoot; the caller removes `root` when the run ends. */
export async function makeRunFolders(workRoot: string): Promise<RunFolders> {
  await ensureWorkRoot(workRoot);
  const root = await mkdtemp(join(workRoot, "run-"));
  const folders = { root, work: join(root, "work"), tmp: join(root, "tmp"), etc: join(root, "etc") };
  await mkdir(folders.work, { mode: 0o700 });
  await mkdir(folders.tmp, { mode: 0o700 });
  await writeSandboxEtc(folders.etc);
  if (runsAsRoot()) {
    await chmod(folders.etc, 0o700);
    await chmod(root, searchableFolderMode);
    await chown(folders.work, sandboxUid, sandboxGid);
    await chown(folders.tmp, sandboxUid, sandboxGid);
  }
  return folders;
}

/** A path to run bubblewrap from, or null: a name is looked up on the node's PATH, as a shell would. */
export async function locateExecutable(pathOrName: string): Promise<string | null> {
  const candidates = isAbsolute(pathOrName)
    ? [pathOrName]
    : pathOrName.includes("/")
      ? [join(process.cwd(), pathOrName)]
      : (process.env.PATH ?? "/usr/bin:/bin")
          .split(delimiter)
          .filter((dir) => dir !== "")
          .map((dir) => join(dir, pathOrName));
  for (const candidate of candidates) {
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // Not here: try the next folder.
    }
  }
  return null;
}

/**
 * Starts a plan in its own process group, its passFiles open as file
 * descriptors firstPassedFd, firstPassedFd + 1, ... (the node's copies are
 * closed once the child holds them). Synchronous, so the caller attaches its
 * listeners before any event of the child can fire.
 */
export function startPlan(plan: SpawnPlan): ChildProcess {
  const fds: number[] = [];
  try {
    for (const path of plan.passFiles) fds.push(openSync(path, "r"));
    return spawn(plan.file, [...plan.args], {
      cwd: plan.cwd,
      env: { ...plan.env },
      stdio: ["ignore", "pipe", "pipe", "pipe", ...fds],
      // Its own process group, so one kill reaches every process of it that did not leave the group.
      detached: true,
      ...(plan.uid === null ? {} : { uid: plan.uid }),
      ...(plan.gid === null ? {} : { gid: plan.gid }),
    });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** Runs a plan to its end and collects what it printed; used by the probe only. */
function runToEnd(
  plan: SpawnPlan,
  timeoutMs: number,
): Promise<{ code: number | null; output: string; status: string }> {
  return new Promise((resolve) => {
    const child = startPlan(plan);
    let output = "";
    let status = "";
    const keep = (data: Buffer) => {
      if (output.length < maxProbeReasonChars) output += data.toString("utf8");
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    child.stdio[3]?.on("data", (data: Buffer) => {
      status += data.toString("utf8");
    });
    const timer = setTimeout(() => {
      output += `(no answer within ${timeoutMs} ms)`;
      if (child.pid !== undefined) killGroup(child.pid);
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve({ code: null, output: error.message, status });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output: output.trim().slice(0, maxProbeReasonChars), status });
    });
  });
}

/** SIGKILL to a detached child's whole process group; a group already gone is fine. */
export function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/**
 * Makes one real sandbox, with the same command line a job gets, and runs
 * `true` in it: if that works, jobs can run. Says why not otherwise, and what
 * to do about it.
 */
export async function probeSandbox(options: ProbeOptions): Promise<SandboxProbe> {
  const wanted = options.bwrapPath ?? defaultBwrapPath;
  const bwrap = await locateExecutable(wanted);
  if (bwrap === null) {
    return {
      ok: false,
      reason: `bubblewrap (${wanted}) was not found or is not executable: ${installHint}`,
      seccomp: null,
    };
  }
  for (const tool of [prlimitPath, envPath]) {
    if ((await locateExecutable(tool)) === null) {
      return {
        ok: false,
        reason: `${tool} was not found: install util-linux, which the sandbox uses to set limits`,
        seccomp: null,
      };
    }
  }
  let seccomp: CompiledFilter;
  try {
    seccomp = await (options.compileFilter ?? compileSeccompFilter)();
  } catch (error) {
    if (!(error instanceof SeccompUnavailableError)) throw error;
    return { ok: false, reason: error.message, seccomp: null };
  }
  let folders: RunFolders;
  try {
    folders = await makeRunFolders(options.workRoot);
  } catch (error) {
    return {
      ok: false,
      reason: `cannot make a run folder under ${options.workRoot} (${(error as Error).message}): choose a writable workRoot`,
      seccomp: null,
    };
  }
  try {
    const plan = await sandboxPlan({
      bwrap,
      folders,
      seccompFile: await writeSeccompFilter(folders, seccomp),
      network: false,
      limits: { processes: probeProcesses, memoryBytes: probeMemoryBytes, fileBytes: probeFileBytes },
      env: sandboxEnv({ home: sandboxWorkPath, tmp: "/tmp" }),
      // The filter is in force: the kernel reports mode 2 (filter) for the job's process.
      steps: [seccompInForceStep],
    });
    const { code, output, status } = await runToEnd(plan, sandboxProbeTimeoutMs);
    if (code === 0 && status.includes("exit 0 0")) {
      const missing =
        seccomp.unknown.length === 0 ? "" : `; this libseccomp does not know ${seccomp.unknown.join(", ")}`;
      return { ok: true, reason: `bubblewrap at ${bwrap} works, with its seccomp filter${missing}`, seccomp };
    }
    return {
      ok: false,
      seccomp: null,
      reason:
        `bubblewrap at ${bwrap} could not make a sandbox (exit ${code}: ${output || "no message"}); ` +
        "check that unprivileged user namespaces are allowed (sysctl kernel.unprivileged_userns_clone=1 and " +
        "user.max_user_namespaces > 0; on Ubuntu 23.10 and later kernel.apparmor_restrict_unprivileged_userns=0)" +
        (runsAsRoot() ? `, and that uid ${sandboxUid} can search every folder above workRoot` : ""),
    };
  } finally {
    await removeRunFolders(folders.root).catch(() => undefined);
  }
}

/**
 * Removes a run's folders whatever the job left in them. Root removes
 * anything; anyone else cannot empty a folder the job made read-only (chmod
 * 500), so on a refusal every folder is made writable and the removal retried.
 */
export async function removeRunFolders(root: string): Promise<void> {
  try {
    await rm(root, { recursive: true, force: true });
    return;
  } catch {
    await makeWritable(root);
  }
  await rm(root, { recursive: true, force: true });
}

async function makeWritable(dir: string): Promise<void> {
  await chmod(dir, 0o700).catch(() => undefined);
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) if (entry.isDirectory()) await makeWritable(join(dir, entry.name));
}
