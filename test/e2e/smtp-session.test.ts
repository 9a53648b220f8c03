// The RFC 5321 session against a real Tern over real sockets: a table of
// command sequences with their exact replies (code + enhanced status), then
// pipelining, DATA, BDAT, aliases and graceful shutdown.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, RawClient, type TestServer } from '../helpers/server.ts';
import {
  open, expectCmd, expectReplies, expectSilence, queuedAs, sendMail, readEnvelope, queuedIds,
  expectMailbox, mailboxContents, connectFrom, type Role,
} from './smtp-kit.ts';

/** One step of a table row: a command and the patterns its reply must match, or "the server closes". */
type Step = { cmd: string; reply: RegExp[] } | { closed: true };

interface Row {
  name: string;
  role?: Role;
  /** Send EHLO (the default) before the steps; false to start right after the greeting. */
  ehlo?: boolean;
  steps: Step[];
}

const s = (cmd: string, ...reply: RegExp[]): Step => ({ cmd, reply });
const closed: Step = { closed: true };

const MAIL = 'MAIL FROM:<sender@client.test>';
const RCPT = 'RCPT TO:<alice@tern.test>';
const OK_MAIL = /^250 2\.1\.0 /;
const OK_RCPT = /^250 2\.1\.5 /;

// Every EHLO keyword we advertise, as its own line of the multi-line 250.
const EHLO_KEYWORDS = ['PIPELINING', 'SIZE 26214400', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'DSN'].map(
  (k) => new RegExp(`^250[- ]${k}$`, 'm'),
);

const TABLE: Row[] = [
  { name: 'greeting is 220 and NOOP works before EHLO', ehlo: false, steps: [s('NOOP', /^250 2\.0\.0 /)] },
  {
    name: 'EHLO lists the extensions and STARTTLS (smtp)',
    ehlo: false,
    steps: [s('EHLO client.test', /^250-mx\.tern\.test Hello client\.test \[127\.0\.0\.1\]$/m, ...EHLO_KEYWORDS, /^250[- ]STARTTLS$/m, /^250 HELP$/m)],
  },
  {
    name: 'EHLO lists STARTTLS on submission too',
    role: 'submission',
    ehlo: false,
    steps: [s('EHLO client.test', ...EHLO_KEYWORDS, /^250[- ]STARTTLS$/m)],
  },
  { name: 'HELO gives a single-line 250', ehlo: false, steps: [s('HELO client.test', /^250 mx\.tern\.test$/)] },
  { name: 'HELO/EHLO without a name → 501 5.5.4', ehlo: false, steps: [s('HELO', /^501 5\.5\.4 /), s('EHLO', /^501 5\.5\.4 /)] },
  { name: 'MAIL before EHLO → 503 5.5.1', ehlo: false, steps: [s(MAIL, /^503 5\.5\.1 /)] },
  { name: 'RCPT before MAIL → 503 5.5.1', steps: [s(RCPT, /^503 5\.5\.1 /)] },
  { name: 'DATA before MAIL → 503 5.5.1', steps: [s('DATA', /^503 5\.5\.1 /)] },
  { name: 'DATA before any accepted RCPT → 554 5.5.1', steps: [s(MAIL, OK_MAIL), s('DATA', /^554 5\.5\.1 /)] },
  {
    name: 'DATA after only rejected RCPTs → 554 5.5.1',
    steps: [s(MAIL, OK_MAIL), s('RCPT TO:<nobody@tern.test>', /^550 5\.1\.1 /), s('DATA', /^554 5\.5\.1 /)],
  },
  { name: 'nested MAIL → 503 5.5.1', steps: [s(MAIL, OK_MAIL), s(MAIL, /^503 5\.5\.1 /)] },
  {
    name: 'MAIL/RCPT syntax errors → 501 5.5.4 / 5.1.x',
    steps: [
      s('MAIL FROM sender@client.test', /^501 5\.5\.4 /),
      s('MAIL FROM:sender@client.test', /^501 5\.5\.4 /),
      s('MAIL FROM:<sender@client.test', /^501 5\.5\.4 /),
      s('MAIL FROM:<sender>', /^501 5\.1\.3 /),
      s('MAIL FROM:<sender@bad..domain>', /^501 5\.1\.2 /),
      s('MAIL FROM:<sender@client.test>x', /^501 5\.5\.4 /),
      s(MAIL, OK_MAIL),
      s('RCPT TO:<>', /^501 5\.1\.3 /),
      s('RCPT TO alice@tern.test', /^501 5\.5\.4 /),
      s('RCPT TO:<alice@tern.test> NOTIFY=SOMETIMES', /^501 5\.5\.4 /),
    ],
  },
  { name: 'null reverse-path is accepted', steps: [s('MAIL FROM:<>', OK_MAIL), s(RCPT, OK_RCPT)] },
  { name: 'unknown command → 500 5.5.2', steps: [s('FOO bar', /^500 5\.5\.2 /), s('NOOP', /^250 2\.0\.0 /)] },
  { name: 'EXPN → 502 5.5.1', steps: [s('EXPN team', /^502 5\.5\.1 /)] },
  { name: 'NOOP → 250 2.0.0', steps: [s('NOOP', /^250 2\.0\.0 /), s('NOOP with an argument', /^250 2\.0\.0 /)] },
  {
    name: 'RSET → 250 2.0.0 and forgets the transaction',
    steps: [s(MAIL, OK_MAIL), s('RSET', /^250 2\.0\.0 /), s(RCPT, /^503 5\.5\.1 /), s(MAIL, OK_MAIL)],
  },
  { name: 'RSET with an argument → 501 5.5.4', steps: [s('RSET now', /^501 5\.5\.4 /)] },
  { name: 'VRFY → 252 2.5.0', steps: [s('VRFY alice', /^252 2\.5\.0 /), s('VRFY', /^501 5\.5\.4 /)] },
  { name: 'HELP → 214', steps: [s('HELP', /^214-2\.0\.0 /, /^214 2\.0\.0 /m)] },
  { name: 'QUIT → 221 and close', steps: [s('QUIT', /^221 2\.0\.0 /), closed] },
  { name: 'QUIT before EHLO → 221 and close', ehlo: false, steps: [s('QUIT', /^221 2\.0\.0 /), closed] },
  {
    name: 'unknown MAIL/RCPT parameter → 555 5.5.4',
    steps: [s(`${MAIL} FOO=bar`, /^555 5\.5\.4 /), s(MAIL, OK_MAIL), s(`${RCPT} FOO`, /^555 5\.5\.4 /), s(`${RCPT}`, OK_RCPT)],
  },
  {
    name: 'parameters after HELO → 555 5.5.4',
    ehlo: false,
    steps: [s('HELO client.test', /^250 /), s(`${MAIL} SIZE=100`, /^555 5\.5\.4 /), s(MAIL, OK_MAIL), s(`${RCPT} NOTIFY=NEVER`, /^555 5\.5\.4 /)],
  },
  {
    name: 'BODY=8BITMIME accepted, BODY=BINARYMIME → 555 5.5.4',
    steps: [s(`${MAIL} BODY=BINARYMIME`, /^555 5\.5\.4 /), s(`${MAIL} BODY=8BITMIME`, OK_MAIL)],
  },
  {
    name: 'SIZE over the limit at MAIL → 552 5.3.4; at the limit accepted',
    steps: [s(`${MAIL} SIZE=26214401`, /^552 5\.3\.4 /), s(`${MAIL} SIZE=26214400`, OK_MAIL)],
  },
  {
    name: 'non-ASCII sender without SMTPUTF8 → 553 5.6.7; with SMTPUTF8 accepted',
    steps: [s('MAIL FROM:<jösé@client.test>', /^553 5\.6\.7 /), s('MAIL FROM:<jösé@clïent.test> SMTPUTF8', OK_MAIL)],
  },
  {
    name: 'non-ASCII recipient without SMTPUTF8 → 553 5.6.7',
    steps: [s(MAIL, OK_MAIL), s('RCPT TO:<jösé@tern.test>', /^553 5\.6\.7 /)],
  },
  {
    name: 'RCPT TO:<postmaster> without a domain is accepted (any case)',
    steps: [s(MAIL, OK_MAIL), s('RCPT TO:<postmaster>', OK_RCPT), s('RCPT TO:<PostMaster>', OK_RCPT)],
  },
  {
    name: 'DSN parameters accepted',
    steps: [
      s(`${MAIL} RET=HDRS ENVID=QQ+2Bid`, OK_MAIL),
      s(`${RCPT} NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40tern.test`, OK_RCPT),
      s('RCPT TO:<bob@tern.test> NOTIFY=NEVER', OK_RCPT),
    ],
  },
  { name: 'unknown local user → 550 5.1.1', steps: [s(MAIL, OK_MAIL), s('RCPT TO:<nobody@tern.test>', /^550 5\.1\.1 /)] },
  { name: 'AUTH is not offered → 502 5.5.1', steps: [s('AUTH PLAIN', /^502 5\.5\.1 /)] },
  {
    name: 'EHLO in the middle of a transaction resets it (RFC 5321 §4.1.4)',
    steps: [s(MAIL, OK_MAIL), s(RCPT, OK_RCPT), s('EHLO again.test', /^250-mx\.tern\.test Hello again\.test/), s(RCPT, /^503 5\.5\.1 /), s(MAIL, OK_MAIL)],
  },
  { name: 'an empty command line → 500 5.5.2', steps: [s('', /^500 5\.5\.2 /)] },
  { name: 'verbs are case-insensitive', ehlo: false, steps: [s('ehlo client.test', /^250-/), s('mail from:<sender@client.test>', OK_MAIL), s('rcpt to:<alice@tern.test>', OK_RCPT)] },
];

describe('SMTP session: command table', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  for (const row of TABLE) {
    it(row.name, async () => {
      const c = await open(srv.port(row.role ?? 'smtp'), { ehlo: row.ehlo === false ? false : 'client.test' });
      try {
        for (const step of row.steps) {
          if ('closed' in step) await c.waitClosed();
          else await expectCmd(c, step.cmd, ...step.reply);
        }
      } finally {
        c.close();
      }
    });
  }

  it('an HTTP request instead of SMTP: the connection is closed without a reply', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      c.send('GET / HTTP/1.1\r\nHost: mx.tern.test\r\n\r\n');
      await c.waitClosed();
      assert.equal(c.pending, '');
    } finally {
      c.close();
    }
  });

  it('VRFY does not disclose: the same reply for existing and unknown users', async () => {
    const c = await open(srv.port('smtp'));
    try {
      const known = await expectCmd(c, 'VRFY alice@tern.test', /^252 2\.5\.0 /);
      const unknown = await expectCmd(c, 'VRFY nobody@tern.test', /^252 2\.5\.0 /);
      const alias = await expectCmd(c, 'VRFY postmaster', /^252 2\.5\.0 /);
      assert.equal(unknown, known);
      assert.equal(alias, known);
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: DSN parameters are stored in the queue file', () => {
  let srv: TestServer;
  before(async () => {
    // A remote recipient from a trusted client stays queued (no outbound transport yet), so its file can be read.
    srv = await startServer({ trustedNetworks: ['127.0.0.0/8'] });
  });
  after(() => srv.stop());

  it('RET, ENVID, NOTIFY and ORCPT', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test> RET=HDRS ENVID=QQ+2Bid', /^250 2\.1\.0 /);
      await expectCmd(c, 'RCPT TO:<someone@remote.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;orig+40remote.test', /^250 2\.1\.5 /);
      await expectCmd(c, 'RCPT TO:<other@remote.test> NOTIFY=NEVER', /^250 2\.1\.5 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('Subject: dsn\r\n\r\nbody\r\n.\r\n');
      const id = queuedAs(await c.reply());
      assert.ok(queuedIds(srv.dataDir).includes(id));
      const env = readEnvelope(srv.dataDir, id);
      assert.equal(env.id, id);
      assert.equal(env.sender, 'sender@client.test');
      assert.equal(env.ret, 'HDRS');
      assert.equal(env.envid, 'QQ+id');
      assert.equal(env.recipients.length, 2);
      const [a, b] = env.recipients;
      assert.equal(a!.address, 'someone@remote.test');
      assert.deepEqual(a!.notify, ['SUCCESS', 'DELAY']);
      assert.deepEqual(a!.orcpt, { type: 'rfc822', address: 'orig@remote.test' });
      assert.equal(a!.mailbox, undefined);
      assert.equal(b!.address, 'other@remote.test');
      assert.deepEqual(b!.notify, []);
      assert.equal(b!.orcpt, undefined);
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: pipelining (RFC 2920)', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  it('MAIL, RCPT×3 (one unknown), DATA in one write → replies in order', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send(
        'MAIL FROM:<sender@client.test>\r\n' +
          'RCPT TO:<alice@tern.test>\r\n' +
          'RCPT TO:<nobody@tern.test>\r\n' +
          'RCPT TO:<bob@tern.test>\r\n' +
          'DATA\r\n',
      );
      await expectReplies(c, /^250 2\.1\.0 /, /^250 2\.1\.5 /, /^550 5\.1\.1 /, /^250 2\.1\.5 /, /^354 /);
      c.send('Subject: pipelined\r\n\r\nhello\r\n.\r\n');
      queuedAs(await c.reply());
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
      await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
      await expectMailbox(srv.dataDir, 'tern.test', 'bob', 1);
    } finally {
      c.close();
    }
  });

  it('a whole transaction, content and QUIT in one write', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send(
        'RSET\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<carol@catch.test>\r\nDATA\r\n' +
          'Subject: eager\r\n\r\nall at once\r\n.\r\nNOOP\r\nQUIT\r\n',
      );
      const replies = await expectReplies(c, /^250 2\.0\.0 /, /^250 2\.1\.0 /, /^250 2\.1\.5 /, /^354 /, /^250 2\.0\.0 .*queued as/, /^250 2\.0\.0 /, /^221 2\.0\.0 /);
      queuedAs(replies[4]!);
      await c.waitClosed();
      const [msg] = await expectMailbox(srv.dataDir, 'catch.test', 'carol', 1);
      assert.match(msg!, /\r\n\r\nall at once\r\n$/);
    } finally {
      c.close();
    }
  });

  it('two transactions back to back in one write', async () => {
    const c = await open(srv.port('smtp'));
    try {
      const tx = (n: number): string =>
        `MAIL FROM:<sender@client.test>\r\nRCPT TO:<bob+p${n}@tern.test>\r\nDATA\r\nSubject: pipe ${n}\r\n\r\nmessage ${n}\r\n.\r\n`;
      c.send(tx(1) + tx(2));
      const r = await expectReplies(c, /^250 2\.1\.0/, /^250 2\.1\.5/, /^354 /, /^250 2\.0\.0 /, /^250 2\.1\.0/, /^250 2\.1\.5/, /^354 /, /^250 2\.0\.0 /);
      assert.notEqual(queuedAs(r[3]!), queuedAs(r[7]!));
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: DATA', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  it('delivers with dot-unstuffing and replies "queued as <ID>"', async () => {
    const c = await open(srv.port('smtp'));
    try {
      const body = 'Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nno dot. here\r\n. space\r\n';
      const id = await sendMail(c, 'sender@client.test', ['alice@tern.test'], body);
      assert.match(id, /^[A-Za-z0-9]+$/);
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
      // Our trace header names the queue id; the body arrives unstuffed.
      assert.match(msg!, new RegExp(`^Return-Path: <sender@client\\.test>\\r\\nDelivered-To: alice@tern\\.test\\r\\nReceived: from client\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby mx\\.tern\\.test \\(Tern\\) with ESMTP id ${id}\\r\\n`));
      assert.ok(msg!.endsWith('Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nno dot. here\r\n space\r\n'), JSON.stringify(msg));
    } finally {
      c.close();
    }
  });

  it('content sent one byte per write arrives intact', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      const body = 'Subject: slow\r\n\r\n..dot\r\nline\r\n.\r\n';
      for (const ch of body) {
        c.send(ch);
        await new Promise((r) => setImmediate(r));
      }
      queuedAs(await c.reply());
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'bob', 1);
      assert.ok(msg!.endsWith('Subject: slow\r\n\r\n.dot\r\nline\r\n'));
    } finally {
      c.close();
    }
  });

  it('an empty message (just the final dot) is accepted', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<>', /^250 /);
      await expectCmd(c, 'RCPT TO:<empty@catch.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('.\r\n');
      queuedAs(await c.reply());
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('DATA with an argument → 501 5.5.4, the transaction survives', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<nobody+x@catch.test>', /^250 /);
      await expectCmd(c, 'DATA now', /^501 5\.5\.4 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('x\r\n.\r\n');
      queuedAs(await c.reply());
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: BDAT (RFC 3030)', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  const begin = async (c: RawClient, rcpt: string): Promise<void> => {
    await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 2\.1\.0/);
    await expectCmd(c, `RCPT TO:<${rcpt}>`, /^250 2\.1\.5/);
  };

  it('chunks + LAST are delivered byte for byte (dots at line starts, 8-bit bytes)', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await begin(c, 'alice@tern.test');
      const part1 = Buffer.from('Subject: chunks\r\n\r\n.leading dot stays\r\n.\r\n..\r\n', 'latin1');
      const part2 = Buffer.concat([Buffer.from('8bit: '), Buffer.from([0x80, 0xc3, 0xa9, 0xfe, 0xff]), Buffer.from('\r\n.\r\nend\r\n')]);
      c.send(Buffer.concat([Buffer.from(`BDAT ${part1.length}\r\n`), part1]));
      await expectReplies(c, new RegExp(`^250 2\\.0\\.0 ${part1.length} octets received`));
      c.send(Buffer.concat([Buffer.from(`BDAT ${part2.length} LAST\r\n`), part2]));
      queuedAs(await c.reply());
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
      assert.ok(msg!.endsWith(Buffer.concat([part1, part2]).toString('latin1')), JSON.stringify(msg));
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('BDAT 0 LAST ends a chunked message; BDAT 0 LAST alone is an empty message', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await begin(c, 'bob@tern.test');
      c.send('BDAT 7\r\nhello\r\n');
      await expectReplies(c, /^250 2\.0\.0 7 octets/);
      await expectCmd(c, 'BDAT 0 LAST', /^250 2\.0\.0 .*queued as/);
      await begin(c, 'bob@tern.test');
      await expectCmd(c, 'BDAT 0 LAST', /^250 2\.0\.0 .*queued as/);
      const msgs = await expectMailbox(srv.dataDir, 'tern.test', 'bob', 2);
      assert.ok(msgs.some((m) => m.endsWith('\r\n\r\nhello\r\n') || m.endsWith('\r\nhello\r\n')));
    } finally {
      c.close();
    }
  });

  it('a chunk without a final CRLF gets one added', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await begin(c, 'nocrlf@catch.test');
      c.send('BDAT 21 LAST\r\nSubject: x\r\n\r\nno crlf');
      queuedAs(await c.reply());
      const [msg] = await expectMailbox(srv.dataDir, 'catch.test', 'carol', 1);
      assert.ok(msg!.endsWith('Subject: x\r\n\r\nno crlf\r\n'));
    } finally {
      c.close();
    }
  });

  it('pipelined: BDAT chunks, BDAT 0 LAST and the next transaction in one write', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send(
        'MAIL FROM:<sender@client.test>\r\nRCPT TO:<pipe1@catch.test>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\n' +
          'MAIL FROM:<sender@client.test>\r\nRCPT TO:<pipe2@catch.test>\r\nBDAT 7 LAST\r\nsecond\n' +
          'NOOP\r\n',
      );
      // The second message has a bare LF: refused, but the stream stays in sync.
      await expectReplies(
        c,
        /^250 2\.1\.0/,
        /^250 2\.1\.5/,
        /^250 2\.0\.0 5 octets/,
        /^250 2\.0\.0 .*queued as/,
        /^250 2\.1\.0/,
        /^250 2\.1\.5/,
        /^550 5\.6\.11 /,
        /^250 2\.0\.0 OK/,
      );
    } finally {
      c.close();
    }
  });

  it('BDAT without MAIL consumes its chunk, replies 503, and the next command works', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send('BDAT 12\r\nNOOP\r\nNOOP\r\n');
      await expectReplies(c, /^503 5\.5\.1 /);
      await expectSilence(c);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
      // Also when the chunk arrives in a later write.
      c.send('BDAT 4 LAST\r\n');
      await new Promise((r) => setTimeout(r, 50));
      c.send('RSET');
      await expectReplies(c, /^503 5\.5\.1 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('BDAT after HELO → 503 (chunk swallowed)', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      await expectCmd(c, 'HELO client.test', /^250 /);
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
      c.send('BDAT 3 LAST\r\nabc');
      await expectReplies(c, /^503 5\.5\.1 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('DATA after BDAT → 503 5.5.1', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await begin(c, 'alice@tern.test');
      c.send('BDAT 3\r\nabc');
      await expectReplies(c, /^250 2\.0\.0 3 octets/);
      await expectCmd(c, 'DATA', /^503 5\.5\.1 /);
      await expectCmd(c, 'RSET', /^250 2\.0\.0 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('BDAT with a bad size → 501 and close (the stream cannot be resynchronized)', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await begin(c, 'alice@tern.test');
      await expectCmd(c, 'BDAT many', /^501 5\.5\.4 /);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: aliases, plus-addressing, catch-all', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  // Each test uses mailboxes no other test in this block touches.
  it('team@ delivers one copy to alice and one to bob; alice+tag@ goes to alice', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await sendMail(c, 'sender@client.test', ['team@tern.test'], 'Subject: team\r\n\r\nhi team\r\n');
      await sendMail(c, 'sender@client.test', ['alice+tag@tern.test'], 'Subject: tagged\r\n\r\nhi alice\r\n');
      const alice = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 2);
      const bob = await expectMailbox(srv.dataDir, 'tern.test', 'bob', 1);
      assert.ok(alice.some((m) => m.includes('Subject: team')));
      assert.ok(alice.some((m) => m.includes('Subject: tagged') && m.includes('for <alice+tag@tern.test>')));
      assert.ok(bob[0]!.includes('Subject: team'));
    } finally {
      c.close();
    }
  });

  it('catch-all: unknown names in catch.test go to carol, plus-addressing folds', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await sendMail(c, 'sender@client.test', ['whoever@catch.test', 'carol+x@catch.test', 'CAROL@CATCH.TEST'], 'Subject: catch\r\n\r\nx\r\n');
      // Three RCPTs, all resolving to carol@catch.test: one copy.
      const [msg] = await expectMailbox(srv.dataDir, 'catch.test', 'carol', 1);
      assert.match(msg!, /Delivered-To: carol@catch\.test/);
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: alias and catch-all targets that are full addresses', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({
      domains: [
        { name: 'tern.test', mailboxes: ['alice', 'bob'], aliases: { out: ['Some.One@remote.test', 'alice'] } },
        // Catch-alls pointing at another local domain and at a remote address.
        { name: 'catch.test', mailboxes: ['carol'], catchAll: 'bob@tern.test' },
        { name: 'fwd.test', mailboxes: ['dave'], catchAll: 'Ext.User@remote.test' },
      ],
    });
  });
  after(() => srv.stop());

  it('a catch-all "user@other-local-domain" delivers there', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await sendMail(c, 'sender@client.test', ['anyone@catch.test'], 'Subject: catch to bob\r\n\r\nx\r\n');
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'bob', 1);
      assert.match(msg!, /Delivered-To: bob@tern\.test/);
    } finally {
      c.close();
    }
  });

  it('a catch-all or alias to a remote address forwards it with the local part\'s case kept (RFC 5321 §2.4)', async () => {
    const c = await open(srv.port('smtp'));
    try {
      const id = await sendMail(c, 'sender@client.test', ['anyone@fwd.test', 'out@tern.test'], 'Subject: forward\r\n\r\nx\r\n');
      const env = readEnvelope(srv.dataDir, id);
      assert.deepEqual(
        env.recipients.map((r) => [r.address, r.original, r.mailbox === undefined ? 'remote' : 'local']),
        [
          ['Ext.User@remote.test', 'anyone@fwd.test', 'remote'],
          ['Some.One@remote.test', 'out@tern.test', 'remote'],
          ['alice@tern.test', 'out@tern.test', 'local'],
        ],
      );
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: duplicate recipients', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  it('the same address twice (and via an alias) delivers once', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await sendMail(c, 'sender@client.test', ['alice@tern.test', 'alice@tern.test', 'Alice@Tern.Test', 'postmaster@tern.test'], 'Subject: dup\r\n\r\nonce\r\n');
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
      // One envelope recipient, so the Received header names it (RFC 5321 §4.4 "for").
      assert.match(msg!, /\r\n\tfor <alice@tern\.test>;/);
      assert.equal(mailboxContents(srv.dataDir, 'tern.test', 'bob').length, 0);
    } finally {
      c.close();
    }
  });
});

describe('SMTP session: graceful shutdown', () => {
  it('stop() does not wait for connections that have no session: refused peers ignoring our FIN, idle TLS handshakes', async () => {
    const srv = await startServer({ limits: { connectionsPerIp: 1 } });
    const clients: RawClient[] = [];
    try {
      clients.push(await open(srv.port('smtp')));
      const refused = await RawClient.connect(srv.port('smtp'));
      clients.push(refused);
      refused.socket.allowHalfOpen = true; // keeps its side open after our FIN
      assert.match(await refused.reply(), /^421 4\.7\.0 /);
      // Refused too (limit 1), but from another address a TLS port client may sit idle before its handshake.
      const idleTls = await connectFrom(srv.port('submissions'), '127.0.0.2');
      clients.push(idleTls);
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      await srv.tern.stop(2000);
      assert.ok(Date.now() - t0 < 1500, `stop took ${Date.now() - t0} ms`);
    } finally {
      for (const c of clients) c.close();
      await srv.stop();
    }
  });


  it('an idle client gets 421 4.3.2; a client in DATA finishes its message first', async () => {
    const srv = await startServer();
    try {
      const idle = await open(srv.port('smtp'));
      const busy = await open(srv.port('smtp'));
      await expectCmd(busy, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(busy, 'RCPT TO:<alice@tern.test>', /^250 /);
      await expectCmd(busy, 'DATA', /^354 /);
      busy.send('Subject: late\r\n\r\nfirst half\r\n');
      const stopping = srv.tern.stop(5000);
      assert.match(await idle.reply(), /^421 4\.3\.2 /);
      await idle.waitClosed();
      busy.send('second half\r\n.\r\n');
      queuedAs(await busy.reply());
      assert.match(await busy.reply(), /^421 4\.3\.2 /);
      await busy.waitClosed();
      await stopping;
      idle.close();
      busy.close();
    } finally {
      await srv.stop();
    }
  });
});
