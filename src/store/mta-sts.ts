// The MTA-STS policy cache (RFC 8461 §5.1): the last policy fetched for each
// recipient domain, kept across restarts, so that an attacker who blocks the
// policy fetch later cannot downgrade a domain we have already learnt. The
// meaning lives in src/delivery/mta-sts-policy.ts; this file only stores rows.
// (Owned by the MTA-STS work of issue 15; the class is filled in there.)

import type { DatabaseSync } from 'node:sqlite';

/** Schema step 12 of store.ts's MIGRATIONS. */
export const MTA_STS_SCHEMA = `CREATE TABLE mta_sts_policies (
     domain TEXT PRIMARY KEY NOT NULL,
     policy_id TEXT NOT NULL,
     policy TEXT NOT NULL,
     fetched_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   ) STRICT, WITHOUT ROWID`;

export interface CachedStsPolicy {
  /** Lower case, no trailing dot. */
  domain: string;
  /** The id= of the `_mta-sts` TXT record the policy was fetched under. */
  policyId: string;
  /** The policy body as fetched (RFC 8461 §3.2), parsed again when read. */
  policy: string;
  /** Epoch milliseconds. */
  fetchedAt: number;
  /** fetchedAt + max_age. */
  expiresAt: number;
}

export interface MtaStsStore {
  get(domain: string): CachedStsPolicy | null;
  put(row: CachedStsPolicy): void;
  delete(domain: string): void;
  /** Removes rows that expired before `before`; returns how many. */
  expire(before: number): number;
}

export class SqliteMtaStsStore implements MtaStsStore {
  readonly #db: DatabaseSync;
  constructor(db: DatabaseSync) {
    this.#db = db;
  }
  get(_domain: string): CachedStsPolicy | null {
    void this.#db;
    throw new Error('not built yet');
  }
  put(_row: CachedStsPolicy): void {
    throw new Error('not built yet');
  }
  delete(_domain: string): void {
    throw new Error('not built yet');
  }
  expire(_before: number): number {
    throw new Error('not built yet');
  }
}
