// Edge defences end to end, over real sockets against a real test DNS
// server: DNSBL at connect, greylisting at RCPT, per-IP rates, the PROXY
// protocol on a listener, and a user plugin loaded from the config file.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, writeConfig, RawClient, ROOT, type TestServer } from '../helpers/server.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { open, connectFrom, expectCmd, sendMail, expectMailbox, queuedIds } from './smtp-kit.ts';
import { loadConfig } from '../../src/config/load.ts';
import { startTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { encodeV1, encodeV2 } from '../../src/server/proxy-protocol.ts';

const MESSAGE = 'Subject: edge\r\n\r\nHello.\r\n';

/** Connect from `localAddress` and read the first reply (the greeting or a refusal). */
async function greet(port: number, localAddress: string): Promise<{ c: RawClient; reply: string }> {
  const c = await connectFrom(port, localAddress);
  return { c, reply: await c.reply() };
}

describe('DNSBL (RFC 5782) at connect', () => {
  let dns: DnsServer;
  let srv: TestServer;
  before(async () => {
    dns = await startDnsServer({
      '2.0.0.127.zen.example.test': { A: ['127.0.0.2'] },
      '5.0.0.127.zen.example.test': { A: ['127.0.0.2'] },
      '4.0.0.127.broken.example.test': { SERVFAIL: true },
    });
    srv = await startServer({
      dns: { servers: [dns.address], timeout: '1s' },
      trustedNetworks: ['127.0.0.5/32'],
      edge: { dnsbl: { zones: ['zen.example.test', 'broken.example.test'], cacheTtl: '5m' } },
    });
  });
  after(async () => {
    await srv.stop();
    await dns.close();
  });

  it('a listed client gets 554 5.7.1 naming the zone instead of the greeting, and is disconnected', async () => {
    const { c, reply } = await greet(srv.port('smtp'), '127.0.0.2');
    assert.equal(reply, '554 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.example.test');
    await c.waitClosed();
    assert.ok(dns.queries.some((q) => q.name === '2.0.0.127.zen.example.test' && q.type === 'A'));
  });

  it('an unlisted client is greeted and can send', async () => {
    const { c, reply } = await greet(srv.port('smtp'), '127.0.0.3');
    assert.match(reply, /^220 /);
    await expectCmd(c, 'EHLO client.test', /^250 /m);
    await sendMail(c, 'sender@client.test', ['bob@tern.test'], MESSAGE);
    c.close();
  });

  it('a DNS failure (SERVFAIL) is not a listing: the client is greeted', async () => {
    const { c, reply } = await greet(srv.port('smtp'), '127.0.0.4');
    assert.match(reply, /^220 /);
    assert.ok(dns.queries.some((q) => q.name === '4.0.0.127.broken.example.test'));
    c.close();
  });

  it('trusted networks and the submission port are never checked', async () => {
    const trusted = await greet(srv.port('smtp'), '127.0.0.5');
    assert.match(trusted.reply, /^220 /);
    trusted.c.close();
    assert.ok(!dns.queries.some((q) => q.name.startsWith('5.0.0.127.')), 'no lookup for a trusted client');
    const sub = await greet(srv.port('submission'), '127.0.0.2');
    assert.match(sub.reply, /^220 /);
    sub.c.close();
  });

  it('answers are cached: a listed client reconnecting costs no new query', async () => {
    const before = dns.queries.filter((q) => q.name === '2.0.0.127.zen.example.test').length;
    const { c, reply } = await greet(srv.port('smtp'), '127.0.0.2');
    assert.match(reply, /^554 5\.7\.1 /);
    c.close();
    assert.equal(dns.queries.filter((q) => q.name === '2.0.0.127.zen.example.test').length, before);
  });
});

describe('greylisting (RFC 6647) at RCPT', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ edge: { greylist: { enabled: true, delay: '300ms', expire: '10s', keep: '1d' } } });
  });
  after(() => srv.stop());

  it('first attempt 450, too early 450, after the delay 250; then the triplet is known', async () => {
    const c = await open(srv.port('smtp'), { localAddress: '127.0.0.20' });
    await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
    await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^450 4\.7\.1 Greylisted, please try again later$/);
    await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^450 4\.7\.1 /);
    // An unknown recipient is told so at once, not greylisted first.
    await expectCmd(c, 'RCPT TO:<nobody@tern.test>', /^550 5\.1\.1 /);
    await sleep(350);
    await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
    await expectCmd(c, 'DATA', /^354 /);
    c.send(MESSAGE + '.\r\n');
    assert.match(await c.reply(), /^250 2\.0\.0 /);
    c.close();

    // Known now, also from another host of the same /24; a new triplet is not.
    const d = await open(srv.port('smtp'), { localAddress: '127.0.0.21' });
    await expectCmd(d, 'MAIL FROM:<sender@client.test>', /^250 /);
    await expectCmd(d, 'RCPT TO:<alice@tern.test>', /^250 /);
    await expectCmd(d, 'RCPT TO:<bob@tern.test>', /^450 4\.7\.1 /);
    d.close();
    await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
  });
});

describe('per-IP rate limits', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ edge: { rate: { connectionsPerMinute: 3, messagesPerHour: 1 } } });
  });
  after(() => srv.stop());

  it('the connection past the per-minute limit gets 421 4.7.0 and is closed; other clients are not affected', async () => {
    const port = srv.port('smtp');
    for (let i = 0; i < 3; i++) {
      const { c, reply } = await greet(port, '127.0.0.30');
      assert.match(reply, /^220 /);
      c.close();
    }
    const { c, reply } = await greet(port, '127.0.0.30');
    assert.equal(reply, '421 4.7.0 Too many connections from your address, slow down');
    await c.waitClosed();
    const other = await greet(port, '127.0.0.31');
    assert.match(other.reply, /^220 /);
    other.c.close();
  });

  it('messages per hour: the next MAIL gets 450 4.7.1', async () => {
    const c = await open(srv.port('smtp'), { localAddress: '127.0.0.32' });
    await sendMail(c, 'sender@client.test', ['bob@tern.test'], MESSAGE);
    await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^450 4\.7\.1 /);
    c.close();
  });
});

describe('PROXY protocol on a listener', () => {
  const PROXY = '127.0.0.40';
  let srv: TestServer;
  before(async () => {
    srv = await startServer({
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 0, proxyProtocol: true },
        { role: 'submission', address: '127.0.0.1', port: 0 },
        { role: 'submissions', address: '127.0.0.1', port: 0, proxyProtocol: true },
      ],
      limits: { connectionsPerIp: 1 },
      edge: { proxyFrom: [`${PROXY}/32`], proxyTimeout: '400ms' },
    });
  });
  after(() => srv.stop());

  /** From the proxy: header and the first command in one write, as a proxy forwarding a fast client does. */
  async function viaProxy(header: Buffer, from = PROXY): Promise<RawClient> {
    const c = await connectFrom(srv.port('smtp'), from);
    c.socket.setNoDelay(true);
    c.send(header);
    return c;
  }

  it('v1: the client named in the header is the client (EHLO, Received)', async () => {
    const c = await viaProxy(Buffer.concat([encodeV1({ address: '203.0.113.7', port: 40000 }, { address: '127.0.0.1', port: 25 }), Buffer.from('EHLO client.test\r\n')]));
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.reply(), /^250-mx\.tern\.test Hello client\.test \[203\.0\.113\.7\]/);
    await sendMail(c, 'sender@client.test', ['alice@tern.test'], MESSAGE);
    c.close();
    const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
    assert.match(msg!, /^Received: from client\.test \(\[203\.0\.113\.7\]\)/m);
  });

  it('a header that arrives in pieces is waited for', async () => {
    const header = encodeV2({ address: '203.0.113.9', port: 2 }, { address: '127.0.0.1', port: 25 });
    const c = await viaProxy(header.subarray(0, 7));
    await sleep(50);
    c.send(header.subarray(7, 20));
    await sleep(50);
    c.send(Buffer.concat([header.subarray(20), Buffer.from('EHLO client.test\r\n')]));
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.reply(), /\[203\.0\.113\.9\]/);
    c.close();
  });

  it('v2 over IPv6, and v2 LOCAL (the proxy itself)', async () => {
    const c = await viaProxy(encodeV2({ address: '2001:db8::7', port: 1 }, { address: '2001:db8::1', port: 25 }));
    assert.match(await c.reply(), /^220 /);
    await expectCmd(c, 'EHLO client.test', /\[2001:db8::7\]/);
    await sendMail(c, 'sender@client.test', ['bob@tern.test'], MESSAGE);
    c.close();
    const [msg] = await expectMailbox(srv.dataDir, 'tern.test', 'bob', 1);
    assert.match(msg!, /^Received: from client\.test \(\[IPv6:2001:db8::7\]\)/m);

    const local = await viaProxy(encodeV2(null));
    assert.match(await local.reply(), /^220 /);
    await expectCmd(local, 'EHLO proxy.test', new RegExp(`\\[${PROXY.replace(/\./g, '\\.')}\\]`));
    local.close();
  });

  it('connection limits count the real client, not the proxy', async () => {
    const a = await viaProxy(encodeV1({ address: '198.51.100.1', port: 1 }, { address: '127.0.0.1', port: 25 }));
    assert.match(await a.reply(), /^220 /);
    const b = await viaProxy(encodeV1({ address: '198.51.100.2', port: 1 }, { address: '127.0.0.1', port: 25 }));
    assert.match(await b.reply(), /^220 /, 'another client behind the same proxy');
    const a2 = await viaProxy(encodeV1({ address: '198.51.100.1', port: 2 }, { address: '127.0.0.1', port: 25 }));
    assert.match(await a2.reply(), /^421 4\.7\.0 /, 'limits.connectionsPerIp: 1 for 198.51.100.1');
    for (const c of [a, b, a2]) c.close();
  });

  it('a header from an address not in edge.proxyFrom: closed, never trusted, nothing accepted', async () => {
    const before = queuedIds(srv.dataDir).length;
    const c = await viaProxy(Buffer.concat([
      encodeV1({ address: '203.0.113.66', port: 1 }, { address: '127.0.0.1', port: 25 }),
      Buffer.from('EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@tern.test>\r\nDATA\r\n' + MESSAGE + '.\r\n'),
    ]), '127.0.0.41');
    await c.waitClosed();
    assert.equal(c.pending, '', 'not a single reply');
    assert.equal(queuedIds(srv.dataDir).length, before);
  });

  const malformed: [string, Buffer][] = [
    ['plain SMTP without a header', Buffer.from('EHLO client.test\r\n')],
    ['a v1 header with a bad address', Buffer.from('PROXY TCP4 203.0.113.999 127.0.0.1 1 25\r\n')],
    ['a v1 header without CRLF within 107 octets', Buffer.from('PROXY TCP4 ' + '1'.repeat(120))],
    ['a v2 header for UDP', (() => { const h = encodeV2({ address: '203.0.113.7', port: 1 }, { address: '127.0.0.1', port: 25 }); h[13] = 0x12; return h; })()],
  ];
  for (const [name, bytes] of malformed) {
    it(`malformed: ${name} → closed without a reply`, async () => {
      const c = await viaProxy(bytes);
      await c.waitClosed();
      assert.equal(c.pending, '');
    });
  }

  it('a proxy that sends no header is closed after edge.proxyTimeout', async () => {
    const t0 = Date.now();
    const c = await connectFrom(srv.port('smtp'), PROXY);
    await c.waitClosed(3000);
    assert.ok(Date.now() - t0 >= 350, 'waited for the header');
    assert.equal(c.pending, '');
  });

  it('implicit TLS (465) behind the proxy: header, then the TLS handshake', async () => {
    const raw = net.connect({ port: srv.port('submissions'), host: '127.0.0.1', localAddress: PROXY });
    await new Promise<void>((res, rej) => raw.once('connect', res).once('error', rej));
    raw.write(encodeV1({ address: '203.0.113.8', port: 5 }, { address: '127.0.0.1', port: 465 }));
    const secure = await new Promise<tls.TLSSocket>((res, rej) => {
      const s = tls.connect({ socket: raw, rejectUnauthorized: false }, () => res(s));
      s.once('error', rej);
    });
    const c = new RawClient(secure);
    assert.match(await c.reply(), /^220 /);
    await expectCmd(c, 'EHLO client.test', /\[203\.0\.113\.8\]/);
    c.close();
  });
});

it('a plugin from the config (examples/plugins/helo-checks.ts) refuses a forged HELO', async () => {
  const { dir, file } = writeConfig({ plugins: ['./plugins/helo-checks.ts'] });
  // Copied next to the config: the path is relative to the config file, and the example has no runtime imports from Tern.
  fs.mkdirSync(path.join(dir, 'plugins'));
  fs.copyFileSync(path.join(ROOT, 'examples/plugins/helo-checks.ts'), path.join(dir, 'plugins/helo-checks.ts'));
  const tern = await startTern(loadConfig(file), { log: silentLogger });
  try {
    const port = tern.ports.find((p) => p.role === 'smtp')!.port;
    const c = await open(port, { ehlo: false });
    await expectCmd(c, 'EHLO 192.0.2.1', /^550 5\.7\.1 /);
    await expectCmd(c, 'EHLO mx.tern.test', /^550 5\.7\.1 .*our name/);
    await expectCmd(c, 'HELO tern.test', /^550 5\.7\.1 /);
    await expectCmd(c, 'MAIL FROM:<a@client.test>', /^503 /);
    await expectCmd(c, 'EHLO [127.0.0.1]', /^250 /m);
    await expectCmd(c, 'EHLO client.test', /^250 /m);
    c.close();
  } finally {
    await tern.stop(500);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
