// PostgreSQL implementation of DashboardStore (src/store/dashboard.ts says
// what the tables hold and why the search reads what it reads). The
// statements are the embedded store's, ported:
//
// - ui_sessions' `user` column is `user_address` here (USER is a reserved
//   word in PostgreSQL).
// - SQLite's LIKE ignores case for ASCII letters only (sqlite.org/lang_expr.html,
//   "The LIKE, GLOB, REGEXP, MATCH, and extract operators"); PostgreSQL's
//   LIKE does not ignore case, so the subject search uses ILIKE, under the
//   C collation, which folds ASCII letters only.
// - Lists are bound as arrays (= ANY, unnest): one statement text and one
//   round trip, with no parameter limit to chunk around.
// - The aggregates are added with one multi-row upsert per call: a round
//   trip costs ~0.1-0.3 ms here (sync-client.ts), where a prepared SQLite
//   statement per key cost microseconds.
//
// ID order: the search bounds queue ids with < and >= and compares them in
// JavaScript too (src/dashboard/search.ts), and ID_TOP is U+10FFFF; both
// assume byte order, which is PostgreSQL's only under the C collation
// (the test cluster's initdb --locale=C). Those comparisons must stay on
// the indexes, so they take the columns' collation: the id columns should
// be declared COLLATE "C" (or the database created with it).

import type { SyncPgClient } from './sync-client.ts';
import type { Transaction } from './tx.ts';
import type { DashboardStore, MessageRow, ScanResult, SearchWindow, StatDelta, UiSession } from '../dashboard.ts';

/** The window's condition on the messages table, its values at $1-$4 (bounds()). */
const WINDOW = 'id < $1 AND id >= $2 AND created_at >= $3 AND created_at <= $4';

/**
 * The reads of the overview and the search, exported so a test can read
 * their plans (EXPLAIN): each must walk an index range, never scan a table
 * that grows with the mail. The window's four values come first, at $1-$4,
 * where a statement has one.
 */
export const PG_DASHBOARD_SQL = {
  series: `SELECT metric, bucket, count FROM dash_stats WHERE span = $1 AND metric = ANY($2::text[]) AND bucket >= $3 AND key = ''`,
  // COLLATE "C": ties in SQLite's order (bytes), whatever the database's collation; the sort is of a few grouped rows.
  top: `SELECT key, sum(count)::bigint AS count FROM dash_stats WHERE span = $1 AND metric = $2 AND bucket >= $3
        GROUP BY key ORDER BY count DESC, key COLLATE "C" LIMIT $4`,
  bucket: `SELECT metric, count FROM dash_stats WHERE span = $1 AND metric = ANY($2::text[]) AND bucket = $3 AND key = ''`,
  bySender: `SELECT id FROM messages WHERE ${WINDOW} AND sender = $5 ORDER BY id DESC LIMIT $6`,
  // PostgreSQL takes no index hints (SQLite's INDEXED BY): the partial
  // index dash_events_recipient is the one whose condition (type = 'queued')
  // this statement repeats, and the one in queue id order, so the planner
  // finds it by itself; the plan test holds it to that.
  byRecipient: `SELECT DISTINCT e.queue_id AS id FROM events e JOIN messages m ON m.id = e.queue_id
       WHERE e.recipient = $5 AND e.type = 'queued' AND e.queue_id < $1 AND e.queue_id >= $2 AND m.created_at >= $3 AND m.created_at <= $4
       ORDER BY e.queue_id DESC LIMIT $6`,
  byMessageId: `SELECT id FROM messages WHERE ${WINDOW} AND message_id = ANY($5::text[]) ORDER BY id DESC LIMIT $6`,
  // The newest `scanMax` ($5) messages of the window, walked down the
  // primary key; the ILIKE runs on each until `limit` hits. COLLATE "C"
  // folds ASCII letters only, as SQLite's LIKE does, whatever the
  // database's collation (it applies to rows already read: no index is
  // lost).
  bySubject: `SELECT id FROM (SELECT id, subject FROM messages WHERE ${WINDOW} ORDER BY id DESC LIMIT $5) AS scanned
       WHERE subject COLLATE "C" ILIKE $6 ESCAPE '\\' ORDER BY id DESC LIMIT $7`,
  /** The lowest id a subject scan of `scanMax` looks at, and the next one below, if the window holds more ($5 = scanMax - 1). */
  scanEnd: `SELECT id FROM messages WHERE ${WINDOW} ORDER BY id DESC LIMIT 2 OFFSET $5`,
  byTime: `SELECT id FROM messages WHERE ${WINDOW} ORDER BY id DESC LIMIT $5`,
};

interface SessionRow {
  token_hash: string;
  csrf: string;
  user_address: string;
  created_at: number;
  expires_at: number;
}

class PgDashboardStore implements DashboardStore {
  readonly #db: SyncPgClient;

  constructor(db: SyncPgClient) {
    this.#db = db;
  }

  // Sessions

  addSession(s: UiSession): void {
    this.#db.query('INSERT INTO ui_sessions (token_hash, csrf, user_address, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)', [
      s.tokenHash,
      s.csrf,
      s.user,
      s.createdAt,
      s.expiresAt,
    ]);
  }

  getSession(tokenHash: string): UiSession | null {
    const r = this.#db.one<SessionRow>('SELECT * FROM ui_sessions WHERE token_hash = $1', [tokenHash]);
    return r ? { tokenHash: r.token_hash, csrf: r.csrf, user: r.user_address, createdAt: r.created_at, expiresAt: r.expires_at } : null;
  }

  deleteSession(tokenHash: string): boolean {
    return this.#db.query('DELETE FROM ui_sessions WHERE token_hash = $1', [tokenHash]).rowCount > 0;
  }

  deleteUserSessions(user: string): string[] {
    return this.#db.rows<{ token_hash: string }>('DELETE FROM ui_sessions WHERE user_address = $1 RETURNING token_hash', [user]).map((r) => r.token_hash);
  }

  trimUserSessions(user: string, keep: number): void {
    this.#db.query(
      `DELETE FROM ui_sessions WHERE token_hash IN
         (SELECT token_hash FROM ui_sessions WHERE user_address = $1 ORDER BY created_at DESC OFFSET $2)`,
      [user, keep],
    );
  }

  expireSessions(now: number, max: number): number {
    return this.#db.query(
      'DELETE FROM ui_sessions WHERE token_hash IN (SELECT token_hash FROM ui_sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)',
      [now, max],
    ).rowCount;
  }

  // Aggregates

  addStats(deltas: StatDelta[]): void {
    if (deltas.length === 0) return;
    // ON CONFLICT DO UPDATE may touch a row once per statement (PostgreSQL
    // docs, INSERT, "ON CONFLICT Clause"): equal keys are summed first.
    const sums = new Map<string, StatDelta>();
    for (const d of deltas) {
      const k = JSON.stringify([d.span, d.metric, d.bucket, d.key]);
      const seen = sums.get(k);
      if (seen) seen.count += d.count;
      else sums.set(k, { ...d });
    }
    const rows = [...sums.values()];
    // Every node bumps the same current-minute rows, each in its events'
    // transaction: taking the row locks in one order (ORDER BY, the same on
    // every node) makes two such transactions wait for each other instead
    // of deadlocking.
    // Deferred: it goes with the events transaction's COMMIT (sync-client.ts).
    this.#db.defer(
      `INSERT INTO dash_stats (span, metric, bucket, key, count)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS d (span, metric, bucket, key, count)
       ORDER BY span, metric, bucket, key
       ON CONFLICT (span, metric, bucket, key) DO UPDATE SET count = dash_stats.count + EXCLUDED.count`,
      [rows.map((d) => d.span), rows.map((d) => d.metric), rows.map((d) => d.bucket), rows.map((d) => d.key), rows.map((d) => d.count)],
    );
  }

  pruneStats(span: number, metric: string, before: number): number {
    return this.#db.query('DELETE FROM dash_stats WHERE span = $1 AND metric = $2 AND bucket < $3', [span, metric, before]).rowCount;
  }

  series(span: number, metrics: readonly string[], from: number): { metric: string; bucket: number; count: number }[] {
    return this.#db.rows<{ metric: string; bucket: number; count: number }>(PG_DASHBOARD_SQL.series, [span, metrics, from]);
  }

  topKeys(span: number, metric: string, from: number, limit: number): { key: string; count: number }[] {
    return this.#db.rows<{ key: string; count: number }>(PG_DASHBOARD_SQL.top, [span, metric, from, limit]);
  }

  bucketTotals(span: number, metrics: readonly string[], bucket: number): Map<string, number> {
    const rows = this.#db.rows<{ metric: string; count: number }>(PG_DASHBOARD_SQL.bucket, [span, metrics, bucket]);
    return new Map(rows.map((r) => [r.metric, r.count]));
  }

  // Message search

  idsBySender(sender: string, w: SearchWindow, limit: number): string[] {
    return ids(this.#db.rows(PG_DASHBOARD_SQL.bySender, [...bounds(w), sender, limit]));
  }

  idsByRecipient(recipient: string, w: SearchWindow, limit: number): string[] {
    return ids(this.#db.rows(PG_DASHBOARD_SQL.byRecipient, [...bounds(w), recipient, limit]));
  }

  idsByMessageId(forms: string[], w: SearchWindow, limit: number): string[] {
    return ids(this.#db.rows(PG_DASHBOARD_SQL.byMessageId, [...bounds(w), forms, limit]));
  }

  idsBySubject(pattern: string, w: SearchWindow, limit: number, scanMax: number): ScanResult {
    // A bounded linear scan, as in the embedded store: its cost has a ceiling whatever the table holds, and the cursor carries the search on below it.
    const hits = ids(this.#db.rows(PG_DASHBOARD_SQL.bySubject, [...bounds(w), scanMax, pattern, limit]));
    if (hits.length >= limit) return { ids: hits, floor: hits.at(-1)! };
    // Fewer hits than asked: did the scan end at the window's bottom, or at its ceiling?
    const end = ids(this.#db.rows(PG_DASHBOARD_SQL.scanEnd, [...bounds(w), Math.max(0, scanMax - 1)]));
    return { ids: hits, floor: end.length === 2 ? end[0]! : '' };
  }

  idsByTime(w: SearchWindow, limit: number): string[] {
    return ids(this.#db.rows(PG_DASHBOARD_SQL.byTime, [...bounds(w), limit]));
  }

  messages(list: string[]): MessageRow[] {
    if (list.length === 0) return [];
    const rows = this.#db.rows<{ id: string; sender: string; message_id: string | null; subject: string | null; created_at: number }>(
      'SELECT id, sender, message_id, subject, created_at FROM messages WHERE id = ANY($1::text[])',
      [list],
    );
    return rows.map((r) => ({ id: r.id, sender: r.sender, messageId: r.message_id, subject: r.subject, createdAt: r.created_at }));
  }

  recipientEvents(list: string[]): { queueId: string; recipient: string; type: string }[] {
    if (list.length === 0) return [];
    const rows = this.#db.rows<{ queue_id: string; recipient: string; type: string }>(
      // Event ids sort by time in byte order (events.ts); a page's few events are sorted so, whatever the database's collation.
      'SELECT queue_id, recipient, type FROM events WHERE queue_id = ANY($1::text[]) ORDER BY queue_id COLLATE "C", id COLLATE "C"',
      [list],
    );
    return rows.map((r) => ({ queueId: r.queue_id, recipient: r.recipient, type: r.type }));
  }
}

/**
 * `_tx` is not needed: every write here is one statement, atomic by itself,
 * and runs in the caller's transaction when there is one (the connection's).
 */
export function pgDashboardStore(db: SyncPgClient, _tx: Transaction): DashboardStore {
  return new PgDashboardStore(db);
}

function bounds(w: SearchWindow): [string, string, number, number] {
  return [w.below, w.from, w.since, w.until];
}

function ids(rows: unknown[]): string[] {
  return (rows as { id: string }[]).map((r) => r.id);
}
