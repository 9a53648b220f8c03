// The submission sender check against a real server (issue 11, break 6):
// every mailbox of From:, Sender:, Resent-From: and Resent-Sender: is one the
// user may use, however long or however written the field — read by the one
// address-list parser (src/smtp/address-list.ts) — and the DKIM signing
// domain comes from the same parser. Alice may send as '@tern.test'.
//
// The tests marked "bypass" were accepted (250) before this fix.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ALICE, RawClient, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, expectMailbox, mailboxContents, queuedIds, waitQueueEmpty } from './smtp-kit.ts';
import { generateKey } from '../../src/intake/dkim.ts';
import { MAX_ORIGINATOR_BYTES } from '../../src/intake/headers.ts';

const plain = (user: string, password: string): string => Buffer.from(`\0${user}\0${password}`).toString('base64');

/** AUTH PLAIN over STARTTLS on the submission port. */
async function authed(port: number): Promise<RawClient> {
  const c = await open(port);
  await expectCmd(c, 'STARTTLS', /^220 /);
  await c.starttls();
  await expectCmd(c, 'EHLO client.test', /^250 /m);
  await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 2\.7\.0 /);
  return c;
}

let serial = 0;

/** One transaction from alice to bob; returns the reply to the final dot and the message's Subject. `head` is the header section without its blank line. */
async function submit(c: RawClient, head: string): Promise<{ reply: string; subject: string }> {
  const subject = `sender check ${++serial}`;
  await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 2\.1\.0 /);
  await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 2\.1\.5 /);
  await expectCmd(c, 'DATA', /^354 /);
  c.send(`${head}\r\nTo: bob@tern.test\r\nSubject: ${subject}\r\n\r\nbody\r\n.\r\n`);
  return { reply: await c.reply(15_000), subject };
}

/** 2,100 empty folded list elements (obs-addr-list, RFC 5322 §4.4): 10,500 octets, past the old 4,096-octet cut. */
const PADDING = ',\r\n '.repeat(2100);

describe('submission sender check: every originator address, however written', () => {
  let srv: TestServer;
  let c: RawClient;
  /** Subjects of the messages accepted for bob, to compare with his mailbox at the end. */
  const accepted: string[] = [];

  before(async () => {
    srv = await startServer();
    c = await authed(srv.port('submission'));
  });
  after(async () => {
    c?.close();
    await srv?.stop();
  });

  async function refused(head: string, reply: RegExp): Promise<void> {
    assert.match((await submit(c, head)).reply, reply, head.slice(0, 200));
  }
  async function acceptedOk(head: string): Promise<void> {
    const r = await submit(c, head);
    assert.match(r.reply, /^250 2\.0\.0 /, head.slice(0, 200));
    accepted.push(r.subject);
  }

  it('bypass: a second From: mailbox after 10,500 octets of folded empty list elements → 550 5.7.1', async () => {
    await refused(`From: alice@tern.test${PADDING}Bob <bob@evil.test>`, /^550 5\.7\.1 Sender address <bob@evil\.test> in From: is not yours to use$/);
    // The same length with an address she may use is read to the end and accepted.
    await acceptedOk(`From: alice@tern.test${PADDING}Carol <carol@tern.test>`);
  });

  it('bypass: Sender:, Resent-From:, Resent-Sender: of someone else → 550 5.7.1 naming the field', async () => {
    await refused('From: alice@tern.test\r\nSender: bob@evil.test', /^550 5\.7\.1 Sender address <bob@evil\.test> in Sender: is not yours to use$/);
    await refused('From: alice@tern.test\r\nResent-From: Bob <bob@evil.test>', /^550 5\.7\.1 Sender address <bob@evil\.test> in Resent-From: is not yours to use$/);
    await refused('From: alice@tern.test\r\nResent-Sender: bob@evil.test', /^550 5\.7\.1 Sender address <bob@evil\.test> in Resent-Sender: is not yours to use$/);
    await refused(`From: alice@tern.test\r\nResent-From: alice@tern.test${PADDING}bob@evil.test`, /^550 5\.7\.1 Sender address <bob@evil\.test> in Resent-From: /);
    // Her own addresses in all four are fine.
    await acceptedOk('From: alice@tern.test\r\nSender: Alice <alice@tern.test>\r\nResent-From: carol@tern.test\r\nResent-Sender: alice+x@tern.test');
  });

  it('bypass: a second From: field written "From<100 spaces>:" (obs-optional white space, RFC 5322 §4.5) → 550 5.7.1', async () => {
    await refused(`From: alice@tern.test\r\nFrom${' '.repeat(100)}: bob@evil.test`, /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    await refused('From: alice@tern.test\r\nfrom\t: bob@evil.test', /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    // Several From fields, all hers: accepted (every field is checked, none is required to be the only one).
    await acceptedOk('From: alice@tern.test\r\nFrom: carol@tern.test');
  });

  it('bypass: comments hide addresses, not the mailbox after them (nested comments, a quote inside a comment) → 550 5.7.1', async () => {
    await refused('From: (a (b) <alice@tern.test>) bob@evil.test', /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    await refused('From: alice@tern.test (") , bob@evil.test (")', /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    // An address inside a comment is not a mailbox.
    await acceptedOk('From: alice@tern.test (sent for bob@evil.test, <bob@evil.test>)');
  });

  it('bypass: a value no reader can take for sure → 554 5.6.0, not the first address it happens to see', async () => {
    await refused('From: Alice <alice@tern.test> <bob@evil.test>', /^554 5\.6\.0 Cannot read the addresses in From: /);
    await refused('From: =?utf-8?q?Bob_<bob@evil.test>?= <alice@tern.test>', /^554 5\.6\.0 Cannot read the addresses in From: /);
    await refused('From: alice@tern.test\r\nSender: "unterminated <alice@tern.test>', /^554 5\.6\.0 Cannot read the addresses in Sender: /);
  });

  it('quoted display names may hold "<other@x>" and commas; the mailbox is what counts', async () => {
    await acceptedOk('From: "Bob <bob@evil.test>, Mallory" <alice@tern.test>');
    await acceptedOk('From: "a \\" <bob@evil.test> \\\\" <alice@tern.test>');
    await refused('From: "Alice <alice@tern.test>, x" <bob@evil.test>', /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    // Encoded words (RFC 2047) are display names.
    await acceptedOk('From: =?utf-8?q?Bob_Smith?= <alice@tern.test>');
  });

  it('groups (RFC 6854): every member is checked; an empty group names no author', async () => {
    await refused('From: team: alice@tern.test, Bob <bob@evil.test>;', /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    await refused('From: alice@tern.test, "x: y": bob@evil.test;', /^550 5\.7\.1 Sender address <bob@evil\.test> in From: /);
    await acceptedOk('From: team: alice@tern.test, Carol <carol@tern.test>;');
    await refused('From: undisclosed-recipients:;', /^550 5\.7\.1 Message has no From: address$/);
  });

  it(`originator fields over ${MAX_ORIGINATOR_BYTES} octets together → 552 5.3.4, not checked in part`, async () => {
    // 25,000 folded empty elements keep 3 octets each (",", CR, and the fold's space): 75,000, every address hers.
    await refused(`From: alice@tern.test${',\r\n '.repeat(25_000)}carol@tern.test`, /^552 5\.3\.4 From:, Sender: and Resent- fields too long \(limit 65536 octets together\)$/);
    // The session goes on.
    await expectCmd(c, 'NOOP', /^250 /);
  });

  it('nothing refused was queued or delivered; everything accepted reached bob', async () => {
    await waitQueueEmpty(srv.dataDir);
    assert.deepEqual(queuedIds(srv.dataDir), []);
    const got = await expectMailbox(srv.dataDir, 'tern.test', 'bob', accepted.length);
    const subjects = got.map((m) => /^Subject: (.*)$/m.exec(m)?.[1]?.trimEnd());
    assert.deepEqual(subjects.sort(), [...accepted].sort());
  });
});

describe('DKIM signing domain from the same parser', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv?.stop());

  it("d= is the From: mailbox's domain, not a domain named in its comment or display name", async () => {
    await generateKey(srv.dataDir, 'tern.test', { algorithm: 'ed25519', selector: 'sc' });
    await generateKey(srv.dataDir, 'evil.test', { algorithm: 'ed25519', selector: 'sc' });
    const c = await authed(srv.port('submission'));
    try {
      // A nested comment holding an angle-addr: the old regex splitter took <x@evil.test> as the address.
      assert.match((await submit(c, 'From: (a (b) <x@evil.test>) "y@evil.test" <alice@tern.test>')).reply, /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
    const [m] = (await waitFor(() => {
      const got = mailboxContents(srv.dataDir, 'tern.test', 'bob');
      return got.length === 1 ? got : undefined;
    }, 10_000, 'delivery to bob'))!;
    const sig = /^DKIM-Signature:[^]*?(?=\r\n[^ \t])/m.exec(m!)?.[0].replace(/\s+/g, '');
    assert.ok(sig, 'signed');
    assert.match(sig, /;d=tern\.test;/);
  });
});
