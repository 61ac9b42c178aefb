/**
 * node/store's blobs.ts: the blob store (verified reads, atomic writes, a
 * quota with least-recently-used eviction and pins, one folder shared by
 * several stores) and trees on disk (pack, unpack, .gitignore, symlinks,
 * special files, outputs of a run, the executor's outputs digest as a tree).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  BlobMismatchError,
  cidOfBlob,
  cidOfManifest,
  encodeManifest,
  OversizeError,
  parseTreeCid,
  TreeManifestError,
  treeChunkBytes,
  UnsupportedCidError,
} from "../crypto/index.ts";
import { type ExecutionRequest, jobSpecSchema } from "../jobs/index.ts";
import { createExecutor, OutputRefusedError, probeSandbox } from "../node/sandbox/index.ts";
import {
  BlobQuotaError,
  type BlobStore,
  MissingBlobError,
  openBlobStore,
  packOutputs,
  packTree,
  TreeLinkError,
  TreePackError,
  TreeUnpackError,
  treeBlobs,
  unpackTree,
} from "../node/store/index.ts";

async function tempDir(t: ExecutionContext, prefix = "cimesh-blobs-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Listed {
  readonly path: string;
  readonly kind: "file" | "dir";
  readonly mode: number;
  readonly content: string | null;
}

/** Everything under a folder: path, kind, permission bits, sha-256 of content; symlinks would show as "link". */
async function listTree(root: string, rel = ""): Promise<Listed[]> {
  const out: Listed[] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const path = rel === "" ? name : `${rel}/${name}`;
    const info = await lstat(join(root, path));
    if (info.isSymbolicLink()) throw new Error(`unexpected symlink ${path}`);
    if (info.isDirectory()) {
      out.push({ path, kind: "dir", mode: info.mode & 0o777, content: null });
      out.push(...(await listTree(root, path)));
    } else {
      const bytes = await readFile(join(root, path));
      out.push({ path, kind: "file", mode: info.mode & 0o777, content: cidOfBlob(bytes) });
    }
  }
  return out;
}

/** Bytes of every blob file in a store's folder, as the disk says. */
async function diskBytes(store: BlobStore): Promise<number> {
  let total = 0;
  const blobs = join(store.root, "blobs");
  for (const shard of await readdir(blobs)) {
    for (const name of await readdir(join(blobs, shard))) total += (await stat(join(blobs, shard, name))).size;
  }
  return total;
}

/** Distinct bytes of a given size, by label. */
function blobOf(label: string, sizeBytes: number): Uint8Array {
  const bytes = new Uint8Array(sizeBytes);
  const seed = new TextEncoder().encode(label);
  for (let i = 0; i < sizeBytes; i++) bytes[i] = (seed[i % seed.length] ?? 0) ^ (i * 7) ^ (i >> 8);
  bytes[0] = seed.length;
  return bytes;
}

/** Copies a tree's blobs from one store to another, as a fetch would: each verified by the receiving put. */
async function copyTree(root: string, from: BlobStore, to: BlobStore): Promise<number> {
  const manifest = await from.get(root);
  if (manifest === null) throw new Error("no manifest");
  await to.put(manifest, root);
  let moved = 0;
  for (const cid of (await treeBlobs(root, to)).missing) {
    const bytes = await from.get(cid);
    if (bytes === null) throw new Error(`no ${cid}`);
    await to.put(bytes, cid);
    moved += bytes.length;
  }
  return moved;
}

// --- trees ----------------------------------------------------------------------------------------------------

test("round trip: nested folders, an empty folder, empty files, executable bits and a large file of several chunks", async (t) => {
  const source = await tempDir(t);
  await mkdir(join(source, "src/lib/deep"), { recursive: true });
  await mkdir(join(source, "empty/inner"), { recursive: true });
  await writeFile(join(source, "src/lib/deep/a.txt"), "deep\n");
  await writeFile(join(source, "src/run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  await writeFile(join(source, "owner-exec"), "x", { mode: 0o744 });
  await writeFile(join(source, "private"), "p", { mode: 0o600 });
  await writeFile(join(source, "empty.txt"), "");
  await writeFile(join(source, "src/lib/empty"), "");
  const large = randomBytes(3 * treeChunkBytes + 12345);
  await writeFile(join(source, "large.bin"), large);
  await writeFile(join(source, "exact.bin"), large.subarray(0, treeChunkBytes));
  await writeFile(join(source, "é ü 日本.txt"), "unicode");

  const storeA = await openBlobStore(await tempDir(t));
  const progress: [number, number][] = [];
  const packed = await packTree(source, storeA, { onProgress: (done, total) => progress.push([done, total]) });
  t.is(parseTreeCid(packed.root).kind, "manifest");
  t.is(packed.files, 9);
  const totalBytes = 5 + 18 + 1 + 1 + large.length + treeChunkBytes + 7;
  t.is(packed.bytes, totalBytes);
  t.deepEqual(progress[0], [0, totalBytes]);
  t.deepEqual(progress.at(-1), [totalBytes, totalBytes]);
  t.true(
    progress.every(([done], i) => i === 0 || done >= (progress[i - 1]?.[0] ?? 0)),
    "progress only grows",
  );

  const { manifest, chunks, missing, heldBytes } = await treeBlobs(packed.root, storeA);
  t.deepEqual(manifest.dirs, ["empty", "empty/inner", "src", "src/lib", "src/lib/deep"]);
  t.is(manifest.files.find((f) => f.path === "large.bin")?.chunks.length, 4);
  t.is(manifest.files.find((f) => f.path === "empty.txt")?.chunks.length, 0);
  t.deepEqual(missing, []);
  // exact.bin is the first chunk of large.bin: stored once.
  t.is(chunks.length, 4 + 5);
  t.is(heldBytes, totalBytes - treeChunkBytes);

  // Another node's store: the manifest alone tells what is missing; the blobs then arrive verified.
  const storeB = await openBlobStore(await tempDir(t));
  await t.throwsAsync(treeBlobs(packed.root, storeB), { instanceOf: MissingBlobError });
  await storeB.putManifest((await storeA.get(packed.root)) as Uint8Array, packed.root);
  const before = await treeBlobs(packed.root, storeB);
  t.is(before.missing.length, chunks.length);
  t.is(before.heldBytes, 0);
  const destination = join(await tempDir(t), "out");
  const missingError = await t.throwsAsync(unpackTree(packed.root, storeB, destination), {
    instanceOf: MissingBlobError,
  });
  t.is(missingError?.missingCount, chunks.length);
  t.regex(missingError?.message ?? "", new RegExp(`${chunks.length} missing \\(first ${before.missing[0]}\\)`));
  t.is(await copyTree(packed.root, storeA, storeB), totalBytes - treeChunkBytes);
  const after = await treeBlobs(packed.root, storeB);
  t.deepEqual(after.missing, []);
  t.is(after.heldBytes, after.totalBytes);

  const unpacked = await unpackTree(packed.root, storeB, destination);
  t.deepEqual(unpacked, { files: 9, bytes: totalBytes });
  const expected = (await listTree(source)).map((entry) =>
    entry.kind === "dir" ? entry : { ...entry, mode: entry.mode & 0o111 ? 0o755 : 0o644 },
  );
  const got = await listTree(destination);
  t.deepEqual(
    got.filter((e) => e.kind === "dir").map((e) => e.path),
    expected.filter((e) => e.kind === "dir").map((e) => e.path),
  );
  t.deepEqual(
    got.filter((e) => e.kind === "file"),
    expected.filter((e) => e.kind === "file"),
  );
  t.deepEqual(await readFile(join(destination, "large.bin")), large, "byte-identical");
  t.is((await stat(join(destination, "owner-exec"))).mode & 0o777, 0o755, "any x bit: executable");
  t.is((await stat(join(destination, "private"))).mode & 0o777, 0o644);

  // Same tree, same root; nothing new stored.
  const usedBefore = storeA.usedBytes();
  t.is((await packTree(source, storeA)).root, packed.root);
  t.is(storeA.usedBytes(), usedBefore);
  // One changed byte, another root.
  await writeFile(join(source, "src/lib/deep/a.txt"), "deeP\n");
  t.not((await packTree(source, storeA)).root, packed.root);
});

test(".gitignore files are respected as git does, .git is always skipped", async (t) => {
  const source = await tempDir(t);
  await mkdir(join(source, "build"), { recursive: true });
  await mkdir(join(source, "sub/deeper"), { recursive: true });
  await mkdir(join(source, ".git/objects"), { recursive: true });
  await writeFile(join(source, ".git/config"), "[core]");
  await writeFile(join(source, ".gitignore"), "*.log\nbuild/\n!keep.log\n/rooted.txt\n");
  await writeFile(join(source, "sub/.gitignore"), "secret.txt\n!sub.log\n");
  for (const path of [
    "a.log",
    "keep.log",
    "build/out.o",
    "secret.txt",
    "rooted.txt",
    "main.c",
    "sub/secret.txt",
    "sub/sub.log",
    "sub/other.log",
    "sub/rooted.txt",
    "sub/deeper/secret.txt",
    "sub/deeper/x.c",
  ]) {
    await writeFile(join(source, path), path);
  }
  const store = await openBlobStore(await tempDir(t));
  const paths = async (respectGitignore?: boolean) => {
    const { root } = await packTree(source, store, respectGitignore === undefined ? {} : { respectGitignore });
    const { manifest } = await treeBlobs(root, store);
    return { files: manifest.files.map((f) => f.path), dirs: manifest.dirs };
  };
  t.deepEqual(await paths(), {
    files: [
      ".gitignore",
      "keep.log",
      "main.c",
      "secret.txt",
      "sub/.gitignore",
      "sub/deeper/x.c",
      "sub/rooted.txt",
      "sub/sub.log",
    ],
    dirs: ["sub", "sub/deeper"],
  });
  const all = await paths(false);
  t.true(all.files.includes("build/out.o") && all.files.includes("a.log") && all.files.includes("sub/secret.txt"));
  t.false(
    all.files.some((f) => f.startsWith(".git/")),
    ".git is skipped even when .gitignore is not respected",
  );
  t.is(all.files.length, 14);
});

test("a symlink that leaves the folder is refused, naming it; one that stays inside is packed as a copy", async (t) => {
  const outside = await tempDir(t);
  await writeFile(join(outside, "secret"), "host secret");
  const store = await openBlobStore(await tempDir(t));
  const cases: [string, string][] = [
    ["leak", "/etc/passwd"],
    ["up", "../../secret"],
    ["dir-out", outside],
  ];
  for (const [name, target] of cases) {
    const source = await tempDir(t);
    await mkdir(join(source, "d"));
    await writeFile(join(source, "d/ok.txt"), "ok");
    await symlink(target, join(source, "d", name));
    const error = await t.throwsAsync(packTree(source, store), { instanceOf: TreeLinkError });
    t.is(error?.path, `d/${name}`);
    t.regex(error?.message ?? "", /leads out of it/);
    t.is(error?.code, "ERR_TREE_LINK");
  }
  // A link that escapes through an inner link is caught too.
  const chained = await tempDir(t);
  await symlink("..", join(chained, "parent"));
  await symlink("parent/x", join(chained, "through"));
  await t.throwsAsync(packTree(chained, store), { instanceOf: TreeLinkError });

  // Dangling, and looping: refused as well.
  const dangling = await tempDir(t);
  await symlink("nowhere", join(dangling, "link"));
  await t.throwsAsync(packTree(dangling, store), { instanceOf: TreeLinkError, message: /leads nowhere/ });
  const looping = await tempDir(t);
  await mkdir(join(looping, "a"));
  await symlink("..", join(looping, "a/loop"));
  await t.throwsAsync(packTree(looping, store), { instanceOf: TreeLinkError, message: /loop/ });

  // Inside: a relative link to a file, an absolute one, a link to a folder: copies.
  const inside = await tempDir(t);
  await mkdir(join(inside, "lib"));
  await writeFile(join(inside, "lib/tool"), "#!/bin/sh\n", { mode: 0o755 });
  await symlink("lib/tool", join(inside, "tool"));
  await symlink(join(inside, "lib/tool"), join(inside, "abs-tool"));
  await symlink("lib", join(inside, "lib2"));
  const { root } = await packTree(inside, store);
  const { manifest } = await treeBlobs(root, store);
  t.deepEqual(
    manifest.files.map((f) => [f.path, f.executable]),
    [
      ["abs-tool", true],
      ["lib/tool", true],
      ["lib2/tool", true],
      ["tool", true],
    ],
  );
  t.deepEqual(manifest.dirs, ["lib", "lib2"]);
  const chunks = new Set(manifest.files.map((f) => f.chunks[0]));
  t.is(chunks.size, 1, "the copies are the same blob");
  // A link that is gitignored is never followed.
  await symlink("/etc/passwd", join(inside, "ignored-leak"));
  await writeFile(join(inside, ".gitignore"), "ignored-leak\n");
  await t.notThrowsAsync(packTree(inside, store));
});

test("special files are refused with a clear error", async (t) => {
  const store = await openBlobStore(await tempDir(t));
  const withFifo = await tempDir(t);
  execFileSync("mkfifo", [join(withFifo, "pipe")]);
  const fifoError = await t.throwsAsync(packTree(withFifo, store), { instanceOf: TreePackError });
  t.is(fifoError?.message, '"pipe": expected a regular file, folder or symlink, got a fifo');

  const withSocket = await tempDir(t, "cs-");
  const server = createServer();
  await new Promise<void>((done) => server.listen(join(withSocket, "sock"), done));
  t.teardown(() => server.close());
  await t.throwsAsync(packTree(withSocket, store), { instanceOf: TreePackError, message: /got a socket/ });
});

test("unpack refuses to follow a symlink already in the destination, and writes nothing through it", async (t) => {
  const source = await tempDir(t);
  await mkdir(join(source, "sub"));
  await writeFile(join(source, "sub/file"), "mine");
  const store = await openBlobStore(await tempDir(t));
  const { root } = await packTree(source, store);
  const destination = await tempDir(t);
  const elsewhere = await tempDir(t);
  await symlink(elsewhere, join(destination, "sub"));
  await t.throwsAsync(unpackTree(root, store, destination), { instanceOf: TreeUnpackError, message: /"sub"/ });
  t.deepEqual(await readdir(elsewhere), []);
  // A root that is not a manifest CID is refused as such.
  await t.throwsAsync(unpackTree(cidOfBlob(new Uint8Array(1)), store, destination), {
    instanceOf: UnsupportedCidError,
  });
});

test("a chunk corrupted on disk is detected: get returns null and removes it, unpack reports it missing", async (t) => {
  const source = await tempDir(t);
  await writeFile(join(source, "a"), blobOf("a", 5000));
  const store = await openBlobStore(await tempDir(t));
  const { root } = await packTree(source, store);
  const [chunk] = (await treeBlobs(root, store)).chunks;
  if (chunk === undefined) throw new Error("no chunk");
  const path = store.pathOf(chunk);
  const good = await readFile(path);
  const bad = Buffer.from(good);
  bad[100] = (bad[100] ?? 0) ^ 1;
  await writeFile(path, bad);
  t.true(await store.has(chunk), "has does not read");
  t.is(await store.get(chunk), null);
  t.false(await store.has(chunk), "the corrupt file is gone");
  t.is(await store.get(chunk), null);
  await t.throwsAsync(unpackTree(root, store, await tempDir(t)), { instanceOf: MissingBlobError });
  // Truncated, as after a crash: the same.
  await store.put(good, chunk);
  await writeFile(path, good.subarray(0, 10));
  t.is(await store.get(chunk), null);
  await store.put(good, chunk);
  t.deepEqual(await store.get(chunk), new Uint8Array(good));
});

test("put verifies what it is given, refuses what is not a chunk or manifest, and stores manifests by kind", async (t) => {
  const store = await openBlobStore(await tempDir(t));
  const a = blobOf("a", 100);
  const cid = await store.put(a);
  t.is(cid, cidOfBlob(a));
  t.is(await store.put(a, cid), cid);
  const mismatch = await t.throwsAsync(store.put(blobOf("b", 100), cid), { instanceOf: BlobMismatchError });
  t.is(mismatch?.expected, cid);
  t.false(await store.has(cidOfBlob(blobOf("b", 100))), "nothing stored under the wrong bytes' own CID either");
  await t.throwsAsync(store.put(new Uint8Array(treeChunkBytes + 1)), { instanceOf: OversizeError });
  await t.throwsAsync(store.put(a, "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"), {
    instanceOf: UnsupportedCidError,
  });
  const manifest = encodeManifest({
    version: 1,
    chunkBytes: treeChunkBytes,
    files: [{ path: "a", sizeBytes: 100, executable: false, chunks: [cid] }],
    dirs: [],
  });
  const manifestCid = await store.putManifest(manifest);
  t.is(manifestCid, cidOfManifest(manifest));
  t.is(await store.put(manifest, manifestCid), manifestCid, "put with a manifest CID stores a manifest");
  t.false(await store.has(cidOfBlob(manifest)), "a manifest is not stored under a raw CID");
  await t.throwsAsync(store.putManifest(a), { instanceOf: TreeManifestError });
  const garbage = new TextEncoder().encode("not a manifest");
  await t.throwsAsync(store.put(garbage, cidOfManifest(garbage)), { instanceOf: TreeManifestError });
  t.is(await store.sizeOf(cid), 100);
  t.is(await store.sizeOf(cidOfBlob(garbage)), null);
  t.deepEqual(await readdir(join(store.root, "tmp")), [], "no temporary file is left behind");
});

test("put takes a blob as the pieces it arrived in: verified, written and counted as the joined bytes", async (t) => {
  const store = await openBlobStore(await tempDir(t));
  const blob = new Uint8Array(randomBytes(treeChunkBytes));
  const cid = cidOfBlob(blob);
  // Uneven pieces, an empty one among them, as a noise connection hands a blob over.
  const cuts = [0, 1, 65_519, 65_519, 300_000, treeChunkBytes];
  const pieces = cuts.slice(1).map((end, index) => blob.subarray(cuts[index], end));
  const wrong = pieces.map((piece) => piece.slice());
  const flipped = wrong[3] as Uint8Array;
  flipped[7] = (flipped[7] as number) ^ 1;
  const mismatch = await t.throwsAsync(store.put(wrong, cid), { instanceOf: BlobMismatchError });
  t.is(mismatch?.expected, cid);
  t.false(await store.has(cid));
  await t.throwsAsync(store.put([...pieces, Uint8Array.of(0)], cid), { instanceOf: OversizeError });
  t.is(await store.put(pieces, cid), cid);
  t.deepEqual(await store.get(cid), blob);
  t.is(await store.sizeOf(cid), treeChunkBytes);
  t.is(store.usedBytes(), treeChunkBytes);
  const manifest = encodeManifest({
    version: 1,
    chunkBytes: treeChunkBytes,
    files: [{ path: "a", sizeBytes: treeChunkBytes, executable: false, chunks: [cid] }],
    dirs: [],
  });
  const manifestCid = cidOfManifest(manifest);
  t.is(await store.put([manifest.subarray(0, 5), manifest.subarray(5)], manifestCid), manifestCid);
  t.deepEqual(await store.get(manifestCid), new Uint8Array(manifest));
  t.deepEqual(await readdir(join(store.root, "tmp")), [], "no temporary file is left behind");
});

// --- quota and eviction ---------------------------------------------------------------------------------------

test("the quota is never exceeded across many puts of mixed sizes", async (t) => {
  const quotaBytes = 20_000;
  const store = await openBlobStore(await tempDir(t), { quotaBytes });
  t.is(store.quotaBytes, quotaBytes);
  const kept: string[] = [];
  for (let i = 0; i < 150; i++) {
    const size = 100 + ((i * 977) % 3000);
    kept.push(await store.put(blobOf(`blob-${i}`, size)));
    t.true(store.usedBytes() <= quotaBytes, `after put ${i}: ${store.usedBytes()}`);
    t.true((await diskBytes(store)) <= quotaBytes, `on disk after put ${i}`);
  }
  t.is(store.usedBytes(), await diskBytes(store));
  // The most recent blob is always kept.
  t.true(await store.has(kept.at(-1) as string));
  t.true(store.usedBytes() > quotaBytes / 2, "eviction does not empty the store");
});

test("eviction takes the least recently used blob first, and the order survives a restart", async (t) => {
  const folder = await tempDir(t);
  const quotaBytes = 3500;
  const store = await openBlobStore(folder, { quotaBytes });
  const a = await store.put(blobOf("a", 1000));
  const b = await store.put(blobOf("b", 1000));
  const c = await store.put(blobOf("c", 1000));
  t.not(await store.get(a), null, "a used again: b is now the least recently used");
  const d = await store.put(blobOf("d", 1000));
  t.deepEqual(await Promise.all([a, b, c, d].map((cid) => store.has(cid))), [true, false, true, true]);
  // Another process, later: use times come from the files.
  const reopened = await openBlobStore(folder, { quotaBytes });
  t.is(reopened.usedBytes(), 3000);
  const e = await reopened.put(blobOf("e", 1000));
  t.deepEqual(await Promise.all([a, c, d, e].map((cid) => reopened.has(cid))), [true, false, true, true]);
  t.is(await reopened.evict(), 0, "under the quota: nothing to evict");
});

test("a pinned blob is never evicted; pins beyond the quota make put fail rather than evict them", async (t) => {
  const quotaBytes = 3500;
  const store = await openBlobStore(await tempDir(t), { quotaBytes });
  const a = await store.put(blobOf("a", 1000));
  const releaseA = store.pin([a]);
  for (let i = 0; i < 20; i++) await store.put(blobOf(`other-${i}`, 900));
  t.true(await store.has(a));
  t.not(await store.get(a), null);

  const b = await store.put(blobOf("b", 1000));
  const c = await store.put(blobOf("c", 1000));
  const releaseBC = store.pin([b, c]);
  // A pin before the blob arrives (as a fetch does) counts once it is there.
  const dBytes = blobOf("d", 1000);
  const releaseD = store.pin([cidOfBlob(dBytes)]);
  const error = await t.throwsAsync(store.put(dBytes), { instanceOf: BlobQuotaError });
  t.is(error?.code, "ERR_BLOB_QUOTA");
  t.regex(error?.message ?? "", /quota of 3500 bytes, but pinned blobs hold 3000 bytes/);
  t.false(await store.has(cidOfBlob(dBytes)), "the refused blob is not left behind");
  t.true(store.usedBytes() <= quotaBytes);
  t.deepEqual(await Promise.all([a, b, c].map((cid) => store.has(cid))), [true, true, true]);

  releaseBC();
  releaseBC(); // releasing twice releases once
  const d = await store.put(dBytes);
  t.true(await store.has(d));
  t.true(await store.has(a), "still pinned");
  t.true(store.usedBytes() <= quotaBytes);
  // Two pins of one blob: it stays protected until both are released.
  const releaseA2 = store.pin([a]);
  releaseA();
  for (let i = 0; i < 10; i++) await store.put(blobOf(`more-${i}`, 900));
  t.true(await store.has(a));
  releaseA2();
  releaseD();
  for (let i = 0; i < 10; i++) await store.put(blobOf(`last-${i}`, 900));
  t.false(await store.has(a), "unpinned, it is evicted in its turn");
});

test("a quota smaller than one blob refuses it with BlobQuotaError", async (t) => {
  const store = await openBlobStore(await tempDir(t), { quotaBytes: 10 });
  await t.throwsAsync(store.put(blobOf("x", 11)), { instanceOf: BlobQuotaError });
  t.is(store.usedBytes(), 0);
  await t.throwsAsync(openBlobStore(await tempDir(t), { quotaBytes: -1 }));
});

test("two stores sharing one folder see each other's blobs, and eviction counts both", async (t) => {
  const folder = await tempDir(t);
  const node = await openBlobStore(folder, { quotaBytes: 3500 });
  const cli = await openBlobStore(folder);
  const x = await cli.put(blobOf("x", 1000));
  t.true(await node.has(x));
  t.deepEqual(await node.get(x), blobOf("x", 1000));
  const y = await node.put(blobOf("y", 1000));
  t.true(await cli.has(y));
  await cli.put(blobOf("z", 1000));
  await cli.put(blobOf("w", 1000));
  t.is(await diskBytes(node), 4000, "the other store put past the quota");
  await node.put(blobOf("v", 1000));
  t.true((await diskBytes(node)) <= 3500, "the quota holds over what the other store put");
  // A blob removed by one store reads as absent in the other.
  const u = await node.put(blobOf("u", 500));
  await rm(node.pathOf(u));
  t.false(await cli.has(u));
  t.is(await cli.get(u), null);
});

// --- outputs of a run -----------------------------------------------------------------------------------------

test("packOutputs: declared outputs as a tree, links resolved as the job saw them, missing ones absent", async (t) => {
  const work = await tempDir(t);
  await mkdir(join(work, "dist/empty"), { recursive: true });
  await mkdir(join(work, "logs"));
  await writeFile(join(work, "dist/app"), "binary", { mode: 0o755 });
  await writeFile(join(work, "logs/run.txt"), "log");
  await writeFile(join(work, "not-declared"), "no");
  await symlink("/work/dist/app", join(work, "app-link"));
  const store = await openBlobStore(await tempDir(t));
  const root = await packOutputs(work, ["dist/", "logs/run.txt", "app-link", "missing.txt"], store);
  const { manifest } = await treeBlobs(root, store);
  t.deepEqual(
    manifest.files.map((f) => [f.path, f.sizeBytes, f.executable]),
    [
      ["app-link", 6, true],
      ["dist/app", 6, true],
      ["logs/run.txt", 3, false],
    ],
  );
  t.deepEqual(manifest.dirs, ["dist", "dist/empty", "logs"]);
  const out = await tempDir(t);
  await unpackTree(root, store, out);
  t.is(await readFile(join(out, "app-link"), "utf8"), "binary");

  // Nothing present: the empty tree.
  const none = await packOutputs(work, ["missing.txt"], store);
  t.deepEqual((await treeBlobs(none, store)).manifest.files, []);
  // The whole work folder.
  const whole = await packOutputs(work, ["."], store);
  t.true((await treeBlobs(whole, store)).manifest.files.some((f) => f.path === "not-declared"));

  await symlink("/etc", join(work, "leak"));
  await t.throwsAsync(packOutputs(work, ["leak"], store), {
    instanceOf: OutputRefusedError,
    message: /leads out of it/,
  });
  await t.throwsAsync(packOutputs(work, ["../x"], store), { instanceOf: OutputRefusedError });
});

test("an executor given a blob store reports the outputs tree's root CID, which unpacks to the outputs", async (t) => {
  const workRoot = await tempDir(t, "cimesh-work-");
  const probe = await probeSandbox({ workRoot });
  const store = await openBlobStore(await tempDir(t));
  const executor = createExecutor({ workRoot, blobStore: store, allowUnsandboxed: !probe.ok, onWarning: () => {} });
  const job = jobSpecSchema.parse({
    name: "outputs-tree",
    steps: [{ name: "build", run: "mkdir -p dist/empty && printf hello > dist/a.txt && chmod +x dist/a.txt" }],
    env: {},
    timeoutMs: 30_000,
    resources: { cpus: 1, memoryBytes: 256 * 1024 * 1024, diskBytes: 0, processes: 64 },
    network: false,
    outputs: ["dist", "missing.txt"],
    inputsDigest: null,
    requiredSpecs: [],
    os: null,
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 1,
    deadlineMs: 1_800_000_000_000,
  });
  const request = (runId: string): ExecutionRequest => ({
    runId,
    project: "project-1",
    jobId: "job-1",
    attempt: 0,
    shard: 0,
    job,
    env: {},
  });
  const report = await executor.run(request("run-1"), { onLog: () => {} });
  t.is(report.outcome, "succeeded", report.summary);
  const root = report.outputsDigest;
  if (root === null) throw new Error("no outputs digest");
  t.is(parseTreeCid(root).kind, "manifest");
  const out = await tempDir(t);
  await unpackTree(root, store, out);
  t.is(await readFile(join(out, "dist/a.txt"), "utf8"), "hello");
  t.is((await stat(join(out, "dist/a.txt"))).mode & 0o777, 0o755);
  t.true((await stat(join(out, "dist/empty"))).isDirectory());
  const again = await executor.run(request("run-2"), { onLog: () => {} });
  t.is(again.outputsDigest, root, "same outputs, same root");
  await chmod(out, 0o755);
});

test("packTree enforces the tree limits while walking: depth; a name of 255 bytes still round-trips", async (t) => {
  const store = await openBlobStore(await tempDir(t));
  const deep = await tempDir(t);
  await mkdir(join(deep, ...Array(257).fill("d")), { recursive: true });
  const error = await t.throwsAsync(packTree(deep, store), { instanceOf: TreePackError });
  t.regex(error?.message ?? "", /expected a path at most 256 levels deep, got 257/);

  const long = await tempDir(t);
  const name = "n".repeat(255);
  await writeFile(join(long, name), "long");
  const { root } = await packTree(long, store);
  const out = await tempDir(t);
  await unpackTree(root, store, out);
  t.is(await readFile(join(out, name), "utf8"), "long");
  t.deepEqual(await readdir(out), [name], "no temporary file is left behind");
});
