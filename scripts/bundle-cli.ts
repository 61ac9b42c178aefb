/**
 * Bundles the `cimesh` command, as bin/cimesh.js runs it from an installed
 * package, into <out>/node/cli/cimesh.js and its chunks beside it: one
 * minified ES module per command group instead of some 700 modules of cimesh
 * and its dependencies. A process keeps every loaded module's source text, a
 * module record and its scope, so an idle worker-only node is that much
 * lighter (see README "Performance").
 *
 * `npm run build` runs it after tsc, which still emits dist/ module by module
 * for the package's library entry (dist/node/index.js) and its declarations.
 * The bundle sits at the depth of the sources' node/cli/, so the relative
 * paths the code finds its assets by still hold: the dashboard's files
 * (node/control/dashboard.ts: ../dashboard) and the package's own
 * package.json. Left out of the bundle:
 * - the simulator (sim/, loaded only by `cimesh sim`), which finds its
 *   scenarios and its sweep worker's module beside its own files: the bundle
 *   imports tsc's dist/sim/index.js;
 * - LevelDB (level, classic-level), a native addon found by its own path.
 * One module is left out by name: node:https as prom-client's Pushgateway
 * requires it (prom-client loads the Pushgateway with everything else, and
 * node:https brings TLS, about 2 MiB of every node's resident memory).
 * cimesh never pushes metrics (Prometheus scrapes GET /metrics), so there it
 * is a module whose every use throws, saying why.
 *
 * Usage: node scripts/bundle-cli.ts [out] (default dist). Legal comments of
 * the bundled packages go to a .LEGAL.txt beside the output file that holds
 * them; source maps (names and positions, not the sources' text) to a .map
 * beside each, which Node.js reads only with --enable-source-maps.
 */
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";

const repo = fileURLToPath(new URL("../", import.meta.url));

/** Packages that stay outside the bundle, imported from node_modules as they are. */
export const unbundledPackages: readonly string[] = ["level", "classic-level"];

/** The simulator stays outside: `import("../../sim/index.ts")` becomes an import of tsc's ../../sim/index.js. */
const simulatorOutside: Plugin = {
  name: "simulator-outside",
  setup(bundle) {
    bundle.onResolve({ filter: /\/sim\/index\.ts$/ }, (args) => ({
      path: args.path.replace(/\.ts$/, ".js"),
      external: true,
    }));
  },
};

/** prom-client's Pushgateway module: its `require("https")` gets withoutHttps (see the file's comment). */
const pushgatewayModule = /[\\/]node_modules[\\/]prom-client[\\/]lib[\\/]pushgateway\.js$/;
const withoutHttps = `module.exports = new Proxy({}, { get(_, name) {
  throw new Error("node:https." + String(name) + ": not in this bundle of cimesh (scripts/bundle-cli.ts): prom-client's Pushgateway is not used");
} });`;

const pushgatewayWithoutHttps: Plugin = {
  name: "pushgateway-without-https",
  setup(bundle) {
    bundle.onResolve({ filter: /^(node:)?https$/ }, (args) =>
      pushgatewayModule.test(args.importer) ? { path: "https", namespace: "without-https" } : undefined,
    );
    bundle.onLoad({ filter: /.*/, namespace: "without-https" }, () => ({ contents: withoutHttps, loader: "js" }));
  },
};

/** Bundles the CLI into `outDir`/node/cli/; returns the entry's path. */
export async function bundleCli(outDir: string): Promise<string> {
  const cliDir = join(resolve(outDir), "node", "cli");
  const result = await build({
    absWorkingDir: repo,
    entryPoints: { cimesh: "node/cli/index.ts" },
    outdir: cliDir,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node22",
    minify: true,
    sourcemap: "linked",
    sourcesContent: false,
    legalComments: "linked",
    chunkNames: "chunk-[hash]",
    external: [...unbundledPackages],
    plugins: [simulatorOutside, pushgatewayWithoutHttps],
    // The CommonJS packages in the bundle call require() for Node.js's modules: an ES module has none of its own.
    banner: {
      js: 'import{createRequire as __cimeshRequire}from"node:module";const require=__cimeshRequire(import.meta.url);',
    },
    logLevel: "warning",
  });
  if (result.errors.length > 0) throw new Error(`bundling the CLI: ${result.errors.map((e) => e.text).join("; ")}`);
  return join(cliDir, "cimesh.js");
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const entry = await bundleCli(process.argv[2] ?? join(repo, "dist"));
  process.stdout.write(`bundled the CLI into ${entry}\n`);
}
