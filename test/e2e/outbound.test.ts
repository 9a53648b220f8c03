// Store-and-forward end to end, on a real test network: a DNS server on
// loopback serves the zones, scripted peer MTAs listen on other loopback
// addresses, and Tern routes by MX, retries, falls back and bounces.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { generate } from 'selfsigned';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer, DEFAULT_EXTENSIONS, type PeerCommand } from '../helpers/scripted-peer.ts';
import { RawClient, mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { requireTool } from '../helpers/tools.ts';

/** The tests that read a DSN back need python3 (its email package, in the standard library). */
const NEEDS_PYTHON = requireTool('python3', 'python3');

/** Parse a DSN with Python's email module: an independent reader of RFC 3464. */
function parseDsn(file: string): { type: string; reportType: string; recipients: Record<string, string>[]; third: string; subject: string } {
  const py = `
import email, json, sys
m = email.message_from_binary_file(sys.stdin.buffer)
parts = m.get_payload()
ds = parts[1].get_payload()
recips = [dict(p.items()) for p in ds[1:]]
print(json.dumps({"type": m.get_content_type(), "reportType": m.get_param("report-type"), "recipients": recips,
  "third": parts[2].get_content_type() if len(parts) > 2 else "", "subject": m["subject"]}))
`;
  const r = spawnSync('python3', ['-c', py], { input: fs.readFileSync(file), encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('outbound delivery', () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let old: ScriptedPeer;
  let srv: TestServer;
  let port: number;
  const flakySeen = new Map<string, number>();

  before(async () => {
    const pems = await generate([{ name: 'commonName', value: 'mx.ok.test' }], { keySize: 2048, algorithm: 'sha256' });
    const react = (c: PeerCommand) => {
      if (c.verb !== 'RCPT') return undefined;
      const to = /<([^>]*)>/.exec(c.arg)?.[1] ?? '';
      if (to.endsWith('@reject.test')) return '550 5.1.1 <' + to + '>: Recipient address rejected: User unknown';
      if (to.endsWith('@slow.test')) return '451 4.3.2 try again later';
      if (to.endsWith('@flaky.test')) {
        const n = (flakySeen.get(to) ?? 0) + 1;
        flakySeen.set(to, n);
        if (n === 1) return '451 4.7.1 greylisted, come back later';
      }
      return undefined;
    };
    peer = await ScriptedPeer.start({ host: '127.0.0.2', tls: { cert: pems.cert, key: pems.private }, on: react });
    port = peer.port;
    // A peer without 8BITMIME (an old MTA) on another address, same port.
    old = await ScriptedPeer.start({ host: '127.0.0.5', port, extensions: DEFAULT_EXTENSIONS.filter((e) => e !== '8BITMIME') });
    const mx = (host: string, ip: string) => ({ [host]: { A: [ip] } });
    dns = await startDnsServer({
      'ok.test': { MX: [{ preference: 10, exchange: 'mx.ok.test' }] },
      ...mx('mx.ok.test', '127.0.0.2'),
      'reject.test': { MX: [{ preference: 10, exchange: 'mx.ok.test' }] },
      'slow.test': { MX: [{ preference: 10, exchange: 'mx.ok.test' }] },
      'flaky.test': { MX: [{ preference: 10, exchange: 'mx.ok.test' }] },
      // The preferred MX has nobody listening; the second one works.
      'fallback.test': { MX: [{ preference: 10, exchange: 'mx1.fallback.test' }, { preference: 20, exchange: 'mx2.fallback.test' }] },
      ...mx('mx1.fallback.test', '127.0.0.3'),
      ...mx('mx2.fallback.test', '127.0.0.2'),
      'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
      'broken.test': { SERVFAIL: true },
      // No MX: the A record is the implicit MX (RFC 5321 §5.1).
      'implicit.test': { A: ['127.0.0.2'] },
      'old.test': { MX: [{ preference: 10, exchange: 'mx.old.test' }] },
      // We (mx.tern.test) are the best MX of this domain, but it is not ours: a loop.
      'loop.test': { MX: [{ preference: 10, exchange: 'mx.tern.test' }, { preference: 20, exchange: 'mx.ok.test' }] },
      'mx.tern.test': { A: ['127.0.0.1'] },
      ...mx('mx.old.test', '127.0.0.5'),
    });
    srv = await startServer({
      trustedNetworks: ['127.0.0.0/8'],
      dns: { servers: [dns.address], timeout: '1s' },
      outbound: { port, connectionReuse: '3s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
      queue: { retrySchedule: ['1s'], delayWarning: '2s', maxLifetime: '5s' },
    });
  });

  after(async () => {
    await srv?.stop();
    await peer?.close();
    await old?.close();
    await dns?.close();
  });

  async function send(to: string[], body = 'Hello from Tern.\r\n', subject = 'outbound test'): Promise<string> {
    const c = await RawClient.connect(srv.port('smtp'));
    await c.reply();
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<alice@tern.test> BODY=8BITMIME'), /^250/);
    for (const t of to) assert.match(await c.cmd(`RCPT TO:<${t}>`), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    const r = await c.cmd(`From: alice@tern.test\r\nSubject: ${subject}\r\n\r\n${body}.`);
    await c.cmd('QUIT');
    c.close();
    const m = /queued as (\w+)/.exec(r);
    assert.ok(m, r);
    return m[1]!;
  }

  const dsnsFor = (subject: RegExp) =>
    mailbox(srv.dataDir, 'tern.test', 'alice').filter((f) => subject.test(fs.readFileSync(f, 'utf8')));

  it('delivers by MX over STARTTLS, all recipients of a domain in one transaction, and reuses the connection', async () => {
    const before = peer.sessions.length;
    const id = await send(['bob@ok.test', 'carol@ok.test'], 'first\r\n..leading dot\r\n');
    await waitFor(() => !srv.tern.scheduler.get(id), 10_000, 'delivery');
    const session = peer.sessions[before]!;
    assert.equal(session.tls, true, 'STARTTLS was used');
    assert.equal(session.messages.length, 1);
    const rcpts = session.commands.filter((c) => c.startsWith('RCPT'));
    assert.deepEqual(rcpts.map((c) => /<(.*)>/.exec(c)![1]), ['bob@ok.test', 'carol@ok.test']);
    const data = session.messages[0]!.data.toString('utf8');
    // A trusted client's mail is fixed up (RFC 6409 §8): Date and Message-ID come first, then our trace.
    assert.match(data, /^Date: [^\r]+\r\nMessage-ID: <\w+\.\w+@mx\.tern\.test>\r\nReceived: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.tern\.test \(Tern\) with ESMTP id /);
    assert.match(data, /\r\n\r\nfirst\r\n\.leading dot\r\n$/);

    // A second message to the same host rides the same connection.
    const id2 = await send(['dave@ok.test']);
    await waitFor(() => !srv.tern.scheduler.get(id2), 10_000, 'second delivery');
    assert.equal(peer.sessions.length, before + 1, 'no new connection');
    assert.equal(session.messages.length, 2);
  });

  it('falls back to the next MX when the first refuses connections, and uses A as implicit MX', async () => {
    const id = await send(['erin@fallback.test', 'frank@implicit.test']);
    await waitFor(() => !srv.tern.scheduler.get(id), 15_000, 'delivery via the second MX');
    const delivered = peer.sessions.flatMap((s) => s.commands).filter((c) => /RCPT TO:<(erin@fallback|frank@implicit)\.test>/.test(c));
    assert.equal(delivered.length, 2);
  });

  it('retries after a 4xx and then delivers', async () => {
    const id = await send(['gina@flaky.test']);
    await waitFor(() => srv.tern.scheduler.get(id)?.state.attempts === 1, 5000, 'first attempt');
    const m = srv.tern.scheduler.show(id)!;
    assert.equal(m.recipients[0]!.status, 'deferred');
    const last = m.recipients[0]!.lastReply!;
    assert.deepEqual([last.code, last.enhanced], [451, '4.7.1']);
    assert.match(last.text, /^greylisted/);
    await waitFor(() => !srv.tern.scheduler.get(id), 10_000, 'delivery on retry');
    assert.equal(flakySeen.get('gina@flaky.test'), 2);
  });

  it('bounces a 5xx at once with an RFC 3464 DSN to the sender', { skip: NEEDS_PYTHON }, async () => {
    await send(['nobody@reject.test'], 'body\r\n', 'will bounce');
    await waitFor(() => dsnsFor(/Subject: Undelivered Mail.*[\s\S]*nobody@reject\.test/).length === 1, 10_000, 'the DSN');
    const f = dsnsFor(/nobody@reject\.test/)[0]!;
    const dsn = parseDsn(f);
    assert.equal(dsn.type, 'multipart/report');
    assert.equal(dsn.reportType, 'delivery-status');
    assert.equal(dsn.recipients[0]!['Action'], 'failed');
    assert.equal(dsn.recipients[0]!['Status'], '5.1.1');
    assert.match(dsn.recipients[0]!['Final-Recipient']!, /rfc822; ?nobody@reject\.test/);
    assert.match(dsn.recipients[0]!['Diagnostic-Code']!, /smtp; ?550 5\.1\.1 /);
    assert.match(dsn.recipients[0]!['Remote-MTA']!, /mx\.ok\.test/);
    assert.equal(dsn.third, 'message/rfc822');
    const raw = fs.readFileSync(f, 'utf8');
    assert.match(raw, /^Return-Path: <>\r\n/, 'a DSN has the null sender');
  });

  it('null MX fails at once with 5.1.10, without connecting', { skip: NEEDS_PYTHON }, async () => {
    const before = peer.sessions.length;
    await send(['x@nullmx.test'], 'body\r\n', 'null mx');
    await waitFor(() => dsnsFor(/x@nullmx\.test/).length === 1, 10_000, 'the DSN');
    const dsn = parseDsn(dsnsFor(/x@nullmx\.test/)[0]!);
    assert.equal(dsn.recipients[0]!['Status'], '5.1.10');
    assert.equal(peer.sessions.length, before);
  });

  it('refuses 8-bit to a peer without 8BITMIME with a clear DSN (5.6.3), never sending 8-bit', { skip: NEEDS_PYTHON }, async () => {
    await send(['h@old.test'], 'Gr\u00fc\u00dfe\r\n', 'eight bit');
    await waitFor(() => dsnsFor(/h@old\.test/).length === 1, 10_000, 'the DSN');
    const dsn = parseDsn(dsnsFor(/h@old\.test/)[0]!);
    assert.equal(dsn.recipients[0]!['Status'], '5.6.3');
    assert.equal(old.sessions.flatMap((s) => s.messages).length, 0);
  });

  it('an MX list that names us first is a loop: 5.4.6, nothing sent to the lower-preference host', { skip: NEEDS_PYTHON }, async () => {
    const before = peer.sessions.flatMap((x) => x.commands).length;
    await send(['k@loop.test'], 'body\r\n', 'mx loop');
    await waitFor(() => dsnsFor(/k@loop\.test/).length === 1, 10_000, 'the DSN');
    assert.equal(parseDsn(dsnsFor(/k@loop\.test/)[0]!).recipients[0]!['Status'], '5.4.6');
    assert.ok(!peer.sessions.flatMap((x) => x.commands).slice(before).some((l) => l.includes('k@loop.test')));
  });

  it('DSN NOTIFY: SUCCESS gets a success notice (relayed: the peer speaks DSN, so "delivered" is its job); NEVER gets no bounce', { skip: NEEDS_PYTHON }, async () => {
    const c = await RawClient.connect(srv.port('smtp'));
    await c.reply();
    await c.cmd('EHLO client.test');
    await c.cmd('MAIL FROM:<alice@tern.test> RET=HDRS ENVID=notify+2Dtest');
    assert.match(await c.cmd('RCPT TO:<bob@tern.test> NOTIFY=SUCCESS'), /^250/);
    assert.match(await c.cmd('RCPT TO:<never@reject.test> NOTIFY=NEVER'), /^250/);
    assert.match(await c.cmd('RCPT TO:<l@ok.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;L@ok.test'), /^250/);
    await c.cmd('DATA');
    await c.cmd('Subject: notify test\r\n\r\nbody\r\n.');
    c.close();
    await waitFor(() => dsnsFor(/Subject: Successful Mail Delivery Report[\s\S]*bob@tern\.test/).length === 1, 10_000, 'the success DSN');
    const ok = parseDsn(dsnsFor(/Subject: Successful Mail Delivery Report[\s\S]*bob@tern\.test/)[0]!);
    assert.equal(ok.recipients[0]!['Action'], 'delivered');
    assert.equal(ok.third, 'text/rfc822-headers');
    // The remote peer offered DSN, so NOTIFY and ORCPT went on with the message.
    await waitFor(() => peer.sessions.flatMap((x) => x.commands).some((l) => l.startsWith('RCPT TO:<l@ok.test>')), 5000, 'relay');
    const rcpt = peer.sessions.flatMap((x) => x.commands).find((l) => l.startsWith('RCPT TO:<l@ok.test>'))!;
    assert.equal(rcpt, 'RCPT TO:<l@ok.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;L@ok.test');
    const mail = peer.sessions.flatMap((x) => x.commands).filter((l) => l.startsWith('MAIL FROM:<alice@tern.test>') && l.includes('ENVID')).at(-1)!;
    assert.match(mail, /RET=HDRS ENVID=notify-test$/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(dsnsFor(/never@reject\.test/).length, 0, 'NOTIFY=NEVER: no bounce');
  });

  it('a DNS failure defers; a delay warning goes out, then the message expires with a failure DSN', { skip: NEEDS_PYTHON }, async () => {
    const id = await send(['i@broken.test', 'j@slow.test'], 'body\r\n', 'will expire');
    await waitFor(() => (srv.tern.scheduler.show(id)?.attempts ?? 0) >= 1, 5000, 'first attempt');
    const m = srv.tern.scheduler.show(id)!;
    assert.deepEqual([m.recipients[0]!.lastReply!.code, m.recipients[0]!.lastReply!.enhanced], [451, '4.4.3']);
    await waitFor(() => dsnsFor(/Subject: Delayed Mail[\s\S]*j@slow\.test/).length === 1, 10_000, 'the delay warning');
    const delayed = parseDsn(dsnsFor(/Subject: Delayed Mail[\s\S]*j@slow\.test/)[0]!);
    assert.deepEqual(delayed.recipients.map((r) => r['Action']), ['delayed', 'delayed']);
    assert.ok(delayed.recipients[0]!['Will-Retry-Until']);
    await waitFor(() => !srv.tern.scheduler.get(id), 15_000, 'expiry');
    // The failure DSN is new mail itself: wait for its own local delivery.
    await waitFor(() => dsnsFor(/Subject: Undelivered Mail[\s\S]*j@slow\.test/).length === 1, 10_000, 'the failure DSN');
    const failed = parseDsn(dsnsFor(/Subject: Undelivered Mail[\s\S]*j@slow\.test/)[0]!);
    assert.deepEqual(failed.recipients.map((r) => r['Action']), ['failed', 'failed']);
    assert.ok(failed.recipients.every((r) => r['Status'] === '4.4.7'), JSON.stringify(failed.recipients));
  });
});
