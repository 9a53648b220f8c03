import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { buildDsn, wantsNotice, type Dsn, type DsnInput, type DsnRecipient } from './dsn.ts';
import type { Envelope, Recipient } from '../spool/types.ts';
import { requireTool } from '../../test/helpers/tools.ts';

/** The tests that read a DSN back need python3 (its email package, in the standard library). */
const NEEDS_PYTHON = requireTool('python3', 'python3');

// An independent reader: Python's email package parses every DSN we build
// and reports what it found as JSON.
const PY = String.raw`
import sys, json, re, email
from email import policy
from email.message import Message
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
fields = lambda b: {k: str(v) for k, v in b.items()}
out = {'contentType': m.get_content_type(), 'reportType': m.get_param('report-type'),
       'headers': fields(m), 'defects': [type(d).__name__ for p in m.walk() for d in p.defects]}
parts = m.get_payload()
out['parts'] = [p.get_content_type() for p in parts]
out['text'] = parts[0].get_content()
st = parts[1]
if st.get_content_type() == 'message/delivery-status':
    blocks = st.get_payload()
else:  # message/global-delivery-status: Python reads it as one message; split the rest ourselves
    first = st.get_payload(0)
    rest = [b for b in re.split(rb'\r?\n\r?\n', first.get_payload(decode=True)) if b.strip()]
    blocks = [first] + [email.message_from_bytes(b, policy=policy.default) for b in rest]
out['perMessage'] = fields(blocks[0])
out['recipients'] = [fields(b) for b in blocks[1:]]
if len(parts) > 2:
    p = parts[2]
    t = {'type': p.get_content_type()}
    if p.get_content_maintype() == 'message':
        inner = p.get_payload(0)
        t['isMessage'] = isinstance(inner, Message)
    else:
        inner = email.message_from_string(p.get_content(), policy=policy.default)
        t['isMessage'] = len(inner.keys()) > 0 and not inner.defects
    t['subject'] = str(inner['Subject'])
    t['body'] = inner.get_payload() if isinstance(inner.get_payload(), str) else None
    out['third'] = t
print(json.dumps(out))
`;

interface Parsed {
  contentType: string;
  reportType: string;
  headers: Record<string, string>;
  defects: string[];
  parts: string[];
  text: string;
  perMessage: Record<string, string>;
  recipients: Record<string, string>[];
  third?: { type: string; isMessage: boolean; subject: string; body: string | null };
}

function parse(dsn: Dsn | null): Parsed {
  assert.ok(dsn);
  // Wire-level checks first: CRLF only, every line within RFC 5322 §2.1.1.
  const raw = dsn.message.toString('latin1');
  assert.doesNotMatch(raw, /\r(?!\n)|(?<!\r)\n/, 'bare CR or LF');
  for (const line of raw.split('\r\n')) assert.ok(line.length <= 998, `line of ${line.length} octets`);
  const r = spawnSync('python3', ['-c', PY], { input: dsn.message, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const p = JSON.parse(r.stdout) as Parsed;
  assert.deepEqual(p.defects, []);
  return p;
}

const ORIGINAL = 'Received: from a.test\r\nFrom: <alice@sender.test>\r\nTo: <bob@example.org>\r\nSubject: hello\r\n\r\nThe body.\r\nSecond line.\r\n';

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'Q1234567890ABCDE',
    sender: 'alice@sender.test',
    recipients: [],
    receivedAt: Date.UTC(2025, 0, 2, 3, 4, 5),
    smtputf8: false,
    client: { ip: '192.0.2.1', helo: 'client.sender.test' },
    ...over,
  };
}

function rcpt(address: string, over: Partial<Recipient> = {}): Recipient {
  return { address, original: address, ...over };
}

function input(recipients: DsnRecipient[], over: Partial<DsnInput> = {}, original = ORIGINAL): DsnInput {
  return {
    reportingMta: 'mx.tern.test',
    envelope: envelope(),
    recipients,
    original: () => Readable.from([Buffer.from(original)]),
    now: new Date(Date.UTC(2025, 0, 3)),
    ...over,
  };
}

const bounce = (over: Partial<DsnRecipient> = {}): DsnRecipient => ({
  recipient: rcpt('bob@example.org'),
  action: 'failed',
  reply: { code: 550, enhanced: '5.1.1', text: '<bob@example.org>: no such user' },
  remoteMta: 'mx.example.org',
  lastAttempt: new Date(Date.UTC(2025, 0, 2, 4)),
  ...over,
});

test('failed, RET=FULL: the whole original comes back as message/rfc822', { skip: NEEDS_PYTHON }, async () => {
  const dsn = await buildDsn(input([bounce({ recipient: rcpt('bob@example.org', { orcpt: { type: 'rfc822', address: 'Bob@Example.org' } }) })], {
    envelope: envelope({ ret: 'FULL', envid: 'QQ-314159' }),
  }));
  assert.ok(dsn);
  assert.equal(dsn.to, 'alice@sender.test');
  assert.equal(dsn.body, '7BIT');
  assert.equal(dsn.smtputf8, false);
  const p = parse(dsn);
  assert.equal(p.contentType, 'multipart/report');
  assert.equal(p.reportType, 'delivery-status');
  assert.deepEqual(p.parts, ['text/plain', 'message/delivery-status', 'message/rfc822']);
  assert.equal(p.headers['From'], 'Mail Delivery System <MAILER-DAEMON@mx.tern.test>');
  assert.equal(p.headers['To'], 'alice@sender.test');
  assert.equal(p.headers['Subject'], 'Undelivered Mail Returned to Sender');
  assert.equal(p.headers['Auto-Submitted'], 'auto-replied');
  assert.equal(p.headers['Date'], 'Fri, 03 Jan 2025 00:00:00 +0000');
  assert.match(p.headers['Message-ID'] ?? '', /^<[^@<>]+@mx\.tern\.test>$/);
  assert.deepEqual(p.perMessage, {
    'Original-Envelope-Id': 'QQ-314159',
    'Reporting-MTA': 'dns; mx.tern.test',
    'Received-From-MTA': 'dns; client.sender.test',
    'Arrival-Date': 'Thu, 02 Jan 2025 03:04:05 +0000',
  });
  assert.deepEqual(p.recipients, [
    {
      'Original-Recipient': 'rfc822; Bob@Example.org',
      'Final-Recipient': 'rfc822; bob@example.org',
      Action: 'failed',
      Status: '5.1.1',
      'Remote-MTA': 'dns; mx.example.org',
      'Diagnostic-Code': 'smtp; 550 5.1.1 <bob@example.org>: no such user',
      'Last-Attempt-Date': 'Thu, 02 Jan 2025 04:00:00 +0000',
    },
  ]);
  assert.deepEqual(p.third, { type: 'message/rfc822', isMessage: true, subject: 'hello', body: 'The body.\r\nSecond line.\r\n' });
  assert.match(p.text, /<bob@example\.org>: failed, status 5\.1\.1/);
  assert.match(p.text, /550 5\.1\.1 <bob@example\.org>: no such user/);
  // Two DSNs never share a Message-ID.
  const again = await buildDsn(input([bounce()]));
  assert.notEqual(parse(again).headers['Message-ID'], p.headers['Message-ID']);
});

test('failed, RET=HDRS: only the header section, as text/rfc822-headers', { skip: NEEDS_PYTHON }, async () => {
  const p = parse(await buildDsn(input([bounce()], { envelope: envelope({ ret: 'HDRS' }) })));
  assert.deepEqual(p.parts, ['text/plain', 'message/delivery-status', 'text/rfc822-headers']);
  assert.equal(p.third?.isMessage, true);
  assert.equal(p.third?.subject, 'hello');
  assert.equal(p.third?.body, '');
  assert.equal(p.perMessage['Original-Envelope-Id'], undefined);
  assert.equal(p.recipients[0]?.['Original-Recipient'], undefined);
});

test('an original over maxOriginal: headers only, and the stream is not read to the end', { skip: NEEDS_PYTHON }, async () => {
  let produced = 0;
  let closed = false;
  const chunk = Buffer.alloc(16 * 1024, 'x');
  async function* big() {
    try {
      yield Buffer.from('Subject: big\r\nX-Pad: 1\r\n\r\n');
      for (let i = 0; i < 100; i++) {
        produced++;
        yield chunk;
      }
    } finally {
      closed = true;
    }
  }
  const dsn = await buildDsn(input([bounce()], { original: () => Readable.from(big()), maxOriginal: 64 * 1024 }));
  assert.ok(produced < 10, `read ${produced} chunks`);
  assert.ok(closed, 'stream destroyed');
  assert.ok(dsn && dsn.message.length < 20_000);
  const p = parse(dsn);
  assert.equal(p.third?.type, 'text/rfc822-headers');
  assert.equal(p.third?.subject, 'big');
  assert.match(p.text, /larger than 65536 octets/);
});

test('RET=HDRS stops reading at the end of the header section', { skip: NEEDS_PYTHON }, async () => {
  let produced = 0;
  async function* msg() {
    yield Buffer.from('Subject: s\r\n');
    yield Buffer.from('\r\nbody\r\n');
    for (; produced < 100; produced++) yield Buffer.from('more\r\n');
  }
  const p = parse(await buildDsn(input([bounce()], { envelope: envelope({ ret: 'HDRS' }), original: () => Readable.from(msg()) })));
  assert.equal(produced, 0);
  assert.equal(p.third?.subject, 's');
});

test('delayed: Will-Retry-Until, and only the headers (RFC 3461 §4.3)', { skip: NEEDS_PYTHON }, async () => {
  const until = new Date(Date.UTC(2025, 0, 7));
  const p = parse(await buildDsn(input([bounce({ action: 'delayed', reply: { code: 451, enhanced: '4.4.1', text: 'connect to mx.example.org: connection refused' }, remoteMta: undefined, willRetryUntil: until })])));
  assert.equal(p.headers['Subject'], 'Delayed Mail (still being retried)');
  assert.equal(p.recipients[0]?.['Action'], 'delayed');
  assert.equal(p.recipients[0]?.['Status'], '4.4.1');
  assert.equal(p.recipients[0]?.['Will-Retry-Until'], 'Tue, 07 Jan 2025 00:00:00 +0000');
  // Our own reply (no host answered): a private diagnostic type, no Remote-MTA.
  assert.equal(p.recipients[0]?.['Diagnostic-Code'], 'X-Tern; 451 4.4.1 connect to mx.example.org: connection refused');
  assert.equal(p.recipients[0]?.['Remote-MTA'], undefined);
  assert.match(p.text, /will retry until Tue, 07 Jan 2025/);
  assert.equal(p.third?.type, 'text/rfc822-headers');
});

test('delivered with NOTIFY=SUCCESS', { skip: NEEDS_PYTHON }, async () => {
  const p = parse(await buildDsn(input([bounce({ recipient: rcpt('bob@example.org', { notify: ['SUCCESS'] }), action: 'delivered', reply: { code: 250, enhanced: '2.0.0', text: 'Ok: queued as 123' } })])));
  assert.equal(p.headers['Subject'], 'Successful Mail Delivery Report');
  assert.equal(p.recipients[0]?.['Action'], 'delivered');
  assert.equal(p.recipients[0]?.['Status'], '2.0.0');
  assert.equal(p.recipients[0]?.['Final-Recipient'], 'rfc822; bob@example.org');
});

test('no DSN: null sender, NOTIFY=NEVER, or a kind nobody asked for', { skip: NEEDS_PYTHON }, async () => {
  assert.equal(await buildDsn(input([bounce()], { envelope: envelope({ sender: '' }) })), null);
  assert.equal(await buildDsn(input([bounce({ recipient: rcpt('b@x.test', { notify: [] }) })])), null);
  assert.equal(await buildDsn(input([bounce({ recipient: rcpt('b@x.test', { notify: ['SUCCESS'] }) })])), null);
  assert.equal(await buildDsn(input([bounce({ action: 'delivered', reply: { code: 250, enhanced: '2.0.0', text: 'ok' } })])), null);
  // Mixed: only the recipient who asked is reported.
  const p = parse(await buildDsn(input([bounce({ recipient: rcpt('quiet@x.test', { notify: [] }) }), bounce({ recipient: rcpt('loud@x.test', { notify: ['FAILURE'] }) })])));
  assert.deepEqual(p.recipients.map((r) => r['Final-Recipient']), ['rfc822; loud@x.test']);
});

test('wantsNotice follows RFC 3461 §4.1', () => {
  const table: [Recipient['notify'], boolean, boolean, boolean][] = [
    // notify, failed, delayed, delivered
    [undefined, true, true, false],
    [[], false, false, false],
    [['SUCCESS'], false, false, true],
    [['FAILURE'], true, false, false],
    [['DELAY', 'SUCCESS'], false, true, true],
  ];
  for (const [notify, f, d, s] of table) {
    const r = rcpt('a@b.test', { notify });
    assert.deepEqual([wantsNotice(r, 'failed'), wantsNotice(r, 'delayed'), wantsNotice(r, 'delivered'), wantsNotice(r, 'relayed')], [f, d, s, s], JSON.stringify(notify));
  }
});

test('remote text cannot inject lines, controls or over-long lines', { skip: NEEDS_PYTHON }, async () => {
  const evil = 'no\r\nX-Injected: yes\r\n\r\nFinal-Recipient: rfc822; evil@x.test\x00\x1b[31m\r\n' + 'word '.repeat(2000) + 'z'.repeat(3000);
  const dsn = await buildDsn(input([bounce({ reply: { code: 550, enhanced: 'bogus\r\nX-Status: 2.0.0', text: evil }, remoteMta: 'mx\r\nBcc: x@y' })]));
  assert.ok(dsn);
  assert.doesNotMatch(dsn.message.toString('latin1'), /^(X-Injected|X-Status|Bcc|Final-Recipient: rfc822; evil)/m);
  assert.doesNotMatch(dsn.message.toString('latin1'), /[\x00\x1b]/);
  const p = parse(dsn);
  assert.equal(p.recipients.length, 1);
  assert.equal(p.recipients[0]?.['Status'], '5.0.0');
  assert.match(p.recipients[0]?.['Diagnostic-Code'] ?? '', /^smtp; 550 bogus X-Status: 2\.0\.0 no X-Injected: yes Final-Recipient: rfc822; evil@x\.test\[31m word word/);
  assert.equal(p.recipients[0]?.['Remote-MTA'], 'dns; mx Bcc: x@y');
});

test('UTF-8 addresses make a global DSN (RFC 6533)', { skip: NEEDS_PYTHON }, async () => {
  const orig = 'From: <josé@exämple.test>\r\nSubject: grüße\r\n\r\nbody ✓\r\n';
  const dsn = await buildDsn(input([bounce({ recipient: rcpt('δοκιμή@παράδειγμα.δοκιμή'), reply: { code: 550, enhanced: '5.1.1', text: 'unknown: δοκιμή' } })], {
    envelope: envelope({ sender: 'josé@exämple.test', smtputf8: true, body: '8BITMIME' }),
  }, orig));
  assert.ok(dsn);
  assert.equal(dsn.smtputf8, true);
  assert.equal(dsn.body, '8BITMIME');
  const p = parse(dsn);
  assert.equal(p.reportType, 'global-delivery-status');
  assert.deepEqual(p.parts, ['text/plain', 'message/global-delivery-status', 'message/global']);
  assert.equal(p.headers['To'], 'josé@exämple.test');
  assert.equal(p.recipients[0]?.['Final-Recipient'], 'utf-8; δοκιμή@παράδειγμα.δοκιμή');
  assert.equal(p.recipients[0]?.['Diagnostic-Code'], 'smtp; 550 5.1.1 unknown: δοκιμή');
  assert.match(p.text, /<δοκιμή@παράδειγμα\.δοκιμή>: failed/);
  assert.equal(p.third?.isMessage, true);
  assert.equal(p.third?.subject, 'grüße');
});

test('ASCII addresses with an 8-bit original: 7-bit report, 8bit message/rfc822', { skip: NEEDS_PYTHON }, async () => {
  const dsn = await buildDsn(input([bounce()], { envelope: envelope({ body: '8BITMIME' }) }, 'Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody ✓\r\n'));
  assert.ok(dsn);
  assert.equal(dsn.body, '8BITMIME');
  assert.equal(dsn.smtputf8, false);
  const p = parse(dsn);
  assert.deepEqual(p.parts, ['text/plain', 'message/delivery-status', 'message/rfc822']);
  assert.equal(p.third?.subject, 'hi');
});

test('an unreadable original leaves part 3 out', { skip: NEEDS_PYTHON }, async () => {
  const p = parse(await buildDsn(input([bounce()], { original: () => new Readable({ read() { this.destroy(new Error('gone')); } }) })));
  assert.deepEqual(p.parts, ['text/plain', 'message/delivery-status']);
  assert.match(p.text, /could not be read/);
});
