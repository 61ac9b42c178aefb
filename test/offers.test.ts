/**
 * Standing offers (jobs/worker.ts, jobs/master.ts): an eager worker tells each
 * master of its projects, directly, how many slots it has free; a master awards
 * a job from the offers on hand in the step it arrives, announces only what
 * offers cannot cover and only when someone could answer, and gives a run an
 * award refused (the slot was taken) to the next offer at once. The real
 * machines exchange their effects in the in-test message loop (test/loop.ts) on
 * a virtual clock; every figure is virtual time or a count of messages, never
 * wall-clock time.
 */
import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import {
  type Availability,
  type Award,
  type Bid,
  createMaster,
  createWorker,
  type Effect,
  type ExecutionReport,
  hexOf,
  type JobRecord,
  type JobSpec,
  type MasterInput,
  type Offer,
  offerStatus,
  type Result,
  stepMaster,
  stepWorker,
  type Unsequenced,
  type WorkerInput,
  type WorkerState,
} from "../jobs/index.ts";
import { type Behaviour, honest, Loop, seededRng } from "./loop.ts";

const gib = 2 ** 30;
const secondMs = 1000;
const minuteMs = 60 * secondMs;
const hourMs = 60 * minuteMs;

function projectOf(seedByte: number): string {
  return anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(seedByte)).publicKey], 1).project;
}

const project = projectOf(31);
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

/** Runs that take `durationMs`. */
const taking =
  (durationMs: number): Behaviour =>
  (run, worker) => ({ ...(honest(run, worker) as Report), durationMs });

/**
 * For mechanics that have nothing to do with whom results are believed from: a count of agreeing results decides,
 * any identity's word counts, as before weights, runners and prefixes.
 */
const countOnly = {
  quorumWeight: 0,
  distinctPrefixes: false,
  spotCheckFraction: 0,
  trustVolunteersAlone: true,
} as const;

let prefixes = 0;

/** Adds eager workers of `shares`' projects; `runner`: trust names them runners (each on a prefix of its own). */
function addWorkers(
  loop: Loop,
  count: number,
  options: {
    slots?: number;
    runner?: boolean;
    behaviour?: Behaviour;
    availability?: Availability;
    shares?: Record<string, number>;
    cores?: number;
  } = {},
): string[] {
  const {
    runner = false,
    behaviour = honest,
    availability = "eager",
    shares = { [project]: 1 },
    cores = dimensions.cores,
    ...config
  } = options;
  return Array.from({ length: count }, () =>
    loop.addWorker(
      { shares, dimensions: { ...dimensions, cores }, specs: [], ...config },
      behaviour,
      availability,
      runner ? { runner, prefix: `192.0.2.${prefixes++ % 256}/32` } : {},
    ),
  );
}

function jobOf(loop: Loop, master: string, jobId: string): JobRecord {
  const job = loop.master(master).state.jobs[jobId];
  if (job === undefined) throw new Error(`master has no job ${jobId}`);
  return job;
}

interface Sent<M> {
  readonly atMs: number;
  readonly from: string;
  readonly to: string;
  readonly body: M;
}

interface Bodies {
  readonly offer: Unsequenced<Offer>;
  readonly bid: Unsequenced<Bid>;
  readonly award: Unsequenced<Award>;
  readonly result: Unsequenced<Result>;
}

/** The messages of one domain sent directly, in order, optionally only those from `from`. */
function sent<D extends keyof Bodies>(loop: Loop, domain: D, from?: string): Sent<Bodies[D]>[] {
  const out: Sent<Bodies[D]>[] = [];
  for (const { atMs, node, effect } of loop.log)
    if (effect.type === "send" && effect.message.domain === domain && (from === undefined || node === from))
      out.push({ atMs, from: node, to: effect.to, body: effect.message.body as Bodies[D] });
  return out;
}

/** Announcements a master published, in order. */
function announcements(loop: Loop, jobId?: string): { atMs: number; round: number; jobId: string }[] {
  const out: { atMs: number; round: number; jobId: string }[] = [];
  for (const { atMs, effect } of loop.log)
    if (effect.type === "publish" && effect.message.domain === "jobAnnouncement") {
      const body = effect.message.body;
      if (jobId === undefined || body.jobId === jobId) out.push({ atMs, round: body.round, jobId: body.jobId });
    }
  return out;
}

// --- Awarded in the submit's step -------------------------------------------------------------------------------

test("a job that arrives while offers are on hand is awarded in the submit's step: 6 shards on 3 workers of 2 slots, 2 each, no announcement, no bid", (t) => {
  const loop = new Loop({ seed: 1 });
  const master = loop.addMaster({ project });
  const workers = addWorkers(loop, 3, { slots: 2, runner: true });
  loop.offerAll();
  t.deepEqual(
    sent(loop, "offer").map((offer) => offer.body.freeSlots),
    [2, 2, 2],
    "each worker offered its two slots",
  );
  const submittedAtMs = loop.nowMs;
  const logged = loop.log.length;
  loop.toMaster(master, { kind: "submit", jobId: "wide", job: jobSpec(submittedAtMs + hourMs, { shards: 6 }) });

  const job = jobOf(loop, master, "wide");
  t.is(job.attempts.length, 6, "every shard awarded in the submit's step");
  t.deepEqual(job.attempts.map((attempt) => attempt.shard).sort(), [0, 1, 2, 3, 4, 5]);
  const step = loop.log.slice(logged);
  t.is(step.filter(({ effect }) => effect.type === "send" && effect.message.domain === "award").length, 6);
  t.false(
    step.some(({ effect }) => effect.type === "publish"),
    "nothing published: no announcement",
  );
  for (const worker of workers)
    t.is(job.attempts.filter((attempt) => attempt.worker === worker).length, 2, "two runs on each worker");
  const pairs = job.attempts.map((attempt) => `${attempt.worker}/${attempt.shard}`);
  t.is(new Set(pairs).size, pairs.length, "no worker twice on one shard");

  loop.run(submittedAtMs + loop.latencyMs);
  const starts = loop.log.filter(({ effect }) => effect.type === "start-execution");
  t.is(starts.length, 6);
  t.true(
    starts.every(({ atMs }) => atMs === submittedAtMs + loop.latencyMs),
    "all six start one message latency after the submit",
  );
  loop.run(submittedAtMs + 10 * minuteMs);
  t.is(job.status, "passed", job.reason);
  t.is(job.announcements, 0);
  t.is(job.bidsReceived, 0);
  t.deepEqual(sent(loop, "bid"), []);
  t.is(loop.delivered.jobAnnouncement ?? 0, 0);
});

// --- Work spreads ------------------------------------------------------------------------------------------------

for (const [label, config, runner] of [
  ["runners", {}, true],
  ["volunteers under a count-only quorum", countOnly, false],
] as const)
  test(`work spreads: 5 idle one-slot ${label}, 200 jobs with 5 in flight: most jobs on one worker over fewest at most 2`, (t) => {
    const loop = new Loop({ seed: 2 });
    const master = loop.addMaster({ project, ...config });
    const workers = addWorkers(loop, 5, { runner });
    loop.offerAll();
    const start = loop.nowMs;
    const total = 200;
    const inFlight = 5;
    let submitted = 0;
    const open = new Set<string>();
    const limitMs = start + hourMs;
    while ((submitted < total || open.size > 0) && loop.nowMs < limitMs) {
      for (const jobId of [...open]) if (jobOf(loop, master, jobId).status !== "open") open.delete(jobId);
      while (submitted < total && open.size < inFlight) {
        const jobId = `job-${submitted++}`;
        loop.toMaster(master, { kind: "submit", jobId, job: jobSpec(loop.nowMs + hourMs) });
        open.add(jobId);
      }
      loop.run(loop.nowMs + 5);
    }
    const perWorker = new Map(workers.map((worker) => [worker, 0]));
    let announced = 0;
    for (let i = 0; i < total; i++) {
      const job = jobOf(loop, master, `job-${i}`);
      t.is(job.status, "passed", job.reason);
      if (job.announcements > 0) announced++;
      for (const attempt of job.attempts)
        if (attempt.state === "reported") perWorker.set(attempt.worker, (perWorker.get(attempt.worker) ?? 0) + 1);
    }
    const counts = [...perWorker.values()];
    const spread = Math.max(...counts) / Math.max(1, Math.min(...counts));
    t.log(
      `jobs per worker: ${counts.join(", ")}; most over fewest ${spread.toFixed(2)}; ${announced} of ${total} jobs announced; ${((loop.nowMs - start) / secondMs).toFixed(1)} s virtual`,
    );
    t.true(Math.min(...counts) > 0, "every worker ran jobs");
    t.true(spread <= 2, `most over fewest ${spread}`);
    t.is(announced, 0, "idle offers covered every job");
  });

// --- Announced only when offers run short and someone could answer --------------------------------------------

test("a job that finds only busy eager workers is not announced: the first slot to free takes it, as its offer arrives", (t) => {
  const loop = new Loop({ seed: 3 });
  const master = loop.addMaster({ project });
  const [worker] = addWorkers(loop, 1, { runner: true, behaviour: taking(20 * secondMs) });
  if (worker === undefined) return t.fail();
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "first", job: jobSpec(start + hourMs) });
  loop.toMaster(master, { kind: "submit", jobId: "second", job: jobSpec(start + hourMs) });
  const second = jobOf(loop, master, "second");
  t.is(second.attempts.length, 0, "no slot on offer: the job waits");
  loop.run(start + 2 * minuteMs);
  t.is(second.status, "passed", second.reason);
  t.deepEqual(announcements(loop), [], "every worker that could run it is eager: its offer comes when a slot frees");
  t.deepEqual(sent(loop, "bid"), []);
  const freed = sent(loop, "offer", worker).filter((offer) => offer.atMs > start && offer.body.freeSlots > 0);
  t.true(freed.length >= 1, "the worker offered its slot again when the first job ended");
  t.is(
    second.attempts[0]?.awardedAtMs,
    (freed[0]?.atMs ?? 0) + loop.latencyMs,
    "awarded the moment that offer arrived",
  );
});

test("a job no known worker could run is announced in the submit's step: the announcement reaches workers the master has not heard of", (t) => {
  const loop = new Loop({ seed: 4 });
  const master = loop.addMaster({ project });
  // A known worker too small for the job: it offers, but could not run it.
  addWorkers(loop, 1, { runner: true });
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, {
    kind: "submit",
    jobId: "big",
    job: jobSpec(start + hourMs, { resources: { cpus: 16, memoryBytes: gib, diskBytes: 0, processes: 64 } }),
  });
  t.deepEqual(announcements(loop, "big"), [{ atMs: start, round: 0, jobId: "big" }]);
  // A worker that can run it joins: it learns the master, offers, and the offer is awarded at once.
  const [late] = addWorkers(loop, 1, { runner: true, cores: 16 });
  loop.run(start + 2 * minuteMs);
  const job = jobOf(loop, master, "big");
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts[0]?.worker, late);
  t.is(job.bidsReceived, 0, "the eager worker answered with its offer, not a bid");
});

test("with the eager slots taken and reluctant workers known, the job is announced; they ignore round 0, bid on the re-announcement, and the window closes as soon as enough bids are in", (t) => {
  const loop = new Loop({ seed: 5 });
  const master = loop.addMaster({ project });
  const { bidWindowMs, reannounceIntervalMs } = loop.master(master).state.config;
  const [eager] = addWorkers(loop, 1, { runner: true, behaviour: taking(2 * reannounceIntervalMs) });
  const reluctant = addWorkers(loop, 3, { runner: true, availability: "reluctant" });
  loop.offerAll();
  for (const worker of reluctant)
    for (const offer of sent(loop, "offer", worker)) t.is(offer.body.freeSlots, 0, "a reluctant worker offers no slot");
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "first", job: jobSpec(start + hourMs) });
  t.is(jobOf(loop, master, "first").attempts[0]?.worker, eager, "the eager offer took the first job");
  loop.toMaster(master, { kind: "submit", jobId: "second", job: jobSpec(start + hourMs) });
  t.deepEqual(
    announcements(loop, "second"),
    [{ atMs: start, round: 0, jobId: "second" }],
    "no slot on offer, reluctant workers known: announced",
  );
  loop.run(start + reannounceIntervalMs - 1);
  t.deepEqual(sent(loop, "bid"), [], "nobody bids on round 0");

  loop.run(start + 2 * minuteMs);
  const job = jobOf(loop, master, "second");
  t.is(job.status, "passed", job.reason);
  const again = announcements(loop, "second")[1];
  if (again === undefined) return t.fail("no re-announcement");
  t.is(again.round, 1);
  t.is(again.atMs, start + reannounceIntervalMs);
  const bids = sent(loop, "bid");
  t.is(bids.length, reluctant.length, "every reluctant worker bid on the re-announcement");
  for (const bid of bids) {
    t.true(reluctant.includes(bid.from));
    t.is(bid.body.round, 1);
  }
  const lastBidArrivesAtMs = Math.max(...bids.map((bid) => bid.atMs)) + loop.latencyMs;
  const awardedAtMs = job.attempts[0]?.awardedAtMs ?? Number.POSITIVE_INFINITY;
  t.is(awardedAtMs, lastBidArrivesAtMs, "awarded as the last bid the window wanted arrived");
  t.true(awardedAtMs < again.atMs + bidWindowMs, "before the bid window's time was up");
  t.true(reluctant.includes(job.attempts[0]?.worker as string));
});

test("a job whose next run must carry weight is not announced to workers whose results weigh nothing: it waits for the busy runner's offer, and the idle volunteers send nothing for it", (t) => {
  const loop = new Loop({ seed: 8 });
  const master = loop.addMaster({ project, spotCheckFraction: 0 });
  const { reannounceIntervalMs } = loop.master(master).state.config;
  const [runner] = addWorkers(loop, 1, { runner: true, behaviour: taking(5 * reannounceIntervalMs) });
  // Volunteers with no record here: their results weigh nothing, eager or reluctant.
  const volunteers = addWorkers(loop, 3);
  const reluctant = addWorkers(loop, 3, { availability: "reluctant" });
  if (runner === undefined) return t.fail();
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "first", job: jobSpec(start + hourMs) });
  t.is(jobOf(loop, master, "first").attempts[0]?.worker, runner, "the runner's offer took the first job");
  loop.toMaster(master, { kind: "submit", jobId: "second", job: jobSpec(start + hourMs) });
  const job = jobOf(loop, master, "second");
  t.true(volunteers.includes(job.attempts[0]?.worker as string), "a volunteer's offer took the second job's first run");
  // Its result weighs nothing: the shard needs a run with weight, and only the runner, busy, has it.
  loop.run(start + 4 * reannounceIntervalMs);
  t.is(job.status, "open");
  t.is(job.attempts.length, 1, "no run given to a worker whose result could not settle the shard");
  t.deepEqual(announcements(loop, "second"), [], "no announcement: no known reluctant worker carries the weight");
  t.deepEqual(sent(loop, "bid"), [], "so no bid to reject");
  const volunteerOffers = [...volunteers, ...reluctant].flatMap((worker) =>
    sent(loop, "offer", worker).filter((offer) => offer.atMs > start),
  );
  t.true(volunteerOffers.length <= volunteers.length, "each idle volunteer offered at most once more (its slot freed)");

  loop.run(start + 12 * reannounceIntervalMs);
  t.is(job.status, "passed", job.reason);
  t.is(job.attempts[1]?.worker, runner, "the runner's offer, once its slot freed, took the run the shard needed");
});

// --- An award whose slot was taken ------------------------------------------------------------------------------

test("an award that finds its slot taken (one slot offered to two masters) is refused at once, and its master awards the next offer in the step the refusal arrives", (t) => {
  const loop = new Loop({ seed: 6 });
  const projectA = projectOf(32);
  const projectB = projectOf(33);
  const masterA = loop.addMaster({ project: projectA });
  const masterB = loop.addMaster({ project: projectB });
  // The runner of both projects, with one slot: master B ranks it first (its result anchors the shard).
  const [both] = addWorkers(loop, 1, { runner: true, shares: { [projectA]: 1, [projectB]: 1 } });
  // A volunteer of project B: the next offer B holds.
  const [next] = addWorkers(loop, 1, { shares: { [projectB]: 1 } });
  if (both === undefined || next === undefined) return t.fail();
  loop.offerAll();
  t.is(loop.master(masterA).state.workers[both]?.freeSlots, 1);
  t.is(loop.master(masterB).state.workers[both]?.freeSlots, 1, "both masters hold the one slot");
  const start = loop.nowMs;
  loop.toMaster(masterA, { kind: "submit", jobId: "a", job: jobSpec(start + hourMs) });
  loop.toMaster(masterB, { kind: "submit", jobId: "b", job: jobSpec(start + hourMs) });
  const jobB = jobOf(loop, masterB, "b");
  t.is(jobOf(loop, masterA, "a").attempts[0]?.worker, both);
  t.is(jobB.attempts[0]?.worker, both, "B awarded the slot A's award takes first");

  loop.run(start + 2 * loop.latencyMs);
  const refusal = sent(loop, "result", both).find((result) => result.body.jobId === "b");
  t.is(refusal?.body.outcome, "refused");
  t.is(refusal?.atMs, start + loop.latencyMs, "refused the moment the award came");
  t.is(jobB.attempts[0]?.state, "refused");
  t.is(jobB.attempts[0]?.answered, false, "refused at once, never started: it counts apart from the job's runs");
  t.is(jobB.attempts[1]?.worker, next, "the next offer took the run");
  t.is(jobB.attempts[1]?.awardedAtMs, start + 2 * loop.latencyMs, "in the step the refusal arrived: no lease waited");
  t.false(
    sent(loop, "offer", both).some((offer) => offer.to === masterB && offer.atMs >= start),
    "slots taken are not told: B learnt it from the refusal, and dropped the offer",
  );
  t.is(loop.master(masterB).state.workers[both]?.freeSlots, 0);
});

// --- Paused and reluctant workers offer nothing -----------------------------------------------------------------

test("a paused or reluctant worker sends no offer with a free slot, renewals included, while an eager one offers its free slots; a change of mind is offered at once", (t) => {
  const loop = new Loop({ seed: 7 });
  const master = loop.addMaster({ project });
  const [eager] = addWorkers(loop, 1, { slots: 2, runner: true });
  const [reluctant] = addWorkers(loop, 1, { slots: 2, runner: true, availability: "reluctant" });
  const [paused] = addWorkers(loop, 1, { slots: 2, runner: true, availability: "paused" });
  const [changing] = addWorkers(loop, 1, { slots: 2, runner: true });
  if (eager === undefined || reluctant === undefined || paused === undefined || changing === undefined) return t.fail();
  const offerLifetimeMs = loop.worker(eager).state.config.offerLifetimeMs;
  loop.offerAll();
  const start = loop.nowMs;
  // A job a minute, and the fourth worker changing its mind every ten minutes, over two offer lifetimes.
  const endMs = start + 2 * offerLifetimeMs + minuteMs;
  for (let atMs = start, i = 0; atMs < endMs; atMs += minuteMs, i++)
    loop.at(atMs, () => loop.toMaster(master, { kind: "submit", jobId: `job-${i}`, job: jobSpec(atMs + hourMs) }));
  const availabilityAt: { atMs: number; availability: Availability }[] = [{ atMs: 0, availability: "eager" }];
  const cycle: Availability[] = ["paused", "reluctant", "eager"];
  for (let atMs = start + 10 * minuteMs, i = 0; atMs < endMs; atMs += 10 * minuteMs, i++) {
    const availability = cycle[i % cycle.length] as Availability;
    availabilityAt.push({ atMs, availability });
    loop.at(atMs, () => loop.toWorker(changing, { kind: "set-availability", availability }));
  }
  loop.run(endMs);

  for (const [worker, name] of [
    [reluctant, "reluctant"],
    [paused, "paused"],
  ] as const) {
    const offers = sent(loop, "offer", worker);
    t.true(offers.length >= 2, `the ${name} worker says it exists, and renews it`);
    for (const offer of offers) {
      t.is(offer.body.freeSlots, 0, `a ${name} worker offers no slot`);
      t.is(offer.body.availability, name);
    }
  }
  t.true(
    sent(loop, "offer", eager).some((offer) => offer.body.freeSlots === 2),
    "the eager worker offers its free slots",
  );
  const changes = sent(loop, "offer", changing);
  for (const offer of changes) {
    const now = [...availabilityAt].reverse().find((entry) => entry.atMs <= offer.atMs)?.availability ?? "eager";
    t.is(offer.body.availability, now, "the offer says what the worker is now");
    if (now !== "eager") t.is(offer.body.freeSlots, 0);
  }
  for (const { atMs, availability } of availabilityAt.slice(1))
    t.true(
      changes.some((offer) => offer.atMs === atMs && offer.body.availability === availability),
      `the change to ${availability} at +${(atMs - start) / minuteMs} min was offered at once`,
    );
});

// --- A worker that vanished with an offer -----------------------------------------------------------------------

test("a worker killed with an outstanding offer costs no job more than one lease: the run goes elsewhere when its award goes unanswered (before the lease lapses), and its offer is set aside for longer after each", (t) => {
  const loop = new Loop({ seed: 8 });
  const leaseMs = 30 * secondMs;
  const awardAnswerMs = 10 * secondMs;
  const master = loop.addMaster({ project, leaseMs, awardAnswerMs });
  const [gone] = addWorkers(loop, 1, { slots: 2, runner: true });
  if (gone === undefined) return t.fail();
  loop.offerAll();
  // Killed: its two slots stay on offer at the master, and it will never answer.
  loop.worker(gone).vanished = true;
  const others = addWorkers(loop, 2, { runner: true });
  loop.offerAll();
  const start = loop.nowMs;
  const jobs = 20;
  for (let i = 0; i < jobs; i++)
    loop.at(start + i * 5 * secondMs, () =>
      loop.toMaster(master, { kind: "submit", jobId: `job-${i}`, job: jobSpec(start + hourMs) }),
    );
  loop.run(start + 30 * minuteMs);

  let awardsToGone = 0;
  for (let i = 0; i < jobs; i++) {
    const job = jobOf(loop, master, `job-${i}`);
    t.is(job.status, "passed", job.reason);
    const lost = job.attempts.filter((attempt) => attempt.state === "lost");
    t.true(lost.length <= 1, `job-${i} lost ${lost.length} leases`);
    for (const attempt of lost) {
      t.is(attempt.worker, gone);
      const next = job.attempts[attempt.attempt + 1];
      t.true(others.includes(next?.worker as string), "the run went elsewhere");
      t.is(next?.awardedAtMs, attempt.awardedAtMs + awardAnswerMs, "the moment the award went unanswered");
    }
    t.true(
      (job.endedAtMs ?? Number.POSITIVE_INFINITY) - job.submittedAtMs <= leaseMs + 5 * secondMs,
      `job-${i} took ${(job.endedAtMs ?? 0) - job.submittedAtMs} ms`,
    );
    awardsToGone += job.attempts.filter((attempt) => attempt.worker === gone).length;
  }
  const times = [
    ...new Set(
      Array.from({ length: jobs }, (_, i) => jobOf(loop, master, `job-${i}`).attempts)
        .flat()
        .filter((attempt) => attempt.worker === gone)
        .map((attempt) => attempt.awardedAtMs),
    ),
  ].sort((a, b) => a - b);
  t.log(
    `${awardsToGone} awards to the vanished worker of 2 slots over ${jobs} jobs, at ${times.map((at) => (at - start) / secondMs)} s`,
  );
  t.true(awardsToGone >= 1, "its offer was awarded");
  // Its two slots may be awarded before the first answer is due; after that, each unanswered award sets its offer
  // aside for awardAnswerMs doubled (a worker cut off by a partition comes back): the gaps grow.
  const first = times[0] as number;
  const later = times.filter((at) => at >= first + awardAnswerMs);
  let previous = times.filter((at) => at < first + awardAnswerMs).at(-1) as number;
  later.forEach((at, i) => {
    // Lost awardAnswerMs after it was made, then set aside for awardAnswerMs × 2^(unanswered so far, at least i + 1).
    t.true(
      at - previous >= awardAnswerMs * (1 + 2 ** (i + 1)),
      `award to the vanished worker at ${(at - start) / secondMs} s, ${at - previous} ms after the last`,
    );
    previous = at;
  });
  t.true(awardsToGone <= 2 * times.length, `${awardsToGone} awards at ${times.length} times`);
});

// --- Renewed before they lapse, superseded when a slot is taken -------------------------------------------------

test("offers are renewed before they lapse, so the master never holds a lapsed one of a live worker; slots taken are not told, and an award into one is refused at once", (t) => {
  const loop = new Loop({ seed: 9 });
  const projectA = projectOf(34);
  const projectB = projectOf(35);
  const masterA = loop.addMaster({ project: projectA });
  const masterB = loop.addMaster({ project: projectB });
  const [worker] = addWorkers(loop, 1, {
    slots: 2,
    runner: true,
    behaviour: taking(5 * minuteMs),
    shares: { [projectA]: 1, [projectB]: 1 },
  });
  if (worker === undefined) return t.fail();
  const { offerLifetimeMs } = loop.worker(worker).state.config;
  loop.offerAll();
  const start = loop.nowMs;
  const endMs = start + 3 * offerLifetimeMs;
  let lapsed = 0;
  for (let atMs = start; atMs < endMs; atMs += minuteMs) {
    loop.run(atMs);
    for (const master of [masterA, masterB]) {
      const held = loop.master(master).state.workers[worker];
      if (held === undefined || held.expiresAtMs < loop.nowMs) lapsed++;
    }
  }
  t.is(lapsed, 0, "each master always held a live offer");
  const idle = sent(loop, "offer", worker);
  const perMaster = Math.ceil((endMs - start) / ((3 * offerLifetimeMs) / 4)) + 1;
  t.true(idle.length <= 2 * perMaster, `${idle.length} offers to two masters over ${(endMs - start) / minuteMs} min`);
  t.true(
    idle.every((offer) => offer.body.freeSlots === 2),
    "idle, it renews the same two slots",
  );

  const takenAtMs = loop.nowMs;
  loop.toMaster(masterA, { kind: "submit", jobId: "a", job: jobSpec(takenAtMs + hourMs) });
  loop.run(takenAtMs + 2 * loop.latencyMs);
  t.deepEqual(
    sent(loop, "offer", worker).filter((offer) => offer.atMs >= takenAtMs),
    [],
    "one slot of two taken: B is not told (an award of B into a taken slot would be refused at once); A counts its own award",
  );
  t.is(loop.master(masterA).state.workers[worker]?.freeSlots, 1);
  t.is(loop.master(masterB).state.workers[worker]?.freeSlots, 2);

  const fullAtMs = loop.nowMs;
  loop.toMaster(masterA, { kind: "submit", jobId: "b", job: jobSpec(fullAtMs + hourMs) });
  loop.run(fullAtMs + loop.latencyMs);
  const after = sent(loop, "offer", worker).filter((offer) => offer.atMs >= fullAtMs);
  t.deepEqual(after, [], "every slot taken: B is not told either (an award of B would be refused at once)");
  t.is(loop.master(masterA).state.workers[worker]?.freeSlots, 0);
  loop.run(fullAtMs + 2 * loop.latencyMs);
  t.is(loop.master(masterB).state.workers[worker]?.freeSlots, 2);
  // B's award into a taken slot is refused the moment it arrives, and B drops the offer.
  const staleAtMs = loop.nowMs;
  loop.toMaster(masterB, { kind: "submit", jobId: "c", job: jobSpec(staleAtMs + hourMs) });
  loop.run(staleAtMs + 2 * loop.latencyMs);
  const refusal = sent(loop, "result", worker).find((result) => result.body.jobId === "c");
  t.is(refusal?.body.outcome, "refused");
  t.is(refusal?.atMs, staleAtMs + loop.latencyMs);
  t.is(loop.master(masterB).state.workers[worker]?.freeSlots, 0);
});

// --- Properties over any sequence -------------------------------------------------------------------------------

const workerSelf = hexOf(identityFromSeed(new Uint8Array(32).fill(0x51)).publicKey);
const workerKey = identityFromSeed(new Uint8Array(32).fill(0x51)).publicKey;
const mastersOf = {
  [projectOf(36)]: ["a1".repeat(32), "a2".repeat(32)],
  [projectOf(37)]: ["b1".repeat(32)],
} as const;
const propertyProjects = Object.keys(mastersOf);

/** One input to a lone worker machine, as drawn. */
type Step =
  | {
      readonly kind: "award";
      readonly project: number;
      readonly master: number;
      readonly shard: number;
      /** Made before the worker's latest offer reached the master: whatever that offer says. */
      readonly raced: boolean;
    }
  | { readonly kind: "finish"; readonly pick: number; readonly refuse: boolean }
  | { readonly kind: "availability"; readonly availability: Availability }
  | { readonly kind: "advance"; readonly ms: number }
  | { readonly kind: "reject-or-cancel"; readonly pick: number }
  | { readonly kind: "restart" };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant("award" as const),
      project: fc.nat({ max: 1 }),
      master: fc.nat({ max: 1 }),
      shard: fc.nat({ max: 3 }),
      raced: fc.oneof({ arbitrary: fc.constant(false), weight: 3 }, { arbitrary: fc.constant(true), weight: 1 }),
    }),
    weight: 5,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("finish" as const), pick: fc.nat({ max: 7 }), refuse: fc.boolean() }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("availability" as const),
      availability: fc.constantFrom<Availability>("eager", "eager", "reluctant", "paused", "offline"),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("advance" as const),
      ms: fc.oneof(fc.integer({ min: 0, max: 2 * secondMs }), fc.integer({ min: 0, max: 30 * minuteMs })),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ kind: fc.constant("reject-or-cancel" as const), pick: fc.nat({ max: 7 }) }), weight: 1 },
  { arbitrary: fc.constant({ kind: "restart" as const }), weight: 1 },
);

testProp(
  "a worker never runs more than its slots, never sends an offer of a slot it does not have nor one while not eager, never leaves a master holding more slots than it has (awards since its last offer counted, a refusal zeroing it), and refuses an award it cannot take in the step it comes",
  [fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.array(stepArb, { maxLength: 120 })],
  (t, slots, seed, steps) => {
    const rng = seededRng(seed);
    let nowMs = 1_800_000_000_000;
    let state: WorkerState = createWorker(workerSelf, {
      slots,
      shares: Object.fromEntries(propertyProjects.map((p) => [p, 1])),
      dimensions,
      specs: [],
    });
    /** What each master holds of the worker's offer, from what the worker sent: last offer less awards, 0 after a refusal. */
    const held = new Map<string, number>();
    let attempt = 0;
    const feed = (input: WorkerInput): readonly Effect[] => {
      const out = stepWorker(state, input, nowMs, rng);
      state = out.state;
      const { freeSlots, availability } = offerStatus(state);
      for (const effect of out.effects)
        if (effect.type === "send" && effect.message.domain === "offer") {
          const offer = effect.message.body as Unsequenced<Offer>;
          const master = effect.to;
          held.set(`${offer.project}/${master}`, offer.freeSlots);
          t.true(offer.freeSlots <= freeSlots, `an offer of ${offer.freeSlots} slots with ${freeSlots} free`);
          if (offer.availability !== "eager") t.is(offer.freeSlots, 0, "only an eager worker offers slots");
        } else if (
          effect.type === "send" &&
          effect.message.domain === "result" &&
          effect.message.body.outcome === "refused"
        )
          held.set(`${effect.message.body.project}/${effect.to}`, 0);
      const running = Object.keys(state.running).length;
      t.true(running <= slots, `${running} runs on ${slots} slots`);
      // Slots taken are not told (a master awarding a taken one is refused at once): a master holds at most what the
      // worker has, all of it free or not.
      for (const [key, slotsHeld] of held)
        t.true(
          slotsHeld <= slots,
          `${key.slice(0, 12)} holds ${slotsHeld} slots, the worker has ${slots} (${availability}) after ${input.kind}`,
        );
      return out.effects;
    };
    feed({ kind: "restart" });
    for (const project of propertyProjects) feed({ kind: "masters", project, masters: mastersOf[project] ?? [] });
    feed({ kind: "tick" });
    nowMs += state.config.offerJitterMs + 2 * state.config.offerStaggerMs;
    feed({ kind: "tick" });
    for (const step of steps) {
      switch (step.kind) {
        case "award": {
          const projectId = propertyProjects[step.project] as string;
          const masters = mastersOf[projectId] ?? [];
          const master = masters[step.master % masters.length] as string;
          const key = `${projectId}/${master}`;
          // A master awards only from what it holds of the offer, unless the award raced a newer offer.
          if ((held.get(key) ?? 0) <= 0 && !step.raced) break;
          held.set(key, Math.max(0, (held.get(key) ?? 0) - 1));
          const award: Award = {
            issuedAtMs: nowMs,
            expiresAtMs: nowMs + minuteMs,
            seq: attempt,
            project: projectId,
            jobId: `job-${attempt}`,
            worker: workerKey,
            attempt: attempt++,
            shard: step.shard,
            shardAttempt: 0,
            leaseExpiresAtMs: nowMs + minuteMs,
            job: jobSpec(nowMs + hourMs, { shards: 4 }),
          };
          const before = Object.keys(state.running).length;
          const effects = feed({ kind: "award", signer: master, award });
          const started = effects.some((effect) => effect.type === "start-execution");
          const refused = effects.some(
            (effect) =>
              effect.type === "send" &&
              effect.message.domain === "result" &&
              effect.message.body.jobId === award.jobId &&
              effect.message.body.outcome === "refused",
          );
          t.true(started !== refused, "an award starts a run or is refused, in the step it comes");
          if (started) t.is(Object.keys(state.running).length, before + 1);
          break;
        }
        case "finish": {
          const runs = Object.values(state.running);
          const run = runs[step.pick % Math.max(1, runs.length)];
          if (run === undefined) break;
          feed({
            kind: "execution-finished",
            report: {
              runId: run.runId,
              outcome: step.refuse ? "refused" : "succeeded",
              exitCode: step.refuse ? null : 0,
              outputsDigest: null,
              logDigest: null,
              summary: "",
              durationMs: nowMs - run.startedAtMs,
            },
          });
          break;
        }
        case "availability":
          feed({ kind: "set-availability", availability: step.availability });
          break;
        case "advance":
          nowMs += step.ms;
          feed({ kind: "tick" });
          break;
        case "reject-or-cancel": {
          const runs = Object.values(state.running);
          const run = runs[step.pick % Math.max(1, runs.length)];
          if (run === undefined) break;
          feed({
            kind: "cancel",
            signer: run.master,
            cancel: {
              issuedAtMs: nowMs,
              expiresAtMs: nowMs + minuteMs,
              seq: 0,
              project: run.project,
              jobId: run.jobId,
              attempt: run.attempt,
              reason: "test",
            },
          });
          break;
        }
        case "restart":
          // What each master held described the last process: the worker offers anew to all.
          held.clear();
          feed({ kind: "restart" });
          for (const project of propertyProjects) feed({ kind: "masters", project, masters: mastersOf[project] ?? [] });
          break;
      }
    }
  },
  { numRuns: 300 },
);

/** A loop worker's draw: slots, projects, how it behaves, and when it changes its mind. */
const meshWorkerArb = fc.record({
  slots: fc.integer({ min: 1, max: 3 }),
  projects: fc.constantFrom([0], [1], [0, 1]),
  behaviour: fc.constantFrom("honest", "slow", "refuses", "vanishes", "hangs"),
  availability: fc.constantFrom<Availability>("eager", "eager", "eager", "reluctant"),
  changes: fc.array(
    fc.tuple(
      fc.integer({ min: 0, max: 10 * minuteMs }),
      fc.constantFrom<Availability>("eager", "reluctant", "paused", "offline"),
    ),
    { maxLength: 3 },
  ),
});

testProp(
  "in a mesh of two masters and any workers, a master never awards a worker more runs from its offer than the slots it offered, and no worker runs more than its slots",
  [
    fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    fc.array(meshWorkerArb, { minLength: 1, maxLength: 5 }),
    fc.array(
      fc.record({
        atMs: fc.integer({ min: 0, max: 10 * minuteMs }),
        master: fc.nat({ max: 1 }),
        shards: fc.integer({ min: 1, max: 4 }),
        replicas: fc.integer({ min: 1, max: 2 }),
      }),
      { minLength: 1, maxLength: 20 },
    ),
  ],
  (t, seed, drawn, jobs) => {
    const loop = new Loop({ seed, latencyMs: 1 + (seed % 40) });
    const projects = [projectOf(38), projectOf(39)];
    const masters = projects.map((p) => loop.addMaster({ project: p, leaseMs: 30 * secondMs, ...countOnly }));
    const slotsOf = new Map<string, number>();
    const behaviours: Record<string, Behaviour> = {
      honest,
      slow: taking(90 * secondMs),
      refuses: (run, worker) => ({ ...(honest(run, worker) as Report), outcome: "refused", exitCode: null }),
      vanishes: (_run, worker) => {
        loop.worker(worker).vanished = true;
        return null;
      },
      hangs: () => null,
    };
    // Per master and worker: the slots the master may still award from, by the offers it took and the awards,
    // refusals and unanswered awards since.
    const allowed = new Map<string, number>();
    const original = loop.toMaster.bind(loop);
    loop.toMaster = (key: string, input: MasterInput) => {
      const from = loop.log.length;
      const state = loop.master(key).state;
      // Awards from bids are not the offer's: a reluctant worker's, or one that held an announcement while paused.
      const bidders = new Set<string>();
      for (const job of Object.values(state.jobs))
        for (const bid of job.bids) bidders.add(`${job.jobId}/${bid.worker}`);
      if (input.kind === "bid") bidders.add(`${input.bid.jobId}/${input.signer}`);
      const refusing =
        input.kind === "result" &&
        input.result.outcome === "refused" &&
        state.jobs[input.result.jobId]?.attempts[input.result.attempt]?.worker === input.signer &&
        state.jobs[input.result.jobId]?.attempts[input.result.attempt]?.state === "running";
      if (input.kind === "offer") {
        const known = state.workers[input.signer] ?? state.unproven[input.signer];
        const newer = known === undefined || known.seq < input.offer.seq;
        if (newer && input.offer.project === state.config.project)
          allowed.set(`${key}/${input.signer}`, input.offer.availability === "eager" ? input.offer.freeSlots : 0);
      }
      original(key, input);
      // A worker that refused a run it held has no slot for this master until it offers again.
      if (refusing) allowed.set(`${key}/${input.signer}`, 0);
      for (const { node, effect } of loop.log.slice(from)) {
        // An award left unanswered gives its slot back (it most likely never reached the worker).
        if (node === key && effect.type === "log" && effect.event === "award-unanswered") {
          const pair = `${key}/${String(effect.fields.worker)}`;
          allowed.set(pair, (allowed.get(pair) ?? 0) + 1);
          continue;
        }
        if (node !== key || effect.type !== "send" || effect.message.domain !== "award") continue;
        const pair = `${key}/${effect.to}`;
        const left = (allowed.get(pair) ?? 0) - 1;
        // Every award uses a slot of the offer; one from no bid must have had one.
        allowed.set(pair, Math.max(0, left));
        if (!bidders.has(`${effect.message.body.jobId}/${effect.to}`))
          t.true(left >= 0, `${key.slice(0, 6)} awarded ${effect.to.slice(0, 6)} more runs than the slots it offered`);
      }
    };
    for (const worker of drawn) {
      const shares = Object.fromEntries(worker.projects.map((index) => [projects[index] as string, 1]));
      const key = loop.addWorker(
        { shares, dimensions, specs: [], slots: worker.slots },
        behaviours[worker.behaviour],
        worker.availability,
      );
      slotsOf.set(key, worker.slots);
      for (const [atMs, availability] of worker.changes)
        loop.at(loop.nowMs + atMs, () => loop.toWorker(key, { kind: "set-availability", availability }));
    }
    const start = loop.nowMs;
    jobs.forEach((job, i) => {
      loop.at(start + job.atMs, () =>
        loop.toMaster(masters[job.master] as string, {
          kind: "submit",
          jobId: `job-${i}`,
          job: jobSpec(start + 30 * minuteMs, {
            shards: job.shards,
            replicas: job.replicas,
            quorum: job.replicas,
          }),
        }),
      );
    });
    loop.run(start + 40 * minuteMs);
    for (const [worker, slots] of slotsOf) {
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
      t.true(peak <= slots, `a worker of ${slots} slots ran ${peak} at once`);
    }
    for (const master of masters)
      for (const job of Object.values(loop.master(master).state.jobs))
        t.not(job.status, "open", "the deadline ends it");
  },
  { numRuns: 40 },
);

test("an offer that crosses an award in flight does not offer that slot twice: the master takes off the awards the worker had not seen when it offered, until a new process offers afresh", (t) => {
  const startMs = 1_000_000;
  const rng = seededRng(5);
  let master = createMaster({ project, ...countOnly });
  const worker = "ab".repeat(32);
  let seq = 1;
  const offer = (epoch: number, awardsSeen: number, freeSlots: number, atMs: number): MasterInput => ({
    kind: "offer",
    signer: worker,
    offer: {
      issuedAtMs: atMs,
      expiresAtMs: atMs + hourMs,
      seq: seq++,
      project,
      freeSlots,
      totalSlots: 1,
      availability: "eager",
      network: false,
      epoch,
      awardsSeen,
      dimensions,
      specs: [],
    },
  });
  const step = (input: MasterInput, atMs: number) => {
    const out = stepMaster(master, input, atMs, rng);
    master = out.state;
    return out.effects;
  };
  const awardsIn = (effects: readonly Effect[]) =>
    effects.filter((effect) => effect.type === "send" && effect.message.domain === "award").length;
  step(offer(startMs, 0, 1, startMs), startMs);
  t.is(awardsIn(step({ kind: "submit", jobId: "a", job: jobSpec(startMs + hourMs) }, startMs)), 1, "the slot offered");
  // The worker renews its offer before the award reaches it: the same slot, no award seen yet.
  t.is(awardsIn(step(offer(startMs, 0, 1, startMs + 1), startMs + 1)), 0);
  t.is(
    awardsIn(step({ kind: "submit", jobId: "b", job: jobSpec(startMs + hourMs) }, startMs + 2)),
    0,
    "the renewal crossed the award: its slot is not offered twice",
  );
  t.is(master.jobs.b?.attempts.length, 0);
  // The worker ran the first job and offers its slot again, having seen the award: job b takes it at once.
  t.is(awardsIn(step(offer(startMs, 1, 1, startMs + 3), startMs + 3)), 1, "a slot freed after the award is offered");
  t.is(master.jobs.b?.attempts[0]?.worker, worker);
  // A new process of the worker (a restart) has seen no award of the old one: its slots are taken as offered.
  step({ kind: "submit", jobId: "c", job: jobSpec(startMs + hourMs) }, startMs + 4);
  t.is(awardsIn(step(offer(startMs + 5, 0, 1, startMs + 5), startMs + 5)), 1, "a new process offers afresh");
});

// --- What a run sees --------------------------------------------------------------------------------------------

test("CIMESH_ATTEMPT counts the tries of one shard: 0 for each shard's first run, 1 for a shard's run after a refusal", (t) => {
  const loop = new Loop({ seed: 21 });
  const master = loop.addMaster({ project });
  // The first run of shard 1 is refused (its worker's sandbox failed to start, say); every other run is honest.
  let refused = false;
  const behaviour: Behaviour = (run, worker) => {
    if (run.shard !== 1 || refused) return honest(run, worker);
    refused = true;
    return { ...(honest(run, worker) as Report), outcome: "refused", exitCode: null };
  };
  addWorkers(loop, 6, { behaviour });
  loop.offerAll();
  const start = loop.nowMs;
  loop.toMaster(master, { kind: "submit", jobId: "sharded", job: jobSpec(start + hourMs, { shards: 3 }) });
  loop.run(start + 10 * minuteMs);
  const starts = loop.log
    .map(({ effect }) => effect)
    .filter((effect) => effect.type === "start-execution" && effect.run.jobId === "sharded")
    .map((effect) => (effect.type === "start-execution" ? [effect.run.shard, effect.run.env.CIMESH_ATTEMPT] : []));
  const byShard = (shard: number) => starts.filter(([s]) => s === shard).map(([, attempt]) => attempt);
  t.deepEqual(byShard(0).slice(0, 1), ["0"]);
  t.deepEqual(byShard(2).slice(0, 1), ["0"]);
  t.deepEqual(byShard(1).slice(0, 2), ["0", "1"], "the refused run was the shard's first try, the next its second");
});
