/**
 * Differential test of the shell core (jobs/driver.ts): one scripted scenario
 * (test/differential-worlds.ts, runScenario) played on the simulator's ports
 * and on real libp2p nodes over @libp2p/memory. A master and four workers (one
 * a liar) run three jobs: the first announced to reluctant workers, which bid,
 * the other two awarded at once from standing offers, through a worker crash
 * and a master crash; then an attacker sends a restarted worker W a replayed
 * announcement on the topic, a self-signed announcement of another project on
 * the topic, the replayed announcement over the direct protocol and an offer
 * of its own on the topic, and sends the master an offer of its own directly.
 * The admission of each, and each job's outcome, must be the same in both
 * worlds and the expected one.
 */
import test from "ava";
import { resultDigest } from "../jobs/index.ts";
import {
  admissionSummary,
  type DiffWorld,
  honestOutputs,
  RealDiffWorld,
  runScenario,
  type ScenarioOutcome,
  SimDiffWorld,
  targetName,
} from "./differential-worlds.ts";

const honestDigest = resultDigest({ outcome: "succeeded", exitCode: 0, outputsDigest: honestOutputs });

/** What each injected message must get from W (the offer sent directly: from the master). */
const expectedInjected = {
  replay: { verdict: "ignore", reason: "replay" },
  wrongProject: { verdict: "reject", reason: "wrong-project" },
  direct: { verdict: "reject", reason: "signer-not-sender" },
  offerOnTopic: { verdict: "reject", reason: "not-on-topic" },
  offerToMaster: { verdict: "accept", reason: "taken" },
} as const;

/** What happened in a world, for the log: its timeline, W's admissions, every node's admissions by verdict. */
function report(world: DiffWorld, outcome: ScenarioOutcome): string {
  return [
    `== ${world.kind} world: ${Math.round(outcome.elapsedMs)} ms on its clock${outcome.failure === null ? "" : `, FAILED: ${outcome.failure}`}`,
    ...outcome.timeline,
    `-- ${targetName}'s admissions from the start of the attack:`,
    ...world.admissions
      .slice(outcome.attackMark)
      .filter((record) => record.node === targetName)
      .map(
        (record) =>
          `${record.atMs} ms ${record.channel} ${record.what} from ${record.from} ${record.verdict}/${record.reason} ${record.detail}`,
      ),
    ...["j1", "j2", "j3"].map(
      (jobId) =>
        `-- verdict ${jobId} taken by: ${world.admissions
          .filter((record) => record.what === `verdict ${jobId}` && record.reason === "taken")
          .map((record) => record.node)
          .join(", ")}`,
    ),
    `-- admissions by node: ${JSON.stringify(admissionSummary(world.admissions))}`,
    ...(outcome.failure === null ? [] : ["-- last log lines:", ...world.logs.slice(-60)]),
  ].join("\n");
}

test("the simulator and real libp2p nodes admit the same messages and end the same jobs the same way", async (t) => {
  const wallStart = Date.now();
  const sim = new SimDiffWorld(20_270_115);
  const simOutcome = await runScenario(sim);
  const simWallMs = Date.now() - wallStart;
  t.log(report(sim, simOutcome));

  const real = await RealDiffWorld.create(sim.identities());
  t.teardown(() => real.stop());
  const realOutcome = await runScenario(real);
  await real.stop();
  t.log(report(real, realOutcome));
  t.log(`wall time: sim ${simWallMs} ms, libp2p ${Date.now() - wallStart - simWallMs} ms`);

  for (const outcome of [simOutcome, realOutcome]) {
    t.is(outcome.failure, null, `${outcome.world}: the scenario ran to its end`);
    t.true(outcome.targetTookAnnouncement, `${outcome.world}: ${targetName} took J1's announcement before the attack`);
    const j1 = outcome.jobs.j1;
    t.is(j1?.status, "passed", `${outcome.world}: J1 passed`);
    t.deepEqual(j1?.decidedDigests, [honestDigest], `${outcome.world}: J1 accepted the honest digest`);
    const j2 = outcome.jobs.j2;
    t.is(j2?.status, "passed", `${outcome.world}: J2 passed`);
    t.true(
      j2?.attemptStates.includes(`${outcome.crashedWorker}:refused`),
      `${outcome.world}: the restarted ${outcome.crashedWorker} reported its J2 run refused (${j2?.attemptStates})`,
    );
    t.true((j2?.attempts ?? 0) >= 2, `${outcome.world}: J2 was awarded again`);
    const j3 = outcome.jobs.j3;
    t.is(j3?.status, "passed", `${outcome.world}: J3 passed`);
    t.is(j3?.attempts, 1, `${outcome.world}: J3 passed on its one attempt, through the master's restart`);
    for (const [name, expected] of Object.entries(expectedInjected)) {
      const got = outcome.injected[name as keyof typeof expectedInjected];
      t.deepEqual(
        got === null ? null : { verdict: got.verdict, reason: got.reason },
        expected,
        `${outcome.world}: ${targetName}'s admission of the injected ${name} message`,
      );
    }
  }

  // The two worlds against each other.
  for (const name of Object.keys(expectedInjected) as (keyof typeof expectedInjected)[]) {
    const pick = (outcome: ScenarioOutcome) => {
      const got = outcome.injected[name];
      return got === null ? null : { verdict: got.verdict, reason: got.reason };
    };
    t.deepEqual(pick(realOutcome), pick(simOutcome), `the injected ${name} message: same admission in both worlds`);
  }
  for (const jobId of ["j1", "j2", "j3"]) {
    const pick = (outcome: ScenarioOutcome) => {
      const job = outcome.jobs[jobId];
      if (job === undefined) return null;
      return {
        status: job.status,
        decidedDigests: job.decidedDigests,
        ...(jobId === "j3" ? { attempts: job.attempts } : {}),
      };
    };
    t.deepEqual(pick(realOutcome), pick(simOutcome), `${jobId}: same outcome in both worlds`);
  }
});
