/**
 * The worker's `rules` input (jobs/worker.ts): the volunteer's time windows and load ceiling, changed while the node
 * runs, are in force from the step they arrive in, and the worker offers again at once, as a change of availability
 * does. Stepped by hand on a virtual clock.
 */
import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import {
  type AvailabilityRules,
  createWorker,
  type Effect,
  effectiveAvailability,
  stepWorker,
  type WorkerInput,
  type WorkerState,
} from "../jobs/index.ts";
import { seededRng } from "./loop.ts";

const gib = 2 ** 30;
const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(41)).publicKey], 1).project;
const master = "ab".repeat(32);
const dimensions = {
  os: "linux",
  arch: "x64",
  cores: 4,
  memoryBytes: 8 * gib,
  diskBytes: 100 * gib,
  tools: [],
  labels: [],
};
/** Monday 12:00 local. */
const facts = { localMinuteOfDay: 12 * 60, localDayOfWeek: 1, loadAverage: 0.5 };
/** A window that misses noon every day: the worker acts paused at noon. */
const nightOnly: AvailabilityRules = {
  windows: [{ days: [], startMinute: 22 * 60, endMinute: 6 * 60 }],
  maxLoadAverage: null,
};

function offersIn(effects: readonly Effect[]): { freeSlots: number; availability: string }[] {
  const out: { freeSlots: number; availability: string }[] = [];
  for (const effect of effects)
    if (effect.type === "send" && effect.message.domain === "offer")
      out.push({ freeSlots: effect.message.body.freeSlots, availability: effect.message.body.availability });
  return out;
}

function started(rules: AvailabilityRules): { state: WorkerState; feed: (input: WorkerInput) => readonly Effect[] } {
  let state = createWorker("cd".repeat(32), { shares: { [project]: 1 }, dimensions, specs: [], slots: 2, rules });
  let nowMs = 1_000_000;
  const rng = seededRng(3);
  const feed = (input: WorkerInput) => {
    nowMs += 1_000;
    const out = stepWorker(state, input, nowMs, rng);
    state = out.state;
    return out.effects;
  };
  feed({ kind: "restart" });
  feed({ kind: "facts", facts });
  feed({ kind: "masters", project, masters: [master] });
  return {
    get state() {
      return state;
    },
    feed,
  };
}

test("a worker paused by its time window offers no slot; a rules input lifting the window makes it offer its free slots in that step", (t) => {
  const worker = started(nightOnly);
  t.is(effectiveAvailability(worker.state), "paused");
  t.true(
    offersIn(worker.feed({ kind: "tick" })).every((offer) => offer.freeSlots === 0),
    "paused by rule, no slot is offered",
  );
  const effects = worker.feed({ kind: "rules", rules: { windows: [], maxLoadAverage: 4 } });
  t.is(effectiveAvailability(worker.state), "eager");
  t.deepEqual(worker.state.config.rules, { windows: [], maxLoadAverage: 4 });
  t.deepEqual(offersIn(effects), [{ freeSlots: 2, availability: "eager" }], "offered at once");
  const back = worker.feed({ kind: "rules", rules: { windows: [], maxLoadAverage: 0.25 } });
  t.is(effectiveAvailability(worker.state), "paused", "a ceiling under the load pauses it again");
  t.deepEqual(offersIn(back), [{ freeSlots: 0, availability: "paused" }], "and that is offered at once too");
});

test("rules out of range are refused naming the field, and leave the worker's rules as they were", (t) => {
  const worker = started(nightOnly);
  const wrong: [AvailabilityRules, RegExp][] = [
    [{ windows: [{ days: [7], startMinute: 0, endMinute: 60 }], maxLoadAverage: null }, /rules\.windows\[0\]\.days/],
    [
      { windows: [{ days: [], startMinute: 0, endMinute: 1440 }], maxLoadAverage: null },
      /rules\.windows\[0\]\.endMinute/,
    ],
    [{ windows: [], maxLoadAverage: 0 }, /rules\.maxLoadAverage/],
    [{ windows: [], maxLoadAverage: Number.NaN }, /rules\.maxLoadAverage/],
  ];
  for (const [rules, field] of wrong)
    t.throws(() => worker.feed({ kind: "rules", rules }), { instanceOf: RangeError, message: field });
  t.deepEqual(worker.state.config.rules, nightOnly);
});
