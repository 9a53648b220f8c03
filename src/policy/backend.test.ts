// TernBackend without a socket: the stage checks behind each call, the
// submission rules, and the data stage run by intake at commit (real
// intake, real spool in a temp dir). The session's side is
// src/server/session.test.ts.

import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TernBackend, type BackendSession } from './backend.ts';
import { Policy, type Check, type DataStep, type SessionInfo } from './policy.ts';
import { Directory } from './directory.ts';
import { SubmissionCheck, senderFieldsCheck } from './submission.ts';
import { InboundCheck, InboundPolicy, JUNK_FOLDER } from './inbound.ts';
import { SendRate } from './rate-limit.ts';
import type { Authenticator } from './auth.ts';
import { SmtpError } from '../smtp/reply.ts';
import { parseMailbox } from '../smtp/address.ts';
import { Intake, MAX_HEADER_SECTION } from '../intake/intake.ts';
import type { AuthOutcome, InboundVerifier } from '../intake/authenticate.ts';
import { Spool } from '../spool/spool.ts';
import type { QueuedMessage } from '../spool/types.ts';
import { defaultInbound } from '../config/defaults.ts';
import type { DomainConfig } from '../config/types.ts';
import { silentLogger, type Logger } from '../util/log.ts';

const HOST = 'mx.tern.test';
const addr = (s: string) => parseMailbox(s);
const PARAMS = { smtputf8: false };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-backend-'));
const spool = new Spool({ dir, fsync: false });
spool.init();
after(async () => {
  await spool.journal.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const queued: QueuedMessage[] = [];
const logged: { msg: string; fields?: Record<string, unknown> | undefined }[] = [];
const log: Logger = { debug() {}, info: (msg, fields) => logged.push({ msg, fields }), warn() {}, error: (msg, fields) => logged.push({ msg, fields }) };
const directory = new Directory([{ name: 'tern.test', mailboxes: ['alice', 'bob'], aliases: { team: ['alice', 'carol@remote.test'] } } as unknown as DomainConfig]);

/** Inbound checks whose outcome a test sets. */
let outcome: AuthOutcome;
const verifier = { begin: () => ({ write() {}, abort() {}, finish: async () => outcome }) } as unknown as InboundVerifier;

/** An Authenticator that knows alice, with these limits. */
function authenticator(limits: { messagesPerHour?: number; recipientsPerMessage?: number } = {}): Authenticator {
  return {
    authenticate: async (_ip: string, user: string, password: string) => {
      if (user !== 'alice@tern.test' || password !== 'pw') throw new SmtpError(535, '5.7.8', 'Authentication credentials invalid');
      return { address: 'alice@tern.test', sendAs: ['alice@tern.test', '@alias.test'], ...limits };
    },
  } as unknown as Authenticator;
}

function backend(opts: { checks?: Check[]; dataSteps?: DataStep[]; limits?: Parameters<typeof authenticator>[0]; rate?: SendRate } = {}): TernBackend {
  const intake = new Intake({ spool, hostname: HOST, onQueued: (m) => queued.push(m), log, maxReceived: 30, inbound: { verifier } });
  const submission = new SubmissionCheck({ authConfigured: true, isTrusted: (ip) => ip === '10.0.0.1', messagesPerHour: 0, recipientsPerMessage: 100, rate: opts.rate });
  const policy = new Policy({
    directory,
    trustedNetworks: ['10.0.0.1'],
    checks: [submission, ...(opts.checks ?? [])],
    dataSteps: opts.dataSteps ?? [senderFieldsCheck, new InboundCheck(new InboundPolicy(defaultInbound(HOST)), log)],
  });
  return new TernBackend({ hostname: HOST, policy, intake, auth: authenticator(opts.limits), authOnSmtp: false, log: silentLogger });
}

let n = 0;
const info = (role: SessionInfo['role'] = 'smtp', ip = '192.0.2.7'): SessionInfo => ({ id: `t${++n}`, remoteAddress: ip, remotePort: 1, localPort: 25, role, tls: true, helo: 'client.test' });

/** DATA with `message`, committed: the queued message, or the error. */
async function send(s: BackendSession, message: string): Promise<QueuedMessage> {
  const sink = s.data({ protocol: 'ESMTPS' });
  // In pieces, as the session hands them over.
  const bytes = Buffer.from(message, 'latin1');
  for (let at = 0; at < bytes.length; at += 16 * 1024) sink.write(bytes.subarray(at, at + 16 * 1024));
  const q = await sink.commit(true);
  s.reset();
  return queued.find((m) => m.envelope.id === q.id)!;
}

/** The message as it will be delivered: the fields added at commit, then the stored bytes. */
async function stored(m: QueuedMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of spool.openMessage(m)) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('latin1');
}

const outside = (over: Partial<AuthOutcome> = {}): AuthOutcome => ({
  header: `Authentication-Results: ${HOST};\r\n spf=pass\r\n`,
  spf: { result: 'pass', domain: 'sender.test' },
  dkim: [],
  arc: 'none',
  dmarc: null,
  iprev: { result: 'pass', ip: '192.0.2.7', names: [] },
  ...over,
});

beforeEach(() => {
  outcome = outside();
  logged.length = 0;
});

describe('TernBackend: the submission rules', () => {
  it('the submission port needs AUTH (530 5.7.0), except from a trusted network; MX does not', async () => {
    const b = backend();
    const sub = await b.connect(info('submission'));
    await assert.rejects(sub.mail(addr('alice@tern.test'), PARAMS), { code: 530, enhanced: '5.7.0' });
    await (await b.connect(info('submission', '10.0.0.1'))).mail(addr('x@y.test'), PARAMS);
    await (await b.connect(info('smtp'))).mail(addr('x@y.test'), PARAMS);
  });

  it('AUTH: only where offered; an account may use only its addresses in MAIL FROM (550 5.7.1)', async () => {
    const b = backend();
    assert.equal((await b.connect(info('smtp'))).authAvailable, false, 'not on MX without submission.authOnSmtp');
    const s = await b.connect(info('submission'));
    assert.equal(s.authAvailable, true);
    await assert.rejects(s.auth('alice@tern.test', 'wrong'), { code: 535 });
    assert.equal(await s.auth('alice@tern.test', 'pw'), 'alice@tern.test');
    await assert.rejects(s.mail(addr('mallory@tern.test'), PARAMS), { code: 550, enhanced: '5.7.1', text: 'Sender address <mallory@tern.test> is not yours to use' });
    await s.mail(addr('alice+tag@tern.test'), PARAMS);
    s.reset();
    await s.mail(addr('anyone@alias.test'), PARAMS);
  });

  it('the hourly message limit (450 4.7.1): counted at MAIL, given back unless a message was queued', async () => {
    const rate = new SendRate();
    const b = backend({ limits: { messagesPerHour: 2 }, rate });
    const s = await b.connect(info('submission'));
    await s.auth('alice@tern.test', 'pw');
    await s.mail(addr('alice@tern.test'), PARAMS);
    assert.equal(rate.count('alice@tern.test'), 1);
    s.reset(); // RSET: nothing sent
    assert.equal(rate.count('alice@tern.test'), 0);
    for (let i = 0; i < 2; i++) {
      await s.mail(addr('alice@tern.test'), PARAMS);
      await s.rcpt(addr('bob@tern.test'), {});
      await send(s, 'From: alice@tern.test\r\n\r\nhi\r\n');
    }
    assert.equal(rate.count('alice@tern.test'), 2, 'queued messages keep their count');
    await assert.rejects(s.mail(addr('alice@tern.test'), PARAMS), { code: 450, enhanced: '4.7.1', text: 'Message rate limit exceeded (2 per hour); try again later' });
    assert.equal(rate.count('alice@tern.test'), 2);
  });

  it('a message refused at the data stage gives its count back; a later check refusing MAIL does too', async () => {
    const rate = new SendRate();
    const refuse: Check = { name: 'no', mail: (_s, from) => { if (from?.local === 'nope') throw new SmtpError(550, '5.7.1', 'No'); } };
    const b = backend({ limits: { messagesPerHour: 5 }, rate, checks: [refuse] });
    const s = await b.connect(info('submission'));
    await s.auth('alice@tern.test', 'pw');
    await assert.rejects(s.mail(addr('nope@tern.test'), PARAMS), { code: 550 });
    assert.equal(rate.count('alice@tern.test'), 0, 'refused by the plugin after the submission check counted it');
    await s.mail(addr('alice@tern.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    await assert.rejects(send(s, 'From: mallory@evil.test\r\n\r\nhi\r\n'), { code: 550, enhanced: '5.7.1', text: 'Sender address <mallory@evil.test> in From: is not yours to use' });
    s.reset();
    assert.equal(rate.count('alice@tern.test'), 0);
  });

  it("the user's recipient limit (450 4.7.1) counts RCPT commands, not what aliases expand to", async () => {
    const b = backend({ limits: { recipientsPerMessage: 2 } });
    const s = await b.connect(info('submission'));
    await s.auth('alice@tern.test', 'pw');
    await s.mail(addr('alice@tern.test'), PARAMS);
    await s.rcpt(addr('team@tern.test'), {});
    await s.rcpt(addr('bob@tern.test'), {});
    await assert.rejects(s.rcpt(addr('x@remote.test'), {}), { code: 450, enhanced: '4.7.1', text: 'Too many recipients for this user (limit 2 per message)' });
  });

  it('<Postmaster> goes to postmaster at the first local domain when the hostname is not one', async () => {
    const b = backend();
    const s = await b.connect(info('smtp'));
    await s.mail(null, PARAMS);
    // tern.test has no postmaster mailbox here: the directory says so, under its full address.
    await assert.rejects(s.rcpt('postmaster', {}), { code: 550, text: '<postmaster@tern.test>: no such user here' });
  });
});

describe('TernBackend: the data stage', () => {
  it("a check's fields go on top of the message; 'quarantine' sends local recipients to Junk, not remote ones", async () => {
    const seen: string[] = [];
    const tagger: Check = {
      name: 'tagger',
      body: () => (chunk) => void seen.push(chunk.toString('latin1')),
      data(_s, msg, t) {
        assert.deepEqual(msg.header('subject'), ['Hello there']);
        assert.equal(msg.headersComplete, true);
        assert.equal(msg.submission, false);
        assert.equal(msg.auth?.spf.result, 'pass');
        assert.equal(t.recipients.length, 2);
        msg.addHeader('X-Tagged', `size=${msg.size}`);
        return 'quarantine';
      },
    };
    const s = await backend({ checks: [tagger] }).connect(info('smtp'));
    await s.mail(addr('x@sender.test'), PARAMS);
    await s.rcpt(addr('team@tern.test'), {});
    const body = 'Subject: Hello\r\n there\r\n\r\nbody\r\n';
    const m = await send(s, body);
    assert.equal(seen.join(''), body, 'the body feed saw the message as sent');
    assert.match(await stored(m), new RegExp(`^X-Tagged: size=${body.length}\\r\\nAuthentication-Results: ${HOST};`));
    assert.deepEqual(m.envelope.recipients.map((r) => [r.address, r.folder]), [['alice@tern.test', JUNK_FOLDER], ['carol@remote.test', undefined]]);
    assert.equal(m.envelope.outside?.verified, 'spf', 'the sender verification is recorded for mail from outside');
    assert.equal(logged.find((l) => l.msg === 'inbound')?.fields?.action, 'accept');
  });

  it("a 5xx or 4xx from a check refuses the message; 'accept' skips later checks; nothing is queued when refused", async () => {
    let later = 0;
    const gate: Check = {
      name: 'gate',
      data(_s, msg) {
        const subject = msg.header('subject')[0];
        if (subject === 'reject') throw new SmtpError(554, '5.7.1', 'Go away');
        if (subject === 'later') throw new SmtpError(451, '4.7.1', 'Not now');
        if (subject === 'vip') return 'accept';
      },
    };
    const counter: Check = { name: 'counter', data: () => void later++ };
    const s = await backend({ checks: [gate, counter] }).connect(info('smtp'));
    const before = queued.length;
    for (const [subject, code] of [['reject', 554], ['later', 451]] as const) {
      await s.mail(addr('x@sender.test'), PARAMS);
      await s.rcpt(addr('bob@tern.test'), {});
      await assert.rejects(send(s, `Subject: ${subject}\r\n\r\nx\r\n`), { code });
      s.reset();
    }
    assert.equal(queued.length, before);
    await s.mail(addr('x@sender.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    await send(s, 'Subject: vip\r\n\r\nx\r\n');
    assert.equal(later, 0, "the check after an 'accept' did not run");
    await s.mail(addr('x@sender.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    await send(s, 'Subject: other\r\n\r\nx\r\n');
    assert.equal(later, 1);
  });

  it('the inbound policy refuses DMARC p=reject failures (550 5.7.1) and logs one inbound line', async () => {
    outcome = outside({ spf: { result: 'fail', domain: 'sender.test' }, dmarc: { result: 'fail', domain: 'sender.test', policy: 'reject', pct: 100 } });
    const s = await backend().connect(info('smtp'));
    await s.mail(addr('x@sender.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    await assert.rejects(send(s, 'From: x@sender.test\r\n\r\nx\r\n'), { code: 550, enhanced: '5.7.1', text: 'Message rejected: it fails the DMARC policy of sender.test' });
    const line = logged.find((l) => l.msg === 'inbound')?.fields;
    assert.equal(line?.action, 'reject');
    assert.equal(line?.senderVerified, 'no');
  });

  it('mail from our users: no inbound checks; the originator fields are held to the account', async () => {
    const s = await backend().connect(info('submission'));
    await s.auth('alice@tern.test', 'pw');
    await s.mail(addr('alice@tern.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    await assert.rejects(send(s, 'From: alice@tern.test\r\nSender: eve@evil.test\r\n\r\nx\r\n'), { code: 550, text: 'Sender address <eve@evil.test> in Sender: is not yours to use' });
    s.reset();
    await s.mail(addr('alice@tern.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    const m = await send(s, 'From: Alice <alice@tern.test>\r\n\r\nx\r\n');
    assert.equal(m.envelope.outside, undefined);
    assert.ok(!logged.some((l) => l.msg === 'inbound'));
    assert.match(await stored(m), /^Date: .*\r\nMessage-ID: </, 'submission fix-ups');
  });

  it('a check throwing a plain Error at commit → 451 4.3.0 from intake, logged', async () => {
    const broken: Check = { name: 'broken', data: () => { throw new TypeError('oops'); } };
    const s = await backend({ checks: [broken] }).connect(info('smtp'));
    await s.mail(addr('x@sender.test'), PARAMS);
    await s.rcpt(addr('bob@tern.test'), {});
    await assert.rejects(send(s, 'Subject: x\r\n\r\nx\r\n'), (e: unknown) => e instanceof SmtpError && e.code === 451 && e.enhanced === '4.3.0');
    assert.ok(logged.some((l) => l.msg === 'message not queued'));
  });
});

describe('DataMessage', () => {
  let s: BackendSession;
  before(async () => {
    s = await backend().connect(info('smtp'));
  });

  it('addHeader refuses what would break the message: a second Subject, a line break, non-ASCII, a bad name', async () => {
    const errors: string[] = [];
    const check: Check = {
      name: 'adder',
      data(_s, msg) {
        for (const [name, value] of [['Subject', 'x'], ['X-A', 'a\r\nBcc: eve@evil.test'], ['X-B', 'é'], ['X C', 'v'], ['X-D', 'x'.repeat(1000)]] as const) {
          try {
            msg.addHeader(name, value);
          } catch (e) {
            errors.push(name);
          }
        }
        msg.addHeader('X-Ok', ' fine ');
      },
    };
    const t = await backend({ checks: [check] }).connect(info('smtp'));
    await t.mail(addr('x@sender.test'), PARAMS);
    await t.rcpt(addr('bob@tern.test'), {});
    const m = await send(t, 'Subject: s\r\n\r\nx\r\n');
    assert.deepEqual(errors, ['Subject', 'X-A', 'X-B', 'X C', 'X-D']);
    assert.match(await stored(m), /^X-Ok: fine\r\nAuthentication-Results: /);
    void s;
  });

  it('headers: every field in order, unfolded, UTF-8, without our Received field; forged Authentication-Results gone', async () => {
    let fields: { name: string; value: string }[] = [];
    const check: Check = { name: 'reader', data: (_s, msg) => void (fields = [...msg.headers]) };
    const t = await backend({ checks: [check] }).connect(info('smtp'));
    await t.mail(addr('x@sender.test'), PARAMS);
    await t.rcpt(addr('bob@tern.test'), {});
    await send(t, `Received: from a\r\nAuthentication-Results: ${HOST}; spf=pass\r\nSubject: caf\xc3\xa9\r\n  au lait\r\nX-Empty:\r\nFrom : x@sender.test\r\n\r\nbody: not a field\r\n`);
    assert.deepEqual(fields, [
      { name: 'Received', value: 'from a' },
      { name: 'Subject', value: 'café  au lait' },
      { name: 'X-Empty', value: '' },
      { name: 'From', value: 'x@sender.test' },
    ]);
  });

  it('a header section over MAX_HEADER_SECTION: headersComplete false, the fields before the cut, not the cut one', async () => {
    let seen: { complete: boolean; names: string[] } | undefined;
    const check: Check = { name: 'reader', data: (_s, msg) => void (seen = { complete: msg.headersComplete, names: msg.headers.map((f) => f.name) }) };
    const t = await backend({ checks: [check] }).connect(info('smtp'));
    await t.mail(addr('x@sender.test'), PARAMS);
    await t.rcpt(addr('bob@tern.test'), {});
    const folded = Array.from({ length: MAX_HEADER_SECTION / 500 + 100 }, () => ` ${'y'.repeat(497)}\r\n`).join('');
    // Over the verifier's limit too: mail from outside is then refused (552), after the data stage could not see it whole.
    await assert.rejects(send(t, `Subject: s\r\nX-Big: x\r\n${folded}X-After: z\r\n\r\nbody\r\n`), { code: 552 });
    assert.equal(seen, undefined, 'refused before the data stage');
    const sub = await backend({ checks: [check] }).connect(info('submission', '10.0.0.1'));
    await sub.mail(addr('x@tern.test'), PARAMS);
    await sub.rcpt(addr('bob@tern.test'), {});
    await send(sub, `Subject: s\r\nX-Big: x\r\n${folded}X-After: z\r\n\r\nbody\r\n`);
    assert.deepEqual(seen, { complete: false, names: ['Subject'] });
  });
});
