// Transactions on the PostgreSQL store's one connection (sync-client.ts):
// the same shape as the embedded store's, a plain synchronous function,
// nested calls joining the outer one. Nothing of this process can run in
// between (the event loop is blocked while each statement runs), so the
// only concurrency is other nodes': statements that read then write must
// lock what they read (SELECT … FOR UPDATE) or be a single atomic statement.

import { PgError, type SyncPgClient } from './sync-client.ts';

export type Transaction = <T>(fn: () => T) => T;

export function pgTransaction(db: SyncPgClient): Transaction {
  let depth = 0;
  return <T>(fn: () => T): T => {
    if (depth > 0) return fn();
    // Sent with the transaction's first statement that needs an answer, or with its COMMIT.
    db.inTransaction = true;
    db.defer('BEGIN');
    depth++;
    try {
      const out = fn();
      // A statement that failed inside fn (and was caught there) aborted the transaction: PostgreSQL
      // then answers COMMIT with ROLLBACK, and what fn wrote is gone. That must not pass as success.
      if (db.query('COMMIT').command === 'ROLLBACK') throw new PgError('the transaction was rolled back: a statement in it failed', '25P02');
      return out;
    } catch (e) {
      // What was never sent is simply forgotten; ROLLBACK outside a transaction is only a warning.
      db.dropDeferred();
      try {
        db.exec('ROLLBACK');
      } catch {
        // the connection is gone: so is the transaction
      }
      throw e;
    } finally {
      depth--;
      db.inTransaction = false;
    }
  };
}
