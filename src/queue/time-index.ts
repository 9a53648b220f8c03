// A time index: items keyed by the instant they next need attention, the
// earliest always at hand. It is what lets the scheduler sleep through a
// queue of 100,000 deferred messages: one timer for the earliest, and a
// wake-up that looks only at what is due (O(due · log n)), never at the
// whole queue (docs/architecture.md: nothing O(queue) on a timer).
//
// An indexed binary min-heap, as OpenSMTPD's scheduler_ramqueue keeps its
// retry queue ordered by time: every item knows its place in the heap, so
// moving it to another time (a retry now, a deferral) or taking it out (a
// hold, a delete) costs O(log n) with no stale copies left behind. Ties go
// first-in first-out, so messages due at the same instant are tried in the
// order they were scheduled.

interface Slot<T> {
  item: T;
  at: number;
  /** Order of scheduling: breaks ties between equal times. */
  seq: number;
  /** Position in the heap array. */
  pos: number;
}

export class TimeIndex<T> {
  readonly #heap: Slot<T>[] = [];
  readonly #slots = new Map<T, Slot<T>>();
  #seq = 0;

  get size(): number {
    return this.#heap.length;
  }

  has(item: T): boolean {
    return this.#slots.has(item);
  }

  /** When `item` is due, or undefined when it is not in the index. */
  timeOf(item: T): number | undefined {
    return this.#slots.get(item)?.at;
  }

  /** Put `item` in the index at `at`, or move it there if it is already in. */
  set(item: T, at: number): void {
    const slot = this.#slots.get(item);
    if (!slot) {
      const s: Slot<T> = { item, at, seq: this.#seq++, pos: this.#heap.length };
      this.#slots.set(item, s);
      this.#heap.push(s);
      this.#up(s.pos);
      return;
    }
    const earlier = at < slot.at;
    slot.at = at;
    // Rescheduled: it queues behind whatever is already due at that instant.
    slot.seq = this.#seq++;
    if (earlier) this.#up(slot.pos);
    else this.#down(slot.pos);
  }

  /** Take `item` out; false when it was not in. */
  delete(item: T): boolean {
    const slot = this.#slots.get(item);
    if (!slot) return false;
    this.#slots.delete(item);
    const last = this.#heap.pop()!;
    if (last !== slot) {
      // The last slot fills the hole, then finds its place either way.
      this.#heap[slot.pos] = last;
      last.pos = slot.pos;
      this.#down(last.pos);
      this.#up(last.pos);
    }
    return true;
  }

  /** The earliest time in the index; Infinity when empty. */
  peekTime(): number {
    return this.#heap[0]?.at ?? Infinity;
  }

  /** The earliest item (first scheduled among ties), left in place. */
  peek(): T | undefined {
    return this.#heap[0]?.item;
  }

  /** Remove and return the earliest item if it is due at `now` (at ≤ now); undefined otherwise. */
  popDue(now: number): T | undefined {
    const top = this.#heap[0];
    if (!top || top.at > now) return undefined;
    this.delete(top.item);
    return top.item;
  }

  clear(): void {
    this.#heap.length = 0;
    this.#slots.clear();
  }

  #less(a: Slot<T>, b: Slot<T>): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #up(pos: number): void {
    const heap = this.#heap;
    const slot = heap[pos]!;
    while (pos > 0) {
      const parentPos = (pos - 1) >> 1;
      const parent = heap[parentPos]!;
      if (!this.#less(slot, parent)) break;
      heap[pos] = parent;
      parent.pos = pos;
      pos = parentPos;
    }
    heap[pos] = slot;
    slot.pos = pos;
  }

  #down(pos: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const slot = heap[pos]!;
    for (;;) {
      const left = 2 * pos + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && this.#less(heap[right]!, heap[left]!) ? right : left;
      const c = heap[child]!;
      if (!this.#less(c, slot)) break;
      heap[pos] = c;
      c.pos = pos;
      pos = child;
    }
    heap[pos] = slot;
    slot.pos = pos;
  }
}
