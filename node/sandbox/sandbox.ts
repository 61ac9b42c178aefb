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
 *   (generated passwd, group and hosts; the host's linker cache, alternatives
 *   and certificates; resolv.conf only with network), new /proc and /dev, a
 *   size-bounded tmpfs /dev/shm, and two host folders of this run only: the
 *   work folder as /work (the cwd and HOME) and a private /tmp. The root and
 *   /dev are remounted read-only last, because bubblewrap's own tmpfs for them
 *   is writable by the job and unbounded in size otherwise. Nothing else of
 *   the host is visible: not the node's data folder, keys, /root or /home.
 * - Namespaces: pid, ipc, uts, cgroup and (unless the job may use it) net.
 *   Without net the job has only its own loopback.
 * - An unprivileged uid 65534 whose processes the limits bind:
 *   RLIMIT_NPROC does not bind a task whose real uid is host root (the kernel
 *   exempts INIT_USER), and bubblewrap's `--uid 65534` run by root maps the job
 *   to host uid 0. So:
 *   - run by root: bubblewrap runs privileged (no user namespace, paths
 *     resolved as root, so any workRoot works), keeps only CAP_SETUID and
 *     CAP_SETGID, and the job's chain drops to the real uid/gid 65534 with
 *     setpriv (no groups, no capabilities, no_new_privs), then enters a user
 *     namespace of its own with `unshare --user` mapping 65534 to itself: since
 *     Linux 5.14 RLIMIT_NPROC counts per (user namespace, uid), so the count is
 *     this job's processes only, not every uid-65534 process on the host or the
 *     other jobs running beside it. (Spawning bubblewrap itself as uid 65534
 *     was measured too: it works, but bubblewrap resolves every bind source,
 *     --bind-fd included, by path as that uid, so a workRoot under a private
 *     folder such as /root/.cimesh cannot be mounted.)
 *   - run by anyone else: bubblewrap runs unprivileged with `--unshare-all
 *     --uid 65534`, a user namespace whose uid 65534 is the volunteer's own
 *     uid outside; the limit again counts the sandbox's processes only.
 * - Limits, set with prlimit (util-linux) as the last step before the job's
 *   shell, after every namespace is made, so the parent levels of the count
 *   keep the node's own limits:
 *   - processes: RLIMIT_NPROC = resources.processes (threads count too; in the
 *     unprivileged case bubblewrap's own init process counts as one);
 *   - memory: RLIMIT_DATA = resources.memoryBytes, per process. RLIMIT_DATA
 *     rather than RLIMIT_AS because runtimes reserve address space they never
 *     use (Node 20 does not start under RLIMIT_AS 512 MiB; it runs under
 *     RLIMIT_DATA 512 MiB and fails at a 1 GiB allocation). A cgroup would
 *     bound the whole job rather than each process, but here the cgroups are
 *     v1 and writable only by root, so it is not used: a job may hold up to
 *     processes x memoryBytes, plus /dev/shm (at most maxSandboxShmBytes);
 *   - core dumps off (RLIMIT_CORE 0), so a crash leaves no core in /work;
 *   - time: the executor kills bubblewrap's process group at the job's
 *     timeout; `--die-with-parent` makes the sandbox's init die with it, and
 *     the kernel kills every process of a pid namespace whose init dies, so no
 *     process of the job survives (a job cannot escape it with setsid).
 *   - disk and cpus are not enforced yet: /work and /tmp are host folders.
 */
import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access, chmod, chown, lstat, mkdir, mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { delimiter, isAbsolute, join } from "node:path";

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
export const defaultBwrapPath = "bwrap";
/** util-linux tools the sandbox chain runs from the read-only /usr. */
export const prlimitPath = "/usr/bin/prlimit";
export const setprivPath = "/usr/bin/setpriv";
export const unsharePath = "/usr/bin/unshare";
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
}

/** The host folders of one run: `work` becomes /work, `tmp` becomes /tmp, `etc` holds the generated /etc files. */
export interface RunFolders {
  readonly root: string;
  readonly work: string;
  readonly tmp: string;
  readonly etc: string;
}

export interface SandboxSpec {
  readonly bwrap: string;
  readonly folders: RunFolders;
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
}

export interface SandboxProbe {
  readonly ok: boolean;
  readonly reason: string;
}

export interface ProbeOptions {
  readonly workRoot: string;
  readonly bwrapPath?: string;
}

export function runsAsRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

function limitArgs(limits: SandboxLimits): string[] {
  return [
    `--nproc=${limits.processes}:${limits.processes}`,
    `--data=${limits.memoryBytes}:${limits.memoryBytes}`,
    "--core=0:0",
  ];
}

/**
 * The job's shell under its limits: the tail of every chain, sandboxed or not.
 * The job's environment is set here, by `env -i`, and not on bubblewrap: the
 * tools before it (setpriv runs as root with CAP_SETUID) must not see a job's
 * LD_PRELOAD or LD_LIBRARY_PATH.
 */
function limitedDriver(
  limits: SandboxLimits,
  env: Readonly<Record<string, string>>,
  steps: readonly string[],
): string[] {
  const assignments = Object.entries(env).map(([name, value]) => `${name}=${value}`);
  return [
    prlimitPath,
    ...limitArgs(limits),
    "--",
    envPath,
    "-i",
    ...assignments,
    "/bin/sh",
    "-c",
    stepDriverScript,
    "cimesh-job",
    ...steps,
  ];
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

/** The bubblewrap command line for one run. */
export async function sandboxPlan(spec: SandboxSpec): Promise<SpawnPlan> {
  const { folders, network, limits } = spec;
  const root = runsAsRoot();
  const args: string[] = [];
  if (root) {
    args.push("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try");
    if (!network) args.push("--unshare-net");
    args.push("--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID");
  } else {
    args.push("--unshare-all");
    if (network) args.push("--share-net");
    args.push("--uid", String(sandboxUid), "--gid", String(sandboxGid));
  }
  args.push("--hostname", "cimesh", "--die-with-parent", "--new-session");
  args.push("--ro-bind", "/usr", "/usr", ...(await systemRootArgs()));
  // bubblewrap makes missing parents mode 0700 and owned by root, which the job could not read.
  args.push("--perms", "0755", "--dir", "/etc");
  for (const path of [...systemEtcPaths, ...(network ? networkEtcPaths : [])]) args.push("--ro-bind-try", path, path);
  for (const name of ["passwd", "group", "hosts"]) args.push("--ro-bind", join(folders.etc, name), `/etc/${name}`);
  args.push("--proc", "/proc", "--dev", "/dev");
  const shmBytes = Math.min(limits.memoryBytes, maxSandboxShmBytes);
  args.push("--perms", "1777", "--size", String(shmBytes), "--tmpfs", "/dev/shm");
  args.push("--bind", folders.work, sandboxWorkPath, "--bind", folders.tmp, "/tmp");
  args.push("--remount-ro", "/dev", "--remount-ro", "/");
  args.push("--chdir", sandboxWorkPath, "--clearenv", "--");
  if (root) {
    args.push(
      setprivPath,
      `--reuid=${sandboxUid}`,
      `--regid=${sandboxGid}`,
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      "--",
      unsharePath,
      "--user",
      `--map-user=${sandboxUid}`,
      `--map-group=${sandboxGid}`,
      "--",
    );
  }
  args.push(...limitedDriver(limits, spec.env, spec.steps));
  // bubblewrap gets none of the node's environment, and the job gets only its own, through `env -i` (limitedDriver).
  return {
    file: spec.bwrap,
    args,
    uid: null,
    gid: null,
    sweepGroupOnExit: false,
    cwd: "/",
    env: { PATH: "/usr/bin:/bin" },
  };
}

/**
 * The explicit opt-out: the same driver and limits without namespaces. Run by
 * root, the job still starts as uid 65534 (libuv changes into the work folder
 * before it drops root), so the process limit binds; it then counts every
 * uid-65534 process on the host. Files the uid can read on the host, it can read.
 */
export function unsandboxedPlan(spec: Omit<SandboxSpec, "bwrap" | "network">): SpawnPlan {
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
  };
}

/** Creates the folders of one run under workRoot; the caller removes `root` when the run ends. */
export async function makeRunFolders(workRoot: string): Promise<RunFolders> {
  await mkdir(workRoot, { recursive: true, mode: 0o700 });
  const root = await mkdtemp(join(workRoot, "run-"));
  const folders = { root, work: join(root, "work"), tmp: join(root, "tmp"), etc: join(root, "etc") };
  await mkdir(folders.work, { mode: 0o700 });
  await mkdir(folders.tmp, { mode: 0o700 });
  await writeSandboxEtc(folders.etc);
  if (runsAsRoot()) {
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
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here: try the next folder.
    }
  }
  return null;
}

/** Runs a plan to its end and collects what it printed; used by the probe only. */
function runToEnd(
  plan: SpawnPlan,
  timeoutMs: number,
): Promise<{ code: number | null; output: string; status: string }> {
  return new Promise((resolve) => {
    const child = spawn(plan.file, [...plan.args], {
      cwd: plan.cwd,
      env: { ...plan.env },
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      detached: true,
      ...(plan.uid === null ? {} : { uid: plan.uid }),
      ...(plan.gid === null ? {} : { gid: plan.gid }),
    });
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
    return { ok: false, reason: `bubblewrap (${wanted}) was not found or is not executable: ${installHint}` };
  }
  for (const tool of runsAsRoot() ? [prlimitPath, envPath, setprivPath, unsharePath] : [prlimitPath, envPath]) {
    if ((await locateExecutable(tool)) === null) {
      return { ok: false, reason: `${tool} was not found: install util-linux, which the sandbox uses to set limits` };
    }
  }
  let folders: RunFolders;
  try {
    folders = await makeRunFolders(options.workRoot);
  } catch (error) {
    return {
      ok: false,
      reason: `cannot make a run folder under ${options.workRoot} (${(error as Error).message}): choose a writable workRoot`,
    };
  }
  try {
    const plan = await sandboxPlan({
      bwrap,
      folders,
      network: false,
      limits: { processes: probeProcesses, memoryBytes: probeMemoryBytes },
      env: sandboxEnv({ home: sandboxWorkPath, tmp: "/tmp" }),
      steps: ["true"],
    });
    const { code, output, status } = await runToEnd(plan, sandboxProbeTimeoutMs);
    if (code === 0 && status.includes("exit 0 0")) return { ok: true, reason: `bubblewrap at ${bwrap} works` };
    return {
      ok: false,
      reason:
        `bubblewrap at ${bwrap} could not make a sandbox (exit ${code}: ${output || "no message"}); ` +
        (runsAsRoot()
          ? "check that the kernel allows mount and pid namespaces (in a container: run it privileged, or with CAP_SYS_ADMIN and no seccomp filter on unshare)"
          : "check that unprivileged user namespaces are allowed (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 23.10 and later kernel.apparmor_restrict_unprivileged_userns=0), or run the node as root"),
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
