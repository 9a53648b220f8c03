// The session against a fake backend (src/policy/backend.ts) that fails on
// demand at every stage: the session turns a verdict into its reply, a
// fault into 451 4.3.0, and stays in step with the client whatever failed —
// pipelined commands behind a failure get their own replies, in order.
// Real sockets on 127.0.0.1 (STYLE.md habit 8). The last tests put the
// real backend, intake and spool behind the session, with the disk failing
// underneath (ENOSPC → 452 4.3.1, EIO → 451 4.3.0).

import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Session, type SessionDeps } from './session.ts';
import { IdleSweeper } from './idle-sweeper.ts';
import { SmtpError } from '../smtp/reply.ts';
import { formatAddress, type Address } from '../smtp/address.ts';
import type { Backend, BackendSession, MessageSink, MessageTrace, Queued } from '../policy/backend.ts';
import { TernBackend } from '../policy/backend.ts';
import { Policy, type SessionInfo } from '../policy/policy.ts';
import { Directory } from '../policy/directory.ts';
import { Intake } from '../intake/intake.ts';
import { Spool } from '../spool/spool.ts';
import { defaultConfig } from '../config/defaults.ts';
import type { DomainConfig, LimitsConfig } from '../config/types.ts';
import { silentLogger } from '../util/log.ts';
import { RawClient } from '../../test/helpers/server.ts';
import { FaultIo, errno } from '../../test/helpers/fault-io.ts';

type Stage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data' | 'commit';

/**
 * A backend that records every call and fails where a test says: `fail[stage]`
 * returns what to throw (an SmtpError verdict, or any other fault) for that
 * call, or nothing to let it through. `hold` makes commits wait for release().
 */
class FakeBackend implements Backend {
  readonly calls: string[] = [];
  readonly fail: Partial<Record<Stage, (arg: string) => unknown>> = {};
  /** The messages committed: their octets as the session handed them over. */
  readonly messages: string[] = [];
  hold: Promise<void> | null = null;
  #release: (() => void) | null = null;
  #queued = 0;

  holdCommits(): void {
    this.hold = new Promise((r) => (this.#release = r));
  }
  release(): void {
    this.#release?.();
    this.hold = null;
  }

  #check(stage: Stage, arg: string): void {
    this.calls.push(arg ? `${stage} ${arg}` : stage);
    const e = this.fail[stage]?.(arg);
    if (e !== undefined) throw e;
  }

  async connect(info: SessionInfo): Promise<BackendSession> {
    this.#check('connect', '');
    const backend = this;
    return {
      authAvailable: false,
      async helo(name: string) {
        backend.#check('helo', name);
      },
      async auth(): Promise<string> {
        throw new SmtpError(502, '5.5.1', 'no AUTH here');
      },
      async mail(from: Address | null) {
        backend.#check('mail', `<${formatAddress(from)}>`);
      },
      async rcpt(to: Address | 'postmaster') {
        backend.#check('rcpt', to === 'postmaster' ? '<postmaster>' : `<${formatAddress(to)}>`);
      },
      data(trace: MessageTrace): MessageSink {
        backend.#check('data', trace.protocol);
        return backend.#sink(info);
      },
      reset() {
        backend.calls.push('reset');
      },
    };
  }

  #sink(info: SessionInfo): MessageSink {
    const chunks: Buffer[] = [];
    let ended = false;
    return {
      write: (chunk) => {
        assert.equal(ended, false, `write after commit or abort (${info.id})`);
        chunks.push(Buffer.from(chunk));
        return true;
      },
      onDrain: () => {},
      commit: async (): Promise<Queued> => {
        assert.equal(ended, false, 'one commit or abort per message');
        ended = true;
        await this.hold;
        const body = Buffer.concat(chunks).toString('latin1');
        this.#check('commit', '');
        this.messages.push(body);
        return { id: `Q${++this.#queued}`, sender: 's@x.test', recipients: 1, size: body.length };
      },
      abort: async () => {
        this.calls.push('abort');
        ended = true;
      },
    };
  }
}

const HOST = 'mx.session.test';

/** A listener on 127.0.0.1:0 that hands every connection to a Session with these deps. */
async function listen(backend: Backend, limits: Partial<LimitsConfig> = {}): Promise<{ port: number; close: () => Promise<void> }> {
  const all = { ...defaultConfig().limits, ...limits };
  const deps: SessionDeps = { hostname: HOST, limits: all, backend, log: silentLogger, sweeper: new IdleSweeper(all.timeouts.command) };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    void new Session(socket, 'smtp', deps).start();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

async function connect(port: number, ehlo = true): Promise<RawClient> {
  const c = await RawClient.connect(port);
  c.socket.setNoDelay(true);
  assert.match(await c.reply(), /^220 /);
  if (ehlo) assert.match(await c.cmd('EHLO client.test'), /^250[ -]/);
  return c;
}

/** Read the next replies, one pattern each, in order. */
async function replies(c: RawClient, ...patterns: RegExp[]): Promise<void> {
  const seen: string[] = [];
  for (const p of patterns) {
    const r = await c.reply();
    assert.match(r, p, `reply ${seen.length + 1} of ${patterns.length} (before: ${JSON.stringify(seen)})`);
    seen.push(r);
  }
}

/** Nothing more within `ms`. */
async function silence(c: RawClient, ms = 100): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
  assert.equal(c.pending, '', 'no further reply');
}

const fault = (): Error => new TypeError('backend bug: cannot read properties of undefined');

describe('session with a fake backend', () => {
  // A fresh backend and listener per test: each test's call log is its own.
  let backend: FakeBackend;
  let srv: { port: number; close: () => Promise<void> };
  beforeEach(async () => {
    backend = new FakeBackend();
    srv = await listen(backend, { errors: 3 });
  });
  afterEach(() => srv.close());

  it('calls the backend once per command, in order, and reports the queue id it gives', async () => {
    const c = await connect(srv.port);
    try {
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n');
      await replies(c, /^250 2\.1\.0 /, /^250 2\.1\.5 /, /^250 2\.1\.5 /, /^354 /);
      c.send('Subject: hi\r\n\r\n..dot\r\n.\r\n');
      await replies(c, /^250 2\.0\.0 OK queued as Q\d+$/);
      assert.deepEqual(backend.messages, ['Subject: hi\r\n\r\n.dot\r\n']);
      // EHLO ends any transaction (RFC 5321 §4.1.4), so the backend hears a reset there too.
      assert.deepEqual(backend.calls, ['connect', 'helo client.test', 'reset', 'mail <s@x.test>', 'rcpt <a@y.test>', 'rcpt <postmaster>', 'data ESMTP', 'commit', 'reset']);
    } finally {
      c.close();
    }
  });

  it('REQUIRETLS is not offered in plain text, and MAIL FROM … REQUIRETLS there is refused with 530 5.7.10 (RFC 8689 §4.1)', async () => {
    const c = await connect(srv.port, false);
    try {
      const ehlo = await c.cmd('EHLO client.test');
      assert.match(ehlo, /^250-/);
      assert.doesNotMatch(ehlo, /REQUIRETLS/, 'not advertised without TLS');
      c.send('MAIL FROM:<s@x.test> REQUIRETLS\r\n');
      await replies(c, /^530 5\.7\.10 /);
      assert.ok(!backend.calls.some((x) => x.startsWith('mail')), 'the backend never heard of it');
    } finally {
      c.close();
    }
  });

  it('a commit that fails (not an SmtpError) → 451 4.3.0; the next transaction works', async () => {
    const c = await connect(srv.port);
    try {
      backend.fail.commit = () => new Error('EIO: i/o error, write');
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n');
      await replies(c, /^250 /, /^250 /, /^354 /);
      c.send('x\r\n.\r\n');
      await replies(c, /^451 4\.3\.0 /);
      delete backend.fail.commit;
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n');
      await replies(c, /^250 2\.1\.0 /, /^250 2\.1\.5 /, /^354 /);
      c.send('y\r\n.\r\n');
      await replies(c, /^250 2\.0\.0 OK queued as /);
      assert.equal(backend.calls.filter((x) => x === 'reset').length, 3, 'EHLO and each transaction ended one at the backend');
    } finally {
      c.close();
    }
  });

  it("a commit's SmtpError is the reply as it is (452 4.3.1 for a full disk, a data-stage 554); the session goes on", async () => {
    const c = await connect(srv.port);
    try {
      for (const err of [new SmtpError(452, '4.3.1', 'Insufficient system storage'), new SmtpError(554, '5.7.1', 'Message refused by the data stage')]) {
        backend.fail.commit = () => err;
        c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n');
        await replies(c, /^250 /, /^250 /, /^354 /);
        c.send('x\r\n.\r\n');
        await replies(c, new RegExp(`^${err.code} ${err.enhanced.replace(/\./g, '\\.')} ${err.text}$`));
        assert.match(await c.cmd('NOOP'), /^250 2\.0\.0 /);
      }
    } finally {
      c.close();
    }
  });

  it('a backend that throws a plain Error at MAIL, RCPT or DATA → 451 4.3.0, and the next command works', async () => {
    const c = await connect(srv.port);
    try {
      backend.fail.mail = () => fault();
      assert.match(await c.cmd('MAIL FROM:<s@x.test>'), /^451 4\.3\.0 /);
      assert.match(await c.cmd('RCPT TO:<a@y.test>'), /^503 5\.5\.1 /, 'no transaction was started');
      delete backend.fail.mail;
      assert.match(await c.cmd('MAIL FROM:<s@x.test>'), /^250 2\.1\.0 /);
      backend.fail.rcpt = (to) => (to === '<bad@y.test>' ? fault() : undefined);
      assert.match(await c.cmd('RCPT TO:<bad@y.test>'), /^451 4\.3\.0 /);
      assert.match(await c.cmd('DATA'), /^554 5\.5\.1 /, 'the failed recipient was not added');
      assert.match(await c.cmd('RCPT TO:<a@y.test>'), /^250 2\.1\.5 /);
      backend.fail.data = () => fault();
      assert.match(await c.cmd('DATA'), /^451 4\.3\.0 /);
      assert.match(await c.cmd('NOOP'), /^250 2\.0\.0 /, 'no 354 was sent, so the next line is a command');
      delete backend.fail.data;
      assert.match(await c.cmd('DATA'), /^354 /);
      c.send('z\r\n.\r\n');
      await replies(c, /^250 2\.0\.0 OK queued as /);
    } finally {
      c.close();
    }
  });

  it('BDAT: a backend fault at the first chunk refuses it (451) and the chunk is still read past', async () => {
    const c = await connect(srv.port);
    try {
      backend.fail.data = () => fault();
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nBDAT 12\r\nNOOP\r\nNOOP\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n');
      // The 12 octets "NOOP\r\nNOOP\r\n" and the 6 of "QUIT\r\n" are content, not commands.
      await replies(c, /^250 2\.1\.0 /, /^250 2\.1\.5 /, /^451 4\.3\.0 /, /^451 4\.3\.0 /, /^250 2\.0\.0 OK$/);
      await silence(c);
      assert.ok(!backend.calls.includes('commit'));
    } finally {
      c.close();
    }
  });

  it('pipelined commands behind a failure each get their own reply, in order', async () => {
    const c = await connect(srv.port);
    try {
      backend.fail.rcpt = (to) => (to === '<crash@y.test>' ? fault() : to === '<nobody@y.test>' ? new SmtpError(550, '5.1.1', 'No such user') : undefined);
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<crash@y.test>\r\nRCPT TO:<nobody@y.test>\r\nRCPT TO:<a@y.test>\r\nNOOP\r\nDATA\r\n');
      await replies(c, /^250 2\.1\.0 /, /^451 4\.3\.0 /, /^550 5\.1\.1 No such user$/, /^250 2\.1\.5 /, /^250 2\.0\.0 /, /^354 /);
      // A failed commit with the next transaction pipelined behind the final dot.
      backend.fail.commit = () => fault();
      c.send('x\r\n.\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nNOOP\r\n');
      await replies(c, /^451 4\.3\.0 /, /^250 2\.1\.0 /, /^250 2\.1\.5 /, /^250 2\.0\.0 /);
      // The same with BDAT LAST (RFC 3030 §4.2: commands may follow it in the same write).
      c.send('BDAT 5 LAST\r\nhelloRSET\r\nMAIL FROM:<s@x.test>\r\nNOOP\r\n');
      await replies(c, /^451 4\.3\.0 /, /^250 2\.0\.0 /, /^250 2\.1\.0 /, /^250 2\.0\.0 /);
      await silence(c);
    } finally {
      c.close();
    }
  });

  it('a commit that takes a while holds the pipelined commands behind it until its reply', async () => {
    const c = await connect(srv.port);
    try {
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n');
      await replies(c, /^250 /, /^250 /, /^354 /);
      backend.holdCommits();
      c.send('x\r\n.\r\nNOOP\r\nMAIL FROM:<t@x.test>\r\n');
      await silence(c, 150);
      assert.ok(!backend.calls.includes('mail <t@x.test>'), 'the next MAIL waits for the commit');
      backend.release();
      await replies(c, /^250 2\.0\.0 OK queued as /, /^250 2\.0\.0 /, /^250 2\.1\.0 /);
    } finally {
      backend.release();
      c.close();
    }
  });

  it('5xx verdicts count toward limits.errors (3 here); 4xx ones do not', async () => {
    const c = await connect(srv.port);
    try {
      backend.fail.rcpt = (to) => (to.startsWith('<later') ? new SmtpError(450, '4.2.1', 'Try later') : new SmtpError(550, '5.1.1', 'No such user'));
      assert.match(await c.cmd('MAIL FROM:<s@x.test>'), /^250 /);
      for (let i = 0; i < 5; i++) assert.match(await c.cmd(`RCPT TO:<later${i}@y.test>`), /^450 4\.2\.1 /);
      assert.match(await c.cmd('RCPT TO:<u1@y.test>'), /^550 5\.1\.1 /);
      assert.match(await c.cmd('RCPT TO:<u2@y.test>'), /^550 5\.1\.1 /);
      c.send('RCPT TO:<u3@y.test>\r\n');
      await replies(c, /^550 5\.1\.1 /, /^421 4\.7\.0 .*Too many errors/);
      await c.waitClosed();
      assert.equal(backend.calls.at(-1), 'reset', 'the transaction was ended at the backend');
    } finally {
      c.close();
    }
  });

  it('a connect-stage verdict replaces the greeting; a connect fault is 451 4.3.0; both close', async () => {
    for (const [e, reply] of [
      [new SmtpError(554, '5.7.1', 'Listed at a DNSBL'), /^554 5\.7\.1 Listed at a DNSBL$/],
      [fault(), /^451 4\.3\.0 /],
    ] as const) {
      backend.fail.connect = () => e;
      const c = await RawClient.connect(srv.port);
      try {
        assert.match(await c.reply(), reply);
        await c.waitClosed();
      } finally {
        c.close();
      }
    }
  });

  it('a HELO verdict is the reply and leaves the session without a name', async () => {
    const c = await connect(srv.port, false);
    try {
      backend.fail.helo = (name) => (name === 'bad.test' ? new SmtpError(550, '5.7.1', 'Go away') : name === 'crash.test' ? fault() : undefined);
      assert.match(await c.cmd('EHLO bad.test'), /^550 5\.7\.1 Go away$/);
      assert.match(await c.cmd('EHLO crash.test'), /^451 4\.3\.0 /);
      assert.match(await c.cmd('MAIL FROM:<s@x.test>'), /^503 5\.5\.1 /);
      assert.match(await c.cmd('EHLO good.test'), /^250-/);
    } finally {
      c.close();
    }
  });

  it('RSET, a new EHLO and a closed connection each end the transaction at the backend', async () => {
    const c = await connect(srv.port);
    try {
      c.send('MAIL FROM:<s@x.test>\r\nRSET\r\nMAIL FROM:<s@x.test>\r\nEHLO again.test\r\n');
      await replies(c, /^250 /, /^250 2\.0\.0 Flushed/, /^250 /, /^250-/);
      assert.deepEqual(backend.calls.slice(3), ['mail <s@x.test>', 'reset', 'mail <s@x.test>', 'helo again.test', 'reset']);
      backend.calls.length = 0;
      // Mid-message: the backend's reset drops what the sink holds.
      c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\nBDAT 3\r\nabc');
      await replies(c, /^250 /, /^250 /, /^250 2\.0\.0 3 octets/);
      c.close();
      for (let i = 0; i < 100 && !backend.calls.includes('reset'); i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(backend.calls, ['mail <s@x.test>', 'rcpt <a@y.test>', 'data ESMTP', 'reset']);
    } finally {
      c.close();
    }
  });
});

describe('session, TernBackend, intake and spool: the disk fails under a commit', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-session-'));
  const io = new FaultIo();
  let srv: { port: number; close: () => Promise<void> };
  let spool: Spool;
  const queued: string[] = [];
  before(async () => {
    spool = new Spool({ dir, io: io.io, fsync: false });
    spool.init();
    const intake = new Intake({ spool, hostname: HOST, onQueued: (m) => queued.push(m.envelope.id), log: silentLogger, maxReceived: 30 });
    const directory = new Directory([{ name: 'tern.test', mailboxes: ['bob'], aliases: {} } as unknown as DomainConfig]);
    const policy = new Policy({ directory, trustedNetworks: [] });
    srv = await listen(new TernBackend({ hostname: HOST, policy, intake, authOnSmtp: false, log: silentLogger }));
  });
  after(async () => {
    await srv.close();
    await spool.journal.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** One message to bob; its reply to the final dot. */
  async function send(c: RawClient, body: string): Promise<string> {
    c.send('MAIL FROM:<s@x.test>\r\nRCPT TO:<bob@tern.test>\r\nDATA\r\n');
    await replies(c, /^250 /, /^250 /, /^354 /);
    c.send(`Subject: t\r\n\r\n${body}\r\n.\r\n`);
    return c.reply(10_000);
  }

  for (const [code, expect, reply] of [
    ['ENOSPC', '452 4.3.1', /^452 4\.3\.1 Insufficient system storage$/],
    ['EDQUOT', '452 4.3.1', /^452 4\.3\.1 Insufficient system storage$/],
    ['EIO', '451 4.3.0', /^451 4\.3\.0 /],
  ] as const) {
    it(`${code} while committing → ${expect}; the next message is queued`, async () => {
      const c = await connect(srv.port);
      try {
        for (const size of [100, 400 * 1024]) {
          // Small messages go to the journal, large ones through a tmp file: both fail.
          io.fail = (call) => (call.op === 'writev' || call.op === 'writeSync' || call.op === 'fdatasync' ? errno(code, call.op) : undefined);
          const before = queued.length;
          assert.match(await send(c, 'x'.repeat(size).replace(/(.{900})/g, '$1\r\n')), reply, `${size} octets`);
          assert.equal(queued.length, before, 'nothing queued');
          io.fail = null;
          assert.match(await send(c, 'after'), /^250 2\.0\.0 OK queued as /);
        }
      } finally {
        io.fail = null;
        c.close();
      }
    });
  }
});
