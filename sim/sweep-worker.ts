/**
 * A sweep's worker thread: runs the scenarios it is handed, one at a time,
 * with simulate() exactly as a single run does, and hands back each run's key
 * figures (and, for a run that broke an invariant, its whole metrics).
 */
import { parentPort } from "node:worker_threads";
import { runSweepTask, type SweepTask } from "./sweep-task.ts";

const port = parentPort;
if (port === null) throw new Error("sim/sweep-worker.ts: expected to run as a worker thread");
port.on("message", (task: SweepTask) => {
  port.postMessage(runSweepTask(task));
});
