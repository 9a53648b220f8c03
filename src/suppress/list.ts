// The suppression list: addresses outbound mail is not sent to, whatever
// its source (docs/suppressions.md). The scheduler asks before every remote
// delivery attempt, so the answer comes from memory: a Map of every entry,
// loaded at start. The store (src/store/suppressions.ts) is the truth:
//
// - changes through this object (the API, automatic additions) apply to
//   the Map at once and to the store synchronously (the API) or within one
//   turn of the event loop (automatic additions, batched: one transaction
//   for a burst of hard bounces);
// - changes by another process (`tern` commands, sqlite3) are noticed by a
//   counter the store's triggers bump: read at most once per REFRESH_MS, on
//   a lookup, and the whole table is read again when it moved.
//
// Addresses match without regard to case, local part included. RFC 5321
// §2.4 lets the receiving host treat local parts as case-sensitive, but the
// mailbox providers do not, and the two mistakes are not equal: missing
// "John@x" because "john@x" bounced sends mail to an address that bounced
// or complained; folding them suppresses at most a case-distinct mailbox
// that does not exist in practice. Plus-tags are not folded: whether
// "a+news@x" is "a@x" is the receiving domain's business.

import type { SuppressionRecord, SuppressionSource, SuppressionStore } from '../store/suppressions.ts';
import type { Logger } from '../util/log.ts';

/** What a lookup tells (the scheduler's reply and event, POST /v1/messages' status). */
export interface Suppression {
  reason: string;
  source: SuppressionSource;
  /** Epoch milliseconds. */
  createdAt: number;
}

/** Longest time a change made by another process goes unnoticed. */
export const REFRESH_MS = 1000;

export interface SuppressionListOptions {
  log: Logger;
  now?: () => number;
  refreshMs?: number;
  /**
   * A shared store's announcements (Store.onChange: PostgreSQL LISTEN):
   * with them the counter is read only after an announcement, or at the
   * latest every WATCHED_REFRESH_MS in case one was missed, instead of every
   * refreshMs (a round trip to the database each time).
   */
  watch?: ((fn: () => void) => () => void) | undefined;
}

/** With announcements, the longest a missed one can go unnoticed. */
export const WATCHED_REFRESH_MS = 30_000;

export class SuppressionList {
  readonly #store: SuppressionStore;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #refreshMs: number;
  #entries = new Map<string, Suppression>();
  #checkedAt: number;
  /** Automatic additions not written yet (in the Map already). */
  #pending = new Map<string, SuppressionRecord>();
  #flushTimer: NodeJS.Immediate | null = null;
  /** An announcement came: the next lookup reads the counter whatever the time. */
  #announced = false;
  readonly #unwatch: (() => void) | undefined;

  constructor(store: SuppressionStore, opts: SuppressionListOptions) {
    this.#store = store;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.#refreshMs = opts.watch ? WATCHED_REFRESH_MS : (opts.refreshMs ?? REFRESH_MS);
    this.#checkedAt = this.#now();
    this.#unwatch = opts.watch?.(() => (this.#announced = true));
    this.#load();
  }

  /**
   * Whether `address` is suppressed. Synchronous and cheap: a Map lookup
   * (none at all while the list is empty), plus a one-row read of the
   * store's counter at most once per REFRESH_MS.
   */
  lookup(address: string): Suppression | null {
    this.#refresh();
    if (this.#entries.size === 0) return null;
    return this.#entries.get(address.toLowerCase()) ?? null;
  }

  /** Entries on the list (the `tern_suppressions` gauge). */
  get size(): number {
    this.#refresh();
    return this.#entries.size;
  }

  /** The whole entry (with its detail), from the store. */
  get(address: string): SuppressionRecord | null {
    this.flush();
    return this.#store.get(address.toLowerCase());
  }

  /** Sorted by address, after `after` (exclusive). */
  page(after: string, limit: number): SuppressionRecord[] {
    this.flush();
    return this.#store.page(after.toLowerCase(), limit);
  }

  /**
   * Adds or replaces an entry (the API's PUT), written before it returns;
   * `created` when the address was not on the list. A replaced entry keeps
   * its createdAt: the address has been suppressed since then.
   */
  put(address: string, reason: string, source: SuppressionSource, detail: string | null = null): { record: SuppressionRecord; created: boolean } {
    const key = address.toLowerCase();
    const since = this.#pending.get(key)?.createdAt ?? this.#store.get(key)?.createdAt ?? this.#now();
    const record: SuppressionRecord = { address: key, reason, source, detail, createdAt: since };
    // A pending automatic addition of the same address loses to this one (written first, it would only be ignored).
    this.#pending.delete(record.address);
    const created = this.#store.put(record);
    this.#entries.set(record.address, entryOf(record));
    return { record, created };
  }

  /** Takes an address off the list (the API's DELETE); false when it was not on it. */
  remove(address: string): boolean {
    const key = address.toLowerCase();
    const pending = this.#pending.delete(key);
    const removed = this.#store.delete(key);
    this.#entries.delete(key);
    return removed || pending;
  }

  /**
   * An automatic addition (a hard bounce, a complaint): in force at once,
   * written with the others of this turn. An address already on the list
   * keeps its entry (the first reason stands, and a manual one is never
   * overwritten by a machine).
   */
  suppress(record: SuppressionRecord): void {
    const key = record.address.toLowerCase();
    if (this.#entries.has(key)) return;
    const r = { ...record, address: key };
    this.#entries.set(key, entryOf(r));
    this.#pending.set(key, r);
    this.#flushTimer ??= setImmediate(() => this.flush());
  }

  /** Writes pending automatic additions (next turn of the event loop, before reads, at close). */
  flush(): void {
    if (this.#flushTimer) clearImmediate(this.#flushTimer);
    this.#flushTimer = null;
    if (this.#pending.size === 0) return;
    const batch = [...this.#pending.values()];
    this.#pending.clear();
    try {
      this.#store.addMissing(batch);
    } catch (e) {
      // Still in force in memory until the next reload; a restart forgets them, as the log says.
      this.#log.error('could not write suppressions', { addresses: batch.length, error: e });
    }
  }

  close(): void {
    this.#unwatch?.();
    this.flush();
  }

  #refresh(): void {
    const now = this.#now();
    if (!this.#announced && now - this.#checkedAt < this.#refreshMs) return;
    this.#announced = false;
    this.#checkedAt = now;
    try {
      if (this.#store.changedElsewhere()) this.#load();
    } catch (e) {
      // A busy or broken database must not stop deliveries: keep what we have and look again later.
      this.#log.error('could not read the suppression list', { error: e });
    }
  }

  /** Reads the whole table; additions not written yet stay in force. */
  #load(): void {
    const next = new Map<string, Suppression>();
    this.#store.each((r) => next.set(r.address, entryOf(r)));
    for (const [key, r] of this.#pending) if (!next.has(key)) next.set(key, entryOf(r));
    this.#entries = next;
  }
}

function entryOf(r: SuppressionRecord): Suppression {
  return { reason: r.reason, source: r.source, createdAt: r.createdAt };
}
