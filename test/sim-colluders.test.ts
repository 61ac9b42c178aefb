/**
 * sim/scenarios/colluders-15pct.yaml over 200 seeds with the masters' default quorum rules: patient colluders in
 * groups on two prefixes each, lying together, and throwaway identities joining mid-run. Every invariant holds; no
 * wrong result is accepted; the attack did act (colluders lied, throwaways were awarded runs); and the same scenario
 * without the rules (withoutSybilRules) does get wrong results accepted, so the seeds test a real attack.
 */
import { relative } from "node:path";
import test from "ava";
import {
  assertInvariants,
  exampleScenarioPath,
  loadScenario,
  reproduceCommand,
  simulate,
  withoutSybilRules,
} from "../sim/index.ts";

const name = "colluders-15pct";
const path = exampleScenarioPath(name);
const scenario = loadScenario(path);
/** The scenario's path as `npx cimesh sim` takes it from the repository's root. */
const shownPath = relative(process.cwd(), path);
/** Seeds with the defence, in slices of this many per test (each test ends well inside ava's timeout). */
const colluderSeedsCount = 200;
const seedsPerSliceCount = 50;
/** Seeds without the defence: enough for the attack to win somewhere. */
const undefendedSeedsCount = 10;

/** What the slices found, for the last test. */
const found = { seeds: 0, wrongSeeds: [] as number[], lies: 0, throwawayAwards: 0 };

for (let first = 1; first <= colluderSeedsCount; first += seedsPerSliceCount) {
  const last = Math.min(colluderSeedsCount, first + seedsPerSliceCount - 1);
  test.serial(`${name}, seeds ${first}..${last}: every invariant holds`, (t) => {
    for (let seed = first; seed <= last; seed++) {
      const metrics = simulate(scenario, seed);
      // Throws naming the seed, the violations and the command that reproduces the run.
      assertInvariants(metrics, shownPath);
      const j = metrics.jobs;
      t.true(
        j.passed + j.failed + j.cancelled === j.submitted && j.lost === 0,
        `seed ${seed}: every job ended (${JSON.stringify(j)}); reproduce: ${reproduceCommand(shownPath, seed)}`,
      );
      found.seeds++;
      if (j.wrongResultsAccepted > 0) found.wrongSeeds.push(seed);
      found.lies += metrics.security.colluderLies ?? 0;
      found.throwawayAwards += metrics.security.throwawayAwards ?? 0;
    }
  });
}

test.serial(
  `${name}: over ${colluderSeedsCount} seeds the colluders lied together and throwaways were awarded runs`,
  (t) => {
    t.is(found.seeds, colluderSeedsCount, "every seed ran");
    t.true(found.lies > 0, "patient colluders lied together");
    t.true(found.throwawayAwards > 0, "throwaway identities were awarded runs");
    t.log(
      `${found.lies} colluder lies and ${found.throwawayAwards} throwaway awards over ${found.seeds} seeds; wrong results accepted in ${found.wrongSeeds.length} seeds`,
    );
  },
);

test.serial(`${name}: no wrong result accepted over ${colluderSeedsCount} seeds`, (t) => {
  t.deepEqual(
    found.wrongSeeds,
    [],
    `wrong results accepted with seeds ${found.wrongSeeds.join(", ")}; reproduce: ${found.wrongSeeds
      .slice(0, 3)
      .map((seed) => reproduceCommand(shownPath, seed))
      .join(" ; ")}`,
  );
});

test(`${name} without the Sybil rules: the same attack gets wrong results accepted`, (t) => {
  const undefended = withoutSybilRules(scenario);
  let wrong = 0;
  for (let seed = 1; seed <= undefendedSeedsCount; seed++) {
    const metrics = simulate(undefended, seed);
    assertInvariants(metrics, shownPath);
    wrong += metrics.jobs.wrongResultsAccepted;
  }
  t.log(`without the rules: ${wrong} wrong results accepted over ${undefendedSeedsCount} seeds`);
  t.true(wrong > 0);
});
