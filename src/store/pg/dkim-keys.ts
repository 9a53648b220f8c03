// DKIM keys in PostgreSQL (issue 17): one row per (domain, selector), never
// replaced (a selector published in DNS must keep meaning the same key). The
// private keys are as sensitive here as in the files of dataDir/dkim/: the
// database's access control is now what protects them (docs/scale-out.md).

import type { SyncPgClient } from './sync-client.ts';
import type { DkimKey } from '../../intake/dkim.ts';
import type { DkimKeyTable } from '../../intake/dkim-store.ts';

interface Row {
  domain: string;
  selector: string;
  algorithm: DkimKey['algorithm'];
  private_key: string;
}

/** `watch`: the store's onChange for dkim_keys (also told when announcements may have been lost). */
export function pgDkimKeyTable(db: SyncPgClient, watch: (fn: () => void) => void): DkimKeyTable {
  return {
    list: () =>
      db.rows<Row>('SELECT domain, selector, algorithm, private_key FROM dkim_keys ORDER BY domain, selector').map((r) => ({
        domain: r.domain,
        selector: r.selector,
        algorithm: r.algorithm,
        privateKey: r.private_key,
      })),
    add: (k, createdAt) =>
      db.query('INSERT INTO dkim_keys (domain, selector, algorithm, private_key, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
        k.domain,
        k.selector,
        k.algorithm,
        k.privateKey,
        createdAt,
      ]).rowCount === 1,
    onChange: watch,
  };
}
