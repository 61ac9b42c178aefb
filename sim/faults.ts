/**
 * The scenario's faults: churn (workers joining, leaving, crashing with or
 * without their store), night exoduses, network partitions and master crashes.
 * Every fault is scheduled on the world's clock at set-up; what each draws
 * from the generator, it draws when it happens.
 */
import type { NodeCounts } from "./metrics.ts";
import { hourMs, type Population } from "./population.ts";
import { exponential, pick, type Rng } from "./rng.ts";
import type { Scenario } from "./scenario.ts";
import { SimStore } from "./store.ts";
import type { Workload } from "./workload.ts";
import type { SimNode, SimWorld } from "./world.ts";

/** Each partition cuts the links across it at its start and mends them when it heals; the mesh is repaired after both. */
export function schedulePartitions(world: SimWorld, partitions: Scenario["partitions"]): void {
  partitions.forEach((partition, index) => {
    world.at(partition.at, () => {
      world.network.split(index);
      world.gossip.cutUnreachable();
      world.scheduleRepair();
    });
    world.at(partition.heal, () => {
      world.network.heal(index);
      world.gossip.reconnect();
      world.scheduleRepair();
    });
  });
}

export class Faults {
  private readonly scenario: Scenario;
  private readonly rng: Rng;
  private readonly world: SimWorld;
  private readonly counts: NodeCounts;
  private readonly population: Population;
  private readonly workload: Workload;

  constructor(
    scenario: Scenario,
    rng: Rng,
    world: SimWorld,
    counts: NodeCounts,
    population: Population,
    workload: Workload,
  ) {
    this.scenario = scenario;
    this.rng = rng;
    this.world = world;
    this.counts = counts;
    this.population = population;
    this.workload = workload;
  }

  /** Schedules every fault: churn, exoduses, partitions, master crashes (this order is that of their draws and ties). */
  schedule(): void {
    this.scheduleJoins();
    this.scheduleLeaves();
    this.scheduleCrashes();
    this.scheduleExodus();
    schedulePartitions(this.world, this.scenario.partitions);
    this.scheduleMasterCrashes();
  }

  /** Joins: a Poisson process over the whole mesh; a newcomer is a liar with the scenario's liar fraction. */
  private scheduleJoins(): void {
    const c = this.scenario.churn;
    const initial = this.scenario.workers.count;
    if (c.joinPerHour <= 0 || initial <= 0) return;
    const mean = hourMs / (c.joinPerHour * initial);
    const join = () => {
      if (this.world.nowMs >= this.scenario.duration) return;
      const node = this.population.createWorkerNode(
        this.scenario.actors.liars > 0 && this.rng() < this.scenario.actors.liars ? "liar" : "honest",
        -1,
      );
      this.counts.joined++;
      this.world.bringOnline(node);
      this.world.at(this.world.nowMs + exponential(this.rng, mean), join);
    };
    this.world.at(exponential(this.rng, mean), join);
  }

  /** Leaves: the volunteer goes offline for good, telling its machine first. */
  private scheduleLeaves(): void {
    this.perWorker(this.scenario.churn.leavePerHour, (node) => {
      this.counts.left++;
      node.driver?.toWorker({ kind: "set-availability", availability: "offline" });
      this.world.takeOffline(node);
    });
  }

  /** Crashes: the process dies, with or without its store, and restarts after `restartAfter` (within the duration). */
  private scheduleCrashes(): void {
    const c = this.scenario.churn;
    const duration = this.scenario.duration;
    this.perWorker(c.crashPerHour, (node) => {
      const losesStore = this.rng() < c.crashLosesStore;
      this.counts.crashed++;
      if (losesStore) this.counts.crashedLosingStore++;
      this.world.takeOffline(node);
      const back = Math.min(this.world.nowMs + c.restartAfter, duration);
      this.world.at(back, () => {
        if (node.online) return;
        // A lost store is a new volunteer under the same key: its sequence starts again from the clock's floor.
        if (losesStore) node.store = new SimStore();
        this.world.bringOnline(node);
      });
    });
  }

  /** A per-worker rate, drawn as one mesh-wide process that picks a worker and acts on it if it is online. */
  private perWorker(rate: number, act: (node: SimNode) => void): void {
    const initial = this.scenario.workers.count;
    const duration = this.scenario.duration;
    if (rate <= 0 || initial <= 0) return;
    const mean = hourMs / (rate * initial);
    const tick = () => {
      if (this.world.nowMs >= duration) return;
      const candidates = this.world.nodes.filter((n) => n.role === "worker").map((n) => n.index);
      const node = this.world.nodes[candidates[pick(this.rng, candidates.length)] as number] as SimNode;
      if (node.online) act(node);
      this.world.at(this.world.nowMs + exponential(this.rng, mean), tick);
    };
    this.world.at(exponential(this.rng, mean), tick);
  }

  /** Each exodus: every online worker leaves with its fraction (its process kept), and those come back together. */
  private scheduleExodus(): void {
    this.scenario.exodus.forEach((exodus) => {
      const gone: SimNode[] = [];
      this.world.at(exodus.at, () => {
        for (const node of this.world.nodes) {
          if (node.role !== "worker" || !node.online || this.rng() >= exodus.fraction) continue;
          gone.push(node);
          node.driver?.toWorker({ kind: "set-availability", availability: "offline" });
          this.world.takeOffline(node, true);
        }
        this.counts.exodusDepartures += gone.length;
      });
      this.world.at(exodus.back, () => {
        for (const node of gone) {
          if (node.online) continue;
          this.world.bringOnline(node);
          node.driver?.toWorker({ kind: "set-availability", availability: node.availability });
        }
      });
    });
  }

  private scheduleMasterCrashes(): void {
    this.scenario.masterCrashes.forEach((crash) => {
      const node = this.world.nodes[this.population.masterOf(crash.project)] as SimNode;
      this.world.at(crash.at, () => {
        if (!node.online) return;
        this.counts.masterCrashes++;
        this.world.takeOffline(node);
      });
      this.world.at(crash.back, () => {
        if (node.online) return;
        // The master kept its store: a new process carries on from it (restoreMaster, then the restart input).
        this.world.bringOnline(node);
        this.workload.deliverPending(node.index);
      });
    });
  }
}
