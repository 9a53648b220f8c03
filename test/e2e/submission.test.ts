// Message submission end to end (RFC 6409, RFC 4954, RFC 8314): AUTH only
// over TLS and only on the submission ports, the SASL exchanges, the same
// answer (and the same cost) for a wrong password and an unknown account,
// throttling and lockout, who may send as whom, the §8 fix-ups, per-user
// rate limits, and DKIM signatures on submitted mail checked by two
// verifiers that share no code (dkimpy and mailauth).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { dkimpyDkim, dkimpyMissing, mailauthDkim } from '../helpers/dkim-verify.ts';
import { ALICE, RawClient, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { open, expectCmd, expectMailbox, mailboxContents, queuedIds, sendMail, waitQueueEmpty } from './smtp-kit.ts';
import { hashPassword } from '../../src/store/passwords.ts';
import { createLogger } from '../../src/util/log.ts';
import { generateKey, RECHECK_MS } from '../../src/intake/dkim.ts';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
/** RFC 4616 PLAIN message: empty authzid, authcid, password. */
const plain = (user: string, password: string): string => b64(`\0${user}\0${password}`);

const BAD_CREDENTIALS = '535 5.7.8 Authentication credentials invalid';

/** Connect (optionally from a chosen loopback address), STARTTLS, EHLO again; returns the client and the EHLO over TLS. */
async function tlsSession(port: number, localAddress?: string): Promise<{ c: RawClient; ehlo: string }> {
  const c = await open(port, localAddress ? { localAddress } : {});
  await expectCmd(c, 'STARTTLS', /^220 2\.0\.0 /);
  await c.starttls();
  const ehlo = await expectCmd(c, 'EHLO client.test', /^250[- ]/);
  return { c, ehlo };
}

/** An authenticated session on the submission port (AUTH PLAIN over STARTTLS). */
async function authed(port: number, user = ALICE.user, password = ALICE.password, localAddress?: string): Promise<RawClient> {
  const { c } = await tlsSession(port, localAddress);
  await expectCmd(c, `AUTH PLAIN ${plain(user, password)}`, /^235 2\.7\.0 /);
  return c;
}

/** Send a line and time its reply (from the write to the complete reply). */
async function timed(c: RawClient, line: string, timeoutMs = 15_000): Promise<{ reply: string; ms: number }> {
  const t0 = performance.now();
  c.send(line + '\r\n');
  const reply = await c.reply(timeoutMs);
  return { reply, ms: performance.now() - t0 };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** A message with CRLF line ends, ending in CRLF, for sendMail. */
const msg = (headers: string[], body = 'Hello there.\r\n'): string => headers.join('\r\n') + '\r\n\r\n' + body;

/** The header section of a message (up to the first empty line). */
const headerOf = (m: string): string => m.slice(0, m.indexOf('\r\n\r\n') + 2);
const fieldCount = (m: string, name: string): number => (headerOf(m).match(new RegExp(`^${name}:`, 'gim')) ?? []).length;

// ---------------------------------------------------------------- fixtures

/** Accounts besides alice on the main server; every password here must never show up in a log or a message. */
const VICTIM = { user: 'victim@tern.test', password: 'victim-right-pw-31' };
const VICTIM2 = { user: 'victim2@tern.test', password: 'victim2-right-pw-47' };
const TIMING = Array.from({ length: 5 }, (_, i) => ({ user: `timing${i}@tern.test`, password: `timing-right-pw-${i}` }));
const WRONG = (i: number) => `wrong-guess-pw-${i}`;

describe('submission: AUTH, sender checks, fix-ups', () => {
  let srv: TestServer;
  const logs: string[] = [];
  /** Every secret sent to this server, for the final "never logged" check. */
  const secrets = new Set<string>([ALICE.password, VICTIM.password, VICTIM2.password, ...TIMING.map((t) => t.password)]);

  before(async () => {
    const users = await Promise.all(
      [{ ...ALICE, sendAs: ['@tern.test'] }, { ...VICTIM, sendAs: [] }, { ...VICTIM2, sendAs: [] }, ...TIMING.map((t) => ({ ...t, sendAs: [] }))].map(async (u) => ({
        address: u.user,
        passwordHash: await hashPassword(u.password),
        sendAs: u.sendAs,
      })),
    );
    srv = await startServer({ users }, { log: createLogger('debug', (l) => logs.push(l)) });
  });
  after(() => srv.stop());

  // ------------------------------------------------------------ 1. where AUTH is offered

  it('587 before TLS: EHLO has no AUTH, AUTH → 538 5.7.11; after STARTTLS AUTH PLAIN LOGIN is listed', async () => {
    const c = await open(srv.port('submission'), { ehlo: false });
    try {
      const ehlo = await expectCmd(c, 'EHLO client.test', /^250-mx\.tern\.test Hello/, /^250-STARTTLS$/m);
      assert.doesNotMatch(ehlo, /AUTH/);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^538 5\.7\.11 Encryption required/);
      await expectCmd(c, 'AUTH LOGIN', /^538 5\.7\.11 /);
      await expectCmd(c, 'STARTTLS', /^220 2\.0\.0 /);
      await c.starttls();
      const tlsEhlo = await expectCmd(c, 'EHLO client.test', /^250[- ]AUTH PLAIN LOGIN$/m);
      assert.doesNotMatch(tlsEhlo, /STARTTLS/);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 2\.7\.0 /);
    } finally {
      c.close();
    }
  });

  it('465 (implicit TLS): AUTH is listed at once', async () => {
    const c = await open(srv.port('submissions'), { tls: true });
    try {
      await expectCmd(c, 'EHLO client.test', /^250[- ]AUTH PLAIN LOGIN$/m);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 2\.7\.0 /);
    } finally {
      c.close();
    }
  });

  it('port 25: AUTH is never listed, not even over TLS, and AUTH → 502 5.5.1', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      assert.doesNotMatch(await expectCmd(c, 'EHLO client.test', /^250 /m), /AUTH/);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^502 5\.5\.1 /);
      await expectCmd(c, 'STARTTLS', /^220 2\.0\.0 /);
      await c.starttls();
      assert.doesNotMatch(await expectCmd(c, 'EHLO client.test', /^250 /m), /AUTH/);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^502 5\.5\.1 /);
      await expectCmd(c, 'AUTH LOGIN', /^502 5\.5\.1 /);
      // Not authenticated: still an MX session, so a remote recipient is refused.
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
      await expectCmd(c, 'RCPT TO:<someone@remote.test>', /^554 5\.7\.1 /);
    } finally {
      c.close();
    }
  });

  // ------------------------------------------------------------ 2. SASL exchanges

  it('AUTH PLAIN with an initial response → 235 2.7.0; a second AUTH → 503 5.5.1', async () => {
    const { c } = await tlsSession(srv.port('submission'));
    try {
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 2\.7\.0 Authentication successful$/);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^503 5\.5\.1 /);
      await expectCmd(c, 'AUTH LOGIN', /^503 5\.5\.1 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('AUTH LOGIN: 334 VXNlcm5hbWU6 / 334 UGFzc3dvcmQ6 → 235; PLAIN without initial response gets "334 "', async () => {
    const { c } = await tlsSession(srv.port('submission'));
    try {
      await expectCmd(c, 'AUTH LOGIN', /^334 VXNlcm5hbWU6$/);
      await expectCmd(c, b64(ALICE.user), /^334 UGFzc3dvcmQ6$/);
      await expectCmd(c, b64(ALICE.password), /^235 2\.7\.0 /);
    } finally {
      c.close();
    }
    const second = await tlsSession(srv.port('submission'));
    try {
      // RFC 4954 §4: an empty challenge is "334 " (the client reads "334").
      await expectCmd(second.c, 'AUTH PLAIN', /^334$/);
      await expectCmd(second.c, plain(ALICE.user, ALICE.password), /^235 2\.7\.0 /);
    } finally {
      second.c.close();
    }
  });

  it('"*" cancels the exchange → 501, and the session can authenticate afterwards', async () => {
    const { c } = await tlsSession(srv.port('submission'));
    try {
      await expectCmd(c, 'AUTH LOGIN', /^334 VXNlcm5hbWU6$/);
      await expectCmd(c, '*', /^501 5\.0\.0 Authentication cancelled$/);
      await expectCmd(c, 'AUTH LOGIN', /^334 VXNlcm5hbWU6$/);
      await expectCmd(c, b64(ALICE.user), /^334 UGFzc3dvcmQ6$/);
      await expectCmd(c, '*', /^501 5\.0\.0 /);
      await expectCmd(c, 'AUTH PLAIN', /^334$/);
      await expectCmd(c, '*', /^501 5\.0\.0 /);
      // Cancelled means not authenticated.
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^530 5\.7\.0 /);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 2\.7\.0 /);
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
    } finally {
      c.close();
    }
  });

  // ------------------------------------------------------------ 3. no user enumeration

  it('wrong password and unknown account: the same reply, and about the same time', async (t) => {
    // Every attempt comes from its own loopback address and names its own
    // account, so the throttle (per IP and per account) adds no delay to any
    // of them and only the password check itself is measured.
    const wrong: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < TIMING.length; i++) {
      const a = await tlsSession(srv.port('submission'), `127.0.3.${2 * i + 1}`);
      const b = await tlsSession(srv.port('submission'), `127.0.3.${2 * i + 2}`);
      try {
        // Interleaved, and the order alternates, so drift (warm-up, load) hits both sides alike.
        const runWrong = async () => {
          secrets.add(WRONG(i));
          const r = await timed(a.c, `AUTH PLAIN ${plain(TIMING[i]!.user, WRONG(i))}`);
          assert.equal(r.reply, BAD_CREDENTIALS);
          wrong.push(r.ms);
        };
        const runUnknown = async () => {
          const r = await timed(b.c, `AUTH PLAIN ${plain(`nobody${i}@tern.test`, TIMING[i]!.password)}`);
          assert.equal(r.reply, BAD_CREDENTIALS, 'an unknown account gets exactly the same reply');
          unknown.push(r.ms);
        };
        if (i % 2) {
          await runWrong();
          await runUnknown();
        } else {
          await runUnknown();
          await runWrong();
        }
      } finally {
        a.c.close();
        b.c.close();
      }
    }
    const ratio = median(unknown) / median(wrong);
    const detail = `unknown ${unknown.map((x) => x.toFixed(0)).join('/')} ms, wrong ${wrong.map((x) => x.toFixed(0)).join('/')} ms, ratio ${ratio.toFixed(2)}`;
    t.diagnostic(detail);
    assert.ok(ratio > 0.5 && ratio < 2, detail);
    // The password check is real work (scrypt), for the unknown account too.
    assert.ok(median(unknown) > 5, detail);
  });

  it('AUTH LOGIN: unknown account and wrong password get the same 535 5.7.8', async () => {
    const replies: string[] = [];
    for (const [ip, user] of [['127.0.3.101', TIMING[0]!.user], ['127.0.3.102', 'nobody-login@tern.test']] as const) {
      const { c } = await tlsSession(srv.port('submission'), ip);
      try {
        await expectCmd(c, 'AUTH LOGIN', /^334 /);
        await expectCmd(c, b64(user), /^334 /);
        secrets.add('login-wrong-pw');
        replies.push(await c.cmd(b64('login-wrong-pw')));
      } finally {
        c.close();
      }
    }
    assert.deepEqual(replies, [BAD_CREDENTIALS, BAD_CREDENTIALS]);
  });

  // ------------------------------------------------------------ 4. throttling and lockout

  it('repeated failures from one IP are answered ever more slowly', async (t) => {
    // Each attempt names a new (unknown) account, so only the IP's count grows:
    // delays 0, 0.5, 1, 2 s before the 1st…4th answer (500 ms doubling).
    const { c } = await tlsSession(srv.port('submission'), '127.0.4.1');
    const ms: number[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const r = await timed(c, `AUTH PLAIN ${plain(`guess${i}@tern.test`, WRONG(100 + i))}`);
        secrets.add(WRONG(100 + i));
        assert.equal(r.reply, BAD_CREDENTIALS);
        ms.push(r.ms);
      }
    } finally {
      c.close();
    }
    const detail = ms.map((x) => x.toFixed(0)).join(' / ') + ' ms';
    t.diagnostic(`1st…4th failure: ${detail}`);
    // Nominal gaps are 0.5, 1 and 2 s; the password check itself varies with
    // machine load (scrypt), so the bounds leave room for that.
    assert.ok(ms[3]! - ms[0]! >= 1500, `4th failure well over 1.5 s slower than the 1st: ${detail}`);
    // The first gap is nominally 500 ms; one scrypt check under a loaded
    // machine varies by a few hundred ms, so only half of it is required.
    assert.ok(ms[1]! - ms[0]! >= 200 && ms[2]! - ms[0]! >= 700, `growing delays: ${detail}`);
    assert.ok(ms[1]! < ms[2]! && ms[2]! < ms[3]!, `growing delays: ${detail}`);
    // Another IP is not slowed down by this one's failures.
    const other = await tlsSession(srv.port('submission'), '127.0.4.2');
    try {
      const r = await timed(other.c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`);
      assert.match(r.reply, /^235 2\.7\.0 /);
      assert.ok(r.ms < ms[0]! + 400, `no delay for a clean IP: ${r.ms.toFixed(0)} ms`);
    } finally {
      other.c.close();
    }
  });

  it('10 failures lock the account (454 4.7.0 even with the right password); other accounts and IPs still work', async () => {
    // Sequentially, 10 failures take ~47 s of throttle delays; sent at once
    // from 10 addresses they take one round of password checks, and still
    // count as 10 failures of the account.
    const clients = await Promise.all(Array.from({ length: 10 }, (_, i) => tlsSession(srv.port('submission'), `127.0.5.${i + 1}`)));
    try {
      const replies = await Promise.all(
        clients.map(({ c }, i) => {
          secrets.add(WRONG(200 + i));
          return timed(c, `AUTH PLAIN ${plain(VICTIM.user, WRONG(200 + i))}`);
        }),
      );
      assert.deepEqual(replies.map((r) => r.reply), Array(10).fill(BAD_CREDENTIALS));
    } finally {
      for (const { c } of clients) c.close();
    }
    // The right password, from a fresh address: locked out (after the capped 8 s delay).
    const { c } = await tlsSession(srv.port('submission'), '127.0.5.50');
    try {
      const r = await timed(c, `AUTH PLAIN ${plain(VICTIM.user, VICTIM.password)}`, 20_000);
      assert.match(r.reply, /^454 4\.7\.0 Too many failed authentication attempts/);
      // Still not authenticated.
      await expectCmd(c, 'MAIL FROM:<victim@tern.test>', /^530 5\.7\.0 /);
    } finally {
      c.close();
    }
    // A different account from another IP is unaffected.
    const ok = await tlsSession(srv.port('submission'), '127.0.5.51');
    try {
      const r = await timed(ok.c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`);
      assert.match(r.reply, /^235 2\.7\.0 /);
      assert.ok(r.ms < 2000, `no throttle delay for alice: ${r.ms.toFixed(0)} ms`);
    } finally {
      ok.c.close();
    }
  });

  it(
    'concurrent guesses do not get past the lockout: at most 10 password checks per account',
    async () => {
      const clients = await Promise.all(Array.from({ length: 12 }, (_, i) => tlsSession(srv.port('submission'), `127.0.6.${i + 1}`)));
      try {
        const replies = await Promise.all(
          clients.map(({ c }, i) => {
            secrets.add(WRONG(300 + i));
            return timed(c, `AUTH PLAIN ${plain(VICTIM2.user, WRONG(300 + i))}`, 60_000);
          }),
        );
        const checked = replies.filter((r) => r.reply === BAD_CREDENTIALS).length;
        const locked = replies.filter((r) => /^454 4\.7\.0 /.test(r.reply)).length;
        assert.equal(checked + locked, 12, JSON.stringify(replies.map((r) => r.reply)));
        assert.ok(checked <= 10, `${checked} of 12 simultaneous guesses were checked (lockout after 10)`);
      } finally {
        for (const { c } of clients) c.close();
      }
    },
  );

  // ------------------------------------------------------------ 5. who may send as whom

  it('MAIL before AUTH on 587 → 530 5.7.0 (before and after TLS)', async () => {
    const c = await open(srv.port('submission'));
    try {
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^530 5\.7\.0 Authentication required/);
      await expectCmd(c, 'STARTTLS', /^220 /);
      await c.starttls();
      await expectCmd(c, 'EHLO client.test', /^250 /m);
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^530 5\.7\.0 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^503 5\.5\.1 /);
    } finally {
      c.close();
    }
  });

  it('after AUTH: MAIL FROM someone else → 550 5.7.1; own address (also +tag) is fine', async () => {
    const c = await authed(srv.port('submission'));
    try {
      await expectCmd(c, 'MAIL FROM:<bob@other.test>', /^550 5\.7\.1 Sender address <bob@other\.test> is not yours to use$/);
      await expectCmd(c, 'MAIL FROM:<alice+x@tern.test>', /^250 2\.1\.0 /);
      await expectCmd(c, 'RSET', /^250 /);
      // sendAs '@tern.test': any address of the domain.
      await expectCmd(c, 'MAIL FROM:<bob@tern.test>', /^250 2\.1\.0 /);
      await expectCmd(c, 'RSET', /^250 /);
      await expectCmd(c, 'MAIL FROM:<alice@tern.test.evil.test>', /^550 5\.7\.1 /);
    } finally {
      c.close();
    }
  });

  it("a From: header of someone else → 550 5.7.1 after the final dot, nothing queued", async () => {
    await waitQueueEmpty(srv.dataDir);
    const before = mailboxContents(srv.dataDir, 'tern.test', 'bob').length;
    const c = await authed(srv.port('submission'));
    try {
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(msg(['From: mallory@evil.test', 'To: bob@tern.test', 'Subject: spoof']) + '.\r\n');
      assert.match(await c.reply(), /^550 5\.7\.1 Sender address <mallory@evil\.test> in From: is not yours to use$/);
      assert.deepEqual(queuedIds(srv.dataDir), []);
      // A second From address hidden in the list counts too.
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(msg(['From: Alice <alice@tern.test>, Mallory <mallory@evil.test>', 'Subject: spoof 2']) + '.\r\n');
      assert.match(await c.reply(), /^550 5\.7\.1 /);
      // A second From field, a folded one, an upper-case name, none at all; and the same over BDAT.
      for (const [head, reply] of [
        ['From: alice@tern.test\r\nFrom: mallory@evil.test', /^550 5\.7\.1 Sender address <mallory@evil\.test> /],
        ['From:\r\n mallory@evil.test', /^550 5\.7\.1 Sender address <mallory@evil\.test> /],
        ['FROM: "alice@tern.test" <mallory@evil.test>', /^550 5\.7\.1 Sender address <mallory@evil\.test> /],
        ['Subject: no from', /^550 5\.7\.1 Message has no From: address$/],
      ] as const) {
        await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
        await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 2\.1\.5 /);
        await expectCmd(c, 'DATA', /^354 /);
        c.send(`${head}\r\n\r\nbody\r\n.\r\n`);
        assert.match(await c.reply(), reply, head);
      }
      const bdat = 'From: mallory@evil.test\r\n\r\nbody\r\n';
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 2\.1\.5 /);
      await expectCmd(c, `BDAT ${bdat.length} LAST\r\n${bdat.slice(0, -2)}`, /^550 5\.7\.1 Sender address <mallory@evil\.test> /);
      // The session goes on.
      await expectCmd(c, 'NOOP', /^250 /);
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(queuedIds(srv.dataDir), []);
    await expectMailbox(srv.dataDir, 'tern.test', 'bob', before);
  });

  it(
    'a From: list mixing <angle> and bare addresses is checked whole',
    async () => {
      const c = await authed(srv.port('submission'));
      try {
        for (const from of ['<alice@tern.test>, mallory@evil.test', 'mallory@evil.test, Alice <alice@tern.test>']) {
          await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
          await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 2\.1\.5 /);
          await expectCmd(c, 'DATA', /^354 /);
          c.send(msg([`From: ${from}`, 'Subject: mixed list']) + '.\r\n');
          assert.match(await c.reply(), /^550 5\.7\.1 Sender address <mallory@evil\.test> in From: is not yours to use$/, from);
        }
      } finally {
        c.close();
      }
    },
  );

  it('own From: → 250 and delivered with "ESMTPSA" and "(authenticated as alice@tern.test)" in our Received', async () => {
    await waitQueueEmpty(srv.dataDir);
    const before = mailboxContents(srv.dataDir, 'tern.test', 'bob').length;
    const c = await authed(srv.port('submission'));
    try {
      await sendMail(c, 'alice@tern.test', ['bob@tern.test'], msg(['From: Alice <alice@tern.test>', 'To: bob@tern.test', 'Subject: own from'], 'own-from body\r\n'));
    } finally {
      c.close();
    }
    const all = await expectMailbox(srv.dataDir, 'tern.test', 'bob', before + 1);
    const m = all.find((x) => x.includes('own-from body'))!;
    const received = /^Received: [^\r]*(?:\r\n[ \t][^\r]*)*/m.exec(m)![0];
    assert.match(received, /by mx\.tern\.test \(Tern\) with ESMTPSA id /);
    assert.match(received, /\(authenticated as alice@tern\.test\)/);
    assert.match(received, /\(using TLSv1\.[23] /);
    for (const s of [ALICE.password, b64(ALICE.password), plain(ALICE.user, ALICE.password)]) assert.ok(!m.includes(s), 'no password in the message');
  });

  // ------------------------------------------------------------ 6. fix-ups (RFC 6409 §8)

  it('a message without Date and Message-ID gets both; one with them keeps its own, no duplicates', async () => {
    await waitQueueEmpty(srv.dataDir);
    const before = mailboxContents(srv.dataDir, 'tern.test', 'bob').length;
    const c = await authed(srv.port('submission'));
    let bareId: string;
    try {
      bareId = await sendMail(c, 'alice@tern.test', ['bob@tern.test'], msg(['From: alice@tern.test', 'Subject: bare'], 'bare body\r\n'));
      await sendMail(
        c,
        'alice@tern.test',
        ['bob@tern.test'],
        msg(['From: alice@tern.test', 'Subject: dressed', 'Date: Mon, 1 Jan 2024 00:00:00 +0000', 'Message-ID: <own.1@client.test>'], 'dressed body\r\n'),
      );
    } finally {
      c.close();
    }
    const all = await expectMailbox(srv.dataDir, 'tern.test', 'bob', before + 2);
    const bare = all.find((x) => x.includes('bare body'))!;
    const dressed = all.find((x) => x.includes('dressed body'))!;
    assert.equal(fieldCount(bare, 'Date'), 1);
    assert.equal(fieldCount(bare, 'Message-ID'), 1);
    assert.match(headerOf(bare), /^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r$/m);
    assert.match(headerOf(bare), new RegExp(`^Message-ID: <${bareId}\\.\\w+@mx\\.tern\\.test>\\r$`, 'm'));
    assert.equal(fieldCount(dressed, 'Date'), 1);
    assert.equal(fieldCount(dressed, 'Message-ID'), 1);
    assert.match(headerOf(dressed), /^Date: Mon, 1 Jan 2024 00:00:00 \+0000\r$/m);
    assert.match(headerOf(dressed), /^Message-ID: <own\.1@client\.test>\r$/m);
  });

  // ------------------------------------------------------------ logs

  it('no password (nor its base64) ever appears in the logs, even at debug level', () => {
    assert.ok(logs.length > 0);
    const text = logs.join('');
    // The logs do record the events (by user name).
    assert.match(text, /"msg":"auth","conn":"[^"]+","ip":"127\.0\.0\.1","user":"alice@tern\.test"/);
    assert.match(text, /"msg":"auth failed"[^\n]*"user":"victim@tern\.test"/);
    assert.match(text, /"msg":"auth refused: locked out"[^\n]*"user":"victim@tern\.test"/);
    assert.ok(secrets.size > 10);
    for (const s of secrets) {
      assert.ok(!text.includes(s), `log contains a password: ${s}`);
      assert.ok(!text.includes(b64(s)), `log contains a base64 password: ${s}`);
    }
    for (const u of [ALICE, VICTIM]) assert.ok(!text.includes(plain(u.user, u.password)), 'log contains an AUTH PLAIN blob');
  });
});

describe('submission: AUTH on port 25 when authOnSmtp is set', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ submission: { authOnSmtp: true } });
  });
  after(() => srv.stop());

  it('offered over TLS only; AUTH then works and relays', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      assert.doesNotMatch(await expectCmd(c, 'EHLO client.test', /^250 /m), /AUTH/);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^538 5\.7\.11 /);
      await expectCmd(c, 'STARTTLS', /^220 /);
      await c.starttls();
      await expectCmd(c, 'EHLO client.test', /^250[- ]AUTH PLAIN LOGIN$/m);
      await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 2\.7\.0 /);
      await expectCmd(c, 'MAIL FROM:<bob@other.test>', /^550 5\.7\.1 /);
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
      // Authenticated: relaying is allowed (RCPT only, nothing is sent).
      await expectCmd(c, 'RCPT TO:<someone@remote.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'RSET', /^250 /);
    } finally {
      c.close();
    }
  });
});

// ---------------------------------------------------------------- 7. rate limits

describe('submission: per-user rate limits', () => {
  let srv: TestServer;
  const DAVE = { user: 'dave@tern.test', password: 'dave-pw-xyz' };
  const ERIN = { user: 'erin@tern.test', password: 'erin-pw-xyz' };
  before(async () => {
    srv = await startServer({
      submission: { messagesPerHour: 2, recipientsPerMessage: 2 },
      users: [
        { address: ALICE.user, passwordHash: await hashPassword(ALICE.password), sendAs: ['@tern.test'] },
        // Overrides both limits upwards: proof that the per-user value is the one applied.
        { address: DAVE.user, passwordHash: await hashPassword(DAVE.password), sendAs: [], messagesPerHour: 3, recipientsPerMessage: 3 },
        { address: ERIN.user, passwordHash: await hashPassword(ERIN.password), sendAs: [] },
      ],
    });
  });
  after(() => srv.stop());

  const RCPTS = ['alice@tern.test', 'bob@tern.test', 'postmaster@tern.test', 'team@tern.test'];

  async function rcptLimit(user: string, password: string, from: string, allowed: number): Promise<void> {
    const c = await authed(srv.port('submission'), user, password);
    try {
      await expectCmd(c, `MAIL FROM:<${from}>`, /^250 /);
      for (let i = 0; i < allowed; i++) await expectCmd(c, `RCPT TO:<${RCPTS[i]}>`, /^250 2\.1\.5 /);
      await expectCmd(c, `RCPT TO:<${RCPTS[allowed]}>`, new RegExp(`^450 4\\.7\\.1 Too many recipients for this user \\(limit ${allowed} per message\\)$`));
      // The accepted ones still go.
      await expectCmd(c, 'RSET', /^250 /);
    } finally {
      c.close();
    }
  }

  async function messageLimit(user: string, password: string, from: string, allowed: number): Promise<void> {
    const c = await authed(srv.port('submission'), user, password);
    try {
      for (let i = 0; i < allowed; i++) await sendMail(c, from, ['bob@tern.test'], msg([`From: ${from}`, `Subject: rate ${i}`]));
      await expectCmd(c, `MAIL FROM:<${from}>`, new RegExp(`^450 4\\.7\\.1 Message rate limit exceeded \\(${allowed} per hour\\); try again later$`));
    } finally {
      c.close();
    }
    // Counted per user, across sessions.
    const again = await authed(srv.port('submission'), user, password);
    try {
      await expectCmd(again, `MAIL FROM:<${from}>`, /^450 4\.7\.1 /);
    } finally {
      again.close();
    }
  }

  it('global limits: a third RCPT → 450 4.7.1, a third message\'s MAIL → 450 4.7.1', async () => {
    await rcptLimit(ALICE.user, ALICE.password, 'alice@tern.test', 2);
    await messageLimit(ALICE.user, ALICE.password, 'alice@tern.test', 2);
  });

  it('the per-user values in users[] take precedence (3 recipients, 3 messages)', async () => {
    await rcptLimit(DAVE.user, DAVE.password, 'dave@tern.test', 3);
    await messageLimit(DAVE.user, DAVE.password, 'dave@tern.test', 3);
    await waitQueueEmpty(srv.dataDir);
  });

  it(
    'the hourly limit holds for sessions in parallel too',
    async () => {
      const sessions = await Promise.all([1, 2, 3].map(() => authed(srv.port('submission'), ERIN.user, ERIN.password)));
      try {
        const mails = await Promise.all(sessions.map((c) => c.cmd('MAIL FROM:<erin@tern.test>')));
        let queued = 0;
        for (const [i, c] of sessions.entries()) {
          if (!mails[i]!.startsWith('250')) {
            assert.match(mails[i]!, /^450 4\.7\.1 /);
            continue;
          }
          await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 /);
          await expectCmd(c, 'DATA', /^354 /);
          c.send(msg(['From: erin@tern.test', `Subject: parallel ${i}`]) + '.\r\n');
          const r = await c.reply();
          if (r.startsWith('250 ')) queued++;
          else assert.match(r, /^4\d\d /, 'refused at the end of data with a temporary error');
        }
        assert.ok(queued <= 2, `${queued} messages queued with messagesPerHour: 2 (MAIL replies: ${JSON.stringify(mails)})`);
      } finally {
        for (const c of sessions) c.close();
      }
    },
  );
});

// ---------------------------------------------------------------- 8. DKIM end to end


describe('submission: DKIM-signed end to end, verified independently', () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let srv: TestServer;
  const zones: Zone = {
    'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
    'mx.remote.test': { A: ['127.0.0.9'] },
  };

  before(async () => {
    peer = await ScriptedPeer.start({ host: '127.0.0.9' });
    dns = await startDnsServer(zones);
    srv = await startServer({
      dns: { servers: [dns.address], timeout: '1s' },
      outbound: { port: peer.port, timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
      queue: { retrySchedule: ['1s'] },
    });
  });
  after(async () => {
    await srv?.stop();
    await peer?.close();
    await dns?.close();
  });

  const delivered = (): Buffer[] => peer.sessions.flatMap((s) => s.messages.map((m) => m.data));

  async function submit(subject: string, body: string): Promise<Buffer> {
    const n = delivered().length;
    const c = await authed(srv.port('submission'));
    let id: string;
    try {
      id = await sendMail(
        c,
        'alice@tern.test',
        ['bob@remote.test'],
        msg(['From: Alice <alice@tern.test>', 'To: Bob <bob@remote.test>', `Subject: ${subject}`, 'MIME-Version: 1.0', 'Content-Type: text/plain; charset=us-ascii'], body),
      );
    } finally {
      c.close();
    }
    await waitFor(() => !srv.tern.scheduler.get(id) && delivered().length > n, 10_000, 'delivery at the peer');
    assert.equal(delivered().length, n + 1);
    return delivered()[n]!;
  }

  async function mailauthResults(message: Buffer): Promise<string[]> {
    return (await mailauthDkim(message, dns.address)).map((f) => f.join(' ')).sort();
  }

  async function dkimpyResults(message: Buffer): Promise<{ ok: boolean; lines: string[] }> {
    const { ok, fields } = await dkimpyDkim(message, dns.address);
    return { ok, lines: fields.map((f) => `${f[0]} ${f[1]} ${f.at(-1)}`).sort() };
  }

  it('keys added while running sign the next message (rsa + ed25519); dkimpy and mailauth both pass, a changed body fails', { skip: dkimpyMissing() }, async () => {
    // Before any key exists: delivered unsigned.
    const unsigned = (await submit('before keys', 'No signature yet.\r\n')).toString('latin1');
    assert.doesNotMatch(unsigned, /^DKIM-Signature:/im);

    // `tern dkim keygen` while the server runs; the DNS gets the records.
    const rsa = await generateKey(srv.dataDir, 'tern.test', { algorithm: 'rsa', selector: 'rsa-e2e' });
    const ed = await generateKey(srv.dataDir, 'tern.test', { algorithm: 'ed25519', selector: 'ed-e2e' });
    dns.setZones({ ...zones, [rsa.dnsName]: { TXT: [rsa.dnsRecord] }, [ed.dnsName]: { TXT: [ed.dnsRecord] } });
    // The server looks at a domain's key directory at most once every RECHECK_MS (not per message): new keys sign from then on.
    await new Promise((r) => setTimeout(r, RECHECK_MS));

    const body = 'Hello Bob,\r\n\r\n..a line that starts with a dot\r\ntrailing spaces   \r\nBye.\r\n';
    const signed = await submit('signed end to end', body);
    const text = signed.toString('latin1');
    const sigs = text.split(/\r\n(?![ \t])/).filter((f) => /^DKIM-Signature:/i.test(f));
    assert.equal(sigs.length, 2, 'one signature per key');
    for (const s of sigs) {
      assert.match(s.replace(/\s+/g, ''), /;d=tern\.test;/);
      assert.match(s.replace(/\s+/g, ''), /;s=(rsa|ed)-e2e;/);
    }
    // The signatures come before our trace field; the fix-ups are covered.
    assert.match(text, /^DKIM-Signature:[\s\S]*\r\nDKIM-Signature:[\s\S]*\r\nDate: [^\r]+\r\nMessage-ID: <[^>]+@mx\.tern\.test>\r\nReceived: from client\.test/);
    assert.match(text, /with ESMTPSA id [\s\S]*\(authenticated as alice@tern\.test\)/);
    assert.ok(text.endsWith('\r\n\r\nHello Bob,\r\n\r\n.a line that starts with a dot\r\ntrailing spaces   \r\nBye.\r\n'), 'body delivered as sent (dot-unstuffed)');
    assert.ok(!text.includes(ALICE.password) && !text.includes(b64(ALICE.password)), 'no password in the delivered message');

    const PASS = ['ed25519-sha256 tern.test pass', 'rsa-sha256 tern.test pass'];
    assert.deepEqual(await mailauthResults(signed), PASS);
    assert.deepEqual(await dkimpyResults(signed), { ok: true, lines: PASS });

    const tampered = Buffer.from(text.replace('Hello Bob,', 'Hello Eve,'), 'latin1');
    assert.notEqual(tampered.toString('latin1'), text);
    const FAIL = ['ed25519-sha256 tern.test fail', 'rsa-sha256 tern.test fail'];
    assert.deepEqual(await mailauthResults(tampered), FAIL);
    assert.deepEqual(await dkimpyResults(tampered), { ok: false, lines: FAIL });
  });
});
