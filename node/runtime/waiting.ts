/**
 * Why an open job is still open, in one line for a person (`cimesh submit
 * --wait`, the job's `waiting` field): read from what the master holds, its
 * known workers' standing offers and the job's runs, announcements and bids.
 * It decides nothing; `cimesh explain` gives the whole picture.
 */
import { explainPoolText, matchJob } from "../../capabilities/index.ts";
import { type JobRecord, type KnownWorker, lockWaitText, type MasterState } from "../../jobs/index.ts";

function plural(count: number, one: string, many: string): string {
  return `${count} ${count === 1 ? one : many}`;
}

/** The known workers whose offers have not lapsed, as the master's explainJob counts them. */
function liveWorkers(state: MasterState, nowMs: number): KnownWorker[] {
  return [...Object.values(state.workers), ...Object.values(state.unproven)].filter(
    (worker) => worker.expiresAtMs >= nowMs,
  );
}

/** Why the shards that want a run have none: no worker known, none eligible, none free, or bids awaited. */
function wantingReason(state: MasterState, job: JobRecord, nowMs: number, peers: number): string {
  const workers = liveWorkers(state, nowMs);
  if (workers.length === 0)
    return `no worker has offered its slots yet (${plural(peers, "peer", "peers")} connected): a worker offers once it trusts the project and the project's keyset has reached it`;
  const eligible = workers.filter((worker) => matchJob(job.spec, worker).length === 0);
  if (eligible.length === 0) return `no worker offers match: ${explainPoolText(job.spec, workers)}`;
  const free = eligible.filter((worker) => worker.availability === "eager" && worker.freeSlots > 0);
  if (free.length === 0 && job.announcements === 0)
    return `${plural(eligible.length, "eligible worker", "eligible workers")}, none with a free slot now (busy, paused or offline): waiting for one`;
  if (job.announcements > 0)
    return `announced ${plural(job.announcements, "time", "times")}, waiting for bids (${job.bidsReceived} received) or a free slot`;
  return `waiting for an award: ${plural(free.length, "eligible worker offers", "eligible workers offer")} free slots (\`cimesh explain\` says more)`;
}

/** One line saying why `job` is open, or "" once it has ended. `peers`: the node's connected peers. */
export function waitingReason(state: MasterState, job: JobRecord, nowMs: number, peers: number): string {
  if (job.status !== "open") return "";
  const running = job.attempts.filter((attempt) => attempt.state === "running");
  const busyShards = new Set(running.map((attempt) => attempt.shard));
  const wanting = job.shards.filter(
    (shard, index) => shard.decidedDigest === null && shard.failure === "" && !busyShards.has(index),
  ).length;
  const under = running.length === 0 ? "" : `${plural(running.length, "run", "runs")} under way`;
  const lockWait = lockWaitText(state, job.jobId);
  if (lockWait !== "") return under === "" ? lockWait : `${under}; ${lockWait}`;
  if (wanting === 0) return under === "" ? "waiting for the quorum of each shard" : `${under}, waiting for results`;
  const why = wantingReason(state, job, nowMs, peers);
  return under === "" ? why : `${under}; ${plural(wanting, "shard waits", "shards wait")}: ${why}`;
}
