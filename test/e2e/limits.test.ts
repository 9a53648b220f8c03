// Defensive limits end to end: command and text line lengths (RFC 5321
// §4.5.3.1.4/6), message size (RFC 1870), recipients per message
// (§4.5.3.1.8), error count, idle timeouts (§4.5.3.2), connection limits.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, waitFor, RawClient, type TestServer } from '../helpers/server.ts';
import {
  open, connectFrom, expectCmd, expectReplies, expectSilence, queuedAs, expectMailbox, mailboxContents, waitQueueEmpty, queuedIds,
} from './smtp-kit.ts';

const LINE_OF = (n: number): string => 'x'.repeat(n);

describe('limits: line lengths, size, recipients, errors', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ limits: { messageSize: 10000, recipients: 3, errors: 3 } });
  });
  after(() => srv.stop());

  it('a 512-octet command line is fine; 513 → 500 5.5.2 and the dialogue stays in sync', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'NOOP ' + LINE_OF(512 - 'NOOP '.length - 2), /^250 2\.0\.0 /);
      await expectCmd(c, 'NOOP ' + LINE_OF(513 - 'NOOP '.length - 2), /^500 5\.5\.2 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('an over-long command arriving in pieces is skipped up to its line end', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send('MAIL FROM:<' + LINE_OF(3000));
      await sleep(50);
      c.send(LINE_OF(3000));
      await sleep(50);
      c.send('@client.test>\r\nNOOP\r\n');
      await expectReplies(c, /^500 5\.5\.2 /, /^250 2\.0\.0 /);
      await expectSilence(c, 50);
    } finally {
      c.close();
    }
  });

  it('EHLO advertises SIZE 10000; SIZE=10001 at MAIL → 552 5.3.4', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      await expectCmd(c, 'EHLO client.test', /^250-SIZE 10000$/m);
      await expectCmd(c, 'MAIL FROM:<sender@client.test> SIZE=10001', /^552 5\.3\.4 /);
      await expectCmd(c, 'MAIL FROM:<sender@client.test> SIZE=10000', /^250 2\.1\.0 /);
    } finally {
      c.close();
    }
  });

  it('text lines: 998 octets + CRLF accepted, 999 → 550 5.6.0 after the final dot', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(`Subject: ok\r\n\r\n${LINE_OF(998)}\r\n.\r\n`);
      queuedAs(await c.reply());

      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(`Subject: long\r\n\r\n${LINE_OF(999)}\r\n`);
      await expectSilence(c, 50); // no early reply: the server reads on to the final dot
      c.send('more\r\n.\r\n');
      await expectReplies(c, /^550 5\.6\.0 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
      const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'bob', 1);
      assert.match(msg!, /Subject: ok/);
    } finally {
      c.close();
    }
  });

  it('message over messageSize without SIZE → 552 5.3.4 after the final dot; nothing delivered', async () => {
    const c = await open(srv.port('smtp'));
    try {
      const body = (n: number): string => {
        // Exactly n octets of content: a header, then 100-octet lines (98 + CRLF), padded.
        let s = 'Subject: big\r\n\r\n';
        while (s.length + 100 <= n) s += LINE_OF(98) + '\r\n';
        if (s.length < n) s += LINE_OF(n - s.length - 2) + '\r\n';
        assert.equal(s.length, n);
        return s;
      };
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<size@catch.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(body(20000) + '.\r\n');
      await expectReplies(c, /^552 5\.3\.4 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);

      // One octet over is too big; exactly the limit is not.
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<size@catch.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(body(10001) + '.\r\n');
      await expectReplies(c, /^552 5\.3\.4 /);

      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<size@catch.test>', /^250 /);
      c.send(`BDAT 20000 LAST\r\n${body(20000)}`);
      await expectReplies(c, /^552 5\.3\.4 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);

      await waitQueueEmpty(srv.dataDir);
      assert.equal(mailboxContents(srv.dataDir, 'catch.test', 'carol').length, 0);

      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<size@catch.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(body(10000) + '.\r\n');
      queuedAs(await c.reply());
      await expectMailbox(srv.dataDir, 'catch.test', 'carol', 1);
    } finally {
      c.close();
    }
  });

  it('recipients limit 3: the 4th RCPT → 452 4.5.3, the 3 accepted ones are delivered', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      // An alias counts once, however far it expands.
      await expectCmd(c, 'RCPT TO:<team@tern.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'RCPT TO:<r2@catch.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'RCPT TO:<postmaster@tern.test>', /^250 2\.1\.5 /);
      await expectCmd(c, 'RCPT TO:<r4@catch.test>', /^452 4\.5\.3 /);
      await expectCmd(c, 'RCPT TO:<r5@catch.test>', /^452 4\.5\.3 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('Subject: many\r\n\r\nx\r\n.\r\n');
      queuedAs(await c.reply());
      await waitQueueEmpty(srv.dataDir);
      assert.equal(mailboxContents(srv.dataDir, 'tern.test', 'alice').filter((m) => m.includes('Subject: many')).length, 1);
      assert.equal(mailboxContents(srv.dataDir, 'catch.test', 'carol').filter((m) => m.includes('Subject: many')).length, 1);
    } finally {
      c.close();
    }
  });

  it('errors limit 3: the third error is followed by 421 4.7.0 and close', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'FOO', /^500 5\.5\.2 /);
      await expectCmd(c, 'MAIL FROM:<bad', /^501 5\.5\.4 /);
      // A 4xx or a success does not count.
      await expectCmd(c, 'NOOP', /^250 /);
      c.send('BAR\r\n');
      await expectReplies(c, /^500 5\.5\.2 /, /^421 4\.7\.0 /);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  it('errors limit: pipelined errors stop at the limit (nothing is answered after 421)', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send('A\r\nB\r\nC\r\nD\r\nNOOP\r\n');
      await expectReplies(c, /^500 /, /^500 /, /^500 /, /^421 4\.7\.0 /);
      await c.waitClosed();
      assert.equal(c.pending, '');
    } finally {
      c.close();
    }
  });
});

describe('limits: timeouts', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ limits: { timeouts: { command: '600ms', data: '600ms' } } });
  });
  after(() => srv.stop());

  it('idle after the greeting → 421 4.4.2 then close', async () => {
    const t0 = Date.now();
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      assert.match(await c.reply(3000), /^421 4\.4\.2 /);
      await c.waitClosed();
      assert.ok(Date.now() - t0 >= 500, 'not before the timeout');
    } finally {
      c.close();
    }
  });

  it('activity resets the idle timer', async () => {
    const c = await open(srv.port('smtp'));
    try {
      for (let i = 0; i < 4; i++) {
        await sleep(300);
        await expectCmd(c, 'NOOP', /^250 /);
      }
    } finally {
      c.close();
    }
  });

  it('stalled in DATA → 421 4.4.2, close, and the partial message is discarded', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('Subject: stalled\r\n\r\nhalf');
      assert.match(await c.reply(3000), /^421 4\.4\.2 /);
      await c.waitClosed();
      await waitFor(() => fs.readdirSync(path.join(srv.dataDir, 'spool', 'tmp')).length === 0, 2000, 'tmp file removed');
      assert.equal(mailboxContents(srv.dataDir, 'tern.test', 'alice').length, 0);
    } finally {
      c.close();
    }
  });

  it('silent after STARTTLS (no handshake) → closed after the command timeout', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'STARTTLS', /^220 /);
      const t0 = Date.now();
      await c.waitClosed(3000);
      assert.ok(Date.now() - t0 >= 500);
    } finally {
      c.close();
    }
  });

  it('silent on the implicit-TLS port (no handshake) → closed after the command timeout', async () => {
    const c = await RawClient.connect(srv.port('submissions'));
    try {
      await c.waitClosed(3000);
      assert.equal(c.pending, '');
    } finally {
      c.close();
    }
  });

  it('stalled in a BDAT chunk → 421 4.4.2', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
      c.send('BDAT 100 LAST\r\nonly a little');
      assert.match(await c.reply(3000), /^421 4\.4\.2 /);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });
});

describe('limits: connections', () => {
  it('connectionsPerIp 2: a third connection from the same IP gets 421 4.7.0; others are unaffected', async () => {
    const srv = await startServer({ limits: { connectionsPerIp: 2 } });
    const clients = [];
    try {
      const port = srv.port('smtp');
      clients.push(await open(port, { localAddress: '127.0.0.1' }), await open(port, { localAddress: '127.0.0.1' }));
      const third = await connectFrom(port, '127.0.0.1');
      clients.push(third);
      assert.match(await third.reply(), /^421 4\.7\.0 /);
      await third.waitClosed();
      // Another address is counted separately.
      const other = await open(port, { localAddress: '127.0.0.2' });
      clients.push(other);
      await expectCmd(other, 'NOOP', /^250 /);
      // The limit holds across listeners too.
      const sub = await connectFrom(srv.port('submission'), '127.0.0.1');
      clients.push(sub);
      assert.match(await sub.reply(), /^421 4\.7\.0 /);
      // Once one leaves, a new one is let in.
      clients[0]!.close();
      await waitFor(async () => {
        const c = await connectFrom(port, '127.0.0.1');
        clients.push(c);
        return /^220 /.test(await c.reply());
      }, 3000, 'a free slot');
    } finally {
      for (const c of clients) c.close();
      await srv.stop();
    }
  });

  it('a client hanging up before a TLS handshake (STARTTLS or port 465) frees its slot at once', async () => {
    const srv = await startServer({ limits: { connectionsPerIp: 1 } });
    try {
      const next = async (): Promise<void> => {
        // The slot is free again within moments, not after the handshake timeout.
        await waitFor(async () => {
          const c = await RawClient.connect(srv.port('smtp'));
          const r = await c.reply();
          c.close();
          return r.startsWith('220 ');
        }, 2000, 'the connection slot to be released');
      };
      // STARTTLS, then the client closes (RST) or half-closes (FIN) instead of a ClientHello.
      for (const how of ['destroy', 'end'] as const) {
        const c = await open(srv.port('smtp'));
        await expectCmd(c, 'STARTTLS', /^220 /);
        if (how === 'destroy') c.close();
        else c.socket.end();
        await c.waitClosed(2000);
        await next();
      }
      // Implicit TLS: TCP connect, then hang up without a handshake.
      for (const how of ['destroy', 'end'] as const) {
        const c = await RawClient.connect(srv.port('submissions'));
        await sleep(50);
        if (how === 'destroy') c.close();
        else c.socket.end();
        await c.waitClosed(2000);
        await next();
      }
    } finally {
      await srv.stop();
    }
  });

  it('connections 2 (total): a third connection from any IP gets 421 4.7.0', async () => {
    const srv = await startServer({ limits: { connections: 2 } });
    const clients = [];
    try {
      const port = srv.port('smtp');
      clients.push(await open(port, { localAddress: '127.0.0.1' }), await open(port, { localAddress: '127.0.0.2' }));
      const third = await connectFrom(port, '127.0.0.3');
      clients.push(third);
      assert.match(await third.reply(), /^421 4\.7\.0 /);
      await third.waitClosed();
      await expectCmd(clients[0]!, 'NOOP', /^250 /);
    } finally {
      for (const c of clients) c.close();
      await srv.stop();
    }
  });
});

it('greeting pause: the 220 waits for limits.timeouts.greeting, and a client talking first is refused', async () => {
  const srv = await startServer({ limits: { timeouts: { greeting: '300ms' } } });
  try {
    const patient = await RawClient.connect(srv.port('smtp'));
    const t0 = Date.now();
    assert.match(await patient.reply(), /^220 /);
    assert.ok(Date.now() - t0 >= 250, 'greeting was delayed');
    patient.close();
    const early = await RawClient.connect(srv.port('smtp'));
    early.send('EHLO hasty.test\r\n');
    assert.match(await early.reply(), /^554 5\.5\.0 /);
    await early.waitClosed();
  } finally {
    await srv.stop();
  }
});

it('mail loop: more Received fields than limits.maxReceived → 554 5.4.6 after the dot, nothing queued', async () => {
  const srv = await startServer({ limits: { maxReceived: 5 } });
  try {
    const c = await RawClient.connect(srv.port('smtp'));
    await c.reply();
    await c.cmd('EHLO loop.test');
    await c.cmd('MAIL FROM:<a@loop.test>');
    await c.cmd('RCPT TO:<alice@tern.test>');
    assert.match(await c.cmd('DATA'), /^354/);
    // Ours makes five: still fine.
    const hops = (n: number) => 'Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n'.repeat(n);
    assert.match(await c.cmd(`${hops(4)}Subject: ok\r\n\r\nbody\r\n.`), /^250 2\.0\.0 /);
    await c.cmd('MAIL FROM:<a@loop.test>');
    await c.cmd('RCPT TO:<alice@tern.test>');
    await c.cmd('DATA');
    assert.match(await c.cmd(`${hops(5)}Subject: loop\r\n\r\nbody\r\n.`), /^554 5\.4\.6 /);
    assert.match(await c.cmd('NOOP'), /^250/);
    await waitFor(() => queuedIds(srv.dataDir).length === 0, 5000, 'queue empty');
    const files = (await import('../helpers/server.ts')).mailbox(srv.dataDir, 'tern.test', 'alice');
    assert.equal(files.length, 1);
    assert.match(fs.readFileSync(files[0]!, 'utf8'), /Subject: ok/);
    c.close();
  } finally {
    await srv.stop();
  }
});
