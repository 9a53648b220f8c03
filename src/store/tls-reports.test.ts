// TLS-RPT state (src/store/tls-reports.ts), against both stores
// (test/helpers/stores.ts): counts summed per key, report states upserted,
// days expired whole.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { TlsResultRow } from './tls-reports.ts';
import { storeKinds } from '../../test/helpers/stores.ts';

const STS = ['version: STSv1', 'mode: enforce', 'mx: mx.example.org', 'max_age: 86400'];

function row(over: Partial<TlsResultRow> = {}): TlsResultRow {
  return {
    day: '2026-12-06',
    policyDomain: 'example.org',
    policyType: 'sts',
    policyStrings: STS,
    mxHosts: ['mx.example.org'],
    result: 'success',
    mxHost: '',
    receivingIp: '',
    sendingIp: '',
    count: 1,
    reason: '',
    ...over,
  };
}

for (const kind of storeKinds()) {
  describe(`TLS-RPT store (${kind.name})`, { skip: kind.skip }, () => {
    const withStore = kind.withStore;

    it('addResults sums counts per key and keeps the last non-empty reason', () =>
      withStore((store) => {
        const s = store.tlsReports;
        const fail = { result: 'certificate-expired', mxHost: 'mx.example.org', receivingIp: '192.0.2.1', sendingIp: '198.51.100.1' };
        s.addResults([row({ count: 3 }), row({ ...fail, count: 1, reason: 'first' })]);
        s.addResults([row({ count: 2 }), row({ ...fail, count: 4, reason: '' }), row({ policyDomain: 'other.test', count: 7 })]);
        s.addResults([row({ ...fail, count: 1, reason: 'certificate has expired' })]);
        s.addResults([]);
        const rows = s.results('2026-12-06', 'example.org');
        assert.equal(rows.length, 2);
        const ok = rows.find((r) => r.result === 'success')!;
        assert.equal(ok.count, 5);
        assert.deepEqual(ok.policyStrings, STS);
        assert.deepEqual(ok.mxHosts, ['mx.example.org']);
        const bad = rows.find((r) => r.result === 'certificate-expired')!;
        assert.deepEqual(bad, row({ ...fail, count: 6, reason: 'certificate has expired' }));
        assert.deepEqual(s.results('2026-12-06', 'other.test').map((r) => r.count), [7]);
        assert.deepEqual(s.results('2026-12-05', 'example.org'), []);
      }));

    it('a key repeated within one call is summed, its last non-empty reason kept', () =>
      withStore((store) => {
        const s = store.tlsReports;
        const fail = { result: 'validation-failure', mxHost: 'mx.example.org', receivingIp: '192.0.2.1', sendingIp: '198.51.100.1' };
        s.addResults([row({ ...fail, count: 2, reason: 'a' }), row({ count: 1 }), row({ ...fail, count: 3, reason: 'b' }), row({ ...fail, count: 1, reason: '' }), row({ count: 4 })]);
        const rows = s.results('2026-12-06', 'example.org');
        assert.deepEqual(
          rows.map((r) => [r.result, r.count, r.reason]),
          [
            ['success', 5, ''],
            ['validation-failure', 6, 'b'],
          ],
        );
      }));

    it('results come in primary-key order; strings with quotes, commas and braces survive', () =>
      withStore((store) => {
        const s = store.tlsReports;
        const odd = ['mode: "enforce"', 'a,b', '{x}', 'back\\slash', ''];
        s.addResults([
          row({ result: 'starttls-not-supported', mxHost: 'mx2.example.org' }),
          row({ policyType: 'no-policy-found', policyStrings: [], mxHosts: [] }),
          row({ result: 'starttls-not-supported', mxHost: 'mx1.example.org' }),
          row({ policyStrings: odd }),
          row(),
        ]);
        const rows = s.results('2026-12-06', 'example.org');
        assert.deepEqual(
          rows.map((r) => [r.policyType, r.policyStrings.length, r.result, r.mxHost]),
          [
            ['no-policy-found', 0, 'success', ''],
            // The odd strings' JSON starts '["mode', the others' '["version': 'm' before 'v'.
            ['sts', odd.length, 'success', ''],
            ['sts', STS.length, 'starttls-not-supported', 'mx1.example.org'],
            ['sts', STS.length, 'starttls-not-supported', 'mx2.example.org'],
            ['sts', STS.length, 'success', ''],
          ],
        );
        assert.deepEqual(rows[1]!.policyStrings, odd);
      }));

    it('a policy that changed during the day is two rows', () =>
      withStore((store) => {
        const s = store.tlsReports;
        s.addResults([row(), row({ policyStrings: [...STS.slice(0, 1), 'mode: testing', ...STS.slice(2)] }), row({ policyType: 'no-policy-found', policyStrings: [], mxHosts: [] })]);
        assert.equal(s.results('2026-12-06', 'example.org').length, 3);
      }));

    it('unreported lists domains without a finished report; pending ones stay listed', () =>
      withStore((store) => {
        const s = store.tlsReports;
        const day = '2026-12-06';
        s.addResults(['c.test', 'a.test', 'b.test', 'd.test', 'e.test', 'a-z.test', 'az.test'].map((policyDomain) => row({ policyDomain })));
        s.addResults([row({ day: '2026-12-07', policyDomain: 'z.test' })]);
        // Byte order, as SQLite's: '-' (0x2d) before '.' (0x2e) before letters.
        assert.deepEqual(s.unreported(day), ['a-z.test', 'a.test', 'az.test', 'b.test', 'c.test', 'd.test', 'e.test']);
        const base = { day, reportId: 'r', attempts: 1, delivered: [], updatedAt: 1 };
        for (const policyDomain of ['a-z.test', 'az.test']) s.putReport({ ...base, policyDomain, state: 'sent' });
        s.putReport({ ...base, policyDomain: 'a.test', state: 'sent' });
        s.putReport({ ...base, policyDomain: 'b.test', state: 'pending', delivered: ['mailto:x@b.test'] });
        s.putReport({ ...base, policyDomain: 'c.test', state: 'no-rua' });
        s.putReport({ ...base, policyDomain: 'd.test', state: 'failed' });
        assert.deepEqual(s.unreported(day), ['b.test', 'e.test']);
        assert.deepEqual(s.report(day, 'b.test'), { ...base, policyDomain: 'b.test', state: 'pending', delivered: ['mailto:x@b.test'] });
        assert.equal(s.report(day, 'e.test'), null);
        // Replaced, not duplicated.
        s.putReport({ ...base, policyDomain: 'b.test', state: 'sent', attempts: 2, delivered: ['mailto:x@b.test', 'https://b.test/r'] });
        assert.deepEqual(s.report(day, 'b.test')!.delivered, ['mailto:x@b.test', 'https://b.test/r']);
        assert.equal(s.report(day, 'b.test')!.attempts, 2);
        assert.deepEqual(s.unreported(day), ['e.test']);
        assert.deepEqual(s.unreported('2026-12-07'), ['z.test']);
      }));

    it('daysWithResults and expire work on whole days', () =>
      withStore((store) => {
        const s = store.tlsReports;
        for (const day of ['2026-11-28', '2026-11-30', '2026-12-01', '2026-12-06']) s.addResults([row({ day }), row({ day, policyDomain: 'b.test' })]);
        s.putReport({ day: '2026-11-28', policyDomain: 'example.org', reportId: 'r', state: 'sent', attempts: 1, delivered: [], updatedAt: 1 });
        assert.deepEqual(s.daysWithResults('2026-11-29', '2026-12-06'), ['2026-11-30', '2026-12-01']);
        assert.equal(s.expire('2026-12-01'), 4);
        assert.equal(s.report('2026-11-28', 'example.org'), null);
        assert.deepEqual(s.daysWithResults('2000-01-01', '2100-01-01'), ['2026-12-01', '2026-12-06']);
        assert.equal(s.expire('2026-12-01'), 0);
      }));

    it('state survives reopening; an unknown state reads as finished', () => {
      const at = kind.location();
      const first = kind.openAt(at);
      first.tlsReports.addResults([row()]);
      first.tlsReports.putReport({ day: '2026-12-06', policyDomain: 'example.org', reportId: 'r1', state: 'pending', attempts: 2, delivered: ['https://x.test/'], updatedAt: 5 });
      first.close();
      const again = kind.openAt(at);
      try {
        assert.equal(again.tlsReports.report('2026-12-06', 'example.org')!.attempts, 2);
        assert.equal(again.tlsReports.results('2026-12-06', 'example.org')[0]!.count, 1);
        again.tlsReports.putReport({ day: '2026-12-06', policyDomain: 'example.org', reportId: 'r1', state: 'weird' as 'sent', attempts: 2, delivered: [], updatedAt: 5 });
        assert.equal(again.tlsReports.report('2026-12-06', 'example.org')!.state, 'failed');
        assert.deepEqual(again.tlsReports.unreported('2026-12-06'), []);
      } finally {
        again.close();
      }
    });
  });
}
