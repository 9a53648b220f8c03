// Transactions on the PostgreSQL store's one connection (sync-client.ts):
// the same shape as the embedded store's, a plain synchronous function,
// nested calls joining the outer one. Nothing of this process can run in
// between (the event loop is blocked while each statement runs), so the
// only concurrency is other nodes': statements that read then write must
// lock what they read (SELECT … FOR UPDATE) or be a single atomic statement.

import type { SyncPgClient } from './sync-client.ts';

export type Transaction = <T>(fn: () => T) => T;

export function pgTransaction(db: SyncPgClient): Transaction {
  let depth = 0;
  return <T>(fn: () => T): T => {
    if (depth > 0) return fn();
    db.exec('BEGIN');
    depth++;
    try {
      const out = fn();
      db.exec('COMMIT');
      return out;
    } catch (e) {
      try {
        db.exec('ROLLBACK');
      } catch {
        // the connection is gone: so is the transaction
      }
      throw e;
    } finally {
      depth--;
    }
  };
}
