// Smarthost mode: remote mail goes through one relay, with AUTH over TLS
// (like relaying through a cloud provider), verified against its certificate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeSelfSigned } from '../../src/server/tls.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { RawClient, startServer, waitFor } from '../helpers/server.ts';

async function sendOne(port: number, to: string): Promise<string> {
  const c = await RawClient.connect(port);
  await c.reply();
  await c.cmd('EHLO client.test');
  await c.cmd('MAIL FROM:<alice@tern.test>');
  assert.match(await c.cmd(`RCPT TO:<${to}>`), /^250/);
  await c.cmd('DATA');
  const r = await c.cmd('Subject: via smarthost\r\n\r\nrelayed\r\n.');
  c.close();
  return /queued as (\w+)/.exec(r)![1]!;
}

for (const mode of ['starttls', 'implicit'] as const) {
  test(`smarthost over ${mode} TLS with AUTH: credentials checked, certificate verified`, async () => {
    const { cert, key } = await makeSelfSigned('relay.test');
    const peer = await ScriptedPeer.start({
      tls: { cert, key },
      implicitTls: mode === 'implicit',
      extensions: ['PIPELINING', 'SIZE 10485760', '8BITMIME', 'ENHANCEDSTATUSCODES', 'AUTH PLAIN LOGIN'],
      credentials: { user: 'tern', password: 's3cret' },
    });
    const srv = await startServer(
      {
        trustedNetworks: ['127.0.0.0/8'],
        dns: { servers: ['127.0.0.1:1'], timeout: '1s' }, // never used: the smarthost is an IP
        outbound: { smarthost: { host: '127.0.0.1', port: peer.port, tls: mode, auth: { user: 'tern', password: 's3cret' } } },
      },
      { outboundTls: { ca: cert } },
    );
    try {
      const id = await sendOne(srv.port('smtp'), 'someone@anywhere.test');
      await waitFor(() => !srv.tern.scheduler.get(id), 10_000, 'relayed');
      const s = peer.last;
      assert.equal(s.tls, true);
      assert.equal(s.auth.length, 1);
      assert.deepEqual({ user: s.auth[0]!.user, password: s.auth[0]!.password }, { user: 'tern', password: 's3cret' });
      assert.match(s.messages[0]!.data.toString(), /relayed/);
    } finally {
      await srv.stop();
      await peer.close();
    }
  });
}

test('smarthost with a certificate that does not verify: nothing is sent, the mail waits', async () => {
  const { cert, key } = await makeSelfSigned('relay.test');
  const peer = await ScriptedPeer.start({ tls: { cert, key }, extensions: ['AUTH PLAIN'], credentials: { user: 'u', password: 'p' } });
  const srv = await startServer({
    trustedNetworks: ['127.0.0.0/8'],
    outbound: { smarthost: { host: '127.0.0.1', port: peer.port, tls: 'starttls', auth: { user: 'u', password: 'p' } } },
  });
  try {
    const id = await sendOne(srv.port('smtp'), 'someone@anywhere.test');
    await waitFor(() => (srv.tern.scheduler.show(id)?.attempts ?? 0) >= 1, 10_000, 'an attempt');
    assert.equal(srv.tern.scheduler.show(id)!.recipients[0]!.status, 'deferred');
    assert.equal(peer.sessions.flatMap((s) => s.auth).length, 0, 'no password went to an unverified host');
  } finally {
    await srv.stop();
    await peer.close();
  }
});
