// LMTP delivery (RFC 2033) against a scripted LMTP server on 127.0.0.1 and
// on a unix socket: LHLO, pipelining, one result per recipient from the
// replies after the final dot, connection reuse, a server lost mid-message.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { LmtpTransport, parseLmtpTarget, type LmtpTarget } from './lmtp.ts';
import { DeliveryRouter } from './router.ts';
import { DiscardTransport } from './discard.ts';
import type { DeliveryJob } from './types.ts';
import type { Envelope, QueuedMessage, Recipient } from '../spool/types.ts';
import { silentLogger } from '../util/log.ts';
import { checkConfig } from '../config/load.ts';
import { makeTestCa } from '../../test/helpers/test-ca.ts';

interface PeerScript {
  /** LHLO keywords. */
  extensions?: string[];
  /** The reply to RCPT for this address; default 250. */
  rcpt?: (address: string) => string | undefined;
  /** The reply after the final dot for this accepted recipient; default 250. */
  final?: (address: string) => string;
  /** Close the connection once this many message bytes have arrived. */
  dropAfterBytes?: number;
  /** Offer STARTTLS with this certificate. */
  tls?: { cert: string; key: string };
  /** Offer AUTH PLAIN (after STARTTLS) and take only these credentials. */
  credentials?: { user: string; password: string };
}

interface PeerConn {
  /** Every command line, in order. */
  lines: string[];
  /** How many command lines arrived in each socket read (pipelining shows as several in one). */
  reads: number[];
  messages: string[];
  tls: boolean;
  /** The user AUTH PLAIN authenticated, if any. */
  auth?: string;
}

/** A scripted LMTP server: just enough RFC 2033 for the transport's tests. */
class LmtpPeer {
  readonly conns: PeerConn[] = [];
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();

  private constructor(script: PeerScript) {
    this.#server = net.createServer((s) => this.#serve(s, script));
  }

  static async start(script: PeerScript, where: { path: string } | { port: 0 } = { port: 0 }): Promise<{ peer: LmtpPeer; target: LmtpTarget }> {
    const peer = new LmtpPeer(script);
    await new Promise<void>((resolve) => ('path' in where ? peer.#server.listen(where.path, resolve) : peer.#server.listen(0, '127.0.0.1', resolve)));
    const target: LmtpTarget = 'path' in where ? { path: where.path } : { host: '127.0.0.1', port: (peer.#server.address() as net.AddressInfo).port };
    return { peer, target };
  }

  #serve(s: net.Socket, script: PeerScript): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
    s.on('error', () => {});
    const conn: PeerConn = { lines: [], reads: [], messages: [], tls: false };
    this.conns.push(conn);
    let sock: net.Socket = s;
    let buf = '';
    let inData = false;
    let data = '';
    let accepted: string[] = [];
    let mail = false;
    s.write('220 lmtp.test LMTP ready\r\n');
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('latin1');
      let n = 0;
      let out = '';
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (script.dropAfterBytes !== undefined && data.length + buf.length >= script.dropAfterBytes) return void sock.destroy();
          if (end < 0 && !buf.startsWith('.\r\n')) break;
          const body = buf.startsWith('.\r\n') ? '' : buf.slice(0, end + 2);
          buf = buf.slice(buf.startsWith('.\r\n') ? 3 : end + 5);
          data += body;
          conn.messages.push(data.replace(/^\.\./gm, '.'));
          for (const a of accepted) out += (script.final?.(a) ?? `250 2.0.0 <${a}> delivered`) + '\r\n';
          inData = false;
          data = '';
          accepted = [];
          mail = false;
          continue;
        }
        const eol = buf.indexOf('\r\n');
        if (eol < 0) break;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        conn.lines.push(line);
        n++;
        const verb = line.split(' ')[0]!.toUpperCase();
        if (verb === 'LHLO') {
          const ext = [...(script.extensions ?? ['PIPELINING', 'ENHANCEDSTATUSCODES', '8BITMIME'])];
          if (script.tls && !conn.tls) ext.push('STARTTLS');
          if (script.credentials && conn.tls) ext.push('AUTH PLAIN');
          out += ['250-lmtp.test', ...ext].join('\r\n250-').replace(/250-([^\r]*)$/, '250 $1') + '\r\n';
        } else if (verb === 'STARTTLS' && script.tls && !conn.tls) {
          sock.write(out + '220 2.0.0 Ready to start TLS\r\n');
          sock.off('data', onData);
          const t = new tls.TLSSocket(sock, { isServer: true, secureContext: tls.createSecureContext(script.tls) });
          t.on('error', () => {});
          t.on('data', onData);
          sock = t;
          conn.tls = true;
          buf = '';
          return;
        } else if (verb === 'AUTH' && script.credentials && conn.tls) {
          const [, mech, initial] = line.split(' ');
          const [, user, password] = Buffer.from(initial ?? '', 'base64').toString('utf8').split('\0');
          if (mech?.toUpperCase() === 'PLAIN' && user === script.credentials.user && password === script.credentials.password) {
            conn.auth = user;
            out += '235 2.7.0 Authentication successful\r\n';
          } else out += '535 5.7.8 Authentication credentials invalid\r\n';
        }
        else if (verb === 'EHLO' || verb === 'HELO') out += '500 5.5.1 This is LMTP\r\n';
        else if (verb === 'MAIL') {
          mail = true;
          out += '250 2.1.0 OK\r\n';
        } else if (verb === 'RCPT') {
          const a = /<([^>]*)>/.exec(line)![1]!;
          const r = script.rcpt?.(a) ?? '250 2.1.5 OK';
          if (r.startsWith('2')) accepted.push(a);
          out += r + '\r\n';
        } else if (verb === 'DATA') {
          if (!mail || accepted.length === 0) out += '503 5.5.1 No valid recipients\r\n';
          else {
            out += '354 OK\r\n';
            inData = true;
          }
        } else if (verb === 'RSET') {
          accepted = [];
          mail = false;
          out += '250 2.0.0 OK\r\n';
        } else if (verb === 'QUIT') {
          sock.end('221 2.0.0 Bye\r\n');
          return;
        } else out += '502 5.5.2 Unknown command\r\n';
      }
      if (n > 0) conn.reads.push(n);
      if (out) sock.write(out);
    };
    s.on('data', onData);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

const local = (user: string, domain = 'lmtp.test'): Recipient => ({ address: `${user}@${domain}`, original: `${user}@${domain}`, mailbox: { domain, localPart: user } });

function job(users: string[], body = 'Subject: t\r\n\r\nbody\r\n.leading dot\r\n'): DeliveryJob {
  const recipients = users.map((u) => local(u));
  const envelope: Envelope = { id: `Q${Math.random().toString(36).slice(2, 10)}`, sender: 'alice@example.org', recipients, receivedAt: Date.now(), smtputf8: false };
  const msg: QueuedMessage = { envelope, state: { attempts: 0, nextAttempt: 0, status: recipients.map(() => 'pending'), lastReply: recipients.map(() => null) }, bodyLength: body.length, size: body.length, recovered: false };
  return { msg, indices: recipients.map((_, i) => i), open: () => Readable.from([Buffer.from(body)]) };
}

const TIMEOUTS = { connect: 2000, command: 2000, dataBlock: 2000, dataEnd: 2000 };
const transport = (target: LmtpTarget, reuseMs = 5000): LmtpTransport => new LmtpTransport({ target, heloName: 'tern.test', timeouts: TIMEOUTS, reuseMs, log: silentLogger });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-lmtp-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('LMTP targets', () => {
  it('parses lmtp://HOST:PORT, [IPv6], the default port 24, and lmtp:/path; refuses the rest', () => {
    assert.deepEqual(parseLmtpTarget('lmtp://127.0.0.1:2424'), { host: '127.0.0.1', port: 2424 });
    assert.deepEqual(parseLmtpTarget('lmtp://mail.internal'), { host: 'mail.internal', port: 24 });
    assert.deepEqual(parseLmtpTarget('lmtp://[::1]:24'), { host: '::1', port: 24 });
    assert.deepEqual(parseLmtpTarget('lmtp:/var/run/dovecot/lmtp'), { path: '/var/run/dovecot/lmtp' });
    assert.deepEqual(parseLmtpTarget('lmtp://tern:s%40cret%3A1@mail.internal:2424'), { host: 'mail.internal', port: 2424, auth: { user: 'tern', password: 's@cret:1' } });
    for (const bad of ['lmtp://', 'lmtp://h:0', 'lmtp://h:99999', 'lmtp://h:x', 'lmtp:relative', 'smtp://h:25', 'lmtp:/a b', 'lmtp://u:%zz@h:24']) {
      assert.ok('problem' in parseLmtpTarget(bad), bad);
    }
    // A problem never repeats the password.
    const p = parseLmtpTarget('lmtp://u:topsecret@h:0');
    assert.ok('problem' in p && !p.problem.includes('topsecret'), JSON.stringify(p));
  });
});

describe('domains[].delivery in the config', () => {
  it('keeps LMTP targets as written, and names the key and line of a bad one', () => {
    const file = path.join(tmp, 'tern.yaml');
    fs.writeFileSync(file, 'domains:\n  - { name: a.test, delivery: "lmtp://127.0.0.1:24" }\n  - { name: b.test, delivery: "lmtp:/run/dovecot/lmtp" }\n  - { name: c.test }\n');
    const ok = checkConfig(file);
    assert.deepEqual(ok.problems, []);
    assert.deepEqual(ok.config!.domains.map((d) => d.delivery), ['lmtp://127.0.0.1:24', 'lmtp:/run/dovecot/lmtp', undefined]);
    fs.writeFileSync(file, 'domains:\n  - name: a.test\n    delivery: "smtp://127.0.0.1:24"\n');
    const bad = checkConfig(file).problems;
    assert.equal(bad.length, 1, JSON.stringify(bad));
    assert.equal(bad[0]!.path, 'domains[0].delivery');
    assert.equal(bad[0]!.line, 3);
    assert.match(bad[0]!.message, /lmtp:\/\/HOST:PORT/);
  });
});

describe('LMTP delivery', () => {
  it('gives one result per recipient from the replies after the final dot: 250 delivered, 550 bounced, 452 deferred', async () => {
    const { peer, target } = await LmtpPeer.start({
      rcpt: (a) => (a.startsWith('nobody@') ? '550 5.1.1 <nobody@lmtp.test> User doesn\'t exist' : undefined),
      final: (a) => (a.startsWith('full@') ? '452 4.2.2 <full@lmtp.test> Mailbox is full' : a.startsWith('quota@') ? '552 5.2.2 <quota@lmtp.test> Quota exceeded' : `250 2.0.0 <${a}> Saved`),
    });
    const t = transport(target);
    try {
      const results = await t.deliver(job(['bob', 'nobody', 'full', 'quota', 'carol']));
      assert.deepEqual(results.map((r) => [r.status, r.reply.code, r.reply.enhanced]), [
        ['ok', 250, '2.0.0'],
        ['permfail', 550, '5.1.1'],
        ['tempfail', 452, '4.2.2'],
        ['permfail', 552, '5.2.2'],
        ['ok', 250, '2.0.0'],
      ]);
      assert.match(results[0]!.reply.text, /<bob@lmtp\.test> Saved/);
      assert.match(results[4]!.reply.text, /<carol@lmtp\.test> Saved/);
      assert.equal(results[0]!.successDsn, 'delivered', 'LMTP is the final delivery');
      assert.deepEqual(results[0]!.relay, { host: '127.0.0.1', ip: '127.0.0.1', port: (target as { port: number }).port });
      const c = peer.conns[0]!;
      assert.equal(c.lines[0], 'LHLO tern.test');
      assert.ok(!c.lines.some((l) => /^(EHLO|HELO)/.test(l)));
      assert.equal(c.messages[0], 'Subject: t\r\n\r\nbody\r\n.leading dot\r\n', 'dot-stuffed on the wire, intact at the server');
    } finally {
      await t.close();
      await peer.close();
    }
  });

  it('pipelines MAIL, every RCPT and DATA in one write when PIPELINING is offered, and not otherwise', async () => {
    for (const pipelining of [true, false]) {
      const { peer, target } = await LmtpPeer.start({ extensions: pipelining ? ['PIPELINING', 'ENHANCEDSTATUSCODES'] : ['ENHANCEDSTATUSCODES'] });
      const t = transport(target);
      try {
        const results = await t.deliver(job(['a', 'b', 'c']));
        assert.deepEqual(results.map((r) => r.status), ['ok', 'ok', 'ok']);
        const c = peer.conns[0]!;
        assert.deepEqual(c.lines.slice(1, 6), ['MAIL FROM:<alice@example.org>', 'RCPT TO:<a@lmtp.test>', 'RCPT TO:<b@lmtp.test>', 'RCPT TO:<c@lmtp.test>', 'DATA']);
        // The reads after LHLO: one with MAIL, three RCPTs and DATA when pipelined; one command each otherwise.
        if (pipelining) assert.equal(c.reads[1], 5, `reads: ${c.reads.join(',')}`);
        else assert.deepEqual(c.reads.slice(1, 6), [1, 1, 1, 1, 1]);
      } finally {
        await t.close();
        await peer.close();
      }
    }
  });

  it('reuses the connection for the next job, and closes it with QUIT at shutdown', async () => {
    const { peer, target } = await LmtpPeer.start({});
    const t = transport(target);
    try {
      assert.deepEqual((await t.deliver(job(['a']))).map((r) => r.status), ['ok']);
      assert.deepEqual((await t.deliver(job(['b', 'c']))).map((r) => r.status), ['ok', 'ok']);
      assert.equal(peer.conns.length, 1, 'one connection for both jobs');
      assert.equal(peer.conns[0]!.messages.length, 2);
      assert.equal(peer.conns[0]!.lines.filter((l) => l.startsWith('LHLO')).length, 1);
      await t.close();
      assert.equal(peer.conns[0]!.lines.at(-1), 'QUIT');
    } finally {
      await t.close();
      await peer.close();
    }
  });

  it('STARTTLS when the agent offers it over TCP (opportunistic, not verified)', async () => {
    const ca = await makeTestCa();
    try {
      const { peer, target } = await LmtpPeer.start({ tls: await ca.issue(['lmtp.test']) });
      const t = transport(target);
      try {
        const [r] = await t.deliver(job(['bob']));
        assert.equal(r!.status, 'ok');
        assert.equal(peer.conns[0]!.tls, true);
        assert.equal(r!.tls?.verified, false, 'self-made CA, not trusted: recorded, not required');
        assert.equal(peer.conns[0]!.messages.length, 1);
      } finally {
        await t.close();
        await peer.close();
      }
    } finally {
      ca.close();
    }
  });

  it('AUTH with the credentials of lmtp://user:password@host: only over TLS with a verified certificate', async () => {
    const ca = await makeTestCa();
    try {
      const cert = await ca.issue(['127.0.0.1']);
      const credentials = { user: 'tern', password: 's@cret' };
      const { peer, target } = await LmtpPeer.start({ tls: cert, credentials });
      const withAuth = { ...target, auth: credentials } as LmtpTarget;
      const trusted = new LmtpTransport({ target: withAuth, heloName: 'tern.test', timeouts: TIMEOUTS, reuseMs: 0, log: silentLogger, tlsOptions: { ca: ca.cert } });
      const [ok] = await trusted.deliver(job(['bob']));
      assert.equal(ok!.status, 'ok', JSON.stringify(ok!.reply));
      assert.equal(peer.conns.at(-1)!.auth, 'tern');
      assert.equal(ok!.tls?.verified, true);
      // Wrong password: the agent's 535 defers (a local agent's refusal is a reason to wait, see lmtp.ts).
      const wrong = new LmtpTransport({ target: { ...withAuth, auth: { user: 'tern', password: 'nope' } } as LmtpTarget, heloName: 'tern.test', timeouts: TIMEOUTS, reuseMs: 0, log: silentLogger, tlsOptions: { ca: ca.cert } });
      const [bad] = await wrong.deliver(job(['bob']));
      assert.equal(bad!.status, 'tempfail');
      assert.equal(bad!.reply.code, 451);
      // A certificate nobody vouches for: the password is never sent.
      const before = peer.conns.length;
      const untrusted = new LmtpTransport({ target: withAuth, heloName: 'tern.test', timeouts: TIMEOUTS, reuseMs: 0, log: silentLogger });
      const [refused] = await untrusted.deliver(job(['bob']));
      assert.equal(refused!.status, 'tempfail');
      assert.ok(peer.conns.slice(before).every((c) => !c.lines.some((l) => l.startsWith('AUTH'))), 'no AUTH line reached the agent');
      await peer.close();
    } finally {
      ca.close();
    }
  });

  it('delivers over a unix socket', async () => {
    const sock = path.join(tmp, 'lmtp.sock');
    const { peer, target } = await LmtpPeer.start({ rcpt: (a) => (a.startsWith('x@') ? '550 5.1.1 no' : undefined) }, { path: sock });
    const t = transport(target);
    try {
      const results = await t.deliver(job(['bob', 'x']));
      assert.deepEqual(results.map((r) => r.status), ['ok', 'permfail']);
      assert.deepEqual(results[0]!.relay, { host: 'localhost', ip: sock, port: 0 });
      assert.equal(results[0]!.tls, null);
      assert.equal(peer.conns[0]!.messages.length, 1);
    } finally {
      await t.close();
      await peer.close();
    }
  });

  it('defers every recipient when the server drops the connection during the message, and reconnects next time', async () => {
    const big = 'Subject: big\r\n\r\n' + 'x'.repeat(998) + '\r\n'.repeat(1) + ('y'.repeat(200) + '\r\n').repeat(500);
    const { peer, target } = await LmtpPeer.start({ dropAfterBytes: 10_000 });
    const t = transport(target);
    try {
      const results = await t.deliver(job(['a', 'b'], big));
      assert.deepEqual(results.map((r) => [r.status, r.reply.code]), [['tempfail', 451], ['tempfail', 451]]);
      assert.deepEqual((await t.deliver(job(['c'], 'Subject: small\r\n\r\nhi\r\n'))).map((r) => r.status), ['ok']);
      assert.equal(peer.conns.length, 2);
    } finally {
      await t.close();
      await peer.close();
    }
  });

  it('defers when nothing listens, and keeps the per-recipient replies already given when the connection is lost after some', async () => {
    const dead = transport({ host: '127.0.0.1', port: 1 });
    const r = await dead.deliver(job(['a']));
    assert.deepEqual(r.map((x) => [x.status, x.reply.code, x.reply.enhanced]), [['tempfail', 451, '4.4.1']]);

    // The server answers the first recipient after the dot, then goes away: that one is delivered.
    let socket: net.Socket | undefined;
    const server = net.createServer((s) => {
      socket = s;
      s.write('220 x LMTP\r\n');
      let buf = '';
      s.on('data', (c: Buffer) => {
        buf += c.toString();
        if (buf.includes('LHLO') && !buf.includes('MAIL')) s.write('250-x\r\n250 PIPELINING\r\n');
        if (buf.includes('DATA\r\n') && !buf.includes('\r\n.\r\n')) s.write('250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n'), (buf += '#');
        if (buf.includes('\r\n.\r\n')) s.end('250 2.0.0 a saved\r\n');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const t = transport({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
    try {
      const results = await t.deliver(job(['a', 'b']));
      assert.deepEqual(results.map((x) => [x.status, x.reply.code]), [['ok', 250], ['tempfail', 451]]);
      assert.equal(results[1]!.reply.enhanced, '4.4.2');
    } finally {
      await t.close();
      socket?.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('the router and LMTP domains', () => {
  it('sends an LMTP domain\'s recipients to that target\'s transport, one destination per target, and closes it', async () => {
    const made: string[] = [];
    let closed = 0;
    const router = new DeliveryRouter({
      maildir: new DiscardTransport(),
      discard: new DiscardTransport(),
      localDelivery: (d) => (d === 'a.test' || d === 'b.test' ? 'lmtp://127.0.0.1:24' : d === 'c.test' ? 'lmtp:/run/lmtp' : 'maildir'),
      lmtp: (spec) => {
        made.push(spec);
        return { transport: { name: 'lmtp', deliver: async () => [] }, close: async () => void closed++ };
      },
      perDestination: 2,
    });
    const env: Envelope = { id: 'Q1', sender: '', recipients: [local('x', 'a.test'), local('y', 'b.test'), local('z', 'c.test'), local('w', 'd.test')], receivedAt: 0, smtputf8: false };
    const keys = env.recipients.map((_, i) => router.route(env, i)!.key);
    assert.deepEqual(keys, ['lmtp://127.0.0.1:24', 'lmtp://127.0.0.1:24', 'lmtp:/run/lmtp', 'local']);
    assert.equal(router.route(env, 0)!.transport.name, 'lmtp');
    assert.deepEqual(made, ['lmtp://127.0.0.1:24', 'lmtp:/run/lmtp']);
    await router.close();
    assert.equal(closed, 2);
  });
});
