/**
 * crypto/tree.ts: CIDs of blobs and manifests, the refusal of CIDs
 * of other kinds, and the tree manifest's checks: paths that escape, limits,
 * canonical form; property tests that decodeManifest throws nothing but its
 * own error on any input, and that encode→decode round-trips valid manifests.
 */
import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import { encode as cborEncode } from "cborg";
import { base58btc } from "multiformats/bases/base58";
import { CID } from "multiformats/cid";
import * as raw from "multiformats/codecs/raw";
import { create as createDigest } from "multiformats/hashes/digest";
import { sha256, sha512 } from "multiformats/hashes/sha2";
import {
  BlobMismatchError,
  CimeshError,
  chunkCountOf,
  chunkSizeOf,
  cidOfBlob,
  cidOfManifest,
  decodeManifest,
  encodeCanonical,
  encodeManifest,
  MalformedCidError,
  manifestChunks,
  maxChunksPerFile,
  maxManifestBytes,
  maxTreeBytes,
  maxTreeDepthLevels,
  maxTreeEntries,
  maxTreeNameBytes,
  maxTreePathChars,
  parseTreeCid,
  type TreeFile,
  type TreeManifest,
  TreeManifestError,
  treeChunkBytes,
  treePathProblem,
  UnsupportedCidError,
  verifyBlob,
} from "../crypto/index.ts";

const bytesOf = (text: string) => new TextEncoder().encode(text);
const chunkA = cidOfBlob(bytesOf("a"));
const chunkB = cidOfBlob(bytesOf("b"));

function manifestOf(files: TreeFile[], dirs: string[] = []): TreeManifest {
  return { version: 1, chunkBytes: treeChunkBytes, files, dirs };
}

function fileOf(path: string, sizeBytes = 1, chunks?: string[]): TreeFile {
  return {
    path,
    sizeBytes,
    executable: false,
    chunks:
      chunks ?? Array.from({ length: chunkCountOf(sizeBytes) }, (_, i) => cidOfBlob(Uint8Array.of(i % 256, i >> 8))),
  };
}

/** Encodes any value as canonical CBOR, without encodeManifest's checks: what a hostile peer can send. */
const rawManifest = (value: unknown) => encodeCanonical(value);

// --- CIDs -----------------------------------------------------------------------------------------------------

test("cidOfBlob is the CIDv1 raw sha2-256 base32 CID multiformats computes", async (t) => {
  const bytes = bytesOf("hello tree");
  const expected = CID.createV1(raw.code, await sha256.digest(bytes)).toString();
  t.is(cidOfBlob(bytes), expected);
  t.true(expected.startsWith("bafkrei"));
  // The well-known CID of no bytes at all.
  t.is(cidOfBlob(new Uint8Array(0)), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
});

test("cidOfManifest uses the dag-cbor codec over the same hash", async (t) => {
  const bytes = encodeManifest(manifestOf([fileOf("a")]));
  const cid = cidOfManifest(bytes);
  t.is(cid, CID.createV1(0x71, await sha256.digest(bytes)).toString());
  t.true(cid.startsWith("bafyrei"));
  t.deepEqual(parseTreeCid(cid), { cid, kind: "manifest" });
  t.deepEqual(parseTreeCid(chunkA), { cid: chunkA, kind: "blob" });
});

test("a CID of another codec is refused, naming what was expected and what came", async (t) => {
  const dagPb = CID.createV1(0x70, await sha256.digest(bytesOf("x"))).toString();
  const error = t.throws(() => parseTreeCid(dagPb), { instanceOf: UnsupportedCidError });
  t.is(error?.code, "ERR_UNSUPPORTED_CID");
  t.true(error?.message.startsWith("cid: expected codec raw (0x55) or dag-cbor (0x71), got dag-pb (0x70)"));
  const dagJson = CID.createV1(0x0129, await sha256.digest(bytesOf("x"))).toString();
  t.throws(() => parseTreeCid(dagJson), { instanceOf: UnsupportedCidError, message: /got dag-json \(0x129\)/ });
});

test("a CIDv0, another hash, or a short digest is refused", async (t) => {
  const v0 = CID.createV0(await sha256.digest(bytesOf("x"))).toString();
  t.throws(() => parseTreeCid(v0), { instanceOf: UnsupportedCidError, message: /expected a CIDv1, got CIDv0/ });
  const sha512Cid = CID.createV1(raw.code, await sha512.digest(bytesOf("x"))).toString();
  t.throws(() => parseTreeCid(sha512Cid), {
    instanceOf: UnsupportedCidError,
    message: /expected hash sha2-256 \(0x12\), got sha2-512 \(0x13\)/,
  });
  const short = CID.createV1(raw.code, createDigest(0x12, new Uint8Array(20))).toString();
  t.throws(() => parseTreeCid(short), { instanceOf: UnsupportedCidError, message: /32-byte/ });
  const identity = CID.createV1(raw.code, createDigest(0x00, bytesOf("inline"))).toString();
  t.throws(() => parseTreeCid(identity), { instanceOf: UnsupportedCidError, message: /got identity/ });
});

test("text that is no CID is refused as malformed, never with another error", (t) => {
  for (const text of [
    "",
    "hello",
    "bafk",
    `b${"a".repeat(200)}`,
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk!",
  ]) {
    const error = t.throws(() => parseTreeCid(text));
    t.true(error instanceof MalformedCidError || error instanceof UnsupportedCidError, text);
  }
  t.throws(() => parseTreeCid(42 as unknown as string), { instanceOf: MalformedCidError });
  t.throws(() => parseTreeCid(null as unknown as string), { instanceOf: MalformedCidError });
});

test("a base58btc CIDv1 is accepted and rewritten in base32", (t) => {
  const base58 = CID.parse(chunkA).toString(base58btc);
  t.not(base58, chunkA);
  t.deepEqual(parseTreeCid(base58), { cid: chunkA, kind: "blob" });
});

test("verifyBlob accepts the bytes of a CID and refuses others, for both kinds", (t) => {
  verifyBlob(chunkA, bytesOf("a"));
  const error = t.throws(() => verifyBlob(chunkA, bytesOf("b")), { instanceOf: BlobMismatchError });
  t.is(error?.code, "ERR_BLOB_MISMATCH");
  t.is(error?.actual, chunkB);
  const manifest = encodeManifest(manifestOf([fileOf("x")]));
  verifyBlob(cidOfManifest(manifest), manifest);
  t.throws(() => verifyBlob(cidOfManifest(manifest), manifest.subarray(1)), { instanceOf: BlobMismatchError });
  // The same bytes under the other codec's CID hash the same: verifyBlob checks the digest, the kind is the caller's.
  verifyBlob(cidOfBlob(manifest), manifest);
});

test("chunk arithmetic: none for an empty file, full chunks then a shorter last one", (t) => {
  t.is(chunkCountOf(0), 0);
  t.is(chunkCountOf(1), 1);
  t.is(chunkCountOf(treeChunkBytes), 1);
  t.is(chunkCountOf(treeChunkBytes + 1), 2);
  t.is(chunkSizeOf(treeChunkBytes * 2 + 5, 0), treeChunkBytes);
  t.is(chunkSizeOf(treeChunkBytes * 2 + 5, 2), 5);
  t.is(maxChunksPerFile, chunkCountOf(maxTreeBytes));
});

// --- manifests: what is accepted ---------------------------------------------------------------------------

test("encodeManifest sorts entries by path bytes and leaves other properties out; decode gives it back", (t) => {
  const files = [
    { ...fileOf("z.txt", 3), executable: true, extra: "dropped" },
    fileOf("a/é.txt", treeChunkBytes * 2 + 1),
    fileOf("a/b.txt", 0),
    fileOf("a\\..\\b", 1),
  ];
  const manifest = manifestOf(files, ["empty", "a"]);
  const bytes = encodeManifest(manifest);
  const decoded = decodeManifest(bytes);
  t.deepEqual(
    decoded.files.map((file) => file.path),
    ["a/b.txt", "a/é.txt", "a\\..\\b", "z.txt"],
  );
  t.deepEqual(decoded.dirs, ["a", "empty"]);
  t.false("extra" in (decoded.files[3] as object));
  t.true(decoded.files[3]?.executable);
  t.deepEqual(decoded.files[0]?.chunks, []);
  t.is(decoded.files[1]?.chunks.length, 3);
  t.deepEqual(encodeManifest(decoded), bytes);
  t.deepEqual(encodeManifest({ ...manifest, files: [...files].reverse(), dirs: ["a", "empty"] }), bytes);
});

test("manifestChunks lists each chunk once", (t) => {
  const manifest = manifestOf([fileOf("a", 1, [chunkA]), fileOf("b", 1, [chunkA]), fileOf("c", 1, [chunkB])]);
  t.deepEqual(manifestChunks(manifest), [chunkA, chunkB]);
});

test("an empty tree has a manifest and a CID", (t) => {
  const bytes = encodeManifest(manifestOf([]));
  t.deepEqual(decodeManifest(bytes), manifestOf([]));
  t.true(cidOfManifest(bytes).startsWith("bafyrei"));
});

// --- manifests: what is refused ----------------------------------------------------------------------------

/** Refused by decodeManifest with this message, and (unless encodeManifest would mend it: order, extra keys) by encodeManifest. */
function refusedWith(
  t: import("ava").ExecutionContext,
  value: unknown,
  message: RegExp | string,
  { mendedByEncode = false } = {},
): void {
  const error = t.throws(() => decodeManifest(rawManifest(value)), { instanceOf: TreeManifestError });
  t.is(error?.code, "ERR_TREE_MANIFEST");
  if (typeof message === "string") t.is(error?.message, message);
  else t.regex(error?.message ?? "", message);
  // encodeManifest refuses the same, so nothing a peer would refuse is ever made.
  if (mendedByEncode) t.notThrows(() => decodeManifest(encodeManifest(value as TreeManifest)));
  else t.throws(() => encodeManifest(value as TreeManifest), { instanceOf: CimeshError });
}

test("paths that escape or are not normalised are refused, naming the field", (t) => {
  refusedWith(
    t,
    manifestOf([fileOf("../../etc/passwd")]),
    "files[0].path: expected a relative path without '..', got ../../etc/passwd",
  );
  refusedWith(t, manifestOf([fileOf("/etc/passwd")]), /files\[0\]\.path: expected a relative path, got the absolute/);
  refusedWith(t, manifestOf([fileOf("a/../../b")], ["a"]), /files\[0\]\.path: expected a relative path without '\.\.'/);
  refusedWith(t, manifestOf([fileOf("./a")]), /files\[0\]\.path: expected a normalised path without '\.'/);
  refusedWith(t, manifestOf([fileOf("a//b")], ["a"]), /files\[0\]\.path: .*empty segments/);
  refusedWith(t, manifestOf([], ["a/"]), /dirs\[0\]: .*empty segments/);
  refusedWith(t, manifestOf([fileOf("")]), /files\[0\]\.path: expected a non-empty/);
  refusedWith(t, manifestOf([fileOf("a\0b")]), /files\[0\]\.path: expected a path without NUL/);
  refusedWith(t, manifestOf([], [".."]), /dirs\[0\]: expected a relative path without '\.\.'/);
  refusedWith(t, manifestOf([fileOf("x")], ["a", "a/b", "a/b/.."]), /dirs\[2\]/);
  // A backslash is a plain character of a POSIX name: nothing to escape with.
  t.is(treePathProblem("a\\..\\..\\b"), null);
});

test("duplicate, unsorted and conflicting entries are refused", (t) => {
  refusedWith(t, manifestOf([fileOf("b"), fileOf("a")]), /files\[1\]\.path: expected paths unique and sorted/, {
    mendedByEncode: true,
  });
  refusedWith(t, manifestOf([fileOf("a"), fileOf("a")]), /files\[1\]\.path: expected paths unique and sorted/);
  refusedWith(t, manifestOf([], ["b", "a"]), /dirs\[1\]: expected paths unique and sorted/, { mendedByEncode: true });
  refusedWith(t, manifestOf([fileOf("a")], ["a"]), /files\[0\]\.path: expected a path that is not also a folder/);
  // A file inside a file: its parent is a file, not a listed folder.
  refusedWith(t, manifestOf([fileOf("a"), fileOf("a/b")]), /files\[1\]\.path: expected its parent folder "a" listed/);
  refusedWith(t, manifestOf([fileOf("a/b")]), /files\[0\]\.path: expected its parent folder "a" listed in dirs/);
  refusedWith(t, manifestOf([], ["a/b"]), /dirs\[0\]: expected its parent folder "a" listed in dirs/);
});

test("chunks inconsistent with sizes, or not raw sha2-256 base32 CIDs, are refused", async (t) => {
  refusedWith(
    t,
    manifestOf([fileOf("a", 5, [])]),
    "files[0].chunks: expected 1 chunks for 5 bytes in chunks of 1048576, got 0",
  );
  refusedWith(t, manifestOf([fileOf("a", 0, [chunkA])]), /files\[0\]\.chunks: expected 0 chunks for 0 bytes/);
  refusedWith(t, manifestOf([fileOf("a", treeChunkBytes + 1, [chunkA])]), /expected 2 chunks/);
  const manifestCid = cidOfManifest(bytesOf("m"));
  refusedWith(t, manifestOf([fileOf("a", 1, [manifestCid])]), /files\[0\]\.chunks\[0\]: expected a CID of codec raw/);
  const dagPb = CID.createV1(0x70, await sha256.digest(bytesOf("x"))).toString();
  refusedWith(t, manifestOf([fileOf("a", 1, [dagPb])]), /files\[0\]\.chunks\[0\]: .*got dag-pb \(0x70\)/);
  refusedWith(t, manifestOf([fileOf("a", 1, ["nonsense"])]), /files\[0\]\.chunks\[0\]: expected a CIDv1/);
  const base58 = CID.parse(chunkA).toString(base58btc);
  refusedWith(t, manifestOf([fileOf("a", 1, [base58])]), /files\[0\]\.chunks\[0\]: expected the base32 form/);
  refusedWith(t, manifestOf([{ ...fileOf("a"), sizeBytes: -1 }]), /files\[0\]\.sizeBytes: expected an integer/);
  refusedWith(t, manifestOf([{ ...fileOf("a"), sizeBytes: 1.5 }]), /files\[0\]\.sizeBytes: expected an integer/);
  refusedWith(t, manifestOf([{ ...fileOf("a"), executable: 1 as unknown as boolean }]), /files\[0\]\.executable/);
});

test("a manifest of another version, chunk size or shape is refused", (t) => {
  refusedWith(t, { ...manifestOf([]), version: 2 }, "manifest.version: expected 1, got 2");
  refusedWith(t, { ...manifestOf([]), chunkBytes: 4096 }, "manifest.chunkBytes: expected 1048576, got 4096");
  refusedWith(t, { ...manifestOf([]), extra: true }, /manifest: expected only the keys .*got also "extra"/, {
    mendedByEncode: true,
  });
  refusedWith(t, { version: 1, chunkBytes: treeChunkBytes, files: [] }, /manifest: expected a key "dirs"/);
  refusedWith(t, manifestOf([{ ...fileOf("a"), mode: 0o755 } as TreeFile]), /files\[0\]: expected only the keys/, {
    mendedByEncode: true,
  });
  refusedWith(t, [1, 2], /manifest: expected a map, got an array/);
  refusedWith(t, { ...manifestOf([]), files: "x" }, /files: expected an array/);
});

test("bytes that are not canonical CBOR are refused as a TreeManifestError", (t) => {
  const value = { version: 1, chunkBytes: treeChunkBytes, files: [], dirs: [] };
  // Keys in insertion order rather than the canonical one.
  const unsorted = cborEncode(value, { mapSorter: () => 0 });
  t.throws(() => decodeManifest(unsorted), { instanceOf: TreeManifestError, message: /^manifest: .*deterministic/ });
  t.throws(() => decodeManifest(Uint8Array.of(0xff)), { instanceOf: TreeManifestError });
  t.throws(() => decodeManifest(new Uint8Array(0)), { instanceOf: TreeManifestError });
  t.throws(() => decodeManifest("text" as unknown as Uint8Array), { instanceOf: TreeManifestError });
});

test("manifests over the limits are refused: size, entries, total bytes, file size, path length, depth, name", (t) => {
  t.throws(() => decodeManifest(new Uint8Array(maxManifestBytes + 1)), {
    instanceOf: TreeManifestError,
    message: `manifest: expected at most ${maxManifestBytes} bytes, got ${maxManifestBytes + 1}`,
  });
  const manyDirs = Array.from({ length: maxTreeEntries + 1 }, (_, i) => `d${String(i).padStart(6, "0")}`);
  refusedWith(
    t,
    manifestOf([], manyDirs),
    /manifest: expected at most 100000 files and folders, got 0 files and 100001/,
  );
  // Two files that fit alone but not together (chunks are only counted here, not fetched).
  const half = maxTreeBytes / 2 + treeChunkBytes;
  refusedWith(
    t,
    manifestOf([
      fileOf("a", half, Array(chunkCountOf(half)).fill(chunkA)),
      fileOf("b", half, Array(chunkCountOf(half)).fill(chunkA)),
    ]),
    /files\[1\]\.sizeBytes: expected all files together at most 17179869184 bytes/,
  );
  refusedWith(
    t,
    manifestOf([fileOf("a", maxTreeBytes + 1, [])]),
    /files\[0\]\.sizeBytes: expected an integer in 0\.\.17179869184/,
  );
  refusedWith(t, manifestOf([fileOf("x".repeat(maxTreePathChars + 1))]), /expected a path of at most 4096 characters/);
  const deep = Array.from({ length: maxTreeDepthLevels + 1 }, () => "d");
  const deepDirs = deep.map((_, i) => deep.slice(0, i + 1).join("/"));
  refusedWith(t, manifestOf([], deepDirs), /dirs\[256\]: expected a path at most 256 levels deep, got 257/);
  refusedWith(t, manifestOf([fileOf("n".repeat(maxTreeNameBytes + 1))]), /names of at most 255 UTF-8 bytes/);
  // At the limits, accepted.
  t.notThrows(() => decodeManifest(encodeManifest(manifestOf([], deepDirs.slice(0, maxTreeDepthLevels)))));
  t.notThrows(() => decodeManifest(encodeManifest(manifestOf([fileOf("n".repeat(maxTreeNameBytes))]))));
});

// --- properties -----------------------------------------------------------------------------------------------

const segment = fc
  .string({
    unit: fc.constantFrom("a", "b", "Z", ".", "\\", " ", "-", "é", "日", "😀", "\u{1F468}"),
    minLength: 1,
    maxLength: 5,
  })
  .filter((name) => name !== "." && name !== "..");

interface Draft {
  readonly parts: string[];
  readonly asFile: boolean;
  readonly sizeBytes: number;
  readonly executable: boolean;
}

/** A valid manifest from drafts: an entry that is the prefix of another is a folder, every parent is listed. */
function manifestFromDrafts(drafts: readonly Draft[]): TreeManifest {
  const entries = new Map<string, Draft>();
  const prefixes = new Set<string>();
  for (const draft of drafts) {
    const path = draft.parts.join("/");
    if (!entries.has(path)) entries.set(path, draft);
    for (let i = 1; i < draft.parts.length; i++) prefixes.add(draft.parts.slice(0, i).join("/"));
  }
  const files: TreeFile[] = [];
  const dirs = new Set(prefixes);
  for (const [path, draft] of entries) {
    if (prefixes.has(path) || !draft.asFile) dirs.add(path);
    else {
      files.push({
        path,
        sizeBytes: draft.sizeBytes,
        executable: draft.executable,
        chunks: Array.from({ length: chunkCountOf(draft.sizeBytes) }, (_, i) => cidOfBlob(bytesOf(`${path}#${i}`))),
      });
    }
  }
  return manifestOf(files, [...dirs]);
}

const draft = fc.record({
  parts: fc.array(segment, { minLength: 1, maxLength: 4 }),
  asFile: fc.boolean(),
  sizeBytes: fc.oneof(fc.constant(0), fc.nat({ max: 100 }), fc.nat({ max: 3 * treeChunkBytes + 7 })),
  executable: fc.boolean(),
});
const validManifest = fc.array(draft, { maxLength: 24 }).map(manifestFromDrafts);

testProp(
  "encode→decode round-trips every valid manifest, sorted, and encoding is canonical",
  [validManifest],
  (t, manifest) => {
    const bytes = encodeManifest(manifest);
    const decoded = decodeManifest(bytes);
    const sortByBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
    t.deepEqual(
      decoded.files.map((file) => file.path),
      manifest.files.map((file) => file.path).sort(sortByBytes),
    );
    t.deepEqual(decoded.dirs, [...manifest.dirs].sort(sortByBytes));
    for (const file of decoded.files)
      t.deepEqual(
        file,
        manifest.files.find((f) => f.path === file.path),
      );
    t.deepEqual(encodeManifest(decoded), bytes);
    t.deepEqual(
      encodeManifest({ ...manifest, files: [...manifest.files].reverse(), dirs: [...manifest.dirs].reverse() }),
      bytes,
    );
  },
  { numRuns: 300 },
);

testProp(
  "decodeManifest throws nothing but TreeManifestError on random bytes",
  [fc.uint8Array({ maxLength: 256 })],
  (t, bytes) => {
    try {
      decodeManifest(bytes);
      t.pass();
    } catch (error) {
      t.true(error instanceof TreeManifestError, String(error));
    }
  },
  { numRuns: 3000 },
);

const junk = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 8 }),
  fc.uint8Array({ maxLength: 8 }),
  fc.constant([]),
  fc.constant({}),
);
const pathLike = fc.oneof(
  segment,
  fc.array(segment, { minLength: 1, maxLength: 3 }).map((parts) => parts.join("/")),
  fc.constantFrom("", ".", "..", "/", "a/", "/a", "a//b", "./a", "a/./b", "../x", "a/..", "a\0", "a\\b", "\uFEFFa"),
  junk,
);
const cidLike = fc.oneof(
  fc.constant(chunkA),
  fc.constant(chunkB),
  fc.constant(cidOfManifest(bytesOf("m"))),
  fc.constant(CID.parse(chunkA).toString(base58btc)),
  fc.string({ maxLength: 70 }),
  junk,
);
const fileLike = fc.oneof(
  fc.record(
    {
      path: pathLike,
      sizeBytes: fc.oneof(fc.nat({ max: 3 * treeChunkBytes }), fc.integer(), junk),
      executable: fc.oneof(fc.boolean(), junk),
      chunks: fc.oneof(fc.array(cidLike, { maxLength: 4 }), junk),
      extra: junk,
    },
    { requiredKeys: [] },
  ),
  junk,
);
const manifestLike = fc.record(
  {
    version: fc.oneof(fc.constant(1), junk),
    chunkBytes: fc.oneof(fc.constant(treeChunkBytes), junk),
    files: fc.oneof(fc.array(fileLike, { maxLength: 6 }), junk),
    dirs: fc.oneof(fc.array(pathLike, { maxLength: 6 }), junk),
    other: junk,
  },
  { requiredKeys: [] },
);

testProp(
  "decodeManifest and encodeManifest throw nothing but the project's errors on manifest-like values",
  [manifestLike],
  (t, value) => {
    let bytes: Uint8Array | null = null;
    try {
      bytes = rawManifest(value);
    } catch (error) {
      t.true(error instanceof CimeshError, String(error));
    }
    if (bytes !== null) {
      try {
        const decoded = decodeManifest(bytes);
        // Whatever is accepted encodes back to the very same bytes.
        t.deepEqual(encodeManifest(decoded), bytes);
      } catch (error) {
        t.true(error instanceof TreeManifestError, String(error));
      }
    }
    try {
      encodeManifest(value as unknown as TreeManifest);
    } catch (error) {
      t.true(error instanceof CimeshError, String(error));
    }
  },
  { numRuns: 2000 },
);
