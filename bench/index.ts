/**
 * `npm run bench`: every benchmark of the project, in one run, on this machine.
 * Figures are medians of repeated samples; the JSON lands in bench/out/.
 * Pass suite names to run only some: `npm run bench -- crypto`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { arch, cpus, platform } from "node:os";
import { benchClaim } from "./claim.ts";
import { benchCrypto } from "./crypto.ts";
import { benchLean } from "./lean.ts";
import { benchMasterStore } from "./master-store.ts";
import { benchMesh } from "./mesh.ts";
import { benchScheduling } from "./scheduling.ts";
import { benchSim } from "./sim.ts";
import { benchSybil } from "./sybil.ts";
import { benchTransfer } from "./transfer.ts";

const suites: Record<string, () => unknown> = {
  claim: benchClaim,
  crypto: benchCrypto,
  lean: benchLean,
  "master-store": benchMasterStore,
  mesh: benchMesh,
  scheduling: benchScheduling,
  sim: benchSim,
  sybil: () => benchSybil(),
  transfer: benchTransfer,
};

const wanted = process.argv.slice(2).filter((arg) => !arg.startsWith("-"));
const unknown = wanted.filter((name) => !(name in suites));
if (unknown.length > 0) {
  console.error(`unknown suite ${unknown.join(", ")}: expected one of ${Object.keys(suites).join(", ")}`);
  process.exit(2);
}
console.log(
  `cimesh bench: node ${process.version}, ${platform()}/${arch()}, ${cpus().length} cpus (${cpus()[0]?.model ?? "?"})`,
);
const results: Record<string, unknown> = {};
for (const [name, run] of Object.entries(suites)) {
  // lean repeats what the other suites measure at length: only when asked for by name.
  if (wanted.length > 0 ? !wanted.includes(name) : name === "lean") continue;
  console.log(`\n== ${name}`);
  results[name] = await run();
}
/** The six lean figures, at the top of latest.json under `lean`, when that suite ran. */
function leanFigures(lean: unknown): { lean?: unknown } {
  if (typeof lean !== "object" || lean === null) return {};
  const { repeats: _repeats, detail: _detail, loadAverage: _load, ...figures } = lean as Record<string, unknown>;
  return { lean: figures };
}
mkdirSync(new URL("./out/", import.meta.url), { recursive: true });
writeFileSync(
  new URL("./out/latest.json", import.meta.url),
  `${JSON.stringify({ node: process.version, ...leanFigures(results.lean), results }, null, 2)}\n`,
);
