// The dashboard's state (src/dashboard/ owns the meaning; docs/dashboard.md):
//
// - ui_sessions: one row per login. The key is the SHA-256 of the cookie's
//   token, so a copy of tern.db (a backup, a stolen disk) holds no cookie
//   that would log anyone in (OWASP Session Management Cheat Sheet:
//   session ids are credentials). The CSRF token is kept as is: it is sent
//   to the page anyway and is worth nothing without the cookie.
// - dash_stats: counters per time bucket, written in the events' own
//   transaction (EventRecorder.alsoWrite), so the overview reads a few
//   hundred rows instead of scanning a million events. One row per (span,
//   metric, bucket, key); the key is '' for plain totals, a recipient
//   domain or a bounce class otherwise.
// - indexes on the events' tables for the message search: by sender, and
//   by recipient in the order of the queue id (ids sort by time: the
//   spool's newId), so a search reads one index range, newest first, and
//   stops at the page's end however much mail an address has; and one that
//   covers what a subject scan reads (id, created_at, subject), so the scan
//   walks a compact index instead of looking up every table row (about 50
//   bytes a message; a third of the scan's time, bench/dashboard.ts).

import type { DatabaseSync, StatementSync } from 'node:sqlite';

/**
 * Schema step 11 of store.ts's MIGRATIONS. The partial index on events
 * holds only `queued` events (one per recipient of each message), so it
 * costs a fraction of a full recipient index and answers "which messages
 * went to this address" in queue id order.
 */
export const DASHBOARD_SCHEMA = `CREATE TABLE ui_sessions (
     token_hash TEXT PRIMARY KEY NOT NULL,
     csrf TEXT NOT NULL,
     user TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
   CREATE INDEX ui_sessions_user ON ui_sessions (user, created_at);
   CREATE TABLE dash_stats (
     span INTEGER NOT NULL,
     metric TEXT NOT NULL,
     bucket INTEGER NOT NULL,
     key TEXT NOT NULL,
     count INTEGER NOT NULL,
     PRIMARY KEY (span, metric, bucket, key)
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX dash_messages_sender ON messages (sender, id);
   CREATE INDEX dash_messages_scan ON messages (id, created_at, subject);
   CREATE INDEX dash_events_recipient ON events (recipient, queue_id) WHERE type = 'queued'`;

/** A dashboard login (times are epoch ms). */
export interface UiSession {
  /** Hex SHA-256 of the cookie's token. */
  tokenHash: string;
  csrf: string;
  /** The admin's address (users.address). */
  user: string;
  createdAt: number;
  expiresAt: number;
}

/** One counter increment: `count` more of `metric` (and `key`) in the bucket of `span` ms starting at `bucket` (epoch ms). */
export interface StatDelta {
  span: number;
  metric: string;
  bucket: number;
  key: string;
  count: number;
}

/** A stored message as the search lists it. */
export interface MessageRow {
  id: string;
  sender: string;
  messageId: string | null;
  subject: string | null;
  /** Epoch ms of its first stored event. */
  createdAt: number;
}

/**
 * Where a search looks, in queue id order: ids below `below` (exclusive;
 * ID_TOP = no bound) and at or above `from` ('' = no bound), of messages
 * created in [since, until] (epoch ms). The id bounds make every statement
 * read one index range; the times decide.
 */
export interface SearchWindow {
  below: string;
  from: string;
  since: number;
  until: number;
}

/** Above every queue id (ids are [0-9A-Z]; SQLite compares text as UTF-8 bytes, and this is the largest code point). */
export const ID_TOP = '\u{10FFFF}';

/** Hits of a subject scan and how far down it looked: every hit at or above `floor` is in `ids` ('' = it reached the bottom). */
export interface ScanResult {
  ids: string[];
  floor: string;
}

export interface DashboardStore {
  // Sessions
  addSession(s: UiSession): void;
  getSession(tokenHash: string): UiSession | null;
  deleteSession(tokenHash: string): boolean;
  /** Every session of `user` (deleted or demoted); returns their token hashes. */
  deleteUserSessions(user: string): string[];
  /** Deletes the user's oldest sessions beyond the newest `keep`. */
  trimUserSessions(user: string, keep: number): void;
  /** Deletes up to `max` sessions that expired before `now`, oldest first; returns how many went. */
  expireSessions(now: number, max: number): number;

  // Aggregates
  /** Adds the deltas (in the caller's transaction: the events'). */
  addStats(deltas: StatDelta[]): void;
  /** Deletes the rows of one span and metric older than `before`; returns how many went. */
  pruneStats(span: number, metric: string, before: number): number;
  /** Per bucket, the totals (key '') of `metrics` since `from`. */
  series(span: number, metrics: readonly string[], from: number): { metric: string; bucket: number; count: number }[];
  /** Per key, the sum of `metric` since `from`, largest first, at most `limit`. */
  topKeys(span: number, metric: string, from: number, limit: number): { key: string; count: number }[];
  /** The counts of `metrics` (key '') in one bucket. */
  bucketTotals(span: number, metrics: readonly string[], bucket: number): Map<string, number>;

  // Message search (newest first = queue id descending)
  idsBySender(sender: string, w: SearchWindow, limit: number): string[];
  idsByRecipient(recipient: string, w: SearchWindow, limit: number): string[];
  idsByMessageId(forms: string[], w: SearchWindow, limit: number): string[];
  /** Messages whose subject is LIKE `pattern` (ESCAPE '\'), among at most `scanMax` messages of the window. */
  idsBySubject(pattern: string, w: SearchWindow, limit: number, scanMax: number): ScanResult;
  /** Every message of the window. */
  idsByTime(w: SearchWindow, limit: number): string[];
  /** The rows of `ids` that exist, in no particular order. */
  messages(ids: string[]): MessageRow[];
  /** Each message's recipients and the types of their events, oldest first. */
  recipientEvents(ids: string[]): { queueId: string; recipient: string; type: string }[];
}

/** The window's condition on the messages table; its values come from bounds(). */
const WINDOW = 'id < ? AND id >= ? AND created_at >= ? AND created_at <= ?';

/**
 * The reads of the overview and the search, exported so a test can ask
 * SQLite how it runs each (EXPLAIN QUERY PLAN): every one must be an index
 * range, never a scan of a table that grows with the mail.
 */
export const DASHBOARD_SQL = {
  series: (metrics: number) => `SELECT metric, bucket, count FROM dash_stats WHERE span = ? AND metric IN (${marks(metrics)}) AND bucket >= ? AND key = ''`,
  top: `SELECT key, sum(count) AS count FROM dash_stats WHERE span = ? AND metric = ? AND bucket >= ? GROUP BY key ORDER BY count DESC, key LIMIT ?`,
  bucket: (metrics: number) => `SELECT metric, count FROM dash_stats WHERE span = ? AND metric IN (${marks(metrics)}) AND bucket = ? AND key = ''`,
  bySender: `SELECT id FROM messages WHERE sender = ? AND ${WINDOW} ORDER BY id DESC LIMIT ?`,
  // INDEXED BY: the partial index is the one in queue id order; the planner must not walk events_recipient (by event id) instead.
  byRecipient: `SELECT DISTINCT e.queue_id AS id FROM events e INDEXED BY dash_events_recipient JOIN messages m ON m.id = e.queue_id
       WHERE e.recipient = ? AND e.type = 'queued' AND e.queue_id < ? AND e.queue_id >= ? AND m.created_at >= ? AND m.created_at <= ?
       ORDER BY e.queue_id DESC LIMIT ?`,
  byMessageId: (forms: number) => `SELECT id FROM messages WHERE message_id IN (${marks(forms)}) AND ${WINDOW} ORDER BY id DESC LIMIT ?`,
  // The newest `scanMax` messages of the window, walked down the primary key; the LIKE runs on each until `limit` hits.
  bySubject: `SELECT id FROM (SELECT id, subject FROM messages WHERE ${WINDOW} ORDER BY id DESC LIMIT ?) WHERE subject LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT ?`,
  /** The lowest id a subject scan of `scanMax` looks at, and the next one below, if the window holds more. */
  scanEnd: `SELECT id FROM messages WHERE ${WINDOW} ORDER BY id DESC LIMIT 2 OFFSET ?`,
  byTime: `SELECT id FROM messages WHERE ${WINDOW} ORDER BY id DESC LIMIT ?`,
};

/** Rows of `IN (…)` bound at once: well under SQLite's parameter limit. */
const IN_CHUNK = 500;

interface SessionRow {
  token_hash: string;
  csrf: string;
  user: string;
  created_at: number;
  expires_at: number;
}

export class SqliteDashboardStore implements DashboardStore {
  readonly #db: DatabaseSync;
  readonly #tx: <T>(fn: () => T) => T;
  readonly #sessionGet: StatementSync;
  readonly #sessionPut: StatementSync;
  readonly #sessionDel: StatementSync;
  readonly #statAdd: StatementSync;
  readonly #bySender: StatementSync;
  readonly #byRecipient: StatementSync;
  /** Prepared on first use, by the number of forms and window shape. */
  readonly #cache = new Map<string, StatementSync>();

  constructor(db: DatabaseSync, transaction: <T>(fn: () => T) => T) {
    this.#db = db;
    this.#tx = transaction;
    this.#sessionGet = db.prepare('SELECT * FROM ui_sessions WHERE token_hash = ?');
    this.#sessionPut = db.prepare('INSERT INTO ui_sessions (token_hash, csrf, user, created_at, expires_at) VALUES (?, ?, ?, ?, ?)');
    this.#sessionDel = db.prepare('DELETE FROM ui_sessions WHERE token_hash = ?');
    this.#statAdd = db.prepare(
      `INSERT INTO dash_stats (span, metric, bucket, key, count) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (span, metric, bucket, key) DO UPDATE SET count = count + excluded.count`,
    );
    this.#bySender = db.prepare(DASHBOARD_SQL.bySender);
    this.#byRecipient = db.prepare(DASHBOARD_SQL.byRecipient);
  }

  // Sessions

  addSession(s: UiSession): void {
    this.#sessionPut.run(s.tokenHash, s.csrf, s.user, s.createdAt, s.expiresAt);
  }

  getSession(tokenHash: string): UiSession | null {
    const r = this.#sessionGet.get(tokenHash) as SessionRow | undefined;
    return r ? { tokenHash: r.token_hash, csrf: r.csrf, user: r.user, createdAt: r.created_at, expiresAt: r.expires_at } : null;
  }

  deleteSession(tokenHash: string): boolean {
    return Number(this.#sessionDel.run(tokenHash).changes) > 0;
  }

  deleteUserSessions(user: string): string[] {
    const rows = this.#db.prepare('DELETE FROM ui_sessions WHERE user = ? RETURNING token_hash').all(user) as { token_hash: string }[];
    return rows.map((r) => r.token_hash);
  }

  trimUserSessions(user: string, keep: number): void {
    this.#db
      .prepare(
        `DELETE FROM ui_sessions WHERE token_hash IN
           (SELECT token_hash FROM ui_sessions WHERE user = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)`,
      )
      .run(user, keep);
  }

  expireSessions(now: number, max: number): number {
    const r = this.#db
      .prepare('DELETE FROM ui_sessions WHERE token_hash IN (SELECT token_hash FROM ui_sessions WHERE expires_at < ? ORDER BY expires_at LIMIT ?)')
      .run(now, max);
    return Number(r.changes);
  }

  // Aggregates

  addStats(deltas: StatDelta[]): void {
    this.#tx(() => {
      for (const d of deltas) this.#statAdd.run(d.span, d.metric, d.bucket, d.key, d.count);
    });
  }

  pruneStats(span: number, metric: string, before: number): number {
    return Number(this.#stmt('prune', 'DELETE FROM dash_stats WHERE span = ? AND metric = ? AND bucket < ?').run(span, metric, before).changes);
  }

  series(span: number, metrics: readonly string[], from: number): { metric: string; bucket: number; count: number }[] {
    return this.#stmt(`series${metrics.length}`, DASHBOARD_SQL.series(metrics.length)).all(span, ...metrics, from) as { metric: string; bucket: number; count: number }[];
  }

  topKeys(span: number, metric: string, from: number, limit: number): { key: string; count: number }[] {
    return this.#stmt('top', DASHBOARD_SQL.top).all(span, metric, from, limit) as { key: string; count: number }[];
  }

  bucketTotals(span: number, metrics: readonly string[], bucket: number): Map<string, number> {
    const rows = this.#stmt(`bucket${metrics.length}`, DASHBOARD_SQL.bucket(metrics.length)).all(span, ...metrics, bucket) as { metric: string; count: number }[];
    return new Map(rows.map((r) => [r.metric, r.count]));
  }

  // Message search

  idsBySender(sender: string, w: SearchWindow, limit: number): string[] {
    return ids(this.#bySender.all(sender, ...bounds(w), limit));
  }

  idsByRecipient(recipient: string, w: SearchWindow, limit: number): string[] {
    return ids(this.#byRecipient.all(recipient, ...bounds(w), limit));
  }

  idsByMessageId(forms: string[], w: SearchWindow, limit: number): string[] {
    return ids(this.#stmt(`msgid${forms.length}`, DASHBOARD_SQL.byMessageId(forms.length)).all(...forms, ...bounds(w), limit));
  }

  idsBySubject(pattern: string, w: SearchWindow, limit: number, scanMax: number): ScanResult {
    // A bounded linear scan (src/dashboard/search.ts says why not FTS5): its
    // cost has a ceiling whatever the table holds, and the cursor carries the search on below it.
    const hits = ids(this.#stmt('subject', DASHBOARD_SQL.bySubject).all(...bounds(w), scanMax, pattern, limit));
    if (hits.length >= limit) return { ids: hits, floor: hits.at(-1)! };
    // Fewer hits than asked: did the scan end at the window's bottom, or at its ceiling?
    const end = ids(this.#stmt('scanEnd', DASHBOARD_SQL.scanEnd).all(...bounds(w), scanMax - 1));
    return { ids: hits, floor: end.length === 2 ? end[0]! : '' };
  }

  idsByTime(w: SearchWindow, limit: number): string[] {
    return ids(this.#stmt('time', DASHBOARD_SQL.byTime).all(...bounds(w), limit));
  }

  messages(list: string[]): MessageRow[] {
    const out: MessageRow[] = [];
    for (const part of chunks(list)) {
      const sql = `SELECT id, sender, message_id, subject, created_at FROM messages WHERE id IN (${marks(part.length)})`;
      const rows = this.#db.prepare(sql).all(...part) as { id: string; sender: string; message_id: string | null; subject: string | null; created_at: number }[];
      for (const r of rows) out.push({ id: r.id, sender: r.sender, messageId: r.message_id, subject: r.subject, createdAt: r.created_at });
    }
    return out;
  }

  recipientEvents(list: string[]): { queueId: string; recipient: string; type: string }[] {
    const out: { queueId: string; recipient: string; type: string }[] = [];
    for (const part of chunks(list)) {
      const sql = `SELECT queue_id, recipient, type FROM events WHERE queue_id IN (${marks(part.length)}) ORDER BY queue_id, id`;
      for (const r of this.#db.prepare(sql).all(...part) as { queue_id: string; recipient: string; type: string }[]) {
        out.push({ queueId: r.queue_id, recipient: r.recipient, type: r.type });
      }
    }
    return out;
  }

  #stmt(name: string, sql: string): StatementSync {
    let s = this.#cache.get(name);
    if (!s) {
      s = this.#db.prepare(sql);
      this.#cache.set(name, s);
    }
    return s;
  }
}

function bounds(w: SearchWindow): [string, string, number, number] {
  return [w.below, w.from, w.since, w.until];
}

function marks(n: number): string {
  return Array<string>(n).fill('?').join(', ');
}

function ids(rows: unknown[]): string[] {
  return (rows as { id: string }[]).map((r) => r.id);
}

function chunks<T>(list: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += IN_CHUNK) out.push(list.slice(i, i + IN_CHUNK));
  return out;
}
