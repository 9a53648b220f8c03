// Embedded state on node:sqlite. Callers see only the `UserStore` interface,
// so a shared database (PostgreSQL, for several Tern nodes) can serve it
// later. One file, <dataDir>/tern.db, in WAL mode: the server and the `tern`
// CLI open it at the same time, readers never block the writer, and a busy
// timeout turns the rare writer/writer collision into a short wait.

import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { eventIdFloor, type MessageEvent } from '../events/events.ts';
import { SqliteWebhookStore, WEBHOOK_SCHEMA, type WebhookStore } from './webhooks.ts';
import { SqliteSuppressionStore, SUPPRESSION_SCHEMA, type SuppressionStore } from './suppressions.ts';
import { SqliteDashboardStore, DASHBOARD_SCHEMA, type DashboardStore } from './dashboard.ts';
import { SqliteMtaStsStore, MTA_STS_SCHEMA, type MtaStsStore } from './mta-sts.ts';
import type { DkimKeyTable } from '../intake/dkim-store.ts';
import type { SharedCountTable } from '../policy/shared-counts.ts';
import { SqliteTlsReportStore, TLS_REPORT_SCHEMA, type TlsReportStore } from './tls-reports.ts';

export interface UserRecord {
  /** Lower-case local@domain; the login name (RFC 4954 authcid). */
  address: string;
  /** PHC string from passwords.ts; never printed. */
  passwordHash: string;
  /** Addresses or '@domain' patterns the user may send as (RFC 6409 §8.1); the own address is always allowed. */
  sendAs: string[];
  messagesPerHour?: number | undefined;
  recipientsPerMessage?: number | undefined;
  /** May log in to the dashboard (`tern user add --admin`). */
  admin?: boolean | undefined;
  /** Epoch milliseconds. */
  createdAt: number;
}

export interface UserStore {
  /** `address` is matched case-insensitively. */
  getUser(address: string): UserRecord | null;
  /** Insert or replace (the address is lower-cased). */
  putUser(u: UserRecord): void;
  deleteUser(address: string): boolean;
  /** Sorted by address. */
  listUsers(): UserRecord[];
  close(): void;
}

/** One greylisting triplet's state (policy/greylist.ts owns the meaning). Times are epoch ms. */
export interface GreylistEntry {
  /** The first attempt of the current round. */
  firstSeen: number;
  /** When a retry was let through; null while the triplet is still waiting. */
  passedAt: number | null;
  /** When the entry may be forgotten. */
  expires: number;
}

export interface GreylistStore {
  getGreylist(triplet: string): GreylistEntry | null;
  putGreylist(triplet: string, e: GreylistEntry): void;
  /** Forget entries that expired before `now`; returns how many went. */
  expireGreylist(now: number): number;
}

/** An HTTP API key (src/api/): only the SHA-256 of the key is kept. */
export interface ApiKeyRecord {
  name: string;
  /** Hex SHA-256 of the whole key string (`tern_…`). */
  hash: string;
  /** Addresses or '@domain' patterns the key may send as, and whose mail it may read. */
  sendAs: string[];
  /** Reads every message and event, whatever the sender. */
  admin: boolean;
  /** Messages per sliding hour (0: no limit); undefined: submission.messagesPerHour, as for users. */
  messagesPerHour?: number | undefined;
  /** Epoch milliseconds. */
  createdAt: number;
}

export interface ApiKeyStore {
  /** False when the name is taken. */
  addApiKey(k: ApiKeyRecord): boolean;
  apiKeyByHash(hash: string): ApiKeyRecord | null;
  /** Sorted by name. */
  listApiKeys(): ApiKeyRecord[];
  revokeApiKey(name: string): boolean;
}

/** One stored event: the event as the stream made it, and its message's envelope sender (for scoping). */
export interface StoredEvent {
  event: MessageEvent;
  /** Lower-cased reverse-path; '' for bounces. */
  sender: string;
  /** The message's Subject and Message-ID (Envelope.subject, .messageId), when known: kept with the message. */
  subject?: string | undefined;
  messageId?: string | undefined;
}

/** What a reader may see: every message (admin), or those whose envelope sender one of `sendAs` covers. */
export type EventScope = { admin: true } | { admin: false; sendAs: string[] };

export interface EventQuery {
  /** Event id to start after (exclusive); '' from the oldest. */
  after: string;
  type?: string | undefined;
  recipient?: string | undefined;
  limit: number;
  scope: EventScope;
  /** The embedded store's plan for a scoped read (SCOPED_FEW_MESSAGES, SCOPED_FIRST_WALK, SCOPED_WALK_ROWS); tests make them small. */
  walkRows?: { few?: number; first: number; longest: number } | undefined;
}

/**
 * A scoped read (a key that is not admin) of a key with many messages
 * (SCOPED_FEW_MESSAGES or more) first walks the events in id order from the
 * cursor, keeping those of messages in scope: a key that sent much of the
 * mail fills its page within a few hundred rows. The first walk covers
 * SCOPED_FIRST_WALK events; if the key's share of them says a page fills
 * within SCOPED_WALK_ROWS, a second walk that long follows. Otherwise, and
 * at once for a key with few messages, the read goes through the sender
 * indexes of messages, which sorts the key's events after the cursor: few,
 * for such a key. Before, every scoped page took that way: 216 ms for the
 * busiest sender domain of a million events (bench/dashboard.ts), on the
 * event loop. A walked event costs about 1 µs (its message's lookup).
 */
export const SCOPED_FIRST_WALK = 1000;
/** The longest walk: at about 1 µs an event, 50 ms at the most. */
export const SCOPED_WALK_ROWS = 50_000;
/**
 * A key with fewer messages than this goes through the sender indexes at
 * once: sorting its events costs less than a walk would. Counting up to it
 * is one bounded index range.
 */
export const SCOPED_FEW_MESSAGES = 2000;

/**
 * The condition of the events_type index (both stores): event types other
 * than the two every message has. A read filtered by one of those types
 * (complaints, bounces) walks only them, instead of every event from the
 * cursor on: 408 ms for `type=complained` among a million events without
 * it (bench/dashboard.ts). queued and delivered are left out, as they are dense (a page fills
 * from the primary key at once) and the index would cost their writes.
 * SQLite uses a partial index only for a query that names its condition, so
 * reads add RARE_TYPES to their WHERE.
 */
export const RARE_TYPES = "type NOT IN ('queued', 'delivered')";
const DENSE_TYPES: ReadonlySet<string> = new Set(['queued', 'delivered']);

/** Whether a read filtered by `type` goes through the events_type index. */
export function rareType(type: string): boolean {
  return !DENSE_TYPES.has(type);
}

export interface MessageRecord {
  id: string;
  sender: string;
  /** The Message-ID header as the API sent it; null when not known (mail from SMTP). */
  messageId: string | null;
  /** Epoch ms of the first stored event. */
  createdAt: number;
  /** The Subject, when the message had one. */
  subject: string | null;
}

export interface EventStore {
  /**
   * Runs `fn` in one transaction (all or nothing) and returns its result.
   * Nested calls join the outer transaction: the events writer and what it
   * writes alongside (the webhook outbox) commit together.
   */
  transaction<T>(fn: () => T): T;
  /**
   * Like transaction(), for writes only, without waiting for the commit:
   * `fn` runs now and what it writes commits (all or nothing) by the time
   * the promise resolves. Reads inside `fn` are answered at once, outside
   * the transaction. Optional: a store whose commits are local and quick
   * (the embedded one) leaves it out and the caller uses transaction().
   * The PostgreSQL store has it, so the events batches (a round trip and
   * the server's commit) never hold up the event loop (issue 17).
   */
  commitAsync?<T>(fn: () => T): Promise<T>;
  /** One transaction (joining the caller's, if any): all or nothing. */
  addEvents(events: StoredEvent[]): void;
  /** Oldest first. */
  queryEvents(q: EventQuery): MessageEvent[];
  /** The message and its events (oldest first), if `scope` may read it. */
  messageEvents(queueId: string, scope: EventScope): { message: MessageRecord; events: MessageEvent[] } | null;
  /** Deletes up to `max` events (and messages) older than `before` (epoch ms); returns how many events went. */
  expireEvents(before: number, max: number): number;
}

/** A stored Idempotency-Key use (src/api/idempotency.ts owns the meaning). Times are epoch ms. */
export interface IdempotencyEntry {
  /** Hex SHA-256 of the route and the canonical request body. */
  bodyHash: string;
  /** When the first request claimed the key. */
  createdAt: number;
  /** The first response, once there is one; null while the first request is in flight. */
  response: { status: number; body: string } | null;
}

export interface IdempotencyStore {
  /**
   * In one transaction: when (apiKey, idemKey) has no entry, or only one
   * that `isStale` gives up, records a new in-flight entry and returns null;
   * otherwise returns the live entry untouched.
   */
  claimIdempotency(apiKey: string, idemKey: string, bodyHash: string, now: number, isStale: (e: IdempotencyEntry) => boolean): IdempotencyEntry | null;
  /** Records the first response of a claimed entry. */
  finishIdempotency(apiKey: string, idemKey: string, response: { status: number; body: string }): void;
  /** Forgets a claimed entry (the first request failed in a way worth retrying). */
  releaseIdempotency(apiKey: string, idemKey: string): void;
  /** Deletes up to `max` entries created before `before`; returns how many went. */
  expireIdempotency(before: number, max: number): number;
}

/** Tables whose changes a shared store announces to every node (PostgreSQL: LISTEN/NOTIFY). */
export type WatchedTable = 'users' | 'api_keys' | 'suppressions' | 'dkim_keys' | 'webhooks';

/** Everything the embedded database holds. */
export interface Store extends UserStore, GreylistStore, ApiKeyStore, EventStore, IdempotencyStore {
  /**
   * Shared stores only (absent on the embedded one): `fn` runs after any
   * change to `table`, by any node, and also when announcements may have
   * been missed (the connection that listens was lost), so a cache built on
   * it drops everything then. Returns the function that stops it.
   */
  onChange?(table: WatchedTable, fn: () => void): () => void;
  /** Shared stores only: DKIM signing keys for every node (the embedded store leaves them in dataDir/dkim/). */
  readonly dkimKeys?: DkimKeyTable | undefined;
  /** Shared stores only: the rate and failure counts of every node (src/policy/shared-counts.ts). */
  readonly sharedCounts?: SharedCountTable | undefined;
  readonly webhooks: WebhookStore;
  readonly suppressions: SuppressionStore;
  readonly dashboard: DashboardStore;
  readonly mtaSts: MtaStsStore;
  readonly tlsReports: TlsReportStore;
}

export const STORE_FILE = 'tern.db';
/** Bound of the per-process memory of messages already recorded (a clear costs only repeated upserts). */
const KNOWN_MESSAGES_MAX = 100_000;
/** How long a writer waits for another process's write lock before SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

/** Schema steps; version N is MIGRATIONS[N-1]. Append only, never edit a released step. A step is SQL, or code for what SQL says badly. */
const MIGRATIONS: (string | ((db: DatabaseSync) => void))[] = [
  `CREATE TABLE users (
     address TEXT PRIMARY KEY NOT NULL,
     password_hash TEXT NOT NULL,
     send_as TEXT NOT NULL DEFAULT '[]',
     messages_per_hour INTEGER,
     recipients_per_message INTEGER,
     created_at INTEGER NOT NULL
   ) STRICT`,
  `CREATE TABLE greylist (
     triplet TEXT PRIMARY KEY NOT NULL,
     first_seen INTEGER NOT NULL,
     passed_at INTEGER,
     expires INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX greylist_expires ON greylist (expires)`,
  // Event ids sort by time (events.ts), so the primary key is also the
  // time order: paging and retention both walk it, no timestamp index.
  // sender_domain ('@example.org') and sender_base (plus-tag removed) let a
  // key's send-as patterns select rows through indexes.
  `CREATE TABLE api_keys (
     name TEXT PRIMARY KEY NOT NULL,
     hash TEXT NOT NULL UNIQUE,
     send_as TEXT NOT NULL DEFAULT '[]',
     admin INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL
   ) STRICT;
   CREATE TABLE events (
     id TEXT PRIMARY KEY NOT NULL,
     queue_id TEXT NOT NULL,
     type TEXT NOT NULL,
     recipient TEXT NOT NULL,
     sender TEXT NOT NULL,
     sender_base TEXT NOT NULL,
     sender_domain TEXT NOT NULL,
     body TEXT NOT NULL
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX events_queue ON events (queue_id, id);
   CREATE INDEX events_recipient ON events (recipient, id);
   CREATE INDEX events_sender_base ON events (sender_base, id);
   CREATE INDEX events_sender_domain ON events (sender_domain, id);
   CREATE TABLE messages (
     id TEXT PRIMARY KEY NOT NULL,
     sender TEXT NOT NULL,
     message_id TEXT,
     created_at INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX messages_created ON messages (created_at)`,
  // Idempotency-Key uses, per API key (its hash: a re-created key of the
  // same name is another key). status/response are NULL while in flight.
  `CREATE TABLE idempotency (
     api_key TEXT NOT NULL,
     idem_key TEXT NOT NULL,
     body_hash TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     status INTEGER,
     response TEXT,
     PRIMARY KEY (api_key, idem_key)
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX idempotency_created ON idempotency (created_at)`,
  // Cheaper event rows (they are written for every step of every message):
  // the sender and its derived forms live once per message, not per event,
  // and events keep only the indexes their reads need (by message, by
  // recipient). Scoped reads join messages.
  (db) => {
    db.exec(`CREATE TABLE events_v5 (
       id TEXT PRIMARY KEY NOT NULL,
       queue_id TEXT NOT NULL,
       type TEXT NOT NULL,
       recipient TEXT NOT NULL,
       body TEXT NOT NULL
     ) STRICT, WITHOUT ROWID;
     INSERT INTO events_v5 SELECT id, queue_id, type, recipient, body FROM events;
     DROP TABLE events;
     ALTER TABLE events_v5 RENAME TO events;
     CREATE INDEX events_queue ON events (queue_id, id);
     CREATE INDEX events_recipient ON events (recipient, id);
     ALTER TABLE messages ADD COLUMN sender_base TEXT NOT NULL DEFAULT '';
     ALTER TABLE messages ADD COLUMN sender_domain TEXT NOT NULL DEFAULT ''`);
    const update = db.prepare('UPDATE messages SET sender_base = ?, sender_domain = ? WHERE id = ?');
    for (const m of db.prepare('SELECT id, sender FROM messages').all() as { id: string; sender: string }[]) {
      const f = senderForms(m.sender);
      update.run(f.base, f.domain, m.id);
    }
    db.exec(`CREATE INDEX messages_sender_base ON messages (sender_base);
     CREATE INDEX messages_sender_domain ON messages (sender_domain);
     CREATE INDEX messages_sender ON messages (sender)`);
  },
  WEBHOOK_SCHEMA,
  SUPPRESSION_SCHEMA,
  // A key's own hourly message limit (NULL: submission.messagesPerHour).
  `ALTER TABLE api_keys ADD COLUMN messages_per_hour INTEGER`,
  // What a message says it is, for search and display (the dashboard): its Subject.
  `ALTER TABLE messages ADD COLUMN subject TEXT`,
  // Accounts that may log in to the dashboard (`tern user add --admin`).
  `ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0`,
  DASHBOARD_SCHEMA,
  // Outbound transport security (RFC 8461 policy cache, RFC 8460 report counts).
  MTA_STS_SCHEMA,
  TLS_REPORT_SCHEMA,
  // messages (sender) is a prefix of the dashboard's (sender, id), which
  // serves every read it served: one B-tree fewer to update per message
  // (the events store's cost counts against issue 13's 15 %).
  `DROP INDEX IF EXISTS messages_sender`,
  // Reads by a rare type (RARE_TYPES) walk only events of that type.
  `CREATE INDEX events_type ON events (type, id) WHERE type NOT IN ('queued', 'delivered')`,
  // Outbox rows written with their events carry no copy of the payload: it
  // is made again from events.body when a row is claimed (webhooks.ts). A
  // STRICT table's NOT NULL cannot be dropped in place; the seqs are kept.
  `CREATE TABLE webhook_outbox_v16 (
     seq INTEGER PRIMARY KEY,
     webhook_id TEXT NOT NULL,
     event_id TEXT NOT NULL,
     event_at INTEGER NOT NULL,
     body TEXT,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt INTEGER NOT NULL,
     claimed_until INTEGER
   ) STRICT;
   INSERT INTO webhook_outbox_v16 (seq, webhook_id, event_id, event_at, body, attempts, next_attempt, claimed_until)
     SELECT seq, webhook_id, event_id, event_at, body, attempts, next_attempt, claimed_until FROM webhook_outbox;
   DROP TABLE webhook_outbox;
   ALTER TABLE webhook_outbox_v16 RENAME TO webhook_outbox;
   CREATE INDEX webhook_outbox_due ON webhook_outbox (webhook_id, next_attempt);
   CREATE INDEX webhook_outbox_claimed ON webhook_outbox (claimed_until) WHERE claimed_until IS NOT NULL`,
];

/** The schema version this Tern writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** A sender's forms for scoped reads: '@domain' and the address without its +tag (as mayUseAddress matches). */
export function senderForms(sender: string): { sender: string; base: string; domain: string } {
  const s = sender.toLowerCase();
  const at = s.lastIndexOf('@');
  const domain = at >= 0 ? s.slice(at) : '';
  const base = at >= 0 ? s.slice(0, at).replace(/\+.*$/, '') + domain : s;
  return { sender: s, base, domain };
}

/** Rows as both stores read them (src/store/pg/store.ts reads the same columns). */
export interface UserRow {
  address: string;
  password_hash: string;
  send_as: string;
  messages_per_hour: number | null;
  recipients_per_message: number | null;
  created_at: number;
  admin: number;
}

export function openStore(dataDir: string): Store {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, STORE_FILE);
  // The file holds password hashes: create it owner-only before SQLite does
  // (an empty file is a valid empty database; -wal/-shm copy its mode).
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  const db = new DatabaseSync(file, { timeout: BUSY_TIMEOUT_MS });
  try {
    db.exec('PRAGMA journal_mode = WAL');
    migrate(db);
  } catch (e) {
    db.close();
    throw e;
  }
  return new SqliteStore(db);
}

function migrate(db: DatabaseSync): void {
  // BEGIN IMMEDIATE takes the write lock first, so two processes opening a
  // fresh database at once cannot both run the same step.
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    const current = row?.version ?? 0;
    if (current > MIGRATIONS.length) throw new Error(`${STORE_FILE}: schema version ${current} is newer than this Tern (${MIGRATIONS.length})`);
    for (let v = current; v < MIGRATIONS.length; v++) {
      const step = MIGRATIONS[v]!;
      if (typeof step === 'string') db.exec(step);
      else step(db);
    }
    if (!row) db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(MIGRATIONS.length);
    else if (current < MIGRATIONS.length) db.prepare('UPDATE schema_version SET version = ?').run(MIGRATIONS.length);
    db.exec('COMMIT');
  } catch (e) {
    db.exec('ROLLBACK');
    throw e;
  }
}

class SqliteStore implements Store {
  readonly webhooks: SqliteWebhookStore;
  readonly suppressions: SqliteSuppressionStore;
  readonly dashboard: SqliteDashboardStore;
  readonly mtaSts: SqliteMtaStsStore;
  readonly tlsReports: SqliteTlsReportStore;
  #db: DatabaseSync;
  #depth = 0;
  /** Queue ids whose messages row this process has written (bounded): later events of the message skip the upsert. */
  #known = new Set<string>();
  #get: StatementSync;
  #put: StatementSync;
  #del: StatementSync;
  #list: StatementSync;
  #glGet: StatementSync;
  #glPut: StatementSync;
  #glExpire: StatementSync;
  #keyByHash: StatementSync;
  #evPut: StatementSync;
  #msgPut: StatementSync;
  #evByQueue: StatementSync;
  #evExpire: StatementSync;
  #msgExpire: StatementSync;
  #idemGet: StatementSync;
  #idemPut: StatementSync;
  #idemExpire: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.webhooks = new SqliteWebhookStore(db, (fn) => this.transaction(fn));
    this.suppressions = new SqliteSuppressionStore(db);
    this.mtaSts = new SqliteMtaStsStore(db);
    this.tlsReports = new SqliteTlsReportStore(db, (fn) => this.transaction(fn));
    this.dashboard = new SqliteDashboardStore(db, (fn) => this.transaction(fn));
    this.#idemGet = db.prepare('SELECT body_hash, created_at, status, response FROM idempotency WHERE api_key = ? AND idem_key = ?');
    this.#idemPut = db.prepare('INSERT OR REPLACE INTO idempotency (api_key, idem_key, body_hash, created_at, status, response) VALUES (?, ?, ?, ?, NULL, NULL)');
    // Bounded like the events' retention: oldest first, through the created_at index.
    this.#idemExpire = db.prepare(
      'DELETE FROM idempotency WHERE (api_key, idem_key) IN (SELECT api_key, idem_key FROM idempotency WHERE created_at < ? ORDER BY created_at LIMIT ?)',
    );
    this.#keyByHash = db.prepare('SELECT * FROM api_keys WHERE hash = ?');
    this.#evPut = db.prepare('INSERT OR IGNORE INTO events (id, queue_id, type, recipient, body) VALUES (?, ?, ?, ?, ?)');
    // Written once per message per process (#known); after a restart or a cleared #known the same row comes again and simply replaces itself.
    this.#msgPut = db.prepare(
      `INSERT INTO messages (id, sender, sender_base, sender_domain, created_at, subject, message_id) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET sender = excluded.sender, sender_base = excluded.sender_base, sender_domain = excluded.sender_domain,
         subject = excluded.subject, message_id = coalesce(excluded.message_id, message_id)`,
    );
    this.#evByQueue = db.prepare('SELECT body FROM events WHERE queue_id = ? ORDER BY id');
    // Bounded: each call deletes at most `max` rows, oldest first, walking the primary key.
    this.#evExpire = db.prepare('DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ? ORDER BY id LIMIT ?)');
    this.#msgExpire = db.prepare('DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ?)');
    this.#get = db.prepare('SELECT * FROM users WHERE address = ?');
    this.#put = db.prepare(
      `INSERT OR REPLACE INTO users (address, password_hash, send_as, messages_per_hour, recipients_per_message, created_at, admin)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#del = db.prepare('DELETE FROM users WHERE address = ?');
    this.#list = db.prepare('SELECT * FROM users ORDER BY address');
    this.#glGet = db.prepare('SELECT first_seen, passed_at, expires FROM greylist WHERE triplet = ?');
    this.#glPut = db.prepare('INSERT OR REPLACE INTO greylist (triplet, first_seen, passed_at, expires) VALUES (?, ?, ?, ?)');
    this.#glExpire = db.prepare('DELETE FROM greylist WHERE expires < ?');
  }

  // API keys

  addApiKey(k: ApiKeyRecord): boolean {
    const r = this.#db.prepare('INSERT OR IGNORE INTO api_keys (name, hash, send_as, admin, created_at, messages_per_hour) VALUES (?, ?, ?, ?, ?, ?)')
      .run(k.name, k.hash, JSON.stringify(k.sendAs), k.admin ? 1 : 0, k.createdAt, k.messagesPerHour ?? null);
    return Number(r.changes) > 0;
  }

  apiKeyByHash(hash: string): ApiKeyRecord | null {
    const row = this.#keyByHash.get(hash) as ApiKeyRow | undefined;
    return row ? keyFromRow(row) : null;
  }

  listApiKeys(): ApiKeyRecord[] {
    return (this.#db.prepare('SELECT * FROM api_keys ORDER BY name').all() as unknown as ApiKeyRow[]).map(keyFromRow);
  }

  revokeApiKey(name: string): boolean {
    return Number(this.#db.prepare('DELETE FROM api_keys WHERE name = ?').run(name).changes) > 0;
  }

  // Events

  transaction<T>(fn: () => T): T {
    if (this.#depth > 0) return fn();
    this.#db.exec('BEGIN');
    this.#depth++;
    try {
      const out = fn();
      this.#db.exec('COMMIT');
      return out;
    } catch (e) {
      this.#db.exec('ROLLBACK');
      throw e;
    } finally {
      this.#depth--;
    }
  }

  addEvents(events: StoredEvent[]): void {
    this.transaction(() => {
      for (const { event, sender, subject, messageId } of events) {
        this.#evPut.run(event.id, event.queueId, event.type, event.recipient.toLowerCase(), JSON.stringify(event));
        if (this.#known.has(event.queueId)) continue;
        // Once per message (per process): the sender and its forms for scoped reads.
        if (this.#known.size >= KNOWN_MESSAGES_MAX) this.#known.clear();
        this.#known.add(event.queueId);
        const f = senderForms(sender);
        this.#msgPut.run(event.queueId, f.sender, f.base, f.domain, Date.parse(event.timestamp), subject ?? null, messageId ?? null);
      }
    });
  }

  queryEvents(q: EventQuery): MessageEvent[] {
    const where = ['id > ?'];
    const args: (string | number)[] = [q.after];
    if (q.type !== undefined) {
      where.push('type = ?');
      args.push(q.type);
    }
    if (q.recipient !== undefined) {
      where.push('recipient = ?');
      args.push(q.recipient.toLowerCase());
    }
    // No parameter: the index's own condition, word for word.
    if (q.type !== undefined && rareType(q.type)) where.push(RARE_TYPES);
    const parse = (rows: unknown[]): MessageEvent[] => (rows as { body: string }[]).map((r) => JSON.parse(r.body) as MessageEvent);
    const filter = where.join(' AND ');
    if (q.scope.admin) return parse(this.#db.prepare(`SELECT body FROM events WHERE ${filter} ORDER BY id LIMIT ?`).all(...args, q.limit));
    const scope = scopeClause(q.scope);
    // The fallback is for a key with few events: it starts from the key's messages. Without RARE_TYPES
    // the planner cannot take the events_type index instead (all events of the type, each looked up).
    const rest = where
      .slice(1)
      .filter((w) => w !== RARE_TYPES)
      .map((w) => `e.${w} AND `)
      .join('');
    const page: MessageEvent[] = [];
    let after = q.after;
    const few = q.walkRows?.few ?? SCOPED_FEW_MESSAGES;
    const counted = (this.#db.prepare(`SELECT count(*) AS n FROM (SELECT 1 FROM messages m WHERE ${scope.sql} LIMIT ?)`).get(...scope.args, few) as { n: number }).n;
    if (counted < few) return this.#scopedByIndex(after, rest, args, scope, q.limit, page);
    // The walks (SCOPED_FIRST_WALK, SCOPED_WALK_ROWS): events in id order from the cursor, those of messages in scope.
    // CROSS JOIN keeps the walk outside (SQLite does not reorder it), so a walk ends as soon as the page is full, with no sort.
    const walkSql = `SELECT e.body FROM (SELECT id, queue_id, body FROM events WHERE ${filter} ORDER BY id LIMIT ?) e CROSS JOIN messages m ON m.id = e.queue_id WHERE ${scope.sql} ORDER BY e.id LIMIT ?`;
    const longest = Math.max(1, q.walkRows?.longest ?? SCOPED_WALK_ROWS);
    const first = Math.max(1, Math.min(q.walkRows?.first ?? SCOPED_FIRST_WALK, longest));
    let walk = first;
    for (;;) {
      page.push(...parse(this.#db.prepare(walkSql).all(after, ...args.slice(1), walk, ...scope.args, q.limit - page.length)));
      if (page.length >= q.limit) return page;
      const end = this.#db.prepare(`SELECT id FROM events WHERE ${filter} ORDER BY id LIMIT 1 OFFSET ?`).get(after, ...args.slice(1), walk - 1) as { id: string } | undefined;
      // The walk reached the newest event: that was all.
      if (!end) return page;
      after = end.id;
      // Once more, longer, if the key's share of the events walked says the page fills within it.
      const share = page.length / walk;
      if (walk !== first || walk === longest || share === 0 || (q.limit - page.length) / share > longest) break;
      walk = longest;
    }
    // Past the walks: a key with a small share of the events, so few to sort.
    return this.#scopedByIndex(after, rest, args, scope, q.limit, page);
  }

  /** The rest of a scoped page after `after`, through the scope's indexes on messages (every event of the key's messages after it, sorted). */
  #scopedByIndex(after: string, rest: string, args: (string | number)[], scope: { sql: string; args: string[] }, limit: number, page: MessageEvent[]): MessageEvent[] {
    const tail = this.#db
      .prepare(`SELECT e.body FROM events e JOIN messages m ON m.id = e.queue_id WHERE e.id > ? AND ${rest}${scope.sql} ORDER BY e.id LIMIT ?`)
      .all(after, ...args.slice(1), ...scope.args, limit - page.length) as { body: string }[];
    return [...page, ...tail.map((r) => JSON.parse(r.body) as MessageEvent)];
  }

  messageEvents(queueId: string, scope: EventScope): { message: MessageRecord; events: MessageEvent[] } | null {
    const sc = scopeClause(scope);
    const m = this.#db.prepare(`SELECT * FROM messages m WHERE id = ? AND ${sc.sql}`).get(queueId, ...sc.args) as
      | { id: string; sender: string; message_id: string | null; created_at: number; subject: string | null }
      | undefined;
    if (!m) return null;
    const rows = this.#evByQueue.all(queueId) as { body: string }[];
    // A message without events is, for this reader, not there at all.
    if (rows.length === 0) return null;
    return {
      message: { id: m.id, sender: m.sender, messageId: m.message_id, createdAt: m.created_at, subject: m.subject },
      events: rows.map((r) => JSON.parse(r.body) as MessageEvent),
    };
  }

  expireEvents(before: number, max: number): number {
    const n = Number(this.#evExpire.run(eventIdFloor(before), max).changes);
    this.#msgExpire.run(before, max);
    return n;
  }

  // Idempotency keys

  claimIdempotency(apiKey: string, idemKey: string, bodyHash: string, now: number, isStale: (e: IdempotencyEntry) => boolean): IdempotencyEntry | null {
    // IMMEDIATE: the write lock before the read, so two requests (or two processes) cannot both claim.
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const row = this.#idemGet.get(apiKey, idemKey) as { body_hash: string; created_at: number; status: number | null; response: string | null } | undefined;
      const entry: IdempotencyEntry | null = row
        ? { bodyHash: row.body_hash, createdAt: row.created_at, response: row.status === null ? null : { status: row.status, body: row.response ?? '' } }
        : null;
      if (entry && !isStale(entry)) {
        this.#db.exec('COMMIT');
        return entry;
      }
      this.#idemPut.run(apiKey, idemKey, bodyHash, now);
      this.#db.exec('COMMIT');
      return null;
    } catch (e) {
      this.#db.exec('ROLLBACK');
      throw e;
    }
  }

  finishIdempotency(apiKey: string, idemKey: string, response: { status: number; body: string }): void {
    this.#db.prepare('UPDATE idempotency SET status = ?, response = ? WHERE api_key = ? AND idem_key = ?').run(response.status, response.body, apiKey, idemKey);
  }

  releaseIdempotency(apiKey: string, idemKey: string): void {
    this.#db.prepare('DELETE FROM idempotency WHERE api_key = ? AND idem_key = ? AND status IS NULL').run(apiKey, idemKey);
  }

  expireIdempotency(before: number, max: number): number {
    return Number(this.#idemExpire.run(before, max).changes);
  }

  getGreylist(triplet: string): GreylistEntry | null {
    const row = this.#glGet.get(triplet) as { first_seen: number; passed_at: number | null; expires: number } | undefined;
    return row ? { firstSeen: row.first_seen, passedAt: row.passed_at, expires: row.expires } : null;
  }

  putGreylist(triplet: string, e: GreylistEntry): void {
    this.#glPut.run(triplet, e.firstSeen, e.passedAt, e.expires);
  }

  expireGreylist(now: number): number {
    return Number(this.#glExpire.run(now).changes);
  }

  getUser(address: string): UserRecord | null {
    const row = this.#get.get(address.toLowerCase()) as UserRow | undefined;
    return row ? userFromRow(row) : null;
  }

  putUser(u: UserRecord): void {
    this.#put.run(u.address.toLowerCase(), u.passwordHash, JSON.stringify(u.sendAs), u.messagesPerHour ?? null, u.recipientsPerMessage ?? null, u.createdAt, u.admin ? 1 : 0);
  }

  deleteUser(address: string): boolean {
    return Number(this.#del.run(address.toLowerCase()).changes) > 0;
  }

  listUsers(): UserRecord[] {
    return (this.#list.all() as unknown as UserRow[]).map(userFromRow);
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

export interface ApiKeyRow {
  name: string;
  hash: string;
  send_as: string;
  admin: number;
  created_at: number;
  messages_per_hour: number | null;
}

export function keyFromRow(r: ApiKeyRow): ApiKeyRecord {
  return { name: r.name, hash: r.hash, sendAs: JSON.parse(r.send_as) as string[], admin: r.admin === 1, messagesPerHour: r.messages_per_hour ?? undefined, createdAt: r.created_at };
}

/**
 * The SQL condition for what `scope` may read, matching as mayUseAddress
 * (src/policy/senders.ts) does: '@domain' covers the domain, an address
 * covers itself and its plus-tagged forms.
 */
function scopeClause(scope: EventScope): { sql: string; args: string[] } {
  if (scope.admin) return { sql: '1', args: [] };
  const domains = scope.sendAs.filter((p) => p.startsWith('@')).map((p) => p.toLowerCase());
  const addresses = scope.sendAs.filter((p) => !p.startsWith('@')).map((p) => p.toLowerCase());
  const parts: string[] = [];
  const marks = (n: number): string => Array(n).fill('?').join(', ');
  if (domains.length > 0) parts.push(`m.sender_domain IN (${marks(domains.length)})`);
  if (addresses.length > 0) parts.push(`m.sender IN (${marks(addresses.length)})`, `m.sender_base IN (${marks(addresses.length)})`);
  if (parts.length === 0) return { sql: '0', args: [] };
  return { sql: `(${parts.join(' OR ')})`, args: [...domains, ...addresses, ...addresses] };
}

export function userFromRow(r: UserRow): UserRecord {
  return {
    address: r.address,
    passwordHash: r.password_hash,
    sendAs: JSON.parse(r.send_as) as string[],
    messagesPerHour: r.messages_per_hour ?? undefined,
    recipientsPerMessage: r.recipients_per_message ?? undefined,
    admin: r.admin === 1 ? true : undefined,
    createdAt: r.created_at,
  };
}
