// The SMTP client over real sockets: against a scripted peer (every reply,
// drop and stall on demand) and against our own server (delivered bytes).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Readable } from 'node:stream';

import { SmtpClient, ClientError, type ClientOptions, type SendEnvelope, type ClientReply } from './client.ts';
import { ScriptedPeer, DEFAULT_EXTENSIONS, type PeerOptions } from '../../test/helpers/scripted-peer.ts';
import { startServer, mailbox, waitFor, type TestServer } from '../../test/helpers/server.ts';
import { makeSelfSigned } from '../server/tls.ts';

const TIMEOUTS = { connect: 2000, command: 2000, dataBlock: 2000, dataEnd: 2000 };
const SHORT = { connect: 300, command: 300, dataBlock: 300, dataEnd: 300 };
const NO_CHUNKING = DEFAULT_EXTENSIONS.filter((e) => e !== 'CHUNKING');

const peers: ScriptedPeer[] = [];
const clients: SmtpClient[] = [];
let cert: { cert: string; key: string };

async function peer(opts: PeerOptions = {}): Promise<ScriptedPeer> {
  const p = await ScriptedPeer.start(opts);
  peers.push(p);
  return p;
}

async function connect(port: number, opts: Partial<ClientOptions> = {}): Promise<SmtpClient> {
  const c = await SmtpClient.connect({ host: '127.0.0.1', port, heloName: 'client.test', tls: 'none', timeouts: TIMEOUTS, ...opts });
  clients.push(c);
  return c;
}

/** A stream factory handing out `msg` in pieces of `piece` octets. */
function source(msg: Buffer, piece = 16 * 1024): () => Readable {
  return () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < msg.length; i += piece) parts.push(msg.subarray(i, i + piece));
    return Readable.from(parts);
  };
}

function envelope(to: string[], msg: Buffer, extra: Partial<SendEnvelope> = {}): SendEnvelope {
  return { from: 'a@x.test', recipients: to.map((address) => ({ address })), size: msg.length, eightBit: false, smtputf8: false, ...extra };
}

const code = (r: ClientReply): string => `${r.code}${r.enhanced ? ' ' + r.enhanced : ''}`;
const MSG = Buffer.from('From: a@x.test\r\nTo: b@y.test\r\nSubject: hi\r\n\r\nHello.\r\n.dot line\r\n.\r\n..\r\nbye\r\n');

async function rejects(p: Promise<unknown>, phase: string, temporary: boolean, text?: RegExp): Promise<ClientError> {
  const e = await p.then(
    () => assert.fail('expected a ClientError'),
    (e: unknown) => e,
  );
  assert.ok(e instanceof ClientError, `not a ClientError: ${String(e)}`);
  assert.equal(e.phase, phase, e.message);
  assert.equal(e.temporary, temporary, e.message);
  if (text) assert.match(e.message, text);
  return e;
}

before(async () => {
  cert = await makeSelfSigned('peer.test');
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(peers.map((p) => p.close()));
});

describe('SmtpClient against a scripted peer', () => {
  it('pipelines MAIL, RCPT and DATA in one write and sends the message dot-stuffed', async () => {
    const p = await peer({ extensions: NO_CHUNKING });
    const c = await connect(p.port);
    assert.equal(c.greeting.code, 220);
    assert.equal(c.extensions.get('SIZE'), '10485760');
    const res = await c.send(envelope(['b@y.test', 'c@y.test'], MSG), source(MSG, 7));
    assert.deepEqual(res.recipients.map(code), ['250 2.0.0', '250 2.0.0']);
    const s = p.last;
    assert.deepEqual(s.commands, ['EHLO client.test', `MAIL FROM:<a@x.test> SIZE=${MSG.length}`, 'RCPT TO:<b@y.test>', 'RCPT TO:<c@y.test>', 'DATA']);
    assert.ok(
      s.reads.some((r) => r.toString() === `MAIL FROM:<a@x.test> SIZE=${MSG.length}\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n`),
      'one write for the pipelined group',
    );
    assert.deepEqual(s.messages[0]!.data, MSG);
    assert.equal(s.messages[0]!.bdat, false);
    const wire = Buffer.concat(s.reads).toString();
    assert.ok(wire.includes('\r\n..dot line\r\n..\r\n...\r\nbye\r\n.\r\n'), 'lines starting with "." were stuffed');
    assert.equal(c.usable, true);
    await c.quit();
    assert.equal(c.usable, false);
    await waitFor(() => s.closed, 2000, 'the peer to see the close');
    assert.equal(s.commands.at(-1), 'QUIT');
  });

  it('without PIPELINING sends one command at a time', async () => {
    const p = await peer({ extensions: ['8BITMIME', 'SIZE 1000000'] });
    const c = await connect(p.port);
    const res = await c.send(envelope(['b@y.test', 'c@y.test'], MSG), source(MSG));
    assert.deepEqual(res.recipients.map(code), ['250 2.0.0', '250 2.0.0']);
    const s = p.last;
    const mail = s.reads.findIndex((r) => r.toString().startsWith('MAIL'));
    assert.deepEqual(
      s.reads.slice(mail, mail + 4).map((r) => r.toString()),
      [`MAIL FROM:<a@x.test> SIZE=${MSG.length}\r\n`, 'RCPT TO:<b@y.test>\r\n', 'RCPT TO:<c@y.test>\r\n', 'DATA\r\n'],
    );
    assert.deepEqual(s.messages[0]!.data, MSG);
  });

  it('sends with BDAT when CHUNKING is offered: chunks of at least 64 KB, LAST at the end, same bytes', async () => {
    const big = Buffer.alloc(200_000, 'x\r\n.y\r\n');
    for (const extensions of [DEFAULT_EXTENSIONS, ['CHUNKING', '8BITMIME']]) {
      const p = await peer({ extensions });
      const c = await connect(p.port);
      const res = await c.send(envelope(['b@y.test'], big), source(big, 10_000));
      assert.deepEqual(res.recipients.map(code), ['250 2.0.0']);
      const m = p.last.messages[0]!;
      assert.equal(m.bdat, true);
      assert.deepEqual(m.data, big);
      assert.deepEqual(m.chunks, [70_000, 70_000, 60_000]);
      assert.ok(p.last.commands.includes('BDAT 60000 LAST'));
      assert.ok(!p.last.commands.includes('DATA'));
      // An empty message is one "BDAT 0 LAST".
      await c.send(envelope(['b@y.test'], Buffer.alloc(0)), source(Buffer.alloc(0)));
      assert.equal(p.last.commands.at(-1), 'BDAT 0 LAST');
      assert.equal(p.last.messages[1]!.data.length, 0);
    }
  });

  it('gives each recipient its own RCPT reply, and the message reply to the accepted ones', async () => {
    const p = await peer({ on: (c) => (c.verb === 'RCPT' && c.arg.includes('bad') ? '550 5.1.1 No such user' : undefined) });
    const c = await connect(p.port);
    const res = await c.send(envelope(['b@y.test', 'bad@y.test', 'c@y.test'], MSG), source(MSG));
    assert.deepEqual(res.recipients.map(code), ['250 2.0.0', '550 5.1.1', '250 2.0.0']);
    assert.deepEqual(res.recipients[1]!.lines, ['No such user']);
    assert.equal(p.last.messages.length, 1);
  });

  it('a refused MAIL is every recipient’s answer; nothing is sent after it without PIPELINING', async () => {
    for (const extensions of [NO_CHUNKING, ['8BITMIME']]) {
      const p = await peer({ extensions, on: (c) => (c.verb === 'MAIL' ? '553 5.7.1 Sender refused' : c.verb === 'RCPT' ? '503 5.5.1 Need MAIL' : undefined) });
      const c = await connect(p.port);
      let opened = false;
      const res = await c.send(envelope(['b@y.test', 'c@y.test'], MSG), () => ((opened = true), source(MSG)()));
      assert.deepEqual(res.recipients.map(code), ['553 5.7.1', '553 5.7.1']);
      assert.equal(opened, false, 'the message was never opened');
      if (extensions.includes('PIPELINING')) assert.equal(p.last.messages.length, 1, 'the peer said 354 anyway: an empty message ended it');
      else assert.deepEqual(p.last.commands.slice(1), [`MAIL FROM:<a@x.test>`]);
      assert.equal(c.usable, true);
    }
  });

  it('ends a pipelined DATA cleanly when no recipient was accepted but the server said 354', async () => {
    const p = await peer({ extensions: NO_CHUNKING, on: (c) => (c.verb === 'RCPT' ? '550 5.1.1 No such user' : undefined) });
    const c = await connect(p.port);
    const res = await c.send(envelope(['b@y.test'], MSG), source(MSG));
    assert.deepEqual(res.recipients.map(code), ['550 5.1.1']);
    assert.deepEqual(p.last.messages[0]!.data, Buffer.alloc(0));
    assert.ok(Buffer.concat(p.last.reads).toString().endsWith('DATA\r\n.\r\n'));
  });

  it('resets a transaction left open, in the same write as the next MAIL', async () => {
    let refuse = true;
    const p = await peer({ extensions: NO_CHUNKING, on: (c) => (c.verb === 'RCPT' && refuse ? '550 5.1.1 No such user' : c.verb === 'DATA' && refuse ? '554 5.5.1 No valid recipients' : undefined) });
    const c = await connect(p.port);
    assert.deepEqual((await c.send(envelope(['b@y.test'], MSG), source(MSG))).recipients.map(code), ['550 5.1.1']);
    refuse = false;
    assert.deepEqual((await c.send(envelope(['b@y.test'], MSG), source(MSG))).recipients.map(code), ['250 2.0.0']);
    assert.ok(p.last.reads.some((r) => r.toString().startsWith('RSET\r\nMAIL FROM:<a@x.test>')));
    assert.equal(p.last.messages.length, 1);
  });

  it('reset() then a second send on the same connection', async () => {
    const p = await peer();
    const c = await connect(p.port);
    await c.send(envelope(['b@y.test'], MSG), source(MSG));
    await c.reset();
    await c.send(envelope(['c@y.test'], MSG), source(MSG));
    const cmds = p.last.commands;
    assert.deepEqual(cmds.slice(cmds.indexOf('RSET')), ['RSET', `MAIL FROM:<a@x.test> SIZE=${MSG.length}`, 'RCPT TO:<c@y.test>', `BDAT ${MSG.length} LAST`]);
    assert.equal(p.last.messages.length, 2);
    assert.equal(p.sessions.length, 1);
  });

  it('refuses locally, without sending, what the peer cannot take', async () => {
    const p = await peer({ extensions: ['PIPELINING', 'SIZE 100'] });
    const c = await connect(p.port);
    let opened = false;
    const open = (): Readable => ((opened = true), source(MSG)());
    const size = await c.send(envelope(['b@y.test', 'c@y.test'], MSG, { size: 101 }), open);
    assert.deepEqual(size.recipients.map(code), ['552 5.3.4', '552 5.3.4']);
    const eight = await c.send(envelope(['b@y.test'], MSG, { size: 50, eightBit: true }), open);
    assert.deepEqual(eight.recipients.map(code), ['554 5.6.3']);
    assert.match(eight.recipients[0]!.lines[0]!, /Conversion required and not supported/);
    const utf8 = await c.send(envelope(['jösé@y.test'], MSG, { size: 50, smtputf8: true }), open);
    assert.deepEqual(utf8.recipients.map(code), ['553 5.6.7']);
    const bad = await c.send(envelope(['b@y.test\r\nRSET', 'c@y.test'], MSG, { size: 50 }), open);
    assert.deepEqual(bad.recipients.map(code), ['501 5.1.3', '250 2.0.0']);
    assert.equal(opened, true, 'only the last one');
    assert.deepEqual(p.last.commands.slice(1, 3), ['MAIL FROM:<a@x.test> SIZE=50', 'RCPT TO:<c@y.test>']);
  });

  it('uses BODY=8BITMIME and SMTPUTF8 when needed and offered', async () => {
    const p = await peer();
    const c = await connect(p.port);
    const msg = Buffer.from('Subject: ünïcode\r\n\r\nçа\r\n');
    await c.send({ from: 'jösé@x.test', recipients: [{ address: 'ñ@y.test' }], size: msg.length, eightBit: true, smtputf8: true }, source(msg));
    assert.deepEqual(p.last.commands.slice(1, 3), [`MAIL FROM:<jösé@x.test> SIZE=${msg.length} BODY=8BITMIME SMTPUTF8`, 'RCPT TO:<ñ@y.test>']);
    assert.deepEqual(p.last.messages[0]!.data, msg);
  });

  it('sends DSN parameters only when DSN is offered', async () => {
    const env: SendEnvelope = {
      from: 'a@x.test',
      recipients: [
        { address: 'b@y.test', notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'b@y.test' } },
        { address: 'c@y.test', notify: [], orcpt: { type: 'rfc822', address: 'ç=+x@y.test' } },
      ],
      size: 123,
      eightBit: false,
      smtputf8: false,
      ret: 'HDRS',
      envid: 'abc+',
    };
    const withDsn = await peer({ extensions: ['PIPELINING', 'SIZE', 'DSN'] });
    await (await connect(withDsn.port)).send(env, source(MSG));
    assert.deepEqual(withDsn.last.commands.slice(1, 4), [
      'MAIL FROM:<a@x.test> SIZE=123 RET=HDRS ENVID=abc+2B',
      'RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test',
      'RCPT TO:<c@y.test> NOTIFY=NEVER ORCPT=rfc822;+C3+A7+3D+2Bx@y.test',
    ]);
    const without = await peer({ extensions: ['PIPELINING', 'SIZE 1000'] });
    await (await connect(without.port)).send(env, source(MSG));
    assert.deepEqual(without.last.commands.slice(1, 4), ['MAIL FROM:<a@x.test> SIZE=123', 'RCPT TO:<b@y.test>', 'RCPT TO:<c@y.test>']);
  });

  it('sends the null sender as MAIL FROM:<>', async () => {
    const p = await peer({ extensions: [] });
    await (await connect(p.port)).send(envelope(['b@y.test'], MSG, { from: '' }), source(MSG));
    assert.equal(p.last.commands[1], 'MAIL FROM:<>');
  });

  it('falls back to HELO when EHLO is not known, and then sends no parameters', async () => {
    const p = await peer({ ehlo: false });
    const c = await connect(p.port);
    assert.equal(c.extensions.size, 0);
    await c.send(envelope(['b@y.test'], MSG), source(MSG));
    assert.deepEqual(p.last.commands, ['EHLO client.test', 'HELO client.test', 'MAIL FROM:<a@x.test>', 'RCPT TO:<b@y.test>', 'DATA']);
    assert.deepEqual(p.last.messages[0]!.data, MSG);
  });

  it('a refused greeting or EHLO is a ClientError with the reply', async () => {
    const perm = await peer({ greeting: '554 5.7.1 Go away' });
    const e = await rejects(connect(perm.port), 'greeting', false, /Go away/);
    assert.equal(e.reply?.code, 554);
    const temp = await peer({ greeting: '421 4.3.2 Busy' });
    assert.equal((await rejects(connect(temp.port), 'greeting', true)).reply?.code, 421);
    const ehlo = await peer({ on: (c) => (c.verb === 'EHLO' ? '550 5.7.1 Not you' : undefined) });
    await rejects(connect(ehlo.port), 'ehlo', false, /refused EHLO/);
  });

  it('STARTTLS when offered (opportunistic): not verified, but recorded; EHLO again', async () => {
    const p = await peer({ tls: cert });
    const c = await connect(p.port, { tls: 'opportunistic', servername: 'peer.test' });
    assert.ok(c.tls);
    assert.equal(c.tls.authorized, false, 'self-signed');
    assert.match(c.tls.protocol, /^TLSv1\.[23]$/);
    assert.ok(c.tls.cipher);
    assert.equal(c.tls.peer, 'peer.test');
    assert.equal(c.extensions.has('STARTTLS'), false, 'the post-TLS EHLO replaced the list');
    await c.send(envelope(['b@y.test'], MSG), source(MSG));
    assert.equal(p.last.tls, true);
    assert.deepEqual(p.last.commands.slice(0, 3), ['EHLO client.test', 'STARTTLS', 'EHLO client.test']);
    assert.deepEqual(p.last.messages[0]!.data, MSG);
    // Verified when the certificate is trusted.
    const v = await connect(p.port, { tls: 'required', servername: 'peer.test', tlsOptions: { ca: cert.cert } });
    assert.equal(v.tls?.authorized, true);
  });

  it('required TLS: missing STARTTLS or a failed handshake is a temporary starttls error', async () => {
    const plain = await peer();
    await rejects(connect(plain.port, { tls: 'required' }), 'starttls', true, /does not offer STARTTLS/);
    const p = await peer({ tls: cert });
    await rejects(connect(p.port, { tls: 'required', servername: 'peer.test' }), 'starttls', true, /handshake/);
    const refused = await peer({ tls: cert, on: (c) => (c.verb === 'STARTTLS' ? '454 4.7.0 TLS not available' : undefined) });
    await rejects(connect(refused.port, { tls: 'opportunistic' }), 'starttls', true, /refused STARTTLS/);
  });

  it('implicit TLS (port 465 style)', async () => {
    const p = await peer({ tls: cert, implicitTls: true });
    const c = await connect(p.port, { tls: 'implicit', tlsOptions: { rejectUnauthorized: false } });
    assert.ok(c.tls);
    await c.send(envelope(['b@y.test'], MSG), source(MSG));
    assert.deepEqual(p.last.messages[0]!.data, MSG);
  });

  it('refuses anything sent after the 220 to STARTTLS (response injection)', async () => {
    const p = await peer({ tls: cert, on: (c) => (c.verb === 'STARTTLS' ? '220 2.0.0 Go ahead\r\n250-injected' : undefined) });
    await rejects(connect(p.port, { tls: 'opportunistic' }), 'protocol', true, /after its STARTTLS reply/);
    const q = await peer({ tls: cert, on: (c) => (c.verb === 'STARTTLS' ? '220 2.0.0 Go ahead\r\n250 injected' : undefined) });
    await rejects(connect(q.port, { tls: 'opportunistic' }), 'starttls', true, /unexpected reply/);
  });

  it('AUTH PLAIN, AUTH LOGIN, bad credentials, and never without TLS', async () => {
    const credentials = { user: 'me@x.test', password: 'sécret' };
    const plain = await peer({ tls: cert, extensions: ['PIPELINING', 'AUTH LOGIN PLAIN'], credentials });
    await connect(plain.port, { tls: 'opportunistic', auth: credentials });
    assert.deepEqual(plain.last.auth, [{ mechanism: 'PLAIN', ...credentials }]);
    const login = await peer({ tls: cert, extensions: ['AUTH LOGIN'], credentials });
    await connect(login.port, { tls: 'opportunistic', auth: credentials });
    assert.deepEqual(login.last.auth, [{ mechanism: 'LOGIN', ...credentials }]);
    const e = await rejects(connect(plain.port, { tls: 'opportunistic', auth: { user: 'me@x.test', password: 'wrong' } }), 'auth', false);
    assert.equal(e.reply?.code, 535);
    const temp = await peer({ tls: cert, extensions: ['AUTH PLAIN'], on: (c) => (c.verb === 'AUTH' ? '454 4.7.0 Try later' : undefined) });
    await rejects(connect(temp.port, { tls: 'opportunistic', auth: credentials }), 'auth', true);
    // tls 'none': refused before connecting.
    const before = plain.sessions.length;
    await rejects(connect(plain.port, { tls: 'none', auth: credentials }), 'auth', false, /never sent without TLS/);
    assert.equal(plain.sessions.length, before);
    // Opportunistic, but no STARTTLS offered: the password stays home.
    const clear = await peer({ extensions: ['AUTH PLAIN'] });
    await rejects(connect(clear.port, { tls: 'opportunistic', auth: credentials }), 'auth', true, /not encrypted/);
    assert.ok(!clear.last.commands.some((l) => l.startsWith('AUTH')));
  });

  it('a 421 mid-transaction answers every unfinished recipient and ends the connection', async () => {
    const p = await peer({
      extensions: NO_CHUNKING,
      on: (c) => (c.verb === 'RCPT' && c.arg.includes('bad') ? '550 5.1.1 No such user' : c.verb === 'RCPT' && c.arg.includes('d@') ? { reply: '421 4.3.2 Shutting down', close: true } : undefined),
    });
    const c = await connect(p.port);
    const res = await c.send(envelope(['b@y.test', 'bad@y.test', 'd@y.test', 'e@y.test'], MSG), source(MSG));
    assert.deepEqual(res.recipients.map(code), ['421 4.3.2', '550 5.1.1', '421 4.3.2', '421 4.3.2']);
    assert.equal(c.usable, false);
    await rejects(c.send(envelope(['b@y.test'], MSG), source(MSG)), 'mail', true, /closing/);
    // After MAIL, and after the end of data, too.
    for (const verb of ['MAIL', 'EOM']) {
      const q = await peer({ on: (x) => (x.verb === verb ? { reply: '421 4.4.2 Timeout', close: true } : undefined) });
      const r = await (await connect(q.port)).send(envelope(['b@y.test', 'c@y.test'], MSG), source(MSG));
      assert.deepEqual(r.recipients.map(code), ['421 4.4.2', '421 4.4.2'], verb);
    }
  });

  it('a dropped connection is a temporary ClientError', async () => {
    const p = await peer({ on: (c) => (c.verb === 'RCPT' ? 'drop' : undefined) });
    const c = await connect(p.port);
    await rejects(c.send(envelope(['b@y.test'], MSG), source(MSG)), 'mail', true, /closed by/);
    assert.equal(c.usable, false);
    const q = await peer({ extensions: NO_CHUNKING, on: (x) => (x.verb === 'EOM' ? 'drop' : undefined) });
    await rejects((await connect(q.port)).send(envelope(['b@y.test'], MSG), source(MSG)), 'data', true);
  });

  it('a stalled server times out, per phase', async () => {
    const started = Date.now();
    for (const verb of ['EHLO', 'MAIL', 'DATA', 'EOM']) {
      const p = await peer({ extensions: NO_CHUNKING, on: (c) => (c.verb === verb ? 'stall' : undefined) });
      const attempt = verb === 'EHLO' ? connect(p.port, { timeouts: SHORT }) : connect(p.port, { timeouts: SHORT }).then((c) => c.send(envelope(['b@y.test'], MSG), source(MSG)));
      const e = await rejects(attempt, 'timeout', true, /timed out after 300 ms/);
      assert.match(e.message, verb === 'EOM' ? /end of data/ : new RegExp(verb));
    }
    assert.ok(Date.now() - started < 6000, 'timeouts are short');
  });

  it('a peer that stops reading runs into the data block timeout', async () => {
    const big = Buffer.alloc(32 * 1024 * 1024, 'x\r\n');
    for (const extensions of [['PIPELINING', 'CHUNKING'], ['PIPELINING']]) {
      const p = await peer({ extensions, on: (c) => (c.verb === (extensions.includes('CHUNKING') ? 'RCPT' : 'DATA') ? { reply: c.verb === 'DATA' ? '354 go' : '250 2.1.5 OK', freeze: true } : undefined) });
      const c = await connect(p.port, { timeouts: { ...TIMEOUTS, dataBlock: 300 } });
      await rejects(c.send(envelope(['b@y.test'], big), source(big, 256 * 1024)), 'timeout', true, /sending message data/);
    }
  });

  it('a failed BDAT chunk fails the message; without PIPELINING no more chunks go, and the next send resets first', async () => {
    for (const extensions of [['CHUNKING'], ['CHUNKING', 'PIPELINING']]) {
      let fail = true;
      const p = await peer({ extensions, on: (c) => (c.verb === 'BDAT' && fail ? '552 5.3.4 Too big' : undefined) });
      const c = await connect(p.port);
      const big = Buffer.alloc(300_000, 'abc\r\n');
      const res = await c.send(envelope(['b@y.test'], big), source(big, 65_536));
      assert.deepEqual(res.recipients.map(code), ['552 5.3.4'], 'the failed chunk’s reply, even if LAST went out (pipelined)');
      fail = false;
      const again = await c.send(envelope(['b@y.test'], MSG), source(MSG));
      assert.deepEqual(again.recipients.map(code), ['250 2.0.0']);
      if (extensions.includes('PIPELINING')) continue;
      const cmds = p.last.commands;
      assert.deepEqual(cmds.slice(1), ['MAIL FROM:<a@x.test>', 'RCPT TO:<b@y.test>', 'BDAT 65536', 'RSET', 'MAIL FROM:<a@x.test>', 'RCPT TO:<b@y.test>', `BDAT ${MSG.length} LAST`]);
    }
  });

  it('a failed end of data is the accepted recipients’ answer', async () => {
    const p = await peer({ extensions: NO_CHUNKING, on: (c) => (c.verb === 'RCPT' && c.arg.includes('bad') ? '550 5.1.1 No' : c.verb === 'EOM' ? '451 4.3.0 Try again' : undefined) });
    const res = await (await connect(p.port)).send(envelope(['b@y.test', 'bad@y.test'], MSG), source(MSG));
    assert.deepEqual(res.recipients.map(code), ['451 4.3.0', '550 5.1.1']);
  });

  it('a reply the server sends out of turn fails the connection', async () => {
    const q = await peer({ on: (x) => (x.verb === 'MAIL' ? '250 2.1.0 OK\r\n250 2.1.0 again' : undefined) });
    const d = await connect(q.port, { discardExtensions: ['PIPELINING'] });
    await rejects(d.send(envelope(['b@y.test'], MSG), source(MSG)), 'mail', true, /unexpected reply/);
    assert.equal(d.usable, false);
    // A 421 after the last reply (a server closing an idle connection): the message stands, the connection is gone.
    const r = await peer({ on: (x) => (x.verb === 'EOM' ? '250 2.0.0 queued\r\n421 4.4.2 Idle timeout' : undefined) });
    const e = await connect(r.port);
    assert.deepEqual((await e.send(envelope(['b@y.test'], MSG), source(MSG))).recipients.map(code), ['250 2.0.0']);
    assert.equal(e.usable, false);
  });

  it('a message stream that fails mid-way aborts the connection (no final dot)', async () => {
    const p = await peer({ extensions: NO_CHUNKING });
    const c = await connect(p.port);
    const open = (): Readable =>
      Readable.from(
        (async function* () {
          yield Buffer.from('Subject: x\r\n\r\n');
          throw new Error('disk on fire');
        })(),
      );
    await rejects(c.send(envelope(['b@y.test'], MSG), open), 'data', true, /disk on fire/);
    await waitFor(() => p.last.closed, 2000, 'the connection to close');
    assert.equal(p.last.messages.length, 0);
  });
});

describe('SmtpClient against our own server', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(async () => {
    await srv.stop();
  });

  it('delivers identical bytes with BDAT, DATA, and DATA without PIPELINING, over STARTTLS', async () => {
    const lines: string[] = ['From: a@x.test', 'To: alice@tern.test', 'Subject: same bytes', 'Content-Type: text/plain; charset=utf-8', ''];
    for (let i = 0; i < 4000; i++) lines.push(['.', '..', '.leading dot', 'plain line', '', 'ünïcödé'][i % 6]! + ` ${i}`);
    const msg = Buffer.from(lines.join('\r\n') + '\r\n');
    const variants: Partial<ClientOptions>[] = [{}, { discardExtensions: ['CHUNKING'] }, { discardExtensions: ['CHUNKING', 'PIPELINING'] }];
    for (const v of variants) {
      const c = await connect(srv.port('smtp'), { tls: 'opportunistic', servername: 'mx.tern.test', ...v });
      assert.ok(c.tls, 'STARTTLS with our server');
      assert.equal(c.extensions.has('CHUNKING'), v.discardExtensions === undefined);
      const res = await c.send(envelope(['alice@tern.test', 'nobody@tern.test'], msg, { eightBit: true }), source(msg, 20_000));
      assert.equal(res.recipients[0]!.code, 250, JSON.stringify(res));
      assert.match(res.recipients[0]!.lines[0]!, /queued as/);
      assert.equal(res.recipients[1]!.code, 550);
      await c.quit();
    }
    await waitFor(() => mailbox(srv.dataDir, 'tern.test', 'alice').length === 3, 10_000, 'three deliveries');
    for (const f of mailbox(srv.dataDir, 'tern.test', 'alice')) {
      const got = fs.readFileSync(f);
      assert.ok(got.subarray(got.length - msg.length).equals(msg), 'the delivered file ends with exactly the message');
      assert.match(got.subarray(0, got.length - msg.length).toString(), /^(?:[A-Za-z-]+: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+$/, 'only header fields before it');
    }
  });

  it('reuses a connection for a second message', async () => {
    const before = mailbox(srv.dataDir, 'tern.test', 'bob').length;
    const c = await connect(srv.port('smtp'));
    for (const n of [1, 2]) {
      const msg = Buffer.from(`Subject: reuse ${n}\r\n\r\nbody ${n}\r\n`);
      const res = await c.send(envelope(['bob@tern.test'], msg), source(msg));
      assert.equal(res.recipients[0]!.code, 250);
      await c.reset();
    }
    await c.quit();
    await waitFor(() => mailbox(srv.dataDir, 'tern.test', 'bob').length === before + 2, 10_000, 'two deliveries');
  });
});
