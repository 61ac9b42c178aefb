#!/usr/bin/env node
/**
 * The `cimesh` command's entry point, for a clone and an installed package
 * alike. It first checks that this Node.js is one cimesh runs on (package.json's
 * engines), in plain JavaScript any Node.js that loads ES modules parses, so an
 * older Node.js prints one line saying what cimesh needs and exits 1, with no
 * stack trace. Then it runs the CLI: inside node_modules (an installed
 * package, where Node.js does not strip types) the bundle the build made of
 * it (dist/node/cli/cimesh.js and its chunks: scripts/bundle-cli.ts); in a
 * clone, the TypeScript sources themselves.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const packageRoot = dirname(dirname(fileURLToPath(import.meta.url)));
const builtEntry = join(packageRoot, "dist", "node", "cli", "cimesh.js");
const sourceEntry = join(packageRoot, "node", "cli", "index.ts");

/** A version as [major, minor, patch]; missing parts are 0. */
function versionParts(text) {
  const parts = text.split(".").map((part) => Number.parseInt(part, 10));
  return [parts[0] || 0, parts[1] || 0, parts[2] || 0];
}

function atLeast(have, need) {
  for (let i = 0; i < 3; i++) if (have[i] !== need[i]) return have[i] > need[i];
  return true;
}

function fail(line) {
  process.stderr.write(`cimesh: ${line}\n`);
  process.exit(1);
}

let range;
try {
  range = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")).engines.node;
} catch (error) {
  fail(`cannot read engines.node from ${join(packageRoot, "package.json")} (${error.message})`);
}
const minimum = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(String(range));
if (minimum === null) fail(`package.json engines.node: expected ">=MAJOR.MINOR", got ${JSON.stringify(range)}`);
if (!atLeast(versionParts(process.versions.node), versionParts(minimum[1]))) {
  fail(
    `needs Node.js ${minimum[1]} or later, this is Node.js ${process.versions.node} (${process.execPath}): ` +
      "install a newer Node.js (https://nodejs.org) and run cimesh with it",
  );
}

const installed = packageRoot.split(sep).includes("node_modules");
const entry = installed || !existsSync(sourceEntry) ? builtEntry : sourceEntry;
if (!existsSync(entry)) {
  fail(
    `${entry} is missing: this copy of cimesh was not built; install a package made by \`npm pack\`, ` +
      "which builds it, or run cimesh from a clone",
  );
}
await import(pathToFileURL(entry).href);
