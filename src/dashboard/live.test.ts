// The live hub on real HTTP responses (a loopback server): a first update
// at once, then at most one per second however often things change, a
// keep-alive comment after silence, queue changes noticed by the tick, a
// bounded number of streams, streams ended by logout, expiry, a failed
// session check, and close.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KEEPALIVE_MS, LiveHub, MIN_GAP_MS, VALIDATE_MS } from './live.ts';

describe('live hub', () => {
  let clock = 1_000_000;
  let queue = 'q0';
  let snapshots = 0;
  let valid = true;
  const errors: unknown[] = [];
  const hub = new LiveHub({
    snapshot: () => ({ n: ++snapshots }),
    queueSignature: () => queue,
    onError: (e) => errors.push(e),
    now: () => clock,
    maxStreams: 3,
  });
  let server: http.Server;
  let port = 0;
  let nextSession = 0;

  before(async () => {
    server = http.createServer((req, res) => {
      const user = new URL(req.url!, 'http://x').searchParams.get('user') ?? 'root@x.test';
      if (!hub.open(res, { tokenHash: `s${nextSession++}`, user, expiresAt: clock + 60_000 }, () => valid)) {
        res.writeHead(503).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    hub.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  /** A client that collects what it reads. */
  async function connect(user = 'root@x.test'): Promise<{ status: number; text: () => string; ended: Promise<void>; abort: () => void }> {
    let text = '';
    let abort = (): void => {};
    const { status, ended } = await new Promise<{ status: number; ended: Promise<void> }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: `/?user=${user}` }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        resolve({ status: res.statusCode!, ended: new Promise((r) => res.on('close', () => r())) });
      });
      req.on('error', reject);
      abort = () => req.destroy();
    });
    return { status, text: () => text, ended, abort };
  }
  const updates = (t: string): number => t.split('event: update\n').length - 1;
  /** Lets the hub's timer (250 ms) run a few times. */
  const ticks = (n = 2) => new Promise((r) => setTimeout(r, 260 * n));

  it('sends a first update at once, then at most one per second while things change', async () => {
    const c = await connect();
    assert.equal(c.status, 200);
    await ticks(1);
    assert.match(c.text(), /^retry: 5000\n\nevent: update\ndata: \{"n":\d+\}\n\n$/);
    // Changes within the same second: nothing more yet.
    hub.changed();
    hub.changed();
    await ticks();
    assert.equal(updates(c.text()), 1);
    clock += MIN_GAP_MS;
    await ticks();
    assert.equal(updates(c.text()), 2, 'the changes of that second, in one update');
    clock += MIN_GAP_MS;
    await ticks();
    assert.equal(updates(c.text()), 2, 'nothing changed: nothing sent');
    // A queue change is noticed by the tick itself.
    queue = 'q1';
    await ticks();
    assert.equal(updates(c.text()), 3);
    clock += KEEPALIVE_MS;
    await ticks();
    assert.match(c.text(), /: keepalive\n\n$/);
    c.abort();
    await c.ended;
    await ticks(1);
    assert.equal(hub.size, 0);
  });

  it('keeps at most maxStreams; ends a session\'s streams, an account\'s, expired and invalid ones', async () => {
    const a = await connect('a@x.test');
    const b = await connect('b@x.test');
    const c = await connect('c@x.test');
    assert.equal(hub.size, 3);
    assert.equal(hub.full, true);
    const d = await connect('d@x.test');
    assert.equal(d.status, 503);
    hub.end({ user: 'a@x.test' });
    await a.ended;
    assert.equal(hub.size, 2);
    // Session checks run every VALIDATE_MS: a logged-out session's stream ends then.
    valid = false;
    clock += VALIDATE_MS;
    await ticks();
    await Promise.all([b.ended, c.ended]);
    assert.equal(hub.size, 0);
    valid = true;
    const e = await connect('e@x.test');
    clock += 61_000;
    await ticks();
    await e.ended;
    assert.equal(hub.size, 0, 'expired');
  });

  it('close ends every stream and opens no more', async () => {
    const a = await connect();
    hub.close();
    await a.ended;
    assert.equal(hub.full, true);
    assert.equal((await connect()).status, 503);
    assert.deepEqual(errors, []);
  });
});
