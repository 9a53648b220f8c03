// The PostgreSQL store (issue 17, `store: { postgres: URL }`): the Store
// interface of src/store/store.ts over a database that several Tern nodes
// share. This file holds the main tables (users, greylist, API keys, events
// and messages, Idempotency-Key entries); each other part is its own file,
// as in the embedded store. Every method answers exactly as SqliteStore's
// does (the same shapes, order and case handling): the store tests run
// against both (src/store/store.test.ts).
//
// One connection (sync-client.ts), so nothing of this process interleaves
// with a statement or a transaction. The concurrency to think about is other
// nodes', under PostgreSQL's default READ COMMITTED isolation, where each
// statement sees what was committed when it started. Where SqliteStore reads
// and then writes relying on SQLite's single writer, this store uses one
// atomic statement (INSERT … ON CONFLICT) or locks the row it read
// (SELECT … FOR UPDATE): see "Read Committed Isolation Level" in
// https://www.postgresql.org/docs/15/transaction-iso.html#XACT-READ-COMMITTED
// and https://www.postgresql.org/docs/15/sql-insert.html#SQL-ON-CONFLICT.

import type {
  ApiKeyRecord,
  EventQuery,
  EventScope,
  GreylistEntry,
  IdempotencyEntry,
  MessageRecord,
  Store,
  StoredEvent,
  UserRecord,
  WatchedTable,
} from '../store.ts';
import { keyFromRow, RARE_TYPES, rareType, senderForms, userFromRow, type ApiKeyRow, type UserRow } from '../store.ts';
import { eventIdFloor, type MessageEvent } from '../../events/events.ts';
import type { WebhookStore } from '../webhooks.ts';
import type { SuppressionStore } from '../suppressions.ts';
import type { DashboardStore } from '../dashboard.ts';
import type { MtaStsStore } from '../mta-sts.ts';
import type { TlsReportStore } from '../tls-reports.ts';
import type { DkimKeyTable } from '../../intake/dkim-store.ts';
import { PgError, SyncPgClient } from './sync-client.ts';
import { migrate } from './schema.ts';
import { pgTransaction, type Transaction } from './tx.ts';
import { pgWebhookStore } from './webhooks.ts';
import { pgSuppressionStore } from './suppressions.ts';
import { pgDashboardStore } from './dashboard.ts';
import { pgMtaStsStore } from './mta-sts.ts';
import { pgTlsReportStore } from './tls-reports.ts';
import { pgDkimKeyTable } from './dkim-keys.ts';
import { pgSharedCountTable } from './shared-counts.ts';
import type { SharedCountTable } from '../../policy/shared-counts.ts';

/** Bound of the per-process memory of messages already recorded, as the embedded store's (a clear costs only repeated upserts). */
const KNOWN_MESSAGES_MAX = 100_000;
/**
 * Rows per INSERT when writing a batch of events. A batch (up to 2,000
 * events every 100 ms, src/api/events-store.ts) costs a few statements, not
 * one per event; 500 rows of 7 columns stay far below PostgreSQL's 65,535
 * parameters per statement (the protocol's Int16 count).
 */
const INSERT_CHUNK_ROWS = 500;
/**
 * A claim that finds the entry deleted between its INSERT and its SELECT
 * (released or expired by another node) tries again; more than this many
 * such losses in a row is not contention but a fault.
 */
const CLAIM_ATTEMPTS = 5;

export function openPgStore(url: string): Store {
  const db = new SyncPgClient(url);
  try {
    migrate(db);
  } catch (e) {
    db.close();
    throw e;
  }
  return new PgStore(db);
}

interface IdempotencyRow {
  body_hash: string;
  created_at: number;
  status: number | null;
  response: string | null;
}

const USER_COLUMNS = 'address, password_hash, send_as, messages_per_hour, recipients_per_message, created_at, admin';
const API_KEY_COLUMNS = 'name, hash, send_as, admin, created_at, messages_per_hour';

class PgStore implements Store {
  readonly #db: SyncPgClient;
  readonly #tx: Transaction;
  #depth = 0;
  /**
   * Queue ids whose messages row this process has written (bounded), with
   * the sender forms written there: later events of the message skip the
   * upsert, and carry the message's forms (schema step 5).
   */
  readonly #known = new Map<string, { domain: string; base: string }>();
  /** Queue ids added to #known in the open transaction: forgotten again if it rolls back, since their rows never landed. */
  #knownInTx: string[] = [];
  #webhooks: WebhookStore | undefined;
  #suppressions: SuppressionStore | undefined;
  #dashboard: DashboardStore | undefined;
  #mtaSts: MtaStsStore | undefined;
  #tlsReports: TlsReportStore | undefined;
  #dkimKeys: DkimKeyTable | undefined;
  #sharedCounts: SharedCountTable | undefined;
  /** onChange's callbacks, by table. */
  readonly #watchers = new Map<WatchedTable, Set<() => void>>();

  constructor(db: SyncPgClient) {
    this.#db = db;
    this.#tx = pgTransaction(db);
    // Notifications sent while the LISTEN connection was down are lost for good: every cache drops everything.
    db.onListenLost = () => {
      for (const fns of this.#watchers.values()) for (const fn of [...fns]) fn();
    };
  }

  /**
   * `fn` after any committed change to `table`, by any node or a psql
   * session: the schema's statement triggers send NOTIFY tern_<table>
   * (schema.ts), heard on the client's LISTEN connection between event-loop
   * turns; and whenever that connection was lost, since notifications may
   * have gone missing then.
   */
  onChange(table: WatchedTable, fn: () => void): () => void {
    const fns = this.#watchersOf(table);
    fns.add(fn);
    return () => void fns.delete(fn);
  }

  #watchersOf(table: WatchedTable): Set<() => void> {
    const known = this.#watchers.get(table);
    if (known) return known;
    const fns = new Set<() => void>();
    this.#db.listen(`tern_${table}`, () => {
      for (const fn of [...fns]) fn();
    });
    this.#watchers.set(table, fns);
    return fns;
  }

  // The other parts, each built on first use and kept: a part that cannot
  // be built yet leaves the rest of the store usable.

  get webhooks(): WebhookStore {
    return (this.#webhooks ??= pgWebhookStore(this.#db, (fn) => this.transaction(fn)));
  }

  get suppressions(): SuppressionStore {
    return (this.#suppressions ??= pgSuppressionStore(this.#db, (fn) => this.transaction(fn)));
  }

  get dashboard(): DashboardStore {
    return (this.#dashboard ??= pgDashboardStore(this.#db, (fn) => this.transaction(fn)));
  }

  get mtaSts(): MtaStsStore {
    return (this.#mtaSts ??= pgMtaStsStore(this.#db));
  }

  get tlsReports(): TlsReportStore {
    return (this.#tlsReports ??= pgTlsReportStore(this.#db, (fn) => this.transaction(fn)));
  }

  /** Rate and failure counts of every node (src/policy/shared-counts.ts). */
  get sharedCounts(): SharedCountTable {
    return (this.#sharedCounts ??= pgSharedCountTable(this.#db));
  }

  /** DKIM signing keys, shared by every node (the embedded store leaves them in dataDir/dkim/). */
  get dkimKeys(): DkimKeyTable {
    return (this.#dkimKeys ??= pgDkimKeyTable(this.#db, (fn) => void this.onChange('dkim_keys', fn)));
  }

  // Users

  getUser(address: string): UserRecord | null {
    const row = this.#db.one<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE address = $1`, [address.toLowerCase()]);
    return row ? userFromRow(row) : null;
  }

  putUser(u: UserRecord): void {
    // Every column replaced, as SQLite's INSERT OR REPLACE does; one statement, so two nodes writing the same user never collide on the key.
    this.#db.query(
      `INSERT INTO users (${USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (address) DO UPDATE SET password_hash = EXCLUDED.password_hash, send_as = EXCLUDED.send_as,
         messages_per_hour = EXCLUDED.messages_per_hour, recipients_per_message = EXCLUDED.recipients_per_message,
         created_at = EXCLUDED.created_at, admin = EXCLUDED.admin`,
      [u.address.toLowerCase(), u.passwordHash, JSON.stringify(u.sendAs), u.messagesPerHour ?? null, u.recipientsPerMessage ?? null, u.createdAt, u.admin ? 1 : 0],
    );
  }

  deleteUser(address: string): boolean {
    return this.#db.query('DELETE FROM users WHERE address = $1', [address.toLowerCase()]).rowCount > 0;
  }

  listUsers(): UserRecord[] {
    // COLLATE "C": byte order, as SQLite's BINARY sorts, whatever the database's locale (en_US would ignore '.', '@' and '+').
    return this.#db.rows<UserRow>(`SELECT ${USER_COLUMNS} FROM users ORDER BY address COLLATE "C"`).map(userFromRow);
  }

  // Greylist

  getGreylist(triplet: string): GreylistEntry | null {
    const row = this.#db.one<{ first_seen: number; passed_at: number | null; expires: number }>(
      'SELECT first_seen, passed_at, expires FROM greylist WHERE triplet = $1',
      [triplet],
    );
    return row ? { firstSeen: row.first_seen, passedAt: row.passed_at, expires: row.expires } : null;
  }

  putGreylist(triplet: string, e: GreylistEntry): void {
    // An atomic upsert: the last writer wins, as with INSERT OR REPLACE. Two
    // nodes deciding on the same triplet at once (policy/greylist.ts reads,
    // decides, then writes) both saw the same entry and so decide alike; the
    // worst a race can do is restart a round, i.e. one more 450.
    this.#db.query(
      `INSERT INTO greylist (triplet, first_seen, passed_at, expires) VALUES ($1, $2, $3, $4)
       ON CONFLICT (triplet) DO UPDATE SET first_seen = EXCLUDED.first_seen, passed_at = EXCLUDED.passed_at, expires = EXCLUDED.expires`,
      [triplet, e.firstSeen, e.passedAt, e.expires],
    );
  }

  expireGreylist(now: number): number {
    return this.#db.query('DELETE FROM greylist WHERE expires < $1', [now]).rowCount;
  }

  // API keys

  addApiKey(k: ApiKeyRecord): boolean {
    // No conflict target: a taken name and a taken hash are both "not added", as INSERT OR IGNORE treats every unique constraint.
    const r = this.#db.query(
      `INSERT INTO api_keys (${API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
      [k.name, k.hash, JSON.stringify(k.sendAs), k.admin ? 1 : 0, k.createdAt, k.messagesPerHour ?? null],
    );
    return r.rowCount > 0;
  }

  apiKeyByHash(hash: string): ApiKeyRecord | null {
    const row = this.#db.one<ApiKeyRow>(`SELECT ${API_KEY_COLUMNS} FROM api_keys WHERE hash = $1`, [hash]);
    return row ? keyFromRow(row) : null;
  }

  listApiKeys(): ApiKeyRecord[] {
    return this.#db.rows<ApiKeyRow>(`SELECT ${API_KEY_COLUMNS} FROM api_keys ORDER BY name COLLATE "C"`).map(keyFromRow);
  }

  revokeApiKey(name: string): boolean {
    return this.#db.query('DELETE FROM api_keys WHERE name = $1', [name]).rowCount > 0;
  }

  // Events

  transaction<T>(fn: () => T): T {
    if (this.#depth > 0) return fn();
    this.#depth++;
    try {
      return this.#tx(fn);
    } catch (e) {
      // Rolled back: the messages rows written in it are not there, so the next event of those messages must write them again.
      for (const id of this.#knownInTx) this.#known.delete(id);
      throw e;
    } finally {
      this.#depth--;
      this.#knownInTx = [];
    }
  }

  commitAsync<T>(fn: () => T): Promise<T> {
    // Inside a synchronous transaction: simply part of it.
    if (this.#depth > 0) return Promise.resolve(fn());
    let captured: { out: T; items: { sql: string; params: unknown[] }[] };
    // Nested transaction() calls in fn (addEvents, the outbox, the counters) join this one: depth > 0.
    this.#depth++;
    try {
      captured = this.#db.capture(fn);
    } catch (e) {
      for (const id of this.#knownInTx) this.#known.delete(id);
      this.#knownInTx = [];
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    } finally {
      this.#depth--;
    }
    const known = this.#knownInTx;
    this.#knownInTx = [];
    if (captured.items.length === 0) return Promise.resolve(captured.out);
    const items = [{ sql: 'BEGIN', params: [] }, ...captured.items, { sql: 'COMMIT', params: [] }];
    return this.#db.batchAsync(items).then(
      (r) => {
        if (r.command === 'ROLLBACK') throw new PgError('the transaction was rolled back: a statement in it failed', '25P02');
        return captured.out;
      },
    ).catch((e: unknown) => {
      // Not written: the messages rows of this batch must be written again with its next try.
      for (const id of known) this.#known.delete(id);
      throw e;
    });
  }

  addEvents(events: StoredEvent[]): void {
    if (events.length === 0) return;
    this.transaction(() => {
      const eventRows: unknown[][] = [];
      const messageRows: unknown[][] = [];
      for (const { event, sender, subject, messageId } of events) {
        let forms = this.#known.get(event.queueId);
        if (forms === undefined) {
          // Once per message (per process), from its first event here: the sender and its forms for scoped reads.
          const f = senderForms(sender);
          forms = { domain: f.domain, base: f.base };
          if (this.#known.size >= KNOWN_MESSAGES_MAX) this.#known.clear();
          this.#known.set(event.queueId, forms);
          this.#knownInTx.push(event.queueId);
          messageRows.push([event.queueId, f.sender, f.base, f.domain, Date.parse(event.timestamp), subject ?? null, messageId ?? null]);
        }
        // The message's sender forms on each of its events too (schema step 5): a key's events are one index range.
        eventRows.push([event.id, event.queueId, event.type, event.recipient.toLowerCase(), JSON.stringify(event), forms.domain, forms.base]);
      }
      // Rows in key order: two transactions that lock some of the same keys
      // (say a node writing again what it wrote before a restart while
      // another expires them) take those locks in the same order, so they
      // never wait on each other in a cycle (a deadlock, which PostgreSQL
      // breaks by failing one of them).
      eventRows.sort(byFirstColumn);
      messageRows.sort(byFirstColumn);
      for (let i = 0; i < eventRows.length; i += INSERT_CHUNK_ROWS) {
        const chunk = eventRows.slice(i, i + INSERT_CHUNK_ROWS);
        // DO NOTHING, as INSERT OR IGNORE: an event written twice (a retried batch) stays the first.
        this.#db.defer(
          `INSERT INTO events (id, queue_id, type, recipient, body, sender_domain, sender_base) VALUES ${placeholders(chunk.length, 7)} ON CONFLICT (id) DO NOTHING`,
          chunk.flat(),
        );
      }
      for (let i = 0; i < messageRows.length; i += INSERT_CHUNK_ROWS) {
        const chunk = messageRows.slice(i, i + INSERT_CHUNK_ROWS);
        // After a restart (or a cleared #known) the same message's row comes
        // again and replaces itself, keeping its first time and a Message-ID
        // once known, as the embedded store's upsert does. Each id is in a
        // statement at most once (#known), which DO UPDATE requires.
        // A row replaced so (xmax is set only on the DO UPDATE path) may now
        // have other sender forms: its earlier events follow it, so a key sees
        // a message's events exactly when it sees the message (schema step 5).
        // A new row, the usual case, costs the events table nothing more.
        this.#db.defer(
          `WITH up AS (
             INSERT INTO messages (id, sender, sender_base, sender_domain, created_at, subject, message_id) VALUES ${placeholders(chunk.length, 7)}
             ON CONFLICT (id) DO UPDATE SET sender = EXCLUDED.sender, sender_base = EXCLUDED.sender_base, sender_domain = EXCLUDED.sender_domain,
               subject = EXCLUDED.subject, message_id = coalesce(EXCLUDED.message_id, messages.message_id)
             RETURNING id, sender_domain, sender_base, xmax <> 0 AS replaced)
           UPDATE events e SET sender_domain = up.sender_domain, sender_base = up.sender_base FROM up
           WHERE up.replaced AND e.queue_id = up.id AND (e.sender_domain IS DISTINCT FROM up.sender_domain OR e.sender_base IS DISTINCT FROM up.sender_base)`,
          chunk.flat(),
        );
      }
    });
  }

  queryEvents(q: EventQuery): MessageEvent[] {
    const p = new Params();
    const after = p.add(q.after);
    const filters: string[] = [];
    if (q.type !== undefined) filters.push(`type = ${p.add(q.type)}`);
    if (q.recipient !== undefined) filters.push(`recipient = ${p.add(q.recipient.toLowerCase())}`);
    // The events_type index's own condition, so a generic plan may use it too.
    if (q.type !== undefined && rareType(q.type)) filters.push(RARE_TYPES);
    const filter = filters.map((f) => ` AND ${f}`).join('');
    const parse = (rows: { body: string }[]): MessageEvent[] => rows.map((r) => JSON.parse(r.body) as MessageEvent);
    // Event ids are fixed-width lower-case base32 (events.ts): every collation orders them as bytes do, so the primary key serves the order.
    if (q.scope.admin) return parse(this.#db.rows<{ body: string }>(`SELECT body FROM events WHERE id > ${after}${filter} ORDER BY id LIMIT ${p.add(q.limit)}`, p.values));
    const forms = scopeOnEvents(q.scope);
    if (forms === null) {
      // A +tag address in the send-as: matched on the message's exact sender, which only messages keep.
      const where = filters.map((f) => ` AND e.${f}`).join('');
      const sql = `SELECT e.body FROM events e JOIN messages m ON m.id = e.queue_id WHERE e.id > ${after}${where} AND ${scopeClause(q.scope, p)} ORDER BY e.id LIMIT ${p.add(q.limit)}`;
      return parse(this.#db.rows<{ body: string }>(sql, p.values));
    }
    if (forms.length === 0) return [];
    const scope = forms.map((f) => `${f.column} = ${p.add(f.value)}`);
    const limit = p.add(q.limit);
    // One ordered index range per form of the scope (events_sender_domain,
    // events_sender_base), each at most a page long; with several, the page
    // is the first `limit` ids of their union (a message may match two).
    const branch = (cond: string, cols: string) => `(SELECT ${cols} FROM events WHERE ${cond} AND id > ${after}${filter} ORDER BY id LIMIT ${limit})`;
    const sql =
      scope.length === 1
        ? branch(scope[0]!, 'body')
        : `SELECT body FROM events WHERE id IN (SELECT id FROM (${scope.map((c) => branch(c, 'id')).join(' UNION ')}) AS u ORDER BY id LIMIT ${limit}) ORDER BY id`;
    return parse(this.#db.rows<{ body: string }>(sql, p.values));
  }

  messageEvents(queueId: string, scope: EventScope): { message: MessageRecord; events: MessageEvent[] } | null {
    const p = new Params();
    const m = this.#db.one<{ id: string; sender: string; message_id: string | null; created_at: number; subject: string | null }>(
      `SELECT m.id, m.sender, m.message_id, m.created_at, m.subject FROM messages m WHERE m.id = ${p.add(queueId)} AND ${scopeClause(scope, p)}`,
      p.values,
    );
    if (!m) return null;
    const rows = this.#db.rows<{ body: string }>('SELECT body FROM events WHERE queue_id = $1 ORDER BY id', [queueId]);
    // A message without events is, for this reader, not there at all.
    if (rows.length === 0) return null;
    return {
      message: { id: m.id, sender: m.sender, messageId: m.message_id, createdAt: m.created_at, subject: m.subject },
      events: rows.map((r) => JSON.parse(r.body) as MessageEvent),
    };
  }

  expireEvents(before: number, max: number): number {
    // Bounded, oldest first, as the embedded store's. SKIP LOCKED: when two
    // nodes run retention at once, each takes rows the other is not already
    // deleting instead of queueing behind it and then finding them gone.
    const n = this.#db.query(
      'DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)',
      [eventIdFloor(before), max],
    ).rowCount;
    this.#db.query('DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)', [before, max]);
    return n;
  }

  // Idempotency keys

  claimIdempotency(apiKey: string, idemKey: string, bodyHash: string, now: number, isStale: (e: IdempotencyEntry) => boolean): IdempotencyEntry | null {
    for (let attempt = 1; ; attempt++) {
      // A new key: one atomic statement. When two nodes insert the same key
      // at once, the second waits for the first to commit, then does
      // nothing: exactly one claim.
      const claimed = this.#db.query(
        `INSERT INTO idempotency (api_key, idem_key, body_hash, created_at, status, response) VALUES ($1, $2, $3, $4, NULL, NULL)
         ON CONFLICT (api_key, idem_key) DO NOTHING`,
        [apiKey, idemKey, bodyHash, now],
      );
      if (claimed.rowCount > 0) return null;
      // The key has an entry: lock it, then judge it (`isStale` is the
      // caller's code). A node replacing a stale entry at the same moment
      // holds the lock; this one then reads the entry it made (READ
      // COMMITTED re-reads a row whose lock it waited for) and finds it live.
      const out = this.transaction((): IdempotencyEntry | null | undefined => {
        const row = this.#db.one<IdempotencyRow>(
          'SELECT body_hash, created_at, status, response FROM idempotency WHERE api_key = $1 AND idem_key = $2 FOR UPDATE',
          [apiKey, idemKey],
        );
        if (!row) return undefined; // gone since the INSERT: released or expired elsewhere
        const entry = idempotencyFromRow(row);
        if (!isStale(entry)) return entry;
        this.#db.query('UPDATE idempotency SET body_hash = $3, created_at = $4, status = NULL, response = NULL WHERE api_key = $1 AND idem_key = $2', [
          apiKey,
          idemKey,
          bodyHash,
          now,
        ]);
        return null;
      });
      if (out !== undefined) return out;
      if (attempt >= CLAIM_ATTEMPTS) throw new Error(`Idempotency-Key claim: the entry kept vanishing (${CLAIM_ATTEMPTS} attempts)`);
    }
  }

  finishIdempotency(apiKey: string, idemKey: string, response: { status: number; body: string }): void {
    this.#db.query('UPDATE idempotency SET status = $3, response = $4 WHERE api_key = $1 AND idem_key = $2', [apiKey, idemKey, response.status, response.body]);
  }

  releaseIdempotency(apiKey: string, idemKey: string): void {
    this.#db.query('DELETE FROM idempotency WHERE api_key = $1 AND idem_key = $2 AND status IS NULL', [apiKey, idemKey]);
  }

  expireIdempotency(before: number, max: number): number {
    // Bounded like the events' retention: oldest first, through the created_at index; SKIP LOCKED for the same reason.
    return this.#db.query(
      `DELETE FROM idempotency WHERE (api_key, idem_key) IN
         (SELECT api_key, idem_key FROM idempotency WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      [before, max],
    ).rowCount;
  }

  close(): void {
    this.#db.close();
  }
}

/** Numbered parameters for a statement built from parts: the SQL gets `$n`, never a value. */
class Params {
  readonly values: unknown[] = [];

  add(v: unknown): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }
}

function byFirstColumn(a: unknown[], b: unknown[]): number {
  const x = a[0] as string;
  const y = b[0] as string;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** `($1, $2), ($3, $4)` for `rows` rows of `width` columns. */
function placeholders(rows: number, width: number): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    const cols: string[] = [];
    for (let c = 1; c <= width; c++) cols.push(`$${r * width + c}`);
    out.push(`(${cols.join(', ')})`);
  }
  return out.join(', ');
}

/**
 * A key's scope as conditions on the events' own columns (schema step 5),
 * one per index range: a domain matches sender_domain; an address matches
 * sender_base, which also covers the address itself (its base is itself).
 * Null when an address has a +tag: that one is matched on the message's
 * exact sender (scopeClause), which events do not carry.
 */
function scopeOnEvents(scope: { sendAs: readonly string[] }): { column: 'sender_domain' | 'sender_base'; value: string }[] | null {
  const conditions: { column: 'sender_domain' | 'sender_base'; value: string }[] = [];
  for (const s of new Set(scope.sendAs.map((x) => x.toLowerCase()))) {
    if (s.startsWith('@')) conditions.push({ column: 'sender_domain', value: s });
    else if (senderForms(s).base !== s) return null;
    else conditions.push({ column: 'sender_base', value: s });
  }
  return conditions;
}

/**
 * The SQL condition for what `scope` may read, as the embedded store's
 * scopeClause (store.ts) and mayUseAddress (src/policy/senders.ts): '@domain'
 * covers the domain, an address covers itself and its plus-tagged forms.
 * Each list is one array parameter, so the statement's text does not vary
 * with the number of patterns.
 */
function scopeClause(scope: EventScope, p: Params): string {
  if (scope.admin) return 'TRUE';
  const domains = scope.sendAs.filter((s) => s.startsWith('@')).map((s) => s.toLowerCase());
  const addresses = scope.sendAs.filter((s) => !s.startsWith('@')).map((s) => s.toLowerCase());
  const parts: string[] = [];
  if (domains.length > 0) parts.push(`m.sender_domain = ANY(${p.add(domains)}::text[])`);
  if (addresses.length > 0) {
    const a = p.add(addresses);
    parts.push(`m.sender = ANY(${a}::text[])`, `m.sender_base = ANY(${a}::text[])`);
  }
  return parts.length === 0 ? 'FALSE' : `(${parts.join(' OR ')})`;
}

function idempotencyFromRow(r: IdempotencyRow): IdempotencyEntry {
  return { bodyHash: r.body_hash, createdAt: r.created_at, response: r.status === null ? null : { status: r.status, body: r.response ?? '' } };
}
