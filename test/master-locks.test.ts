/**
 * Model-based test of the master's project locks (jobs/master.ts): one master
 * driven by fast-check commands in any order over a virtual clock: submits of
 * jobs naming locks, standing offers, bids, awards started, renewed or left
 * unanswered, results (succeeded, failed, refused, late, duplicate), cancels,
 * the passing of time (leases lapse, awards go unanswered) and crashes, after
 * which the master is rebuilt from what a store holds of it (the job records
 * each step named as changed, through JSON) and given a restart.
 *
 * The model keeps, from the master's own effects, which awards a worker may be
 * running: every award, from when it went out until the worker reported on it
 * (a result of any outcome), its lease lapsed and the kill's grace passed (the
 * last lease the master told the worker, in the award or a renewal), or,
 * unanswered (the master never renewed it), its answer window passed. After every step no lock has more of
 * those than the least count their jobs name. A drain phase of honest workers
 * then ends every job, and none fails for want of its lock.
 */
import test from "ava";
import fc from "fast-check";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import {
  blockingLock,
  createMaster,
  type Effect,
  explainJob,
  type JobLock,
  type JobRecord,
  type JobSpec,
  keyOf,
  type MasterConfig,
  type MasterInput,
  type MasterState,
  type Outcome,
  restoreMaster,
  stepMaster,
} from "../jobs/index.ts";
import { parseScenario, simulate } from "../sim/index.ts";
import { seededRng } from "./loop.ts";

const startMs = 1_800_000_000_000;
const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(9)).publicKey], 1).project;
const workers: readonly string[] = Array.from({ length: 5 }, (_, i) =>
  (i + 1).toString(16).padStart(2, "0").repeat(32),
);
const lockNames = ["staging-db", "vm"] as const;
const maxSubmits = 10;
const drainRounds = 800;
/** Under the award answer window, so every award made as time passes is answered in the next round. */
const drainStepMs = 250;
/** Fresh honest workers joining each drain round. */
const freshPerRound = 2;
/** A job whose deadline is this far past the drain's start must not fail by its deadline: the drain ends it sooner. */
const drainDeadlineMarginMs = 200_000;

const config: Partial<MasterConfig> & { project: string } = {
  project,
  leaseMs: 2_000,
  awardAnswerMs: 1_000,
  lockReleaseGraceMs: 500,
  restartGraceMs: 3_000,
  bidWindowMs: 250,
  reannounceIntervalMs: 5_000,
  // A count of agreeing results decides: who is believed is not what this test is about.
  quorumWeight: 0,
  distinctPrefixes: false,
  spotCheckFraction: 0,
};

/** An award the model saw go out, and what it knows of it from the master's effects and its own messages. */
interface Award {
  readonly jobId: string;
  readonly attempt: number;
  readonly shard: number;
  readonly worker: string;
  readonly locks: readonly JobLock[];
  readonly awardedAtMs: number;
  /** The lease the master last told the worker. */
  leaseUntilMs: number;
  /** The master renewed it: the worker's start was taken. */
  answered: boolean;
  /** The worker reported on it (any outcome): its run is over. */
  reported: boolean;
}

interface Model {
  nowMs: number;
  seq: number;
  submits: number;
  readonly jobIds: string[];
  readonly specs: Map<string, JobSpec>;
  readonly awards: Award[];
  /** Awards each worker saw since its offers began (the offers' awardsSeen). */
  readonly awardsSeen: Map<string, number>;
  readonly offerSeq: Map<string, number>;
  wakeUpMs: number | null;
  state: MasterState;
  readonly stored: Map<string, string>;
  readonly rng: () => number;
  /** Most holders of any lock seen at once, and lock waits the master logged: to see the test reach what it tests. */
  mostHolders: number;
  lockWaits: number;
  restarts: number;
}

type Command =
  | {
      readonly kind: "submit";
      readonly locks: readonly { readonly name: number; readonly count: number }[];
      readonly replicas: number;
      readonly shards: number;
      readonly deadlineInMs: number;
      readonly priority: number;
    }
  | { readonly kind: "offer"; readonly worker: number; readonly slots: number; readonly eager: boolean }
  | { readonly kind: "bid"; readonly worker: number; readonly job: number }
  | { readonly kind: "start"; readonly award: number }
  | { readonly kind: "result"; readonly award: number; readonly outcome: Outcome }
  | { readonly kind: "cancel"; readonly job: number }
  | { readonly kind: "advance"; readonly ms: number }
  | { readonly kind: "crash" };

/** Whether a worker may be running the award: it stops a run when its lease lapses, and the kill takes the grace. */
function live(model: Model, award: Award): boolean {
  if (award.reported || model.nowMs >= award.leaseUntilMs + (config.lockReleaseGraceMs as number)) return false;
  return award.answered || model.nowMs < award.awardedAtMs + (config.awardAnswerMs as number);
}

/** No lock has more awards a worker may be running than the least count their jobs name; the master holds each. */
function checkLocks(model: Model): void {
  const holders = new Map<string, Award[]>();
  for (const award of model.awards) {
    if (!live(model, award)) continue;
    for (const lock of award.locks) holders.set(lock.name, [...(holders.get(lock.name) ?? []), award]);
    const attempt = model.state.jobs[award.jobId]?.attempts[award.attempt];
    if (award.locks.length > 0 && attempt?.locksHeld !== true)
      throw new Error(
        `${award.jobId}#${award.attempt} may still run on ${award.worker.slice(0, 4)}, but holds no lock`,
      );
  }
  for (const [name, awards] of holders) {
    model.mostHolders = Math.max(model.mostHolders, awards.length);
    for (const award of awards) {
      const count = award.locks.find((lock) => lock.name === name)?.count as number;
      if (awards.length > count)
        throw new Error(
          `lock ${name}: ${awards.length} runs may run at once (${awards.map((a) => `${a.jobId}#${a.attempt}`).join(", ")}), but ${award.jobId} names count ${count}`,
        );
    }
  }
  // The master's own table agrees with its attempt records.
  const counted = new Map<string, number>();
  for (const job of Object.values(model.state.jobs))
    for (const attempt of job.attempts)
      if (attempt.locksHeld === true)
        for (const lock of job.spec.locks ?? []) counted.set(lock.name, (counted.get(lock.name) ?? 0) + 1);
  for (const name of lockNames) {
    const table = model.state.lockHolders[name]?.length ?? 0;
    if (table !== (counted.get(name) ?? 0))
      throw new Error(`lock ${name}: the table lists ${table} holders, the attempt records ${counted.get(name) ?? 0}`);
  }
}

function observe(model: Model, effects: readonly Effect[]): void {
  for (const effect of effects) {
    if (effect.type === "set-timer") model.wakeUpMs = effect.atMs;
    if (effect.type === "log" && effect.event === "lock-wait") model.lockWaits++;
    if (effect.type !== "send") continue;
    const { message } = effect;
    if (message.domain === "award") {
      const body = message.body;
      model.awards.push({
        jobId: body.jobId,
        attempt: body.attempt,
        shard: body.shard,
        worker: effect.to,
        locks: body.job.locks ?? [],
        awardedAtMs: model.nowMs,
        leaseUntilMs: body.leaseExpiresAtMs,
        answered: false,
        reported: false,
      });
      model.awardsSeen.set(effect.to, (model.awardsSeen.get(effect.to) ?? 0) + 1);
    } else if (message.domain === "leaseRenew") {
      const award = model.awards.find(
        (a) => a.jobId === message.body.jobId && a.attempt === message.body.attempt && a.worker === effect.to,
      );
      if (award !== undefined) {
        award.answered = true;
        award.leaseUntilMs = Math.max(award.leaseUntilMs, message.body.leaseExpiresAtMs);
      }
    }
  }
}

function step(model: Model, input: MasterInput): void {
  const output = stepMaster(model.state, input, model.nowMs, model.rng);
  model.state = output.state;
  // What a store keeps: the records each step names, as JSON.
  for (const jobId of output.changes.jobs) {
    const job = model.state.jobs[jobId];
    if (job !== undefined) model.stored.set(jobId, JSON.stringify(job));
  }
  for (const jobId of output.changes.removedJobs) model.stored.delete(jobId);
  observe(model, output.effects);
  checkLocks(model);
}

/** Time passes: the master is woken at each wake-up it asked for on the way. */
function advance(model: Model, toMs: number): void {
  while (model.wakeUpMs !== null && model.wakeUpMs <= toMs) {
    model.nowMs = Math.max(model.nowMs, model.wakeUpMs);
    model.wakeUpMs = null;
    step(model, { kind: "tick" });
  }
  model.nowMs = Math.max(model.nowMs, toMs);
  checkLocks(model);
}

function header(model: Model, lifetimeMs = 60_000) {
  return { issuedAtMs: model.nowMs, expiresAtMs: model.nowMs + lifetimeMs, seq: model.seq++ };
}

function offer(model: Model, worker: string, freeSlots: number, eager: boolean): void {
  const seq = (model.offerSeq.get(worker) ?? 0) + 1;
  model.offerSeq.set(worker, seq);
  step(model, {
    kind: "offer",
    signer: worker,
    offer: {
      issuedAtMs: model.nowMs,
      expiresAtMs: model.nowMs + 600_000,
      seq,
      project,
      freeSlots,
      totalSlots: 4,
      availability: eager ? "eager" : "reluctant",
      network: false,
      epoch: startMs,
      awardsSeen: model.awardsSeen.get(worker) ?? 0,
      dimensions: {
        os: "linux",
        arch: "x64",
        cores: 8,
        memoryBytes: 2 ** 34,
        diskBytes: 2 ** 40,
        tools: [],
        labels: [],
      },
      specs: [],
    },
  });
}

function startRun(model: Model, award: Award): void {
  step(model, {
    kind: "lease-renew",
    signer: award.worker,
    renew: {
      ...header(model),
      project,
      jobId: award.jobId,
      worker: keyOf(award.worker),
      attempt: award.attempt,
      progressPermille: 0,
      leaseExpiresAtMs: award.leaseUntilMs,
    },
  });
}

function report(model: Model, award: Award, outcome: Outcome): void {
  award.reported = true;
  const refused = outcome === "refused";
  step(model, {
    kind: "result",
    signer: award.worker,
    result: {
      ...header(model),
      project,
      jobId: award.jobId,
      attempt: award.attempt,
      shard: award.shard,
      exitCode: refused ? null : outcome === "succeeded" ? 0 : 1,
      outcome,
      outputsDigest: refused ? null : "bhonestoutputsaaaaaaaa",
      logDigest: null,
      summary: "",
      durationMs: refused ? 0 : 500,
    },
  });
}

/** The master as a restarted node rebuilds it: from the stored job records alone, then a restart input. */
function crash(model: Model): void {
  const jobs = [...model.stored.values()].map((text) => JSON.parse(text) as JobRecord);
  model.state = restoreMaster(config, jobs, {});
  model.wakeUpMs = null;
  model.restarts++;
  step(model, { kind: "restart" });
}

function specOf(model: Model, command: Extract<Command, { kind: "submit" }>): JobSpec {
  const locks = new Map<string, number>();
  for (const lock of command.locks) locks.set(lockNames[lock.name] as string, lock.count);
  return {
    name: "locked",
    steps: [{ name: "test", run: "make test" }],
    env: {},
    timeoutMs: 60_000,
    resources: { cpus: 1, memoryBytes: 2 ** 30, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: null,
    replicas: command.replicas,
    quorum: 1,
    shards: command.shards,
    priority: command.priority,
    maxAttempts: command.replicas + 2,
    deadlineMs: model.nowMs + command.deadlineInMs,
    ...(locks.size > 0 ? { locks: [...locks].map(([name, count]) => ({ name, count })) } : {}),
  };
}

function apply(model: Model, command: Command): void {
  switch (command.kind) {
    case "submit": {
      if (model.submits >= maxSubmits) return;
      const jobId = `job-${model.submits++}`;
      const spec = specOf(model, command);
      model.jobIds.push(jobId);
      model.specs.set(jobId, spec);
      step(model, { kind: "submit", jobId, job: spec });
      return;
    }
    case "offer":
      offer(model, workers[command.worker] as string, command.slots, command.eager);
      return;
    case "bid": {
      const jobId = model.jobIds[command.job % Math.max(1, model.jobIds.length)];
      if (jobId === undefined) return;
      step(model, {
        kind: "bid",
        signer: workers[command.worker] as string,
        bid: {
          ...header(model),
          project,
          jobId,
          round: model.state.jobs[jobId]?.round ?? 0,
          availability: "reluctant",
          runningJobs: 0,
          freeSlots: 1,
          cachedInputBytes: 0,
        },
      });
      return;
    }
    case "start": {
      const award = model.awards[command.award % Math.max(1, model.awards.length)];
      if (award !== undefined) startRun(model, award);
      return;
    }
    case "result": {
      const award = model.awards[command.award % Math.max(1, model.awards.length)];
      if (award !== undefined) report(model, award, command.outcome);
      return;
    }
    case "cancel": {
      const jobId = model.jobIds[command.job % Math.max(1, model.jobIds.length)];
      if (jobId !== undefined) step(model, { kind: "cancel", jobId, reason: "cancelled by the test" });
      return;
    }
    case "advance":
      advance(model, model.nowMs + command.ms);
      return;
    case "crash":
      crash(model);
      return;
  }
}

/**
 * Honest workers from here on: each offers, starts what it was awarded, and reports success a round later. A few
 * fresh ones join each round, since a worker runs a shard at most once and the chaos may have used every one of the
 * pool on a shard.
 */
function drain(model: Model): number {
  const drainStartMs = model.nowMs;
  const honest = [...workers];
  for (let round = 1; round <= drainRounds; round++) {
    for (let n = 0; n < freshPerRound; n++) honest.push(`fe${honest.length.toString(16).padStart(62, "0")}`);
    for (const worker of honest) offer(model, worker, 2, true);
    for (const award of model.awards)
      if (live(model, award) && !award.answered && !award.reported) startRun(model, award);
    for (const award of model.awards) if (live(model, award) && award.answered) report(model, award, "succeeded");
    advance(model, model.nowMs + drainStepMs);
    if (Object.values(model.state.jobs).every((job) => job.status !== "open")) {
      for (const job of Object.values(model.state.jobs)) {
        const spec = model.specs.get(job.jobId) as JobSpec;
        if (
          job.status === "failed" &&
          job.reason.startsWith("deadline") &&
          spec.deadlineMs > drainStartMs + drainDeadlineMarginMs
        )
          throw new Error(
            `${job.jobId} failed by its deadline though the drain had ${spec.deadlineMs - drainStartMs} ms: ${explainJob(model.state, job.jobId, model.nowMs)}`,
          );
      }
      return round;
    }
  }
  const open = Object.values(model.state.jobs).filter((job) => job.status === "open");
  throw new Error(
    `${open.length} job(s) still open after the drain: ${open.map((job) => explainJob(model.state, job.jobId, model.nowMs)).join("\n")}`,
  );
}

const lockArb = fc.record({
  name: fc.integer({ min: 0, max: lockNames.length - 1 }),
  count: fc.integer({ min: 1, max: 3 }),
});
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("submit" as const),
      // Most jobs name a lock, some two, a few none.
      locks: fc.oneof(
        { weight: 1, arbitrary: fc.constant([]) },
        { weight: 6, arbitrary: fc.array(lockArb, { minLength: 1, maxLength: 2 }) },
      ),
      replicas: fc.integer({ min: 1, max: 2 }),
      shards: fc.integer({ min: 1, max: 2 }),
      deadlineInMs: fc.oneof(fc.integer({ min: 1_000, max: 30_000 }), fc.constant(3_600_000)),
      priority: fc.integer({ min: 0, max: 2 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("offer" as const),
      worker: fc.integer({ min: 0, max: workers.length - 1 }),
      slots: fc.integer({ min: 0, max: 3 }),
      eager: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("bid" as const),
      worker: fc.integer({ min: 0, max: workers.length - 1 }),
      job: fc.nat({ max: 31 }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("start" as const), award: fc.nat({ max: 63 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("result" as const),
      award: fc.nat({ max: 63 }),
      outcome: fc.constantFrom<Outcome>("succeeded", "succeeded", "failed", "refused"),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("cancel" as const), job: fc.nat({ max: 31 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("advance" as const),
      ms: fc.oneof(fc.integer({ min: 1, max: 1_500 }), fc.integer({ min: 1_500, max: 6_000 })),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "crash" as const }) },
);

function newModel(seed: number): Model {
  return {
    nowMs: startMs,
    seq: 1,
    submits: 0,
    jobIds: [],
    specs: new Map(),
    awards: [],
    awardsSeen: new Map(),
    offerSeq: new Map(),
    wakeUpMs: null,
    state: createMaster(config),
    stored: new Map(),
    rng: seededRng(seed),
    mostHolders: 0,
    lockWaits: 0,
    restarts: 0,
  };
}

test("master locks: under any order of messages, crashes and lapsed leases, no lock has more holders than its count, and every job ends", (t) => {
  let mostHolders = 0;
  let lockWaits = 0;
  let restarts = 0;
  let longestDrain = 0;
  const details = fc.check(
    fc.property(fc.array(commandArb, { maxLength: 200, size: "large" }), fc.integer(), (commands, seed) => {
      const model = newModel(seed);
      for (const command of commands) apply(model, command);
      longestDrain = Math.max(longestDrain, drain(model));
      mostHolders = Math.max(mostHolders, model.mostHolders);
      lockWaits += model.lockWaits;
      restarts += model.restarts;
    }),
    { numRuns: 300 },
  );
  if (details.failed) {
    t.log(JSON.stringify(details.counterexample));
    t.fail(String(details.errorInstance));
    return;
  }
  t.log(
    `most holders of one lock at once: ${mostHolders}; lock waits: ${lockWaits}; restarts: ${restarts}; longest drain: ${longestDrain} rounds`,
  );
  t.true(mostHolders >= 3, "some runs reached a lock's count of 3");
  t.true(lockWaits > 0, "some jobs waited for a lock");
});

test("master locks: a job behind a full lock waits, says so in explain, is not announced, and takes the lock when a holder's lease lapses", (t) => {
  const model = newModel(1);
  offer(model, workers[0] as string, 1, true);
  offer(model, workers[1] as string, 1, true);
  const submit = (jobId: string) => {
    const spec = specOf(model, {
      kind: "submit",
      locks: [{ name: 0, count: 1 }],
      replicas: 1,
      shards: 1,
      deadlineInMs: 3_600_000,
      priority: 0,
    });
    model.jobIds.push(jobId);
    model.specs.set(jobId, spec);
    step(model, { kind: "submit", jobId, job: spec });
  };
  submit("first");
  submit("second");
  t.is(model.awards.length, 1, "one award for a lock of count 1, though two workers offer");
  t.is(model.awards[0]?.jobId, "first");
  t.is(model.state.lockWaits.second, "staging-db");
  t.is(blockingLock(model.state, model.specs.get("second") as JobSpec), "staging-db");
  t.regex(
    explainJob(model.state, "second", model.nowMs),
    /waiting for lock staging-db: 1 of 1 held \(by runs of first\)/,
  );
  t.is(model.lockWaits, 1);
  // The first run starts, then its worker vanishes: once its lease lapses the lock is free again, and the older job,
  // which wants its run again, takes it on the other worker.
  startRun(model, model.awards[0] as Award);
  advance(model, model.nowMs + 1_500);
  t.is(model.awards.length, 1, "the lock is held while the lease runs");
  advance(model, model.nowMs + 700);
  t.is(model.awards.length, 1, "a lapsed run holds the lock a grace past its lease: its worker may be killing it");
  advance(model, model.nowMs + 300);
  t.is(model.awards.length, 2, "the lapsed lease let go of the lock");
  t.deepEqual([model.awards[1]?.jobId, model.awards[1]?.worker], ["first", workers[1]]);
  t.is(model.state.lockWaits.second, "staging-db");
  // Its result lets go of the lock in the step it arrives: the waiting job takes it at once, on a worker offering.
  offer(model, workers[2] as string, 1, true);
  startRun(model, model.awards[1] as Award);
  report(model, model.awards[1] as Award, "succeeded");
  t.is(model.state.jobs.first?.status, "passed");
  t.is(model.awards.length, 3);
  t.deepEqual([model.awards[2]?.jobId, model.awards[2]?.worker], ["second", workers[2]]);
  t.is(model.state.lockWaits.second, undefined);
  t.is(
    model.lockWaits,
    2,
    "the second job waited once, however often it was planned; the first while its lapsed run's hold ran out",
  );
  t.false(
    model.state.jobs.second?.announcements !== 0,
    "a job waiting for a lock is not announced: no worker could take it",
  );
});

test("the simulator runs jobs holding a project lock: every job passes, and its metrics count the lock waits", (t) => {
  const scenario = parseScenario(
    [
      "name: locks",
      "seed: 3",
      "duration: 10m",
      "drain: 2h",
      "signatures: fast",
      "projects: 1",
      "workers: { count: 8, slots: 1 }",
      "jobs: { count: 20, medianDuration: 1m, deadline: 2h, locks: [{ name: staging-db, count: 2 }] }",
    ].join("\n"),
    "locks.yaml",
  );
  const metrics = simulate(scenario);
  t.is(metrics.jobs.passed, 20);
  t.deepEqual(metrics.invariants.violations, []);
  // Twenty jobs of about a minute, two at a time, arriving over ten minutes on eight workers: most must wait.
  t.true(metrics.lockWaits >= 5, `lock waits: ${metrics.lockWaits}`);
  t.log(`lock waits: ${metrics.lockWaits}; claim latency p50 ${metrics.claimLatencyMs.p50} ms`);
});
