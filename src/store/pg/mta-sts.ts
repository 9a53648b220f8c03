// PostgreSQL implementation of MtaStsStore (src/store/mta-sts.ts says what
// the policy cache is for). The statements are the embedded store's, ported.
// Shared by every node: a policy one node fetched protects the others'
// deliveries to that domain too (RFC 8461 §5.1: a cached policy is what
// stops a later downgrade). Two nodes putting the same domain at once is
// harmless: the upsert is one statement, and the last policy fetched wins.

import type { SyncPgClient } from './sync-client.ts';
import { policyOf, type CachedStsPolicy, type MtaStsRow, type MtaStsStore } from '../mta-sts.ts';

export function pgMtaStsStore(db: SyncPgClient): MtaStsStore {
  return {
    get(domain): CachedStsPolicy | null {
      const r = db.one<MtaStsRow>('SELECT domain, policy_id, policy, fetched_at, expires_at FROM mta_sts_policies WHERE domain = $1', [domain]);
      return r ? policyOf(r) : null;
    },

    put(row) {
      db.query(
        `INSERT INTO mta_sts_policies (domain, policy_id, policy, fetched_at, expires_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (domain) DO UPDATE SET policy_id = EXCLUDED.policy_id, policy = EXCLUDED.policy,
           fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at`,
        [row.domain, row.policyId, row.policy, row.fetchedAt, row.expiresAt],
      );
    },

    delete(domain) {
      db.query('DELETE FROM mta_sts_policies WHERE domain = $1', [domain]);
    },

    expire(before) {
      // A scan, as in the embedded store: one row per domain we send to, and it runs rarely.
      return db.query('DELETE FROM mta_sts_policies WHERE expires_at < $1', [before]).rowCount;
    },
  };
}
