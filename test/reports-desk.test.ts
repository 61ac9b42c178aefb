/**
 * Push-only builds, the pure part (jobs/reports.ts): the master's acceptance
 * decision (judgeReport, stepReportDesk) case by case and as properties over
 * any sequence of reports, the report decoder over any bytes, and the
 * reporter's outbox (kept until answered, sent again with a backoff, the same
 * id handed over twice kept once).
 */
import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import {
  CimeshError,
  identityFromSeed,
  maxClockSkewMs,
  openAnyEnvelopeUnverified,
  sealEnvelope,
} from "../crypto/index.ts";
import {
  createReportDesk,
  createReporter,
  type Effect,
  hexOf,
  judgeReport,
  messageDomains,
  messageRegistry,
  type Report,
  type ReportDeskConfig,
  type ReportDeskState,
  type ReporterState,
  type ReportFacts,
  reportDelivery,
  reportDeskMeta,
  restoreReportDesk,
  stepReportDesk,
  stepReporter,
} from "../jobs/index.ts";
import { arbitraries } from "./arbitraries.ts";

const project = "a".repeat(64);
const baseMs = 1_800_000_000_000;
const hourMs = 3_600_000;
const rng = () => 0.5;

const keys = [1, 2, 3].map((n) => identityFromSeed(new Uint8Array(32).fill(n)));
const [alice, bob, carol] = keys.map((identity) => hexOf(identity.publicKey)) as [string, string, string];

function facts(reportId: string, over: Partial<ReportFacts> = {}): ReportFacts {
  return {
    project,
    reportId,
    jobName: "nightly",
    jobDigest: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
    source: { url: "https://example.org/x.git", revision: "0123abcd" },
    shard: 0,
    shards: 1,
    dimensions: { os: "linux", arch: "x64", cores: 2, memoryBytes: 2 ** 30, diskBytes: 2 ** 34, tools: [], labels: [] },
    specs: [],
    steps: [{ name: "build", outcome: "succeeded", exitCode: 0, durationMs: 12 }],
    exitCode: 0,
    outcome: "succeeded",
    outputsDigest: null,
    logDigest: null,
    summary: "1 step passed",
    durationMs: 12,
    startedAtMs: baseMs - 1000,
    endedAtMs: baseMs - 500,
    ...over,
  };
}

function signed(f: ReportFacts, seq: number, nowMs = baseMs): Report {
  return { ...f, issuedAtMs: nowMs, expiresAtMs: nowMs + 600_000, seq };
}

function desk(config: Partial<ReportDeskConfig> = {}): ReportDeskState {
  return createReportDesk({ project, ...config });
}

function acks(effects: readonly Effect[]) {
  return effects.flatMap((effect) =>
    effect.type === "send" && effect.message.domain === "reportAck" ? [effect.message.body] : [],
  );
}

test("desk: a volunteer's report is accepted, recorded, and answered accepted", (t) => {
  const state = desk();
  const out = stepReportDesk(
    state,
    { kind: "report", signer: alice, prefix: "10.0.0", report: signed(facts("report-a"), 1) },
    baseMs,
    rng,
  );
  t.is(out.judgement.verdict, "accepted");
  t.deepEqual(out.changes.recorded, ["report-a"]);
  t.is(out.state.records["report-a"]?.reporter, alice);
  t.is(out.state.records["report-a"]?.report.jobName, "nightly");
  const [ack] = acks(out.effects);
  t.is(ack?.verdict, "accepted");
  t.is(hexOf(ack?.reporter as Uint8Array), alice);
});

test("desk: a key the listed policy does not name is refused as reporter-not-allowed, and the ledger is untouched", (t) => {
  const state = desk({ policy: { from: "listed", keys: [bob] } });
  const out = stepReportDesk(
    state,
    { kind: "report", signer: alice, prefix: "", report: signed(facts("report-a"), 1) },
    baseMs,
    rng,
  );
  t.is(out.judgement.reason, "reporter-not-allowed");
  t.deepEqual(out.state.records, {});
  t.false(out.changes.meta);
  t.is(out.state.ledger.signers.size, 0);
  t.regex(acks(out.effects)[0]?.reason ?? "", /^reporter-not-allowed: /);
  const listed = stepReportDesk(
    state,
    { kind: "report", signer: bob, prefix: "", report: signed(facts("report-b"), 1) },
    baseMs,
    rng,
  );
  t.is(listed.judgement.verdict, "accepted");
});

test("desk: the same signed report twice is a replay (no answer), the same id with a new number a duplicate recorded once", (t) => {
  const state = desk();
  const report = signed(facts("report-a"), 7);
  stepReportDesk(state, { kind: "report", signer: alice, prefix: "", report }, baseMs, rng);
  const replay = stepReportDesk(state, { kind: "report", signer: alice, prefix: "", report }, baseMs + 1, rng);
  t.is(replay.judgement.reason, "replay");
  t.deepEqual(acks(replay.effects), []);
  const again = stepReportDesk(
    state,
    { kind: "report", signer: alice, prefix: "", report: signed(facts("report-a"), 8) },
    baseMs + 2,
    rng,
  );
  t.is(again.judgement.verdict, "duplicate");
  t.is(acks(again.effects)[0]?.verdict, "duplicate");
  t.deepEqual(state.order, ["report-a"]);
  const stolen = stepReportDesk(
    state,
    { kind: "report", signer: bob, prefix: "", report: signed(facts("report-a"), 1) },
    baseMs + 3,
    rng,
  );
  t.is(stolen.judgement.reason, "id-taken");
  t.is(state.records["report-a"]?.reporter, alice);
});

test("desk: a reporter over its rate limit is refused until its window has passed; the project's limit counts everyone", (t) => {
  const state = desk({ maxReportsPerReporter: 2, maxReportsPerProject: 3, rateWindowMs: hourMs });
  const send = (signer: string, id: string, seq: number, atMs: number) =>
    stepReportDesk(state, { kind: "report", signer, prefix: "", report: signed(facts(id), seq, atMs) }, atMs, rng)
      .judgement;
  t.is(send(alice, "report-1", 1, baseMs).verdict, "accepted");
  t.is(send(alice, "report-2", 2, baseMs + 1).verdict, "accepted");
  const over = send(alice, "report-3", 3, baseMs + 2);
  t.is(over.reason, "rate-limited");
  t.regex(over.detail, /2 reports within 3600000 ms, at most 2/);
  t.is(send(bob, "report-4", 1, baseMs + 3).verdict, "accepted");
  t.is(send(carol, "report-5", 1, baseMs + 4).reason, "project-rate-limited");
  t.is(send(alice, "report-6", 4, baseMs + hourMs + 2).verdict, "accepted");
});

test("desk: a report ending in the future beyond the clock skew is refused", (t) => {
  const state = desk();
  const report = signed(facts("report-a", { endedAtMs: baseMs + maxClockSkewMs + 1 }), 1);
  t.is(judgeReport(state, alice, report, baseMs).reason, "from-the-future");
});

test("desk: restored from its records and meta, it still refuses the replay and counts the rate window", (t) => {
  const state = desk({ maxReportsPerReporter: 1 });
  const report = signed(facts("report-a"), 5);
  stepReportDesk(state, { kind: "report", signer: alice, prefix: "", report }, baseMs, rng);
  const restored = restoreReportDesk(
    { project, maxReportsPerReporter: 1 },
    Object.values(structuredClone(state.records)),
    JSON.parse(JSON.stringify(reportDeskMeta(state))),
  );
  t.is(judgeReport(restored, alice, report, baseMs + 1).reason, "replay");
  t.is(judgeReport(restored, alice, signed(facts("report-b"), 6), baseMs + 2).reason, "rate-limited");
  t.deepEqual(restored.order, ["report-a"]);
});

/** One report a property sends: who signs, which id (from a small set, so ids repeat), which number, when. */
const arbSend = fc.record({
  signer: fc.constantFrom(alice, bob, carol),
  id: fc.integer({ min: 0, max: 9 }),
  seq: fc.integer({ min: 1, max: 30 }),
  advanceMs: fc.integer({ min: 0, max: hourMs / 2 }),
});

testProp(
  "desk: under any sequence of reports, only allowed signers are recorded, no number is taken twice, each id has one reporter, and no window holds more than its limits",
  [fc.array(arbSend, { maxLength: 60 }), fc.boolean(), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 8 })],
  (t, sends, listed, perReporter, perProject) => {
    const config = {
      policy: listed ? { from: "listed" as const, keys: [alice, bob] } : { from: "volunteers" as const },
      maxReportsPerReporter: perReporter,
      maxReportsPerProject: perProject,
      rateWindowMs: hourMs,
    };
    const state = desk(config);
    t.true(state.order.length === 0);
    const taken = new Set<string>();
    const accepted: { signer: string; atMs: number }[] = [];
    let nowMs = baseMs;
    for (const send of sends) {
      nowMs += send.advanceMs;
      const report = signed(facts(`report-${send.id}`, { startedAtMs: nowMs - 10, endedAtMs: nowMs }), send.seq, nowMs);
      const replica = structuredClone({ records: state.records, recent: state.recent });
      const out = stepReportDesk(state, { kind: "report", signer: send.signer, prefix: "", report }, nowMs, rng);
      const { verdict, reason } = out.judgement;
      const number = `${send.signer}/${send.seq}`;
      if (
        verdict !== "refused" ||
        reason === "rate-limited" ||
        reason === "project-rate-limited" ||
        reason === "id-taken"
      )
        t.false(taken.has(number), `${number} taken twice`);
      if (!["reporter-not-allowed", "replay"].includes(reason)) taken.add(number);
      if (reason === "replay") t.true(taken.has(number));
      if (verdict === "accepted") {
        t.true(!listed || send.signer !== carol);
        accepted.push({ signer: send.signer, atMs: nowMs });
        t.is(state.records[report.reportId]?.reporter, send.signer);
      } else {
        t.deepEqual(state.records, replica.records, "a report not accepted changes no record");
      }
      const since = nowMs - hourMs;
      const inWindow = accepted.filter((entry) => entry.atMs > since);
      t.true(inWindow.length <= perProject);
      for (const signer of [alice, bob, carol])
        t.true(inWindow.filter((entry) => entry.signer === signer).length <= perReporter);
    }
  },
  { numRuns: 200 },
);

testProp(
  "decoder: any report opens to the same body; any bytes cut or flipped open to a valid report or fail with a named CimeshError",
  [arbitraries.report, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()],
  (t, body, at, byte, cut) => {
    const bytes = sealEnvelope(messageDomains.report, body, keys[0] as never);
    const opened = openAnyEnvelopeUnverified(messageRegistry, bytes, body.issuedAtMs);
    t.deepEqual(opened.body, body);
    const broken = cut ? bytes.subarray(0, at % bytes.length) : bytes.slice();
    if (!cut) broken[at % broken.length] = byte;
    try {
      const again = openAnyEnvelopeUnverified(messageRegistry, broken, body.issuedAtMs);
      t.true(messageDomains.report.schema.safeParse(again.body).success || again.domain !== messageDomains.report.tag);
    } catch (error) {
      t.true(error instanceof CimeshError, String(error));
      t.regex((error as CimeshError).message, /\S/);
    }
  },
  { numRuns: 300 },
);

// ---- the reporter ----

const master = "f".repeat(64);

function reporter(): ReporterState {
  const state = createReporter(alice);
  stepReporter(state, { kind: "masters", project, masters: [master] }, baseMs, rng);
  return state;
}

function sentReports(effects: readonly Effect[]) {
  return effects.flatMap((effect) =>
    effect.type === "send" && effect.message.domain === "report" ? [{ to: effect.to, body: effect.message.body }] : [],
  );
}

function ackOf(reportId: string, verdict: "accepted" | "duplicate" | "refused", reason: string = verdict) {
  return {
    issuedAtMs: baseMs,
    expiresAtMs: baseMs + 60_000,
    seq: 1,
    project,
    reportId,
    reporter: identityFromSeed(new Uint8Array(32).fill(1)).publicKey,
    verdict,
    reason,
  };
}

test("reporter: a report is sent at once, again with a growing wait, and kept until its master answers", (t) => {
  const state = reporter();
  const first = stepReporter(state, { kind: "queue", facts: facts("report-a") }, baseMs, rng);
  t.deepEqual(
    sentReports(first.effects).map((sent) => sent.to),
    [master],
  );
  const timer = first.effects.find((effect) => effect.type === "set-timer");
  t.is(timer?.type === "set-timer" ? timer.atMs : 0, baseMs + state.config.retryBaseMs);
  t.is(sentReports(stepReporter(state, { kind: "tick" }, baseMs + 1, rng).effects).length, 0);
  const second = stepReporter(state, { kind: "tick" }, baseMs + state.config.retryBaseMs, rng);
  t.is(sentReports(second.effects).length, 1);
  t.is(state.outbox["report-a"]?.nextTryAtMs, baseMs + 3 * state.config.retryBaseMs);
  stepReporter(state, { kind: "ack", signer: "e".repeat(64), ack: ackOf("report-a", "accepted") }, baseMs, rng);
  t.is(reportDelivery(state, "report-a").state, "waiting", "an answer from no master of the project changes nothing");
  stepReporter(state, { kind: "ack", signer: master, ack: ackOf("report-a", "accepted") }, baseMs, rng);
  const done = reportDelivery(state, "report-a");
  t.is(done.state, "done");
  t.is(done.state === "done" ? done.verdict : "", "accepted");
  t.deepEqual(state.outbox, {});
});

test("reporter: the same report id handed over twice is kept and sent once; after its answer, it is not sent again", (t) => {
  const state = reporter();
  stepReporter(state, { kind: "queue", facts: facts("report-a") }, baseMs, rng);
  t.is(sentReports(stepReporter(state, { kind: "queue", facts: facts("report-a") }, baseMs, rng).effects).length, 0);
  stepReporter(
    state,
    { kind: "ack", signer: master, ack: ackOf("report-a", "refused", "rate-limited: …") },
    baseMs,
    rng,
  );
  t.is(sentReports(stepReporter(state, { kind: "queue", facts: facts("report-a") }, baseMs, rng).effects).length, 0);
  const done = reportDelivery(state, "report-a");
  t.is(done.state === "done" ? done.reason : "", "rate-limited: …");
});

test("reporter: with no master known it waits; the first master heard of gets it; a restart sends it again at once", (t) => {
  const state = createReporter(alice);
  t.is(sentReports(stepReporter(state, { kind: "queue", facts: facts("report-a") }, baseMs, rng).effects).length, 0);
  t.is(
    sentReports(stepReporter(state, { kind: "masters", project, masters: [master] }, baseMs + 5, rng).effects).length,
    1,
  );
  const restarted = stepReporter(structuredClone(state), { kind: "restart" }, baseMs + 6, rng);
  t.is(sentReports(restarted.effects).length, 1);
});

test("reporter: a report no master answers within deliveryMs is given up as undelivered", (t) => {
  const state = reporter();
  stepReporter(state, { kind: "queue", facts: facts("report-a") }, baseMs, rng);
  stepReporter(state, { kind: "tick" }, baseMs + state.config.deliveryMs, rng);
  const done = reportDelivery(state, "report-a");
  t.is(done.state === "done" ? done.verdict : "", "undelivered");
});
