/**
 * The commands about projects, run on files with no node running: project
 * (root keys, keysets and announcers), trust (the projects this node serves)
 * and spec (capability specs to publish).
 */
import { join } from "node:path";
import type { Command } from "commander";
import { CimeshError, keysetDomain, openMultiEnvelope } from "../../crypto/index.ts";
import {
  addRunner,
  chooseProject,
  configPath,
  delegateAnnouncer,
  initProject,
  listProjects,
  loadConfig,
  loadProjectKeyset,
  maxSpecFileBytes,
  type NodeConfig,
  type ProjectKeysetChange,
  parseAnnouncerKey,
  parseSpecFile,
  publishSpec,
  removeRunner,
  renewKeyset,
  revokeAnnouncer,
  rotateRoots,
  saveConfig,
  type TrustEntry,
  trustAddLine,
  trustEntrySchema,
} from "../files/index.ts";
import {
  CliOptionError,
  dataDirOf,
  duration,
  integer,
  nodeIdentity,
  out,
  positive,
  program,
  readInputFile,
  time,
} from "./common.ts";

const restartHint = "a running master publishes the keyset it loaded at start: restart it to publish this one";

const trustRestartHint = "restart the node (cimesh start) for it to take effect";

/** Adds `project` and its subcommands: a project's root keys and keysets. */
export function addProjectCommand(): void {
  const project = program
    .command("project")
    .description("a project's root keys and keysets (who may announce its jobs)");
  addProjectInit(project);
  addProjectList(project);
  addProjectDelegate(project);
  addProjectRevoke(project);
  addProjectRotate(project);
  addProjectRenew(project);
  addProjectRunner(project);
}

function printKeysetChange(change: ProjectKeysetChange, dataDir: string): void {
  const { keyset } = change;
  out(`project ${change.project}`);
  out(
    `keyset root version ${keyset.rootVersion}, version ${keyset.version}, ${keyset.threshold} of ${keyset.roots.length} root signatures, expires ${time(keyset.expiresAtMs)}`,
  );
  for (const announcer of keyset.announcers)
    out(`  announcer ${Buffer.from(announcer.key).toString("hex")}  ${announcer.label}`);
  for (const runner of keyset.runners ?? [])
    out(`  runner ${Buffer.from(runner.key).toString("hex")}  ${runner.label}`);
  out(`stored in ${join(dataDir, "projects", change.project)}`);
}

/** `project init`: root keys and a first keyset; the node trusts the project and is its master. */
function addProjectInit(project: Command): void {
  project
    .command("init")
    .description(
      "create a project: root keys, a first keyset naming this node as announcer; adds it to this node's trust and masters",
    )
    .option("--roots <n>", "root keys to create", integer("--roots", 1, 16), 1)
    .option("--threshold <n>", "root signatures each keyset needs", integer("--threshold", 1, 16), 1)
    .option(
      "--expires-in <duration>",
      "how long the keyset lasts (renew with `project renew`)",
      duration("--expires-in"),
    )
    .action(async (options: { roots: number; threshold: number; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      if (options.threshold > options.roots)
        throw new CliOptionError("--threshold", `at most --roots (${options.roots})`, options.threshold);
      const identity = await nodeIdentity(dataDir);
      const change = await initProject(dataDir, identity, {
        roots: options.roots,
        threshold: options.threshold,
        lifetimeMs: options.expiresIn,
        nowMs: Date.now(),
      });
      printKeysetChange(change, dataDir);
      out(
        `root keys: ${join(dataDir, "projects", change.project)}/root-N.key (back them up; anyone holding them owns the project)`,
      );
      out(`added to ${configPath(dataDir)}: trust (share 1) and masters`);
      out("");
      out("Volunteers serve this project after running:");
      out(`  ${change.trustLine}`);
      out("");
      out("Then start this node as its master: cimesh start --master");
    });
}

/** `project list`: the projects whose keys this node holds. */
function addProjectList(project: Command): void {
  project
    .command("list")
    .description("list the projects whose keys this node holds")
    .action(async () => {
      const dataDir = dataDirOf();
      const projects = await listProjects(dataDir);
      if (projects.length === 0) out("no projects: create one with `cimesh project init`");
      for (const id of projects) {
        const bytes = await loadProjectKeyset(dataDir, id);
        if (bytes === null) continue;
        const { body } = openMultiEnvelope(keysetDomain, bytes);
        out(
          `${id}  root version ${body.rootVersion}, version ${body.version}, ${body.announcers.length} announcer(s), expires ${time(body.expiresAtMs)}`,
        );
      }
    });
}

/** `project delegate <key>`: a keyset with one more announcer. */
function addProjectDelegate(project: Command): void {
  project
    .command("delegate")
    .description("new keyset (version + 1) that adds an announcer: another master node of the project")
    .argument("<key>", "the announcer's public key (64 hex) or PeerId (what `cimesh id` prints on that node)")
    .option("--project <id>", "the project (needed when this node holds several)")
    .option("--label <text>", "a name for the announcer, shown in the keyset")
    .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
    .action(async (key: string, options: { project?: string; label?: string; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      const id = await chooseProject(dataDir, options.project);
      const change = await delegateAnnouncer(dataDir, id, parseAnnouncerKey(key), {
        nowMs: Date.now(),
        lifetimeMs: options.expiresIn,
        label: options.label,
      });
      printKeysetChange(change, dataDir);
      out(restartHint);
    });
}

/** `project runner add|remove <key>`: a keyset that names, or no longer names, one of the project's own workers. */
function addProjectRunner(project: Command): void {
  const runner = project
    .command("runner")
    .description(
      "the project's own workers, named in its keyset: their results anchor a quorum, a volunteer's must earn weight",
    );
  runner
    .command("add")
    .description("new keyset (version + 1) that names a worker a runner of the project")
    .argument("<key>", "the worker's public key (64 hex) or PeerId (what `cimesh id` prints on that node)")
    .option("--project <id>", "the project (needed when this node holds several)")
    .option("--label <text>", "a name for the runner, shown in the keyset")
    .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
    .action(async (key: string, options: { project?: string; label?: string; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      const id = await chooseProject(dataDir, options.project);
      const change = await addRunner(dataDir, id, parseAnnouncerKey(key), {
        nowMs: Date.now(),
        lifetimeMs: options.expiresIn,
        label: options.label,
      });
      printKeysetChange(change, dataDir);
      out(restartHint);
    });
  runner
    .command("remove")
    .description("new keyset (version + 1) that no longer names a worker a runner")
    .argument("<key>", "the worker's public key (64 hex) or PeerId")
    .option("--project <id>", "the project (needed when this node holds several)")
    .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
    .action(async (key: string, options: { project?: string; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      const id = await chooseProject(dataDir, options.project);
      const change = await removeRunner(dataDir, id, parseAnnouncerKey(key), {
        nowMs: Date.now(),
        lifetimeMs: options.expiresIn,
      });
      printKeysetChange(change, dataDir);
      out(restartHint);
    });
}

/** `project revoke <key>`: a keyset without an announcer. */
function addProjectRevoke(project: Command): void {
  project
    .command("revoke")
    .description("new keyset (version + 1) without an announcer: what it signs from then on is refused")
    .argument("<key>", "the announcer's public key (64 hex) or PeerId")
    .option("--project <id>", "the project (needed when this node holds several)")
    .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
    .action(async (key: string, options: { project?: string; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      const id = await chooseProject(dataDir, options.project);
      const change = await revokeAnnouncer(dataDir, id, parseAnnouncerKey(key), {
        nowMs: Date.now(),
        lifetimeMs: options.expiresIn,
      });
      printKeysetChange(change, dataDir);
      out(restartHint);
    });
}

/** `project rotate`: new root keys, signed over by the old ones. */
function addProjectRotate(project: Command): void {
  project
    .command("rotate")
    .description("new root keys: a keyset of the next root version, signed by the old roots and the new ones")
    .option("--project <id>", "the project (needed when this node holds several)")
    .option("--roots <n>", "new root keys to create (default: as many as now)", integer("--roots", 1, 16))
    .option(
      "--threshold <n>",
      "root signatures each keyset needs from now on (default: as now)",
      integer("--threshold", 1, 16),
    )
    .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
    .action(async (options: { project?: string; roots?: number; threshold?: number; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      const id = await chooseProject(dataDir, options.project);
      const change = await rotateRoots(dataDir, id, {
        nowMs: Date.now(),
        lifetimeMs: options.expiresIn,
        roots: options.roots,
        threshold: options.threshold,
      });
      printKeysetChange(change, dataDir);
      out(`the old root keys are in ${join(dataDir, "projects", id, "retired")}: store them offline or delete them`);
      out("volunteers follow the rotation through the keyset; new volunteers still pin the project's first roots:");
      out(`  ${change.trustLine}`);
      out(restartHint);
    });
}

/** `project renew`: the same keyset with a new expiry. */
function addProjectRenew(project: Command): void {
  project
    .command("renew")
    .description("new keyset (version + 1) with the same announcers and a new expiry: run it before the keyset expires")
    .option("--project <id>", "the project (needed when this node holds several)")
    .option("--expires-in <duration>", "how long the new keyset lasts", duration("--expires-in"))
    .action(async (options: { project?: string; expiresIn?: number }) => {
      const dataDir = dataDirOf();
      const id = await chooseProject(dataDir, options.project);
      const change = await renewKeyset(dataDir, id, { nowMs: Date.now(), lifetimeMs: options.expiresIn });
      printKeysetChange(change, dataDir);
      out(restartHint);
    });
}

/** Adds `trust` and its subcommands: the projects this node trusts. */
export function addTrustCommand(): void {
  const trust = program
    .command("trust")
    .description("the projects this node trusts (their jobs are the only ones it runs) and their shares");
  addTrustAdd(trust);
  addTrustList(trust);
  addTrustRemove(trust);
}

/** `trust add <project>`: pins a project's roots in the config. */
function addTrustAdd(trust: Command): void {
  trust
    .command("add")
    .description("trust a project: pin its root keys; run the line the project published")
    .argument("<project>", "the project id")
    .requiredOption("--roots <hex,...>", "the project's root public keys, comma-separated")
    .option("--threshold <n>", "root signatures the project's keysets need", integer("--threshold", 1, 16), 1)
    .option("--share <n>", "this project's share of the worker, relative to the others", positive("--share"), 1)
    .action(async (id: string, options: { roots: string; threshold: number; share: number }) => {
      const dataDir = dataDirOf();
      const config = await loadConfig(dataDir);
      const parsed = trustEntrySchema.safeParse({
        project: id,
        roots: options.roots
          .split(",")
          .map((root) => root.trim())
          .filter((root) => root !== ""),
        threshold: options.threshold,
        share: options.share,
      });
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const field = String(issue?.path[0] ?? "project");
        throw new CliOptionError(
          field === "project" ? "<project>" : `--${field}`,
          (issue?.message ?? "a valid value").replace(/^expected /, ""),
          field === "roots" ? options.roots : field === "project" ? id : (options as Record<string, unknown>)[field],
        );
      }
      const entry: TrustEntry = parsed.data;
      const existing = config.trust.find((item) => item.project === entry.project);
      if (
        existing !== undefined &&
        (existing.threshold !== entry.threshold || existing.roots.join() !== entry.roots.join())
      ) {
        throw new CimeshError(
          "ERR_TRUST_CONFLICT",
          `project ${entry.project}: expected the roots already pinned for it; to pin others, run \`cimesh trust remove ${entry.project}\` first`,
        );
      }
      const next: NodeConfig = {
        ...config,
        trust:
          existing === undefined
            ? [...config.trust, entry]
            : config.trust.map((item) => (item.project === entry.project ? entry : item)),
      };
      await saveConfig(dataDir, next);
      out(
        `${existing === undefined ? "trusting" : "updated"} project ${entry.project}: ${entry.roots.length} root(s), threshold ${entry.threshold}, share ${entry.share}`,
      );
      out(trustRestartHint);
    });
}

/** `trust list`: the trusted projects and the line that trusts each. */
function addTrustList(trust: Command): void {
  trust
    .command("list")
    .description("list the trusted projects")
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const config = await loadConfig(dataDirOf());
      if (options.json === true) {
        out(JSON.stringify(config.trust, null, 2));
        return;
      }
      if (config.trust.length === 0) out("no trusted projects: add one with `cimesh trust add`");
      for (const entry of config.trust) {
        const master = config.masters.includes(entry.project) ? "  (master)" : "";
        out(
          `${entry.project}  share ${entry.share}  threshold ${entry.threshold} of ${entry.roots.length} roots${master}`,
        );
        out(`  ${trustAddLine(entry.project, entry.roots, entry.threshold)}`);
      }
    });
}

/** `trust remove <project>`: forgets a project (and stops being its master). */
function addTrustRemove(trust: Command): void {
  trust
    .command("remove")
    .description("stop trusting a project (and stop announcing for it, if this node did)")
    .argument("<project>", "the project id")
    .action(async (id: string) => {
      const dataDir = dataDirOf();
      const config = await loadConfig(dataDir);
      if (!config.trust.some((entry) => entry.project === id)) {
        throw new CimeshError(
          "ERR_NOT_TRUSTED",
          `project ${id}: expected a trusted project (${config.trust.map((entry) => entry.project).join(", ") || "none"}); \`cimesh trust list\` lists them`,
        );
      }
      const wasMaster = config.masters.includes(id);
      await saveConfig(dataDir, {
        ...config,
        trust: config.trust.filter((entry) => entry.project !== id),
        masters: config.masters.filter((item) => item !== id),
      });
      out(`no longer trusting project ${id}${wasMaster ? " (removed from masters too)" : ""}`);
      out(trustRestartHint);
    });
}

/** Adds `spec` and `spec publish <spec.yaml>`: capability specs to publish. */
export function addSpecCommand(): void {
  const spec = program.command("spec").description("capability specs: what a worker must have to run a project's jobs");

  spec
    .command("publish")
    .description("validate a capability spec file, sign it with the node key and store it for the node to publish")
    .argument("<spec.yaml>", "the capability spec file")
    .action(async (path: string) => {
      const dataDir = dataDirOf();
      const identity = await nodeIdentity(dataDir);
      const nowMs = Date.now();
      const body = parseSpecFile(await readInputFile(path, maxSpecFileBytes, "a capability spec file"), path, nowMs);
      const stored = await publishSpec(dataDir, body, identity, nowMs);
      out(`spec ${body.uuid} "${body.name}" version ${body.version}, expires ${time(body.expiresAtMs)}`);
      out(`signed and stored in ${stored}`);
      out("the node publishes the specs in that folder when it starts: restart it if it runs");
    });
}
