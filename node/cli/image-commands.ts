/**
 * `cimesh image import`: makes an OCI image layout or a docker save tarball
 * into a tree in the node's blob store (node/images), where the master serves
 * it to workers, and prints its CID for a job file's `image:`.
 */
import { join } from "node:path";
import { dataDirOf, out, program } from "./common.ts";

export function addImageCommand(): void {
  const image = program.command("image").description("root filesystems jobs run in, stored by content");
  image
    .command("import")
    .description("store an OCI image layout (folder) or a docker save tarball as a tree; prints its CID")
    .argument("<source>", "an OCI image layout folder (umoci, skopeo, buildah) or a docker save tarball")
    .option("--tag <tag>", "which tagged manifest of the layout (default: its only one)")
    .option("--json", "print the result as JSON")
    .action(async (source: string, options: { tag?: string; json?: boolean }) => {
      const { importImage } = await import("../images/index.ts");
      const { openBlobStore } = await import("../store/index.ts");
      // The node's own blob store (shared with the running node: blobs are files named by CID), which serves it.
      const store = await openBlobStore(join(dataDirOf(), "blobs"));
      const result = await importImage(source, store, options.tag === undefined ? {} : { tag: options.tag });
      if (options.json === true) {
        out(JSON.stringify(result));
        return;
      }
      out(
        `imported ${source} (tag ${result.tag}, ${result.layers} layer(s)): ${result.files} file(s), ${result.bytes} bytes`,
      );
      if (result.danglingLinkCount > 0) {
        out(
          `left out ${result.danglingLinkCount} symlink(s) that lead nowhere inside the image: ${result.danglingLinks.join(", ")}`,
        );
      }
      out(`image: ${result.root}`);
    });
}
