/**
 * The sandbox's seccomp filter: the system calls a job may not make, and the
 * compiled BPF program bubblewrap loads with `--seccomp FD` right before it
 * runs the job's first process (every process of the job inherits it).
 *
 * The list follows the default profile container runtimes use, moby/profiles'
 * seccomp/default.json (commit cd3bed8061c7b7378b61fc6827c7885779417a75, the
 * profile Docker, containerd and Podman ship): every call that profile gives a
 * container without added capabilities no rule for, or allows only with a
 * capability a job never has (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_BOOT,
 * CAP_SYS_PTRACE, CAP_SYS_RAWIO, CAP_SYS_TIME, CAP_SYS_PACCT, CAP_SYSLOG,
 * CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_CHROOT,
 * CAP_SYS_TTY_CONFIG), is refused here with EPERM. Where this filter differs:
 *
 * - It is a deny list (anything not named runs), where the profile allows a
 *   list and refuses the rest: a call newer than the libseccomp that compiles
 *   the filter then still works (glibc falls back only on ENOSYS, and an EPERM
 *   on, say, faccessat2 broke builds under older allow lists). The calls that
 *   matter are named.
 * - ptrace, process_vm_readv and process_vm_writev are refused, where the
 *   profile allows them on kernels since 4.8: a job has no business reading
 *   another process's memory, and debuggers inside a job are not supported.
 * - set_mempolicy, get_mempolicy, mbind and set_mempolicy_home_node (the
 *   profile's CAP_SYS_NICE group) stay allowed: they touch only the caller's
 *   own memory, and numerical libraries call them. migrate_pages and
 *   move_pages, which act on other processes, are refused.
 * - personality(2) is not narrowed to the profile's few values.
 * - socket(AF_VSOCK) is refused: vsock is not confined by a network namespace
 *   and reaches the hypervisor of a virtual machine.
 *
 * The filter is compiled by libseccomp (through its Python binding, Debian's
 * python3-seccomp) for the machine's own architecture plus its 32-bit
 * compatibility one (x86 on x86_64, arm on aarch64), so a 32-bit binary meets
 * the same rules; calls of any other architecture, x32 included, kill the
 * thread. Nothing here is assembled by hand.
 */
import { spawn } from "node:child_process";
import { CimeshError } from "../../crypto/index.ts";

/** The Python that compiles the filter: the system's, where Debian installs python3-seccomp. */
export const seccompPythonPath = "/usr/bin/python3";
/** How long compiling the filter may take. */
export const seccompCompileTimeoutMs = 15_000;
/** Bytes of the compiler's output accepted: a filter of these rules is a few hundred instructions of 8 bytes. */
export const maxSeccompFilterBytes = 64 * 1024;
/** Characters of the compiler's complaint kept in an error. */
export const maxCompilerMessageChars = 1024;
/** Bytes of one BPF instruction (struct sock_filter). */
export const bpfInstructionBytes = 8;

export const seccompInstallHint =
  "install libseccomp's Python binding (`apt-get install python3-seccomp` on Debian and Ubuntu, " +
  "`dnf install python3-libseccomp` on Fedora), which compiles the sandbox's seccomp filter";

const eperm = 1;
const enosys = 38;

/** A comparison of one argument, as libseccomp's Python binding takes it. */
interface ArgRule {
  readonly index: number;
  readonly op: "EQ" | "MASKED_EQ";
  readonly values: readonly number[];
}

export interface SeccompRule {
  readonly name: string;
  readonly errno: number;
  /** All must hold for the rule to apply; none: every call is refused. */
  readonly args?: readonly ArgRule[];
}

const refused = (names: readonly string[]): SeccompRule[] => names.map((name) => ({ name, errno: eperm }));

/**
 * clone(2)'s flags that make a namespace: CLONE_NEWNS, CLONE_NEWCGROUP,
 * CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET (the
 * profile's mask 0x7E020000). One rule per flag: a clone with any of them is
 * refused, every other clone (fork, threads) runs.
 */
export const cloneNamespaceFlags = [
  0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000,
] as const;
/** AF_VSOCK, the address family of virtual machine sockets. */
export const vsockFamily = 40;

export const seccompRules: readonly SeccompRule[] = [
  // New namespaces, a nested user namespace first of all (`unshare -r` would make the job root of its own).
  ...refused(["unshare", "setns"]),
  ...cloneNamespaceFlags.map((flag) => ({
    name: "clone",
    errno: eperm,
    args: [{ index: 0, op: "MASKED_EQ" as const, values: [flag, flag] }],
  })),
  // clone3 passes its flags in memory, where a filter cannot look: ENOSYS makes the C library fall back to clone.
  { name: "clone3", errno: enosys },
  // Mounts and the root.
  ...refused(["mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree"]),
  ...refused(["fsopen", "fsconfig", "fsmount", "fspick"]),
  // The kernel keyring, shared by everything of the same uid outside the sandbox's namespaces.
  ...refused(["add_key", "request_key", "keyctl"]),
  // Other processes: tracing, reading and writing their memory, taking their files, moving their pages.
  ...refused(["ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp"]),
  ...refused(["migrate_pages", "move_pages"]),
  // The kernel and the machine: modules, kexec, reboot, swap, clocks, accounting, quotas, the kernel log.
  ...refused(["init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"]),
  ...refused(["kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "syslog", "vhangup"]),
  ...refused(["settimeofday", "clock_settime", "stime", "sethostname", "setdomainname", "iopl", "ioperm"]),
  ...refused(["quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "_sysctl", "uselib", "ustat", "sysfs"]),
  // Files by handle (bypasses the mount namespace) and filesystem-wide watches.
  ...refused(["open_by_handle_at", "fanotify_init"]),
  // Large kernel attack surfaces a build does not need.
  ...refused(["bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register"]),
  { name: "socket", errno: eperm, args: [{ index: 0, op: "EQ", values: [vsockFamily] }] },
];

/**
 * Reads the rules as JSON on stdin, writes the BPF program on stdout, and the
 * names this libseccomp does not know (one per line, "unknown NAME") on stderr.
 * A name known but absent on one of the architectures is left out there by
 * libseccomp itself.
 */
export const seccompCompilerScript = `
import json, sys
try:
    import seccomp
except ImportError as error:
    sys.stderr.write("no-binding %s\\n" % error)
    sys.exit(3)
spec = json.load(sys.stdin)
f = seccomp.SyscallFilter(seccomp.ALLOW)
native = seccomp.system_arch()
compat = {int(seccomp.Arch.X86_64): seccomp.Arch.X86, int(seccomp.Arch.AARCH64): seccomp.Arch.ARM}
if native in compat:
    f.add_arch(compat[native])
for rule in spec["rules"]:
    try:
        args = [seccomp.Arg(a["index"], getattr(seccomp, a["op"]), *a["values"]) for a in rule.get("args", [])]
        f.add_rule(seccomp.ERRNO(rule["errno"]), rule["name"], *args)
    except Exception as error:
        sys.stderr.write("unknown %s %s\\n" % (rule["name"], error))
f.export_bpf(sys.stdout)
`;

/** libseccomp cannot be reached, or could not compile the filter. */
export class SeccompUnavailableError extends CimeshError {
  constructor(reason: string) {
    super("ERR_SECCOMP_UNAVAILABLE", `expected a compiled seccomp filter for the sandbox, but ${reason}`);
  }
}

export interface CompiledFilter {
  /** The BPF program, as bubblewrap's --seccomp reads it: struct sock_filter instructions, native byte order. */
  readonly program: Uint8Array;
  /** Rule names this libseccomp does not know, so the filter does not hold them (an older libseccomp than the list). */
  readonly unknown: readonly string[];
}

/** Compiles the rules with libseccomp; rejects with SeccompUnavailableError saying why and what to install. */
export function compileSeccompFilter(
  rules: readonly SeccompRule[] = seccompRules,
  python: string = seccompPythonPath,
): Promise<CompiledFilter> {
  return new Promise((resolve, reject) => {
    // -I: isolated, so no PYTHONPATH or user site-packages of the node's environment takes part.
    const child = spawn(python, ["-I", "-c", seccompCompilerScript], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { PATH: "/usr/bin:/bin" },
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = "";
    let tooLarge = false;
    const timer = setTimeout(() => {
      err += `(no answer within ${seccompCompileTimeoutMs} ms)`;
      child.kill("SIGKILL");
    }, seccompCompileTimeoutMs);
    child.stdout.on("data", (data: Buffer) => {
      outBytes += data.length;
      if (outBytes > maxSeccompFilterBytes) {
        tooLarge = true;
        child.kill("SIGKILL");
      } else out.push(data);
    });
    child.stderr.on("data", (data: Buffer) => {
      if (err.length < maxCompilerMessageChars * 4) err += data.toString("utf8");
    });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(
        new SeccompUnavailableError(
          `${python} could not be started (${error.message}): install python3, then ${seccompInstallHint}`,
        ),
      );
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      const message = err.trim().slice(0, maxCompilerMessageChars);
      if (code === 3) {
        reject(new SeccompUnavailableError(`${python} has no seccomp module (${message}): ${seccompInstallHint}`));
        return;
      }
      const program = new Uint8Array(Buffer.concat(out));
      if (code !== 0 || tooLarge || program.length === 0 || program.length % bpfInstructionBytes !== 0) {
        const what = tooLarge ? `more than ${maxSeccompFilterBytes} bytes` : `exit ${code}, ${program.length} bytes`;
        reject(
          new SeccompUnavailableError(`libseccomp did not compile the filter (${what}: ${message || "no message"})`),
        );
        return;
      }
      const unknown = [...err.matchAll(/^unknown (\S+)/gm)].map((match) => match[1] as string);
      resolve({ program, unknown });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(JSON.stringify({ rules }));
  });
}
