import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore } from '../store/store.ts';
import type { TlsReportStore, TlsResultRow } from '../store/tls-reports.ts';
import { silentLogger, type Logger } from '../util/log.ts';
import { registry } from '../metrics/registry.ts';
import { TlsResults, utcDay, MAX_REASON } from './results.ts';
import type { TlsAttempt } from './types.ts';

const DAY = 86_400_000;
const T0 = Date.parse('2026-12-06T23:59:50Z');

const STS = { type: 'sts' as const, strings: ['version: STSv1', 'mode: enforce', 'mx: *.example.org', 'max_age: 604800'], mxHosts: ['*.example.org'] };

function attempt(over: Partial<TlsAttempt> = {}): TlsAttempt {
  return { policyDomain: 'example.org', policy: STS, result: 'success', mxHost: 'mx1.example.org', receivingIp: '192.0.2.10', sendingIp: '198.51.100.2', ...over };
}

/** A store that keeps what it was given, and can be made to fail. */
class FakeStore implements Pick<TlsReportStore, 'addResults'> {
  batches: TlsResultRow[][] = [];
  failing = false;
  addResults(rows: TlsResultRow[]): void {
    if (this.failing) throw new Error('SQLITE_BUSY');
    this.batches.push(rows.map((r) => ({ ...r })));
  }
}

function sink(store: FakeStore, clock: { t: number }, extra: { log?: Logger; maxPending?: number } = {}): TlsResults {
  return new TlsResults({ store: store as unknown as TlsReportStore, log: extra.log ?? silentLogger, now: () => clock.t, flushMs: 3_600_000, maxPending: extra.maxPending });
}

async function metric(policy: string, result: string): Promise<number> {
  const m = await registry.getSingleMetric('tern_tls_rpt_results_total')!.get();
  return m.values.find((v) => v.labels.policy === policy && v.labels.result === result)?.value ?? 0;
}

test('utcDay is the UTC date', () => {
  assert.equal(utcDay(Date.parse('2026-12-06T23:59:59.999Z')), '2026-12-06');
  assert.equal(utcDay(Date.parse('2026-12-07T00:00:00Z')), '2026-12-07');
});

test('record aggregates per day, policy, result and place; successes collapse per policy', () => {
  const store = new FakeStore();
  const clock = { t: T0 };
  const r = sink(store, clock);
  try {
    r.record(attempt());
    r.record(attempt({ mxHost: 'mx2.example.org', receivingIp: '192.0.2.11' })); // same success row
    r.record(attempt({ result: 'certificate-expired', reason: 'first' }));
    r.record(attempt({ result: 'certificate-expired', reason: 'certificate has\r\nexpired' }));
    r.record(attempt({ result: 'certificate-expired', mxHost: 'MX2.example.org.', receivingIp: '192.0.2.11' }));
    r.record(attempt({ policyDomain: 'Other.TEST', policy: { type: 'no-policy-found', strings: [], mxHosts: [] } }));
    clock.t += 15_000; // past midnight UTC: a new day
    r.record(attempt());
    assert.equal(r.pending, 5);
    assert.equal(store.batches.length, 0, 'nothing written before a flush');
    r.flush();
    assert.equal(r.pending, 0);
    assert.equal(store.batches.length, 1);
    const rows = store.batches[0]!;
    const find = (p: Partial<TlsResultRow>) => rows.filter((x) => Object.entries(p).every(([k, v]) => JSON.stringify(x[k as keyof TlsResultRow]) === JSON.stringify(v)));
    assert.deepEqual(find({ day: '2026-12-06', policyDomain: 'example.org', result: 'success' }), [
      { day: '2026-12-06', policyDomain: 'example.org', policyType: 'sts', policyStrings: STS.strings, mxHosts: STS.mxHosts, result: 'success', mxHost: '', receivingIp: '', sendingIp: '', count: 2, reason: '' },
    ]);
    const expired = find({ day: '2026-12-06', result: 'certificate-expired' });
    assert.equal(expired.length, 2);
    assert.deepEqual(expired.find((x) => x.mxHost === 'mx1.example.org'), {
      day: '2026-12-06', policyDomain: 'example.org', policyType: 'sts', policyStrings: STS.strings, mxHosts: STS.mxHosts, result: 'certificate-expired',
      mxHost: 'mx1.example.org', receivingIp: '192.0.2.10', sendingIp: '198.51.100.2', count: 2, reason: 'certificate has expired',
    });
    assert.equal(expired.find((x) => x.mxHost === 'mx2.example.org')!.count, 1, 'host names are lower-cased, the root dot dropped');
    assert.equal(find({ policyDomain: 'other.test', policyType: 'no-policy-found' })[0]!.count, 1);
    assert.equal(find({ day: '2026-12-07' })[0]!.count, 1);
    r.flush();
    assert.equal(store.batches.length, 1, 'an empty flush writes nothing');
  } finally {
    r.close();
  }
});

test('the timer flushes, close() flushes the rest and stops', async () => {
  const store = new FakeStore();
  const r = new TlsResults({ store: store as unknown as TlsReportStore, log: silentLogger, flushMs: 20 });
  r.record(attempt());
  await new Promise((res) => setTimeout(res, 80));
  assert.equal(store.batches.length, 1);
  r.record(attempt());
  r.close();
  assert.equal(store.batches.length, 2);
  r.close();
  assert.equal(store.batches.length, 2);
});

test('a failing store keeps the counts for the next flush, bounded by maxPending', async () => {
  const store = new FakeStore();
  const clock = { t: T0 };
  const warnings: string[] = [];
  const log: Logger = { ...silentLogger, warn: (msg) => void warnings.push(msg) };
  const r = sink(store, clock, { log, maxPending: 3 });
  try {
    store.failing = true;
    r.record(attempt());
    r.flush();
    assert.equal(r.pending, 1);
    r.record(attempt());
    r.record(attempt({ result: 'starttls-not-supported' }));
    r.record(attempt({ result: 'certificate-not-trusted' })); // the third row: an early flush is due (and fails)
    r.record(attempt({ result: 'validation-failure' })); // a fourth distinct row is dropped
    r.record(attempt()); // an existing row still counts
    assert.equal(r.pending, 3);
    await new Promise((res) => setTimeout(res, 10)); // the early flush runs, fails
    store.failing = false;
    r.flush();
    assert.equal(r.pending, 0);
    const rows = store.batches[0]!;
    assert.equal(rows.find((x) => x.result === 'success')!.count, 3);
    assert.equal(rows.length, 3);
    assert.ok(warnings.some((w) => /dropped/.test(w)));
    assert.ok(warnings.some((w) => /could not store/.test(w)));
  } finally {
    r.close();
  }
});

test('record never throws, and counts the metric', async () => {
  const store = new FakeStore();
  const r = sink(store, { t: T0 });
  try {
    const before = await metric('tlsa', 'tlsa-invalid');
    r.record(attempt({ policy: { type: 'tlsa', strings: ['3 1 1 ab'], mxHosts: [] }, result: 'tlsa-invalid' }));
    assert.equal(await metric('tlsa', 'tlsa-invalid'), before + 1);
    r.record(null as unknown as TlsAttempt);
    r.record({ policyDomain: 'x.test' } as unknown as TlsAttempt);
    r.record(attempt({ result: 'bogus' as 'success' }));
    r.record(attempt({ result: 'certificate-expired', reason: 'x'.repeat(5000) }));
    r.flush();
    const rows = store.batches[0]!;
    assert.equal(rows.find((x) => x.result === 'certificate-expired')!.reason.length, MAX_REASON);
    assert.deepEqual(rows.map((x) => x.result).sort(), ['certificate-expired', 'tlsa-invalid'], 'the malformed attempts left nothing');
  } finally {
    r.close();
  }
});

test('flushed into the real store, two flushes add up', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-tlsrpt-results-'));
  const store = openStore(dir);
  const clock = { t: T0 - DAY / 2 };
  const r = new TlsResults({ store: store.tlsReports, log: silentLogger, now: () => clock.t, flushMs: 3_600_000 });
  try {
    r.record(attempt());
    r.record(attempt({ result: 'starttls-not-supported', reason: 'no STARTTLS' }));
    r.flush();
    r.record(attempt());
    r.record(attempt({ result: 'starttls-not-supported' }));
    r.close();
    const rows = store.tlsReports.results('2026-12-06', 'example.org');
    assert.deepEqual(rows.map((x) => [x.result, x.count, x.reason]).sort(), [['starttls-not-supported', 2, 'no STARTTLS'], ['success', 2, '']]);
  } finally {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
