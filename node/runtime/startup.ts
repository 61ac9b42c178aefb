/**
 * What a node does about its own data folder as it starts and runs, apart
 * from the protocol: open the store saying who holds it when another process
 * does, start the worker in the availability its config says, and keep every
 * availability change in the config, so a restart resumes it.
 */
import { join } from "node:path";
import type { Availability, AvailabilityRules, NodeDriver } from "../../jobs/index.ts";
import { configPath, heldText, loadConfig, lockHolder, saveConfig } from "../files/index.ts";
import { type NodeStore, openNodeStore, type StoreMemory } from "../store/index.ts";
import { NodeRequestError, NodeStartError } from "./errors.ts";

/** LevelDB's code for a store whose lock another process holds. */
export const levelLockedCode = "LEVEL_LOCKED";

function lockedByOther(error: unknown): boolean {
  for (let cause: unknown = error; cause instanceof Error; cause = cause.cause)
    if ((cause as { code?: unknown }).code === levelLockedCode) return true;
  return false;
}

/**
 * The node's store, with LevelDB's memory sizes when given (else its defaults); a store another process holds fails
 * naming that process, when its lock file says which.
 */
export async function openStoreOf(dataDir: string, memory?: StoreMemory): Promise<NodeStore> {
  const path = join(dataDir, "store");
  try {
    return await openNodeStore(path, memory);
  } catch (error) {
    if (!lockedByOther(error)) throw error;
    const holder = await lockHolder(dataDir);
    if (holder !== null) throw new NodeStartError(heldText(dataDir, holder));
    throw new NodeStartError(
      `the store at ${path} is held by another process, which left no lock file naming it (\`fuser ${join(path, "LOCK")}\` shows its pid): expected no other process on it; stop that one first`,
    );
  }
}

/**
 * Starts the worker in the availability the config says (where `cimesh availability` keeps it): the stored worker
 * carries on under today's config, its availability too. Asked before the driver starts, so its first offers follow it.
 */
export function resumeAvailability(driver: NodeDriver<Uint8Array>, availability: Availability): void {
  const worker = driver.workerState();
  if (worker !== null && worker.availability !== availability)
    driver.toWorker({ kind: "set-availability", availability });
}

/** Writes the volunteer's availability into the config (its comments kept), so the next start resumes it. */
export async function keepAvailability(dataDir: string, availability: Availability): Promise<void> {
  try {
    const config = await loadConfig(dataDir);
    if (config.worker.availability === availability) return;
    await saveConfig(dataDir, { ...config, worker: { ...config.worker, availability } });
  } catch (error) {
    throw new NodeRequestError(
      500,
      `availability: ${availability} is in force, but ${configPath(dataDir)} could not keep it for the next start (${(error as Error).message}); fix the file, then set it again`,
    );
  }
}

/** Writes the worker's time windows and load ceiling into the config (its comments kept), so the next start keeps them. */
export async function keepRules(dataDir: string, rules: AvailabilityRules): Promise<void> {
  try {
    const config = await loadConfig(dataDir);
    const copied = {
      windows: rules.windows.map((window) => ({ ...window, days: [...window.days] })),
      maxLoadAverage: rules.maxLoadAverage,
    };
    await saveConfig(dataDir, { ...config, worker: { ...config.worker, rules: copied } });
  } catch (error) {
    throw new NodeRequestError(
      500,
      `rules: the new rules are in force, but ${configPath(dataDir)} could not keep them for the next start (${(error as Error).message}); fix the file, then set them again`,
    );
  }
}

/**
 * Forgets a trusted project in the config, as `cimesh trust remove` does (and drops it from masters): the node's
 * trust is read at its start, so the running node serves the project until it restarts.
 */
export async function forgetTrust(dataDir: string, project: string): Promise<{ wasMaster: boolean }> {
  const config = await loadConfig(dataDir);
  if (!config.trust.some((entry) => entry.project === project))
    throw new NodeRequestError(
      404,
      `project: expected a project trusted in ${configPath(dataDir)} (${config.trust.map((entry) => entry.project).join(", ") || "none"}), got ${project}`,
    );
  const wasMaster = config.masters.includes(project);
  await saveConfig(dataDir, {
    ...config,
    trust: config.trust.filter((entry) => entry.project !== project),
    masters: config.masters.filter((item) => item !== project),
  });
  return { wasMaster };
}
