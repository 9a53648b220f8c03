// Webhooks and their durable outbox (src/webhooks/ owns the meaning).

import type { DatabaseSync } from 'node:sqlite';

/** Schema step 6 of store.ts's MIGRATIONS. */
export const WEBHOOK_SCHEMA = `CREATE TABLE webhooks (
     id TEXT PRIMARY KEY NOT NULL
   ) STRICT`;

export interface WebhookStore {
  close(): void;
}

export class SqliteWebhookStore implements WebhookStore {
  readonly #db: DatabaseSync;
  readonly #tx: <T>(fn: () => T) => T;
  constructor(db: DatabaseSync, transaction: <T>(fn: () => T) => T) {
    this.#db = db;
    this.#tx = transaction;
  }
  close(): void {}
}
