/**
 * Each simulated node's process: its driver (jobs/driver.ts), the shell core
 * a real node runs, booted from the node's store on the simulator's ports
 * (the virtual clock, the seeded generator, the wires, the carrier, the
 * store, the observer), and the runs it starts in the simulated sandbox.
 */
import { type DriverPorts, type ExecutionRequest, NodeDriver, type StampedMessage } from "../jobs/index.ts";
import { simEpochMs } from "./queue.ts";
import type { Wire } from "./wire.ts";
import type { SimNode, SimRun, SimWorld } from "./world.ts";

export class NodeHost {
  private readonly world: SimWorld;
  private executionToken = 0;

  constructor(world: SimWorld) {
    this.world = world;
  }

  /** A node's process starts (or starts again) from its store: a new driver, then the restart input. */
  boot(node: SimNode): void {
    const made = this.world.setup.driverSetup(node);
    const driver = new NodeDriver<Wire>({
      self: node.key,
      ports: this.portsFor(node),
      trust: made.trust,
      masters: made.masters,
      worker: made.worker,
      stored: node.store.load(),
    });
    node.driver = driver;
    driver.start();
  }

  /** What a simulated node's driver does in the world. */
  private portsFor(node: SimNode): DriverPorts<Wire> {
    const world = this.world;
    const observer = world.observer;
    return {
      nowMs: () => world.absMs(),
      rng: world.rng,
      seal: (message) => world.wires.seal(node.index, message),
      open: (wire, nowMs) => world.wires.open(wire, nowMs),
      publish: (topic, wire, message) => this.publishFromNode(node, topic, wire, message),
      send: (to, wire, message) => {
        const index = world.indexOfKey(to);
        observer.sent(message, node.index, index ?? -1);
        if (index !== undefined) world.carrier.send(node.index, index, wire);
      },
      wakeAt: (atMs) => {
        const driver = node.driver;
        world.at(atMs - simEpochMs, () => {
          if (node.online && node.driver === driver && driver !== null) driver.wake();
        });
      },
      startRun: (run) => this.execute(node, run),
      killRun: (runId) => world.endRun(node, runId),
      persist: (batch) => node.store.persist(batch),
      log: (event, fields) => {
        observer.logged(event, fields);
        if (event === "job-ended" && node.role === "master") this.reportEnd(node, String(fields.jobId));
      },
      admitted: (channel, admission, wire) => {
        observer.admitted(node.index, node.store, admission, wire);
        world.setup.onAdmitted?.(node, channel, admission, wire);
      },
    };
  }

  /** Gossip from a node: the observer sees it (a master's verdicts and cancels), then the network carries it. */
  private publishFromNode(node: SimNode, topic: string, wire: Wire, message: StampedMessage): void {
    const world = this.world;
    const topicIndex = world.setup.topicOf(topic);
    if (topicIndex === undefined) return;
    if (node.role === "master") world.observer.published(node.index, message);
    else world.observer.carried(message);
    world.carrier.publish(node.index, topicIndex, wire);
  }

  /**
   * A master logged that a job ended: what it tells the job's submitter (as a node's control API shows it) is the
   * record it persisted just before, its status and the digest decided for each shard.
   */
  private reportEnd(node: SimNode, jobId: string): void {
    const record = node.store.job(this.world.setup.projectOf(node.project), jobId);
    if (record === undefined || record.status === "open") return;
    this.world.observer.reportedEnd(node.index, {
      jobId,
      status: record.status,
      acceptedDigests: record.shards.map((shard) => shard.decidedDigest),
    });
  }

  /**
   * A run in the simulated sandbox: what the world's `runOf` says, reported after its duration unless killed, or
   * earlier with another report when the run's `started` hook asks (a colluder lying once a partner joins it).
   */
  private execute(node: SimNode, run: ExecutionRequest): void {
    const world = this.world;
    const outcome = world.setup.runOf(node, run);
    if (outcome === null) return;
    node.runsStarted++;
    world.observer.started(run.jobId);
    const token = ++this.executionToken;
    node.executing.set(run.runId, { token, startMs: world.nowMs });
    const driver = node.driver;
    const finish = (afterMs: number, report: Omit<SimRun, "started">) =>
      world.at(world.nowMs + afterMs, () => {
        if (!node.online || node.driver !== driver || driver === null || node.executing.get(run.runId)?.token !== token)
          return;
        world.endRun(node, run.runId);
        driver.runFinished({
          runId: run.runId,
          outcome: report.outcome,
          exitCode: report.outcome === "succeeded" ? 0 : 1,
          outputsDigest: report.outputsDigest,
          logDigest: null,
          summary: report.outcome,
          durationMs: report.durationMs,
        });
      });
    finish(outcome.durationMs, outcome);
    outcome.started?.((afterMs, report) => finish(afterMs, report));
  }
}
