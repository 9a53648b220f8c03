// The MTA-STS policy cache (RFC 8461 §5.1): the last policy fetched for each
// recipient domain, kept across restarts, so that an attacker who blocks the
// policy fetch later cannot downgrade a domain we have already learnt. The
// meaning lives in src/delivery/mta-sts-policy.ts; this file only stores rows.

import type { DatabaseSync, StatementSync } from 'node:sqlite';

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
  /** The row for `domain` (lower case), expired or not: the caller judges expiry by its own clock. */
  get(domain: string): CachedStsPolicy | null;
  /** Insert or replace the domain's row: one policy per domain. */
  put(row: CachedStsPolicy): void;
  delete(domain: string): void;
  /** Removes rows that expired before `before`; returns how many. */
  expire(before: number): number;
}

/** A row as both stores read it (src/store/pg/mta-sts.ts reads the same columns). */
export interface MtaStsRow {
  domain: string;
  policy_id: string;
  policy: string;
  fetched_at: number;
  expires_at: number;
}

export class SqliteMtaStsStore implements MtaStsStore {
  readonly #get: StatementSync;
  readonly #put: StatementSync;
  readonly #delete: StatementSync;
  readonly #expire: StatementSync;

  constructor(db: DatabaseSync) {
    this.#get = db.prepare('SELECT * FROM mta_sts_policies WHERE domain = ?');
    this.#put = db.prepare(
      `INSERT INTO mta_sts_policies (domain, policy_id, policy, fetched_at, expires_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, policy = excluded.policy,
         fetched_at = excluded.fetched_at, expires_at = excluded.expires_at`,
    );
    this.#delete = db.prepare('DELETE FROM mta_sts_policies WHERE domain = ?');
    // A scan: one row per domain we send to, and it runs rarely (the policy cache's own housekeeping).
    this.#expire = db.prepare('DELETE FROM mta_sts_policies WHERE expires_at < ?');
  }

  get(domain: string): CachedStsPolicy | null {
    const r = this.#get.get(domain) as MtaStsRow | undefined;
    return r ? policyOf(r) : null;
  }

  put(row: CachedStsPolicy): void {
    this.#put.run(row.domain, row.policyId, row.policy, row.fetchedAt, row.expiresAt);
  }

  delete(domain: string): void {
    this.#delete.run(domain);
  }

  expire(before: number): number {
    return Number(this.#expire.run(before).changes);
  }
}

export function policyOf(r: MtaStsRow): CachedStsPolicy {
  return { domain: r.domain, policyId: r.policy_id, policy: r.policy, fetchedAt: r.fetched_at, expiresAt: r.expires_at };
}
