import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type Store } from './store.ts';
import type { TlsResultRow } from './tls-reports.ts';

function tempStore(): { store: Store; dir: string; reopen: () => Store; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-tlsrpt-store-'));
  const opened: Store[] = [];
  const open = () => {
    const s = openStore(dir);
    opened.push(s);
    return s;
  };
  const store = open();
  return { store, dir, reopen: open, cleanup: () => (opened.forEach((s) => s.close()), fs.rmSync(dir, { recursive: true, force: true })) };
}

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

test('addResults sums counts per key and keeps the last non-empty reason', () => {
  const t = tempStore();
  try {
    const s = t.store.tlsReports;
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
  } finally {
    t.cleanup();
  }
});

test('a policy that changed during the day is two rows', () => {
  const t = tempStore();
  try {
    const s = t.store.tlsReports;
    s.addResults([row(), row({ policyStrings: [...STS.slice(0, 1), 'mode: testing', ...STS.slice(2)] }), row({ policyType: 'no-policy-found', policyStrings: [], mxHosts: [] })]);
    assert.equal(s.results('2026-12-06', 'example.org').length, 3);
  } finally {
    t.cleanup();
  }
});

test('unreported lists domains without a finished report; pending ones stay listed', () => {
  const t = tempStore();
  try {
    const s = t.store.tlsReports;
    const day = '2026-12-06';
    s.addResults(['c.test', 'a.test', 'b.test', 'd.test', 'e.test'].map((policyDomain) => row({ policyDomain })));
    s.addResults([row({ day: '2026-12-07', policyDomain: 'z.test' })]);
    assert.deepEqual(s.unreported(day), ['a.test', 'b.test', 'c.test', 'd.test', 'e.test']);
    const base = { day, reportId: 'r', attempts: 1, delivered: [], updatedAt: 1 };
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
    assert.deepEqual(s.unreported(day), ['e.test']);
    assert.deepEqual(s.unreported('2026-12-07'), ['z.test']);
  } finally {
    t.cleanup();
  }
});

test('daysWithResults and expire work on whole days', () => {
  const t = tempStore();
  try {
    const s = t.store.tlsReports;
    for (const day of ['2026-11-28', '2026-11-30', '2026-12-01', '2026-12-06']) s.addResults([row({ day }), row({ day, policyDomain: 'b.test' })]);
    s.putReport({ day: '2026-11-28', policyDomain: 'example.org', reportId: 'r', state: 'sent', attempts: 1, delivered: [], updatedAt: 1 });
    assert.deepEqual(s.daysWithResults('2026-11-29', '2026-12-06'), ['2026-11-30', '2026-12-01']);
    assert.equal(s.expire('2026-12-01'), 4);
    assert.equal(s.report('2026-11-28', 'example.org'), null);
    assert.deepEqual(s.daysWithResults('2000-01-01', '2100-01-01'), ['2026-12-01', '2026-12-06']);
  } finally {
    t.cleanup();
  }
});

test('state survives reopening; an unknown state reads as finished', () => {
  const t = tempStore();
  try {
    t.store.tlsReports.addResults([row()]);
    t.store.tlsReports.putReport({ day: '2026-12-06', policyDomain: 'example.org', reportId: 'r1', state: 'pending', attempts: 2, delivered: ['https://x.test/'], updatedAt: 5 });
    t.store.close();
    const again = t.reopen();
    assert.equal(again.tlsReports.report('2026-12-06', 'example.org')!.attempts, 2);
    assert.equal(again.tlsReports.results('2026-12-06', 'example.org')[0]!.count, 1);
    again.tlsReports.putReport({ day: '2026-12-06', policyDomain: 'example.org', reportId: 'r1', state: 'weird' as 'sent', attempts: 2, delivered: [], updatedAt: 5 });
    assert.equal(again.tlsReports.report('2026-12-06', 'example.org')!.state, 'failed');
    assert.deepEqual(again.tlsReports.unreported('2026-12-06'), []);
  } finally {
    t.cleanup();
  }
});
