// SMTP smuggling (CVE-2023-51764 and friends) end to end: a fake end-of-data
// inside the content must never end the message, so the "commands" after it
// are never run. Only <CRLF>.<CRLF> ends DATA (RFC 5321 §4.1.1.4); content
// with a bare CR, bare LF or NUL is refused after the real final dot, with
// exactly one reply, and the session stays in sync.
// Also: bare CR / LF in command lines (RFC 5321 §2.3.8).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, expectReplies, expectSilence, queuedAs, waitQueueEmpty, mailboxContents, expectMailbox } from './smtp-kit.ts';

const SMUGGLED = 'MAIL FROM:<evil@x>\r\nRCPT TO:<bob@tern.test>\r\nDATA\r\nsmuggled\r\n';

const VARIANTS: { name: string; fake: string; reply: RegExp }[] = [
  { name: 'LF . LF', fake: '\n.\n', reply: /^550 5\.6\.\d+ / },
  { name: 'LF . CRLF', fake: '\n.\r\n', reply: /^550 5\.6\.\d+ / },
  { name: 'CR . CR', fake: '\r.\r', reply: /^550 5\.6\.\d+ / },
  { name: 'CRLF . LF', fake: '\r\n.\n', reply: /^550 5\.6\.\d+ / },
  { name: 'CR . CRLF', fake: '\r.\r\n', reply: /^550 5\.6\.\d+ / },
  { name: 'CRLF NUL . CRLF', fake: '\r\n\x00.\r\n', reply: /^550 5\.6\.0 / },
  { name: 'CRLF . CR', fake: '\r\n.\r', reply: /^550 5\.6\.\d+ / },
  { name: 'CRLF . NUL CRLF', fake: '\r\n.\x00\r\n', reply: /^550 5\.6\.0 / },
];

describe('SMTP smuggling', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  for (const v of VARIANTS) {
    it(`${v.name}: one rejection, nothing smuggled, session usable`, async () => {
      const c = await open(srv.port('smtp'));
      try {
        await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
        await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
        await expectCmd(c, 'DATA', /^354 /);
        c.send(`Subject: smuggle\r\n\r\nbefore${v.fake}${SMUGGLED}\r\n.\r\n`);
        await expectReplies(c, v.reply);
        await expectSilence(c);
        await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
      } finally {
        c.close();
      }
    });
  }

  it('the same payloads split at every offset of the fake terminator are still refused', async () => {
    const c = await open(srv.port('smtp'));
    try {
      for (const v of VARIANTS) {
        const payload = `Subject: split\r\n\r\nx${v.fake}${SMUGGLED}\r\n.\r\n`;
        const from = payload.indexOf(v.fake);
        for (let cut = from; cut <= from + v.fake.length; cut++) {
          await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
          await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
          await expectCmd(c, 'DATA', /^354 /);
          c.send(payload.slice(0, cut));
          await new Promise((r) => setImmediate(r));
          c.send(payload.slice(cut));
          await expectReplies(c, v.reply);
        }
      }
      await expectSilence(c);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('nothing was delivered: no smuggled message for bob, no refused message for alice', async () => {
    await waitQueueEmpty(srv.dataDir);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(mailboxContents(srv.dataDir, 'tern.test', 'bob'), []);
    assert.deepEqual(mailboxContents(srv.dataDir, 'tern.test', 'alice'), []);
  });

  it('a clean message afterwards on the same server is delivered normally', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      // Lines that merely look like the variants once properly stuffed/escaped.
      c.send('Subject: clean\r\n\r\n..\r\n.. \r\n.MAIL\r\n.\r\n');
      queuedAs(await c.reply());
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
      assert.ok(msg!.endsWith('Subject: clean\r\n\r\n.\r\n. \r\nMAIL\r\n'));
    } finally {
      c.close();
    }
  });
});

describe('Bare CR / LF in command lines', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  const CASES: { name: string; send: string; replies: RegExp[] }[] = [
    { name: 'bare LF ends a command → 500 5.5.2, the next line still works', send: 'NOOP\nNOOP\r\n', replies: [/^500 5\.5\.2 /, /^250 2\.0\.0 /] },
    { name: 'bare CR inside a command → 500 5.5.2', send: 'NO\rOP\r\nNOOP\r\n', replies: [/^500 5\.5\.2 /, /^250 2\.0\.0 /] },
    { name: 'bare CR before LF-less CRLF → 500 5.5.2', send: 'NOOP\r\rNOOP\r\n', replies: [/^500 5\.5\.2 /] },
    {
      name: 'LF-terminated MAIL is not run: the following RCPT gets 503',
      send: 'MAIL FROM:<sender@client.test>\nRCPT TO:<alice@tern.test>\r\n',
      replies: [/^500 5\.5\.2 /, /^503 5\.5\.1 /],
    },
    {
      name: 'a CR-split command is not run as two commands',
      send: 'RSET\rMAIL FROM:<sender@client.test>\r\nRCPT TO:<alice@tern.test>\r\n',
      replies: [/^500 5\.5\.2 /, /^503 5\.5\.1 /],
    },
  ];

  for (const t of CASES) {
    it(t.name, async () => {
      const c = await open(srv.port('smtp'));
      try {
        c.send(t.send);
        await expectReplies(c, ...t.replies);
        await expectSilence(c);
        await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
      } finally {
        c.close();
      }
    });
  }
});
