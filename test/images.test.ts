/**
 * Images: a test image made offline (busybox-static laid out as an OCI image
 * by umoci) imported by `cimesh image import`, from its layout and from a
 * legacy `docker save` tarball, to the same CID; hostile layers refused; a job
 * run by `cimesh run` inside the image (a tool only the image has, its root
 * read-only, a set-uid binary without privilege); the result digest covering
 * the image. Needs umoci, busybox-static, python3 and bubblewrap: each test
 * says so in one line where they are missing.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import test from "ava";
import * as tar from "tar";
import { decodeManifest } from "../crypto/index.ts";
import { resultDigest } from "../jobs/index.ts";
import { parseJobFile, parseSpecFile } from "../node/files/index.ts";
import { ImageImportError, importImage, layerEntryProblem } from "../node/images/index.ts";
import { openBlobStore, TreeLinkError, unpackTree } from "../node/store/index.ts";
import { imageTestsOr, imageToolOutput, type LayerEntry, makeTestImage, removeWorkRoots } from "./image-fixture.ts";
import { cli, cliOk, Mesh } from "./mesh-harness.ts";

const project = "bck7szfextxphxrul77ca2uw65rs2d66blt2qaxjjgrbsrrpfqmqq";

async function manifestOf(dataDir: string, root: string) {
  const store = await openBlobStore(join(dataDir, "blobs"));
  const bytes = await store.get(root);
  if (bytes === null) throw new Error(`image ${root} is not in the store`);
  return decodeManifest(bytes);
}

function imageOf(output: string): string {
  const cid = /image: (baf\S+)/.exec(output)?.[1];
  if (cid === undefined) throw new Error(`cimesh image import printed no CID: ${output}`);
  return cid;
}

/** A legacy `docker save` tarball (manifest.json, a folder per layer, plain tar layers) of the same layers. */
async function dockerSaveOf(layout: string, dir: string): Promise<string> {
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8"));
  const blob = (digest: string) => join(layout, "blobs", "sha256", digest.replace("sha256:", ""));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), "utf8"));
  const files: string[] = [];
  const layers: string[] = [];
  for (const [i, layer] of manifest.layers.entries()) {
    let bytes = await readFile(blob(layer.digest));
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes);
    const name = `layer${i}/layer.tar`;
    await mkdir(join(dir, `layer${i}`), { recursive: true });
    await writeFile(join(dir, name), bytes);
    layers.push(name);
    files.push(name);
  }
  const configName = `${createHash("sha256").update(manifest.config.digest).digest("hex")}.json`;
  await writeFile(join(dir, configName), await readFile(blob(manifest.config.digest)));
  await writeFile(
    join(dir, "manifest.json"),
    JSON.stringify([{ Config: configName, RepoTags: ["cimesh-test:latest"], Layers: layers }]),
  );
  const tarball = join(dir, "..", "docker-save.tar");
  await tar.c({ file: tarball, cwd: dir }, ["manifest.json", configName, ...files]);
  return tarball;
}

test.serial(
  "cimesh image import: busybox laid out by umoci becomes one tree (layers in order, whiteout and opaque folder applied, links inside copied, a link to nowhere left out, set-uid bit not kept); the same image from a docker save tarball has the same CID",
  async (t) => {
    if (!(await imageTestsOr(t))) return;
    const mesh = await Mesh.create();
    try {
      const layout = await makeTestImage(join(mesh.root, "image"));
      const dataDir = await mesh.initNode("project");
      const output = await cliOk(dataDir, ["image", "import", layout]);
      t.regex(output, /2 layer\(s\)/);
      t.regex(output, /left out 1 symlink\(s\) that lead nowhere inside the image: etc\/mtab/);
      const root = imageOf(output);
      const manifest = await manifestOf(dataDir, root);
      const files = new Map(manifest.files.map((file) => [file.path, file]));
      t.deepEqual(
        [...files.keys()].sort(),
        [
          "bin/busybox",
          "bin/ls",
          "bin/sh",
          "etc/os-release",
          "opt/kept",
          "usr/local/bin/image-tool",
          "usr/local/sbin/id",
        ],
        "whiteout removed etc/removed-later, the opaque /opt hid opt/old, etc/mtab left out",
      );
      // Links inside the image are stored as copies of their targets (the chunks themselves are stored once).
      const busybox = files.get("bin/busybox");
      t.deepEqual(files.get("bin/sh")?.chunks, busybox?.chunks, "bin/sh -> busybox (relative)");
      t.deepEqual(files.get("bin/ls")?.chunks, busybox?.chunks, "bin/ls -> /bin/busybox (absolute: inside the image)");
      t.true(files.get("usr/local/bin/image-tool")?.executable);
      t.true(files.get("usr/local/sbin/id")?.executable, "the set-uid file is only executable in the tree");

      t.is(imageOf(await cliOk(dataDir, ["image", "import", layout])), root, "the same image, the same CID");
      const tarball = await dockerSaveOf(layout, join(mesh.root, "docker-save"));
      t.is(imageOf(await cliOk(dataDir, ["image", "import", tarball])), root, "docker save tarball");

      const missing = await cli(dataDir, ["image", "import", join(mesh.root, "nothing-here")]);
      t.is(missing.code, 1);
      t.regex(missing.stderr, /expected an OCI image layout folder or a docker save tarball, found nothing/);
    } finally {
      await mesh.stopAll();
    }
  },
);

test("layer entries: device nodes, FIFOs, '..' paths and links leading out are refused; links inside and absolute links are not", (t) => {
  const refused = (entry: { type: string; path: string; linkpath?: string }) => layerEntryProblem(entry) !== null;
  t.true(refused({ type: "CharacterDevice", path: "dev/null" }));
  t.true(refused({ type: "BlockDevice", path: "dev/sda" }));
  t.true(refused({ type: "FIFO", path: "run/pipe" }));
  t.true(refused({ type: "File", path: "../escape" }));
  t.true(refused({ type: "File", path: "a/../../escape" }));
  t.true(refused({ type: "Link", path: "a", linkpath: "../../etc/shadow" }));
  t.true(refused({ type: "SymbolicLink", path: "etc/out", linkpath: "../../etc/shadow" }));
  t.true(refused({ type: "SymbolicLink", path: "x", linkpath: ".." }));
  t.false(refused({ type: "SymbolicLink", path: "bin/sh", linkpath: "busybox" }));
  t.false(refused({ type: "SymbolicLink", path: "usr/bin/sh", linkpath: "../../bin/busybox" }));
  t.false(refused({ type: "SymbolicLink", path: "bin/ls", linkpath: "/bin/busybox" }));
  t.false(refused({ type: "File", path: "./etc/os-release" }));
  t.false(refused({ type: "Link", path: "bin/ls2", linkpath: "bin/busybox" }));
});

test.serial(
  "hostile images: a layer with ../ paths, a device node, a FIFO, a relative or absolute link out, a hard link out is refused naming the layer and entry; an absolute link to a host file is never read",
  async (t) => {
    if (!(await imageTestsOr(t))) return;
    const mesh = await Mesh.create();
    try {
      const store = await openBlobStore(join(mesh.root, "blobs"));
      const cases: [string, LayerEntry[], RegExp][] = [
        [
          "dotdot",
          [{ name: "../../escaped", data: "out\n" }],
          /layer 2 refused: "..\/..\/escaped": expected a path inside the image/,
        ],
        ["chardev", [{ name: "dev/null2", type: "chardev" }], /"dev\/null2": expected no device nodes/],
        ["blockdev", [{ name: "dev/sda", type: "blockdev" }], /"dev\/sda": expected no device nodes/],
        ["fifo", [{ name: "run/pipe", type: "fifo" }], /"run\/pipe": expected no FIFOs/],
        [
          "relative link out",
          [{ name: "etc/out", type: "symlink", linkname: "../../../../etc/shadow" }],
          /"etc\/out": expected a symlink that stays inside the image/,
        ],
        [
          "hard link out",
          [{ name: "etc/hard", type: "hardlink", linkname: "../../etc/shadow" }],
          /"etc\/hard": expected a hard link to a path inside the image/,
        ],
      ];
      for (const [name, entries, message] of cases) {
        const layout = await makeTestImage(join(mesh.root, name.replaceAll(" ", "-")), [entries]);
        const error = await t.throwsAsync(importImage(layout, store), { instanceOf: ImageImportError }, name);
        t.regex(error?.message ?? "", message, name);
      }
      // Absolute targets are read inside the image: `/../..` climbs out of it and is refused...
      const climbing = await makeTestImage(join(mesh.root, "absolute-out"), [
        [{ name: "etc/climb", type: "symlink", linkname: "/../../etc/hostname" }],
      ]);
      await t.throwsAsync(importImage(climbing, store), { instanceOf: TreeLinkError, message: /etc\/climb/ });
      // ...and one to a host file the image lacks leads nowhere: left out, the host's file never read.
      const hostFile = await makeTestImage(join(mesh.root, "host-file"), [
        [{ name: "etc/host-secret", type: "symlink", linkname: "/etc/hostname" }],
      ]);
      const imported = await importImage(hostFile, store);
      t.deepEqual(imported.danglingLinks, ["etc/host-secret", "etc/mtab"]);
    } finally {
      await mesh.stopAll();
    }
  },
);

test("job and spec files: image names a CID (else the field and what was expected), a spec with an image takes no host tools; files without one sign what they always did", (t) => {
  const cid = "bafyreies6pqcbw34mgdo22wcl252xxorazlav4p2pi3oxh63mhq6wd766m";
  const now = Date.now();
  const job = (extra: string) => parseJobFile(`project: ${project}\nname: j\nsteps: [true]\n${extra}`, "job.yaml", now);
  t.is(job(`image: ${cid}\n`).spec.image, cid);
  t.false("image" in job("").spec, "no image field at all: the job signs the bytes it did before images");
  t.throws(() => job("image: debian:bookworm\n"), { message: /job\.yaml:4: image: expected a content id/ });
  const spec = (extra: string) =>
    parseSpecFile(
      `uuid: 7d3f1a2b-6c4e-4b8a-9e21-0a1b2c3d4e5f\nname: s\nselfCheck:\n  steps: [image-tool]\n${extra}`,
      "spec.yaml",
      now,
    );
  t.is(spec(`image: ${cid}\n`).image, cid);
  t.false("image" in spec(""));
  t.throws(() => spec(`image: ${cid}\nrequirements:\n  tools: [{ name: node, range: ">=22" }]\n`), {
    message: /requirements\.tools: expected no tools when the spec names an image/,
  });
});

test("the result digest covers a job's image; a job without one keeps the digest it always had", (t) => {
  const result = { outcome: "succeeded" as const, exitCode: 0, outputsDigest: "bafyoutputs" };
  const plain = resultDigest(result);
  t.is(resultDigest(result, {}), plain);
  const imageA = resultDigest(result, { image: "bafyreiimagea" });
  t.not(imageA, plain);
  t.not(imageA, resultDigest(result, { image: "bafyreiimageb" }));
});

test.serial(
  "cimesh run in the image: a tool only the image has, its /etc, no host /usr; the root read-only; the set-uid binary runs without privilege (no_new_privs); the same job without the image fails",
  async (t) => {
    if (!(await imageTestsOr(t))) return;
    const mesh = await Mesh.create();
    try {
      const layout = await makeTestImage(join(mesh.root, "image"));
      const dataDir = await mesh.initNode("dev");
      const image = imageOf(await cliOk(dataDir, ["image", "import", layout]));
      const steps = [
        "mkdir -p out && image-tool > out/tool.txt && cat /etc/os-release >> out/tool.txt",
        "id > out/id.txt && /usr/local/sbin/id >> out/id.txt && grep NoNewPrivs /proc/self/status >> out/id.txt",
        "stat -c '%a' /usr/local/sbin/id >> out/id.txt",
        "if test -e /usr/bin/node || test -e /usr/bin/prlimit; then echo host-usr; fi > out/host.txt",
        "if touch /bin/x 2>/dev/null; then echo writable; else echo read-only; fi > out/root.txt",
      ];
      const job = { project, name: "in the image", image, steps, outputs: ["out"] };
      const jobPath = join(mesh.root, "job.json.yaml");
      await writeFile(jobPath, JSON.stringify(job));
      const run = await cli(dataDir, ["run", jobPath]);
      t.is(run.code, 0, run.stderr);
      const outputs = /outputs (baf\S+)/.exec(run.stderr)?.[1];
      t.truthy(outputs, run.stderr);
      const folder = join(mesh.root, "outputs");
      // `cimesh run` kept the outputs in the data folder's blob store.
      await unpackTree(outputs as string, await openBlobStore(join(dataDir, "blobs")), folder);
      const read = (name: string) => readFile(join(folder, "out", name), "utf8");
      t.true((await read("tool.txt")).startsWith(`${imageToolOutput}\nID=cimesh-test`));
      const ids = await read("id.txt");
      t.regex(ids, /^uid=65534/m);
      t.notRegex(ids, /euid=0|uid=0\(/, "the set-uid root copy gave no privilege");
      t.regex(ids, /NoNewPrivs:\s*1/);
      t.regex(ids, /^755$/m, "the set-uid bit is not in the image's tree");
      t.is(await read("host.txt"), "", "no host /usr in the image's sandbox");
      t.is(await read("root.txt"), "read-only\n");

      const { image: _image, ...withoutImage } = job;
      await writeFile(jobPath, JSON.stringify(withoutImage));
      const bare = await cli(dataDir, ["run", jobPath]);
      t.is(bare.code, 1, "image-tool exists only in the image");
      t.regex(bare.stderr, /step 1 .* failed/);
    } finally {
      await mesh.stopAll();
      await removeWorkRoots([...mesh.peerIds.keys()]);
    }
  },
);
