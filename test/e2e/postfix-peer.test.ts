// Tern delivering to a real Postfix (Debian's package, a private instance on
// 127.0.0.2) found by MX lookup on the test DNS: over STARTTLS, with the
// connection reused for a second message, as Postfix's own log shows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeSelfSigned } from '../../src/server/tls.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { postfixAvailable, startPostfix } from '../helpers/postfix.ts';
import { requirePostfix } from '../helpers/tools.ts';
import { RawClient, startServer } from '../helpers/server.ts';

test('delivered to a real Postfix by MX over STARTTLS, reusing the connection', { skip: requirePostfix(postfixAvailable), timeout: 60_000 }, async () => {
  const { cert, key } = await makeSelfSigned('mx.remote.test');
  const postfix = await startPostfix({ address: '127.0.0.2', domain: 'remote.test', tls: { cert, key } });
  const dns = await startDnsServer({
    'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
    'mx.remote.test': { A: ['127.0.0.2'] },
  });
  const srv = await startServer({
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: [dns.address], timeout: '1s' },
    outbound: { port: postfix.port, connectionReuse: '5s' },
  });
  try {
    for (const n of [1, 2]) {
      const c = await RawClient.connect(srv.port('smtp'));
      await c.reply();
      await c.cmd('EHLO client.test');
      assert.match(await c.cmd('MAIL FROM:<alice@tern.test>'), /^250/);
      assert.match(await c.cmd('RCPT TO:<bob@remote.test>'), /^250/);
      assert.match(await c.cmd('DATA'), /^354/);
      assert.match(await c.cmd(`From: alice@tern.test\r\nTo: bob@remote.test\r\nSubject: to postfix ${n}\r\n\r\nmessage ${n}\r\n..dot line\r\n.`), /^250 /);
      c.close();
      await postfix.waitForMessages('bob', n, 15_000);
    }
    const msgs = postfix.messages('bob');
    assert.equal(msgs.length, 2);
    assert.match(msgs[0]!, /Subject: to postfix 1/);
    assert.match(msgs[0]!, /\n\.dot line\r?\n/, 'dot-stuffing undone by Postfix: one dot left');
    assert.match(msgs[0]!, /Received: from client\.test \(\[127\.0\.0\.1\]\)/, 'our Received header arrived');
    const log = postfix.log();
    assert.match(log, /TLS connection established from/, 'STARTTLS was used');
    const connects = log.match(/smtpd\[\d+\]: connect from/g) ?? [];
    assert.equal(connects.length, 1, `one connection carried both messages:\n${log}`);
  } finally {
    await srv.stop();
    await dns.close();
    await postfix.stop();
  }
});
