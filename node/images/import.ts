/**
 * `cimesh image import`: an OCI image layout (a folder) or a `docker save`
 * tarball made into a content-addressed tree (crypto/tree.ts) in the blob
 * store, whose root CID names the image.
 *
 * What does what:
 * - The `tar` package reads the tarball and lists every layer's entries
 *   (gzip included) before anything is applied: a layer with a device node,
 *   a FIFO, a path or hard link with a `..` segment, or a relative symlink
 *   that climbs out of the image's root is refused, naming the layer and the
 *   entry. An absolute symlink is a path inside the image, as for a container.
 * - Debian's umoci applies the layers in order (`umoci unpack --rootless`),
 *   whiteouts and opaque folders as the OCI image spec says; rootless, it
 *   never makes a device or changes an owner, even when run by root.
 * - packTree stores the root filesystem: links are followed inside it and
 *   stored as copies (a tree has files and folders only), absolute targets read
 *   from the image's own root, links that lead nowhere inside left out (and
 *   listed); owners and set-uid bits are not part of a tree, so an image
 *   carries no privilege.
 * - A legacy `docker save` tarball (manifest.json and one folder per layer)
 *   is laid out as an OCI image first; a newer one holds an OCI layout already.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as tar from "tar";
import { CimeshError } from "../../crypto/index.ts";
import { type BlobStore, packTree } from "../store/index.ts";

/** umoci, from Debian's umoci package (`cimesh setup --with-test-deps` installs it). */
export const umociName = "umoci";
/** Characters of umoci's complaint kept in an error. */
export const maxToolOutputChars = 2000;
/** Bytes of an index.json or manifest read. */
export const maxImageJsonBytes = 4 * 1024 * 1024;
/** Layers of one image. */
export const maxImageLayers = 256;
/** Links leading nowhere listed in an import's report (their count is always given). */
export const maxListedDanglingLinks = 20;
/** The annotation naming a manifest's tag in an OCI index. */
export const refNameAnnotation = "org.opencontainers.image.ref.name";
/** The tag given to the one image of a legacy `docker save` tarball once laid out as OCI. */
export const legacyImportTag = "latest";

/** An image that cannot be imported: names what and where, and what was expected. */
export class ImageImportError extends CimeshError {
  constructor(message: string) {
    super("ERR_IMAGE_IMPORT", message);
  }
}

export interface ImportOptions {
  /** Which tagged manifest of the layout (org.opencontainers.image.ref.name); default: the only one. */
  readonly tag?: string;
  /** umoci: a path or a name on the PATH. */
  readonly umoci?: string;
  /** Where temporary folders go; default the system's. */
  readonly tempDir?: string;
}

export interface ImportResult {
  /** The image's CID: the root of its tree. */
  readonly root: string;
  readonly tag: string;
  readonly layers: number;
  readonly files: number;
  readonly bytes: number;
  /** Symlinks that lead nowhere inside the image, left out (the first maxListedDanglingLinks). */
  readonly danglingLinks: readonly string[];
  readonly danglingLinkCount: number;
}

interface Descriptor {
  readonly mediaType?: string;
  readonly digest: string;
  readonly size?: number;
  readonly annotations?: Record<string, string>;
}

async function readJson(path: string, what: string): Promise<unknown> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch {
    throw new ImageImportError(`${what}: expected a file at ${path}, found none`);
  }
  if (info.size > maxImageJsonBytes) {
    throw new ImageImportError(`${what}: expected at most ${maxImageJsonBytes} bytes, got ${info.size}`);
  }
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new ImageImportError(`${what} (${path}): expected JSON, ${(error as Error).message}`);
  }
}

const digestPattern = /^sha256:([0-9a-f]{64})$/;

function blobPath(layout: string, digest: unknown, what: string): string {
  const match = typeof digest === "string" ? digestPattern.exec(digest) : null;
  if (match === null) throw new ImageImportError(`${what}.digest: expected "sha256:<64 hex>", got ${String(digest)}`);
  return join(layout, "blobs", "sha256", match[1] as string);
}

function descriptors(value: unknown, field: string, what: string): Descriptor[] {
  const list = (value as Record<string, unknown> | null)?.[field];
  if (!Array.isArray(list)) throw new ImageImportError(`${what}.${field}: expected an array`);
  return list as Descriptor[];
}

/** The tag to unpack: the one asked for, or the only tagged manifest of the index. */
async function pickTag(layout: string, tag: string | undefined): Promise<string> {
  const index = await readJson(join(layout, "index.json"), "index.json");
  const tags = descriptors(index, "manifests", "index.json")
    .map((entry) => entry.annotations?.[refNameAnnotation])
    .filter((name): name is string => typeof name === "string");
  if (tag !== undefined) {
    if (!tags.includes(tag)) {
      throw new ImageImportError(`--tag: expected one of the layout's tags (${tags.join(", ") || "none"}), got ${tag}`);
    }
    return tag;
  }
  if (tags.length !== 1) {
    throw new ImageImportError(
      `index.json: expected exactly one tagged manifest (annotation ${refNameAnnotation}) or --tag, got ${tags.length}` +
        (tags.length > 0 ? ` (${tags.join(", ")})` : ""),
    );
  }
  return tags[0] as string;
}

/** The layer blobs of the tagged manifest, in the order they apply. */
async function layersOf(layout: string, tag: string): Promise<string[]> {
  const index = await readJson(join(layout, "index.json"), "index.json");
  const entry = descriptors(index, "manifests", "index.json").find(
    (candidate) => candidate.annotations?.[refNameAnnotation] === tag,
  );
  if (entry === undefined) throw new ImageImportError(`index.json: expected a manifest tagged ${tag}, found none`);
  const manifest = await readJson(blobPath(layout, entry.digest, `manifest ${tag}`), `manifest ${tag}`);
  const layers = descriptors(manifest, "layers", `manifest ${tag}`);
  if (layers.length > maxImageLayers) {
    throw new ImageImportError(`manifest ${tag}.layers: expected at most ${maxImageLayers}, got ${layers.length}`);
  }
  return layers.map((layer, i) => blobPath(layout, layer.digest, `manifest ${tag}.layers[${i}]`));
}

/** Segments of a tar entry's path, its leading "/" and "./" dropped. */
function segmentsOf(path: string): string[] {
  return path.split("/").filter((part) => part !== "" && part !== ".");
}

/** Why a layer entry is refused, or null. */
export function layerEntryProblem(entry: { type: string; path: string; linkpath?: string }): string | null {
  const { type, path } = entry;
  if (type === "CharacterDevice" || type === "BlockDevice") {
    return "no device nodes (an image is files, folders and links), got a device node";
  }
  if (type === "FIFO") return "no FIFOs, got one";
  const parts = segmentsOf(path);
  if (parts.includes("..")) return "a path inside the image, got one with a '..' segment";
  const target = entry.linkpath ?? "";
  if (type === "Link" && segmentsOf(target).includes("..")) {
    return `a hard link to a path inside the image, got one to ${JSON.stringify(target)}`;
  }
  if (type === "SymbolicLink" && !target.startsWith("/")) {
    // Resolved from the link's folder, as far as the text says: a relative target may not climb above the root.
    const at = parts.slice(0, -1);
    for (const part of segmentsOf(target)) {
      if (part !== "..") at.push(part);
      else if (at.pop() === undefined) {
        return `a symlink that stays inside the image, got one to ${JSON.stringify(target)}, which leads out`;
      }
    }
  }
  return null;
}

/** Lists every entry of every layer (gzip or plain, as the tar package detects) and refuses the first hostile one. */
async function checkLayers(layers: readonly string[]): Promise<void> {
  for (const [index, file] of layers.entries()) {
    let problem: string | null = null;
    try {
      await tar.t({
        file,
        strict: true,
        onReadEntry: (entry) => {
          if (problem !== null) return;
          const found = layerEntryProblem({ type: entry.type, path: entry.path, linkpath: entry.linkpath });
          if (found !== null) problem = `${JSON.stringify(entry.path)}: expected ${found}`;
        },
      });
    } catch (error) {
      throw new ImageImportError(`layer ${index} (${file}): expected a tar archive, ${(error as Error).message}`);
    }
    if (problem !== null) throw new ImageImportError(`layer ${index} refused: ${problem}`);
  }
}

function runTool(file: string, args: readonly string[]): Promise<void> {
  return new Promise((settle, fail) => {
    const child = spawn(file, [...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (data: Buffer) => {
      if (output.length < maxToolOutputChars) output += data.toString("utf8");
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("error", (error) => {
      const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
      fail(
        new ImageImportError(
          missing
            ? `${file}: expected Debian's umoci on the PATH, found none (apt-get install umoci, or cimesh setup --with-test-deps as root)`
            : `${file}: ${error.message}`,
        ),
      );
    });
    child.on("close", (code) => {
      if (code === 0) settle();
      else
        fail(new ImageImportError(`${file} ${args[0]}: exit ${code}: ${output.trim().slice(0, maxToolOutputChars)}`));
    });
  });
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Moves a file into the layout's blobs, named by its sha256; returns its descriptor. */
async function addBlob(layout: string, path: string, mediaType: string): Promise<Descriptor> {
  const hex = await sha256File(path);
  const size = (await stat(path)).size;
  await rename(path, join(layout, "blobs", "sha256", hex));
  return { mediaType, digest: `sha256:${hex}`, size };
}

/** Lays out the image of a legacy `docker save` tarball (manifest.json, a folder per layer) as an OCI image. */
async function layoutFromDockerSave(extracted: string, layout: string): Promise<void> {
  const manifest = await readJson(join(extracted, "manifest.json"), "manifest.json");
  if (!Array.isArray(manifest) || manifest.length !== 1) {
    throw new ImageImportError(
      `manifest.json: expected one image in the tarball, got ${Array.isArray(manifest) ? manifest.length : "no list"}`,
    );
  }
  const image = manifest[0] as { Config?: unknown; Layers?: unknown };
  if (typeof image.Config !== "string" || !Array.isArray(image.Layers)) {
    throw new ImageImportError("manifest.json[0]: expected Config (a file name) and Layers (a list of file names)");
  }
  const inside = (name: unknown, field: string): string => {
    if (typeof name !== "string" || segmentsOf(name).includes("..") || name.startsWith("/")) {
      throw new ImageImportError(`manifest.json[0].${field}: expected a file inside the tarball, got ${String(name)}`);
    }
    return join(extracted, name);
  };
  await mkdir(join(layout, "blobs", "sha256"), { recursive: true });
  const config = await addBlob(layout, inside(image.Config, "Config"), "application/vnd.oci.image.config.v1+json");
  const layers: Descriptor[] = [];
  for (const [i, name] of image.Layers.entries()) {
    layers.push(await addBlob(layout, inside(name, `Layers[${i}]`), "application/vnd.oci.image.layer.v1.tar"));
  }
  const manifestPath = join(layout, "manifest.tmp");
  await writeFile(
    manifestPath,
    JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config, layers }),
  );
  const entry = await addBlob(layout, manifestPath, "application/vnd.oci.image.manifest.v1+json");
  await writeFile(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ ...entry, annotations: { [refNameAnnotation]: legacyImportTag } }],
    }),
  );
  await writeFile(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
}

/**
 * Imports an OCI image layout folder or a `docker save` tarball into the blob
 * store and returns the image's CID. Nothing is stored unless every layer
 * passes checkLayers and umoci applies them.
 */
export async function importImage(
  source: string,
  store: BlobStore,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const given = resolve(source);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(given);
  } catch {
    throw new ImageImportError(
      `${source}: expected an OCI image layout folder or a docker save tarball, found nothing`,
    );
  }
  const work = await mkdtemp(join(options.tempDir ?? tmpdir(), "cimesh-image-"));
  try {
    let layout = given;
    if (info.isFile()) {
      const extracted = join(work, "archive");
      await mkdir(extracted);
      // The tar package keeps every entry inside cwd (no absolute paths, no '..', no writing through links).
      await tar.x({ file: given, cwd: extracted, strict: true }).catch((error: unknown) => {
        throw new ImageImportError(`${source}: expected a tar archive (docker save), ${(error as Error).message}`);
      });
      const hasLayout = await stat(join(extracted, "oci-layout")).then(
        () => true,
        () => false,
      );
      if (hasLayout) layout = extracted;
      else {
        layout = join(work, "oci");
        await layoutFromDockerSave(extracted, layout);
      }
    } else if (
      !(await stat(join(given, "oci-layout")).then(
        () => true,
        () => false,
      ))
    ) {
      throw new ImageImportError(`${source}: expected an OCI image layout (a folder with oci-layout and index.json)`);
    }
    const tag = await pickTag(layout, options.tag);
    const layers = await layersOf(layout, tag);
    await checkLayers(layers);
    const bundle = join(work, "bundle");
    await runTool(options.umoci ?? umociName, ["unpack", "--rootless", "--image", `${layout}:${tag}`, bundle]);
    const dangling: string[] = [];
    const packed = await packTree(join(bundle, "rootfs"), store, {
      respectGitignore: false,
      rootfs: true,
      onDanglingLink: (path) => dangling.push(path),
    });
    return {
      root: packed.root,
      tag,
      layers: layers.length,
      files: packed.files,
      bytes: packed.bytes,
      danglingLinks: dangling.slice(0, maxListedDanglingLinks),
      danglingLinkCount: dangling.length,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
