import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import type { TlsResultRow } from '../store/tls-reports.ts';
import { buildReport, dayBounds, gzipReport, reportFilename } from './report.ts';

const STS = ['version: STSv1', 'mode: testing', 'mx: *.mail.example.org', 'max_age: 86400'];

function row(over: Partial<TlsResultRow>): TlsResultRow {
  return {
    day: '2026-12-06', policyDomain: 'example.org', policyType: 'sts', policyStrings: STS, mxHosts: ['*.mail.example.org'],
    result: 'success', mxHost: '', receivingIp: '', sendingIp: '', count: 1, reason: '', ...over,
  };
}

const META = { organization: 'Tern at mx.tern.test', contact: 'postmaster@mx.tern.test', reportId: '2026-12-06.abc123.example.org@mx.tern.test', day: '2026-12-06' };

test('dayBounds: the whole UTC day, ending at 23:59:59', () => {
  assert.deepEqual(dayBounds('2026-12-06'), { start: Date.parse('2026-12-06T00:00:00Z'), end: Date.parse('2026-12-06T23:59:59Z') });
  assert.throws(() => dayBounds('2026-02-30'));
  assert.throws(() => dayBounds('yesterday'));
  assert.throws(() => dayBounds('2026-12-06T00:00:00Z'));
});

test('the report has RFC 8460 §4.4 fields, names and order', () => {
  const rows = [
    row({ count: 5326 }),
    row({ result: 'starttls-not-supported', mxHost: 'mx2.mail.example.org', receivingIp: '203.0.113.56', sendingIp: '2001:db8:abcd:13::1', count: 200, reason: 'no STARTTLS in EHLO' }),
    row({ result: 'certificate-expired', mxHost: 'mx1.mail.example.org', receivingIp: '', sendingIp: '2001:db8:abcd:12::1', count: 100 }),
    row({ policyType: 'no-policy-found', policyStrings: [], mxHosts: [], count: 7 }),
    row({ policyType: 'no-policy-found', policyStrings: [], mxHosts: [], result: 'starttls-not-supported', mxHost: 'mx9.example.org', receivingIp: '192.0.2.9', count: 1 }),
    row({ policyType: 'sts', result: 'sts-policy-fetch-error', policyStrings: [], mxHosts: [], count: 3, reason: 'HTTP 404' }),
    row({ day: '2026-12-05', count: 99 }), // another day: ignored
    row({ count: 0 }), // nothing
  ];
  const report = buildReport(META, rows);
  assert.deepEqual(report, {
    'organization-name': 'Tern at mx.tern.test',
    'date-range': { 'start-datetime': '2026-12-06T00:00:00Z', 'end-datetime': '2026-12-06T23:59:59Z' },
    'contact-info': 'postmaster@mx.tern.test',
    'report-id': '2026-12-06.abc123.example.org@mx.tern.test',
    policies: [
      {
        policy: { 'policy-type': 'no-policy-found', 'policy-domain': 'example.org' },
        summary: { 'total-successful-session-count': 7, 'total-failure-session-count': 1 },
        'failure-details': [
          { 'result-type': 'starttls-not-supported', 'receiving-mx-hostname': 'mx9.example.org', 'receiving-ip': '192.0.2.9', 'failed-session-count': 1 },
        ],
      },
      {
        policy: { 'policy-type': 'sts', 'policy-string': STS, 'policy-domain': 'example.org', 'mx-host': ['*.mail.example.org'] },
        summary: { 'total-successful-session-count': 5326, 'total-failure-session-count': 300 },
        'failure-details': [
          { 'result-type': 'certificate-expired', 'sending-mta-ip': '2001:db8:abcd:12::1', 'receiving-mx-hostname': 'mx1.mail.example.org', 'failed-session-count': 100 },
          {
            'result-type': 'starttls-not-supported', 'sending-mta-ip': '2001:db8:abcd:13::1', 'receiving-mx-hostname': 'mx2.mail.example.org',
            'receiving-ip': '203.0.113.56', 'failed-session-count': 200, 'failure-reason-code': 'no STARTTLS in EHLO',
          },
        ],
      },
      {
        policy: { 'policy-type': 'sts', 'policy-domain': 'example.org' },
        summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 3 },
        'failure-details': [{ 'result-type': 'sts-policy-fetch-error', 'failed-session-count': 3, 'failure-reason-code': 'HTTP 404' }],
      },
    ],
  });
  // The JSON text keeps the RFC's field order (§4.4 lists them so; readers do not need it, humans like it).
  const text = JSON.stringify(report);
  const order = ['"organization-name"', '"date-range"', '"start-datetime"', '"end-datetime"', '"contact-info"', '"report-id"', '"policies"'];
  assert.deepEqual(order.map((k) => text.indexOf(k)), order.map((k) => text.indexOf(k)).sort((a, b) => a - b));
  const last = JSON.stringify(report.policies[1]);
  const inner = ['"policy-type"', '"policy-string"', '"policy-domain"', '"mx-host"', '"summary"', '"total-successful-session-count"', '"total-failure-session-count"', '"failure-details"', '"result-type"', '"sending-mta-ip"', '"receiving-mx-hostname"', '"failed-session-count"'];
  assert.deepEqual(inner.map((k) => last.indexOf(k)), inner.map((k) => last.indexOf(k)).sort((a, b) => a - b));
});

test('no failures: no failure-details; the same rows give the same report', () => {
  const a = buildReport(META, [row({ count: 3 })]);
  assert.equal('failure-details' in a.policies[0]!, false);
  assert.deepEqual(a.policies[0]!.summary, { 'total-successful-session-count': 3, 'total-failure-session-count': 0 });
  assert.equal(JSON.stringify(buildReport(META, [row({ count: 3 })])), JSON.stringify(a));
  assert.deepEqual(buildReport(META, []).policies, []);
});

test('gzipReport gunzips to the report JSON', () => {
  const report = buildReport(META, [row({ count: 2 }), row({ result: 'validation-failure', mxHost: 'mx.example.org', count: 1 })]);
  const gz = gzipReport(report);
  assert.deepEqual([gz[0], gz[1]], [0x1f, 0x8b]);
  assert.deepEqual(JSON.parse(zlib.gunzipSync(gz).toString('utf8')), report);
});

test('reportFilename follows RFC 8460 §5.1', () => {
  assert.equal(reportFilename('mx.tern.test', 'example.org', '2026-12-06', 'abc123'), 'mx.tern.test!example.org!1796515200!1796601599!abc123.json.gz');
  assert.throws(() => reportFilename('mx.tern.test', 'example.org', '2026-12-06', 'not-alnum'));
});
