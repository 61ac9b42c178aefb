/**
 * Content-addressed inputs and outputs across real processes over TCP on
 * 127.0.0.1: a tree packed by `cimesh submit`, fetched by a worker and by
 * `cimesh fetch`, a lying peer outvoted by the blobs' own hashes, no bytes
 * moved twice, and a C project built from its inputs with no network.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { cli, cliOk, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

const liarPath = fileURLToPath(new URL("./fixtures/liar-blobs.ts", import.meta.url));
const mib = 1024 * 1024;

/** A tree with nested folders, an empty folder, empty files, executable bits, an ignored file and a file of several chunks. */
async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, "src/nested/deeper"), { recursive: true });
  await mkdir(join(root, "empty-folder"), { recursive: true });
  await mkdir(join(root, "build"), { recursive: true });
  await writeFile(join(root, "README"), "a tree\n");
  await writeFile(join(root, "empty-file"), "");
  await writeFile(join(root, "src/nested/deeper/empty-too"), "");
  await writeFile(join(root, "src/run.sh"), "#!/bin/sh\necho run\n");
  await chmod(join(root, "src/run.sh"), 0o755);
  await writeFile(join(root, "src/nested/large.bin"), randomBytes(3 * mib + 12345));
  await writeFile(join(root, ".gitignore"), "build/\n");
  await writeFile(join(root, "build/ignored.o"), "not packed");
}

/** Every path under root with its kind, mode bits and bytes, for comparing two trees. */
async function snapshot(root: string, skip: (path: string) => boolean = () => false) {
  const entries: string[] = [];
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const rel = relative(root, path);
    if (skip(rel)) continue;
    const info = await stat(path);
    if (entry.isDirectory()) entries.push(`${rel}/ dir`);
    else {
      const hash = createHash("sha256")
        .update(await readFile(path))
        .digest("hex");
      entries.push(`${rel} ${(info.mode & 0o111) !== 0 ? "x" : "-"} ${info.size} ${hash}`);
    }
  }
  return entries.sort();
}

async function meshWithWorker(mesh: Mesh) {
  const masterDir = await mesh.initNode("master");
  const { project, trustArgs } = await mesh.initProject(masterDir);
  const master = await mesh.start("master", masterDir, ["--master"]);
  const workerDir = await mesh.initNode("worker");
  await cliOk(workerDir, trustArgs);
  const worker = await mesh.start("worker", workerDir, ["--worker", "--bootstrap", master.address]);
  await until(
    "the worker's offer held by the master",
    async () => ((await master.control.status()).offersHeld[project]?.workers ?? 0) >= 1,
  );
  return { project, master, worker };
}

async function ended(master: NodeProcess, jobId: string) {
  return until(`job ${jobId} to end`, async () => {
    const detail = await master.control.job(jobId);
    return detail !== null && detail.status !== "open" ? detail : null;
  });
}

function rootOf(submitOutput: string): string {
  const root = /packed .*: (baf\S+)/.exec(submitOutput)?.[1];
  if (root === undefined) throw new Error(`submit printed no packed root: ${submitOutput}`);
  return root;
}

test.serial(
  "round trip: a tree packed by submit is fetched by another node byte-identical, modes kept, ignored files left out; a lying peer is dropped and the fetch completes from the honest one",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, worker } = await meshWithWorker(mesh);
      const tree = join(mesh.root, "tree");
      await makeTree(tree);
      const jobFile = await writeJob(mesh, "tree-job", project, {
        id: "tree-job",
        inputs: "tree",
        steps: ["test -x src/run.sh && test -d empty-folder && test ! -e build && ./src/run.sh"],
        timeout: "1m",
      });
      const submitted = await cliOk(master.dataDir, ["submit", jobFile]);
      const root = rootOf(submitted);
      t.is((await ended(master, "tree-job")).status, "passed", "the job saw the tree as packed");

      // A fresh folder on the worker's machine, through the CLI, from the master.
      const copy = join(mesh.root, "copy");
      const fetched = await cliOk(worker.dataDir, ["fetch", root, copy, "--from", master.peerId]);
      t.regex(fetched, /fetched .* into/);
      t.deepEqual(
        await snapshot(copy),
        await snapshot(tree, (rel) => rel === "build" || rel.startsWith("build/")),
        "byte-identical, modes kept, the ignored folder left out",
      );

      // A liar asked first: its blobs do not hash to their CIDs; the fetch drops it and completes from the master.
      const liar = spawn(process.execPath, [liarPath, master.address], { stdio: ["ignore", "pipe", "pipe"] });
      let liarOut = "";
      liar.stdout.setEncoding("utf8").on("data", (text: string) => {
        liarOut += text;
      });
      try {
        const liarPeer = await until("the liar's peer id", () => /liar (\S+)/.exec(liarOut)?.[1]);
        // The worker's store has the tree from the job: ask the master's node, which also holds it, into a third folder
        // through the liar first — and a node whose store lacks the tree: a new node.
        const thirdDir = await mesh.initNode("third");
        const third = await mesh.start("third", thirdDir, ["--bootstrap", master.address]);
        const lied = join(mesh.root, "lied");
        const out = await cliOk(third.dataDir, ["fetch", root, lied, "--from", liarPeer, "--from", master.peerId]);
        t.regex(out, /fetched/);
        t.deepEqual(await snapshot(lied), await snapshot(copy), "the fetch completed from the honest peer");
        const dropped = third.events.find((event) => event.event === "blob-peer-dropped");
        t.is(dropped?.peerId, liarPeer, "the liar was dropped");
        // Dropped for its lie, or, on a loaded machine, for stalling first (blobStallMs): either way not believed.
        t.regex(String(dropped?.why), /hash|mismatch|expected|stalled/i);
        t.regex(liarOut, /answered 1\b/, "the liar was asked, once");
        t.notRegex(liarOut, /answered 2\b/, "and never again in that fetch");
      } finally {
        liar.kill("SIGKILL");
      }

      // Bad input at the CLI: a CID of an unsupported codec.
      const bad = await cli(worker.dataDir, [
        "fetch",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        join(mesh.root, "never"),
      ]);
      t.not(bad.code, 0);
      t.regex(bad.stderr, /expected/);
    } finally {
      await mesh.stopAll();
    }
  },
);

test.serial(
  "a C project built from its inputs alone (network: false), twice: the second run moves no blob bytes to the worker, and the outputs download and run",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const { project, master, worker } = await meshWithWorker(mesh);
      const src = join(mesh.root, "csrc");
      await mkdir(src, { recursive: true });
      await writeFile(
        join(src, "hello.c"),
        '#include <stdio.h>\nint main(void) { printf("built from inputs\\n"); return 0; }\n',
      );
      await writeFile(join(src, "Makefile"), "hello: hello.c\n\tcc -O2 -o hello hello.c\n");
      await writeFile(join(src, "data.bin"), randomBytes(2 * mib));
      const job = (id: string) =>
        writeJob(mesh, id, project, {
          id,
          inputs: "csrc",
          network: false,
          steps: ["make", "./hello", "mkdir -p dist && cp hello dist/"],
          outputs: ["dist"],
          timeout: "2m",
        });
      await cliOk(master.dataDir, ["submit", await job("build-1")]);
      const first = await ended(master, "build-1");
      t.is(first.status, "passed", first.reason);
      await cliOk(master.dataDir, ["submit", await job("build-2")]);
      t.is((await ended(master, "build-2")).status, "passed");

      const ready = worker.events.filter((event) => event.event === "inputs-ready");
      t.is(ready.length, 2);
      t.true(Number(ready[0]?.fetchedBytes) > 2 * mib, "the first run fetched the inputs");
      t.is(ready[1]?.fetchedBytes, 0, "the second run moved no blob bytes: the worker had them all");
      const logs = await cliOk(master.dataDir, ["logs", "build-1"]);
      t.regex(logs, /built from inputs/);

      const download = join(mesh.root, "download");
      await cliOk(master.dataDir, ["result", "build-1", "--download", download]);
      const binary = join(download, "dist/hello");
      t.not((await stat(binary)).mode & 0o111, 0, "the built binary kept its executable bit");
      const ran = await new Promise<string>((resolve) => {
        const child = spawn(binary, [], { stdio: ["ignore", "pipe", "ignore"] });
        let text = "";
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
          text += chunk;
        });
        child.on("close", () => resolve(text));
      });
      t.is(ran, "built from inputs\n");
    } finally {
      await mesh.stopAll();
    }
  },
);
