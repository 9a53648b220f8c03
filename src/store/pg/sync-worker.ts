// The worker half of SyncPgClient (sync-client.ts): owns the `pg` connections
// and answers one request at a time. A request arrives on `port`; the answer
// goes back on the same port and the shared flag is raised, which wakes the
// main thread blocked in Atomics.wait. LISTEN notifications (a second,
// dedicated connection) go to the parent asynchronously.
//
// Transactions the main thread does not wait for (SyncPgClient.batchAsync:
// the events batches) arrive on `asyncPort` and run, one after another, on a
// third connection of their own: nothing the main thread sends meanwhile on
// `port` can land inside one of them, and none of them holds up its calls.

import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import pg from 'pg';

interface Init {
  url: string;
  port: MessagePort;
  /** Batches answered without the flag: the main thread listens for them. */
  asyncPort: MessagePort;
  signal: SharedArrayBuffer;
  connectTimeoutMs: number;
  /** The server abandons a statement after this (statement_timeout), as the caller stops waiting. */
  statementTimeoutMs: number;
}

type Request = { id: number } & (
  | { op: 'query'; sql: string; params: unknown[] }
  | { op: 'batch'; items: { sql: string; params: unknown[] }[] }
  | { op: 'listen'; channel: string }
  | { op: 'close' }
);

const init = workerData as Init;
const flag = new Int32Array(init.signal);

// int8 (COUNT, BIGINT epoch milliseconds) as a number, as node:sqlite gives it: our values stay below 2^53.
pg.types.setTypeParser(20, (v: string) => Number(v));

let client: pg.Client | null = null;
let asyncClient: pg.Client | null = null;
let listener: pg.Client | null = null;
const channels = new Set<string>();

function options(): pg.ClientConfig {
  return { connectionString: init.url, connectionTimeoutMillis: init.connectTimeoutMs, statement_timeout: init.statementTimeoutMs, application_name: 'tern' };
}

/** The connection in `slot` (made on first use); a broken one is dropped and the next request makes a new one. */
async function connection(slot: 'main' | 'async'): Promise<pg.Client> {
  const held = slot === 'main' ? client : asyncClient;
  if (held) return held;
  const c = new pg.Client(options());
  c.on('error', () => {
    if (slot === 'main' && client === c) client = null;
    if (slot === 'async' && asyncClient === c) asyncClient = null;
  });
  await c.connect();
  if (slot === 'main') client = c;
  else asyncClient = c;
  return c;
}

/** The async batches, strictly one after another (each is a whole transaction on asyncClient). */
let asyncChain: Promise<void> = Promise.resolve();

init.asyncPort.on('message', (req: { id: number; items: { sql: string; params: unknown[] }[] }) => {
  asyncChain = asyncChain.then(async () => {
    let c: pg.Client | undefined;
    try {
      c = await connection('async');
      let last: pg.QueryResult | undefined;
      for (const item of req.items) last = await c.query({ text: item.sql, values: item.params });
      init.asyncPort.postMessage({ id: req.id, ok: true, rowCount: last?.rowCount ?? 0, command: last?.command ?? '' });
    } catch (e) {
      // A statement failed mid-transaction: end it, so the connection is ready for the next batch.
      await c?.query('ROLLBACK').catch(() => {});
      const err = e as Error & { code?: string };
      init.asyncPort.postMessage({ id: req.id, ok: false, message: err.message, code: err.code });
    }
  });
});

async function listening(): Promise<pg.Client> {
  if (listener) return listener;
  const c = new pg.Client(options());
  c.on('notification', (n) => parentPort!.postMessage({ type: 'notify', channel: n.channel, payload: n.payload ?? '' }));
  c.on('error', () => {
    if (listener !== c) return;
    listener = null;
    // Announcements made from now until it is back are lost: the caches built on them must start over.
    parentPort!.postMessage({ type: 'listen-lost' });
    relisten(1000);
  });
  await c.connect();
  for (const ch of channels) await c.query(`LISTEN ${quoteIdent(ch)}`);
  listener = c;
  return c;
}

/** Makes the LISTEN connection again, backing off to 10 s between tries, and says so when it is back. */
function relisten(delayMs: number): void {
  setTimeout(() => {
    if (listener || channels.size === 0) return;
    listening().then(
      () => parentPort!.postMessage({ type: 'listen-lost' }),
      () => relisten(Math.min(delayMs * 2, 10_000)),
    );
  }, delayMs).unref();
}

function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

/** The answer first, then the counter: when the main thread sees the counter move, the answer is on the port. */
function answer(id: number, msg: Record<string, unknown>): void {
  init.port.postMessage({ id, ...msg });
  Atomics.add(flag, 0, 1);
  Atomics.notify(flag, 0);
}

init.port.on('message', (req: Request) => {
  void (async () => {
    try {
      if (req.op === 'query') {
        const c = await connection('main');
        const r = await c.query({ text: req.sql, values: req.params });
        // A multi-statement text gives an array of results: the last one is the answer.
        const last = Array.isArray(r) ? r[r.length - 1] : r;
        answer(req.id, { ok: true, rows: last?.rows ?? [], rowCount: last?.rowCount ?? 0, command: last?.command ?? '' });
      } else if (req.op === 'batch') {
        // Deferred writes and the call that flushed them, in order, as one request (one thread hop);
        // the first failure ends the batch and is the answer.
        const c = await connection('main');
        let last: pg.QueryResult | undefined;
        for (const item of req.items) last = await c.query({ text: item.sql, values: item.params });
        answer(req.id, { ok: true, rows: last?.rows ?? [], rowCount: last?.rowCount ?? 0, command: last?.command ?? '' });
      } else if (req.op === 'listen') {
        channels.add(req.channel);
        const l = await listening();
        await l.query(`LISTEN ${quoteIdent(req.channel)}`);
        answer(req.id, { ok: true, rows: [], rowCount: 0 });
      } else {
        await asyncChain;
        await Promise.allSettled([client?.end(), asyncClient?.end(), listener?.end()]);
        client = asyncClient = listener = null;
        init.asyncPort.close();
        answer(req.id, { ok: true, rows: [], rowCount: 0 });
      }
    } catch (e) {
      const err = e as Error & { code?: string };
      answer(req.id, { ok: false, message: err.message, code: err.code });
    }
  })();
});
