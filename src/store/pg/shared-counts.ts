// The counts several nodes add up (src/policy/shared-counts.ts) in
// PostgreSQL: one upsert per sync for what a node added, one sum per window
// length for what the others added. Rows are written in key order so two
// nodes' syncs lock shared rows in the same order (no deadlock); each node
// writes only its own rows, so they never wait on each other anyway.

import type { SyncPgClient } from './sync-client.ts';
import type { SharedCountTable } from '../../policy/shared-counts.ts';

export function pgSharedCountTable(db: SyncPgClient): SharedCountTable {
  return {
    add(node, rows) {
      if (rows.length === 0) return;
      const sorted = [...rows].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.bucket - b.bucket));
      db.query(
        `INSERT INTO shared_counts (key, bucket, node, count)
         SELECT k, b, $1, n FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS t(k, b, n)
         ON CONFLICT (key, bucket, node) DO UPDATE SET count = shared_counts.count + EXCLUDED.count`,
        [node, sorted.map((r) => r.key), sorted.map((r) => r.bucket), sorted.map((r) => r.n)],
      );
    },
    others(node, keys, fromBucket) {
      const out = new Map<string, number>();
      if (keys.length === 0) return out;
      const rows = db.rows<{ key: string; n: number }>(
        'SELECT key, SUM(count)::bigint AS n FROM shared_counts WHERE key = ANY($1::text[]) AND bucket >= $2 AND node <> $3 GROUP BY key',
        [keys, fromBucket, node],
      );
      for (const r of rows) out.set(r.key, r.n);
      return out;
    },
    reset(keys) {
      if (keys.length > 0) db.query('DELETE FROM shared_counts WHERE key = ANY($1::text[])', [keys]);
    },
    expire(bucket) {
      db.query('DELETE FROM shared_counts WHERE bucket < $1', [bucket]);
    },
  };
}
