// PostgreSQL implementation of SuppressionStore (src/store/suppressions.ts
// says what the table holds). The statements are the embedded store's,
// ported; what differs comes from several nodes sharing the list:
//
// - The counter that tells a node's cached list (src/suppress/list.ts) to
//   read the table again is the suppression_version row, which the schema's
//   statement trigger bumps on any change, from any node or a psql session
//   (schema.ts). A write of this node locks that row first (SELECT … FOR
//   UPDATE), so between its "before" and "after" reads nobody else can
//   change the list: every other writer's trigger waits on the lock. That is
//   what BEGIN IMMEDIATE gives the embedded store.
// - The same trigger sends NOTIFY tern_suppressions. onChange() hands it to
//   the list, so another node's change can be acted on at once instead of
//   at the next poll; the counter stays the truth (a notification can be
//   missed while the LISTEN connection is down, and our own writes notify
//   too).
// - Orders and cursors compare addresses byte-wise (COLLATE "C"), as SQLite's
//   BINARY collation does: a database made with a natural-language locale
//   would otherwise page in another order than the embedded store.

import type { SyncPgClient } from './sync-client.ts';
import { pgTransaction, type Transaction } from './tx.ts';
import { suppressionOf, type SentMessage, type SuppressionRow, type SuppressionStore } from '../suppressions.ts';

/** The NOTIFY channel of schema.ts's suppressions_changed() trigger. */
export const SUPPRESSIONS_CHANNEL = 'tern_suppressions';

/** What the PostgreSQL store adds to SuppressionStore: word of changes made by any node. */
export interface NotifyingSuppressionStore extends SuppressionStore {
  /**
   * Calls `fn` after a change to the table has committed, by this node or
   * another (PostgreSQL LISTEN/NOTIFY), between event-loop turns. A hint
   * only: `changedElsewhere()` still tells whether a reload is needed, and a
   * notification lost with the LISTEN connection is caught by polling it.
   * Returns the function that stops the calls.
   */
  onChange(fn: () => void): () => void;
}

const COLUMNS = 'address, reason, source, detail, created_at';

/**
 * `tx` should be the store's own transaction function (store.ts's
 * `transaction`), so that a write made inside one joins it rather than
 * committing it early; without it the store makes its own.
 */
export function pgSuppressionStore(db: SyncPgClient, tx: Transaction = pgTransaction(db)): NotifyingSuppressionStore {
  /** The counter as this node last knew it to match what it holds; -1: never read. */
  let seen = -1;
  const listeners = new Set<() => void>();
  let listening = false;

  const versionNow = (): number => db.one<{ n: number }>('SELECT n FROM suppression_version')!.n;

  /**
   * A write of this node, with the counter locked around it: when nobody
   * had changed the table since we last looked (before === seen), what we
   * hold plus this write is the table, and `seen` moves on; otherwise it
   * stays, and the reader reloads. Inside a caller's transaction that rolls
   * back afterwards, `seen` is ahead of the counter: a spurious reload, no
   * missed one.
   */
  const write = <T>(fn: () => T): T => {
    let before = 0;
    let after = 0;
    const out = tx(() => {
      before = db.one<{ n: number }>('SELECT n FROM suppression_version FOR UPDATE')!.n;
      const result = fn();
      after = versionNow();
      return result;
    });
    if (before === seen) seen = after;
    return out;
  };

  return {
    get(address) {
      const row = db.one<SuppressionRow>(`SELECT ${COLUMNS} FROM suppressions WHERE address = $1`, [address]);
      return row ? suppressionOf(row) : null;
    },

    put(r) {
      return write(() => {
        // The prior row is read under the counter lock, which every Tern writer takes first: no other node's put can slip in between.
        const existed = db.one(`SELECT 1 FROM suppressions WHERE address = $1`, [r.address]) !== undefined;
        db.query(
          `INSERT INTO suppressions (${COLUMNS}) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (address) DO UPDATE SET reason = EXCLUDED.reason, source = EXCLUDED.source,
             detail = EXCLUDED.detail, created_at = EXCLUDED.created_at`,
          [r.address, r.reason, r.source, r.detail, r.createdAt],
        );
        return !existed;
      });
    },

    addMissing(rs) {
      if (rs.length === 0) return 0;
      // One statement for the batch, the columns bound as arrays; a repeated address in the batch is skipped like one already listed (as INSERT OR IGNORE row by row).
      return write(
        () =>
          db.query(
            `INSERT INTO suppressions (${COLUMNS})
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
             ON CONFLICT (address) DO NOTHING`,
            [rs.map((r) => r.address), rs.map((r) => r.reason), rs.map((r) => r.source), rs.map((r) => r.detail), rs.map((r) => r.createdAt)],
          ).rowCount,
      );
    },

    delete(address) {
      return write(() => db.query('DELETE FROM suppressions WHERE address = $1', [address]).rowCount > 0);
    },

    page(after, limit) {
      return db
        .rows<SuppressionRow>(`SELECT ${COLUMNS} FROM suppressions WHERE address COLLATE "C" > $1 ORDER BY address COLLATE "C" LIMIT $2`, [after, limit])
        .map(suppressionOf);
    },

    each(visit) {
      // One statement, so one snapshot (READ COMMITTED takes one per statement): the counter read with the rows matches them.
      // The join keeps the counter's row when the list is empty. The whole list crosses from the worker at once; the caller holds it all in memory anyway.
      const rows = db.rows<Partial<SuppressionRow> & { version: number }>(
        `SELECT v.n AS version, s.address, s.reason, s.source, s.detail, s.created_at
         FROM suppression_version v LEFT JOIN suppressions s ON true`,
      );
      for (const row of rows) if (row.address != null) visit(suppressionOf(row as SuppressionRow));
      seen = rows[0]!.version;
    },

    count() {
      return db.one<{ n: number }>('SELECT count(*) AS n FROM suppressions')!.n;
    },

    changedElsewhere() {
      return versionNow() !== seen;
    },

    sentMessage(messageId): SentMessage | null {
      const row = db.one<{ id: string; sender: string; created_at: number }>(
        'SELECT id, sender, created_at FROM messages WHERE message_id = $1 ORDER BY created_at DESC LIMIT 1',
        [messageId],
      );
      return row ? { id: row.id, sender: row.sender, createdAt: row.created_at } : null;
    },

    onChange(fn) {
      listeners.add(fn);
      if (!listening) {
        listening = true;
        db.listen(SUPPRESSIONS_CHANNEL, () => {
          for (const f of [...listeners]) f();
        });
      }
      return () => void listeners.delete(fn);
    },
  };
}

