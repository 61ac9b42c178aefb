/**
 * The virtual clock's event queue: a binary min-heap ordered by time, then by
 * insertion order, so events at the same instant run in the order they were
 * scheduled and a run is reproducible.
 */

/** Virtual time 0 is this instant: a midnight UTC (2027-01-15), so local hours of the simulated day are easy to read. */
export const simEpochMs = 1_799_971_200_000;

export interface SimEvent {
  readonly atMs: number;
  /** Set by the queue: ties at the same instant run in scheduling order. */
  order: number;
  run(): void;
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
}

export class EventQueue {
  private readonly heap: SimEvent[] = [];
  private order = 0;

  get size(): number {
    return this.heap.length;
  }

  peekMs(): number | null {
    const top = this.heap[0];
    return top === undefined ? null : top.atMs;
  }

  push(atMs: number, run: () => void): void {
    this.pushEvent({ atMs, order: 0, run });
  }

  /** Schedules an event object (one allocation for the hot paths, where a closure would be a second). */
  pushEvent(event: SimEvent): void {
    event.order = this.order++;
    const heap = this.heap;
    let i = heap.length;
    heap.push(event);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const above = heap[parent] as SimEvent;
      if (!before(event, above)) break;
      heap[i] = above;
      i = parent;
    }
    heap[i] = event;
  }

  pop(): SimEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    const n = heap.length;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      let child = left;
      if (right < n && before(heap[right] as SimEvent, heap[left] as SimEvent)) child = right;
      if (!before(heap[child] as SimEvent, last)) break;
      heap[i] = heap[child] as SimEvent;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}
