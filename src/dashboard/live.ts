// GET /ui/api/live: server-sent events (the WHATWG HTML standard, §9.2)
// that move the overview's figures without a reload. One hub for every
// open stream:
//
// - something to say: the events recorder committed a batch (afterWrite),
//   the dashboard changed the queue, or the queue's O(1) counts moved (the
//   hub looks each tick, so `tern queue` commands and deliveries count too);
// - at most one update per second per stream: an update is one snapshot,
//   built once and written to every stream that is due;
// - a comment line after 15 s of silence, so proxies keep the stream open;
// - a stream whose client does not read (its socket buffer is full) is
//   skipped until it drains, never buffered without bound;
// - a bounded number of streams (MAX_STREAMS), each ended when its session
//   expires or is logged out (rechecked every VALIDATE_MS), and all ended
//   when the server stops.

import type { ServerResponse } from 'node:http';

export const MAX_STREAMS = 100;
/** The smallest gap between two updates of one stream. */
export const MIN_GAP_MS = 1000;
/** How often the hub looks for work while a stream is open. */
export const TICK_MS = 250;
/** Silence after which a comment line goes out. */
export const KEEPALIVE_MS = 15_000;
/** How often each stream's session is checked against the store. */
export const VALIDATE_MS = 10_000;
/** What EventSource waits before reconnecting after the stream ends (the `retry` field). */
export const RECONNECT_MS = 5000;

export interface LiveHubOptions {
  /** The update's data (serialized as JSON). */
  snapshot: () => object;
  /** Cheap: a value that differs when the queue's counts changed. */
  queueSignature: () => string;
  /** A snapshot that failed (the store closing under it): logged, the streams left as they are. */
  onError: (e: unknown) => void;
  now?: () => number;
  maxStreams?: number;
}

interface Stream {
  res: ServerResponse;
  /** Whether the stream's session still stands. */
  valid: () => boolean;
  /** Its session's identity, for ending all streams of a session or account. */
  sessionHash: string;
  user: string;
  expiresAt: number;
  lastWrite: number;
  lastUpdate: number;
  lastValidated: number;
  /** An update is owed (something changed since its last). */
  pending: boolean;
}

export class LiveHub {
  readonly #o: Required<LiveHubOptions>;
  readonly #streams = new Set<Stream>();
  #timer: NodeJS.Timeout | null = null;
  #queueSignature = '';
  #closed = false;

  constructor(o: LiveHubOptions) {
    this.#o = { now: Date.now, maxStreams: MAX_STREAMS, ...o };
  }

  get size(): number {
    return this.#streams.size;
  }

  get full(): boolean {
    return this.#closed || this.#streams.size >= this.#o.maxStreams;
  }

  /**
   * Takes over `res` (headers not sent yet): sends the headers and a first
   * update at once, then updates as things change. False when full.
   */
  open(res: ServerResponse, session: { tokenHash: string; user: string; expiresAt: number }, valid: () => boolean): boolean {
    if (this.full) return false;
    const now = this.#o.now();
    const s: Stream = { res, valid, sessionHash: session.tokenHash, user: session.user, expiresAt: session.expiresAt, lastWrite: now, lastUpdate: 0, lastValidated: now, pending: true };
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      // Never stored (OWASP: no caching of authenticated data), and not held back by a buffering proxy (nginx).
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff',
    });
    res.write(`retry: ${RECONNECT_MS}\n\n`);
    // The queue as this first update shows it: the next tick only reports a change from here.
    if (this.#streams.size === 0) this.#queueSignature = this.#o.queueSignature();
    this.#streams.add(s);
    const drop = (): void => this.#drop(s);
    res.on('close', drop);
    res.on('error', drop);
    // The first update at once: the page shows current figures without waiting for a change.
    try {
      this.#send([s], now);
    } catch (e) {
      this.#o.onError(e);
    }
    this.#arm();
    return true;
  }

  /** Something the overview shows changed: every stream is owed an update. */
  changed(): void {
    if (this.#streams.size === 0) return;
    for (const s of this.#streams) s.pending = true;
  }

  /** Ends the streams of a session (logout) or of an account (deleted). */
  end(match: { sessionHash?: string; user?: string }): void {
    for (const s of [...this.#streams]) {
      if (s.sessionHash === match.sessionHash || s.user === match.user) this.#finish(s);
    }
  }

  /** Ends every stream and opens no more (the server stops). */
  close(): void {
    this.#closed = true;
    for (const s of [...this.#streams]) this.#finish(s);
    this.#disarm();
  }

  #arm(): void {
    if (this.#timer || this.#streams.size === 0) return;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#timer.unref();
  }

  #disarm(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  #tick(): void {
    try {
      this.#tickNow();
    } catch (e) {
      this.#o.onError(e);
    }
  }

  #tickNow(): void {
    const now = this.#o.now();
    const signature = this.#o.queueSignature();
    if (signature !== this.#queueSignature) {
      this.#queueSignature = signature;
      this.changed();
    }
    const due: Stream[] = [];
    for (const s of [...this.#streams]) {
      if (s.expiresAt <= now) {
        this.#finish(s);
        continue;
      }
      if (now - s.lastValidated >= VALIDATE_MS) {
        s.lastValidated = now;
        if (!s.valid()) {
          this.#finish(s);
          continue;
        }
      }
      // A client that does not read gets nothing more until its socket drains.
      if (s.res.writableNeedDrain) continue;
      if (s.pending && now - s.lastUpdate >= MIN_GAP_MS) due.push(s);
      else if (now - s.lastWrite >= KEEPALIVE_MS) this.#write(s, ': keepalive\n\n', now);
    }
    if (due.length > 0) this.#send(due, now);
  }

  #send(streams: Stream[], now: number): void {
    const frame = `event: update\ndata: ${JSON.stringify(this.#o.snapshot())}\n\n`;
    for (const s of streams) {
      s.pending = false;
      s.lastUpdate = now;
      this.#write(s, frame, now);
    }
  }

  #write(s: Stream, text: string, now: number): void {
    s.lastWrite = now;
    s.res.write(text);
  }

  #finish(s: Stream): void {
    this.#drop(s);
    if (!s.res.writableEnded) s.res.end();
  }

  #drop(s: Stream): void {
    if (!this.#streams.delete(s)) return;
    if (this.#streams.size === 0) this.#disarm();
  }
}
