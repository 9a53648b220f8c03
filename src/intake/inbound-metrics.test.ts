// One result per check and message for tern_inbound_results_total: the
// mapping from the inbound checks' outcome, and the bounded result label.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countInboundResults, resultPerCheck } from './inbound-metrics.ts';
import type { AuthOutcome } from './authenticate.ts';
import { registry } from '../metrics/registry.ts';

function outcome(o: Partial<AuthOutcome>): AuthOutcome {
  return { header: '', spf: { result: 'none' }, dkim: [], arc: 'none', dmarc: null, iprev: { result: 'pass', ip: '192.0.2.1', names: [] }, ...o };
}

async function count(check: string, result: string): Promise<number> {
  const got = await registry.getSingleMetric('tern_inbound_results_total')!.get();
  return got.values.find((v) => v.labels.check === check && v.labels.result === result)?.value ?? 0;
}

test('one result per check: DKIM passes when any signature does, else the first; DMARC none when not evaluated', () => {
  assert.deepEqual(resultPerCheck(outcome({})), { spf: 'none', dkim: 'none', dmarc: 'none', arc: 'none' });
  assert.deepEqual(
    resultPerCheck(outcome({ spf: { result: 'softfail' }, dkim: [{ result: 'fail' }, { result: 'pass' }], dmarc: { result: 'pass', domain: 'x.test', pct: 100 }, arc: 'pass' })),
    { spf: 'softfail', dkim: 'pass', dmarc: 'pass', arc: 'pass' },
  );
  assert.equal(resultPerCheck(outcome({ dkim: [{ result: 'neutral' }, { result: 'fail' }] })).dkim, 'neutral');
});

test('checks that did not finish count as temperror everywhere', () => {
  assert.deepEqual(resultPerCheck(outcome({ incomplete: 'checks timed out', spf: { result: 'temperror' } })), { spf: 'temperror', dkim: 'temperror', dmarc: 'temperror', arc: 'temperror' });
});

test('counted by check and result; a keyword outside RFC 8601 is "other", never a new series', async () => {
  const before = { spfPass: await count('spf', 'pass'), dkimOther: await count('dkim', 'other'), dmarcNone: await count('dmarc', 'none'), arcFail: await count('arc', 'fail') };
  countInboundResults(outcome({ spf: { result: 'pass' }, dkim: [{ result: 'weird' }], arc: 'fail' }));
  assert.equal(await count('spf', 'pass'), before.spfPass + 1);
  assert.equal(await count('dkim', 'other'), before.dkimOther + 1);
  assert.equal(await count('dmarc', 'none'), before.dmarcNone + 1);
  assert.equal(await count('arc', 'fail'), before.arcFail + 1);
  assert.equal(await count('dkim', 'weird'), 0);
});
