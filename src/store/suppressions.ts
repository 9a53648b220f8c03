// The suppression list's table (src/suppress/ owns the meaning): one row
// per address outbound mail is not sent to. The server keeps the list in
// memory (src/suppress/list.ts) and the `tern` CLI, or an operator's sqlite3,
// may change the table from another process: a counter that triggers bump
// on every change, whoever makes it, tells the server when to read it again.

import type { DatabaseSync, StatementSync } from 'node:sqlite';

/**
 * Schema step 7 of store.ts's MIGRATIONS. Addresses are stored lower-cased
 * (src/suppress/list.ts says why). The index on messages.message_id finds
 * the message an ARF complaint returns (src/suppress/complaints.ts); IF NOT
 * EXISTS because it belongs to the events' table, which may grow it too.
 */
export const SUPPRESSION_SCHEMA = `CREATE TABLE suppressions (
     address TEXT PRIMARY KEY NOT NULL,
     reason TEXT NOT NULL,
     source TEXT NOT NULL,
     detail TEXT,
     created_at INTEGER NOT NULL
   ) STRICT, WITHOUT ROWID;
   CREATE TABLE suppression_version (n INTEGER NOT NULL) STRICT;
   INSERT INTO suppression_version (n) VALUES (0);
   CREATE TRIGGER suppressions_inserted AFTER INSERT ON suppressions BEGIN UPDATE suppression_version SET n = n + 1; END;
   CREATE TRIGGER suppressions_updated AFTER UPDATE ON suppressions BEGIN UPDATE suppression_version SET n = n + 1; END;
   CREATE TRIGGER suppressions_deleted AFTER DELETE ON suppressions BEGIN UPDATE suppression_version SET n = n + 1; END;
   CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id)`;

/** Who put an address on the list: the HTTP API (or the dashboard), `tern suppression add`, a hard bounce, an ARF complaint. */
export type SuppressionSource = 'api' | 'cli' | 'bounce' | 'complaint';

export interface SuppressionRecord {
  /** Lower case. */
  address: string;
  /** 'hard-bounce', 'complaint', or the API caller's own words. */
  reason: string;
  source: SuppressionSource;
  /** What the decision rests on: the bounce's reply line, the complaint's Feedback-Type and reporter; null from the API. */
  detail: string | null;
  /** Epoch milliseconds. */
  createdAt: number;
}

/** A message the API sent, as the events' messages table records it. */
export interface SentMessage {
  id: string;
  /** Lower-cased reverse-path. */
  sender: string;
  /** Epoch ms of its first event. */
  createdAt: number;
}

export interface SuppressionStore {
  /** `address` must be lower case (as every method's). */
  get(address: string): SuppressionRecord | null;
  /** Insert or replace; true when the address was not on the list. */
  put(r: SuppressionRecord): boolean;
  /** Inserts those not on the list yet (an automatic addition never overwrites an entry); returns how many were new. */
  addMissing(rs: SuppressionRecord[]): number;
  delete(address: string): boolean;
  /** Sorted by address, those after `after` (exclusive; '' from the first). */
  page(after: string, limit: number): SuppressionRecord[];
  /** Every entry, in one read transaction (a consistent snapshot); afterwards `changedElsewhere` is false until someone else writes. */
  each(visit: (r: SuppressionRecord) => void): void;
  count(): number;
  /** Whether the table changed, by another process (or connection), since this one last read it whole or wrote it. */
  changedElsewhere(): boolean;
  /** The API message whose Message-ID header was `messageId` (as sent, angle brackets included), if its events are still kept. */
  sentMessage(messageId: string): SentMessage | null;
}

/** A row as both stores read it (src/store/pg/suppressions.ts reads the same columns). */
export interface SuppressionRow {
  address: string;
  reason: string;
  source: string;
  detail: string | null;
  created_at: number;
}

export class SqliteSuppressionStore implements SuppressionStore {
  readonly #db: DatabaseSync;
  readonly #get: StatementSync;
  readonly #put: StatementSync;
  readonly #insert: StatementSync;
  readonly #delete: StatementSync;
  readonly #page: StatementSync;
  readonly #all: StatementSync;
  readonly #count: StatementSync;
  readonly #version: StatementSync;
  readonly #sent: StatementSync;
  /** The counter as this process last knew it to match what it holds; -1: never read. */
  #seen = -1;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#get = db.prepare('SELECT * FROM suppressions WHERE address = ?');
    // An update, not INSERT OR REPLACE: REPLACE deletes first, and that delete fires no trigger by default.
    this.#put = db.prepare(
      `INSERT INTO suppressions (address, reason, source, detail, created_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, source = excluded.source, detail = excluded.detail, created_at = excluded.created_at`,
    );
    this.#insert = db.prepare('INSERT OR IGNORE INTO suppressions (address, reason, source, detail, created_at) VALUES (?, ?, ?, ?, ?)');
    this.#delete = db.prepare('DELETE FROM suppressions WHERE address = ?');
    this.#page = db.prepare('SELECT * FROM suppressions WHERE address > ? ORDER BY address LIMIT ?');
    this.#all = db.prepare('SELECT * FROM suppressions');
    this.#count = db.prepare('SELECT count(*) AS n FROM suppressions');
    this.#version = db.prepare('SELECT n FROM suppression_version');
    this.#sent = db.prepare('SELECT id, sender, created_at FROM messages WHERE message_id = ? ORDER BY created_at DESC LIMIT 1');
  }

  get(address: string): SuppressionRecord | null {
    const row = this.#get.get(address) as SuppressionRow | undefined;
    return row ? suppressionOf(row) : null;
  }

  put(r: SuppressionRecord): boolean {
    return this.#write(() => {
      const existed = this.#get.get(r.address) !== undefined;
      this.#put.run(r.address, r.reason, r.source, r.detail, r.createdAt);
      return !existed;
    });
  }

  addMissing(rs: SuppressionRecord[]): number {
    if (rs.length === 0) return 0;
    return this.#write(() => {
      let added = 0;
      for (const r of rs) added += Number(this.#insert.run(r.address, r.reason, r.source, r.detail, r.createdAt).changes);
      return added;
    });
  }

  delete(address: string): boolean {
    return this.#write(() => Number(this.#delete.run(address).changes) > 0);
  }

  page(after: string, limit: number): SuppressionRecord[] {
    return (this.#page.all(after, limit) as unknown as SuppressionRow[]).map(suppressionOf);
  }

  each(visit: (r: SuppressionRecord) => void): void {
    const own = !this.#db.isTransaction;
    // One read transaction: in WAL mode it sees one snapshot, so the counter read with the rows matches them.
    if (own) this.#db.exec('BEGIN');
    try {
      const version = this.#versionNow();
      for (const row of this.#all.iterate() as Iterable<SuppressionRow>) visit(suppressionOf(row));
      if (own) this.#db.exec('COMMIT');
      this.#seen = version;
    } catch (e) {
      if (own) this.#db.exec('ROLLBACK');
      throw e;
    }
  }

  count(): number {
    return (this.#count.get() as { n: number }).n;
  }

  changedElsewhere(): boolean {
    return this.#versionNow() !== this.#seen;
  }

  sentMessage(messageId: string): SentMessage | null {
    const row = this.#sent.get(messageId) as { id: string; sender: string; created_at: number } | undefined;
    return row ? { id: row.id, sender: row.sender, createdAt: row.created_at } : null;
  }

  #versionNow(): number {
    return (this.#version.get() as { n: number }).n;
  }

  /**
   * A write of this process. Under the write lock (BEGIN IMMEDIATE) the
   * counter before and after are both ours to read: when nobody else had
   * changed the table since we last looked (before === seen), what we hold
   * plus this write is the table, and `seen` moves on; otherwise it stays,
   * and the reader reloads.
   */
  #write<T>(fn: () => T): T {
    // Inside someone else's transaction (store.transaction): join it; the counter check is then only skipped.
    if (this.#db.isTransaction) return fn();
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const before = this.#versionNow();
      const out = fn();
      const after = this.#versionNow();
      this.#db.exec('COMMIT');
      if (before === this.#seen) this.#seen = after;
      return out;
    } catch (e) {
      this.#db.exec('ROLLBACK');
      throw e;
    }
  }
}

const SOURCES: readonly string[] = ['api', 'cli', 'bounce', 'complaint'] satisfies SuppressionSource[];

export function suppressionOf(r: SuppressionRow): SuppressionRecord {
  // A row written by something newer (or by hand) keeps its meaning as 'api': a deliberate entry.
  const source = (SOURCES.includes(r.source) ? r.source : 'api') as SuppressionSource;
  return { address: r.address, reason: r.reason, source, detail: r.detail, createdAt: r.created_at };
}
