/** Where a message goes: one rule for both shells (node/ and sim/). */
import test from "ava";
import {
  directSide,
  hexOf,
  masterInputOf,
  messageDomainName,
  messageDomains,
  topicRoute,
  workerInputOf,
} from "../jobs/index.ts";

test("on a project topic: announcements, verdicts and cancels to workers from an announcer; nothing else", (t) => {
  for (const name of ["jobAnnouncement", "verdict", "cancel"] as const)
    t.deepEqual(topicRoute(name), { to: "worker", signer: "announcer" });
  for (const name of [
    "offer",
    "bid",
    "award",
    "reject",
    "leaseRenew",
    "logChunk",
    "result",
    "resultAck",
    "report",
    "capabilitySpec",
  ] as const)
    t.is(topicRoute(name), null, `${name} has no business on a topic`);
});

test("direct messages: worker-side ones (offers too) to the master, announcer-side ones to the worker; a renewal by who signs it", (t) => {
  const worker = new Uint8Array(32).fill(7);
  for (const name of ["offer", "bid", "result", "logChunk"] as const) t.is(directSide(name, {}, "x"), "master");
  for (const name of ["award", "reject", "cancel", "resultAck"] as const) t.is(directSide(name, {}, "x"), "worker");
  t.is(directSide("leaseRenew", { worker }, hexOf(worker)), "master", "the worker asks");
  t.is(directSide("leaseRenew", { worker }, "ab".repeat(32)), "worker", "the master answers");
  t.is(directSide("jobAnnouncement", {}, "x"), null);
});

test("tags name their domains, and bodies become the machine's inputs", (t) => {
  t.is(messageDomainName(messageDomains.bid.tag), "bid");
  t.is(messageDomainName("cimesh/nothing/v1"), null);
  t.is(workerInputOf("verdict", "s", { jobId: "j" })?.kind, "verdict");
  t.is(workerInputOf("resultAck", "s", { jobId: "j" })?.kind, "result-ack");
  t.is(workerInputOf("bid", "s", {}), null);
  t.is(masterInputOf("logChunk", "s", { jobId: "j" })?.kind, "log-chunk");
  t.is(masterInputOf("offer", "s", {})?.kind, "offer");
  t.deepEqual(
    masterInputOf("offer", "s", { project: "p" }, { runner: true, prefix: "10.0.0.0/24" }),
    { kind: "offer", signer: "s", offer: { project: "p" } as never, runner: true, prefix: "10.0.0.0/24" },
    "an offer carries what admission knows of its sender: runner and network prefix",
  );
  t.is(masterInputOf("jobAnnouncement", "s", {}), null);
  t.is(workerInputOf("offer", "s", {}), null, "no worker takes an offer");
  t.is(masterInputOf("resultAck", "s", {}), null);
});
