import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { checkSender, dsnPermission, CHECKS_DISABLED } from './backscatter.ts';
import { Bouncer } from './bouncer.ts';
import { buildDsn, withoutPaths } from './dsn.ts';
import { Directory } from '../policy/directory.ts';
import { MaildirTransport } from '../delivery/maildir.ts';
import { replyLine } from '../delivery/reply.ts';
import type { Logger } from '../util/log.ts';
import type { Envelope, QueuedMessage, SenderCheck } from '../spool/types.ts';
import type { Intake, NewMessage } from '../intake/intake.ts';
import type { Spool } from '../spool/spool.ts';
import type { Notice } from '../queue/scheduler.ts';

type Outcome = Parameters<typeof checkSender>[1];
const outcome = (over: Partial<Outcome> = {}): Outcome => ({ spf: { result: 'none' }, dkim: [], ...over });

test('checkSender: SPF pass for the MAIL FROM domain itself, or a DKIM pass aligned by organizational domain', () => {
  const cases: [string, Outcome, SenderCheck['verified']][] = [
    ['a@example.org', outcome({ spf: { result: 'pass', domain: 'example.org' } }), 'spf'],
    ['a@Example.ORG', outcome({ spf: { result: 'pass', domain: 'example.org.' } }), 'spf'],
    // A pass for another identity (the HELO name) says nothing about this sender.
    ['a@example.org', outcome({ spf: { result: 'pass', domain: 'mail.example.org' } }), null],
    ...(['fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror'].map((result) => ['a@example.org', outcome({ spf: { result, domain: 'example.org' } }), null]) as [string, Outcome, null][]),
    // DKIM, relaxed alignment (RFC 7489 §3.1.1): same organizational domain either way round.
    ['bounce@mail.example.org', outcome({ spf: { result: 'fail', domain: 'mail.example.org' }, dkim: [{ result: 'pass', domain: 'example.org' }] }), 'dkim'],
    ['a@example.org', outcome({ dkim: [{ result: 'pass', domain: 'news.example.org' }] }), 'dkim'],
    ['a@example.org', outcome({ dkim: [{ result: 'fail', domain: 'example.org' }, { result: 'pass', domain: 'other.org' }] }), null],
    ['a@example.org', outcome({ dkim: [{ result: 'neutral', domain: 'example.org' }] }), null],
    // The public suffix list's private part: two github.io sites are two organizations.
    ['a@victim.github.io', outcome({ dkim: [{ result: 'pass', domain: 'attacker.github.io' }] }), null],
    ['a@example.co.uk', outcome({ dkim: [{ result: 'pass', domain: 'other.co.uk' }] }), null],
    // Checks that did not finish verify nothing, whatever they reported.
    ['a@example.org', outcome({ spf: { result: 'pass', domain: 'example.org' }, incomplete: 'checks timed out' }), null],
    ['', outcome({ spf: { result: 'pass', domain: 'helo.example.org' } }), null],
    ['a@[192.0.2.1]', outcome({ spf: { result: 'pass', domain: '[192.0.2.1]' } }), null],
  ];
  for (const [sender, o, want] of cases) {
    const got = checkSender(sender, o);
    assert.equal(got.verified, want, `${sender} ${JSON.stringify(o)} → ${JSON.stringify(got)}`);
    assert.ok(got.detail.length > 0);
  }
  assert.deepEqual(checkSender('bounce@mail.example.org', outcome({ dkim: [{ result: 'pass', domain: 'Example.org' }] })), {
    verified: 'dkim',
    domain: 'example.org',
    detail: 'dkim=pass d=example.org',
  });
  assert.deepEqual(checkSender('a@example.org', outcome({ spf: { result: 'softfail', domain: 'example.org' } })), {
    verified: null,
    detail: 'spf=softfail, no aligned dkim pass',
  });
});

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'QBACKSCATTER0001',
    sender: 'victim@forged.test',
    recipients: [{ address: 'alice@tern.test', original: 'alice@tern.test', mailbox: { domain: 'tern.test', localPart: 'alice' } }],
    receivedAt: Date.UTC(2025, 0, 2),
    smtputf8: false,
    client: { ip: '192.0.2.1', helo: 'client.test' },
    ...over,
  };
}

const VERIFIED: SenderCheck = { verified: 'spf', domain: 'forged.test', detail: 'spf=pass forged.test' };
const UNVERIFIED: SenderCheck = { verified: null, detail: 'spf=fail, no aligned dkim pass' };

test('dsnPermission: own mail as asked; outside mail only to a verified sender, headers only unless RET=FULL', () => {
  // Our users' and local mail: today's behaviour (RET absent returns the message).
  assert.deepEqual(dsnPermission(envelope()), { send: true, returnFull: true });
  assert.deepEqual(dsnPermission(envelope({ ret: 'HDRS' })), { send: true, returnFull: false });
  assert.deepEqual(dsnPermission(envelope({ ret: 'FULL' })), { send: true, returnFull: true });
  // Outside, verified.
  assert.deepEqual(dsnPermission(envelope({ outside: VERIFIED })), { send: true, returnFull: false });
  assert.deepEqual(dsnPermission(envelope({ outside: VERIFIED, ret: 'HDRS' })), { send: true, returnFull: false });
  assert.deepEqual(dsnPermission(envelope({ outside: VERIFIED, ret: 'FULL' })), { send: true, returnFull: true });
  // Outside, not verified (also when the checks are turned off): never, even with RET=FULL.
  for (const outside of [UNVERIFIED, CHECKS_DISABLED]) {
    const p = dsnPermission(envelope({ outside, ret: 'FULL' }));
    assert.equal(p.send, false);
    assert.match(p.send ? '' : p.reason, /^sender not verified \(.+\)$/);
  }
});

const ORIGINAL = 'From: <victim@forged.test>\r\nSubject: the spam\r\n\r\nBUY NOW body text\r\n';

/** A Bouncer with fakes around it: what it queues and logs is recorded. */
function harness() {
  const queued: { m: NewMessage; message: Buffer }[] = [];
  const logged: { level: string; msg: string; fields?: Record<string, unknown> | undefined }[] = [];
  const log: Logger = {
    debug: () => {},
    info: (msg, fields) => logged.push({ level: 'info', msg, fields }),
    warn: (msg, fields) => logged.push({ level: 'warn', msg, fields }),
    error: (msg, fields) => logged.push({ level: 'error', msg, fields }),
  };
  const intake = {
    submit: async (m: NewMessage, message: Buffer) => {
      queued.push({ m, message });
      return { envelope: { id: `DSN${queued.length}` } } as QueuedMessage;
    },
  } as unknown as Intake;
  const spool = { openMessage: () => Readable.from([Buffer.from(ORIGINAL)]) } as unknown as Spool;
  const directory = new Directory([{ name: 'tern.test', mailboxes: ['alice'], aliases: {} }] as ConstructorParameters<typeof Directory>[0]);
  const bouncer = new Bouncer({ hostname: 'mx.tern.test', intake, directory, spool, log });
  return { bouncer, queued, logged };
}

function message(env: Envelope): QueuedMessage {
  return { envelope: env, state: { attempts: 1, nextAttempt: 0, status: env.recipients.map(() => 'pending'), lastReply: env.recipients.map(() => null) }, bodyLength: ORIGINAL.length, size: ORIGINAL.length, recovered: false };
}

const remoteRcpt = (notify?: ('SUCCESS' | 'FAILURE' | 'DELAY')[]) => ({ address: 'someone@remote.test', original: 'fwd@tern.test', notify });

test('Bouncer: no DSN of any kind to an unverified outside sender; logged and recorded on the state instead', async () => {
  const notices: [Notice['kind'], ('SUCCESS' | 'FAILURE' | 'DELAY')[] | undefined][] = [
    ['failed', undefined],
    ['delayed', ['DELAY']],
    ['delivered', ['SUCCESS']],
    ['relayed', ['SUCCESS']],
  ];
  for (const outside of [UNVERIFIED, CHECKS_DISABLED]) {
    const { bouncer, queued, logged } = harness();
    const msg = message(envelope({ outside, ret: 'FULL', recipients: [remoteRcpt(['SUCCESS', 'FAILURE', 'DELAY'])] }));
    for (const [kind] of notices) {
      await bouncer.notify({ kind, msg, recipients: [{ index: 0, reply: { code: 550, enhanced: '5.1.1', text: 'no such user' }, relay: null }], willRetryUntil: kind === 'delayed' ? Date.now() + 1000 : undefined });
    }
    assert.equal(queued.length, 0, 'nothing queued');
    assert.deepEqual(msg.state.dsnSuppressed?.map((s) => [s.kind, s.recipients, s.reason]), notices.map(([kind]) => [kind, ['someone@remote.test'], `sender not verified (${outside.detail})`]));
    const lines = logged.filter((l) => l.msg === 'dsn suppressed');
    assert.equal(lines.length, 4);
    assert.deepEqual(lines[0]!.fields, { id: 'QBACKSCATTER0001', kind: 'failed', sender: 'victim@forged.test', recipients: 1, reason: `sender not verified (${outside.detail})` });
  }
  // A notice nobody asked for is not "suppressed": there was nothing to send.
  const { bouncer, queued, logged } = harness();
  const msg = message(envelope({ outside: UNVERIFIED, recipients: [remoteRcpt()] }));
  await bouncer.notify({ kind: 'delivered', msg, recipients: [{ index: 0, reply: { code: 250, enhanced: null, text: 'ok' }, relay: null }] });
  assert.equal(queued.length, 0);
  assert.equal(msg.state.dsnSuppressed, undefined);
  assert.equal(logged.length, 0);
});

test('Bouncer: a verified outside sender gets its DSN, headers only unless it asked for RET=FULL; own mail keeps the whole message', async () => {
  const cases: [Partial<Envelope>, 'headers' | 'full'][] = [
    [{ outside: VERIFIED }, 'headers'],
    [{ outside: { verified: 'dkim', domain: 'forged.test', detail: 'dkim=pass d=forged.test' } }, 'headers'],
    [{ outside: VERIFIED, ret: 'HDRS' }, 'headers'],
    [{ outside: VERIFIED, ret: 'FULL' }, 'full'],
    [{}, 'full'],
    [{ ret: 'HDRS' }, 'headers'],
  ];
  for (const [over, want] of cases) {
    const { bouncer, queued } = harness();
    const msg = message(envelope({ ...over, recipients: [remoteRcpt()] }));
    await bouncer.notify({ kind: 'failed', msg, recipients: [{ index: 0, reply: { code: 550, enhanced: '5.1.1', text: '<someone@remote.test>: no such user' }, relay: { host: 'mx.remote.test', ip: '127.0.0.2', port: 25 } }] });
    assert.equal(queued.length, 1, JSON.stringify(over));
    const { m, message: dsn } = queued[0]!;
    assert.equal(m.sender, '');
    assert.deepEqual(m.recipients.map((r) => r.address), ['victim@forged.test']);
    const text = dsn.toString('latin1');
    assert.match(text, /Subject: the spam/);
    if (want === 'full') {
      assert.match(text, /Content-Type: message\/rfc822/, JSON.stringify(over));
      assert.match(text, /BUY NOW body text/);
    } else {
      assert.match(text, /Content-Type: text\/rfc822-headers/, JSON.stringify(over));
      assert.doesNotMatch(text, /BUY NOW/, JSON.stringify(over));
    }
    assert.equal(msg.state.dsnSuppressed, undefined);
  }
});

test('no local file path in a DSN: not from Maildir replies, not from a system error in a reply', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-backscatter-'));
  try {
    const maildir = new MaildirTransport({ root, hostname: 'mx.tern.test', fsync: false });
    const env = envelope({ outside: VERIFIED, recipients: [{ address: 'alice@tern.test', original: 'alice@tern.test', notify: ['SUCCESS', 'DELAY'], mailbox: { domain: 'tern.test', localPart: 'alice' } }] });
    const to = { domain: 'tern.test', localPart: 'alice', address: 'alice@tern.test' };
    const msg = { id: env.id, receivedAt: env.receivedAt, sender: env.sender, recovered: false, open: () => Readable.from([Buffer.from(ORIGINAL)]) };
    const delivered = await maildir.deliverCopy(msg, 0, to);
    assert.equal(delivered.status, 'ok');
    const name = fs.readdirSync(path.join(root, 'tern.test', 'alice', 'new'))[0]!;
    // A repeat after a restart that finds the copy already read (in cur/).
    fs.renameSync(path.join(root, 'tern.test', 'alice', 'new', name), path.join(root, 'tern.test', 'alice', 'cur', `${name}:2,S`));
    const again = await maildir.deliverCopy({ ...msg, recovered: true }, 0, to);
    assert.equal(again.status, 'ok');
    // A failed write (the mailbox is a file, not a directory).
    fs.writeFileSync(path.join(root, 'tern.test', 'bob'), 'not a directory');
    const failed = await maildir.deliverCopy(msg, 0, { domain: 'tern.test', localPart: 'bob', address: 'bob@tern.test' });
    assert.equal(failed.status, 'tempfail');
    for (const r of [delivered, again, failed]) {
      const line = replyLine(r.reply);
      assert.ok(!line.includes(name) && !line.includes(`T${env.id}R0`) && !line.includes(root) && !/\bnew\//.test(line), line);
      const dsn = await buildDsn({
        reportingMta: 'mx.tern.test',
        envelope: env,
        recipients: [{ recipient: env.recipients[0]!, action: r.status === 'ok' ? 'delivered' : 'delayed', reply: r.reply }],
        original: () => Readable.from([Buffer.from(ORIGINAL)]),
      });
      const text = dsn!.message.toString('latin1');
      assert.ok(!text.includes(name) && !text.includes(root), text);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  // Whatever a transport lets slip: a system error's message names the file; the DSN does not.
  const leak = { code: 451, enhanced: '4.4.1', text: "reading the message failed: ENOENT: no such file or directory, open '/var/lib/tern/spool/queue/QABC'" };
  const dsn = await buildDsn({
    reportingMta: 'mx.tern.test',
    envelope: envelope(),
    recipients: [{ recipient: remoteRcpt(), action: 'delayed', reply: leak }],
    original: () => Readable.from([Buffer.from(ORIGINAL)]),
  });
  const text = dsn!.message.toString('latin1');
  assert.doesNotMatch(text, /\/var\/lib\/tern|spool\/queue/);
  assert.match(text, /reading the message failed: ENOENT: no such file or directory,\s+open '\[path\]'/);
  // URLs and plain replies are left alone.
  assert.equal(withoutPaths('550 5.7.1 see https://example.org/policy/spam.html'), '550 5.7.1 see https://example.org/policy/spam.html');
  assert.equal(withoutPaths('550 5.1.1 <a/b@x.test>: no such user'), '550 5.1.1 <a/b@x.test>: no such user');
});
