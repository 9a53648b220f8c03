// The MTA-STS policy cache's table, against both stores
// (test/helpers/stores.ts): rows survive a reopen, one row per domain,
// expiry by time.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CachedStsPolicy } from './mta-sts.ts';
import { storeKinds } from '../../test/helpers/stores.ts';

const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n';
const row = (domain: string, over: Partial<CachedStsPolicy> = {}): CachedStsPolicy => ({
  domain,
  policyId: '20261207',
  policy: POLICY,
  fetchedAt: 1_700_000_000_000,
  expiresAt: 1_700_086_400_000,
  ...over,
});

for (const kind of storeKinds()) {
  describe(`MTA-STS policy cache (${kind.name})`, { skip: kind.skip }, () => {
    const withStore = kind.withStore;

    it('put, get, replace, delete', () =>
      withStore((store) => {
        const s = store.mtaSts;
        assert.equal(s.get('example.test'), null);
        s.put(row('example.test'));
        assert.deepEqual(s.get('example.test'), row('example.test'));
        // A new policy for the domain replaces the old: one row per domain.
        s.put(row('example.test', { policyId: 'next', fetchedAt: 1_700_000_500_000, expiresAt: 1_700_000_600_000 }));
        assert.deepEqual(s.get('example.test'), row('example.test', { policyId: 'next', fetchedAt: 1_700_000_500_000, expiresAt: 1_700_000_600_000 }));
        assert.equal(s.get('other.test'), null);
        s.delete('example.test');
        assert.equal(s.get('example.test'), null);
        s.delete('example.test'); // deleting nothing is fine
      }));

    it('a policy survives closing and reopening the store, and is seen by another process or node', () => {
      const at = kind.location();
      const first = kind.openAt(at);
      first.mtaSts.put(row('example.test'));
      const other = kind.openAt(at);
      try {
        assert.deepEqual(other.mtaSts.get('example.test'), row('example.test'));
      } finally {
        other.close();
      }
      first.close();
      const second = kind.openAt(at);
      try {
        assert.deepEqual(second.mtaSts.get('example.test'), row('example.test'));
      } finally {
        second.close();
      }
    });

    it('expire removes only rows that expired before the given time, and counts them', () =>
      withStore((store) => {
        const s = store.mtaSts;
        s.put(row('old.test', { expiresAt: 1000 }));
        s.put(row('edge.test', { expiresAt: 2000 }));
        s.put(row('new.test', { expiresAt: 3000 }));
        assert.equal(s.expire(2000), 1);
        assert.equal(s.get('old.test'), null);
        assert.notEqual(s.get('edge.test'), null);
        assert.notEqual(s.get('new.test'), null);
        assert.equal(s.expire(2000), 0);
        assert.equal(s.expire(10_000), 2);
      }));
  });
}
