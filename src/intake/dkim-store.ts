// DKIM signing keys kept in a shared store (issue 17: with `store.postgres`
// every node signs with the same keys, and `tern dkim keygen` on any node
// reaches all of them). Keys are read whole into memory and grouped by
// domain: signing asks per message and must not wait on the database. The
// copy is dropped when the store announces a change (LISTEN/NOTIFY) and at
// the latest after `maxAgeMs`, in case an announcement was lost.

import type { DkimKey, DkimKeySource } from './dkim.ts';

/** What a shared store offers for keys (src/store/pg/dkim-keys.ts). */
export interface DkimKeyTable {
  /** Every key, ordered by domain then selector. */
  list(): DkimKey[];
  /** Adds a key; false when the domain already has one with that selector (never replaced). */
  add(key: DkimKey, createdAt: number): boolean;
  onChange?(fn: () => void): void;
}

export class StoreDkimKeys implements DkimKeySource {
  readonly #table: DkimKeyTable;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  #byDomain: Map<string, DkimKey[]> | null = null;
  #loadedAt = 0;

  constructor(table: DkimKeyTable, opts: { maxAgeMs?: number; now?: () => number } = {}) {
    this.#table = table;
    this.#maxAgeMs = opts.maxAgeMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
    table.onChange?.(() => (this.#byDomain = null));
  }

  forDomain(domain: string): DkimKey[] {
    return this.#load().get(domain.toLowerCase()) ?? [];
  }

  all(): DkimKey[] {
    return [...this.#load().values()].flat();
  }

  #load(): Map<string, DkimKey[]> {
    const now = this.#now();
    if (this.#byDomain && now - this.#loadedAt < this.#maxAgeMs) return this.#byDomain;
    const map = new Map<string, DkimKey[]>();
    for (const k of this.#table.list()) {
      const list = map.get(k.domain) ?? [];
      list.push(k);
      map.set(k.domain, list);
    }
    this.#byDomain = map;
    this.#loadedAt = now;
    return map;
  }
}
