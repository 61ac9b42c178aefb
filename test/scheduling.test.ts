/**
 * Scenario tests for the scheduling core (DESIGN.md: Jobs; Claiming work
 * without a bid storm; Availability and fairness on a worker): the real
 * master and worker state machines exchange their effects in the in-test
 * message loop (test/loop.ts) on a virtual clock. Every figure asserted here
 * is virtual time or a count, never wall-clock time.
 */
import { fc, testProp } from "@fast-check/ava";
import test, { type ExecutionContext } from "ava";
import { explainPool, explainPoolText, explainUnmet, matchJob } from "../capabilities/index.ts";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import {
  type Bid,
  type Cancel,
  canServe,
  createMaster,
  defaultMasterConfig,
  defaultWorkerConfig,
  type ExecutionReport,
  type ExecutionRequest,
  explainJob,
  type JobRecord,
  type JobSpec,
  type Offer,
  type Result,
  resultDigest,
  stepMaster,
  type Unsequenced,
  type Verdict,
} from "../jobs/index.ts";
import { type Behaviour, honest, Loop, liar, seededRng } from "./loop.ts";

const gib = 2 ** 30;
const secondMs = 1000;
const minuteMs = 60 * secondMs;
const hourMs = 60 * minuteMs;

function projectOf(seedByte: number): string {
  return anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(seedByte)).publicKey], 1).project;
}

const project = projectOf(9);
const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 4,
  memoryBytes: 8 * gib,
  diskBytes: 100 * gib,
  tools: [],
  labels: [],
};

function jobSpec(deadlineMs: number, overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    name: "test",
    steps: [{ name: "check", run: "npm test" }],
    env: {},
    timeoutMs: 10 * minuteMs,
    resources: { cpus: 1, memoryBytes: gib, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: "linux",
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 4,
    deadlineMs,
    ...overrides,
  };
}

type Report = Omit<ExecutionReport, "runId">;

/** What an honest run reports; honest ignores its arguments. */
const honestReport = honest({} as ExecutionRequest, "") as Report;
const honestDigest = resultDigest(honestReport);
const liarDigest = resultDigest(liar({} as ExecutionRequest, "") as Report);

/**
 * The master config for tests of mechanics that have nothing to do with whom results are believed from (bidding,
 * fair share): a count of agreeing results decides, as the quorum rules did before weights, runners and prefixes.
 */
const countOnly = {
  quorumWeight: 0,
  distinctPrefixes: false,
  spotCheckFraction: 0,
  trustVolunteersAlone: true,
} as const;

let runnerPrefixes = 0;

/**
 * Adds workers of the project. `runner`: trust names them runners of the project (its own machines, whose results
 * decide a shard under the default quorum rules), each on a network prefix of its own; otherwise volunteers without a
 * record, whose results weigh nothing until they earn it.
 */
/** The worker vanishes just after its run's acceptance went out (a run lost mid-way, not an award left unanswered). */
function vanishAfterAcceptance(loop: Loop, worker: string): void {
  loop.at(loop.nowMs + defaultWorkerConfig.acceptanceDelayMs + 1, () => {
    loop.worker(worker).vanished = true;
  });
}

function addWorkers(
  loop: Loop,
  count: number,
  behaviour: Behaviour = honest,
  options: { slots?: number; runner?: boolean } = {},
) {
  const { runner = false, ...config } = options;
  const keys: string[] = [];
  for (let i = 0; i < count; i++)
    keys.push(
      loop.addWorker(
        { shares: { [project]: 1 }, dimensions, specs: [], ...config },
        behaviour,
        "eager",
        runner ? { runner, prefix: `192.0.2.${runnerPrefixes++ % 256}/32` } : {},
      ),
    );
  return keys;
}

/** addWorkers for the project's runners. */
const addRunners = (loop: Loop, count: number, behaviour: Behaviour = honest, options: { slots?: number } = {}) =>
  addWorkers(loop, count, behaviour, { ...options, runner: true });

function jobOf(loop: Loop, master: string, jobId: string): JobRecord {
  const job = loop.master(master).state.jobs[jobId];
  if (job === undefined) throw new Error(`master has no job ${jobId}`);
  return job;
}

/** Runs the loop in steps of `stepMs` until `done` holds or `limitMs` passes; the loop is always bounded. */
function runUntil(loop: Loop, done: () => boolean, limitMs: number, stepMs = 5 * secondMs): void {
  while (!done() && loop.nowMs < limitMs) loop.run(Math.min(limitMs, loop.nowMs + stepMs));
}

function verdictsOf(loop: Loop, jobId: string): Unsequenced<Verdict>[] {
  const verdicts: Unsequenced<Verdict>[] = [];
  for (const { effect } of loop.log)
    if (effect.type === "publish" && effect.message.domain === "verdict" && effect.message.body.jobId === jobId)
      verdicts.push(effect.message.body);
  return verdicts;
}

/**
 * The verdict gossiped for a job: one for a job that was announced, none for one awarded from offers alone (nobody
 * but the workers it was awarded to, told directly, holds it). Asserts that rule and returns the verdict, if any.
 */
function verdictOf(t: ExecutionContext, loop: Loop, job: JobRecord): Unsequenced<Verdict> | undefined {
  const verdicts = verdictsOf(loop, job.jobId);
  t.is(verdicts.length, job.announcements > 0 ? 1 : 0, `${job.jobId}: announced ${job.announcements} time(s)`);
  return verdicts[0];
}

/** The offers a worker sent, in order. */
function offersSent(
  loop: Loop,
  worker?: string,
): { atMs: number; worker: string; to: string; offer: Unsequenced<Offer> }[] {
  const offers: { atMs: number; worker: string; to: string; offer: Unsequenced<Offer> }[] = [];
  for (const { atMs, node, effect } of loop.log)
    if (effect.type === "send" && effect.message.domain === "offer" && (worker === undefined || node === worker))
      offers.push({ atMs, worker: node, to: effect.to, offer: effect.message.body });
  return offers;
}

function bidsSent(loop: Loop): { atMs: number; worker: string; bid: Unsequenced<Bid> }[] {
  const bids: { atMs: number; worker: string; bid: Unsequenced<Bid> }[] = [];
  for (const { atMs, node, effect } of loop.log)
    if (effect.type === "send" && effect.message.domain === "bid")
      bids.push({ atMs, worker: node, bid: effect.message.body });
  return bids;
}

function startsOf(loop: Loop): { atMs: number; worker: string; run: ExecutionRequest }[] {
  const starts: { atMs: number; worker: string; run: ExecutionRequest }[] = [];
  for (const { atMs, node, effect } of loop.log)
    if (effect.type === "start-execution") starts.push({ atMs, worker: node, run: effect.run });
  return starts;
}

function killsOf(loop: Loop): { atMs: number; worker: string; runId: string; reason: string }[] {
  const kills: { atMs: number; worker: string; runId: string; reason: string }[] = [];
  for (const { atMs, node, effect } of loop.log)
    if (effect.type === "kill-execution")
      kills.push({ atMs, worker: node, runId: effect.runId, reason: effect.reason });
  return kills;
}

function cancelsSentTo(loop: Loop, jobId: string): { atMs: number; to: string; cancel: Unsequenced<Cancel> }[] {
  const cancels: { atMs: number; to: string; cancel: Unsequenced<Cancel> }[] = [];
  for (const { atMs, effect } of loop.log)
    if (effect.type === "send" && effect.message.domain === "cancel" && effect.message.body.jobId === jobId)
      cancels.push({ atMs, to: effect.to, cancel: effect.message.body });
  return cancels;
}

/** The cancels a master gossiped on the project's topic for a job. */
function publishedCancels(loop: Loop, jobId: string): Unsequenced<Cancel>[] {
  const cancels: Unsequenced<Cancel>[] = [];
  for (const { effect } of loop.log)
    if (effect.type === "publish" && effect.message.domain === "cancel" && effect.message.body.jobId === jobId)
      cancels.push(effect.message.body);
  return cancels;
}

/** A result as the worker of a lost attempt would send it, for injecting late. */
function lateResult(loop: Loop, jobId: string, attempt: number): Result {
  return {
    issuedAtMs: loop.nowMs,
    expiresAtMs: loop.nowMs + hourMs,
    seq: 1_000_000,
    project,
    jobId,
    attempt,
    shard: 0,
    exitCode: honestReport.exitCode,
    outcome: honestReport.outcome,
    outputsDigest: honestReport.outputsDigest,
    logDigest: null,
    summary: "finished after all",
    durationMs: 90 * secondMs,
  };
}

test("happy path: replicas 2 quorum 2 on a runner and two volunteers is awarded from their offers at once, passes and credits both runs", (t) => {
  const loop = new Loop({ sign: true, seed: 1 });
  const master = loop.addMaster({ project });
  const [runner] = addRunners(loop, 1);
  const workers = [runner as string, ...addWorkers(loop, 2)];
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "job-1", job: jobSpec(start + hourMs, { replicas: 2, quorum: 2 }) });
  loop.run(start + 10 * minuteMs);

  const job = jobOf(loop, master, "job-1");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 2);
  t.deepEqual(
    job.attempts.map((attempt) => attempt.state),
    ["reported", "reported"],
  );
  t.deepEqual(
    job.attempts.map((attempt) => attempt.awardedAtMs),
    [start, start],
    "both replicas awarded in the submit's step",
  );
  t.is(job.announcements, 0, "offers on hand covered the job: no announcement");
  t.deepEqual(bidsSent(loop), [], "and no bid");
  const awarded = job.attempts.map((attempt) => attempt.worker);
  t.is(new Set(awarded).size, 2, "two different workers ran the two replicas");
  t.true(awarded.includes(runner as string), "the runner, whose result anchors the quorum, ran one");
  t.is(job.shards[0]?.decidedDigest, honestDigest);
  t.is(verdictOf(t, loop, job), undefined, "no verdict gossiped: nobody else holds the job");

  const reputation = loop.master(master).state.reputation;
  for (const worker of awarded) {
    t.is(reputation[worker]?.consecutiveValid, 1);
    t.is(reputation[worker]?.invalidTotal, 0);
  }
  const idle = workers.filter((worker) => !awarded.includes(worker));
  t.is(idle.length, 1);
  t.is(reputation[idle[0] as string], undefined, "the worker not awarded earned nothing");
});

test("a worker that vanishes mid-job loses its lease; the job is re-awarded, completes once, and the late result does not count", (t) => {
  const leaseMs = 60 * secondMs;
  const loop = new Loop({ seed: 2 });
  const master = loop.addMaster({ project, leaseMs });
  let vanished: string | null = null;
  // The first worker to start a run vanishes with it, once it told its master the run started: it neither finishes,
  // nor renews, nor hears anything again.
  const vanishOnce: Behaviour = (run, worker) => {
    if (vanished !== null) return honest(run, worker);
    vanished = worker;
    vanishAfterAcceptance(loop, worker);
    return null;
  };
  addRunners(loop, 3, vanishOnce);
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "job-v", job: jobSpec(start + hourMs) });
  loop.run(start + 5 * secondMs);

  const job = jobOf(loop, master, "job-v");
  t.is(job.attempts.length, 1);
  const first = job.attempts[0];
  if (first === undefined || vanished === null) return t.fail("the first run was not awarded");
  const lost: string = vanished;
  t.is(first.worker, lost);

  // Just after the lease lapses, before the new run can finish: a late result from the lost attempt arrives.
  loop.run(first.leaseExpiresAtMs + 100);
  t.is(first.state, "lost");
  t.is(job.status, "open");
  loop.toMaster(master, { kind: "result", signer: lost, result: lateResult(loop, "job-v", first.attempt) });
  t.is(first.state, "lost", "a result for a lost attempt is not taken");
  t.is(job.status, "open", "the late result did not decide the job");

  loop.run(start + 10 * minuteMs);
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 2);
  const second = job.attempts[1];
  t.not(second?.worker, lost, "re-awarded to another worker");
  t.true((second?.awardedAtMs ?? 0) >= first.awardedAtMs + leaseMs, "re-awarded only once the lease lapsed");
  t.is(second?.state, "reported");

  // And again after the job ended.
  const endedAtMs = job.endedAtMs;
  loop.toMaster(master, { kind: "result", signer: lost, result: lateResult(loop, "job-v", first.attempt) });
  loop.run(loop.nowMs + minuteMs);
  t.is(first.state, "lost");
  t.is(first.digest, null);
  t.is(job.status, "passed");
  t.is(job.endedAtMs, endedAtMs, "the job ended once, whatever arrives late");
  verdictOf(t, loop, job);
  const reputation = loop.master(master).state.reputation;
  t.is(reputation[lost], undefined, "the vanished worker's reputation is untouched");
  t.is(reputation[second?.worker as string]?.consecutiveValid, 1);
  t.is(reputation[second?.worker as string]?.validTotal, 1);
});

test("a worker renews whatever lease it holds in time, even one shorter than its renew interval", (t) => {
  const loop = new Loop({ seed: 18 });
  const leaseMs = 9 * secondMs;
  const master = loop.addMaster({ project, leaseMs });
  const long: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs: 2 * minuteMs });
  const workers = addRunners(loop, 3, long);
  t.true(leaseMs < (loop.worker(workers[0] as string).state.config.renewIntervalMs ?? 0));
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "long", job: jobSpec(start + hourMs) });
  loop.run(start + 10 * minuteMs);

  const job = jobOf(loop, master, "long");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 1, "the one run kept its lease for two minutes");
  t.deepEqual(killsOf(loop), []);
});

test("a liar among replicas forces a third run; the honest digest wins and only the liar is marked invalid", (t) => {
  const loop = new Loop({ seed: 3 });
  const master = loop.addMaster({ project });
  // Volunteers with a full record here (no runner in this mesh): two disagreeing results weigh the same, and a third
  // that agrees with one of them outweighs the other by a full weight. Only the liar and one honest worker exist at
  // first, so both get the two replicas.
  const [cheat] = addWorkers(loop, 1, liar);
  const [honestA] = addWorkers(loop, 1, honest);
  if (cheat === undefined || honestA === undefined) return t.fail();
  const fullWeight = loop.master(master).state.config.validRunsForFullWeight;
  const record = (worker: string) => {
    const state = loop.master(master).state;
    state.reputation[worker] = { consecutiveValid: fullWeight, validTotal: fullWeight, invalidTotal: 0 };
    state.reputationCount = Object.keys(state.reputation).length;
  };
  record(cheat);
  record(honestA);
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "job-l", job: jobSpec(start + hourMs, { replicas: 2, quorum: 2 }) });
  loop.run(start + 5 * secondMs);
  const job = jobOf(loop, master, "job-l");
  t.is(job.attempts.length, 2);
  t.is(job.status, "open", "two disagreeing results are no quorum");
  t.deepEqual(job.attempts.map((attempt) => attempt.digest).sort(), [honestDigest, liarDigest].sort());

  const [honestB] = addWorkers(loop, 1, honest);
  if (honestB === undefined) return t.fail();
  record(honestB);
  loop.run(start + 10 * minuteMs);
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 3, "a third run settled it");
  t.is(job.attempts[2]?.worker, honestB);
  t.is(job.shards[0]?.decidedDigest, honestDigest);
  t.is(job.shards[0]?.decidedDigest, resultDigest(honestReport));
  const verdicts = verdictsOf(loop, "job-l");
  t.is(verdicts.length, 1);
  t.deepEqual(verdicts[0]?.acceptedDigests, [honestDigest]);

  const reputation = loop.master(master).state.reputation;
  t.like(reputation[cheat], { consecutiveValid: 0, validTotal: fullWeight, invalidTotal: 1 });
  for (const worker of [honestA, honestB]) {
    t.is(reputation[worker]?.invalidTotal, 0);
    t.is(reputation[worker]?.consecutiveValid, fullWeight + 1);
  }
});

test("eager workers offer and never bid; reluctant workers bid only on a re-announcement, never in round 0, and never on a job an eager offer took", (t) => {
  const loop = new Loop({ seed: 4 });
  const master = loop.addMaster({ project });
  // Eager runs outlast the gap between jobs, so the eager slots run short and some jobs wait for a re-announcement.
  const slow: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs: 40 * secondMs });
  const eager = addRunners(loop, 3, slow);
  const reluctant: string[] = [];
  for (let i = 0; i < 3; i++)
    reluctant.push(
      loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest, "reluctant", {
        runner: true,
        prefix: `198.51.100.${i}/32`,
      }),
    );
  loop.offerAll();
  const start = loop.nowMs;
  const jobs = 40;
  for (let i = 0; i < jobs; i++)
    loop.at(start + i * 5 * secondMs, () =>
      loop.toMaster(master, { kind: "submit", jobId: `mix-${i}`, job: jobSpec(start + hourMs) }),
    );
  loop.run(start + jobs * 5 * secondMs + 5 * minuteMs);

  for (let i = 0; i < jobs; i++) t.is(jobOf(loop, master, `mix-${i}`).status, "passed");
  const bids = bidsSent(loop);
  const fromReluctant = bids.filter((entry) => reluctant.includes(entry.worker));
  t.deepEqual(
    bids.filter((entry) => eager.includes(entry.worker)),
    [],
    "eager workers offer their slots, never bid",
  );
  // An award an eager worker refused (a second award raced its first for one slot) took nothing.
  const tookFromOffer = (jobId: string) =>
    jobOf(loop, master, jobId).attempts.some(
      (attempt) => eager.includes(attempt.worker) && attempt.state !== "refused",
    );
  const byOffer = Array.from({ length: jobs }, (_, i) => `mix-${i}`).filter(tookFromOffer);
  t.true(byOffer.length > 0, "eager workers took jobs from their offers");
  t.true(fromReluctant.length > 0, "some jobs waited for the reluctant workers");
  t.deepEqual(
    fromReluctant.filter((entry) => entry.bid.round === 0),
    [],
    "no reluctant bid for round 0",
  );
  for (const entry of fromReluctant) {
    t.is(entry.bid.availability, "reluctant");
    t.false(
      byOffer.includes(entry.bid.jobId),
      `${entry.bid.jobId}: a reluctant worker bid on a job an eager offer took`,
    );
  }
  for (const worker of reluctant)
    for (const { offer } of offersSent(loop, worker))
      t.is(offer.freeSlots, 0, "a reluctant worker offers no slot: it only says it exists");
  t.log(
    `reluctant bids: ${fromReluctant.length} of ${bids.length}; jobs taken from eager offers: ${byOffer.length} of ${jobs}`,
  );
});

test("with only reluctant workers a job is done after a re-announcement", (t) => {
  const loop = new Loop({ seed: 5 });
  const master = loop.addMaster({ project });
  const reluctant: string[] = [];
  for (let i = 0; i < 3; i++)
    reluctant.push(
      loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest, "reluctant", { runner: true }),
    );
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "job-r", job: jobSpec(start + hourMs) });
  loop.run(start + 10 * secondMs);
  const job = jobOf(loop, master, "job-r");
  t.is(job.status, "open");
  t.is(job.bidsReceived, 0, "nobody bids on round 0");

  loop.run(start + 5 * minuteMs);
  t.is(job.status, "passed", job.reason);
  t.true(job.announcements >= 2);
  const bids = bidsSent(loop);
  t.true(bids.length > 0);
  for (const entry of bids) {
    t.true(reluctant.includes(entry.worker));
    t.true(entry.bid.round >= 1);
  }
  t.is(verdictsOf(loop, "job-r").length, 1);
});

test("a paused worker finishes what runs, offers no slot and takes nothing new until it is eager again", (t) => {
  const loop = new Loop({ seed: 6 });
  const master = loop.addMaster({ project });
  const slow: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs: 20 * secondMs });
  const [worker] = addRunners(loop, 1, slow, { slots: 2 });
  if (worker === undefined) return t.fail();
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "before", job: jobSpec(start + hourMs) });
  loop.run(start + 5 * secondMs);
  t.is(jobOf(loop, master, "before").attempts[0]?.state, "running");
  t.deepEqual(
    offersSent(loop, worker).map(({ offer }) => offer.freeSlots),
    [2],
    "the award used one slot of the offer: both sides count it, nothing is sent again",
  );
  t.is(loop.master(master).state.workers[worker]?.freeSlots, 1, "the master holds one slot left");

  const pausedAtMs = loop.nowMs;
  loop.toWorker(worker, { kind: "set-availability", availability: "paused" });
  // Its offer of no slot reaches the master (an award already on its way would be refused: see the next tests).
  loop.run(pausedAtMs + loop.latencyMs);
  t.is(loop.master(master).state.workers[worker]?.freeSlots, 0);
  // The worker still has a free slot, but a paused worker takes nothing new.
  loop.toMaster(master, { kind: "submit", jobId: "after", job: jobSpec(start + hourMs) });
  loop.run(start + 3 * minuteMs);

  t.is(jobOf(loop, master, "before").status, "passed", "what ran was finished");
  t.deepEqual(
    killsOf(loop).filter((kill) => kill.worker === worker),
    [],
    "nothing was killed",
  );
  const after = jobOf(loop, master, "after");
  t.is(after.status, "open");
  t.is(after.attempts.length, 0);
  t.true(after.announcements >= 2, "the job was announced (and re-announced) while the worker was paused");
  const whilePaused = offersSent(loop, worker).filter((entry) => entry.atMs >= pausedAtMs);
  t.true(whilePaused.length >= 1, "the worker told its master it is paused");
  for (const { offer } of whilePaused) {
    t.is(offer.freeSlots, 0, "a paused worker offers no slot, even with two free");
    t.is(offer.availability, "paused");
  }
  t.deepEqual(
    bidsSent(loop).filter((entry) => entry.atMs >= pausedAtMs),
    [],
    "no bid while paused",
  );
  t.deepEqual(
    startsOf(loop).filter((entry) => entry.atMs >= pausedAtMs),
    [],
    "no run started while paused",
  );

  const resumedAtMs = loop.nowMs;
  loop.toWorker(worker, { kind: "set-availability", availability: "eager" });
  loop.run(resumedAtMs + 2 * minuteMs);
  t.is(after.status, "passed", after.reason);
  t.is(after.attempts[0]?.worker, worker);
  t.true((after.attempts[0]?.awardedAtMs ?? 0) >= resumedAtMs);
  t.true(
    offersSent(loop, worker).some((entry) => entry.atMs === resumedAtMs && entry.offer.freeSlots > 0),
    "eager again, it offers its free slots at once",
  );
});

for (const availability of ["paused", "offline"] as const) {
  test(`a worker ${availability} between its offer and the award refuses the award at once instead of starting the run`, (t) => {
    const loop = new Loop({ seed: 17 });
    const master = loop.addMaster({ project });
    const [worker] = addRunners(loop, 1);
    if (worker === undefined) return t.fail();
    loop.offerAll();
    const start = loop.nowMs;
    loop.toMaster(master, { kind: "submit", jobId: "raced", job: jobSpec(start + hourMs) });
    const job = jobOf(loop, master, "raced");
    t.is(job.attempts.length, 1, "the award went out from the offer in the submit's step");
    // The award lands a latency later: the worker changes its mind before.
    loop.toWorker(worker, { kind: "set-availability", availability });
    loop.run(start + 2 * loop.latencyMs);

    t.deepEqual(startsOf(loop), [], `a ${availability} worker starts nothing new`);
    t.deepEqual(loop.worker(worker).state.running, {});
    t.is(job.attempts[0]?.state, "refused", "refused within a round trip, not after a lease");
    t.regex(job.attempts[0]?.summary ?? "", new RegExp(availability));
    t.is(job.status, "open");

    // Another worker takes the job; the refusal cost one run of the bound, nothing more.
    const [other] = addRunners(loop, 1);
    loop.run(start + 5 * minuteMs);
    t.is(job.status, "passed", job.reason);
    t.is(job.attempts.at(-1)?.worker, other);
  });

  test(`a reluctant worker ${availability} between its bid and the award refuses the award instead of starting the run`, (t) => {
    const loop = new Loop({ seed: 17 });
    const master = loop.addMaster({ project });
    const worker = loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [] }, honest, "reluctant", {
      runner: true,
    });
    loop.offerAll();
    const start = loop.nowMs;
    loop.toMaster(master, { kind: "submit", jobId: "raced", job: jobSpec(start + hourMs) });
    // Round 0 draws no bid from a reluctant worker; the re-announcement does, and its bid alone is enough to award.
    const reannounceAtMs = start + loop.master(master).state.config.reannounceIntervalMs;
    runUntil(loop, () => bidsSent(loop).length > 0, reannounceAtMs + secondMs, loop.latencyMs);
    t.is(bidsSent(loop).length, 1, "the worker bid on the re-announcement");
    t.is(bidsSent(loop)[0]?.bid.round, 1);
    loop.toWorker(worker, { kind: "set-availability", availability });
    loop.run(loop.nowMs + 5 * secondMs);

    const job = jobOf(loop, master, "raced");
    t.is(job.attempts.length, 1, "the award went out");
    t.deepEqual(startsOf(loop), [], `a ${availability} worker starts nothing new`);
    t.deepEqual(loop.worker(worker).state.running, {});
    t.is(job.attempts[0]?.state, "refused");
    t.regex(job.attempts[0]?.summary ?? "", new RegExp(availability));
    t.is(job.status, "open");

    const [other] = addRunners(loop, 1);
    loop.run(start + 5 * minuteMs);
    t.is(job.status, "passed", job.reason);
    t.is(job.attempts.at(-1)?.worker, other);
  });
}

test("fair share: one slot, two projects with shares 1 and 3 get slot time within 10% of 1:3", (t) => {
  const projectA = projectOf(21);
  const projectB = projectOf(22);
  const loop = new Loop({ seed: 7 });
  // Count-only: this is about the worker's slot time per project, not about whom a master believes.
  const masterA = loop.addMaster({ project: projectA, ...countOnly });
  const masterB = loop.addMaster({ project: projectB, ...countOnly });
  const durationMs = 1000;
  const fixed: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs });
  const worker = loop.addWorker({ shares: { [projectA]: 1, [projectB]: 3 }, dimensions, specs: [], slots: 1 }, fixed);
  loop.offerAll();
  const start = loop.nowMs;
  // Each backlog must outlast the measurement: 1,000 runs at 1:3 take 750 of project B's jobs.
  const perProject = 800;
  for (let i = 0; i < perProject; i++) {
    loop.toMaster(masterA, { kind: "submit", jobId: `a-${i}`, job: jobSpec(start + 24 * hourMs) });
    loop.toMaster(masterB, { kind: "submit", jobId: `b-${i}`, job: jobSpec(start + 24 * hourMs) });
  }
  const target = 1000;
  const passed = (master: string) =>
    Object.values(loop.master(master).state.jobs).filter((job) => job.status === "passed").length;
  runUntil(loop, () => passed(masterA) + passed(masterB) >= target, start + 6 * hourMs, 20 * secondMs);
  const doneA = passed(masterA);
  const doneB = passed(masterB);
  t.true(doneA + doneB >= target, `only ${doneA + doneB} jobs done`);
  t.true(doneA < perProject && doneB < perProject, "both backlogs lasted the whole measurement");

  // Slot time per project: from each run's start-execution to the worker's result, over the first 1,000 runs to end.
  const started = new Map<string, number>();
  const runs: { project: string; endMs: number; slotMs: number }[] = [];
  for (const { atMs, node, effect } of loop.log) {
    if (node !== worker) continue;
    if (effect.type === "start-execution")
      started.set(`${effect.run.project}/${effect.run.jobId}/${effect.run.attempt}`, atMs);
    else if (effect.type === "send" && effect.message.domain === "result") {
      const body = effect.message.body;
      const runId = `${body.project}/${body.jobId}/${body.attempt}`;
      const startedAtMs = started.get(runId);
      // A result sent again (not yet acknowledged) is the same run.
      started.delete(runId);
      if (startedAtMs !== undefined) runs.push({ project: body.project, endMs: atMs, slotMs: atMs - startedAtMs });
    }
  }
  runs.sort((a, b) => a.endMs - b.endMs);
  const measured = runs.slice(0, target);
  t.is(measured.length, target);
  const slotA = measured.filter((run) => run.project === projectA).reduce((sum, run) => sum + run.slotMs, 0);
  const slotB = measured.filter((run) => run.project === projectB).reduce((sum, run) => sum + run.slotMs, 0);
  const ratio = slotA / slotB;
  t.log(
    `slot time over ${target} runs: project A (share 1) ${slotA} ms, project B (share 3) ${slotB} ms, ratio 1:${(slotB / slotA).toFixed(3)}`,
  );
  t.true(slotA > 0 && slotB > 0);
  t.true(Math.abs(ratio - 1 / 3) <= 0.1 / 3, `slot-time ratio ${ratio.toFixed(4)} is not within 10% of 1:3`);
});

test("claim suppression: 10,000 eligible eager workers: offers plus bids per job a small constant, and each worker's standing offers flat in the number of jobs", (t) => {
  const loop = new Loop({ seed: 1, latencyMs: 20 });
  // Count-only: this is about how many messages a job costs, not about whom the master believes.
  const master = loop.addMaster({ project, ...countOnly });
  const pool = 10_000;
  const workers = new Set(addWorkers(loop, pool));
  loop.offerAll();
  const standing = loop.delivered.offer ?? 0;
  t.is(standing, pool, "each worker offered its slot once");
  const start = loop.nowMs;
  const jobs = 400;
  const spacingMs = 5 * secondMs;
  for (let i = 0; i < jobs; i++)
    loop.at(start + i * spacingMs, () =>
      loop.toMaster(master, { kind: "submit", jobId: `storm-${i}`, job: jobSpec(start + 24 * hourMs) }),
    );
  const endMs = start + jobs * spacingMs + 5 * minuteMs;
  const maxEvents = 50_000_000;
  t.true(loop.run(endMs, maxEvents) < maxEvents, "the loop ran to its time bound");

  let bids = 0;
  for (let i = 0; i < jobs; i++) {
    const job = jobOf(loop, master, `storm-${i}`);
    t.is(job.status, "passed");
    t.is(job.announcements, 0, `storm-${i}: offers on hand covered it`);
    t.is(job.attempts[0]?.awardedAtMs, job.submittedAtMs, `storm-${i}: awarded in the submit's step`);
    bids += job.bidsReceived;
  }
  t.is(bids, 0);
  // An offer a worker sends after a run of it started or ended (its slot taken or freed) is a job's cost; one sent
  // with nothing run since its last is a renewal before the standing offer lapses: the worker's cost, once per three
  // quarters of an offer's lifetime whatever the jobs.
  const ranSinceOffer = new Set<string>();
  let changed = 0;
  let renewals = 0;
  let first = 0;
  const offered = new Set<string>();
  for (const { node, effect } of loop.log) {
    if (!workers.has(node)) continue;
    if (effect.type === "start-execution" || (effect.type === "send" && effect.message.domain === "result"))
      ranSinceOffer.add(node);
    else if (effect.type === "send" && effect.message.domain === "offer") {
      if (!offered.has(node)) first++;
      else if (ranSinceOffer.has(node)) changed++;
      else renewals++;
      offered.add(node);
      ranSinceOffer.delete(node);
    }
  }
  t.is(first, pool);
  const perJob = (changed + bids) / jobs;
  t.is(first + changed + renewals, loop.delivered.offer ?? 0, "every offer counted once");
  const offerLifetimeMs = loop.worker([...workers][0] as string).state.config.offerLifetimeMs;
  const renewalsPerWorker = renewals / pool;
  const renewalBound = Math.ceil((endMs - start) / ((3 * offerLifetimeMs) / 4));
  t.log(
    `${pool} eligible workers, ${jobs} jobs: ${standing} first offers; per job ${perJob.toFixed(3)} offers after a run + bids (${changed} + ${bids}); ${renewalsPerWorker.toFixed(2)} renewals per worker over ${((endMs - start) / minuteMs).toFixed(0)} min; ${loop.delivered.jobAnnouncement ?? 0} announcements`,
  );
  t.true(perJob <= 2, `offers + bids per job ${perJob}`);
  t.true(renewalsPerWorker <= renewalBound, `renewals per worker ${renewalsPerWorker}, bound ${renewalBound}`);
  t.is(loop.delivered.jobAnnouncement ?? 0, 0, "nothing was announced");
});

test("claim suppression: with 10 eligible workers under 10% of jobs need an announcement at all", (t) => {
  const loop = new Loop({ seed: 9 });
  // Count-only: this is about how many bids an announcement draws, not about whom the master believes.
  const master = loop.addMaster({ project, ...countOnly });
  const fast: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs: 500 });
  addWorkers(loop, 10, fast);
  loop.offerAll();
  const start = loop.nowMs;
  const jobs = 500;
  const spacingMs = 5 * secondMs;
  for (let i = 0; i < jobs; i++)
    loop.at(start + i * spacingMs, () =>
      loop.toMaster(master, { kind: "submit", jobId: `small-${i}`, job: jobSpec(start + 24 * hourMs) }),
    );
  loop.run(start + jobs * spacingMs + 5 * minuteMs);

  let announced = 0;
  let bids = 0;
  for (let i = 0; i < jobs; i++) {
    const job = jobOf(loop, master, `small-${i}`);
    t.is(job.status, "passed");
    if (job.announcements > 0) announced++;
    bids += job.bidsReceived;
  }
  const rate = announced / jobs;
  t.log(
    `announcement rate with 10 eligible workers: ${(rate * 100).toFixed(1)}% (${announced} of ${jobs} jobs); mean bids per job ${(bids / jobs).toFixed(3)}`,
  );
  t.true(rate < 0.1, `announcement rate ${rate}`);
});

test("sharding: four shards are awarded at once from offers, run with their index in the environment and are decided on four digests", (t) => {
  const loop = new Loop({ seed: 10 });
  const master = loop.addMaster({ project });
  addRunners(loop, 5);
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "sharded", job: jobSpec(start + hourMs, { shards: 4 }) });
  loop.run(start + 10 * minuteMs);

  const job = jobOf(loop, master, "sharded");
  t.is(job.status, "passed", job.reason);
  const runs = startsOf(loop).filter((entry) => entry.run.jobId === "sharded");
  t.is(runs.length, 4);
  t.deepEqual(runs.map((entry) => entry.run.env.CIMESH_SHARD_INDEX).sort(), ["0", "1", "2", "3"]);
  for (const entry of runs) {
    t.is(entry.run.env.CIMESH_TOTAL_SHARDS, "4");
    t.is(entry.run.env.CIMESH_SHARD_INDEX, String(entry.run.shard));
  }
  t.true(
    job.attempts.every((attempt) => attempt.awardedAtMs === start),
    "every shard awarded in the submit's step",
  );
  t.is(new Set(job.attempts.map((attempt) => attempt.worker)).size, 4, "to four distinct workers");
  t.deepEqual(
    job.shards.map((record) => record.decidedDigest),
    [honestDigest, honestDigest, honestDigest, honestDigest],
  );
  t.is(verdictOf(t, loop, job), undefined, "never announced: no verdict gossiped");
});

test("sharding: a failing shard fails the job, naming the shard, in the one verdict gossiped for a job that was announced", (t) => {
  const loop = new Loop({ seed: 11 });
  const master = loop.addMaster({ project });
  const shardTwoFails: Behaviour = (run, worker) =>
    run.shard === 2
      ? {
          ...(honest(run, worker) as Report),
          outcome: "failed",
          exitCode: 1,
          outputsDigest: null,
          summary: "2 failing",
        }
      : honest(run, worker);
  addRunners(loop, 5, shardTwoFails);
  // Submitted before any offer reached the master: it knows no worker, so it announces the job, and the offers that
  // come are awarded to it at once.
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "sharded", job: jobSpec(start + hourMs, { shards: 4 }) });
  loop.run(start + 10 * minuteMs);

  const job = jobOf(loop, master, "sharded");
  t.is(job.status, "failed");
  t.regex(job.reason, /shard 2\b/);
  t.is(job.announcements, 1);
  t.is(job.bidsReceived, 0, "eager workers answered the announcement with their offers");
  const failedDigest = resultDigest({ outcome: "failed", exitCode: 1, outputsDigest: null });
  t.deepEqual(
    job.shards.map((record) => record.decidedDigest),
    [honestDigest, honestDigest, failedDigest, honestDigest],
  );
  const verdict = verdictOf(t, loop, job);
  t.is(verdict?.outcome, "failed");
  t.regex(verdict?.reason ?? "", /shard 2\b/);
  t.deepEqual(verdict?.acceptedDigests, [honestDigest, honestDigest, failedDigest, honestDigest]);
  t.deepEqual(
    verdict?.agreeingWorkers.map((key) => Buffer.from(key).toString("hex")).sort(),
    [...new Set(job.attempts.map((attempt) => attempt.worker))].sort(),
    "the verdict names the workers whose results were accepted",
  );
});

test("deadline: a job whose workers never finish fails at its deadline and its running attempts are cancelled", (t) => {
  const loop = new Loop({ seed: 12 });
  const master = loop.addMaster({ project });
  const never: Behaviour = () => null;
  addWorkers(loop, 3, never);
  loop.offerAll();
  const start = loop.nowMs;
  const deadlineMs = start + 5 * minuteMs;
  loop.toMaster(master, {
    kind: "submit",
    jobId: "late",
    job: jobSpec(deadlineMs, { replicas: 2, quorum: 2 }),
  });
  loop.run(deadlineMs - secondMs);
  const job = jobOf(loop, master, "late");
  t.is(job.status, "open");
  const running = job.attempts.filter((attempt) => attempt.state === "running");
  t.is(running.length, 2, "the leases were renewed while the runs hung");

  loop.run(deadlineMs + 2 * minuteMs);
  t.is(job.status, "failed");
  t.regex(job.reason, /deadline/);
  t.is(job.endedAtMs, deadlineMs);
  t.is(job.announcements, 0, "awarded from offers");
  t.is(verdictOf(t, loop, job), undefined, "so no verdict is gossiped: its workers are told directly");
  const cancels = cancelsSentTo(loop, "late");
  const kills = killsOf(loop);
  for (const attempt of running) {
    t.is(attempt.state, "cancelled");
    t.true(
      cancels.some((cancel) => cancel.to === attempt.worker && /deadline/.test(cancel.cancel.reason)),
      "the worker was told why",
    );
    t.true(
      kills.some((kill) => kill.worker === attempt.worker && kill.runId.includes("/late/")),
      "the worker killed its run",
    );
  }
});

test("cancel: a cancelled job ends cancelled, with no verdict, and its running workers are told directly and kill their runs", (t) => {
  const loop = new Loop({ seed: 13 });
  const master = loop.addMaster({ project });
  addWorkers(loop, 3, () => null);
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "doomed", job: jobSpec(start + hourMs, { replicas: 2, quorum: 2 }) });
  loop.run(start + 30 * secondMs);
  const job = jobOf(loop, master, "doomed");
  const running = job.attempts.filter((attempt) => attempt.state === "running").map((attempt) => attempt.worker);
  t.is(running.length, 2);

  const cancelledAtMs = loop.nowMs;
  loop.toMaster(master, { kind: "cancel", jobId: "doomed", reason: "superseded by a newer commit" });
  loop.run(cancelledAtMs + 2 * minuteMs);
  t.is(job.status, "cancelled");
  t.regex(job.reason, /superseded/);
  t.deepEqual(verdictsOf(loop, "doomed"), [], "a cancelled job has no verdict");
  t.is(job.announcements, 0, "awarded from offers");
  t.deepEqual(publishedCancels(loop, "doomed"), [], "so nothing is gossiped: only its workers hold it");
  const kills = killsOf(loop);
  const cancels = cancelsSentTo(loop, "doomed");
  for (const worker of running) {
    t.true(
      cancels.some((cancel) => cancel.to === worker && /superseded/.test(cancel.cancel.reason)),
      "the worker was told why",
    );
    const killed = kills.filter((kill) => kill.worker === worker && kill.runId.includes("/doomed/"));
    t.is(killed.length, 1, "the run was killed, once");
    t.regex(killed[0]?.reason ?? "", /cancel/);
    t.true((killed[0]?.atMs ?? 0) >= cancelledAtMs);
  }
  t.deepEqual(loop.worker(running[0] as string).state.running, {});
});

test("cancel: a job that was announced is cancelled on its topic too, once, since workers that never ran it may hold it", (t) => {
  const loop = new Loop({ seed: 13 });
  const master = loop.addMaster({ project });
  const start = loop.nowMs;
  // No worker known: the job is announced, to whoever could serve it.
  loop.toMaster(master, { kind: "submit", jobId: "unheard", job: jobSpec(start + hourMs) });
  loop.run(start + 10 * secondMs);
  const job = jobOf(loop, master, "unheard");
  t.is(job.announcements, 1);
  loop.toMaster(master, { kind: "cancel", jobId: "unheard", reason: "superseded by a newer commit" });
  loop.run(loop.nowMs + minuteMs);
  t.is(job.status, "cancelled");
  t.is(publishedCancels(loop, "unheard").length, 1);
  t.deepEqual(verdictsOf(loop, "unheard"), []);
});

test("retry bound: workers whose runs are refused as they start (no sandbox) make the job fail after maxAttempts runs, naming the bound", (t) => {
  const loop = new Loop({ seed: 14 });
  const master = loop.addMaster({ project });
  const refuses: Behaviour = (run, worker) => ({
    ...(honest(run, worker) as Report),
    outcome: "refused",
    exitCode: null,
    outputsDigest: null,
    summary: "no sandbox",
    durationMs: 0,
  });
  addWorkers(loop, 6, refuses);
  loop.offerAll();
  const start = loop.nowMs;
  const maxAttempts = 3;
  loop.toMaster(master, { kind: "submit", jobId: "refused", job: jobSpec(start + hourMs, { maxAttempts }) });
  loop.run(start + 30 * minuteMs);

  const job = jobOf(loop, master, "refused");
  t.is(job.status, "failed");
  t.regex(job.reason, /the bound/);
  // Each worker started its run (a lease renewal) before it refused: the runs count toward maxAttempts.
  t.regex(job.reason, new RegExp(`${maxAttempts} runs started and 0 awards refused or unanswered`));
  t.is(job.attempts.length, maxAttempts);
  t.is(job.shards[0]?.runsAwarded, maxAttempts);
  t.true(job.attempts.every((attempt) => attempt.state === "refused" && attempt.answered === true));
  t.is(new Set(job.attempts.map((attempt) => attempt.worker)).size, maxAttempts, "never the same worker twice");
  const awards = loop.log.filter(
    ({ effect }) =>
      effect.type === "send" && effect.message.domain === "award" && effect.message.body.jobId === "refused",
  );
  t.is(awards.length, maxAttempts, "the master never awarded more runs than the bound");
  verdictOf(t, loop, job);
});

test("retry bound: workers that always vanish make each shard fail after maxAttempts lost leases", (t) => {
  const loop = new Loop({ seed: 15 });
  const master = loop.addMaster({ project, leaseMs: 30 * secondMs });
  const vanishes: Behaviour = (_run, worker) => {
    vanishAfterAcceptance(loop, worker);
    return null;
  };
  addWorkers(loop, 12, vanishes);
  loop.offerAll();
  const start = loop.nowMs;
  const maxAttempts = 2;
  loop.toMaster(master, {
    kind: "submit",
    jobId: "gone",
    job: jobSpec(start + hourMs, { maxAttempts, shards: 2 }),
  });
  loop.run(start + 30 * minuteMs);

  const job = jobOf(loop, master, "gone");
  t.is(job.status, "failed");
  t.regex(job.reason, /the bound/);
  t.true(job.attempts.every((attempt) => attempt.state === "lost"));
  for (let shard = 0; shard < 2; shard++) {
    const runs = job.attempts.filter((attempt) => attempt.shard === shard).length;
    t.true(runs <= maxAttempts, `shard ${shard} had ${runs} runs`);
    t.is(job.shards[shard]?.runsAwarded, runs);
  }
  verdictOf(t, loop, job);
});

test("explain: a job nobody can serve gets no bid, and explain names the spec and the cpus that block it", (t) => {
  const missingSpec = "5a1c3e9f-2b4d-4c8e-9f10-1234567890ab";
  const loop = new Loop({ seed: 16 });
  const master = loop.addMaster({ project });
  const workers = [
    loop.addWorker({ shares: { [project]: 1 }, dimensions: { ...dimensions, cores: 16 }, specs: [] }),
    loop.addWorker({ shares: { [project]: 1 }, dimensions: { ...dimensions, cores: 16 }, specs: [] }),
    loop.addWorker({ shares: { [project]: 1 }, dimensions: { ...dimensions, cores: 4 }, specs: [] }),
  ];
  loop.offerAll();
  const start = loop.nowMs;
  const spec = jobSpec(start + hourMs, {
    requiredSpecs: [missingSpec],
    resources: { cpus: 8, memoryBytes: gib, diskBytes: 0, processes: 64 },
  });

  const small = { dimensions: { ...dimensions, cores: 4 }, specs: [] };
  const unmet = matchJob(spec, small);
  t.deepEqual(
    unmet.map((u) => u.requirement),
    [`spec ${missingSpec}`, "cores"],
  );
  const lines = explainUnmet(unmet);
  t.true(lines.includes(missingSpec));
  t.regex(lines, /cores: expected at least 8, got 4/);

  const capabilities = workers.map((key) => {
    const { dimensions: dims, specs } = loop.worker(key).state.config;
    return { dimensions: dims, specs };
  });
  const pool = explainPool(spec, capabilities);
  t.is(pool.eligible, 0);
  t.is(pool.byRequirement[0]?.requirement, `spec ${missingSpec}`, "the spec blocks every worker, the cpus one");
  const text = explainPoolText(spec, capabilities);
  t.log(text);
  t.regex(text, /^0 of 3 known workers are eligible; 3 lack spec /);
  t.true(text.indexOf(missingSpec) < text.indexOf("job needs 8"), "the most blocking requirement comes first");
  t.regex(text, /1 has 4 cores, job needs 8/);

  for (const key of workers) t.false(canServe(loop.worker(key).state, project, spec));
  loop.toMaster(master, { kind: "submit", jobId: "blocked", job: spec });
  loop.run(start + 5 * minuteMs);
  const job = jobOf(loop, master, "blocked");
  t.is(job.status, "open", "nothing settles the job: it waits");
  t.is(job.bidsReceived, 0);
  t.is(job.attempts.length, 0);
  t.is(job.eligibleEstimate, 0);
  t.true(job.announcements >= 2, "re-announcing does not help");
  t.deepEqual(bidsSent(loop), []);
  t.regex(explainJob(loop.master(master).state, "blocked", loop.nowMs), new RegExp(`lack spec ${missingSpec}`));
  for (const key of workers)
    t.true(
      loop.specChecks.some((check) => check.worker === key && check.uuids.includes(missingSpec)),
      "each worker asked its shell to find and check the spec it lacks",
    );
});

test("a master down when the result comes gets it from the worker's outbox once back, acknowledges it, and the job passes with its one run", (t) => {
  const loop = new Loop({ seed: 19, sign: true });
  const master = loop.addMaster({ project });
  const slow: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs: 20 * secondMs });
  const [worker] = addRunners(loop, 1, slow);
  if (worker === undefined) return t.fail();
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "patient", job: jobSpec(start + hourMs) });
  loop.run(start + 5 * secondMs);
  const awardedAtMs = jobOf(loop, master, "patient").attempts[0]?.awardedAtMs;
  t.is(jobOf(loop, master, "patient").attempts[0]?.state, "running");

  loop.stopMaster(master);
  loop.run(start + 45 * secondMs);
  const sent = () =>
    loop.log.filter(
      ({ node, effect }) => node === worker && effect.type === "send" && effect.message.domain === "result",
    ).length;
  t.true(sent() >= 3, `the result was sent ${sent()} times while the master was down`);
  t.deepEqual(Object.keys(loop.worker(worker).state.outbox), [`${project}/patient/0`], "the result waits");

  loop.restartMaster(master);
  const job = jobOf(loop, master, "patient");
  t.true(
    (job.attempts[0]?.leaseExpiresAtMs ?? 0) >= loop.nowMs + 60 * secondMs,
    "the lease runs a whole lease from the restart",
  );
  loop.run(loop.nowMs + minuteMs);
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 1, "the run that finished while the master was down counted");
  t.is(job.attempts[0]?.awardedAtMs, awardedAtMs);
  t.deepEqual(loop.worker(worker).state.outbox, {}, "acknowledged: the worker stopped sending it");
  const afterAck = sent();
  loop.run(loop.nowMs + minuteMs);
  t.is(sent(), afterAck, "and sends it no more");
  t.true((loop.delivered.resultAck ?? 0) >= 1);
});

test("a worker that restarts mid-run reports the run refused, and the master awards it again without waiting for the lease", (t) => {
  const loop = new Loop({ seed: 20 });
  const leaseMs = 5 * minuteMs;
  const master = loop.addMaster({ project, leaseMs });
  const long: Behaviour = (run, worker) => ({ ...(honest(run, worker) as Report), durationMs: 30 * secondMs });
  addRunners(loop, 2, long);
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "interrupted", job: jobSpec(start + hourMs) });
  loop.run(start + 5 * secondMs);
  const job = jobOf(loop, master, "interrupted");
  const first = job.attempts[0];
  if (first === undefined) return t.fail("the first run was not awarded");

  const restartedAtMs = loop.nowMs;
  loop.restartWorker(first.worker);
  t.deepEqual(loop.worker(first.worker).state.running, {}, "the runs of the last process are gone");
  loop.run(restartedAtMs + 2 * minuteMs);
  t.is(first.state, "refused");
  t.regex(first.summary, /restarted/);
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts.length, 2);
  const second = job.attempts[1];
  t.not(second?.worker, first.worker);
  t.true((second?.awardedAtMs ?? Number.POSITIVE_INFINITY) < first.awardedAtMs + leaseMs, "long before the lease");
  t.deepEqual(loop.worker(first.worker).state.outbox, {}, "the refusal was acknowledged");
});

const arbBehaviour = fc.constantFrom("honest", "liar", "refuses", "vanishes", "hangs", "fails");

/** The most runs a worker had going at once, from its start-execution, result and kill effects in the loop's log. */
function peakConcurrentRuns(loop: Loop, worker: string): number {
  const live = new Set<string>();
  let peak = 0;
  for (const { node, effect } of loop.log) {
    if (node !== worker) continue;
    if (effect.type === "start-execution") live.add(effect.run.runId);
    else if (effect.type === "kill-execution") live.delete(effect.runId);
    else if (effect.type === "send" && effect.message.domain === "result") {
      const { project: p, jobId, attempt } = effect.message.body;
      live.delete(`${p}/${jobId}/${attempt}`);
    }
    peak = Math.max(peak, live.size);
  }
  return peak;
}

testProp(
  "whatever the workers do, each job ends once, with one verdict if it was announced, within its run bound per shard and the slots; volunteers' replicas of a shard on distinct prefixes, and a runner's digest has the last word",
  [
    fc.integer({ min: 1, max: 1_000_000 }),
    fc.array(
      fc.tuple(
        arbBehaviour,
        fc.integer({ min: 1, max: 2 }),
        fc.boolean(),
        // The worker's network prefix: unknown (0) or one of three, shared with whoever drew the same.
        fc.integer({ min: 0, max: 3 }),
      ),
      { minLength: 1, maxLength: 7 },
    ),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 2 }),
    fc.integer({ min: 1, max: 4 }),
    fc.integer({ min: 1, max: 3 }),
  ],
  (t, seed, kinds, replicas, quorumWish, shards, maxAttempts, jobs) => {
    const quorum = Math.min(quorumWish, replicas);
    const loop = new Loop({ seed, latencyMs: 1 + (seed % 50) });
    const master = loop.addMaster({ project, leaseMs: 30 * secondMs, reannounceIntervalMs: 10 * secondMs });
    const behaviours: Record<string, Behaviour> = {
      honest,
      liar,
      refuses: (run, worker) => ({ ...(honest(run, worker) as Report), outcome: "refused", exitCode: null }),
      vanishes: (_run, worker) => {
        loop.worker(worker).vanished = true;
        return null;
      },
      hangs: () => null,
      fails: (run, worker) => ({ ...(honest(run, worker) as Report), outcome: "failed", exitCode: 2 }),
    };
    const workers = kinds.map(([kind, slots, runner, prefix]) => ({
      key: loop.addWorker({ shares: { [project]: 1 }, dimensions, specs: [], slots }, behaviours[kind], "eager", {
        runner,
        prefix: prefix === 0 ? "" : `203.0.113.${prefix}/32`,
      }),
      slots,
      runner,
    }));
    const runners = new Set(workers.filter((worker) => worker.runner).map((worker) => worker.key));
    loop.offerAll();
    const start = loop.nowMs;
    const deadlineMs = start + 15 * minuteMs;
    const spec = jobSpec(deadlineMs, { replicas, quorum, shards, maxAttempts });
    for (let i = 0; i < jobs; i++) loop.toMaster(master, { kind: "submit", jobId: `any-${i}`, job: spec });
    loop.run(deadlineMs + minuteMs);

    const bound = Math.max(maxAttempts, replicas);
    for (let i = 0; i < jobs; i++) {
      const job = jobOf(loop, master, `any-${i}`);
      t.not(job.status, "open", "the deadline ends every job");
      verdictOf(t, loop, job);
      for (let shard = 0; shard < shards; shard++) {
        const runs = job.attempts.filter((attempt) => attempt.shard === shard);
        const unstarted = runs.filter(
          (attempt) => attempt.answered === false && (attempt.state === "refused" || attempt.state === "lost"),
        ).length;
        t.true(
          runs.length - unstarted <= bound,
          `shard ${shard}: ${runs.length - unstarted} runs started, bound ${bound}`,
        );
        t.true(
          unstarted <= defaultMasterConfig.maxUnstartedAwardsPerShard,
          `shard ${shard}: ${unstarted} awards not started, bound ${defaultMasterConfig.maxUnstartedAwardsPerShard}`,
        );
        t.is(job.shards[shard]?.runsAwarded, runs.length);
        // A worker runs a shard at most once; a runner again while no run of it there is live or reported.
        for (const [index, attempt] of runs.entries()) {
          const before = runs.slice(0, index).filter((earlier) => earlier.worker === attempt.worker);
          if (before.length === 0) continue;
          t.true(
            attempt.runner && before.every((earlier) => earlier.state !== "reported"),
            `shard ${shard}: ${attempt.worker.slice(0, 8)} ran it twice`,
          );
        }
        // The project's own machines are not who the prefix rule guards against: only volunteers' prefixes differ.
        const prefixes = runs
          .filter((attempt) => !attempt.runner)
          .map((attempt) => attempt.prefix)
          .filter((prefix) => prefix !== "");
        t.is(new Set(prefixes).size, prefixes.length, `shard ${shard}: two volunteers' replicas on one network prefix`);
        for (const attempt of runs) t.is(attempt.runner, runners.has(attempt.worker));
        const decided = job.shards[shard]?.decidedDigest ?? null;
        const alone = job.shards[shard]?.trustedAlone ?? null;
        if (alone !== null) t.true(runners.has(alone), "only a runner is trusted alone");
        if (decided !== null && alone === null) {
          const agreeing = runs.filter((attempt) => attempt.state === "reported" && attempt.digest === decided);
          // A runner's result decides its shard; anyone else's only `quorum` of them together.
          t.true(
            agreeing.length >= quorum || agreeing.some((attempt) => runners.has(attempt.worker)),
            `shard ${shard} decided with ${agreeing.length} < ${quorum} agreeing and no runner's`,
          );
          const byRunners = runs.filter((attempt) => attempt.state === "reported" && runners.has(attempt.worker));
          for (const attempt of byRunners) t.is(attempt.digest, decided, "a runner's digest has the last word");
        }
      }
      if (job.status === "passed")
        t.true(job.shards.every((record) => record.decidedDigest !== null && record.decidedOutcome === "succeeded"));
      t.false(
        job.attempts.some((attempt) => attempt.state === "running"),
        "no attempt is left running once the job ended",
      );
    }
    for (const { key, slots } of workers)
      t.true(peakConcurrentRuns(loop, key) <= slots, "a worker never runs more at once than it has slots");
  },
  { numRuns: 40 },
);

test("a tick that comes a millisecond before the wake-up asked for still leaves a wake-up asked for (the master never sleeps for good)", (t) => {
  const project = "b".padEnd(53, "a");
  const start = 1_800_000_000_000;
  let state = createMaster({ project });
  const rng = seededRng(7);
  const submitted = stepMaster(state, { kind: "submit", jobId: "early", job: jobSpec(start + hourMs) }, start, rng);
  state = submitted.state;
  const wake = submitted.effects.find((effect) => effect.type === "set-timer");
  if (wake?.type !== "set-timer") return t.fail("expected a set-timer after a submit");
  const early = stepMaster(state, { kind: "tick" }, wake.atMs - 1, rng);
  state = early.state;
  const again = early.effects.find((effect) => effect.type === "set-timer");
  t.is(again?.type === "set-timer" ? again.atMs : null, wake.atMs, "the early tick asks for the same wake-up again");
  const onTime = stepMaster(state, { kind: "tick" }, wake.atMs, rng);
  t.true(onTime.effects.length > 0, "and the tick on time does the work");
});
