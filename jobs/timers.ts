/**
 * A min-heap of wake-ups, [atMs, key], kept in plain arrays so it serialises
 * with the machine's state. Entries are never removed early: when one comes
 * due, the machine re-reads what it keys and ignores it if nothing is due, so
 * rescheduling is a push and nothing needs a decrease-key.
 */
export type TimerEntry = [atMs: number, key: string];

export function pushTimer(heap: TimerEntry[], atMs: number, key: string): void {
  heap.push([atMs, key]);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if ((heap[parent] as TimerEntry)[0] <= atMs) break;
    heap[i] = heap[parent] as TimerEntry;
    i = parent;
  }
  heap[i] = [atMs, key];
}

export function peekTimer(heap: readonly TimerEntry[]): number | null {
  return heap.length === 0 ? null : (heap[0] as TimerEntry)[0];
}

export function popTimer(heap: TimerEntry[]): TimerEntry | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (top === undefined || last === undefined || heap.length === 0) return top;
  let i = 0;
  for (;;) {
    const left = 2 * i + 1;
    const right = left + 1;
    let smallest = -1;
    let best = last[0];
    if (left < heap.length && (heap[left] as TimerEntry)[0] < best) {
      smallest = left;
      best = (heap[left] as TimerEntry)[0];
    }
    if (right < heap.length && (heap[right] as TimerEntry)[0] < best) smallest = right;
    if (smallest < 0) break;
    heap[i] = heap[smallest] as TimerEntry;
    i = smallest;
  }
  heap[i] = last;
  return top;
}
