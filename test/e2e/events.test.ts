// The event stream end to end (issue 12, item 4): a real server, a DNS
// server on loopback and a scripted peer MTA. A message deferred once and
// then delivered, and one that bounces (whose DSN is new mail of its own),
// each produce the events the README describes, in order; the JSON log's
// delivery lines come from the same stream.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'selfsigned';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer, type PeerCommand } from '../helpers/scripted-peer.ts';
import { RawClient, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import type { MessageEvent } from '../../src/events/events.ts';
import type { Logger } from '../../src/util/log.ts';

describe('events', () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let srv: TestServer;
  const events: MessageEvent[] = [];
  const deliveryLines: Record<string, unknown>[] = [];
  const seen = new Map<string, number>();

  before(async () => {
    const pems = await generate([{ name: 'commonName', value: 'mx.peer.test' }], { keySize: 2048, algorithm: 'sha256' });
    const react = (c: PeerCommand) => {
      if (c.verb !== 'RCPT') return undefined;
      const to = /<([^>]*)>/.exec(c.arg)?.[1] ?? '';
      if (to.endsWith('@reject.test')) return `550 5.1.1 <${to}>: Recipient address rejected: User unknown`;
      const n = (seen.get(to) ?? 0) + 1;
      seen.set(to, n);
      return to.endsWith('@flaky.test') && n === 1 ? '451 4.7.1 greylisted, come back later' : undefined;
    };
    peer = await ScriptedPeer.start({ host: '127.0.0.2', tls: { cert: pems.cert, key: pems.private }, on: react });
    dns = await startDnsServer({
      'flaky.test': { MX: [{ preference: 10, exchange: 'mx.peer.test' }] },
      'reject.test': { MX: [{ preference: 10, exchange: 'mx.peer.test' }] },
      'mx.peer.test': { A: ['127.0.0.2'] },
    });
    const quiet = () => {};
    const log: Logger = {
      debug: quiet,
      info: (m, f) => void (m === 'delivery' && deliveryLines.push(f!)),
      warn: (m, f) => void (m === 'delivery' && deliveryLines.push(f!)),
      error: quiet,
    };
    srv = await startServer(
      {
        trustedNetworks: ['127.0.0.0/8'],
        dns: { servers: [dns.address], timeout: '2s' },
        outbound: { port: peer.port, connectionReuse: '0s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
        queue: { retrySchedule: ['1s'] },
      },
      { log },
    );
    srv.tern.events.subscribe((e) => void events.push(e));
  });

  after(async () => {
    await srv?.stop();
    await peer?.close();
    await dns?.close();
  });

  async function send(role: 'smtp' | 'submission', to: string): Promise<string> {
    const c = await RawClient.connect(srv.port(role));
    await c.reply();
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<alice@tern.test>'), /^250/);
    assert.match(await c.cmd(`RCPT TO:<${to}>`), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    const r = await c.cmd(`From: alice@tern.test\r\nTo: ${to}\r\nSubject: events\r\n\r\nbody\r\n.`);
    await c.cmd('QUIT');
    c.close();
    const m = /queued as (\w+)/.exec(r);
    assert.ok(m, r);
    return m[1]!;
  }

  const of = (id: string) => events.filter((e) => e.queueId === id);
  const relay = () => ({ host: 'mx.peer.test', ip: '127.0.0.2', port: peer.port });

  it('deferred, then delivered: queued, deferred (attempt 1), delivered (attempt 2), each with relay, TLS and the structured reply', async () => {
    const id = await send('smtp', 'pat@flaky.test');
    await waitFor(() => of(id).some((e) => e.type === 'delivered'), 15_000, 'delivery on retry');
    const list = of(id);
    assert.deepEqual(list.map((e) => [e.type, e.recipient, e.data.attempt]), [
      ['queued', 'pat@flaky.test', null],
      ['deferred', 'pat@flaky.test', 1],
      ['delivered', 'pat@flaky.test', 2],
    ]);
    const [queued, deferred, delivered] = list as [MessageEvent, MessageEvent, MessageEvent];
    assert.deepEqual(queued.data, { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'smtp', tags: null, transport: null });
    assert.deepEqual(deferred.data.reply, { code: 451, enhanced: '4.7.1', text: 'greylisted, come back later' });
    assert.deepEqual(deferred.data.relay, relay());
    assert.equal(deferred.data.bounceClass, 'policy');
    assert.equal(deferred.data.transport, 'mx');
    assert.equal(delivered.data.reply!.code, 250);
    assert.deepEqual(delivered.data.relay, relay());
    assert.equal(delivered.data.bounceClass, null);
    for (const e of [deferred, delivered]) {
      // Opportunistic STARTTLS to the peer; its self-signed certificate does not verify (RFC 7435).
      assert.match(e.data.tls!.version, /^TLSv1\.[23]$/);
      assert.ok(e.data.tls!.cipher.length > 0);
      assert.equal(e.data.tls!.verified, false);
    }
    // Ids are unique and sort in the order the events happened; timestamps are ISO 8601.
    assert.deepEqual(list.map((e) => e.id), list.map((e) => e.id).toSorted());
    assert.equal(new Set(list.map((e) => e.id)).size, 3);
    for (const e of list) assert.equal(new Date(e.timestamp).toISOString(), e.timestamp);
    // The delivery log is a subscriber: one line per attempt, relay "host [ip]", the reply structured.
    const lines = deliveryLines.filter((l) => l.id === id);
    assert.deepEqual(lines.map((l) => [l.result, l.relay, l.attempt, (l.reply as { code: number }).code]), [
      ['tempfail', 'mx.peer.test [127.0.0.2]', 1, 451],
      ['ok', 'mx.peer.test [127.0.0.2]', 2, 250],
    ]);
    assert.match(String(lines[1]!.tls), /^TLSv1\.[23] \S+ \(unverified CN=mx\.peer\.test\)$/);
  });

  it('a bounce: queued (submission), bounced with the 5.1.1 reply; the DSN is queued (source bounce) and delivered to the Maildir', async () => {
    const id = await send('submission', 'nobody@reject.test');
    await waitFor(() => of(id).some((e) => e.type === 'bounced'), 15_000, 'the bounce');
    assert.deepEqual(of(id).map((e) => [e.type, e.data.attempt, e.data.source]), [
      ['queued', null, 'submission'],
      ['bounced', 1, 'submission'],
    ]);
    const bounced = of(id)[1]!;
    assert.deepEqual(bounced.data.reply, { code: 550, enhanced: '5.1.1', text: '<nobody@reject.test>: Recipient address rejected: User unknown' });
    assert.equal(bounced.data.bounceClass, 'invalid-recipient');
    assert.deepEqual(bounced.data.relay, relay());
    // The DSN: new mail from the null sender, to alice's mailbox.
    const dsn = await waitFor(() => events.find((e) => e.type === 'queued' && e.data.source === 'bounce' && e.id > bounced.id), 10_000, 'the DSN queued');
    await waitFor(() => of(dsn!.queueId).some((e) => e.type === 'delivered'), 10_000, 'the DSN delivered');
    assert.deepEqual(of(dsn!.queueId).map((e) => [e.type, e.recipient, e.data.transport, e.data.relay, e.data.reply?.code ?? null]), [
      ['queued', 'alice@tern.test', null, null, null],
      ['delivered', 'alice@tern.test', 'maildir', null, 250],
    ]);
    assert.ok(deliveryLines.some((l) => l.id === dsn!.queueId && l.relay === 'maildir' && l.result === 'ok'), 'logged with relay "maildir"');
  });
});
