/**
 * The digest replicas must agree on: what a run produced (outcome, exit code,
 * outputs), not how it got there (logs and durations differ run to run).
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { base32 } from "multiformats/bases/base32";
import { encodeCanonical } from "../crypto/index.ts";
import type { Result } from "./messages.ts";

export function resultDigest(result: Pick<Result, "outcome" | "exitCode" | "outputsDigest">): string {
  return base32.encode(
    sha256(encodeCanonical(["cimesh/result-digest/v1", result.outcome, result.exitCode, result.outputsDigest])),
  );
}
