// PostgreSQL behind the store's synchronous interface (issue 17). The store
// API is synchronous, as node:sqlite is: a transaction is a plain function
// whose statements nothing else can interleave with. To keep that, the `pg`
// client runs in a worker thread and each call here blocks the event loop
// until its answer (Atomics.wait on a shared flag, then
// receiveMessageOnPort). A call costs one round trip to the server
// (~0.1-0.3 ms on loopback) during which this process does nothing else,
// which is why everything the store does on the mail path is batched (the
// events) or cached (users, keys, suppressions): see docs/scale-out.md.
//
// One exception: batchAsync, a transaction of writes nobody reads the
// results of (the events batches), is handed to the worker without waiting;
// it runs on a connection of its own and its promise settles when it has
// committed. capture() collects such a batch from code written for the
// synchronous interface.
//
// Errors keep PostgreSQL's SQLSTATE in `code` (e.g. 23505 for a unique
// violation), so callers can tell a conflict from a lost server.

import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
  /** The command tag's verb (e.g. 'INSERT'; 'ROLLBACK' for a COMMIT of a failed transaction). */
  command: string;
}

export class PgError extends Error {
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.name = 'PgError';
    this.code = code;
  }
}

export interface SyncPgOptions {
  /** Longest wait for one answer before the call throws (the server or the network is gone). */
  timeoutMs?: number;
  connectTimeoutMs?: number;
  /** After the server could not be reached, calls fail at once for this long (nothing blocks the node meanwhile). */
  retryAfterMs?: number;
  now?: () => number;
}

/**
 * Whether an error means the server (or the way to it) is unavailable, as
 * opposed to a statement it refused: no SQLSTATE (a socket error, a
 * timeout), or classes 08 (connection exception), 53 (insufficient
 * resources), 57 (operator intervention, e.g. shutdown) and 58 (system error).
 */
export function isUnavailable(code: string | undefined): boolean {
  return code === undefined || !/^[0-9A-Z]{5}$/.test(code) || /^(08|53|57|58)/.test(code);
}

/** The worker runs the same kind of file as this one: .ts from a checkout, .js from the package's dist/. */
const WORKER = new URL(`./sync-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

export class SyncPgClient {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #flag: Int32Array;
  readonly #timeoutMs: number;
  readonly #listeners = new Map<string, Set<(payload: string) => void>>();
  #closed = false;
  #seq = 0;
  #deferred: { sql: string; params: unknown[] }[] = [];
  /** Inside capture(): deferred writes are collected for batchAsync, never sent with a synchronous call. */
  #capturing = false;
  readonly #asyncPort: MessagePort;
  readonly #pending = new Map<number, { resolve: (r: QueryResult<never>) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  readonly #retryAfterMs: number;
  readonly #now: () => number;
  /** Calls fail fast until then: the last one found the server unavailable. */
  #downUntil = 0;
  #downReason = '';
  /** Called when the LISTEN connection dropped, and again when it is back: notifications may have been missed in between. */
  onListenLost: (() => void) | null = null;

  constructor(url: string, opts: SyncPgOptions = {}) {
    // Every call blocks the event loop while it waits: a lost server must cost seconds once, not per call.
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#retryAfterMs = opts.retryAfterMs ?? 2000;
    this.#now = opts.now ?? Date.now;
    const signal = new SharedArrayBuffer(4);
    this.#flag = new Int32Array(signal);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    const asyncChannel = new MessageChannel();
    this.#asyncPort = asyncChannel.port1;
    this.#asyncPort.on('message', (m: { id: number; ok: boolean; rowCount?: number; command?: string; message?: string; code?: string }) => this.#settle(m));
    // Listened to only while a batch is out: an idle store does not keep the process alive.
    this.#asyncPort.unref();
    this.#worker = new Worker(WORKER, {
      workerData: { url, port: port2, asyncPort: asyncChannel.port2, signal, connectTimeoutMs: opts.connectTimeoutMs ?? 2000, statementTimeoutMs: this.#timeoutMs },
      transferList: [port2, asyncChannel.port2],
    });
    this.#worker.unref();
    this.#worker.on('message', (m: { type: string; channel?: string; payload?: string }) => {
      if (m.type === 'notify') for (const fn of this.#listeners.get(m.channel!) ?? []) fn(m.payload ?? '');
      else if (m.type === 'listen-lost') this.onListenLost?.();
    });
    // The worker reports its own failures in answers; an exit is noticed by the next call's timeout.
    this.#worker.on('error', () => {});
  }

  query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): QueryResult<T> {
    return this.#call({ op: 'query', sql, params }) as QueryResult<T>;
  }

  /**
   * A write whose result nobody reads (inside a transaction: BEGIN, the
   * events' inserts, the outbox rows, the counters): sent with the next call
   * that needs an answer (e.g. COMMIT), all in one request, so a batch costs
   * one wait instead of one per statement. Its error, if any, is that call's.
   */
  defer(sql: string, params: unknown[] = []): void {
    // Outside a transaction nothing may wait: another connection could look for it first.
    if (!this.inTransaction && !this.#capturing) this.query(sql, params);
    else this.#deferred.push({ sql, params });
  }

  /**
   * Runs `fn`, collecting the writes it defers instead of sending them, and
   * returns them for batchAsync. Calls in `fn` that need an answer (a read, a
   * query()) are made at once, on their own, outside the batch: only
   * deferred writes belong to it.
   */
  capture<T>(fn: () => T): { out: T; items: { sql: string; params: unknown[] }[] } {
    if (this.#capturing || this.inTransaction) throw new Error('capture() inside a transaction or another capture');
    const before = this.#deferred;
    this.#deferred = [];
    this.#capturing = true;
    try {
      const out = fn();
      return { out, items: this.#deferred };
    } finally {
      this.#capturing = false;
      this.#deferred = before;
    }
  }

  /**
   * Sends statements to run in order on the worker's own connection for
   * them (each batch after the previous one), without waiting: the promise
   * settles with the last statement's result, or rejects with the first
   * error (the worker then sends ROLLBACK). Make it a transaction by putting
   * BEGIN first and COMMIT last. Fails at once while the server is known
   * to be unavailable, like every other call.
   */
  batchAsync(items: { sql: string; params: unknown[] }[]): Promise<QueryResult<never>> {
    if (this.#closed) return Promise.reject(new PgError('the PostgreSQL store is closed'));
    if (this.#now() < this.#downUntil) return Promise.reject(new PgError(`PostgreSQL unavailable (${this.#downReason}); trying again shortly`, 'TERN_UNAVAILABLE'));
    const id = ++this.#seq;
    return new Promise((resolve, reject) => {
      // The worker's statement_timeout bounds each statement; this bounds the wait for a worker or a connection that never answers.
      const timer = setTimeout(() => this.#settle({ id, ok: false, message: `PostgreSQL did not finish a batch within ${this.#timeoutMs * 4} ms` }), this.#timeoutMs * 4);
      this.#pending.set(id, { resolve, reject, timer });
      this.#asyncPort.ref();
      this.#asyncPort.postMessage({ id, items });
    });
  }

  #settle(m: { id: number; ok: boolean; rowCount?: number; command?: string; message?: string; code?: string }): void {
    const p = this.#pending.get(m.id);
    if (!p) return; // timed out already
    this.#pending.delete(m.id);
    clearTimeout(p.timer);
    if (this.#pending.size === 0) this.#asyncPort.unref();
    if (m.ok) return p.resolve({ rows: [], rowCount: m.rowCount ?? 0, command: m.command ?? '' });
    const e = new PgError(m.message ?? 'PostgreSQL error', m.code);
    if (isUnavailable(e.code)) {
      this.#downUntil = this.#now() + this.#retryAfterMs;
      this.#downReason = e.message;
    }
    p.reject(e);
  }

  /** Set by pgTransaction (tx.ts) while a transaction is open: only then are writes deferred. */
  inTransaction = false;

  /** Forgets deferred writes not sent yet (a transaction that failed before its COMMIT). */
  dropDeferred(): void {
    this.#deferred = [];
  }

  /** The rows of a query. */
  rows<T = Record<string, unknown>>(sql: string, params: unknown[] = []): T[] {
    return this.query<T>(sql, params).rows;
  }

  /** The first row, or undefined. */
  one<T = Record<string, unknown>>(sql: string, params: unknown[] = []): T | undefined {
    return this.query<T>(sql, params).rows[0];
  }

  /** Statements without parameters, possibly several (schema steps). */
  exec(sql: string): void {
    this.#call({ op: 'query', sql, params: [] });
  }

  /** Runs `fn` for every NOTIFY on `channel` (RFC: PostgreSQL LISTEN), delivered between event-loop turns. */
  listen(channel: string, fn: (payload: string) => void): void {
    let set = this.#listeners.get(channel);
    if (!set) {
      set = new Set();
      this.#listeners.set(channel, set);
      this.#call({ op: 'listen', channel });
    }
    set.add(fn);
    // Notifications keep the process alive only as long as something else does.
    this.#worker.unref();
  }

  close(): void {
    if (this.#closed) return;
    try {
      this.#call({ op: 'close' });
    } catch {
      // gone already
    }
    this.#closed = true;
    // The worker finished every batch before it answered the close: take their answers now, then fail whatever is left.
    for (let got = receiveMessageOnPort(this.#asyncPort); got; got = receiveMessageOnPort(this.#asyncPort)) this.#settle(got.message as { id: number; ok: boolean });
    for (const id of [...this.#pending.keys()]) this.#settle({ id, ok: false, message: 'the PostgreSQL store is closed' });
    this.#asyncPort.close();
    void this.#worker.terminate();
  }

  /** Whether calls currently fail fast (the server was unreachable a moment ago). */
  get unavailable(): boolean {
    return this.#now() < this.#downUntil;
  }

  #call(req: Record<string, unknown>): unknown {
    if (this.#closed) throw new PgError('the PostgreSQL store is closed');
    if (this.#deferred.length > 0 && req.op === 'query' && !this.#capturing) {
      const items = [...this.#deferred, { sql: req.sql as string, params: req.params as unknown[] }];
      this.#deferred = [];
      req = { op: 'batch', items };
    }
    if (this.#now() < this.#downUntil) throw new PgError(`PostgreSQL unavailable (${this.#downReason}); trying again shortly`, 'TERN_UNAVAILABLE');
    try {
      return this.#send(req);
    } catch (e) {
      if (e instanceof PgError && isUnavailable(e.code)) {
        this.#downUntil = this.#now() + this.#retryAfterMs;
        this.#downReason = e.message;
      }
      throw e;
    }
  }

  #send(req: Record<string, unknown>): unknown {
    const id = ++this.#seq;
    let seen = Atomics.load(this.#flag, 0);
    this.#port.postMessage({ ...req, id });
    const deadline = Date.now() + this.#timeoutMs;
    for (;;) {
      // Answers to calls that timed out earlier may still arrive: they are skipped by id.
      for (let got = receiveMessageOnPort(this.#port); got; got = receiveMessageOnPort(this.#port)) {
        const m = got.message as { id: number; ok: boolean; rows?: unknown[]; rowCount?: number; command?: string; message?: string; code?: string };
        if (m.id !== id) continue;
        if (!m.ok) throw new PgError(m.message ?? 'PostgreSQL error', m.code);
        return { rows: m.rows ?? [], rowCount: m.rowCount ?? 0, command: m.command ?? '' };
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new PgError(`PostgreSQL did not answer within ${this.#timeoutMs} ms`);
      Atomics.wait(this.#flag, 0, seen, left);
      seen = Atomics.load(this.#flag, 0);
    }
  }
}
