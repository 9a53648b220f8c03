// The reporter against real sockets: a DNS server on loopback answers the
// `_smtp._tls` lookups, an HTTPS receiver with a certificate from the test
// CA takes the POSTs, and `submit` collects the report mail.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { startDnsServer, type DnsServer, type Zone } from '../../test/helpers/dns-server.ts';
import { makeTestCa, type TestCa } from '../../test/helpers/test-ca.ts';
import { createResolver } from '../dns/resolver.ts';
import { openStore, type Store } from '../store/store.ts';
import type { TlsResultRow } from '../store/tls-reports.ts';
import { silentLogger } from '../util/log.ts';
import { registry } from '../metrics/registry.ts';
import { TlsReporter, type TlsReporterOptions } from './reporter.ts';
import type { TlsReportJson } from './report.ts';
import { utcDay } from './results.ts';

const DAY = '2026-12-06';
const NOW = Date.parse('2026-12-07T00:40:00Z');

let dns: DnsServer;
let ca: TestCa;
let receiver: https.Server;
let port = 0;
/** What the receiver got. */
const posts: { path: string; headers: Record<string, string | string[] | undefined>; body: Buffer }[] = [];
/** Status by path; default 200. */
const statusFor = new Map<string, number>();

function zones(): Zone {
  const base = `https://reports.example.test:${port}`;
  return {
    'reports.example.test': { A: ['127.0.0.1'] },
    'loopback.example.test': { A: ['127.0.0.1'] },
    '_smtp._tls.both.test': { TXT: [`v=TLSRPTv1; rua=mailto:tlsrpt@both.test,${base}/both`] },
    '_smtp._tls.https.test': { TXT: [`v=TLSRPTv1;rua=${base}/https`] },
    '_smtp._tls.two.test': { TXT: ['v=TLSRPTv1; rua=mailto:a@two.test', 'v=TLSRPTv1; rua=mailto:b@two.test'] },
    '_smtp._tls.bad.test': { TXT: ['v=TLSRPTv1; rua=mailto:a@bad.test; rua=mailto:b@bad.test'] },
    '_smtp._tls.flaky.test': { SERVFAIL: true },
    '_smtp._tls.partial.test': { TXT: [`v=TLSRPTv1; rua=mailto:tlsrpt@partial.test,${base}/partial`] },
    '_smtp._tls.mailfail.test': { TXT: ['v=TLSRPTv1; rua=mailto:tlsrpt@mailfail.test'] },
    '_smtp._tls.redirect.test': { TXT: [`v=TLSRPTv1; rua=${base}/redirect`] },
    '_smtp._tls.private.test': { TXT: [`v=TLSRPTv1; rua=https://127.0.0.1:${port}/private,https://loopback.example.test:${port}/private`] },
  };
}

before(async () => {
  ca = await makeTestCa();
  const cert = await ca.issue(['reports.example.test', 'loopback.example.test']);
  receiver = https.createServer({ cert: cert.chain, key: cert.key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
      const status = statusFor.get(req.url ?? '') ?? 200;
      res.writeHead(status, status === 302 ? { Location: `https://reports.example.test:${port}/both` } : {});
      res.end(status === 200 ? 'thanks' : 'no');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  port = (receiver.address() as AddressInfo).port;
  dns = await startDnsServer({});
  dns.setZones(zones());
});

after(async () => {
  await new Promise<void>((r) => receiver.close(() => r()));
  await dns.close();
  ca.close();
});

function tempStore(): { store: Store; reopen: () => Store; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-tlsrpt-reporter-'));
  const opened: Store[] = [];
  const open = () => {
    const s = openStore(dir);
    opened.push(s);
    return s;
  };
  return { store: open(), reopen: open, cleanup: () => (opened.forEach((s) => s.close()), fs.rmSync(dir, { recursive: true, force: true })) };
}

const STS = ['version: STSv1', 'mode: enforce', 'mx: mx.both.test', 'max_age: 86400'];

function rows(domain: string, day = DAY): TlsResultRow[] {
  const base = { day, policyDomain: domain, policyType: 'sts', policyStrings: STS, mxHosts: ['mx.both.test'], mxHost: '', receivingIp: '', sendingIp: '', reason: '' };
  return [
    { ...base, result: 'success', count: 40 },
    { ...base, result: 'certificate-expired', mxHost: 'mx.both.test', receivingIp: '192.0.2.25', sendingIp: '198.51.100.7', count: 2, reason: 'certificate has expired' },
  ];
}

interface Sent {
  from: string;
  to: string[];
  raw: Buffer;
}

function reporter(store: Store, over: Partial<TlsReporterOptions> & { outbox?: Sent[] } = {}): TlsReporter {
  const outbox = over.outbox ?? [];
  return new TlsReporter({
    store: store.tlsReports,
    resolver: createResolver({ servers: [dns.address], timeout: 1000 }, { cacheTtl: 0 }),
    log: silentLogger,
    organization: 'Tern Test Org',
    contact: 'postmaster@mx.tern.test',
    submit: async (m) => {
      if (m.to.some((t) => t.endsWith('@mailfail.test'))) throw new Error('452 4.3.1 Insufficient system storage');
      outbox.push(m);
    },
    now: () => NOW,
    httpsCa: ca.cert,
    allowPrivateAddresses: true,
    httpTimeoutMs: 3000,
    schedule: false,
    ...over,
  });
}

/** The header section (unfolded) and the parts of a multipart message, one level deep. */
function parseMime(raw: string): { headers: Map<string, string>; parts: { headers: Map<string, string>; body: string }[] } {
  const split = (s: string) => {
    const end = s.indexOf('\r\n\r\n');
    const headers = new Map<string, string>();
    for (const l of s.slice(0, end).replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
      const c = l.indexOf(':');
      headers.set(l.slice(0, c).toLowerCase(), l.slice(c + 1).trim());
    }
    return { headers, body: s.slice(end + 4) };
  };
  const top = split(raw);
  const boundary = /boundary="?([^";]+)"?/.exec(top.headers.get('content-type') ?? '')?.[1];
  const parts = boundary ? top.body.split(`--${boundary}`).slice(1, -1).map((p) => split(p.replace(/^\r\n/, ''))) : [];
  return { headers: top.headers, parts };
}

async function reportsMetric(result: string): Promise<number> {
  const m = await registry.getSingleMetric('tern_tls_rpt_reports_total')!.get();
  return m.values.find((v) => v.labels.result === result)?.value ?? 0;
}

test('a day is reported to every rua: POST and mail carry the same report; no rua, no report', async () => {
  const t = tempStore();
  const outbox: Sent[] = [];
  const r = reporter(t.store, { outbox });
  try {
    for (const d of ['both.test', 'none.test', 'two.test', 'bad.test']) t.store.tlsReports.addResults(rows(d));
    posts.length = 0;
    const sentBefore = await reportsMetric('sent');
    assert.deepEqual(await r.runOnce(DAY), { sent: 1, failed: 0 });
    assert.equal(await reportsMetric('sent'), sentBefore + 2);

    // The POST (RFC 8460 §5.4).
    assert.equal(posts.length, 1);
    const post = posts[0]!;
    assert.equal(post.path, '/both');
    assert.equal(post.headers['content-type'], 'application/tlsrpt+gzip');
    const report = JSON.parse(zlib.gunzipSync(post.body).toString('utf8')) as TlsReportJson;
    assert.equal(report['organization-name'], 'Tern Test Org');
    assert.equal(report['contact-info'], 'postmaster@mx.tern.test');
    assert.deepEqual(report['date-range'], { 'start-datetime': '2026-12-06T00:00:00Z', 'end-datetime': '2026-12-06T23:59:59Z' });
    assert.match(report['report-id'], /^2026-12-06\.[0-9a-f]{12}\.both\.test@mx\.tern\.test$/);
    assert.equal(report.policies.length, 1);
    assert.deepEqual(report.policies[0]!.policy, { 'policy-type': 'sts', 'policy-string': STS, 'policy-domain': 'both.test', 'mx-host': ['mx.both.test'] });
    assert.deepEqual(report.policies[0]!.summary, { 'total-successful-session-count': 40, 'total-failure-session-count': 2 });
    assert.deepEqual(report.policies[0]!['failure-details'], [{
      'result-type': 'certificate-expired', 'sending-mta-ip': '198.51.100.7', 'receiving-mx-hostname': 'mx.both.test', 'receiving-ip': '192.0.2.25',
      'failed-session-count': 2, 'failure-reason-code': 'certificate has expired',
    }]);

    // The mail (RFC 8460 §5.3).
    assert.equal(outbox.length, 1);
    const mail = outbox[0]!;
    assert.equal(mail.from, 'postmaster@mx.tern.test');
    assert.deepEqual(mail.to, ['tlsrpt@both.test']);
    const m = parseMime(mail.raw.toString('latin1'));
    assert.equal(m.headers.get('from'), 'postmaster@mx.tern.test');
    assert.equal(m.headers.get('to'), 'tlsrpt@both.test');
    assert.equal(m.headers.get('subject'), `Report Domain: both.test Submitter: mx.tern.test Report-ID: <${report['report-id']}>`);
    assert.equal(m.headers.get('tls-report-domain'), 'both.test');
    assert.equal(m.headers.get('tls-report-submitter'), 'mx.tern.test');
    assert.equal(m.headers.get('tls-required'), 'No');
    assert.match(m.headers.get('content-type')!, /^multipart\/report;\s*report-type="?tlsrpt"?;/);
    assert.equal(m.parts.length, 2);
    assert.match(m.parts[0]!.headers.get('content-type')!, /^text\/plain/);
    const att = m.parts[1]!;
    assert.match(att.headers.get('content-type')!, /^application\/tlsrpt\+gzip/);
    const unique = report['report-id'].split('.')[1];
    assert.match(att.headers.get('content-disposition')!, new RegExp(`filename="?mx\\.tern\\.test!both\\.test!1796515200!1796601599!${unique}\\.json\\.gz"?`));
    const attached = zlib.gunzipSync(Buffer.from(att.body.replace(/\s+/g, ''), 'base64'));
    assert.deepEqual(JSON.parse(attached.toString('utf8')), report, 'the same report both ways');

    // The states: sent, and no-rua for a missing, a doubled and a malformed record.
    assert.equal(t.store.tlsReports.report(DAY, 'both.test')!.state, 'sent');
    assert.deepEqual(t.store.tlsReports.report(DAY, 'both.test')!.delivered.sort(), [`https://reports.example.test:${port}/both`, 'mailto:tlsrpt@both.test']);
    for (const d of ['none.test', 'two.test', 'bad.test']) assert.equal(t.store.tlsReports.report(DAY, d)!.state, 'no-rua', d);
    assert.deepEqual(t.store.tlsReports.unreported(DAY), []);

    // Once only: again, and after a restart (a new reporter on a reopened store).
    assert.deepEqual(await r.runOnce(DAY), { sent: 0, failed: 0 });
    await r.close();
    t.store.close();
    const again = t.reopen();
    const r2 = reporter(again, { outbox });
    assert.deepEqual(await r2.runOnce(DAY), { sent: 0, failed: 0 });
    assert.deepEqual(await r2.runOnce(), { sent: 0, failed: 0 }, 'yesterday by the clock is the same day');
    await r2.close();
    assert.equal(posts.length, 1);
    assert.equal(outbox.length, 1);
  } finally {
    await r.close();
    t.cleanup();
  }
});

test('a rua that failed is retried alone, with the same report-id, a bounded number of times', async () => {
  const t = tempStore();
  const outbox: Sent[] = [];
  const r = reporter(t.store, { outbox, maxAttempts: 3 });
  try {
    t.store.tlsReports.addResults(rows('partial.test'));
    t.store.tlsReports.addResults(rows('https.test'));
    posts.length = 0;
    statusFor.set('/partial', 503);
    statusFor.set('/https', 500);
    const failedBefore = await reportsMetric('failed');
    assert.deepEqual(await r.runOnce(DAY), { sent: 0, failed: 2 });
    assert.equal(await reportsMetric('failed'), failedBefore + 2);
    assert.equal(outbox.length, 1, 'the mail went');
    const first = t.store.tlsReports.report(DAY, 'partial.test')!;
    assert.equal(first.state, 'pending');
    assert.deepEqual(first.delivered, ['mailto:tlsrpt@partial.test']);
    const id = (b: Buffer) => (JSON.parse(zlib.gunzipSync(b).toString()) as TlsReportJson)['report-id'];
    const firstId = id(posts.find((p) => p.path === '/partial')!.body);

    // The receiver is back for partial.test: only the POST goes again, with the same report.
    statusFor.delete('/partial');
    assert.deepEqual(await r.runOnce(DAY), { sent: 1, failed: 1 });
    assert.equal(outbox.length, 1, 'the mail is not sent twice');
    const partialPosts = posts.filter((p) => p.path === '/partial');
    assert.equal(partialPosts.length, 2);
    assert.equal(id(partialPosts[1]!.body), firstId);
    assert.equal(t.store.tlsReports.report(DAY, 'partial.test')!.state, 'sent');

    // https.test keeps failing: the third attempt gives up.
    assert.deepEqual(await r.runOnce(DAY), { sent: 0, failed: 1 });
    assert.equal(t.store.tlsReports.report(DAY, 'https.test')!.state, 'failed');
    assert.equal(t.store.tlsReports.report(DAY, 'https.test')!.attempts, 3);
    assert.deepEqual(await r.runOnce(DAY), { sent: 0, failed: 0 });
    assert.equal(posts.filter((p) => p.path === '/https').length, 3);
  } finally {
    statusFor.clear();
    await r.close();
    t.cleanup();
  }
});

test('DNS trouble, a redirect and a refused submission are failures to retry', async () => {
  const t = tempStore();
  const r = reporter(t.store);
  try {
    for (const d of ['flaky.test', 'redirect.test', 'mailfail.test']) t.store.tlsReports.addResults(rows(d));
    statusFor.set('/redirect', 302);
    posts.length = 0;
    assert.deepEqual(await r.runOnce(DAY), { sent: 0, failed: 3 });
    assert.equal(posts.filter((p) => p.path === '/both').length, 0, 'the redirect was not followed');
    for (const d of ['flaky.test', 'redirect.test', 'mailfail.test']) assert.equal(t.store.tlsReports.report(DAY, d)!.state, 'pending', d);
    // The DNS answers again: flaky.test's record now exists.
    dns.setZones({ ...zones(), '_smtp._tls.flaky.test': { TXT: [`v=TLSRPTv1; rua=https://reports.example.test:${port}/flaky`] } });
    statusFor.delete('/redirect');
    assert.deepEqual(await r.runOnce(DAY), { sent: 2, failed: 1 });
    assert.equal(t.store.tlsReports.report(DAY, 'flaky.test')!.state, 'sent');
  } finally {
    dns.setZones(zones());
    statusFor.clear();
    await r.close();
    t.cleanup();
  }
});

test('by default no POST goes to loopback or private addresses', async () => {
  const t = tempStore();
  const r = reporter(t.store, { allowPrivateAddresses: false });
  try {
    t.store.tlsReports.addResults(rows('private.test'));
    posts.length = 0;
    assert.deepEqual(await r.runOnce(DAY), { sent: 0, failed: 1 });
    assert.equal(posts.length, 0, 'neither the literal 127.0.0.1 nor a name resolving to it was contacted');
  } finally {
    await r.close();
    t.cleanup();
  }
});

test('the timer: a catch-up run after start sends the missed days, flushes first, and expires old rows', async () => {
  const t = tempStore();
  const outbox: Sent[] = [];
  let flushed = 0;
  const now = Date.now();
  const yesterday = utcDay(now - 86_400_000);
  const old = utcDay(now - 10 * 86_400_000);
  t.store.tlsReports.addResults(rows('both.test', old));
  const r = reporter(t.store, {
    outbox,
    now: Date.now,
    flush: () => {
      flushed++;
      t.store.tlsReports.addResults(rows('both.test', yesterday)); // what the results sink still held
    },
    // Today's slot (00:00 + 0 ms) is past: the catch-up run comes within 20-40 ms.
    schedule: { minDelayMs: 0, spreadMs: 1, startDelayMs: 40 },
  });
  try {
    posts.length = 0;
    for (let i = 0; i < 100 && t.store.tlsReports.report(yesterday, 'both.test')?.state !== 'sent'; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(t.store.tlsReports.report(yesterday, 'both.test')!.state, 'sent');
    assert.ok(flushed >= 1);
    assert.equal(outbox.length, 1);
    for (let i = 0; i < 50 && t.store.tlsReports.results(old, 'both.test').length > 0; i++) await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(t.store.tlsReports.results(old, 'both.test'), [], 'rows older than a week are gone');
  } finally {
    await r.close();
    t.cleanup();
  }
});

test('close() stops a run between domains and leaves the rest pending', async () => {
  const t = tempStore();
  let release: () => void = () => {};
  const gate = new Promise<void>((res) => (release = res));
  const outbox: Sent[] = [];
  const r = reporter(t.store, {
    outbox,
    submit: async (m) => {
      outbox.push(m);
      await gate;
    },
  });
  try {
    t.store.tlsReports.addResults(rows('both.test'));
    statusFor.set('/both', 200);
    const run = r.runOnce(DAY);
    while (outbox.length === 0) await new Promise((res) => setTimeout(res, 5));
    const closing = r.close();
    release();
    await closing;
    await run;
    const s = t.store.tlsReports.report(DAY, 'both.test')!;
    assert.equal(s.state, 'pending');
    assert.equal(s.attempts, 0, 'an attempt cut short by close() does not count');
  } finally {
    statusFor.clear();
    await r.close();
    t.cleanup();
  }
});
