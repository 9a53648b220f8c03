// Relay control end to end: an untrusted client (no AUTH, not in
// trustedNetworks) may only send to local recipients, however the address
// is dressed up (the classic open-relay tests: percent hack, source routes,
// quoted local parts, bang paths, address literals). Tricks aimed at a
// catch-all domain land in the local catch-all mailbox, never outside.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, queuedAs, queuedIds, readEnvelope, sendMail, expectMailbox, type Role } from './smtp-kit.ts';

const RELAY_TABLE: { rcpt: string; reply: RegExp; role?: Role }[] = [
  { rcpt: '<user@remote.test>', reply: /^554 5\.7\.1 / },
  { rcpt: '<user@REMOTE.TEST>', reply: /^554 5\.7\.1 / },
  { rcpt: '<user%remote.test@tern.test>', reply: /^550 5\.1\.1 / },
  { rcpt: '<@tern.test:user@remote.test>', reply: /^554 5\.7\.1 / },
  { rcpt: '<@tern.test,@mx.tern.test:user@remote.test>', reply: /^554 5\.7\.1 / },
  { rcpt: '<"user@remote.test"@tern.test>', reply: /^550 5\.1\.1 / },
  { rcpt: '<"user%remote.test"@tern.test>', reply: /^550 5\.1\.1 / },
  { rcpt: '<remote.test!user@tern.test>', reply: /^550 5\.1\.1 / },
  { rcpt: '<user@remote.test@tern.test>', reply: /^501 5\.1\.3 / },
  { rcpt: '<alice@tern.test.>', reply: /^501 5\.1\.2 / },
  { rcpt: '<alice@.tern.test>', reply: /^501 5\.1\.2 / },
  { rcpt: '<user@[192.0.2.1]>', reply: /^554 5\.7\.1 / },
  { rcpt: '<user@[127.0.0.1]>', reply: /^554 5\.7\.1 / },
  { rcpt: '<user@[IPv6:::1]>', reply: /^554 5\.7\.1 / },
  { rcpt: '<alice@[tern.test]>', reply: /^501 5\.1\.2 / },
  { rcpt: '<user@remote.test> ', reply: /^554 5\.7\.1 / },
  { rcpt: 'user@remote.test', reply: /^501 5\.5\.4 / },
];

describe('relay control: untrusted client', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  for (const row of RELAY_TABLE) {
    it(`RCPT TO:${row.rcpt}${row.role ? ` (${row.role})` : ''} → ${row.reply.source.slice(1, 12).replace(/\\/g, '')}`, async () => {
      const c = await open(srv.port(row.role ?? 'smtp'));
      try {
        await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
        await expectCmd(c, `RCPT TO:${row.rcpt}`, row.reply);
        // Nothing was accepted, so there is nothing to send.
        await expectCmd(c, 'DATA', /^554 5\.5\.1 /);
      } finally {
        c.close();
      }
    });
  }

  it('the submission port without AUTH: MAIL gets 530 5.7.0 (RFC 6409 §4.3), so nothing can be relayed', async () => {
    for (const role of ['submission', 'submissions'] as const) {
      const c = await open(srv.port(role), role === 'submissions' ? { tls: true } : {});
      try {
        await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^530 5\.7\.0 /);
        await expectCmd(c, 'RCPT TO:<user@remote.test>', /^503 5\.5\.1 /);
      } finally {
        c.close();
      }
    }
  });

  it('an alias that forwards outside is fine (the admin set it up), an untrusted RCPT to the outside is not', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<someone@remote.test>', /^554 5\.7\.1 /);
      await expectCmd(c, 'RCPT TO:<fwd@tern.test>', /^250 2\.1\.5 /);
    } finally {
      c.close();
    }
  });

  it('percent hack and bang path at the catch-all domain are delivered locally to carol', async () => {
    const c = await open(srv.port('smtp'));
    try {
      const ids = [
        await sendMail(c, 'sender@client.test', ['user%remote.test@catch.test'], 'Subject: percent\r\n\r\nx\r\n'),
        await sendMail(c, 'sender@client.test', ['remote.test!user@catch.test'], 'Subject: bang\r\n\r\nx\r\n'),
        await sendMail(c, 'sender@client.test', ['"user@remote.test"@catch.test'], 'Subject: quoted\r\n\r\nx\r\n'),
        await sendMail(c, 'sender@client.test', ['@catch.test:user%remote.test@catch.test'], 'Subject: route\r\n\r\nx\r\n'),
      ];
      assert.equal(new Set(ids).size, 4);
      // The queue drains completely: no copy is waiting for an outbound transport.
      const msgs = await expectMailbox(srv.dataDir, 'catch.test', 'carol', 4);
      for (const m of msgs) assert.match(m, /^Return-Path: <sender@client\.test>\r\nDelivered-To: carol@catch\.test\r\n/);
    } finally {
      c.close();
    }
  });
});

describe('relay control: trusted network', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ trustedNetworks: ['127.0.0.0/8'] });
  });
  after(() => srv.stop());

  it('a remote recipient gets 250 and the message stays queued for outbound delivery', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<user@remote.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'RCPT TO:<user@[192.0.2.1]>', /^250 2\.1\.5 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('Subject: out\r\n\r\nrelayed\r\n.\r\n');
      const id = queuedAs(await c.reply());
      await sleep(200);
      assert.ok(queuedIds(srv.dataDir).includes(id), 'still in the queue');
      const env = readEnvelope(srv.dataDir, id);
      assert.deepEqual(
        env.recipients.map((r) => [r.address, r.mailbox]),
        [['user@remote.test', undefined], ['user@[192.0.2.1]', undefined]],
      );
    } finally {
      c.close();
    }
  });

  it('local recipients still get the directory check (unknown user → 550 5.1.1)', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<nobody@tern.test>', /^550 5\.1\.1 /);
      await expectCmd(c, 'RCPT TO:<user%remote.test@tern.test>', /^550 5\.1\.1 /);
    } finally {
      c.close();
    }
  });
});
