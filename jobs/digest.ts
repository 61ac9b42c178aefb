/**
 * The digest replicas must agree on: what a run produced (outcome, exit code,
 * outputs), not how it got there (logs and durations differ run to run), and,
 * for a job that names an image, the root filesystem it ran in, so a run by
 * `cimesh run` agrees with the mesh's only when it used the same image.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { base32 } from "multiformats/bases/base32";
import { encodeCanonical } from "../crypto/index.ts";
import type { JobSpec, Result } from "./messages.ts";

export function resultDigest(
  result: Pick<Result, "outcome" | "exitCode" | "outputsDigest">,
  job?: Pick<JobSpec, "image">,
): string {
  const fields: unknown[] = ["cimesh/result-digest/v1", result.outcome, result.exitCode, result.outputsDigest];
  // A job without an image keeps the digest it always had.
  if (job?.image !== undefined) fields.push(job.image);
  return base32.encode(sha256(encodeCanonical(fields)));
}
