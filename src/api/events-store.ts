// The durable subscriber of the event stream: every event, of mail from
// every source, goes into the store (a batch per turn of the event loop,
// one transaction each: BatchingSubscriber), with its message's envelope
// sender so the API can scope reads by a key's send-as. Retention deletes
// old events a bounded batch at a time: the timer never does work in
// proportion to the table, and a large backlog is worked off batch by batch
// with the event loop free between them.

import { BatchingSubscriber, type EventStream } from '../events/events.ts';
import type { EventStore, StoredEvent } from '../store/store.ts';
import type { Logger } from '../util/log.ts';
import type { Envelope } from '../spool/types.ts';
import { deleteInBatches } from '../util/batches.ts';

/** Events deleted per statement: a few milliseconds of SQLite work. */
export const RETENTION_BATCH = 1000;
/**
 * Events are written at most this long after they happen: one transaction
 * (and one WAL commit) for all of them, instead of one per event-loop turn.
 * The cost: a crash can lose the last this-many milliseconds of events
 * (never mail: the spool is the truth), and readers see an event this late.
 */
export const EVENTS_FLUSH_MS = 100;
/** …or as soon as this many wait. */
export const EVENTS_MAX_BATCH = 2000;
/** How often retention looks for old events. */
export const RETENTION_INTERVAL_MS = 60_000;
/**
 * Events kept in memory while the store cannot take them (a shared store
 * that is unreachable, a full disk), written with the next batch that
 * succeeds. Beyond this the oldest are dropped, and counted in the log: the
 * mail itself never depends on them (the spool is the truth).
 */
export const MAX_UNWRITTEN = 200_000;
/** How soon a failed write is tried again when no new event comes to carry it. */
export const RETRY_WRITE_MS = 1000;

export class EventRecorder {
  readonly #batcher: BatchingSubscriber;
  readonly #unsubscribe: () => void;
  /** Each event's message envelope (shared, not copied), for what the store keeps of the message. */
  readonly #envelopes = new WeakMap<object, Envelope>();
  readonly #store: EventStore;
  readonly #retention: number;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #expiring = false;
  #closed = false;
  #alsoWrite: ((batch: StoredEvent[]) => void)[] = [];
  /** Events of failed writes, oldest first, tried again with the next write. */
  #unwritten: StoredEvent[] = [];
  #dropped = 0;
  #retry: NodeJS.Timeout | undefined;
  /** The write under way (only with commitAsync; a synchronous write is over when it returns). */
  #inFlight: Promise<void> | null = null;
  readonly #afterWrite: ((batch: StoredEvent[]) => void)[] = [];

  /** `enabled: false` (events.enabled) subscribes to nothing: no event is stored, so none is announced either. */
  constructor(o: { events: EventStream; store: EventStore; retentionMs: number; log: Logger; flushMs?: number; enabled?: boolean }) {
    this.#store = o.store;
    this.#retention = o.retentionMs;
    this.#log = o.log;
    this.#batcher = new BatchingSubscriber(
      (batch) =>
        this.#writeBatch(
          batch.map((event) => {
            const e = this.#envelopes.get(event);
            return { event, sender: e?.sender ?? '', subject: e?.subject, messageId: e?.messageId };
          }),
        ),
      (e) => o.log.error('events store write failed', { error: e }),
      { delayMs: o.flushMs ?? EVENTS_FLUSH_MS, maxBatch: EVENTS_MAX_BATCH },
    );
    // The batcher keeps only the event: its message's envelope rides along, keyed by the (shared, immutable) event object.
    this.#unsubscribe =
      o.enabled === false
        ? () => {}
        : o.events.subscribe((event, msg, index) => {
            this.#envelopes.set(event, msg.envelope);
            this.#batcher.subscriber(event, msg, index);
          });
    this.#timer = setInterval(() => void this.expire(), RETENTION_INTERVAL_MS);
    this.#timer.unref();
  }

  /**
   * `write` runs inside each batch's transaction, after the events are
   * added: what it writes commits with them or not at all (the webhook
   * outbox: an event stored is an event that will be announced). A throw
   * rolls the batch back. Returns the function that removes it.
   */
  alsoWrite(write: (batch: StoredEvent[]) => void): () => void {
    this.#alsoWrite = [...this.#alsoWrite, write];
    return () => {
      this.#alsoWrite = this.#alsoWrite.filter((w) => w !== write);
    };
  }

  /** After each committed batch, in order (cheap and synchronous: wakes a dispatcher, bumps a counter). */
  afterWrite(fn: (batch: StoredEvent[]) => void): void {
    this.#afterWrite.push(fn);
  }

  /**
   * One batch (with any events a failed write left) in one transaction. A
   * store with commitAsync (PostgreSQL) commits without holding up the event
   * loop; then writes are chained, so a retry never overlaps the batcher's
   * next write and each event is in one write at a time.
   */
  #writeBatch(fresh: StoredEvent[]): void | Promise<void> {
    if (this.#inFlight) return this.#inFlight.then(() => this.#writeBatch(fresh));
    const batch = this.#unwritten.length > 0 ? [...this.#unwritten, ...fresh] : fresh;
    const also = this.#alsoWrite;
    const write = (): void => {
      this.#store.addEvents(batch);
      for (const w of also) w(batch);
    };
    if (this.#store.commitAsync) {
      const done = this.#store.commitAsync(write).then(
        () => this.#written(batch, fresh),
        (e: unknown) => this.#failed(batch, e),
      );
      this.#inFlight = done.finally(() => (this.#inFlight = null)).catch(() => {});
      return done;
    }
    try {
      this.#store.transaction(write);
    } catch (e) {
      this.#failed(batch, e);
    }
    this.#written(batch, fresh);
  }

  /** Keeps the batch, in order, for the next write (nothing of it was written), and throws `e` on. */
  #failed(batch: StoredEvent[], e: unknown): never {
    this.#unwritten = batch.length > MAX_UNWRITTEN ? batch.slice(batch.length - MAX_UNWRITTEN) : batch;
    this.#dropped += batch.length - this.#unwritten.length;
    clearTimeout(this.#retry);
    if (!this.#closed) {
      this.#retry = setTimeout(() => {
        void (async () => this.#writeBatch([]))().catch((err: unknown) => this.#log.error('events store write failed', { error: err, held: this.#unwritten.length }));
      }, RETRY_WRITE_MS);
      this.#retry.unref();
    }
    throw e;
  }

  #written(batch: StoredEvent[], fresh: StoredEvent[]): void {
    if (this.#unwritten.length > 0 || this.#dropped > 0) {
      this.#log.warn('events store writes resumed', { written: batch.length - fresh.length, dropped: this.#dropped });
      this.#unwritten = [];
      this.#dropped = 0;
      clearTimeout(this.#retry);
    }
    for (const fn of this.#afterWrite) {
      try {
        fn(batch);
      } catch (e) {
        this.#log.error('events afterWrite failed', { error: e });
      }
    }
  }

  /** Deletes events older than the retention, a batch per turn until none is left; returns how many went. */
  async expire(now = Date.now()): Promise<number> {
    if (this.#expiring) return 0;
    this.#expiring = true;
    let total = 0;
    try {
      total = await deleteInBatches((limit) => this.#store.expireEvents(now - this.#retention, limit), RETENTION_BATCH, () => this.#closed);
    } catch (e) {
      this.#log.error('events retention failed', { error: e });
    } finally {
      this.#expiring = false;
    }
    return total;
  }

  /** Everything received so far is written. */
  async drain(): Promise<void> {
    await this.#batcher.drain();
    await this.#inFlight;
  }

  /** Stops listening and writes what is left (before the store closes). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#retry);
    this.#unsubscribe();
    await this.#batcher.drain();
    await this.#inFlight;
  }
}
