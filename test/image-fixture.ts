/**
 * A test image made offline: Debian's static busybox laid out as an OCI image
 * with Debian's umoci (`cimesh setup --with-test-deps` installs both), plus
 * hand-made layers (python3's tarfile, which the sandbox's seccomp compiler
 * needs anyway) for whiteouts and hostile entries.
 *
 * The image's first layer: /bin/busybox, /bin/sh (a relative symlink to it),
 * /bin/ls (an absolute one), /usr/local/bin/image-tool (a script found only in
 * the image), /usr/local/sbin/id (busybox, mode 4755, owned by root),
 * /etc/os-release, /etc/mtab (a link to /proc, which leads nowhere in the
 * image), /etc/removed-later, /opt/old. Its second layer removes
 * /etc/removed-later (a whiteout), makes /opt opaque (hiding /opt/old) and adds /opt/kept.
 */
import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { chmod, copyFile, cp, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecutionContext } from "ava";
import { neutralWorkRoot, probeSandbox } from "../node/sandbox/index.ts";
import { runProcess } from "./processes.ts";

export const busyboxPath = "/bin/busybox";
/** What image-tool prints: the marker a job's output must hold. */
export const imageToolOutput = "image-tool from the cimesh test image";
const toolTimeoutMs = 60_000;

/** Why the image tests cannot run here, or null when they can: umoci and a static busybox are needed. */
export async function imageToolsMissing(): Promise<string | null> {
  if (!existsSync(busyboxPath)) return `${busyboxPath} is missing (apt-get install busybox-static)`;
  const found = await runProcess("umoci", ["--version"], {
    cwd: "/",
    env: process.env,
    timeoutMs: toolTimeoutMs,
  }).catch(() => null);
  if (found === null || found.code !== 0) return "umoci is missing (apt-get install umoci)";
  return null;
}

async function umoci(cwd: string, args: readonly string[]): Promise<void> {
  const run = await runProcess("umoci", args, { cwd, env: process.env, timeoutMs: toolTimeoutMs });
  if (run.code !== 0) throw new Error(`umoci ${args.join(" ")}: exit ${run.code}: ${run.stderr}`);
}

/** A tar entry for python's tarfile: a file with data, a folder, a symlink, a hard link or a device. */
export interface LayerEntry {
  readonly name: string;
  readonly type?: "file" | "dir" | "symlink" | "hardlink" | "chardev" | "blockdev" | "fifo";
  readonly data?: string;
  readonly linkname?: string;
  readonly mode?: number;
}

/** Writes a plain tar layer holding exactly these entries (paths as given, `../` and all). */
export async function writeLayer(path: string, entries: readonly LayerEntry[]): Promise<void> {
  const script = `
import io, json, sys, tarfile
kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
         "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as out:
    for e in json.load(sys.stdin):
        info = tarfile.TarInfo(e["name"])
        info.type = kinds[e.get("type", "file")]
        info.mode = e.get("mode", 0o755 if info.type == tarfile.DIRTYPE else 0o644)
        info.linkname = e.get("linkname", "")
        if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        data = e.get("data", "").encode()
        info.size = len(data) if info.type == tarfile.REGTYPE else 0
        out.addfile(info, io.BytesIO(data) if info.size else None)
`;
  await new Promise<void>((resolve, reject) => {
    const python = spawn("python3", ["-c", script, path], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    python.stderr.on("data", (data: Buffer) => {
      stderr += data.toString();
    });
    python.on("error", reject);
    python.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`python3 tarfile: ${stderr}`))));
    python.stdin.end(JSON.stringify(entries));
  });
}

/** The two-layer base image, made once per test process and copied for each caller. */
let base: Promise<string> | null = null;

async function makeBaseImage(root: string): Promise<string> {
  const layout = join(root, "layout");
  const bundle = join(root, "bundle");
  await mkdir(root, { recursive: true });
  await umoci(root, ["init", "--layout", layout]);
  await umoci(root, ["new", "--image", `${layout}:latest`]);
  await umoci(root, ["unpack", "--rootless", "--image", `${layout}:latest`, bundle]);
  const rootfs = join(bundle, "rootfs");
  for (const dir of ["bin", "etc", "usr/local/bin", "usr/local/sbin", "opt"]) {
    await mkdir(join(rootfs, dir), { recursive: true });
  }
  await copyFile(busyboxPath, join(rootfs, "bin/busybox"));
  await chmod(join(rootfs, "bin/busybox"), 0o755);
  await symlink("busybox", join(rootfs, "bin/sh"));
  await symlink("/bin/busybox", join(rootfs, "bin/ls"));
  // Set-uid root: run as `id`, it would show euid 0 if the bit gave privilege.
  await copyFile(busyboxPath, join(rootfs, "usr/local/sbin/id"));
  await chmod(join(rootfs, "usr/local/sbin/id"), 0o4755);
  await writeFile(join(rootfs, "usr/local/bin/image-tool"), `#!/bin/sh\necho "${imageToolOutput}"\n`);
  await chmod(join(rootfs, "usr/local/bin/image-tool"), 0o755);
  await writeFile(join(rootfs, "etc/os-release"), "ID=cimesh-test\nNAME=cimesh test image\n");
  await writeFile(join(rootfs, "etc/removed-later"), "gone in the second layer\n");
  await writeFile(join(rootfs, "opt/old"), "hidden by the second layer's opaque /opt\n");
  await symlink("/proc/self/mounts", join(rootfs, "etc/mtab"));
  await umoci(root, ["repack", "--image", `${layout}:latest`, bundle]);
  // The second layer: a whiteout of /etc/removed-later, /opt made opaque (its old file hidden) and a file in it.
  await writeLayer(join(root, "second.tar"), [
    { name: "etc/.wh.removed-later" },
    { name: "opt/.wh..wh..opq" },
    { name: "opt/kept", data: "from the second layer\n" },
  ]);
  await umoci(root, ["raw", "add-layer", "--image", `${layout}:latest`, join(root, "second.tar")]);
  return layout;
}

/**
 * Makes the test image's OCI layout at `<root>/layout` (tag "latest") and
 * returns its path. `extraLayers` are added on top, in order (umoci raw add-layer).
 */
export async function makeTestImage(
  root: string,
  extraLayers: readonly (readonly LayerEntry[])[] = [],
): Promise<string> {
  base ??= (async () => {
    const folder = await mkdtemp(join(tmpdir(), "cimesh-test-image-"));
    process.once("exit", () => rmSync(folder, { recursive: true, force: true }));
    return makeBaseImage(folder);
  })();
  const layout = join(root, "layout");
  await mkdir(root, { recursive: true });
  await cp(await base, layout, { recursive: true });
  for (const [index, entries] of extraLayers.entries()) {
    const file = join(root, `extra-${index}.tar`);
    await writeLayer(file, entries);
    await umoci(root, ["raw", "add-layer", "--image", `${layout}:latest`, file]);
  }
  return layout;
}

let problem: Promise<string | null> | null = null;

/** Why the image tests cannot run here (no umoci, busybox, python3 or sandbox), or null when they can: asked once. */
export function imageTestsMissing(): Promise<string | null> {
  problem ??= (async () => {
    const tools = await imageToolsMissing();
    if (tools !== null) return tools;
    const python = await runProcess("python3", ["-c", "import tarfile"], {
      cwd: "/",
      env: process.env,
      timeoutMs: toolTimeoutMs,
    }).catch(() => null);
    if (python === null || python.code !== 0) return "python3 is missing (it writes the hand-made layers)";
    const workRoot = await mkdtemp(join(tmpdir(), "cimesh-image-probe-"));
    try {
      const probe = await probeSandbox({ workRoot });
      return probe.ok ? null : `no sandbox: ${probe.reason}`;
    } finally {
      await rm(workRoot, { recursive: true, force: true });
    }
  })();
  return problem;
}

/** Fails the test in one line when the image tests cannot run here (never a silent pass); true when they can. */
export async function imageTestsOr(t: ExecutionContext): Promise<boolean> {
  const missing = await imageTestsMissing();
  if (missing === null) return true;
  t.fail(`needs umoci, busybox-static, python3 and bubblewrap (cimesh setup --with-test-deps as root): ${missing}`);
  return false;
}

/** Removes the work roots (and so the unpacked images) of nodes' data folders: they live under /var/tmp, not the test's folder. */
export async function removeWorkRoots(dataDirs: readonly string[]): Promise<void> {
  await Promise.all(dataDirs.map((dir) => rm(neutralWorkRoot(dir), { recursive: true, force: true })));
}
