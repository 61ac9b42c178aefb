/**
 * Believe no one for free: what throwaway identities can and cannot do to a
 * master (jobs/master.ts) and to admission (jobs/admission.ts). A bench drives
 * one master with stepMaster on a virtual clock, as its node would: parties
 * offer their slots (the master awards from offers on hand at once) and bid on
 * every open job (in a random order each round), the master's wake-ups come
 * due, and whoever holds a run reports the digest its behaviour says (the
 * honest output, one lie shared by colluders, or nothing). Every step is
 * watched: no shard may ever decide on a lie, whether its runs came from
 * offers or from bids.
 *
 * The last test measures, without asserting more than the rules promise, what
 * an attacker must spend to forge one pass under the default rules: identities
 * and valid runs.
 */
import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import {
  acceptKeyset,
  anchorFromGenesis,
  createReplayLedger,
  defaultReplayLedgerLimits,
  identityFromSeed,
  sealKeyset,
  trustFromAnchor,
} from "../crypto/index.ts";
import {
  type AdmissionContext,
  admit,
  type Channel,
  createMaster,
  defaultMasterConfig,
  type Effect,
  hexOf,
  type JobRecord,
  type JobSpec,
  type MasterConfig,
  type MasterInput,
  type MasterState,
  messageDomains,
  type Opened,
  resultDigest,
  type SignedBody,
  stepMaster,
} from "../jobs/index.ts";
import { peekTimer } from "../jobs/timers.ts";
import { typicalAnnouncement } from "./arbitraries.ts";
import { seededRng } from "./loop.ts";

const startMs = 1_800_000_000_000;
const secondMs = 1000;
const minuteMs = 60 * secondMs;
const hourMs = 60 * minuteMs;
const dayMs = 24 * hourMs;

const root = identityFromSeed(new Uint8Array(32).fill(0x11));
const announcer = identityFromSeed(new Uint8Array(32).fill(0x41));
const anchor = anchorFromGenesis([root.publicKey], 1);
const project = anchor.project;

const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 4,
  memoryBytes: 8 * 2 ** 30,
  diskBytes: 2 ** 36,
  tools: [],
  labels: [],
};

function jobSpec(overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    name: "test",
    steps: [{ name: "check", run: "npm test" }],
    env: {},
    timeoutMs: 10 * minuteMs,
    resources: { cpus: 1, memoryBytes: 2 ** 30, diskBytes: 0, processes: 64 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: "linux",
    replicas: 2,
    quorum: 2,
    shards: 1,
    priority: 0,
    maxAttempts: 4,
    deadlineMs: startMs + 30 * dayMs,
    ...overrides,
  };
}

const honestOutputs = "bafkreihonestoutputsaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const lieOutputs = "bafkreicolludersoutputsaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const honestDigest = resultDigest({ outcome: "succeeded", exitCode: 0, outputsDigest: honestOutputs });
const lieDigest = resultDigest({ outcome: "succeeded", exitCode: 0, outputsDigest: lieOutputs });

/** What a party reports for a run it holds: the honest output, the colluders' shared lie, or nothing (it vanishes). */
type Report = "honest" | "lie" | "none";

/** One identity as the master sees it: its key, whether trust names it a runner, the prefix its bids come from. */
interface Party {
  readonly key: string;
  readonly runner: boolean;
  readonly prefix: string;
  report: Report;
  /** What its bids state; the master must believe none of it. */
  readonly claims?: { readonly cachedInputBytes: number; readonly runningJobs: number; readonly eager: boolean };
  /** The chance it bids in a round it could (busy elsewhere, or drawn out by bid suppression). Default 1. */
  readonly bidChance?: number;
}

let keyCount = 0;
/** A fresh identity: anyone can make as many as it likes. */
function party(
  report: Report,
  options: { runner?: boolean; prefix?: string; claims?: Party["claims"]; bidChance?: number } = {},
): Party {
  const key = (++keyCount).toString(16).padStart(64, "0");
  return { key, runner: options.runner ?? false, prefix: options.prefix ?? `100.${keyCount}/32`, report, ...options };
}

/** One master on a virtual clock, driven as its node would drive it. */
class Bench {
  state: MasterState;
  nowMs = startMs;
  readonly rng: () => number;
  /** Orders each round's bids: the master must not care who bids first. */
  readonly order: () => number;
  private seq = 0;
  /** Called after every step with the state and the step's effects. */
  watch: (state: MasterState, effects: readonly Effect[]) => void = () => {};

  /** `seed`: the master's randomness and the bid order (a node's is the OS's), or the master's generator itself. */
  constructor(config: Partial<MasterConfig>, seed: number | (() => number)) {
    this.state = createMaster({ project, ...config });
    this.rng = typeof seed === "number" ? seededRng(seed) : seed;
    this.order = seededRng(typeof seed === "number" ? seed ^ 0x5bd1e995 : 1);
  }

  step(input: MasterInput): readonly Effect[] {
    const output = stepMaster(this.state, input, this.nowMs, this.rng);
    this.state = output.state;
    this.watch(this.state, output.effects);
    return output.effects;
  }

  header(lifetimeMs = minuteMs) {
    return { issuedAtMs: this.nowMs, expiresAtMs: this.nowMs + lifetimeMs, seq: this.seq++ };
  }

  job(jobId: string): JobRecord {
    return this.state.jobs[jobId] ?? fail(`no job ${jobId}`);
  }

  submit(jobId: string, spec: JobSpec): void {
    this.step({ kind: "submit", jobId, job: spec });
  }

  /**
   * A standing offer from the party, sent directly, as admission hands it over (runner and prefix from trust and the
   * connection). `freeSlots` 0 says the worker exists (busy) and offers nothing; 1 (the default) offers a slot, which
   * the master may award at once.
   */
  offer(who: Party, options: { seq?: number; freeSlots?: number } = {}): readonly Effect[] {
    return this.step({
      kind: "offer",
      signer: who.key,
      runner: who.runner,
      prefix: who.prefix,
      offer: {
        issuedAtMs: this.nowMs,
        expiresAtMs: this.nowMs + hourMs,
        seq: options.seq ?? this.seq++,
        project,
        freeSlots: options.freeSlots ?? 1,
        totalSlots: 1,
        availability: "eager",
        network: false,
        // Each offer is of a process of its own (a new epoch, no award seen): the master takes its slots as offered.
        epoch: this.nowMs + this.seq,
        awardsSeen: 0,
        specs: [],
        dimensions,
      },
    });
  }

  bid(who: Party, jobId: string): readonly Effect[] {
    const job = this.job(jobId);
    const claims = who.claims ?? { cachedInputBytes: 0, runningJobs: 0, eager: true };
    return this.step({
      kind: "bid",
      signer: who.key,
      runner: who.runner,
      prefix: who.prefix,
      bid: {
        ...this.header(),
        project,
        jobId,
        round: job.round,
        availability: claims.eager ? "eager" : "reluctant",
        runningJobs: claims.runningJobs,
        freeSlots: 1,
        cachedInputBytes: claims.cachedInputBytes,
      },
    });
  }

  /** Moves the clock on by `ms`, waking the master at every timer that comes due. */
  advance(ms: number): void {
    const untilMs = this.nowMs + ms;
    for (let guard = 0; guard < 100_000; guard++) {
      const next = peekTimer(this.state.timers);
      if (next === null || next > untilMs) break;
      this.nowMs = Math.max(this.nowMs, next);
      this.step({ kind: "tick" });
    }
    this.nowMs = untilMs;
  }

  /** The holder of each running attempt of the job reports, `first` before the others. */
  report(jobId: string, parties: ReadonlyMap<string, Party>, first: (p: Party) => boolean = () => false): void {
    const running = this.job(jobId).attempts.filter((attempt) => attempt.state === "running");
    running.sort(
      (a, b) => Number(first(parties.get(b.worker) as Party)) - Number(first(parties.get(a.worker) as Party)),
    );
    for (const attempt of running) {
      const who = parties.get(attempt.worker);
      if (who === undefined || who.report === "none" || this.job(jobId).attempts[attempt.attempt]?.state !== "running")
        continue;
      this.step({
        kind: "result",
        signer: who.key,
        result: {
          ...this.header(),
          project,
          jobId,
          attempt: attempt.attempt,
          shard: attempt.shard,
          exitCode: 0,
          outcome: "succeeded",
          outputsDigest: who.report === "honest" ? honestOutputs : lieOutputs,
          logDigest: null,
          summary: "done",
          durationMs: secondMs,
        },
      });
    }
  }

  /**
   * Rounds of: every party without a run of the job bids (in a random order), the window closes, the runs report.
   * Ends when the job does, or after `rounds`; returns the job.
   */
  play(
    jobId: string,
    parties: readonly Party[],
    options: { rounds?: number; first?: (p: Party) => boolean; roundMs?: number } = {},
  ): JobRecord {
    const byKey = new Map(parties.map((p) => [p.key, p]));
    for (let round = 0; round < (options.rounds ?? 200) && this.job(jobId).status === "open"; round++) {
      const busy = new Set(
        this.job(jobId)
          .attempts.filter((attempt) => attempt.state === "running")
          .map((attempt) => attempt.worker),
      );
      for (const who of shuffled(parties, this.order))
        if (!busy.has(who.key) && this.order() < (who.bidChance ?? 1)) this.bid(who, jobId);
      this.advance(this.state.config.bidWindowMs);
      this.report(jobId, byKey, options.first);
      this.advance(options.roundMs ?? 5 * secondMs);
    }
    return this.job(jobId);
  }
}

function fail(message: string): never {
  throw new Error(message);
}

function shuffled<T>(items: readonly T[], rng: () => number): T[] {
  const order = [...items];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [order[i], order[j]] = [order[j] as T, order[i] as T];
  }
  return order;
}

/** Fails the test as soon as any shard of any job decides on the colluders' lie. */
function neverDecidesTheLie(bench: Bench): void {
  bench.watch = (state) => {
    for (const job of Object.values(state.jobs))
      job.shards.forEach((record, shard) => {
        if (record.decidedDigest === lieDigest) fail(`${job.jobId}: shard ${shard} decided on the colluders' digest`);
      });
  };
}

/** Gives an identity a record of `valid` consecutive agreeing results here (the state is plain data, as restored). */
function withRecord(bench: Bench, who: Party, valid: number): void {
  bench.state.reputation[who.key] = { consecutiveValid: valid, validTotal: valid, invalidTotal: 0 };
  bench.state.reputationCount = Object.keys(bench.state.reputation).length;
}

// --- (a) throwaway identities never decide a shard ---------------------------------------------------------------

/** A prefix for a throwaway identity: unknown, one of a few shared ones, or its own. */
const arbSybilPrefix = fc.oneof(
  fc.constant(""),
  fc.constantFrom("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"),
  fc.constant(null),
);

testProp(
  "any number of fresh identities on any prefixes, offering their slots, bidding on everything and reporting one shared lie, never make a shard decide on it; with a runner the job passes with the honest digest",
  [
    fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    fc.array(fc.tuple(arbSybilPrefix, fc.constantFrom<Report>("lie", "lie", "lie", "none")), {
      minLength: 1,
      maxLength: 90,
    }),
    fc.nat({ max: 3 }),
    fc.nat({ max: 2 }),
    fc.integer({ min: 1, max: 3 }),
    fc.nat({ max: 2 }),
    fc.integer({ min: 1, max: 2 }),
    fc.integer({ min: 1, max: 12 }),
  ],
  (t, seed, sybilSpecs, volunteers, runners, replicas, quorumPick, shards, maxAttempts) => {
    const quorum = 1 + (quorumPick % replicas);
    // Silent identities' awards are given a lease's time to be answered, so that they hold their slots as long as a
    // run that vanished would; unanswered, they count against the shard's bound of unstarted awards
    // (maxUnstartedAwardsPerShard), not its runs.
    const bench = new Bench({ awardAnswerMs: defaultMasterConfig.leaseMs }, seed);
    neverDecidesTheLie(bench);
    const sybils = sybilSpecs.map(([prefix, report]) => party(report, prefix === null ? {} : { prefix }));
    const honest = [
      ...Array.from({ length: volunteers }, () => party("honest")),
      ...Array.from({ length: runners }, () => party("honest", { runner: true })),
    ];
    // Everyone's offer is on hand when the job comes: its first runs are awarded from them, as bids would be.
    for (const who of [...sybils, ...honest]) bench.offer(who);
    bench.submit("job", jobSpec({ replicas, quorum, shards, maxAttempts }));
    const job = bench.play("job", [...sybils, ...honest]);
    for (const record of job.shards) t.not(record.decidedDigest, lieDigest);
    // Fresh identities' results weigh nothing, honest or not: without a runner nothing decides a shard.
    if (runners === 0)
      t.deepEqual(
        job.shards.map((record) => record.decidedDigest),
        job.shards.map(() => null),
      );
    // With a runner bidding every round, room in the window for every bid, and runs enough for what throwaway
    // identities may waste (a window of replicas lost per shard, then the runs the quorum asks), the job passes.
    const roomy = sybils.length + honest.length <= bench.state.config.maxBidsPerWindow;
    if (runners > 0 && roomy && maxAttempts >= 2 * replicas + quorum) {
      t.is(job.status, "passed", job.reason);
      t.deepEqual(
        job.shards.map((record) => record.decidedDigest),
        job.shards.map(() => honestDigest),
      );
    }
  },
  { numRuns: 120 },
);

// --- (b) a runner has the last word ------------------------------------------------------------------------------

for (const reportFirst of ["colluders", "runner"] as const)
  test(`a runner's digest has the last word over two fully weighed colluders (${reportFirst} report first)`, (t) => {
    for (let seed = 1; seed <= 20; seed++) {
      const bench = new Bench({}, seed);
      neverDecidesTheLie(bench);
      const colluders = [party("lie"), party("lie")];
      for (const who of colluders) withRecord(bench, who, bench.state.config.validRunsForFullWeight);
      const runner = party("honest", { runner: true });
      bench.submit("job", jobSpec({ replicas: 3, quorum: 2, maxAttempts: 3 }));
      // Exactly three bidders for three replicas: each gets one, the colluders' two agreeing results fully weighed.
      const job = bench.play("job", [...colluders, runner], {
        first: (p) => (reportFirst === "runner" ? p.runner : !p.runner),
      });
      t.is(job.status, "passed", `seed ${seed}: ${job.reason}`);
      t.is(job.shards[0]?.decidedDigest, honestDigest, `seed ${seed}`);
      for (const who of colluders)
        if (job.attempts.some((attempt) => attempt.worker === who.key && attempt.state === "reported"))
          t.is(bench.state.reputation[who.key]?.consecutiveValid, 0, "a colluder whose lie was heard lost its weight");
    }
  });

test("runners that disagree decide nothing: the project's own machines do not agree on the answer", (t) => {
  for (let seed = 1; seed <= 10; seed++) {
    const bench = new Bench({}, seed);
    const runners = [party("honest", { runner: true }), party("lie", { runner: true })];
    bench.watch = (state) => {
      const decided = state.jobs.job?.shards[0]?.decidedDigest ?? null;
      if (decided !== null) fail(`seed ${seed}: decided ${decided} although the runners disagree`);
    };
    bench.submit("job", jobSpec({ replicas: 2, quorum: 2, maxAttempts: 2 }));
    const job = bench.play("job", runners, { rounds: 20 });
    t.is(job.status, "failed", `seed ${seed}`);
    t.is(job.attempts.filter((attempt) => attempt.state === "reported").length, 2);
  }
});

test("with weight off (a count decides), a runner's digest still has the last word over colluders who report after it", (t) => {
  const countOnly = { quorumWeight: 0, distinctPrefixes: false, spotCheckFraction: 0, trustVolunteersAlone: true };
  for (let seed = 1; seed <= 10; seed++) {
    const bench = new Bench(countOnly, seed);
    neverDecidesTheLie(bench);
    const runner = party("honest", { runner: true });
    const colluders = [party("lie"), party("lie")];
    bench.submit("job", jobSpec({ replicas: 3, quorum: 2, maxAttempts: 3 }));
    bench.play("job", [runner, ...colluders], { first: (p) => p.runner, rounds: 20 });
    t.not(bench.job("job").shards[0]?.decidedDigest, lieDigest);
  }
});

test("a dispute between weighed volunteers waits for the project's runner, and its run goes to the runner alone", (t) => {
  for (let seed = 1; seed <= 10; seed++) {
    const bench = new Bench({}, seed);
    neverDecidesTheLie(bench);
    const fullWeight = bench.state.config.validRunsForFullWeight;
    const [honestOne, liar, ...others] = [party("honest"), party("lie"), party("honest"), party("honest")] as [
      Party,
      Party,
      ...Party[],
    ];
    for (const who of [honestOne, liar, ...others]) withRecord(bench, who, fullWeight);
    const runner = party("honest", { runner: true });
    // Known to the master, busy elsewhere: it offers no slot now, and bids later.
    bench.offer(runner, { freeSlots: 0 });
    bench.submit("job", jobSpec({ replicas: 2, quorum: 2, maxAttempts: 6 }));
    // The two that disagree take the two replicas.
    bench.play("job", [honestOne, liar], { rounds: 1 });
    const disputed = bench.job("job");
    t.is(disputed.status, "open", `seed ${seed}: ${disputed.reason}`);
    t.is(disputed.shards[0]?.decidedDigest, null, "two weighed results that disagree: a dispute");
    // Other weighed volunteers bid before the runner does: the run is the runner's all the same.
    bench.play("job", others, { rounds: 3 });
    t.is(bench.job("job").attempts.length, 2, `seed ${seed}: no volunteer runs a disputed shard`);
    const job = bench.play("job", [...others, runner]);
    t.is(job.status, "passed", job.reason);
    t.is(job.attempts[2]?.worker, runner.key, "the third run went to the runner");
    t.is(job.shards[0]?.decidedDigest, honestDigest);
    t.is(bench.state.reputation[liar.key]?.consecutiveValid, 0);
  }
});

// Two shards that nothing can decide any more: the master must end the job at its run bound, not keep it open
// (re-announcing, refusing every bid) until its deadline.

test("a shard whose runners disagree ends its job long before the deadline", (t) => {
  const bench = new Bench({}, 1);
  const runners = [party("honest", { runner: true }), party("lie", { runner: true })];
  const volunteers = Array.from({ length: 4 }, () => party("honest"));
  bench.submit("job", jobSpec({ replicas: 2, quorum: 1, maxAttempts: 4, deadlineMs: startMs + dayMs }));
  bench.play("job", runners, { rounds: 1 });
  t.is(bench.job("job").attempts.filter((attempt) => attempt.state === "reported").length, 2);
  // An hour of volunteers bidding: the shard needs one more run, only a weighed bid may take it, and none can decide.
  const job = bench.play("job", volunteers, { rounds: 720 });
  t.not(job.status, "open", `still open an hour on, its deadline a day away; ${job.announcements} announcements`);
});

test("a shard whose only runner lost its run, and whose volunteers agree without weight, ends its job or gets the runner again", (t) => {
  const bench = new Bench({}, 1);
  const runner = party("none", { runner: true });
  const volunteers = Array.from({ length: 4 }, () => party("honest"));
  bench.submit("job", jobSpec({ replicas: 2, quorum: 1, maxAttempts: 4, deadlineMs: startMs + dayMs }));
  // The runner takes the first run and vanishes with it (a crash); a volunteer's honest result weighs nothing.
  const first = bench.play("job", [runner, volunteers[0] as Party], { rounds: 1 });
  t.true(first.attempts.some((attempt) => attempt.worker === runner.key));
  bench.advance(bench.state.config.leaseMs + secondMs);
  t.is(bench.job("job").attempts.find((attempt) => attempt.worker === runner.key)?.state, "lost");
  runner.report = "honest";
  const job = bench.play("job", [runner, ...volunteers], { rounds: 720 });
  t.log(
    job.status,
    job.reason,
    JSON.stringify(job.attempts.map((a) => [a.worker === runner.key, a.state, a.awardedAtMs - startMs])),
  );
  t.not(
    job.status,
    "open",
    `still open an hour on, its deadline a day away: ${JSON.stringify(job.attempts.map((a) => a.state))}`,
  );
});

test("a full bid window of fresh identities does not keep the project's runner out: its bid is taken and it runs the shard", (t) => {
  const bench = new Bench({}, 1);
  const { maxBidsPerWindow } = bench.state.config;
  // Throwaway identities behind one address, which bid the moment a job is announced and never report.
  const throwaways = Array.from({ length: maxBidsPerWindow }, () => party("none", { prefix: "203.0.113.0/24" }));
  const runner = party("honest", { runner: true });
  bench.submit("job", jobSpec({ replicas: 1, quorum: 1, maxAttempts: 4 }));
  const refused: string[] = [];
  for (let round = 0; round < 200 && bench.job("job").status === "open"; round++) {
    for (const who of [...throwaways, runner]) {
      const effects = bench.bid(who, "job");
      if (who === runner)
        for (const effect of effects)
          if (effect.type === "send" && effect.message.domain === "reject") refused.push(effect.message.body.reason);
    }
    bench.advance(bench.state.config.bidWindowMs);
    bench.report("job", new Map([[runner.key, runner]]));
    bench.advance(5 * secondMs);
  }
  const job = bench.job("job");
  t.true(
    job.attempts.some((attempt) => attempt.worker === runner.key),
    `the runner never ran: ${job.status} (${job.reason}); its bids refused: ${[...new Set(refused)].join("; ")}`,
  );
  t.is(job.status, "passed");
});

test("a runner that the keyset no longer names leaves the proven table: its offers are not held twice, nor judged against a stale seq", (t) => {
  const bench = new Bench({}, 1);
  const worker = party("honest", { runner: true });
  bench.offer(worker, { seq: 5 });
  t.deepEqual(Object.keys(bench.state.workers), [worker.key]);
  // Its keyset entry ends (or a new keyset drops it): admission no longer says it is a runner.
  bench.offer({ ...worker, runner: false }, { seq: 6 });
  const tables = [worker.key in bench.state.workers, worker.key in bench.state.unproven];
  t.deepEqual(tables, [false, true], "in exactly one table, the unproven one");
  // Its newest offer is seq 6: seq 6 again is a replay.
  const version = bench.state.workersVersion;
  bench.offer({ ...worker, runner: false }, { seq: 6 });
  t.is(bench.state.workersVersion, version, "a replay of the held offer is dropped");
  // The offer it was awarded from says what trust said when it came: a job now is a volunteer's run.
  bench.submit("job", jobSpec({ replicas: 1, quorum: 1 }));
  t.like(bench.job("job").attempts[0], { worker: worker.key, runner: false });
});

// --- (c) distinct prefixes ---------------------------------------------------------------------------------------

testProp(
  "replicas of one shard never share a non-empty network prefix, whatever the offerers' and bidders' prefixes and however runs are lost",
  [
    fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    fc.array(
      fc.tuple(
        fc.constantFrom("", "203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "2001:db8:1::/48"),
        fc.constantFrom<Report>("honest", "honest", "lie", "none"),
        fc.nat({ max: 10 }),
      ),
      { minLength: 1, maxLength: 12 },
    ),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 8 }),
  ],
  (t, seed, specs, replicas, shards, maxAttempts) => {
    const bench = new Bench({ leaseMs: 20 * secondMs }, seed);
    const bidders = specs.map(([prefix, report]) => party(report, { prefix }));
    for (const [i, [, , valid]] of specs.entries()) withRecord(bench, bidders[i] as Party, valid);
    bench.watch = (state) => {
      for (const job of Object.values(state.jobs))
        for (let shard = 0; shard < job.shards.length; shard++) {
          const prefixes = job.attempts
            .filter((attempt) => attempt.shard === shard && attempt.prefix !== "")
            .map((attempt) => attempt.prefix);
          if (new Set(prefixes).size !== prefixes.length)
            fail(`${job.jobId}: shard ${shard} has two runs on one prefix: ${prefixes.join(", ")}`);
        }
    };
    let runs = 0;
    for (let i = 0; i < 3; i++) {
      // Each offers a slot before the job comes (awarded from at once), then bids in the rounds after.
      for (const who of bidders) bench.offer(who);
      bench.submit(`job-${i}`, jobSpec({ replicas, quorum: 1, shards, maxAttempts }));
      runs += bench.play(`job-${i}`, bidders, { rounds: 40 }).attempts.length;
    }
    t.true(runs > 0, "runs were awarded");
  },
  { numRuns: 120 },
);

// --- (d) a flood of offers -----------------------------------------------------------------------------------------

test("70,000 offers from fresh keys keep the unproven table within its bound, and the proven workers and runners stay known", (t) => {
  // A bound of 1,000 rather than the default 10,000: the flood is still 70 times the table (the eviction is the same),
  // at a tenth of the master's time per offer (evicting lists the table).
  const maxUnprovenWorkers = 1_000;
  const bench = new Bench({ maxUnprovenWorkers }, 1);
  const runner = party("honest", { runner: true });
  const proven = [party("honest"), party("honest")];
  for (const who of proven) withRecord(bench, who, 3);
  for (const who of [runner, ...proven]) bench.offer(who);
  const provenKeys = [runner, ...proven].map((who) => who.key).sort();
  t.deepEqual(Object.keys(bench.state.workers).sort(), provenKeys);
  const flood = 70_000;
  let most = 0;
  for (let i = 0; i < flood; i++) {
    bench.offer(party("none"), { seq: 1 });
    most = Math.max(most, bench.state.unprovenCount);
  }
  t.true(most <= maxUnprovenWorkers, `${most} unproven kept, bound ${maxUnprovenWorkers}`);
  t.is(bench.state.unprovenCount, Object.keys(bench.state.unproven).length);
  t.is(bench.state.unprovenCount, maxUnprovenWorkers);
  t.deepEqual(Object.keys(bench.state.workers).sort(), provenKeys, "the flood pushed out no proven worker or runner");
  // The proven still get the work: a job is awarded to them, not to the flood's last keys.
  bench.submit("after", jobSpec({ replicas: 1, quorum: 1 }));
  const job = bench.play("after", [runner, ...proven]);
  t.is(job.status, "passed", job.reason);
});

// Offers are drawn by tier (runners always, proven workers, then the rest) and each shard's first run is awarded
// before any shard's second: thousands of throwaway offers neither hide a runner's offer nor take its shard.
test("a flood of fresh-key offers does not keep the runner's offer from a shard's first run: it is awarded at once, as an anchoring bid would be", (t) => {
  const flood = 2_000;
  const shards = 3;
  const seeds = 10;
  let toRunner = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const bench = new Bench({ spotCheckFraction: 0 }, seed);
    neverDecidesTheLie(bench);
    const runners = Array.from({ length: shards }, () => party("honest", { runner: true }));
    for (const who of runners) bench.offer(who);
    for (let i = 0; i < flood; i++) bench.offer(party("lie"));
    bench.submit("job", jobSpec({ replicas: 2, quorum: 2, shards }));
    const job = bench.job("job");
    t.is(job.attempts.length, 2 * shards, `seed ${seed}: every replica awarded from the offers on hand`);
    for (let shard = 0; shard < shards; shard++) {
      const first = job.attempts.find((attempt) => attempt.shard === shard);
      if (first?.runner === true) toRunner++;
    }
  }
  t.log(`${toRunner} of ${seeds * shards} shards' first runs went to a runner among ${flood} throwaway offers`);
  t.is(toRunner, seeds * shards, "each shard's first run goes to a runner whose offer is on hand");
});

// --- (e) the replay ledger under a flood ---------------------------------------------------------------------------

test("70,000 offer and bid signers through admission leave the replay ledger's floor and signer count unchanged; an announcement afterwards is still taken", (t) => {
  const trust = acceptKeyset(
    trustFromAnchor(anchor),
    sealKeyset(
      {
        project,
        rootVersion: 1,
        version: 1,
        issuedAtMs: startMs,
        expiresAtMs: startMs + 30 * dayMs,
        roots: [root.publicKey],
        threshold: 1,
        announcers: [{ key: announcer.publicKey, label: "master", expiresAtMs: startMs + 30 * dayMs }],
      },
      [root],
    ),
    startMs,
  );
  // A node that is master and worker of the project, with the default ledger: 65,536 signers, fewer than the flood.
  const context: AdmissionContext = {
    trust: new Map([[project, trust]]),
    ledger: createReplayLedger(defaultReplayLedgerLimits),
    isMasterOf: (name) => name === project,
    hasWorker: true,
  };
  const announce = (seq: number, atMs: number): Opened => ({
    kind: "message",
    tag: messageDomains.jobAnnouncement.tag,
    signer: announcer.publicKey,
    body: { ...typicalAnnouncement(project, atMs), seq } as SignedBody,
  });
  let ledger = admit({ kind: "topic", topic: project }, announce(1, startMs), context, startMs).ledger;
  t.is(ledger.signers.size, 1, "the announcer's announcement entered the ledger");
  const floor = ledger.floorExpiresAtMs;
  // Opened as a shell opens them, without the cost of 70,000 signatures: admission's rules are what is tested.
  const flood = 70_000;
  const verdicts = new Map<string, number>();
  for (let i = 0; i < flood; i++) {
    const signer = new Uint8Array(32);
    new DataView(signer.buffer).setUint32(0, i + 1);
    signer[31] = 0xee;
    const atMs = startMs + i;
    // Long-lived, as the flood of the attack was: the most a signer may claim.
    const header = { issuedAtMs: atMs, expiresAtMs: atMs + 12 * hourMs, seq: 1 };
    const [channel, opened]: [Channel, Opened] =
      i % 2 === 0
        ? [
            { kind: "direct", peer: hexOf(signer), prefix: "203.0.113.0/24" },
            {
              kind: "message",
              tag: messageDomains.offer.tag,
              signer,
              body: {
                ...header,
                project,
                freeSlots: 1,
                totalSlots: 1,
                availability: "eager",
                network: false,
                specs: [],
                dimensions,
              } as SignedBody,
            },
          ]
        : [
            { kind: "direct", peer: hexOf(signer), prefix: "203.0.113.0/24" },
            {
              kind: "message",
              tag: messageDomains.bid.tag,
              signer,
              body: {
                ...header,
                project,
                jobId: "job",
                round: 0,
                cachedInputBytes: Number.MAX_SAFE_INTEGER,
              } as SignedBody,
            },
          ];
    const admission = admit(channel, opened, { ...context, ledger }, atMs);
    ledger = admission.ledger;
    verdicts.set(
      `${admission.verdict} ${admission.reason}`,
      (verdicts.get(`${admission.verdict} ${admission.reason}`) ?? 0) + 1,
    );
    if (admission.ledgerEntry !== null) t.fail(`signer ${i} entered the ledger`);
  }
  t.deepEqual(Object.fromEntries(verdicts), { "accept taken": flood }, "every one taken by the master, none ledgered");
  t.is(ledger.floorExpiresAtMs, floor, "the floor did not move");
  t.is(ledger.signers.size, 1, "no signer was added or evicted");
  const afterMs = startMs + flood + secondMs;
  const after = admit({ kind: "topic", topic: project }, announce(2, afterMs), { ...context, ledger }, afterMs);
  t.is(`${after.verdict} ${after.reason}`, "accept taken", after.detail);
  t.is(after.deliveries[0]?.input.kind, "announcement");
  const replay = admit(
    { kind: "topic", topic: project },
    announce(1, startMs),
    { ...context, ledger: after.ledger },
    afterMs,
  );
  t.is(replay.reason, "replay", "and the announcer's window is still there: its old number is refused");
});

// --- (f) what a bidder states wins nothing ------------------------------------------------------------------------

test("a bid claiming cachedInputBytes = MAX_SAFE_INTEGER, no load and eagerness wins nothing: awards are spread at random among equal bidders", (t) => {
  const trials = 600;
  // As many bidders as the window takes before it closes (the bids the announcement aims at for one run): every one
  // of them is in the window when the award is made.
  const bidders = createMaster({ project }).config.targetBidsPerRun;
  const counts = new Map<number, number>();
  // One generator for every trial, as a node has one: the first draws of generators seeded 1, 2, 3... are alike.
  const rng = seededRng(20_261_130);
  for (let trial = 1; trial <= trials; trial++) {
    const bench = new Bench({}, rng);
    const liar = party("honest", {
      claims: { cachedInputBytes: Number.MAX_SAFE_INTEGER, runningJobs: 0, eager: true },
    });
    const plain = Array.from({ length: bidders - 1 }, () =>
      party("honest", { claims: { cachedInputBytes: 0, runningJobs: 3, eager: false } }),
    );
    const all = [liar, ...plain];
    bench.submit("job", jobSpec({ replicas: 1, quorum: 1 }));
    // The stating liar bids first, as it would: it watches for announcements.
    for (const who of all) bench.bid(who, "job");
    bench.advance(bench.state.config.bidWindowMs);
    const winner = bench.job("job").attempts[0]?.worker;
    const index = all.findIndex((who) => who.key === winner);
    t.true(index >= 0, `trial ${trial}: no award`);
    counts.set(index, (counts.get(index) ?? 0) + 1);
  }
  const expected = trials / bidders;
  // Binomial(600, 1/3): standard deviation about 11.5; five of them either side.
  const spread = 5 * Math.sqrt(trials * (1 / bidders) * (1 - 1 / bidders));
  t.log(
    `awards of ${trials} jobs among ${bidders} equal bidders, the claimant first: ${JSON.stringify([...counts].sort())}`,
  );
  for (let index = 0; index < bidders; index++) {
    const won = counts.get(index) ?? 0;
    t.true(
      Math.abs(won - expected) <= spread,
      `bidder ${index}${index === 0 ? " (the claimant)" : ""} won ${won} of ${trials}, expected ${expected} ± ${spread.toFixed(0)}`,
    );
  }
});

// --- (g) weight is earned, and lost ---------------------------------------------------------------------------------

/** How a volunteer behaves on one job, next to the project's runner. */
type Conduct = "agrees" | "lies" | "vanishes" | "only-bids" | "stranger-result";

testProp(
  "an identity earns weight only through results that agree with decided shards, and loses it all on one disagreement",
  [
    fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    fc.array(
      fc.constantFrom<Conduct>("agrees", "agrees", "agrees", "lies", "vanishes", "only-bids", "stranger-result"),
      { minLength: 1, maxLength: 30 },
    ),
  ],
  (t, seed, conduct) => {
    const bench = new Bench({ leaseMs: 20 * secondMs }, seed);
    const volunteer = party("honest");
    const runner = party("honest", { runner: true });
    const { validRunsForFullWeight } = bench.state.config;
    let expected = 0;
    conduct.forEach((how, index) => {
      const jobId = `job-${index}`;
      bench.submit(jobId, jobSpec({ replicas: 2, quorum: 2, maxAttempts: 4 }));
      if (how === "only-bids") {
        // Bids, offers of no slot and a result for a run it was never awarded: none of it is a result that agreed.
        bench.offer(volunteer, { freeSlots: 0 });
        bench.bid(volunteer, jobId);
        bench.advance(bench.state.config.bidWindowMs);
        bench.play(jobId, [runner]);
        t.is(bench.job(jobId).status, "passed");
        return;
      }
      volunteer.report = how === "lies" ? "lie" : how === "vanishes" ? "none" : "honest";
      // Both bid in the first window; the volunteer reports before the runner, so its result is heard.
      bench.play(jobId, [volunteer, runner], { first: (p) => !p.runner, roundMs: 25 * secondMs });
      const job = bench.job(jobId);
      t.is(job.status, "passed", job.reason);
      const own = job.attempts.find((attempt) => attempt.worker === volunteer.key);
      if (how === "stranger-result" && own === undefined) return;
      const heard = own?.state === "reported";
      if (heard && own?.digest === job.shards[0]?.decidedDigest) expected++;
      else if (heard) expected = 0;
      const record = bench.state.reputation[volunteer.key];
      t.is(record?.consecutiveValid ?? 0, expected, `job ${index} (${how}): ${JSON.stringify(record)}`);
      // A result for an attempt that is not its own changes nothing.
      if (how === "stranger-result") {
        const other = job.attempts.find((attempt) => attempt.worker !== volunteer.key);
        if (other !== undefined)
          bench.step({
            kind: "result",
            signer: volunteer.key,
            result: {
              ...bench.header(),
              project,
              jobId,
              attempt: other.attempt,
              shard: 0,
              exitCode: 0,
              outcome: "succeeded",
              outputsDigest: honestOutputs,
              logDigest: null,
              summary: "not mine",
              durationMs: 1,
            },
          });
        t.is(bench.state.reputation[volunteer.key]?.consecutiveValid ?? 0, expected);
      }
    });
    const weight = Math.min(1, expected / validRunsForFullWeight);
    t.is(Math.min(1, (bench.state.reputation[volunteer.key]?.consecutiveValid ?? 0) / validRunsForFullWeight), weight);
  },
  { numRuns: 60 },
);

// --- the price of a forged pass, measured ---------------------------------------------------------------------------

/** Who the colluders face: the project's runner bidding on every job, or volunteers who earned full weight before. */
type Mesh = "runner" | "weighed volunteers";

/**
 * Six honest volunteers (fresh next to a runner; with a full record where there is none, as in a mesh that has run a
 * while), each bidding on a job with probability 0.3 (the runner too: it is busy elsewhere), and a colluding group
 * of `identities` that bids on every job, behaves until each of its identities has `target` consecutive agreeing
 * results, then reports one lie on every run it holds, always before anyone else reports. Jobs of two replicas and a
 * quorum of two, one after another. Returns what the group spent before its first forged pass, or null.
 */
function forge(
  seed: number,
  options: { mesh: Mesh; identities: number; target: number; jobs: number },
): { validRuns: number; jobs: number; caught: number } | null {
  const bench = new Bench({}, seededRng(seed * 7919 + options.identities * 104_729 + options.target));
  const colluders = Array.from({ length: options.identities }, () => party("honest"));
  const volunteers = Array.from({ length: 6 }, () => party("honest", { bidChance: 0.3 }));
  if (options.mesh === "weighed volunteers")
    for (const who of volunteers) withRecord(bench, who, bench.state.config.validRunsForFullWeight);
  const runner = options.mesh === "runner" ? [party("honest", { runner: true, bidChance: 0.3 })] : [];
  const all = [...colluders, ...volunteers, ...runner];
  let validRuns = 0;
  let caught = 0;
  for (let n = 0; n < options.jobs; n++) {
    const lying = colluders.every((who) => (bench.state.reputation[who.key]?.consecutiveValid ?? 0) >= options.target);
    for (const who of colluders) who.report = lying ? "lie" : "honest";
    const jobId = `job-${n}`;
    bench.submit(jobId, jobSpec({ replicas: 2, quorum: 2, maxAttempts: 4 }));
    const job = bench.play(jobId, all, { first: (p) => colluders.includes(p) });
    if (job.shards[0]?.decidedDigest === lieDigest) return { validRuns, jobs: n + 1, caught };
    const heard = job.attempts.filter(
      (attempt) => attempt.state === "reported" && colluders.some((who) => who.key === attempt.worker),
    );
    if (lying && heard.length > 0) caught++;
    else validRuns += heard.filter((attempt) => attempt.digest === job.shards[0]?.decidedDigest).length;
  }
  return null;
}

test("measured: what a colluding group spends to forge one pass of a replicas-2 quorum-2 job under the default rules", (t) => {
  const seeds = 20;
  const jobs = 300;
  const rows: string[] = [];
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
  for (const mesh of ["runner", "weighed volunteers"] as const)
    for (const [identities, target] of [
      [2, 1],
      [2, 3],
      [2, 5],
    ] as const) {
      const outcomes = Array.from({ length: seeds }, (_, i) => forge(i + 1, { mesh, identities, target, jobs }));
      const forged = outcomes.filter((outcome) => outcome !== null);
      rows.push(
        `${mesh.padEnd(18)} ${identities} identities lying from ${String(target).padStart(2)} valid runs each: ` +
          `a pass forged in ${forged.length} of ${seeds} meshes within ${jobs} jobs` +
          (forged.length === 0
            ? ""
            : `; median ${median(forged.map((f) => f.validRuns))} valid runs, ${median(forged.map((f) => f.jobs))} jobs, caught lying ${median(forged.map((f) => f.caught))} times before`),
      );
      // What the rules promise: weight comes only from valid runs, so no pass is forged before the group has done
      // quorumWeight's worth of them.
      const { quorumWeight, validRunsForFullWeight } = createMaster({ project }).config;
      for (const f of forged)
        t.true(f.validRuns >= quorumWeight * validRunsForFullWeight, `a pass forged after ${f.validRuns} valid runs`);
    }
  t.log(rows.join("\n"));
  t.pass();
});
