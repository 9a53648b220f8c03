// A first-in first-out queue with O(1) push and shift. Array#shift copies
// the whole array once it is large (V8 cannot trim arrays in large-object
// space): taking 100,000 jobs one by one from a plain array costs over a
// second of CPU, 200,000 several (docs/queue-scale.md). Here the head only
// moves, and the array is compacted once the consumed half outweighs the rest.

/** Consumed slots kept before compaction is considered. */
const COMPACT_AFTER = 1024;

export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  /** The oldest item, removed; undefined when empty. */
  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined; // no reference kept to what left
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head >= COMPACT_AFTER && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}
