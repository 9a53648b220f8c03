// Dashboard queries at scale (issue 14, "Performance"): with 1,000,000
// events stored, the overview must answer in under 200 ms and the message
// search in under 500 ms.
//
// A fresh store (the real one: openStore, node:sqlite, WAL) is filled with
// --events events (1,000,000 by default) spread over the 30 days before
// now, in batches of 2,000 written exactly as the events recorder writes
// them (src/api/events-store.ts, #writeBatch): store.addEvents and the
// dashboard's aggregate maintainer (StatsMaintainer.write) in one
// transaction. The mail is made up but shaped like real mail, from a seeded
// generator (the same store every run):
//
//   - messages arrive all day, more in the working hours (UTC); 1 to 3
//     recipients (70/20/10 %);
//   - per recipient: queued; a deferral first for a quarter of them; then
//     delivered, or bounced (12 %, in a few bounce classes); which comes to
//     about 44 % queued, 40 % delivered, 11 % deferred, 5 % bounced events
//     (printed);
//   - 3,000 recipient domains with a long tail (Zipf-like), 20 % local
//     (Maildir), 70 % over MX (85 % of them with TLS), 10 % via a smarthost;
//   - 20,000 senders on 400 domains, also Zipf-like; subjects from a small
//     vocabulary with a number, a Message-ID per message.
//
// Then, warm (the first run of each is reported on its own as "cold"),
// --runs times each: the overview of each range as GET /ui/api/overview
// reads it (overviewStats: the aggregates), and searches as GET
// /ui/api/messages runs them (searchMessages: ids, then the page's rows
// and recipients' events), for a page of 50: by a busy and a rare sender,
// by a recipient, by Message-ID (with and without <>), by queue id, by a
// subject word that is everywhere, one in a few hundred messages and one
// in none (the whole bounded scan), by a day's date range, by an address
// within a week, and the second page of a busy sender. Median and max per
// query; the query plans (EXPLAIN QUERY PLAN) of every statement.
//
//   node bench/dashboard.ts [--events N] [--runs R] [--keep DIR] [--json FILE]
//   node bench/dashboard.ts --postgres [--events N] [--runs R] [--json FILE]
//   node bench/dashboard.ts --postgres-url URL [...]
//
// --keep DIR: build the store in DIR and keep it (a second run with the
// same DIR skips the fill).
//
// --postgres: the same on the shared store of several nodes (issue 17), a
// private PostgreSQL cluster on a loopback port (test/helpers/postgres.ts:
// Debian's server, fsync off, so the fill's rate says nothing of a durable
// PostgreSQL; the reads are what is measured), filled and read through
// openPgStore exactly as a node does, then VACUUM (ANALYZE)d, as autovacuum
// would soon after such a fill; the plans are PostgreSQL's EXPLAIN of
// PG_DASHBOARD_SQL. --postgres-url: an existing
// database instead (filled only if it has no events; never dropped).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { openStore, STORE_FILE, type EventScope, type Store, type StoredEvent } from '../src/store/store.ts';
import { openPgStore } from '../src/store/pg/store.ts';
import { DASHBOARD_SQL, ID_TOP } from '../src/store/dashboard.ts';
import { PG_DASHBOARD_SQL } from '../src/store/pg/dashboard.ts';
import { startPostgres, type PgCluster } from '../test/helpers/postgres.ts';
import { eventIdFloor, type BounceClass, type EventType, type MessageEvent } from '../src/events/events.ts';
import { DAY, MINUTE, StatsMaintainer, overviewStats, type Range } from '../src/dashboard/stats.ts';
import { idTimePrefix, searchMessages, type SearchQuery } from '../src/dashboard/search.ts';
import { cli, median } from './lib.ts';

const args = cli();
const EVENTS = args.num('events', 1_000_000);
const RUNS = args.num('runs', 9);
const KEEP = args.str('keep');
const JSON_OUT = args.str('json');
const POSTGRES_URL = args.str('postgres-url');
const POSTGRES = args.flag('postgres') || POSTGRES_URL !== undefined;
const BATCH = 2000;
const NOW = Date.now();
const START = NOW - 30 * DAY;

/** mulberry32: small, fast, seeded. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = rng(14);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
/** 0..n-1, small numbers far more often (about Zipf with s = 1). */
const zipf = (n: number): number => Math.min(n - 1, Math.floor(Math.exp(random() * Math.log(n + 1)) - 1));

const DOMAINS = Array.from({ length: 3000 }, (_, i) => `d${i}.example`);
const SENDER_DOMAINS = Array.from({ length: 400 }, (_, i) => `s${i}.example.net`);
const SENDERS = Array.from({ length: 20_000 }, (_, i) => `user${i}@${SENDER_DOMAINS[i % SENDER_DOMAINS.length]}`);
const WORDS = ['Invoice', 'Order', 'Shipping update', 'Newsletter', 'Weekly report', 'Meeting', 'Password reset', 'Welcome', 'Receipt', 'Your account', 'Alert', 'Summary'];
const CLASSES: BounceClass[] = ['invalid-recipient', 'mailbox-full', 'policy', 'spam-block', 'content', 'dns'];
const TLS = { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true };
const RELAY = { host: 'mx.example', ip: '192.0.2.10', port: 25 };

const B32 = '0123456789abcdefghjkmnpqrstvwxyz';
const b32 = (n: number, width: number): string => {
  let s = '';
  for (let i = 0; i < width; i++) {
    s = B32[n % 32]! + s;
    n = Math.floor(n / 32);
  }
  return s;
};
let eventSeq = 0;
/** As EventIds makes them: 10 characters of time, 4 of sequence, a 6-character tag. */
const eventId = (ms: number): string => b32(ms, 10) + b32(eventSeq++ % 32 ** 4, 4) + 'bench0';
let queueSeq = 0;
/** As Spool#newId makes them: 9 base-36 digits of time, 2 of counter, 5 random. */
const queueId = (ms: number): string =>
  idTimePrefix(ms) + (queueSeq++ % 1296).toString(36).toUpperCase().padStart(2, '0') + Math.floor(random() * 36 ** 5).toString(36).toUpperCase().padStart(5, '0');

/** Messages per day shape: working hours (08–18 UTC) three times as busy as the night. */
function arrivalTimes(count: number): number[] {
  const out: number[] = [];
  while (out.length < count) {
    const t = START + random() * (NOW - START - 10 * MINUTE);
    const hour = new Date(t).getUTCHours();
    if (hour >= 8 && hour < 18 ? true : random() < 1 / 3) out.push(Math.floor(t));
  }
  return out.sort((a, b) => a - b);
}

interface Made {
  mix: Record<string, number>;
  messages: number;
}

/** The events, message by message (a message's events in time order), made as they are written: memory stays one batch. */
function* makeEvents(total: number, made: Made): Generator<StoredEvent> {
  // About 2.25 events per recipient and 1.4 recipients per message.
  const times = arrivalTimes(Math.ceil(total / (2.25 * 1.4)));
  let produced = 0;
  const ev = (type: EventType, id: string, recipient: string, at: number, data: Partial<MessageEvent['data']>, stored: Omit<StoredEvent, 'event'>): StoredEvent => {
    made.mix[type] = (made.mix[type] ?? 0) + 1;
    produced++;
    return {
      ...stored,
      event: {
        id: eventId(at),
        type,
        timestamp: new Date(at).toISOString(),
        queueId: id,
        recipient,
        data: { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'smtp', tags: null, transport: null, ...data },
      },
    };
  };
  for (const t of times) {
    if (produced >= total) return;
    made.messages++;
    const id = queueId(t);
    const sender = SENDERS[zipf(SENDERS.length)]!;
    const n = random() < 0.7 ? 1 : random() < 2 / 3 ? 2 : 3;
    const subject = `${pick(WORDS)} #${Math.floor(random() * 1_000_000)}`;
    const messageId = `<${id.toLowerCase()}.${made.messages}@${sender.slice(sender.indexOf('@') + 1)}>`;
    const stored = { sender, subject, messageId };
    const rcpts = Array.from({ length: n }, () => {
      const local = random() < 0.2;
      return { address: `r${Math.floor(random() * 50_000)}@${local ? 'tern.test' : DOMAINS[zipf(DOMAINS.length)]}`, transport: local ? 'maildir' : random() < 7 / 8 ? 'mx' : 'smarthost' };
    });
    for (const r of rcpts) yield ev('queued', id, r.address, t, {}, stored);
    for (const r of rcpts) {
      let at = t + 200 + Math.floor(random() * 3000);
      let attempt = 1;
      const remote = r.transport !== 'maildir';
      const tls = remote && random() < 0.85 ? TLS : null;
      if (random() < 0.25) {
        yield ev('deferred', id, r.address, at, { attempt, transport: r.transport, relay: remote ? RELAY : null, tls, reply: { code: 451, enhanced: '4.7.1', text: 'try again later' }, bounceClass: 'policy' }, stored);
        at += 5 * MINUTE + Math.floor(random() * 55 * MINUTE);
        attempt++;
      }
      if (random() < 0.12) {
        yield ev('bounced', id, r.address, at, { attempt, transport: r.transport, relay: remote ? RELAY : null, tls, reply: { code: 550, enhanced: '5.1.1', text: 'no such user' }, bounceClass: pick(CLASSES) }, stored);
      } else {
        yield ev('delivered', id, r.address, at, { attempt, transport: r.transport, relay: remote ? RELAY : null, tls, reply: { code: 250, enhanced: '2.0.0', text: 'ok' } }, stored);
      }
    }
  }
}

function fill(open: () => Store): { seconds: number; made: Made } {
  const made: Made = { mix: {}, messages: 0 };
  const store = open();
  const stats = new StatsMaintainer(store.dashboard, () => NOW);
  const t1 = performance.now();
  let written = 0;
  let batch: StoredEvent[] = [];
  const write = (): void => {
    // EventRecorder#writeBatch: the events and their aggregates in one transaction.
    store.transaction(() => {
      store.addEvents(batch);
      stats.write(batch);
    });
    written += batch.length;
    batch = [];
    if ((written / BATCH) % 50 === 0) process.stderr.write(`\rfill: ${written} / ${EVENTS}`);
  };
  for (const e of makeEvents(EVENTS, made)) {
    batch.push(e);
    if (batch.length === BATCH) write();
  }
  if (batch.length > 0) write();
  // The running maintainer prunes once per minute of the clock; here the clock stood still.
  stats.prune(NOW);
  store.close();
  const seconds = (performance.now() - t1) / 1000;
  process.stderr.write(`\rfill: ${written} events in ${seconds.toFixed(1)} s (making them included)\n`);
  return { seconds, made };
}

interface Row {
  name: string;
  coldMs: number;
  medianMs: number;
  maxMs: number;
  rows: number;
  limitMs: number;
}

function time(name: string, limitMs: number, fn: () => number): Row {
  const samples: number[] = [];
  let rows = 0;
  for (let i = 0; i < RUNS + 1; i++) {
    const t = performance.now();
    rows = fn();
    samples.push(performance.now() - t);
  }
  const [cold, ...warm] = samples;
  return { name, coldMs: cold!, medianMs: median(warm), maxMs: Math.max(...warm), rows, limitMs };
}

/** What the bench needs of the database beside the store (counts, a sample, plans, size): the SQLite file, or PostgreSQL. */
interface Backend {
  open(): Store;
  /** Whether the database already holds events (then the fill is skipped). */
  filled(): Promise<boolean>;
  /** The first row of `sql`, written with `?` marks (numbered for PostgreSQL). */
  get<T>(sql: string, params: unknown[]): Promise<T | undefined>;
  plans(busySender: string, sample: Sample): Promise<string[]>;
  describe(): Promise<string>;
  close(): Promise<void>;
}

interface Sample {
  id: string;
  message_id: string;
  sender: string;
  recipient: string;
}

function sqliteBackend(): Backend {
  const dir = KEEP ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tern-bench-dashboard-'));
  const file = path.join(dir, STORE_FILE);
  const existed = fs.existsSync(file);
  let db: DatabaseSync | null = null;
  const handle = (): DatabaseSync => (db ??= new DatabaseSync(file));
  return {
    open: () => openStore(dir),
    filled: async () => {
      if (existed) process.stderr.write(`using the store in ${dir}\n`);
      return existed;
    },
    get: async <T>(sql: string, params: unknown[]) => handle().prepare(sql).get(...(params as (string | number)[])) as T | undefined,
    plans: async (busySender, sample) => {
      const w = [ID_TOP, '', 0, Number.MAX_SAFE_INTEGER];
      const plans: [string, string, (string | number)[]][] = [
        ['series', DASHBOARD_SQL.series(4), [MINUTE, 'received', 'delivered', 'deferred', 'bounced', 0]],
        ['top keys', DASHBOARD_SQL.top, [DAY, 'domain', 0, 10]],
        ['by sender', DASHBOARD_SQL.bySender, [busySender, ...w, 50]],
        ['by recipient', DASHBOARD_SQL.byRecipient, [sample.recipient, ...w, 50]],
        ['by Message-ID', DASHBOARD_SQL.byMessageId(2), [sample.message_id, sample.message_id.slice(1, -1), ...w, 50]],
        ['by subject', DASHBOARD_SQL.bySubject, [...w, 500_000, '%x%', 50]],
        ['by time', DASHBOARD_SQL.byTime, [...w, 50]],
      ];
      return plans.map(([name, sql, a]) => `${name.padEnd(14)} ${(handle().prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...a) as { detail: string }[]).map((r) => r.detail).join(' | ')}`);
    },
    describe: async () => {
      const size = ['', '-wal'].reduce((s, ext) => s + (fs.existsSync(file + ext) ? fs.statSync(file + ext).size : 0), 0);
      return `tern.db ${(size / 2 ** 20).toFixed(0)} MiB; SQLite ${(handle().prepare('SELECT sqlite_version() AS v').get() as { v: string }).v}`;
    },
    close: async () => {
      db?.close();
      if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresBackend(): Promise<Backend> {
  const cluster: PgCluster | null = POSTGRES_URL ? null : await startPostgres();
  const url = POSTGRES_URL ?? (await cluster!.createDatabase('bench_dashboard'));
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  // Placeholders as PostgreSQL numbers them; count(*) comes back as a bigint string.
  const numbered = (sql: string): string => {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  };
  const explain = async (sql: string, params: unknown[]): Promise<string> =>
    ((await client.query(`EXPLAIN ${sql}`, params)).rows as { 'QUERY PLAN': string }[]).map((r) => r['QUERY PLAN'].trim()).join(' | ');
  return {
    open: () => openPgStore(url),
    filled: async () => {
      const r = await client.query(`SELECT to_regclass('events') IS NOT NULL AS t`);
      if (!(r.rows[0] as { t: boolean }).t) return false;
      const filled = ((await client.query('SELECT EXISTS (SELECT 1 FROM events) AS t')).rows[0] as { t: boolean }).t;
      if (filled) process.stderr.write('using the events already in the database\n');
      return filled;
    },
    get: async <T>(sql: string, params: unknown[]) => {
      const row = (await client.query(numbered(sql), params)).rows[0] as Record<string, unknown> | undefined;
      return (row && 'n' in row ? { ...row, n: Number(row.n) } : row) as T | undefined;
    },
    plans: async (busySender, sample) => {
      // As PgDashboardStore binds them: the window's four values first.
      const w = [ID_TOP, '', 0, Number.MAX_SAFE_INTEGER];
      const metrics = ['received', 'delivered', 'deferred', 'bounced'];
      const plans: [string, string, unknown[]][] = [
        ['series', PG_DASHBOARD_SQL.series, [MINUTE, metrics, 0]],
        ['top keys', PG_DASHBOARD_SQL.top, [DAY, 'domain', 0, 10]],
        ['by sender', PG_DASHBOARD_SQL.bySender, [...w, busySender, 50]],
        ['by recipient', PG_DASHBOARD_SQL.byRecipient, [...w, sample.recipient, 50]],
        ['by Message-ID', PG_DASHBOARD_SQL.byMessageId, [...w, [sample.message_id, sample.message_id.slice(1, -1)], 50]],
        ['by subject', PG_DASHBOARD_SQL.bySubject, [...w, 500_000, '%x%', 50]],
        ['by time', PG_DASHBOARD_SQL.byTime, [...w, 50]],
      ];
      const out: string[] = [];
      for (const [name, sql, a] of plans) out.push(`${name.padEnd(14)} ${await explain(sql, a)}`);
      return out;
    },
    describe: async () => {
      const size = Number(((await client.query('SELECT pg_database_size(current_database()) AS n')).rows[0] as { n: string }).n);
      const version = ((await client.query('SHOW server_version')).rows[0] as { server_version: string }).server_version;
      return `database ${(size / 2 ** 20).toFixed(0)} MiB; PostgreSQL ${version}${cluster ? ' (a private cluster, fsync off)' : ''}`;
    },
    close: async () => {
      await client.end();
      await cluster?.destroy();
    },
  };
}

async function main(): Promise<void> {
  const backend = POSTGRES ? await postgresBackend() : sqliteBackend();
  let made: Made | null = null;
  let fillSeconds: number | null = null;
  try {
    if (!(await backend.filled())) {
      const f = fill(() => backend.open());
      made = f.made;
      fillSeconds = f.seconds;
      // What autovacuum does soon after such a fill (insert-only tables are vacuumed too, since
      // PostgreSQL 13): the planner's statistics, and the visibility map that index-only scans need.
      if (POSTGRES) await backend.get('VACUUM (ANALYZE)', []);
    }
    const store = backend.open();
    const count = async (table: string): Promise<number> => (await backend.get<{ n: number }>(`SELECT count(*) AS n FROM ${table}`, []))!.n;
    const totals = { events: await count('events'), messages: await count('messages'), statRows: await count('dash_stats') };
    const sample = (await backend.get<Sample>(
      `SELECT m.id, m.message_id, m.sender, e.recipient FROM messages m JOIN events e ON e.queue_id = m.id AND e.type = 'queued' WHERE m.id >= ? ORDER BY m.id LIMIT 1`,
      [idTimePrefix(NOW - 15 * DAY)],
    ))!;
    const busySender = (await backend.get<{ sender: string }>('SELECT sender FROM messages WHERE sender = ? LIMIT 1', ['user0@s0.example.net']))?.sender ?? sample.sender;
    const rareSender = 'user19999@s399.example.net';

    const rows: Row[] = [];
    for (const range of ['hour', 'day', 'month'] as Range[]) {
      rows.push(time(`overview ${range}`, 200, () => overviewStats(store.dashboard, range, NOW).buckets.length));
    }
    const search = (q: Omit<SearchQuery, 'limit'>) => () => searchMessages(store.dashboard, { limit: 50, ...q }).messages.length;
    const day = NOW - 10 * DAY;
    const searches: [string, Omit<SearchQuery, 'limit'>][] = [
      ['search: busy sender', { q: busySender }],
      ['search: rare sender', { q: rareSender }],
      ['search: recipient', { q: sample.recipient }],
      ['search: Message-ID <…>', { q: sample.message_id }],
      ['search: Message-ID bare', { q: sample.message_id.slice(1, -1) }],
      ['search: queue id', { q: sample.id }],
      ['search: subject, common', { q: 'invoice' }],
      ['search: subject, rare', { q: '#4242' }],
      ['search: subject, absent', { q: 'no such words' }],
      ['search: one day', { since: day, until: day + DAY - 1 }],
      ['search: sender in a week', { q: busySender, since: NOW - 14 * DAY, until: NOW - 7 * DAY }],
      ['search: all, newest', {}],
    ];
    for (const [name, q] of searches) rows.push(time(name, 500, search(q)));
    const first = searchMessages(store.dashboard, { q: busySender, limit: 50 });
    rows.push(time('search: busy sender, page 2', 500, search({ q: busySender, before: first.next ?? undefined })));

    // GET /v1/events as the API reads it (store.queryEvents, a page of 100): an admin key, keys for the
    // busiest sender domain, the 10th and the 100th, one for a rare sender; from the oldest event and
    // from a cursor mid-month, and filtered by a rare type. Scoped reads walk the events first (store.ts,
    // SCOPED_FIRST_WALK); reads by a rare type walk only that type (RARE_TYPES).
    const keys: [string, EventScope][] = [
      ['admin key', { admin: true }],
      ['key of the busiest domain', { admin: false, sendAs: ['@s0.example.net'] }],
      ['key of the 10th domain', { admin: false, sendAs: ['@s9.example.net'] }],
      ['key of the 100th domain', { admin: false, sendAs: ['@s99.example.net'] }],
      ['key of a rare sender', { admin: false, sendAs: [rareSender] }],
    ];
    for (const [name, scope] of keys) {
      rows.push(time(`GET /v1/events: ${name}`, 200, () => store.queryEvents({ after: '', limit: 100, scope }).length));
      // A poll for complaints (none in this mix) or bounces: a rare type, through the events_type index.
      rows.push(time(`GET /v1/events: ${name}, ?type=complained`, 200, () => store.queryEvents({ after: '', limit: 100, type: 'complained', scope }).length));
      rows.push(time(`GET /v1/events: ${name}, ?type=bounced`, 200, () => store.queryEvents({ after: '', limit: 100, type: 'bounced', scope }).length));
      rows.push(time(`GET /v1/events: ${name}, mid-month`, 200, () => store.queryEvents({ after: eventIdFloor(NOW - 15 * DAY), limit: 100, scope }).length));
    }

    const planText = await backend.plans(busySender, sample);
    const out: string[] = [];
    out.push(`Dashboard queries, ${totals.events.toLocaleString('en')} events, ${totals.messages.toLocaleString('en')} messages, ${totals.statRows.toLocaleString('en')} aggregate rows, ${await backend.describe()}`);
    if (made) {
      const all = Object.values(made.mix).reduce((a, b) => a + b, 0);
      out.push(`mix: ${Object.entries(made.mix).map(([k, v]) => `${k} ${((100 * v) / all).toFixed(1)} %`).join(', ')}; fill ${fillSeconds!.toFixed(1)} s (${Math.round(all / fillSeconds!).toLocaleString('en')} events/s, batches of ${BATCH})`);
    }
    out.push(`node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'}; ${RUNS} warm runs each`);
    out.push('');
    out.push(`${'query'.padEnd(30)} ${'cold ms'.padStart(8)} ${'median ms'.padStart(10)} ${'max ms'.padStart(8)} ${'rows'.padStart(5)}  target`);
    for (const r of rows) {
      const ok = r.maxMs < r.limitMs && r.coldMs < r.limitMs ? 'ok' : 'OVER';
      out.push(`${r.name.padEnd(30)} ${r.coldMs.toFixed(1).padStart(8)} ${r.medianMs.toFixed(1).padStart(10)} ${r.maxMs.toFixed(1).padStart(8)} ${String(r.rows).padStart(5)}  < ${r.limitMs} ms ${ok}`);
    }
    out.push('');
    out.push('query plans:');
    out.push(...planText.map((p) => `  ${p}`));
    console.log(out.join('\n'));
    if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify({ store: POSTGRES ? 'postgres' : 'sqlite', totals, mix: made?.mix ?? null, fillSeconds, rows, plans: planText }, null, 2));
    store.close();
  } finally {
    await backend.close();
  }
}

await main();
