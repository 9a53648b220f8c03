// The suppression list (src/suppress/ owns the meaning).

import type { DatabaseSync } from 'node:sqlite';

/** Schema step 7 of store.ts's MIGRATIONS. */
export const SUPPRESSION_SCHEMA = `CREATE TABLE suppressions (
     address TEXT PRIMARY KEY NOT NULL
   ) STRICT, WITHOUT ROWID`;

export interface SuppressionStore {}

export class SqliteSuppressionStore implements SuppressionStore {
  readonly #db: DatabaseSync;
  constructor(db: DatabaseSync) {
    this.#db = db;
  }
}
