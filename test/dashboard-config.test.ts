/**
 * What the dashboard's rules and trust-removal routes write (node/runtime/startup.ts): the worker's time windows
 * and load ceiling into config.yaml, and a trusted project out of it (and out of masters), as `cimesh trust add` and
 * `cimesh availability` write it, the file's comments kept. In a temporary data folder, no node started.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import { configPath, loadConfig } from "../node/files/index.ts";
import { forgetTrust, keepRules } from "../node/runtime/startup.ts";

const roots = [Buffer.from(identityFromSeed(new Uint8Array(32).fill(9)).publicKey).toString("hex")];
const project = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(9)).publicKey], 1).project;

const configText = `# my node: keep this comment
worker:
  slots: 2 # two at once
  rules:
    # weekday evenings only
    windows:
      - { days: [mon], start: "18:00", end: "23:00" }
trust:
  # the project my club runs
  - project: ${project}
    roots: [${roots[0]}]
    threshold: 1
    share: 2
masters: [${project}]
`;

async function dataDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-dashboard-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(configPath(dir), configText);
  return dir;
}

test("new rules are written into config.yaml with its comments kept, and read back as sent", async (t) => {
  const dir = await dataDir(t);
  const rules = {
    windows: [
      { days: [1, 2, 3, 4, 5], startMinute: 9 * 60, endMinute: 17 * 60 + 30 },
      { days: [], startMinute: 22 * 60, endMinute: 6 * 60 },
    ],
    maxLoadAverage: 1.5,
  };
  await keepRules(dir, rules);
  const config = await loadConfig(dir);
  t.deepEqual(config.worker.rules, rules);
  t.is(config.worker.slots, 2);
  const text = await readFile(configPath(dir), "utf8");
  for (const comment of ["# my node: keep this comment", "# two at once", "# the project my club runs"])
    t.true(text.includes(comment), `kept: ${comment}`);
  await keepRules(dir, { windows: [], maxLoadAverage: null });
  t.deepEqual((await loadConfig(dir)).worker.rules, { windows: [], maxLoadAverage: null }, "and lifted again");
});

test("removing a trusted project takes it out of trust and masters, comments kept; an unknown one is refused naming it", async (t) => {
  const dir = await dataDir(t);
  t.deepEqual(await forgetTrust(dir, project), { wasMaster: true });
  const config = await loadConfig(dir);
  t.deepEqual(config.trust, []);
  t.deepEqual(config.masters, []);
  t.true((await readFile(configPath(dir), "utf8")).includes("# my node: keep this comment"));
  const error = await t.throwsAsync(forgetTrust(dir, project));
  t.is((error as { status?: number }).status, 404);
  t.regex(error?.message ?? "", new RegExp(`project: expected a project trusted in .*got ${project}`));
});
