// The dashboard's state (src/dashboard/ owns the meaning).

import type { DatabaseSync } from 'node:sqlite';

/** Schema step 11 of store.ts's MIGRATIONS. */
export const DASHBOARD_SCHEMA = `CREATE TABLE ui_sessions (
     token_hash TEXT PRIMARY KEY NOT NULL
   ) STRICT, WITHOUT ROWID`;

export interface DashboardStore {}

export class SqliteDashboardStore implements DashboardStore {
  readonly #db: DatabaseSync;
  readonly #tx: <T>(fn: () => T) => T;
  constructor(db: DatabaseSync, transaction: <T>(fn: () => T) => T) {
    this.#db = db;
    this.#tx = transaction;
  }
}
