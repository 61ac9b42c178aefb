import test from "ava";
import { identityFromSeed, openEnvelope, sealEnvelope } from "../crypto/index.ts";
import { bidDomain } from "../jobs/index.ts";

test("a sealed bid opens", (t) => {
  const id = identityFromSeed(new Uint8Array(32).fill(7));
  const now = 1_800_000_000_000;
  const project = `b${"a".repeat(52)}`;
  const bid = {
    issuedAtMs: now,
    expiresAtMs: now + 60_000,
    seq: 1,
    project,
    jobId: "job-1",
    round: 0,
    availability: "eager" as const,
    runningJobs: 0,
    freeSlots: 2,
    cachedInputBytes: 0,
  };
  t.is(openEnvelope(bidDomain, sealEnvelope(bidDomain, bid, id), now).body.jobId, "job-1");
});
