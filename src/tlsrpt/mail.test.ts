import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { composeReportMail } from './mail.ts';

/** The header section as [name, unfolded value] pairs, and the body. */
function splitMessage(raw: string): { headers: [string, string][]; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.slice(0, end).replace(/\r\n[ \t]+/g, ' ');
  const headers = head.split('\r\n').map((l) => {
    const c = l.indexOf(':');
    return [l.slice(0, c), l.slice(c + 1).trim()] as [string, string];
  });
  return { headers, body: raw.slice(end + 4) };
}

const INPUT = {
  from: 'postmaster@mx.tern.test',
  to: ['tlsrpt@example.org'],
  policyDomain: 'example.org',
  submitter: 'mx.tern.test',
  reportId: '2026-12-06.0a1b2c.example.org@mx.tern.test',
  filename: 'mx.tern.test!example.org!1796515200!1796601599!0a1b2c.json.gz',
  report: zlib.gzipSync('{"report":true}'),
  day: '2026-12-06',
  successful: 12,
  failed: 3,
  date: new Date('2026-12-07T00:30:00Z'),
};

test('the report message (RFC 8460 §5.3)', async () => {
  const raw = (await composeReportMail(INPUT)).toString('latin1');
  assert.ok(!/[^\r]\n/.test(raw), 'CRLF line ends only');
  assert.ok(raw.split('\r\n').every((l) => l.length <= 998), 'RFC 5322 §2.1.1 line length');
  const { headers, body } = splitMessage(raw);
  const get = (n: string) => headers.filter(([k]) => k === n).map(([, v]) => v);
  assert.deepEqual(get('From'), ['postmaster@mx.tern.test']);
  assert.deepEqual(get('To'), ['tlsrpt@example.org']);
  assert.deepEqual(get('Subject'), ['Report Domain: example.org Submitter: mx.tern.test Report-ID: <2026-12-06.0a1b2c.example.org@mx.tern.test>']);
  // Written with the RFCs' capitals (names are case-insensitive, but people grep).
  assert.deepEqual(get('TLS-Report-Domain'), ['example.org']);
  assert.deepEqual(get('TLS-Report-Submitter'), ['mx.tern.test']);
  assert.deepEqual(get('TLS-Required'), ['No']);
  assert.deepEqual(get('Auto-Submitted'), ['auto-generated']);
  assert.equal(get('Message-ID').length, 1);
  assert.equal(get('Date').length, 1);
  const ct = get('Content-Type')[0]!;
  assert.match(ct, /^multipart\/report;/);
  assert.match(ct, /;\s*report-type="?tlsrpt"?(;|$)/);
  const boundary = /boundary="?([^";]+)"?/.exec(ct)![1]!;
  const parts = body.split(`--${boundary}`).slice(1, -1).map((p) => splitMessage(p.replace(/^\r\n/, '')));
  assert.equal(parts.length, 2);
  assert.match(parts[0]!.headers.find(([k]) => k === 'Content-Type')![1], /^text\/plain/);
  assert.match(parts[0]!.body, /aggregate TLS report/);
  assert.match(parts[0]!.body, /12 successful and 3 failed/);
  const att = new Map(parts[1]!.headers);
  assert.match(att.get('Content-Type')!, /^application\/tlsrpt\+gzip/);
  assert.equal(att.get('Content-Transfer-Encoding'), 'base64');
  assert.match(att.get('Content-Disposition')!, /^attachment;\s*filename="?mx\.tern\.test!example\.org!1796515200!1796601599!0a1b2c\.json\.gz"?$/);
  assert.equal(zlib.gunzipSync(Buffer.from(parts[1]!.body.replace(/\s+/g, ''), 'base64')).toString(), '{"report":true}');
});
