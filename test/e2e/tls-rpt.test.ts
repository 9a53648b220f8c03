// TLS-RPT (RFC 8460) end to end, on a loopback test network: a real Tern
// delivers to MTA-STS domains (one whose MX is fine, one without STARTTLS,
// one with a certificate no CA signed), remote delivery records each
// negotiation, and the counts reach the store when the server stops. Then
// the reporter sends that day's reports to the rua each domain publishes in
// `_smtp._tls`: an HTTPS receiver with a test-CA certificate, and the
// postmaster mailbox of a second Tern, reached over SMTP (the way intake
// will take them). Each report is checked field by field against a JSON
// Schema written from RFC 8460 §4.4.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { Ajv } from 'ajv';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { makeTestCa, type TestCa } from '../helpers/test-ca.ts';
import { policyBody, selfSignedCert, startPolicyServer, type PolicyServer } from '../helpers/policy-server.ts';
import { expectMailbox, open, sendMail } from './smtp-kit.ts';
import { openStore, type Store } from '../../src/store/store.ts';
import { createResolver } from '../../src/dns/resolver.ts';
import { silentLogger } from '../../src/util/log.ts';
import { TlsReporter } from '../../src/tlsrpt/reporter.ts';
import { utcDay } from '../../src/tlsrpt/results.ts';
import type { TlsReportJson } from '../../src/tlsrpt/report.ts';
import type { MessageEvent } from '../../src/events/events.ts';

const RESULT_TYPES = [
  'starttls-not-supported', 'certificate-host-mismatch', 'certificate-expired', 'certificate-not-trusted', 'validation-failure',
  'tlsa-invalid', 'dnssec-invalid', 'dane-required', 'sts-policy-fetch-error', 'sts-policy-invalid', 'sts-webpki-invalid',
];

/** RFC 8460 §4.4 as a JSON Schema: every field, its type, which are required; nothing else allowed. */
const REPORT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['organization-name', 'date-range', 'contact-info', 'report-id', 'policies'],
  properties: {
    'organization-name': { type: 'string', minLength: 1 },
    'date-range': {
      type: 'object',
      additionalProperties: false,
      required: ['start-datetime', 'end-datetime'],
      properties: {
        'start-datetime': { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T00:00:00Z$' },
        'end-datetime': { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T23:59:59Z$' },
      },
    },
    'contact-info': { type: 'string', minLength: 1 },
    'report-id': { type: 'string', minLength: 1 },
    policies: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['policy', 'summary'],
        properties: {
          policy: {
            type: 'object',
            additionalProperties: false,
            required: ['policy-type', 'policy-domain'],
            properties: {
              'policy-type': { enum: ['sts', 'tlsa', 'no-policy-found'] },
              'policy-string': { type: 'array', items: { type: 'string' } },
              'policy-domain': { type: 'string', minLength: 1 },
              'mx-host': { type: 'array', items: { type: 'string' } },
            },
          },
          summary: {
            type: 'object',
            additionalProperties: false,
            required: ['total-successful-session-count', 'total-failure-session-count'],
            properties: {
              'total-successful-session-count': { type: 'integer', minimum: 0 },
              'total-failure-session-count': { type: 'integer', minimum: 0 },
            },
          },
          'failure-details': {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['result-type', 'failed-session-count'],
              properties: {
                'result-type': { enum: RESULT_TYPES },
                'sending-mta-ip': { type: 'string' },
                'receiving-mx-hostname': { type: 'string' },
                'receiving-mx-helo': { type: 'string' },
                'receiving-ip': { type: 'string' },
                'failed-session-count': { type: 'integer', minimum: 1 },
                'additional-information': { type: 'string' },
                'failure-reason-code': { type: 'string' },
              },
            },
          },
        },
      },
    },
  },
};

const validate = new Ajv({ allErrors: true, strict: true }).compile(REPORT_SCHEMA);

function checkReport(report: unknown): TlsReportJson {
  assert.ok(validate(report), JSON.stringify(validate.errors));
  const r = report as unknown as TlsReportJson;
  for (const p of r.policies) {
    const failed = (p['failure-details'] ?? []).reduce((n, f) => n + f['failed-session-count'], 0);
    assert.equal(p.summary['total-failure-session-count'], failed, 'the failure total is the sum of the details');
  }
  return r;
}

/** The header section (unfolded, names lower-cased) and the parts of a multipart message. */
function parseMime(raw: string): { headers: Map<string, string>; parts: { headers: Map<string, string>; body: string }[] } {
  const split = (s: string) => {
    const end = s.indexOf('\r\n\r\n');
    const headers = new Map<string, string>();
    for (const l of s.slice(0, end).replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
      const c = l.indexOf(':');
      if (!headers.has(l.slice(0, c).toLowerCase())) headers.set(l.slice(0, c).toLowerCase(), l.slice(c + 1).trim());
    }
    return { headers, body: s.slice(end + 4) };
  };
  const top = split(raw);
  const boundary = /boundary="?([^";]+)"?/.exec(top.headers.get('content-type') ?? '')?.[1];
  const parts = boundary ? top.body.split(`--${boundary}`).slice(1, -1).map((p) => split(p.replace(/^\r\n/, ''))) : [];
  return { headers: top.headers, parts };
}

describe('TLS-RPT (RFC 8460): from delivery results to the daily reports', () => {
  let ca: TestCa;
  let dns: DnsServer;
  let policy: PolicyServer;
  let good: ScriptedPeer;
  let plain: ScriptedPeer;
  let selfSigned: ScriptedPeer;
  let sender: TestServer;
  let receiverTern: TestServer;
  let store: Store;
  let receiver: https.Server;
  const posts: { path: string; type: string; body: Buffer }[] = [];
  const events: MessageEvent[] = [];
  const today = utcDay(Date.now());

  before(async () => {
    ca = await makeTestCa();
    const mxCert = await ca.issue(['mx.good.test']);
    good = await ScriptedPeer.start({ host: '127.0.0.2', tls: { cert: mxCert.chain, key: mxCert.key } });
    const port = good.port;
    plain = await ScriptedPeer.start({ host: '127.0.0.3', port });
    selfSigned = await ScriptedPeer.start({ host: '127.0.0.4', port, tls: await selfSignedCert(['mx.selfsigned.test']) });

    const rcvCert = await ca.issue(['reports.tlsrpt.test']);
    receiver = https.createServer({ cert: rcvCert.chain, key: rcvCert.key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        posts.push({ path: req.url ?? '', type: String(req.headers['content-type']), body: Buffer.concat(chunks) });
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const rua = `https://reports.tlsrpt.test:${(receiver.address() as AddressInfo).port}`;

    const zone: Zone = { 'reports.tlsrpt.test': { A: ['127.0.0.1'] } };
    for (const [domain, mx, ip, reports] of [
      ['good.test', 'mx.good.test', '127.0.0.2', `${rua}/good`],
      ['plain.test', 'mx.plain.test', '127.0.0.3', 'mailto:postmaster@tern.test'],
      ['selfsigned.test', 'mx.selfsigned.test', '127.0.0.4', `mailto:postmaster@tern.test,${rua}/selfsigned`],
    ] as const) {
      zone[domain] = { MX: [{ preference: 10, exchange: mx }] };
      zone[mx] = { A: [ip] };
      zone[`_mta-sts.${domain}`] = { TXT: ['v=STSv1; id=20261207T0900;'] };
      zone[`mta-sts.${domain}`] = { A: ['127.0.0.1'] };
      zone[`_smtp._tls.${domain}`] = { TXT: [`v=TLSRPTv1; rua=${reports}`] };
    }
    dns = await startDnsServer(zone);
    policy = await startPolicyServer(await ca.issue(['mta-sts.good.test', 'mta-sts.plain.test', 'mta-sts.selfsigned.test']));
    for (const d of ['good.test', 'plain.test', 'selfsigned.test']) policy.policies.set(`mta-sts.${d}`, policyBody({ mode: 'enforce', mx: [`mx.${d}`], maxAge: 86_400 }));

    sender = await startServer(
      {
        trustedNetworks: ['127.0.0.0/8'],
        dns: { servers: [dns.address], timeout: '1s' },
        outbound: { port, mtaStsPort: policy.port, connectionReuse: '0s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
        queue: { retrySchedule: ['1h'], maxLifetime: '2h' },
        tlsRpt: { organization: 'Tern E2E', contact: 'postmaster@mx.tern.test' },
      },
      { outboundTls: { ca: ca.cert } },
    );
    sender.tern.events.subscribe((e) => events.push(e));
    receiverTern = await startServer();
  });

  after(async () => {
    store?.close();
    await receiverTern?.stop();
    if (sender) fs.rmSync(sender.dir, { recursive: true, force: true });
    for (const p of [good, plain, selfSigned]) await p?.close();
    await policy?.close();
    await dns?.close();
    await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
    ca?.close();
  });

  async function send(to: string): Promise<string> {
    const c = await open(sender.port('smtp'));
    try {
      return await sendMail(c, 'alice@tern.test', [to], `From: alice@tern.test\r\nTo: ${to}\r\nSubject: TLS-RPT test\r\n\r\nHello.\r\n`);
    } finally {
      c.close();
    }
  }

  it('records the negotiations and reports them once, by POST and by mail', async () => {
    const ids = [await send('a@good.test'), await send('b@good.test'), await send('c@plain.test'), await send('d@selfsigned.test')];
    for (const id of ids) await waitFor(() => events.find((e) => e.queueId === id && ['delivered', 'deferred', 'bounced'].includes(e.type)), 15_000, `the first attempt of ${id}`);
    // Stopping the server writes the counts still in memory (TlsResults.close).
    await sender.tern.stop(500);
    store = openStore(sender.dataDir);
    assert.deepEqual(store.tlsReports.unreported(today), ['good.test', 'plain.test', 'selfsigned.test']);

    const reporter = new TlsReporter({
      store: store.tlsReports,
      resolver: createResolver({ servers: [dns.address], timeout: 1000 }, { cacheTtl: 0 }),
      log: silentLogger,
      organization: 'Tern E2E',
      contact: 'postmaster@mx.tern.test',
      // What the lead wires to intake; here the report crosses SMTP into another Tern.
      submit: async (m) => {
        const c = await open(receiverTern.port('smtp'));
        try {
          await sendMail(c, m.from, m.to, m.raw.toString('latin1'));
        } finally {
          c.close();
        }
      },
      httpsCa: ca.cert,
      allowPrivateAddresses: true,
      schedule: false,
    });
    try {
      assert.deepEqual(await reporter.runOnce(today), { sent: 3, failed: 0 });
      assert.deepEqual(await reporter.runOnce(today), { sent: 0, failed: 0 }, 'never twice');
    } finally {
      await reporter.close();
    }

    // By POST: good.test and selfsigned.test.
    assert.deepEqual(posts.map((p) => p.path).sort(), ['/good', '/selfsigned']);
    for (const p of posts) assert.equal(p.type, 'application/tlsrpt+gzip');
    const posted = new Map(posts.map((p) => [p.path, checkReport(JSON.parse(zlib.gunzipSync(p.body).toString('utf8')))]));
    const goodReport = posted.get('/good')!;
    assert.equal(goodReport['organization-name'], 'Tern E2E');
    assert.equal(goodReport['contact-info'], 'postmaster@mx.tern.test');
    assert.equal(goodReport['date-range']['start-datetime'], `${today}T00:00:00Z`);
    const gp = goodReport.policies.find((p) => p.policy['policy-type'] === 'sts' && p.summary['total-successful-session-count'] > 0)!;
    assert.ok(gp, JSON.stringify(goodReport));
    assert.equal(gp.policy['policy-domain'], 'good.test');
    assert.equal(goodReport.policies.reduce((n, p) => n + p.summary['total-successful-session-count'], 0), 2, 'two messages, two sessions (no reuse)');
    assert.equal(goodReport.policies.reduce((n, p) => n + p.summary['total-failure-session-count'], 0), 0);

    const bad = posted.get('/selfsigned')!;
    const details = bad.policies.flatMap((p) => p['failure-details'] ?? []);
    assert.ok(details.length > 0, JSON.stringify(bad));
    assert.ok(details.every((f) => f['result-type'].startsWith('certificate-') || f['result-type'] === 'validation-failure'), JSON.stringify(details));
    assert.ok(details.some((f) => f['receiving-mx-hostname'] === 'mx.selfsigned.test' && f['receiving-ip'] === '127.0.0.4'), JSON.stringify(details));

    // By mail: plain.test and selfsigned.test, to postmaster@tern.test (alice's mailbox) at the other Tern.
    const mails = (await expectMailbox(receiverTern.dataDir, 'tern.test', 'alice', 2)).map((m) => parseMime(m.replace(/\r?\n/g, '\r\n')));
    const byDomain = new Map(mails.map((m) => [m.headers.get('tls-report-domain')!, m]));
    assert.deepEqual([...byDomain.keys()].sort(), ['plain.test', 'selfsigned.test']);
    for (const [domain, m] of byDomain) {
      assert.equal(m.headers.get('tls-report-submitter'), 'mx.tern.test');
      assert.match(m.headers.get('subject')!, new RegExp(`^Report Domain: ${domain.replace('.', '\\.')} Submitter: mx\\.tern\\.test Report-ID: <[^>]+@mx\\.tern\\.test>$`));
      assert.match(m.headers.get('content-type')!, /^multipart\/report;\s*report-type="?tlsrpt"?;/);
      const att = m.parts.find((p) => /^application\/tlsrpt\+gzip/.test(p.headers.get('content-type') ?? ''))!;
      assert.ok(att, 'the report is attached');
      const report = checkReport(JSON.parse(zlib.gunzipSync(Buffer.from(att.body.replace(/\s+/g, ''), 'base64')).toString('utf8')));
      assert.ok(m.headers.get('subject')!.endsWith(`<${report['report-id']}>`));
      assert.ok(report.policies.every((p) => p.policy['policy-domain'] === domain));
      if (domain === 'plain.test') {
        const d = report.policies.flatMap((p) => p['failure-details'] ?? []);
        assert.deepEqual(d.map((f) => [f['result-type'], f['receiving-mx-hostname'], f['receiving-ip']]), [['starttls-not-supported', 'mx.plain.test', '127.0.0.3']]);
        assert.equal(report.policies[0]!.policy['policy-type'], 'sts');
      } else {
        assert.equal(report['report-id'], bad['report-id'], 'one report, the same by mail and by POST');
      }
    }
  });
});
