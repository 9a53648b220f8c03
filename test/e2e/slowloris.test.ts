// Slowloris (issue 11, break 3): connections that each send a byte now and
// then and never finish a command must not hold the server. A command line
// and a DATA transfer each have a deadline for the whole (bytes do not
// extend it), and when the connection table is full the sessions without
// progress are evicted (421 4.4.2) before a new client is refused.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, type TestServer, type RawClient } from '../helpers/server.ts';
import { open, expectCmd, sendMail, connectFrom } from './smtp-kit.ts';

/**
 * Trickling connections from `sources` loopback addresses, up to `perSource`
 * each, reconnecting whenever the server closes or refuses one (as an
 * attacker would). Every open connection sends one byte per `everyMs` and
 * never completes a line.
 */
class Trickle {
  readonly #sockets = new Set<net.Socket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #stopped = false;
  /** Connections currently open that got the 220 greeting. */
  greeted = 0;
  /** Replies seen, by their first 9 characters ("421 4.4.2", "421 4.7.0", …). */
  readonly replies = new Map<string, number>();

  readonly #port: number;

  constructor(port: number, sources: string[], perSource: number, everyMs: number) {
    this.#port = port;
    for (const src of sources) for (let i = 0; i < perSource; i++) this.#connect(src);
    const tick = setInterval(() => {
      for (const s of this.#sockets) if (s.writable) s.write('a');
    }, everyMs);
    this.#timers.add(tick);
  }

  #connect(src: string): void {
    if (this.#stopped) return;
    const s = net.connect({ port: this.#port, host: '127.0.0.1', localAddress: src });
    this.#sockets.add(s);
    let greeted = false;
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const key = line.slice(0, 9);
        this.replies.set(key, (this.replies.get(key) ?? 0) + 1);
        if (line.startsWith('220 ') && !greeted) {
          greeted = true;
          this.greeted++;
        }
      }
    });
    s.on('error', () => {});
    s.on('close', () => {
      this.#sockets.delete(s);
      if (greeted) this.greeted--;
      const t = setTimeout(() => {
        this.#timers.delete(t);
        this.#connect(src);
      }, 100);
      this.#timers.add(t);
    });
  }

  count(prefix: string): number {
    let n = 0;
    for (const [k, v] of this.replies) if (k.startsWith(prefix)) n += v;
    return n;
  }

  stop(): void {
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    for (const s of this.#sockets) s.destroy();
  }
}

async function until(what: string, fn: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('slowloris: a full table of trickling connections', () => {
  let srv: TestServer;
  let attack: Trickle | undefined;
  // Timeouts far longer than the test, so only eviction can let a client in;
  // limits.timeouts.evictAfter keeps its default (5 s).
  const CONNECTIONS = 120;
  before(async () => {
    srv = await startServer({ limits: { connections: CONNECTIONS, connectionsPerIp: 40, timeouts: { command: '60s', data: '60s' } } });
  });
  after(async () => {
    attack?.stop();
    await srv.stop();
  });

  it('a legitimate client still gets its 250 within a second or two, and sends its message', async (t) => {
    // 4 addresses × 40 = 160 attempts for 120 places: the table stays full.
    attack = new Trickle(srv.port('smtp'), ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'], 40, 1000);
    await until('the table to fill', () => attack!.greeted >= CONNECTIONS, 10_000);
    // Older than evictAfter: stalled by any measure; still open (the byte stream refreshed nothing).
    await sleep(6000);
    assert.ok(attack.greeted >= CONNECTIONS - 5, `the trickle still holds the table (${attack.greeted} open)`);
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      const c: RawClient = await connectFrom(srv.port('smtp'), '127.0.0.1');
      try {
        c.socket.setNoDelay(true);
        assert.match(await c.reply(), /^220 mx\.tern\.test ESMTP/, 'greeted, not refused');
        await expectCmd(c, 'EHLO client.test', /^250 /m);
        const latency = Date.now() - t0;
        assert.ok(latency < 2000, `EHLO answered ${latency} ms after connect`);
        t.diagnostic(`legitimate client ${i + 1}: 250 to EHLO ${latency} ms after connect, ${attack.greeted} trickling connections open`);
        await sendMail(c, 'someone@client.test', ['alice@tern.test'], `Subject: through the attack ${i}\r\n\r\nhi\r\n`);
        await expectCmd(c, 'QUIT', /^221 /);
      } finally {
        c.close();
      }
      await sleep(300);
    }
    assert.ok(attack.count('421 4.4.2') >= 3, `stalled connections were told why (421 4.4.2: ${attack.count('421 4.4.2')})`);
  });
});

describe('slowloris: implicit-TLS handshakes that never finish', () => {
  let srv: TestServer;
  const sockets: net.Socket[] = [];
  before(async () => {
    srv = await startServer({ limits: { connections: 20, connectionsPerIp: 20, timeouts: { command: '60s', data: '60s' } } });
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await srv.stop();
  });

  it('are evicted for a new client once stalled', async () => {
    // Silent connections to port 465: each holds a place in its TLS handshake.
    let closedByServer = 0;
    for (let i = 0; i < 20; i++) {
      const s = net.connect({ port: srv.port('submissions'), host: '127.0.0.1', localAddress: '127.0.0.7' });
      s.on('error', () => {});
      s.on('close', () => closedByServer++);
      sockets.push(s);
    }
    await Promise.all(sockets.map((s) => new Promise((r) => (s.readyState === 'open' ? r(null) : s.once('connect', r)))));
    await sleep(300);
    // Full now: a client from elsewhere is refused while the handshakes are young…
    const early = await connectFrom(srv.port('smtp'), '127.0.0.1');
    try {
      assert.match(await early.reply(), /^421 4\.7\.0 /);
    } finally {
      early.close();
    }
    // …and let in once they have made no progress for limits.timeouts.evictAfter (5 s).
    await sleep(5200);
    const t0 = Date.now();
    const c = await open(srv.port('smtp'));
    try {
      const latency = Date.now() - t0;
      assert.ok(latency < 1000, `greeted and EHLO answered in ${latency} ms`);
    } finally {
      c.close();
    }
    await until('the evicted handshake to be closed', () => closedByServer >= 1, 2000);
  });
});

describe('slowloris: deadlines for a whole command line and a whole DATA transfer', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({ limits: { timeouts: { command: '2s', data: '2s' } } });
  });
  after(() => srv.stop());

  /** Send `byte` every `everyMs` until the server closes; resolves with the time it took and the last reply. */
  async function trickleUntilClosed(c: RawClient, byte: string, everyMs: number, limitMs: number): Promise<{ ms: number; text: string }> {
    const t0 = Date.now();
    const tick = setInterval(() => {
      if (!c.closed) c.send(byte);
    }, everyMs);
    try {
      await c.waitClosed(limitMs);
    } finally {
      clearInterval(tick);
    }
    return { ms: Date.now() - t0, text: c.pending };
  }

  it('a command line trickled a byte at a time is cut off at the command deadline', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      const r = await trickleUntilClosed(c, 'a', 200, 5000);
      assert.match(r.text, /^421 4\.4\.2 /m);
      assert.ok(r.ms < 3500, `closed after ${r.ms} ms (command timeout 2 s)`);
    } finally {
      c.close();
    }
  });

  it('DATA content below limits.minDataRate is cut off at the data deadline', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<someone@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      const r = await trickleUntilClosed(c, 'x', 200, 5000);
      assert.match(r.text, /^421 4\.4\.2 /m);
      assert.ok(r.ms < 3500, `closed after ${r.ms} ms (data timeout 2 s)`);
    } finally {
      c.close();
    }
  });

  it('slow but steady DATA above the minimum rate outlives the data timeout and is queued', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'MAIL FROM:<someone@client.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send('Subject: slow link\r\n\r\n');
      // 1,000 octets every 250 ms (4 KB/s, 8x the default 500 B/s) for 4 s: twice the data timeout.
      const line = 'y'.repeat(98) + '\r\n';
      const t0 = Date.now();
      while (Date.now() - t0 < 4000) {
        c.send(line.repeat(10));
        await sleep(250);
      }
      c.send('.\r\n');
      assert.match(await c.reply(), /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('a client that answers each reply promptly is never cut off', async () => {
    const c = await open(srv.port('smtp'));
    try {
      // 3 s of dialogue, longer than the command timeout; each line comes whole.
      for (let i = 0; i < 6; i++) {
        await sleep(500);
        await expectCmd(c, 'NOOP', /^250 /);
      }
    } finally {
      c.close();
    }
  });
});
