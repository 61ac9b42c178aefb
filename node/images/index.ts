/**
 * node/images: images, the root filesystems jobs may run in. import.ts makes
 * an OCI image layout or a docker save tarball into a content-addressed tree
 * (umoci applies the layers; every layer is checked first); cache.ts keeps one
 * unpacked, read-only copy per image CID on a worker, shared between runs.
 */
export {
  type ImageCache,
  type ImageCounters,
  type ImageReady,
  imageFolderMode,
  maxUnpackedImages,
  openImageCache,
} from "./cache.ts";
export {
  ImageImportError,
  type ImportOptions,
  type ImportResult,
  importImage,
  layerEntryProblem,
  umociName,
} from "./import.ts";
