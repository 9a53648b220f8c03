// Counts several nodes add up (issue 17: per-user sending rate, per-client
// rates, failed logins hold across nodes). A count per decision would cost a
// round trip to the shared store per message; instead each node counts in
// memory, as it always did, and once a SYNC_MS it sends what it added (one
// statement) and reads what the other nodes added for the keys it has been
// asked about (one statement per window length). A limit then holds across
// nodes up to what the others did in the last two syncs (one to send, one to
// read, on timers of their own): the overshoot is bounded by
// (nodes − 1) × their rate × 2 × SYNC_MS, and a key a node meets for the
// first time is judged on its own counts until then.
//
// Counts go in minute buckets per node (so a node never counts its own
// twice), and a window reads the buckets that overlap it. Only the
// embedded store's single node needs none of this: without a shared table
// the users of this class keep their purely local counts.

import type { Logger } from '../util/log.ts';

/** How often counts are exchanged with the other nodes. */
export const SYNC_MS = 1000;
/** Bucket width: windows are read in whole buckets (a window of W ms reads W/BUCKET_MS + 1 buckets). */
export const BUCKET_MS = 60_000;
/** Keys followed at most (those asked about within their window); beyond it the least recently asked go. */
const MAX_TRACKED = 50_000;

/** The shared table (src/store/pg/shared-counts.ts). */
export interface SharedCountTable {
  /** Adds `n` (may be negative) to each (key, bucket) of `node`. */
  add(node: string, rows: { key: string; bucket: number; n: number }[]): void;
  /** The sums of every other node's counts for `keys` in buckets ≥ fromBucket. */
  others(node: string, keys: string[], fromBucket: number): Map<string, number>;
  /** Forgets every node's counts of `keys` (a successful login clears its account's failures). */
  reset(keys: string[]): void;
  /** Deletes buckets before `bucket`. */
  expire(bucket: number): void;
}

export class SharedCounts {
  readonly #table: SharedCountTable;
  readonly #node: string;
  readonly #now: () => number;
  readonly #log: Logger;
  /** key → bucket → n, not sent yet. */
  #pending = new Map<string, Map<number, number>>();
  #resets = new Set<string>();
  /** key → { window, last asked, others' sum } */
  readonly #tracked = new Map<string, { windowMs: number; asked: number; others: number }>();
  readonly #timer: NodeJS.Timeout;
  #lastExpire = 0;

  constructor(table: SharedCountTable, opts: { node: string; log: Logger; now?: () => number; syncMs?: number }) {
    this.#table = table;
    this.#node = opts.node;
    this.#now = opts.now ?? Date.now;
    this.#log = opts.log;
    this.#timer = setInterval(() => this.sync(), opts.syncMs ?? SYNC_MS);
    this.#timer.unref();
  }

  /** Counts `n` more (or fewer) for `key` on this node. */
  add(key: string, n = 1): void {
    const bucket = Math.floor(this.#now() / BUCKET_MS);
    let b = this.#pending.get(key);
    if (!b) this.#pending.set(key, (b = new Map()));
    b.set(bucket, (b.get(bucket) ?? 0) + n);
  }

  /** What the other nodes counted for `key` within the last `windowMs`, as of the last sync; follows the key from now on. */
  others(key: string, windowMs: number): number {
    const t = this.#tracked.get(key);
    const now = this.#now();
    if (t) {
      t.asked = now;
      t.windowMs = Math.max(t.windowMs, windowMs);
      return t.others;
    }
    if (this.#tracked.size >= MAX_TRACKED) this.#tracked.delete(this.#tracked.keys().next().value!);
    this.#tracked.set(key, { windowMs, asked: now, others: 0 });
    return 0;
  }

  /** Forgets `key` on every node (at the next sync; this node's own count is the caller's to clear). */
  reset(key: string): void {
    this.#pending.delete(key);
    this.#resets.add(key);
    const t = this.#tracked.get(key);
    if (t) t.others = 0;
  }

  /** Sends what was added and reads the others' sums. Never throws: a store that is away only makes counts local for a while. */
  sync(): void {
    const now = this.#now();
    try {
      if (this.#resets.size > 0) {
        this.#table.reset([...this.#resets]);
        this.#resets.clear();
      }
      if (this.#pending.size > 0) {
        const rows: { key: string; bucket: number; n: number }[] = [];
        for (const [key, b] of this.#pending) for (const [bucket, n] of b) if (n !== 0) rows.push({ key, bucket, n });
        this.#table.add(this.#node, rows);
        this.#pending.clear();
      }
      // Keys not asked about within their window are dropped; the rest are read, grouped by window length.
      const byWindow = new Map<number, string[]>();
      for (const [key, t] of this.#tracked) {
        if (now - t.asked > t.windowMs) {
          this.#tracked.delete(key);
          continue;
        }
        const list = byWindow.get(t.windowMs) ?? [];
        list.push(key);
        byWindow.set(t.windowMs, list);
      }
      for (const [windowMs, keys] of byWindow) {
        const sums = this.#table.others(this.#node, keys, Math.floor((now - windowMs) / BUCKET_MS));
        for (const key of keys) this.#tracked.get(key)!.others = sums.get(key) ?? 0;
      }
      if (now - this.#lastExpire > 10 * BUCKET_MS) {
        this.#lastExpire = now;
        // The longest window in use is a day at most (an hour today): older buckets count for nothing.
        this.#table.expire(Math.floor((now - 86_400_000) / BUCKET_MS));
      }
    } catch (e) {
      this.#log.warn('shared counts not exchanged (limits are per node until the store is back)', { error: String(e) });
    }
  }

  close(): void {
    clearInterval(this.#timer);
    this.sync();
  }
}
