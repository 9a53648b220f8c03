// The one event stream (docs/architecture.md): every step of a message, one typed
// event per recipient. The JSON log is one subscriber (log.ts); the events
// store, metrics, the API and the webhook outbox subscribe next.
//
// Emitting is synchronous and cheap, because it sits on the delivery path:
// with no subscriber nothing is built; otherwise one event object, shared by
// every subscriber (who must not change it). A subscriber that writes to
// disk or a database batches (BatchingSubscriber): it takes events in order
// and writes each turn's worth at once, and only what it has written is
// announced further (the store before the webhooks: docs/architecture.md, "written
// durably before they are announced").
//
// Event ids sort by time: a 50-bit millisecond time, a counter within the
// millisecond and a random tag of this process, so ids stay unique across
// restarts (and nodes) and increase within a process even when the clock
// steps back. The API pages by them (`after=CURSOR`).

import { randomInt } from 'node:crypto';
import { isoNow } from '../util/log.ts';
import type { DeliveryReply, Envelope, MessageSource, QueuedMessage } from '../spool/types.ts';
import type { Relay, TlsUsed } from '../delivery/types.ts';
import { bounceClass, type BounceClass } from './bounce-class.ts';

export { bounceClass, type BounceClass };

/**
 * queued: accepted and durably queued (data.source says how it came);
 * delivered / deferred / bounced: one delivery attempt's result (data.attempt, relay, tls, reply);
 * expired: given up after queue.maxLifetime (reply 4.4.7);
 * delayed: a delay warning DSN was sent;
 * suppressed, complained: the suppression list and ARF complaints (wave 2).
 */
export type EventType = 'queued' | 'delivered' | 'deferred' | 'bounced' | 'expired' | 'suppressed' | 'complained' | 'delayed';

export interface EventData {
  /** The delivery attempt (1, 2, …) the event reports on; null for queued. */
  attempt: number | null;
  relay: Relay | null;
  tls: TlsUsed | null;
  reply: DeliveryReply | null;
  bounceClass: BounceClass | null;
  source: MessageSource;
  /** Message tags (the HTTP API's `tags`); null until something sets them. */
  tags: Record<string, string> | null;
  /** The transport of a delivery attempt: 'maildir', 'discard', 'mx', 'smarthost'. */
  transport: string | null;
}

export interface MessageEvent {
  id: string;
  type: EventType;
  /** ISO 8601, UTC, milliseconds. */
  timestamp: string;
  queueId: string;
  recipient: string;
  data: EventData;
}

/**
 * Called synchronously, in order, for every event; `msg` is the message as
 * it is now and `index` the recipient's place in it (for what the event
 * does not carry: the original recipient, the arrival time, the size).
 * Must not throw (a throw is reported and ignored) and must not keep `msg`.
 */
export type Subscriber = (event: MessageEvent, msg: QueuedMessage, index: number) => void;

/** What an event reports about an attempt (a DeliveryResult is one). */
export interface Outcome {
  reply: DeliveryReply | null;
  relay: Relay | null;
  tls: TlsUsed | null;
}

export class EventStream {
  #subscribers: Subscriber[] = [];
  readonly #onError: (e: unknown, event: MessageEvent) => void;
  readonly #ids = new EventIds();

  constructor(opts: { onError?: (e: unknown, event: MessageEvent) => void } = {}) {
    this.#onError = opts.onError ?? (() => {});
  }

  /** Returns the unsubscribe function. */
  subscribe(fn: Subscriber): () => void {
    this.#subscribers = [...this.#subscribers, fn];
    return () => {
      this.#subscribers = this.#subscribers.filter((s) => s !== fn);
    };
  }

  /** Something listens (emitters may skip work otherwise). */
  get active(): boolean {
    return this.#subscribers.length > 0;
  }

  /** One event about recipient `index` of `msg`; null when nobody listens. */
  emit(type: EventType, msg: QueuedMessage, index: number, attempt: number | null = null, outcome: Outcome | null = null, transport: string | null = null): MessageEvent | null {
    const subs = this.#subscribers;
    if (subs.length === 0) return null;
    const { envelope } = msg;
    const reply = outcome?.reply ?? null;
    const event: MessageEvent = {
      id: this.#ids.next(),
      type,
      timestamp: isoNow(),
      queueId: envelope.id,
      recipient: envelope.recipients[index]!.address,
      data: {
        attempt,
        relay: outcome?.relay ?? null,
        tls: outcome?.tls ?? null,
        reply,
        bounceClass: type === 'expired' ? 'expired' : reply && reply.code >= 400 ? bounceClass(reply) : null,
        source: sourceOf(envelope),
        tags: envelope.tags ?? null,
        transport,
      },
    };
    for (const s of subs) {
      try {
        s(event, msg, index);
      } catch (e) {
        this.#onError(e, event);
      }
    }
    return event;
  }
}

/**
 * How a message came in: `envelope.source` when intake (or the API) set
 * it; otherwise from the listener role recorded in the envelope, and mail
 * made inside Tern without one (DSNs from the null sender) is a bounce.
 */
export function sourceOf(envelope: Envelope): MessageSource {
  if (envelope.source) return envelope.source;
  const role = envelope.client?.role;
  if (role === 'submission' || role === 'submissions') return 'submission';
  if (role === undefined && envelope.sender === '') return 'bounce';
  return 'smtp';
}

/** Crockford's base32, lower case: ascending in ASCII, so fixed-width ids sort as strings. */
const B32 = '0123456789abcdefghjkmnpqrstvwxyz';

function base32(n: number, width: number): string {
  let s = '';
  for (let i = 0; i < width; i++) {
    s = B32[n % 32]! + s;
    n = Math.floor(n / 32);
  }
  return s;
}

const SEQ_WIDTH = 4;
const SEQ_MAX = 32 ** SEQ_WIDTH;

/** Time-ordered unique ids: 10 characters of ms time, 4 of sequence, 6 of process tag. */
export class EventIds {
  readonly #tag = base32(randomInt(2 ** 30), 6);
  readonly #now: () => number;
  #ms = 0;
  #prefix = '';
  #seq = 0;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  next(): string {
    const now = this.#now();
    if (now > this.#ms) {
      this.#ms = now;
      this.#seq = 0;
      this.#prefix = base32(now, 10);
    } else if (++this.#seq >= SEQ_MAX) {
      // A million in one millisecond, or a clock that stepped back: borrow the next millisecond.
      this.#ms++;
      this.#seq = 0;
      this.#prefix = base32(this.#ms, 10);
    }
    return this.#prefix + base32(this.#seq, SEQ_WIDTH) + this.#tag;
  }
}

/** The smallest event id of millisecond `ms`: every id made earlier sorts below it (retention, time cursors). */
export function eventIdFloor(ms: number): string {
  return base32(Math.max(0, Math.floor(ms)), 10);
}


/**
 * For subscribers that write somewhere slow (a database, a file): events
 * are collected as they come and handed over once per event-loop turn, in
 * order; while a write is in flight the next batch gathers, so writes never
 * overlap and each costs one commit however many events it holds (group
 * commit, like the spool's journal). A failed write is reported; its events
 * are not retried here (the writer decides what to keep).
 */
export class BatchingSubscriber {
  readonly #write: (events: MessageEvent[]) => void | Promise<void>;
  readonly #onError: (e: unknown) => void;
  readonly #delayMs: number;
  readonly #maxBatch: number;
  #batch: MessageEvent[] = [];
  #scheduled: NodeJS.Timeout | NodeJS.Immediate | null = null;
  #writing: Promise<void> | null = null;

  /**
   * `delayMs` 0 writes once per event-loop turn; more gathers events for up
   * to that long (each write's fixed cost, a commit, shared by more events),
   * or until `maxBatch` are waiting.
   */
  constructor(write: (events: MessageEvent[]) => void | Promise<void>, onError: (e: unknown) => void = () => {}, opts: { delayMs?: number; maxBatch?: number } = {}) {
    this.#write = write;
    this.#onError = onError;
    this.#delayMs = opts.delayMs ?? 0;
    this.#maxBatch = opts.maxBatch ?? Infinity;
  }

  readonly subscriber: Subscriber = (event) => {
    this.#batch.push(event);
    if (this.#writing) return;
    if (this.#batch.length >= this.#maxBatch) {
      this.#cancel();
      this.#scheduled = setImmediate(() => this.#flush());
    } else if (!this.#scheduled) {
      this.#scheduled = this.#delayMs > 0 ? setTimeout(() => this.#flush(), this.#delayMs) : setImmediate(() => this.#flush());
    }
  };

  #cancel(): void {
    if (this.#scheduled) {
      clearTimeout(this.#scheduled as NodeJS.Timeout);
      clearImmediate(this.#scheduled as NodeJS.Immediate);
    }
    this.#scheduled = null;
  }

  #flush(): void {
    this.#cancel();
    if (this.#batch.length === 0 || this.#writing) return;
    const batch = this.#batch;
    this.#batch = [];
    const started = performance.now();
    this.#writing = (async () => {
      try {
        await this.#write(batch);
      } catch (e) {
        this.#onError(e);
      }
    })().finally(() => {
      this.#writing = null;
      if (this.#batch.length === 0) return;
      // What gathered during a write that took a while (an asynchronous
      // commit: the event loop went on meanwhile) waits out the rest of
      // delayMs from this write's start, as a new batch would: a write that
      // returns quickly must not turn into a stream of small commits.
      const wait = this.#delayMs - (performance.now() - started);
      if (this.#batch.length >= this.#maxBatch || wait <= 0) this.#flush();
      else this.#scheduled = setTimeout(() => this.#flush(), wait);
    });
  }

  /** Resolves once everything received so far is written (shutdown, tests). */
  async drain(): Promise<void> {
    while (this.#writing || this.#batch.length > 0) {
      if (!this.#writing) this.#flush();
      await this.#writing;
    }
  }
}
